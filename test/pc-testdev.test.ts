/**
 * pc-testdev's registers from a real guest, beside what the kvm-unit-tests kernels check:
 * the flush-page port gives the page back usable on both sides, IRQ-line writes are
 * byte-wide (a wider write covers the next lines), and the data register keeps each byte
 * lane at its port offset.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Vm } from "../runtime/vm.js";
import { addPcTestdev } from "../runtime/test-devices.js";
import { PcTestdevIrqLines } from "../runtime/devices/pc-testdev.js";
import { DEBUG_EXIT, imm16, imm32 } from "../runtime/guests/guest-bytes.js";

const PAGE = 0x8_0000;

test("flush page: the guest's page is cycled out and back, and both the guest and the host still use it", async () => {
  const vm = Vm.create({ memory: 2 << 20, irqchip: true });
  vm.addDebugExit();
  addPcTestdev(vm);
  vm.loadProgram({
    code: [
      0xbb, ...imm32(PAGE),               // mov ebx, PAGE
      0xc7, 0x03, ...imm32(0x1234_5678),  // mov dword [rbx], 0x12345678
      0x89, 0xd8,                         // mov eax, ebx
      0x05, ...imm32(0x123),              // add eax, 0x123          ; any address in the page
      0xe7, 0xe4,                         // out 0xe4, eax           ; flush it
      0x8b, 0x03,                         // mov eax, [rbx]          ; the guest reads it back
      0x3d, ...imm32(0x1234_5678),        // cmp eax, 0x12345678
      0x75, 0x0c,                         // jne fail (12 bytes on)
      0xc7, 0x43, 0x04, ...imm32(0xabcd), // mov dword [rbx + 4], 0xabcd
      0x31, 0xc0,                         // xor eax, eax
      0xe6, DEBUG_EXIT,                   // out 0xf4, al            ; status 0
      0xf4,                               // hlt
      // fail:
      0xb0, 0x01,                         // mov al, 1
      0xe6, DEBUG_EXIT,                   // out 0xf4, al
      0xf4,                               // hlt
    ],
    mode: "long64",
  });
  assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
  assert.equal(vm.memory.readU32(PAGE), 0x1234_5678);
  assert.equal(vm.memory.readU32(PAGE + 4), 0xabcd);
  // Outside RAM there is no page to cycle; QEMU ignores those too.
  assert.equal(vm.memory.remapPage(0xff00_0000), false);
});

test("IRQ-line ports act byte by byte: a 32-bit write at line 11 sets line 11 from its low byte and lines 12-14 from the rest", () => {
  const seen: [number, boolean][] = [];
  const lines = new PcTestdevIrqLines((irq) => ({ set: (level) => seen.push([irq, level]) }));
  lines.write(11, 4, 0x0000_0001);
  assert.deepEqual(seen, [[11, true], [12, false], [13, false], [14, false]]);
  seen.length = 0;
  lines.write(22, 4, 0x0101_0101); // lines 22 and 23 exist; 24 and 25 do not
  assert.deepEqual(seen, [[22, true], [23, true]]);
  assert.equal(lines.read(), 0);
});

test("the data register at 0xe0 and 0xe8 is one register: bytes written at one offset read back at both", async () => {
  const vm = Vm.create({ memory: 2 << 20, irqchip: true });
  vm.addDebugExit();
  addPcTestdev(vm);
  vm.loadProgram({
    code: [
      0xb8, ...imm32(0x1122_3344),        // mov eax, 0x11223344
      0xe7, 0xe0,                         // out 0xe0, eax
      0x66, 0xba, ...imm16(0xea),         // mov dx, 0xea
      0xb0, 0x99,                         // mov al, 0x99
      0xee,                               // out dx, al             ; byte 2 through the 0xe8 window
      0xe5, 0xe0,                         // in eax, 0xe0
      0x3d, ...imm32(0x1199_3344),        // cmp eax, 0x11993344
      0x0f, 0x95, 0xc0,                   // setne al
      0x0f, 0xb6, 0xc0,                   // movzx eax, al
      0xe6, DEBUG_EXIT,                   // out 0xf4, al
      0xf4,                               // hlt
    ],
    mode: "long64",
  });
  assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
});
