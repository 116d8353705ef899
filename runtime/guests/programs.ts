/**
 * Small 64-bit guest programs, as machine code with the assembly beside each line
 * (Intel syntax). They run at the default entry (0x10000) in long mode.
 */

import { ascii, DEBUG_EXIT, imm32 } from "./guest-bytes.js";

const COM1 = 0x3f8;

/**
 * Prints `message` to COM1 with one `rep outsb` (string I/O), then writes 0 to the
 * debug-exit port. The demo guest of `workervisor demo`.
 */
export function helloProgram(message = "Hello from a workervisor guest\n"): number[] {
  const text = ascii(message);
  return [
    0x48, 0x8d, 0x35, 0x10, 0x00, 0x00, 0x00, // lea rsi, [rip + 0x10]   ; the message after the code
    0xb9, ...imm32(text.length),              // mov ecx, length
    0x66, 0xba, COM1 & 0xff, COM1 >> 8,       // mov dx, 0x3f8
    0xf3, 0x6e,                               // rep outsb
    0x31, 0xc0,                               // xor eax, eax
    0xe6, DEBUG_EXIT,                         // out 0xf4, al             ; status 0
    0xf4,                                     // hlt
    ...text,
  ];
}

/**
 * Writes 1, 2, ... RCX to the 4-byte port `port` (posted), then reads `port + 4` (sync)
 * and writes what it read to the debug-exit port. With a counter device at `port`, the
 * exit status is how many values arrived in order.
 */
export function countingProgram(port: number): number[] {
  return [
    0xba, ...imm32(port),                     // mov edx, port
    0x31, 0xc0,                               // xor eax, eax
    0xff, 0xc0,                               // 1: inc eax
    0xef,                                     // out dx, eax
    0x39, 0xc8,                               // cmp eax, ecx
    0x75, 0xf9,                               // jne 1b
    0xba, ...imm32(port + 4),                 // mov edx, port + 4
    0xed,                                     // in eax, dx
    0xe7, DEBUG_EXIT,                         // out 0xf4, eax
    0xf4,                                     // hlt
  ];
}
