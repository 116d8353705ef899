/**
 * The virtio-mmio register file and virtio-blk's request checks, driven from JS as a driver
 * would drive them: negotiation that must be refused, reset, queue layouts the device must
 * reject, the interrupt line following InterruptStatus, config-change notifications, and
 * malformed block requests failed the way the spec says (IOERR, UNSUPP) or, with no room
 * for a status, DEVICE_NEEDS_RESET. The guest-driven story is in virtio-guest.test.ts.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestMemory } from "../memory/guest-memory.js";
import { VirtioMmio as R, VirtioMmioTransport, VirtioStatus as S } from "../runtime/devices/virtio/mmio-transport.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import { BlockImageError, VirtioBlk, VirtioBlkStatus } from "../runtime/devices/virtio/virtio-blk.js";
import { VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE } from "../runtime/devices/virtio/virtqueue.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { DriverRing } from "./helpers/split-ring.js";

const dir = mkdtempSync(join(tmpdir(), "workervisor-virtio-mmio-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const RING = 0x1000;
const VERSION_1_HIGH = 1;

function rig(device: VirtioDevice = new VirtioRng()) {
  const memory = GuestMemory.allocate([{ gpa: 0, size: 1 << 20 }]);
  const levels: boolean[] = [];
  const log: string[] = [];
  const transport = new VirtioMmioTransport({ memory, device, interrupt: { set: (level) => levels.push(level) }, log: (m) => log.push(m) });
  const r = (offset: number) => transport.read(offset, 4, { high: 0 });
  const w = (offset: number, value: number) => transport.write(offset, 4, value);
  return { memory, transport, levels, log, r, w };
}

/** The driver's side of section 3.1.1 up to DRIVER_OK, queue 0 in `driver`'s layout. */
function bringUp(t: ReturnType<typeof rig>, driver: DriverRing, lowFeatures = 0): void {
  t.w(R.Status, 0);
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER);
  t.w(R.DriverFeaturesSel, 0);
  t.w(R.DriverFeatures, lowFeatures);
  t.w(R.DriverFeaturesSel, 1);
  t.w(R.DriverFeatures, VERSION_1_HIGH);
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.ok(t.r(R.Status) & S.FEATURES_OK);
  t.w(R.QueueSel, 0);
  t.w(R.QueueNum, driver.layout.size);
  t.w(R.QueueDescLow, driver.layout.descriptorTable);
  t.w(R.QueueDriverLow, driver.layout.availRing);
  t.w(R.QueueDeviceLow, driver.layout.usedRing);
  t.w(R.QueueReady, 1);
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
}

test("identification registers, and only aligned 32-bit register accesses count", () => {
  const t = rig();
  assert.equal(t.r(R.MagicValue), 0x74726976);
  assert.equal(t.r(R.Version), 2);
  assert.equal(t.r(R.DeviceID), 4);
  assert.equal(t.r(R.QueueNumMax), 256);
  t.w(R.QueueSel, 1);
  assert.equal(t.r(R.QueueNumMax), 0, "a queue that does not exist has QueueNumMax 0");
  t.w(R.DeviceFeaturesSel, 1);
  assert.equal(t.r(R.DeviceFeatures) & VERSION_1_HIGH, VERSION_1_HIGH);
  t.w(R.DeviceFeaturesSel, 0);
  assert.equal(t.r(R.DeviceFeatures) >>> 28, 0b11, "INDIRECT_DESC and EVENT_IDX offered");
  assert.equal(t.transport.read(R.MagicValue, 2, { high: 0 }), 0);
  assert.equal(t.transport.read(R.MagicValue + 1, 4, { high: 0 }), 0);
  assert.equal(t.transport.stats.badAccesses, 2);
});

test("FEATURES_OK is refused without VERSION_1 and for a feature not offered; DRIVER_OK needs FEATURES_OK", () => {
  const t = rig();
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER);
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.equal(t.r(R.Status) & S.FEATURES_OK, 0, "no VERSION_1: refused");
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER | S.DRIVER_OK);
  assert.equal(t.r(R.Status) & S.DRIVER_OK, 0);
  t.w(R.DriverFeaturesSel, 1);
  t.w(R.DriverFeatures, VERSION_1_HIGH | 2); // bit 33 is not offered
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.equal(t.r(R.Status) & S.FEATURES_OK, 0, "an unoffered feature: refused");
  t.w(R.DriverFeatures, VERSION_1_HIGH);
  t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.ok(t.r(R.Status) & S.FEATURES_OK);
  t.w(R.DriverFeatures, VERSION_1_HIGH | 2);
  assert.equal(t.transport.negotiatedFeatures, 1n << 32n, "features are frozen after FEATURES_OK");
});

test("a queue layout outside RAM or a QueueNum above QueueNumMax sets DEVICE_NEEDS_RESET, logged once; reset clears everything", () => {
  for (const [what, setup] of [
    ["used ring outside RAM", (t: ReturnType<typeof rig>) => { t.w(R.QueueNum, 8); t.w(R.QueueDeviceLow, 0); t.w(R.QueueDeviceHigh, 1); }],
    ["QueueNum above QueueNumMax", (t: ReturnType<typeof rig>) => { t.w(R.QueueNum, 512); }],
    ["QueueNum not a power of 2", (t: ReturnType<typeof rig>) => { t.w(R.QueueNum, 6); }],
  ] as const) {
    const t = rig();
    bringUp(t, DriverRing.at(t.memory, RING, 8));
    t.w(R.Status, 0);
    t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER);
    t.w(R.DriverFeaturesSel, 1);
    t.w(R.DriverFeatures, VERSION_1_HIGH);
    t.w(R.Status, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    setup(t);
    t.w(R.QueueReady, 1);
    assert.ok(t.r(R.Status) & S.DEVICE_NEEDS_RESET, what);
    assert.equal(t.r(R.QueueReady), 0, what);
    assert.equal(t.log.length, 1, what);
    t.w(R.QueueReady, 1);
    assert.equal(t.log.length, 1, `${what}: still logged once`);
    t.w(R.Status, 0);
    assert.equal(t.r(R.Status), 0, `${what}: reset`);
    assert.equal(t.transport.fault, undefined);
  }
});

test("the interrupt line follows InterruptStatus: raised by a used buffer, lowered by the ack; a config change raises bit 1", () => {
  const t = rig();
  const driver = DriverRing.at(t.memory, RING, 8);
  bringUp(t, driver);
  driver.writeDescriptor(0, { addr: 0x8000, len: 16, flags: WRITE, next: 0 });
  driver.offer(0);
  t.w(R.QueueNotify, 0);
  assert.equal(driver.usedIndex(), 1);
  assert.deepEqual(driver.usedElement(0), { id: 0, len: 16 });
  assert.equal(t.r(R.InterruptStatus), 1);
  assert.deepEqual(t.levels, [true]);
  t.w(R.InterruptACK, 1);
  assert.deepEqual(t.levels, [true, false]);
  const generation = t.r(R.ConfigGeneration);
  t.transport.configChanged();
  assert.equal(t.r(R.InterruptStatus), 2);
  assert.equal(t.r(R.ConfigGeneration), generation + 1);
  t.w(R.Status, 0);
  assert.deepEqual(t.levels, [true, false, true, false], "reset lowers the line");
});

test("a notification before DRIVER_OK, or for a queue that does not exist, does nothing", () => {
  const t = rig();
  const driver = DriverRing.at(t.memory, RING, 8);
  driver.writeDescriptor(0, { addr: 0x8000, len: 16, flags: WRITE, next: 0 });
  driver.offer(0);
  t.w(R.QueueNotify, 0);
  bringUp(t, driver);
  t.w(R.QueueNotify, 7);
  t.w(R.QueueNotify, 0xffff_ffff);
  assert.equal(driver.usedIndex(), 0);
  assert.equal(t.transport.stats.faults, 0);
});

// ---- virtio-blk requests ----

const IMAGE = join(dir, "disk.img");
writeFileSync(IMAGE, Buffer.alloc(8 * 512, 0x5a));
const HEADER = 0x8000;
const DATA = 0x9000;
const STATUS = 0xa000;

function blkRequest(type: number, sector: bigint, data: { len: number; flags: number } | undefined, statusLen = 1, readOnly = false) {
  const blk = new VirtioBlk({ path: IMAGE, readOnly });
  const t = rig(blk);
  const driver = DriverRing.at(t.memory, RING, 8);
  bringUp(t, driver);
  t.memory.writeU32(HEADER, type);
  t.memory.writeU64(HEADER + 8, sector);
  t.memory.writeU8(STATUS, 0xff);
  driver.writeDescriptor(0, { addr: HEADER, len: 16, flags: NEXT, next: 1 });
  if (data) driver.writeDescriptor(1, { addr: DATA, len: data.len, flags: data.flags | NEXT, next: 2 });
  driver.writeDescriptor(data ? 2 : 1, { addr: STATUS, len: statusLen, flags: statusLen ? WRITE : 0, next: 0 });
  driver.offer(0);
  t.w(R.QueueNotify, 0);
  blk.close();
  return { status: t.memory.readU8(STATUS + Math.max(statusLen - 1, 0)), t, blk, used: driver.usedIndex() };
}

test("virtio-blk fails bad requests as the spec says: IOERR past the end or not whole sectors, UNSUPP for unknown types", () => {
  assert.equal(blkRequest(0, 0n, { len: 512, flags: WRITE }).status, VirtioBlkStatus.OK);
  assert.equal(blkRequest(0, 7n, { len: 512, flags: WRITE }).status, VirtioBlkStatus.OK, "the last sector");
  assert.equal(blkRequest(0, 7n, { len: 1024, flags: WRITE }).status, VirtioBlkStatus.IOERR, "runs past the end");
  assert.equal(blkRequest(0, 2n ** 63n, { len: 512, flags: WRITE }).status, VirtioBlkStatus.IOERR, "a huge sector");
  assert.equal(blkRequest(0, 0n, { len: 100, flags: WRITE }).status, VirtioBlkStatus.IOERR, "not a whole sector");
  assert.equal(blkRequest(1, 0n, { len: 512, flags: 0 }, 1, true).status, VirtioBlkStatus.IOERR, "a write to a read-only disk");
  assert.equal(blkRequest(99, 0n, undefined).status, VirtioBlkStatus.UNSUPP);
  const noStatus = blkRequest(1, 0n, { len: 512, flags: 0 }, 0);
  assert.ok(noStatus.t.r(R.Status) & S.DEVICE_NEEDS_RESET, "no writable byte for the status: the device needs a reset");
  assert.equal(noStatus.used, 0);
  assert.match(noStatus.t.log[0], /no device-writable byte/);
});

test("virtio-blk refuses images it cannot use, saying why", () => {
  assert.throws(() => new VirtioBlk({ path: join(dir, "missing.img") }), (e: unknown) => e instanceof BlockImageError && /cannot open the block image/.test(e.message));
  const tiny = join(dir, "tiny.img");
  writeFileSync(tiny, Buffer.alloc(100));
  assert.throws(() => new VirtioBlk({ path: tiny }), /at least one 512-byte sector/);
  assert.throws(() => new VirtioBlk({ path: IMAGE, serial: "x".repeat(21) }), /at most 20 printable ASCII/);
});
