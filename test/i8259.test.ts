/**
 * The userspace 8259A pair's port accesses, as split mode's main thread handles them: the
 * ELCR keeps only the bits the PIIX lets be level-triggered, and no access allocates (Linux
 * programs these ports at boot and on every IRQ's mask change), neither while V8 still
 * interprets the port code, as it does for ports written a few times, nor once optimized.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { I8259Pair } from "../runtime/devices/irqchip/i8259.js";
import { AllocationMeter } from "./helpers/allocation-meter.js";

/** The high word of an 8-byte read, which these 1-byte ports never fill. */
const WIDE = { high: 0 };
const COLD_ACCESSES = 1000;
const WARMUP = 20_000;
const ACCESSES = 200_000;
/**
 * Heap bytes per access allowed. Measured, first 1000 ELCR accesses of the process (the
 * code not yet optimized): 9.6, V8's own first-call bookkeeping; 89 with the array of the
 * two chips the ELCR ports built per access. Once optimized: 0.1 (V8 elides that array).
 */
const MAX_BYTES_PER_COLD_ACCESS = 40;
const MAX_BYTES_PER_ACCESS = 2;

// First in this file: the ELCR port code must not have run yet in this process.
test("ELCR accesses allocate nothing before V8 optimizes them", () => {
  const pic = new I8259Pair(() => {});
  let sum = 0;
  const meter = new AllocationMeter();
  meter.start();
  for (let i = 0; i < COLD_ACCESSES / 2; i++) {
    pic.elcrPorts.write(i & 1, 1, 0x40, 0); // IRQ 6 or 14 level-triggered
    sum += pic.elcrPorts.read(i & 1, 1, WIDE);
  }
  const { bytes } = meter.stop();
  assert.equal(sum, 0x40 * (COLD_ACCESSES / 2), "every read saw the level bit written");
  const perAccess = bytes / COLD_ACCESSES;
  assert.ok(perAccess <= MAX_BYTES_PER_COLD_ACCESS, `${perAccess.toFixed(1)} heap bytes per ELCR access (at most ${MAX_BYTES_PER_COLD_ACCESS})`);
});

test("ELCR: edge-only IRQs 0, 1, 2, 8 and 13 stay edge, the rest read back as written", () => {
  const pic = new I8259Pair(() => {});
  pic.elcrPorts.write(0, 2, 0xffff, 0);
  assert.equal(pic.elcrPorts.read(0, 1, WIDE), 0xf8);
  assert.equal(pic.elcrPorts.read(1, 1, WIDE), 0xde);
  pic.elcrPorts.write(1, 1, 0x21, 0);
  assert.equal(pic.elcrPorts.read(1, 1, WIDE), 0x00);
  assert.equal(pic.elcrPorts.read(0, 1, WIDE), 0xf8, "a write to the slave's ELCR leaves the master's");
});

test("PIC port accesses allocate nothing once optimized: ELCR, mask and command ports", () => {
  let outputs = 0;
  const pic = new I8259Pair(() => outputs++);
  const { masterPorts, slavePorts, elcrPorts } = pic;
  let sum = 0;
  const access = (i: number): void => {
    elcrPorts.write(i & 1, 1, 0x20, 0);
    sum += elcrPorts.read(i & 1, 1, WIDE);
    masterPorts.write(1, 1, i & 0xfb, 0); // OCW1: mask
    sum += masterPorts.read(1, 1, WIDE);
    slavePorts.write(0, 1, 0x0b, 0); // OCW3: read ISR
    sum += slavePorts.read(0, 1, WIDE);
  };
  for (let i = 0; i < WARMUP; i++) access(i);
  const meter = new AllocationMeter();
  meter.start();
  for (let i = 0; i < ACCESSES; i++) access(i);
  const { bytes, collections } = meter.stop();
  const perAccess = bytes / (ACCESSES * 6);
  assert.ok(sum > 0 && outputs === 0, "the accesses ran (and raised no interrupt)");
  assert.ok(perAccess <= MAX_BYTES_PER_ACCESS, `${perAccess.toFixed(2)} heap bytes per PIC port access (${bytes} over ${ACCESSES * 6}, ${collections} collections; at most ${MAX_BYTES_PER_ACCESS})`);
});
