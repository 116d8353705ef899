/**
 * The 16550 on a real guest: host input raises IRQ 4 through the PIC (the kernel's, or split
 * mode's userspace one injecting ExtINTs), the guest's interrupt handler reads each byte and
 * echoes it back through THR.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Vm } from "../runtime/vm.js";
import { Serial16550 } from "../runtime/devices/serial-16550.js";
import { loadFlatProgram, DEFAULT_ENTRY } from "../runtime/boot/flat-loader.js";

const HANDLER_OFFSET = 0x40;
const IDT = 0xa000;
const IRQ4_VECTOR = 0x24;

// prettier-ignore
const setup = [
  0xb0, 0x11,             // mov al, 0x11        ; 8259 ICW1: edge, cascade, ICW4 follows
  0xe6, 0x20,             // out 0x20, al
  0xb0, 0x20,             // mov al, 0x20        ; ICW2: IRQ 0-7 at vectors 0x20-0x27
  0xe6, 0x21,             // out 0x21, al
  0xb0, 0x04,             // mov al, 0x04        ; ICW3: slave on IRQ 2
  0xe6, 0x21,             // out 0x21, al
  0xb0, 0x01,             // mov al, 0x01        ; ICW4: 8086 mode
  0xe6, 0x21,             // out 0x21, al
  0xb0, 0xef,             // mov al, 0xef        ; unmask IRQ 4 only
  0xe6, 0x21,             // out 0x21, al
  0xb0, 0xff,             // mov al, 0xff        ; mask the slave
  0xe6, 0xa1,             // out 0xa1, al
  0x66, 0xba, 0xf9, 0x03, // mov dx, 0x3f9       ; IER
  0xb0, 0x01,             // mov al, 0x01        ; received-data interrupt
  0xee,                   // out dx, al
  0x66, 0xba, 0xfc, 0x03, // mov dx, 0x3fc       ; MCR
  0xb0, 0x08,             // mov al, 0x08        ; OUT2 gates the IRQ
  0xee,                   // out dx, al
  0xfb,                   // sti
  0xf4,                   // 1: hlt
  0xeb, 0xfd,             // jmp 1b
];
// prettier-ignore
const handler = [
  0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8       ; RBR
  0xec,                   // in al, dx
  0x3c, 0x71,             // cmp al, 'q'
  0x74, 0x09,             // je 2f
  0xee,                   // out dx, al          ; echo through THR
  0xff, 0xc3,             // inc ebx             ; interrupts handled
  0xb0, 0x20,             // mov al, 0x20        ; non-specific EOI
  0xe6, 0x20,             // out 0x20, al
  0x48, 0xcf,             // iretq
  0x89, 0xd8,             // 2: mov eax, ebx
  0xe7, 0xf4,             // out 0xf4, eax       ; status = bytes echoed
];

/** A 64-bit interrupt gate (Intel SDM vol. 3, 6.14.1) to `target` in the kernel code segment. */
function interruptGate(target: number): number[] {
  return [
    target & 0xff, (target >> 8) & 0xff, 0x08, 0x00, 0x00, 0x8e, (target >> 16) & 0xff, (target >>> 24) & 0xff,
    0, 0, 0, 0, 0, 0, 0, 0,
  ];
}

for (const irqchip of ["in-kernel", "split"] as const) test(`host input reaches the guest as IRQ 4 interrupts and comes back echoed (${irqchip} PIC)`, { timeout: 60_000 }, async () => {
  const vm = Vm.create({ memory: 2 << 20, irqchip });
  const echoed: number[] = [];
  const input = Buffer.from("hello, IRQ 4!q");
  let next = 0;
  const serial = new Serial16550({
    irq: vm.interruptLine(4),
    output: (byte) => {
      echoed.push(byte);
      // Flow control: the next byte goes in once the guest has consumed and echoed one.
      if (next < input.length) serial.receive([input[next++]]);
    },
  });
  vm.addDevice({ space: "pio", base: 0x3f8, length: 8, device: serial });
  vm.addDebugExit();
  const code = [...setup, ...new Array(HANDLER_OFFSET - setup.length).fill(0x90), ...handler];
  const state = loadFlatProgram(vm.memory, { code });
  vm.memory.write(IDT + IRQ4_VECTOR * 16, interruptGate(DEFAULT_ENTRY + HANDLER_OFFSET));
  vm.setCpuState(0, { ...state, specialRegisters: { ...state.specialRegisters, idt: { base: BigInt(IDT), limit: 256 * 16 - 1 } } });
  vm.start();
  // The first byte arrives while the guest is (or will soon be) halted with interrupts on.
  setTimeout(() => serial.receive([input[next++]]), 50);
  const result = await vm.wait();
  assert.deepEqual(result, { reason: "debug-exit", status: input.length - 1 });
  assert.equal(Buffer.from(echoed).toString("latin1"), "hello, IRQ 4!");
});
