/**
 * Byte helpers for hand-assembled guest programs (runtime, tests, benchmarks):
 * little-endian immediates and text. Programs keep their assembly beside each line.
 */

/** Port of the debug-exit device (`vm.addDebugExit()`): a write ends the VM with that status. */
export const DEBUG_EXIT = 0xf4;

export function imm16(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff];
}

export function imm32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
}

export function imm64(value: bigint): number[] {
  return Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(i * 8)) & 0xffn));
}

export function ascii(text: string): number[] {
  return Array.from(Buffer.from(text, "latin1"));
}

/** Writes `value` to the debug-exit port: the VM ends with it as its status. */
export function exitWith(value: number): number[] {
  return [
    0xb8, ...imm32(value),                    // mov eax, value
    0xe7, DEBUG_EXIT,                         // out 0xf4, eax
    0xf4,                                     // hlt
  ];
}
