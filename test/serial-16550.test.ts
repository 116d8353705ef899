import { test } from "node:test";
import assert from "node:assert/strict";
import { Serial16550 } from "../runtime/devices/serial-16550.js";
import type { HighWord, InterruptLine } from "../runtime/devices/device.js";

/** Where 8-byte reads leave their high word (unused by the narrower reads here). */
const WIDE: HighWord = { high: 0 };

// Register offsets from the COM1 base (0x3f8).
const THR = 0;
const RBR = 0;
const DLL = 0;
const IER = 1;
const DLM = 1;
const IIR = 2;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

class RecordingLine implements InterruptLine {
  readonly levels: boolean[] = [];
  set(level: boolean): void {
    this.levels.push(level);
  }
}

function makeUart(options: { onRxDrained?: () => void } = {}) {
  const sent: number[] = [];
  const irq = new RecordingLine();
  const uart = new Serial16550({ output: (byte) => sent.push(byte), irq, ...options });
  const inb = (offset: number): number => uart.read(offset, 1, WIDE);
  const outb = (offset: number, value: number): void => uart.write(offset, 1, value);
  return { uart, sent, irq, inb, outb };
}

test("name defaults to serial-16550 and can be set", () => {
  assert.equal(new Serial16550({ output: () => {} }).name, "serial-16550");
  assert.equal(new Serial16550({ output: () => {}, name: "com1" }).name, "com1");
});

test("constructor rejects a missing output sink with a clear message", () => {
  assert.throws(
    () => new Serial16550({} as unknown as { output: (byte: number) => void }),
    { name: "TypeError", message: /options\.output must be a function/ },
  );
  assert.throws(
    () => new Serial16550({ output: () => {}, name: "" }),
    { name: "TypeError", message: /options\.name must be a non-empty string/ },
  );
});

test("power-on values: IER 0, IIR 0x01, LCR 0x03 (8N1 as firmware leaves it), MCR 0, LSR 0x60, MSR shows a connected cable", () => {
  const { inb } = makeUart();
  assert.equal(inb(IER), 0x00);
  assert.equal(inb(IIR), 0x01);
  assert.equal(inb(LCR), 0x03);
  assert.equal(inb(MCR), 0x00);
  assert.equal(inb(LSR), 0x60);
  assert.equal(inb(MSR), 0xb0); // DCD | DSR | CTS, no deltas
});

test("THR writes reach the sink immediately, in order, and THR stays empty", () => {
  const { sent, inb, outb } = makeUart();
  outb(LCR, 0x03); // 8N1
  for (const ch of "hi\n") {
    outb(THR, ch.charCodeAt(0));
    assert.equal(inb(LSR), 0x60);
  }
  assert.deepEqual(sent, [0x68, 0x69, 0x0a]);
});

test("transmit masks the character to the LCR word length", () => {
  const { sent, outb } = makeUart();
  outb(LCR, 0x02); // 7 data bits
  outb(THR, 0xc1);
  outb(LCR, 0x00); // 5 data bits
  outb(THR, 0xff);
  assert.deepEqual(sent, [0x41, 0x1f]);
});

test("DLAB switches offsets 0/1 to the divisor latch and back", () => {
  const { sent, inb, outb } = makeUart();
  outb(IER, 0x05);
  outb(LCR, 0x83); // DLAB | 8N1
  assert.equal(inb(DLL), 12); // 9600 baud until programmed
  assert.equal(inb(DLM), 0);
  outb(DLL, 0x34);
  outb(DLM, 0x12);
  assert.equal(inb(DLL), 0x34);
  assert.equal(inb(DLM), 0x12);
  assert.equal(inb(LCR), 0x83);
  assert.deepEqual(sent, []); // a DLL write is not a transmit
  outb(LCR, 0x03);
  assert.equal(inb(IER), 0x05); // the DLM write left IER alone
  outb(THR, 0x41);
  assert.deepEqual(sent, [0x41]);
  outb(LCR, 0x80);
  assert.equal(inb(DLL), 0x34);
  assert.equal(inb(DLM), 0x12);
});

test("SCR is a plain scratch byte; LSR and MSR ignore writes; IER keeps only bits 3..0", () => {
  const { inb, outb } = makeUart();
  outb(SCR, 0xa5);
  assert.equal(inb(SCR), 0xa5);
  outb(SCR, 0x5a);
  assert.equal(inb(SCR), 0x5a);
  outb(LSR, 0xff);
  assert.equal(inb(LSR), 0x60);
  outb(MSR, 0x0f);
  assert.equal(inb(MSR), 0xb0);
  outb(IER, 0xff);
  assert.equal(inb(IER), 0x0f);
  outb(MCR, 0xff);
  assert.equal(inb(MCR), 0x1f);
});

test("LSR DR follows the receiver; RBR keeps the last byte when empty", () => {
  const { uart, inb, outb } = makeUart();
  outb(LCR, 0x03);
  uart.receive([0x7a]);
  assert.equal(inb(LSR), 0x61);
  assert.equal(inb(RBR), 0x7a);
  assert.equal(inb(LSR), 0x60);
  assert.equal(inb(RBR), 0x7a);
  assert.equal(inb(LSR), 0x60);
});

test("FIFO mode: 16 bytes queue in order, the rest overrun and are dropped", () => {
  const { uart, inb, outb } = makeUart();
  outb(LCR, 0x03);
  outb(FCR, 0x01);
  assert.equal(uart.rxSpace(), 16);
  const input = Uint8Array.from({ length: 18 }, (_, i) => 0x30 + i);
  uart.receive(input);
  assert.equal(uart.overruns, 2);
  assert.equal(uart.rxSpace(), 0);
  assert.equal(inb(LSR), 0x63); // DR | OE | THRE | TEMT
  assert.equal(inb(LSR), 0x61); // OE clears on read
  const got: number[] = [];
  while ((inb(LSR) & 0x01) !== 0) got.push(inb(RBR));
  assert.deepEqual(got, Array.from(input.subarray(0, 16)));
  assert.equal(uart.rxSpace(), 16);
  assert.equal(inb(LSR), 0x60);
});

test("16450 mode holds one byte; an overrun overwrites RBR as on the chip", () => {
  const { uart, inb, outb } = makeUart();
  outb(LCR, 0x03);
  assert.equal(uart.rxSpace(), 1);
  uart.receive([0x01]);
  assert.equal(uart.rxSpace(), 0);
  uart.receive([0x02, 0x03]);
  assert.equal(uart.overruns, 2);
  assert.equal(inb(LSR), 0x63);
  assert.equal(inb(RBR), 0x03);
  assert.equal(inb(LSR), 0x60);
  assert.equal(uart.rxSpace(), 1);
});

test("FCR bit 1 clears the receive FIFO; toggling FCR bit 0 empties it too", () => {
  const { uart, inb, outb } = makeUart();
  outb(LCR, 0x03);
  outb(FCR, 0x01);
  uart.receive([1, 2, 3]);
  outb(FCR, 0x03);
  assert.equal(inb(LSR), 0x60);
  uart.receive([4, 5]);
  outb(FCR, 0x00);
  assert.equal(inb(LSR), 0x60);
  assert.equal(uart.rxSpace(), 1);
  assert.equal(uart.overruns, 0);
});

test("IIR reports the highest-priority enabled cause", () => {
  const { uart, inb, outb } = makeUart();
  outb(LCR, 0x03);
  assert.equal(inb(IIR), 0x01);
  outb(IER, 0x0f);
  assert.equal(inb(IIR), 0x02); // THR empty, raised by enabling ETBEI; reading it acknowledges
  assert.equal(inb(IIR), 0x01);
  uart.setModemInputs({ cts: true, dsr: true, ri: false, dcd: false }); // DCD drops
  assert.equal(inb(IIR), 0x00);
  outb(THR, 0x21); // re-arms THR empty, which outranks modem status
  assert.equal(inb(IIR), 0x02);
  assert.equal(inb(IIR), 0x00);
  uart.receive([0x10]);
  assert.equal(inb(IIR), 0x04);
  uart.receive([0x11]); // overrun
  assert.equal(inb(IIR), 0x06);
  assert.equal(inb(LSR), 0x63);
  assert.equal(inb(IIR), 0x04);
  assert.equal(inb(RBR), 0x11);
  assert.equal(inb(IIR), 0x00);
  assert.equal(inb(MSR), 0x38); // CTS | DSR, DDCD
  assert.equal(inb(IIR), 0x01);
});

test("IIR only reports causes enabled in IER", () => {
  const { uart, inb, outb } = makeUart();
  uart.receive([0x55]);
  assert.equal(inb(IIR), 0x01);
  outb(IER, 0x01);
  assert.equal(inb(IIR), 0x04);
  outb(IER, 0x00);
  assert.equal(inb(IIR), 0x01);
});

test("FIFO mode sets IIR bits 7..6 and reports timeout below the trigger level", () => {
  const { uart, inb, outb } = makeUart();
  outb(LCR, 0x03);
  outb(FCR, 0x41); // enable, trigger at 4 bytes
  assert.equal(inb(IIR), 0xc1);
  outb(IER, 0x01);
  uart.receive([1, 2]);
  assert.equal(inb(IIR), 0xcc);
  uart.receive([3, 4]);
  assert.equal(inb(IIR), 0xc4);
  assert.equal(inb(RBR), 1);
  assert.equal(inb(IIR), 0xcc);
  outb(FCR, 0x07);
  assert.equal(inb(IIR), 0xc1);
  outb(FCR, 0x00);
  assert.equal(inb(IIR), 0x01);
});

test("THR-empty interrupt: cleared by reading IIR, re-raised by a THR write or re-enabling ETBEI", () => {
  const { sent, inb, outb } = makeUart();
  outb(LCR, 0x03);
  outb(IER, 0x02);
  assert.equal(inb(IIR), 0x02);
  assert.equal(inb(IIR), 0x01);
  outb(IER, 0x02); // ETBEI already set: no new edge
  assert.equal(inb(IIR), 0x01);
  outb(THR, 0x61);
  assert.equal(inb(IIR), 0x02);
  assert.equal(inb(IIR), 0x01);
  outb(IER, 0x00);
  outb(IER, 0x02);
  assert.equal(inb(IIR), 0x02);
  assert.deepEqual(sent, [0x61]);
});

test("THR-empty is not acknowledged by an IIR read that reports a higher cause", () => {
  const { uart, inb, outb } = makeUart();
  outb(LCR, 0x03);
  outb(IER, 0x03);
  uart.receive([0x42]);
  assert.equal(inb(IIR), 0x04);
  assert.equal(inb(RBR), 0x42);
  assert.equal(inb(IIR), 0x02);
  assert.equal(inb(IIR), 0x01);
});

test("IRQ line is a level gated by OUT2 and is only driven on changes", () => {
  const { uart, irq, inb, outb } = makeUart();
  outb(LCR, 0x03);
  outb(IER, 0x01);
  uart.receive([0x31]);
  assert.deepEqual(irq.levels, []); // pending, but OUT2 is clear
  outb(MCR, 0x0b); // DTR | RTS | OUT2
  assert.deepEqual(irq.levels, [true]);
  outb(SCR, 0x00);
  assert.equal(inb(LSR), 0x61);
  assert.deepEqual(irq.levels, [true]);
  outb(MCR, 0x03); // OUT2 off masks the line
  assert.deepEqual(irq.levels, [true, false]);
  outb(MCR, 0x0b);
  assert.deepEqual(irq.levels, [true, false, true]);
  assert.equal(inb(RBR), 0x31);
  assert.deepEqual(irq.levels, [true, false, true, false]);
  outb(IER, 0x03); // THR empty rises
  assert.deepEqual(irq.levels, [true, false, true, false, true]);
  outb(THR, 0x20); // acknowledged and re-raised within one write: no edge
  assert.deepEqual(irq.levels, [true, false, true, false, true]);
  assert.equal(inb(IIR), 0x02);
  assert.deepEqual(irq.levels, [true, false, true, false, true, false]);
});

test("IRQ follows line status and modem status causes and their acknowledgements", () => {
  const { uart, irq, inb, outb } = makeUart();
  outb(MCR, 0x08);
  outb(IER, 0x0c);
  assert.deepEqual(irq.levels, []);
  uart.setModemInputs({ cts: true, dsr: true, ri: true, dcd: true });
  assert.deepEqual(irq.levels, []); // RI rising is not a modem-status event
  assert.equal(inb(MSR), 0xf0);
  uart.setModemInputs({ cts: true, dsr: true, ri: false, dcd: true });
  assert.deepEqual(irq.levels, [true]);
  assert.equal(inb(MSR), 0xb4); // TERI on the trailing edge of RI
  assert.deepEqual(irq.levels, [true, false]);
  uart.receive([1]);
  assert.deepEqual(irq.levels, [true, false]); // ERBFI is off
  uart.receive([2]); // overrun
  assert.deepEqual(irq.levels, [true, false, true]);
  assert.equal(inb(LSR), 0x63);
  assert.deepEqual(irq.levels, [true, false, true, false]);
});

test("reset drops a raised IRQ line and restores register reset values", () => {
  const { uart, irq, inb, outb } = makeUart();
  outb(MCR, 0x08);
  outb(IER, 0x02);
  outb(SCR, 0x77);
  assert.deepEqual(irq.levels, [true]);
  uart.reset();
  assert.deepEqual(irq.levels, [true, false]);
  assert.equal(inb(IER), 0x00);
  assert.equal(inb(MCR), 0x00);
  assert.equal(inb(IIR), 0x01);
  assert.equal(inb(SCR), 0x77);
});

test("loopback feeds THR into the receiver, not the sink, and MSR mirrors MCR", () => {
  const { uart, sent, inb, outb } = makeUart();
  outb(LCR, 0x03);
  assert.equal(inb(MSR), 0xb0);
  // Linux's 8250 probe: MCR = LOOP | OUT2 | RTS must read back MSR status 0x90.
  outb(MCR, 0x1a);
  assert.equal(inb(MSR) & 0xf0, 0x90);
  outb(MCR, 0x1f); // DTR, RTS, OUT1, OUT2
  assert.equal(inb(MSR), 0xf2); // all lines up; DSR and RI rose (RI rising is not a TERI)
  outb(MCR, 0x1b); // OUT1 off: RI trailing edge
  assert.equal(inb(MSR), 0xb4);
  outb(MCR, 0x10);
  assert.equal(inb(MSR), 0x0b); // CTS, DSR, DCD dropped
  outb(THR, 0x5a);
  assert.deepEqual(sent, []);
  assert.equal(inb(LSR), 0x61);
  assert.equal(inb(RBR), 0x5a);
  uart.receive([0x99]); // the serial input is disconnected in loopback
  assert.equal(uart.rxSpace(), 0);
  assert.equal(inb(LSR), 0x60);
  outb(MCR, 0x00);
  assert.equal(inb(MSR), 0xbb); // back to the external lines, all three changed
  outb(THR, 0x5b);
  assert.deepEqual(sent, [0x5b]);
  assert.equal(inb(LSR), 0x60);
  assert.equal(uart.overruns, 0);
});

test("loopback overruns the 16450 holding register like host input does", () => {
  const { uart, inb, outb } = makeUart();
  outb(MCR, 0x10);
  outb(THR, 0x01);
  outb(THR, 0x02);
  assert.equal(uart.overruns, 1);
  assert.equal(inb(LSR), 0x63);
  assert.equal(inb(RBR), 0x02);
});

test("onRxDrained fires when the guest empties the receiver or leaves loopback", () => {
  let drained = 0;
  const { uart, inb, outb } = makeUart({ onRxDrained: () => drained++ });
  outb(FCR, 0x01);
  uart.receive([1, 2]);
  inb(RBR);
  assert.equal(drained, 0);
  inb(RBR);
  assert.equal(drained, 1);
  inb(RBR); // already empty
  assert.equal(drained, 1);
  uart.receive([3]);
  outb(FCR, 0x03);
  assert.equal(drained, 2);
  outb(FCR, 0x03); // nothing to clear
  assert.equal(drained, 2);
  outb(MCR, 0x10);
  outb(MCR, 0x00);
  assert.equal(drained, 3);
});

test("a host can refill from onRxDrained without losing bytes", () => {
  const pending = Array.from({ length: 40 }, (_, i) => i);
  const { uart, inb, outb } = makeUart({
    onRxDrained: () => uart.receive(pending.splice(0, uart.rxSpace())),
  });
  outb(LCR, 0x03);
  outb(FCR, 0x01);
  uart.receive(pending.splice(0, uart.rxSpace()));
  const got: number[] = [];
  while ((inb(LSR) & 0x01) !== 0) got.push(inb(RBR));
  assert.deepEqual(got, Array.from({ length: 40 }, (_, i) => i));
  assert.equal(uart.overruns, 0);
});

test("wider accesses act on the byte at the offset, zero-extended; stray offsets never throw", () => {
  const { uart, sent } = makeUart();
  uart.write(LCR, 1, 0x03);
  uart.write(SCR, 4, 0x1234_56c3);
  assert.equal(uart.read(SCR, 2, WIDE), 0xc3);
  assert.equal(uart.read(SCR, 4, WIDE), 0xc3);
  const wide = { high: 0 };
  assert.equal(uart.read(SCR, 8, wide), 0xc3);
  assert.equal(wide.high, 0, "an 8-byte read of a register: the high word is zero");
  assert.equal(uart.read(8, 8, wide), 0xffff_ffff);
  assert.equal(wide.high, 0xffff_ffff, "an 8-byte read of no register: all 64 bits are ones");
  uart.write(THR, 2, 0xff41);
  uart.write(THR, 8, 0xffff_ff42);
  assert.deepEqual(sent, [0x41, 0x42]);
  uart.receive([0x99]);
  assert.equal(uart.read(RBR, 4, WIDE), 0x99);
  assert.equal(uart.read(LSR, 2, WIDE), 0x60);
  assert.equal(uart.read(8, 1, WIDE), 0xff);
  assert.equal(uart.read(-1, 2, WIDE), 0xffff);
  assert.equal(uart.read(1.5, 4, WIDE), 0xffff_ffff);
  uart.write(8, 1, 0x00);
  uart.write(SCR, 1, Number.NaN);
  assert.equal(uart.read(SCR, 1, WIDE), 0x00);
});
