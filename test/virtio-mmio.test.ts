/**
 * The virtio-mmio register file and virtio-blk's request checks, driven from JS as a driver
 * would drive them: negotiation that must be refused, reset, queue layouts the device must
 * reject, the interrupt line following InterruptStatus, config-change notifications, and
 * malformed block requests failed the way the spec says (IOERR, UNSUPP) or, with no room
 * for a status, DEVICE_NEEDS_RESET, and DISCARD / WRITE_ZEROES checked on a host file (holes
 * punched, zeroes written, every malformed segment list refused without touching the file).
 * The guest-driven story is in virtio-guest.test.ts.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestMemory } from "../memory/guest-memory.js";
import { VirtioMmio as R, VirtioMmioTransport, VirtioStatus as S } from "../runtime/devices/virtio/mmio-transport.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import {
  BlockImageError, DISCARD_SEGMENT_BYTES, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_DISCARD_SEG,
  VIRTIO_BLK_MAX_WRITE_ZEROES_SEG, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP as UNMAP, VirtioBlk, VirtioBlkRequest, VirtioBlkStatus,
} from "../runtime/devices/virtio/virtio-blk.js";
import { VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE } from "../runtime/devices/virtio/virtqueue.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { DriverRing } from "./helpers/split-ring.js";
import { holeBlocks } from "./helpers/file-holes.js";

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

for (const eventIndex of [false, true]) {
  test(`kicks are not asked for while the device walks the queue, and an entry offered then is still served (${eventIndex ? "EVENT_IDX avail_event" : "VIRTQ_USED_F_NO_NOTIFY"})`, () => {
    const memory = GuestMemory.allocate([{ gpa: 0, size: 1 << 20 }]);
    const driver = DriverRing.at(memory, RING, 8, { eventIndex });
    const availEvent = () => driver.availEvent();
    const noNotify = () => memory.readU16(driver.layout.usedRing) & 1;
    // What the driver would see, deciding whether to kick for an entry it offers (virtio 1.2
    // section 2.7.10: with EVENT_IDX, kick when the new index passes avail_event).
    const wantsKick = (before: number) => eventIndex ? ((driver.availIndex - availEvent() - 1) & 0xffff) < ((driver.availIndex - before) & 0xffff) : noNotify() === 0;
    const seen: { kickWanted: boolean }[] = [];
    let served = 0;
    const device: VirtioDevice = {
      name: "recorder", deviceId: 4, features: 0n, queueSizes: [8], config: new Uint8Array(0), reset() {},
      processQueue(_index, queue) {
        for (let chain = queue.pop(); chain !== undefined && !(chain instanceof Error); chain = queue.pop()) {
          queue.pushUsed(chain.head, 0);
          served++;
          // A driver on another vCPU offers more while this one is walked.
          if (served === 1) {
            const before = driver.availIndex;
            driver.offer(0);
            seen.push({ kickWanted: wantsKick(before) });
          }
        }
        if (served === 2) {
          // ... and once more after the device's last pop, before it turns kicks back on.
          const before = driver.availIndex;
          driver.offer(0);
          seen.push({ kickWanted: wantsKick(before) });
        }
      },
    };
    const later: (() => void)[] = [];
    const transport = new VirtioMmioTransport({ memory, device, interrupt: { set() {} }, schedule: (serve) => later.push(serve) });
    const t = { r: (offset: number) => transport.read(offset, 4, { high: 0 }), w: (offset: number, value: number) => transport.write(offset, 4, value) };
    bringUp(t as ReturnType<typeof rig>, driver, eventIndex ? 1 << 29 : 0);
    driver.writeDescriptor(0, { addr: 0x8000, len: 16, flags: WRITE, next: 0 });
    driver.offer(0);
    t.w(R.QueueNotify, 0);
    assert.deepEqual(seen, [{ kickWanted: false }, { kickWanted: false }], "no kick asked for while the device was busy");
    assert.equal(served, 2, "the entry offered during the walk was taken in it");
    assert.equal(noNotify(), 0, "kicks asked for again once the device is done");
    if (eventIndex) assert.equal(availEvent(), 2, "avail_event names the first entry not taken");
    assert.equal(later.length, 1, "the entry offered after the last pop, with no kick coming, is served later");
    later.shift()!();
    assert.equal(served, 3);
    assert.equal(driver.usedIndex(), 3);
    assert.equal(later.length, 0);
    assert.equal(transport.stats.faults, 0);
  });
}

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

// ---- DISCARD and WRITE_ZEROES ----

const BLOCK = 4096;
const DISCARD_BITS = (1 << Number(VIRTIO_BLK_F_DISCARD)) | (1 << Number(VIRTIO_BLK_F_WRITE_ZEROES));

/** A 64 KiB image, every byte written (no holes), each 4 KiB block a pattern of its own. */
function patternImage(name: string, folder = dir): { path: string; bytes: Buffer } {
  const bytes = Buffer.alloc(16 * BLOCK);
  for (let i = 0; i < bytes.length; i++) bytes[i] = ((i >> 12) * 37 + i * 7 + 1) & 0xff || 1;
  const path = join(folder, name);
  writeFileSync(path, bytes);
  return { path, bytes };
}

interface Segment { sector: number | bigint; sectors: number; flags?: number }

/** One DISCARD or WRITE_ZEROES request of `segments` (or raw `payload` bytes) through the transport. */
function zeroRequest(path: string, type: number, segments: Segment[] | Uint8Array, features = DISCARD_BITS) {
  const blk = new VirtioBlk({ path });
  const t = rig(blk);
  const driver = DriverRing.at(t.memory, RING, 8);
  bringUp(t, driver, features);
  let payload: Uint8Array;
  if (segments instanceof Uint8Array) {
    payload = segments;
  } else {
    payload = new Uint8Array(DISCARD_SEGMENT_BYTES * segments.length);
    const view = new DataView(payload.buffer);
    segments.forEach((s, i) => {
      view.setBigUint64(i * 16, BigInt(s.sector), true);
      view.setUint32(i * 16 + 8, s.sectors, true);
      view.setUint32(i * 16 + 12, s.flags ?? 0, true);
    });
  }
  t.memory.writeU32(HEADER, type);
  t.memory.writeU64(HEADER + 8, 0n);
  t.memory.write(DATA, payload);
  t.memory.writeU8(STATUS, 0xff);
  driver.writeDescriptor(0, { addr: HEADER, len: 16, flags: NEXT, next: 1 });
  driver.writeDescriptor(1, { addr: DATA, len: payload.length, flags: NEXT, next: 2 });
  driver.writeDescriptor(2, { addr: STATUS, len: 1, flags: WRITE, next: 0 });
  driver.offer(0);
  t.w(R.QueueNotify, 0);
  assert.equal(driver.usedIndex(), 1, "the request completed");
  assert.equal(t.transport.stats.faults, 0);
  blk.close();
  return { status: t.memory.readU8(STATUS), stats: blk.stats };
}

const sectorsOf = (block: number) => block * (BLOCK / 512);

test("virtio-blk offers DISCARD and WRITE_ZEROES with their limits on a writable image that can punch holes, not on a read-only one", () => {
  const { path } = patternImage("features.img");
  const blk = new VirtioBlk({ path });
  assert.equal(blk.offersDiscard, true, "ext4 and tmpfs punch holes");
  assert.equal(Number(blk.features >> VIRTIO_BLK_F_DISCARD) & 3, 3);
  const config = new DataView(blk.config.buffer);
  assert.equal(config.getUint32(36, true), VIRTIO_BLK_MAX_DISCARD_SECTORS);
  assert.equal(config.getUint32(40, true), VIRTIO_BLK_MAX_DISCARD_SEG);
  assert.equal(config.getUint32(44, true), 8, "discard_sector_alignment: 4 KiB");
  assert.equal(config.getUint32(52, true), VIRTIO_BLK_MAX_WRITE_ZEROES_SEG);
  assert.equal(config.getUint8(56), 1, "write_zeroes_may_unmap");
  blk.close();
  for (const options of [{ readOnly: true }, { discard: false }]) {
    const other = new VirtioBlk({ path, ...options });
    assert.equal(other.features & ((1n << VIRTIO_BLK_F_DISCARD) | (1n << VIRTIO_BLK_F_WRITE_ZEROES)), 0n, JSON.stringify(options));
    assert.equal(new DataView(other.config.buffer).getUint32(36, true), 0, "no discard limits in the config");
    other.close();
  }
});

/** tmpfs has PUNCH_HOLE but no ZERO_RANGE: there WRITE_ZEROES writes the zeroes out. */
const SHM = existsSync("/dev/shm") ? mkdtempSync("/dev/shm/workervisor-virtio-mmio-") : undefined;
after(() => SHM && rmSync(SHM, { recursive: true, force: true }));

for (const [where, folder] of [["the temporary folder", dir], ["tmpfs, with no ZERO_RANGE", SHM]] as const) {
  test(`WRITE_ZEROES leaves zeroes and keeps the blocks; with UNMAP and DISCARD the range becomes a hole; the rest of the file is untouched (${where})`, { skip: folder === undefined && "no /dev/shm" }, () => {
    const image = patternImage("zeroes.img", folder);
    const blocksBefore = statSync(image.path).blocks;
    assert.equal(blocksBefore, 128, "the image starts fully allocated");
    const zeroed = zeroRequest(image.path, VirtioBlkRequest.WRITE_ZEROES, [{ sector: sectorsOf(1), sectors: sectorsOf(2) }]);
    assert.equal(zeroed.status, VirtioBlkStatus.OK);
    assert.equal(zeroed.stats.writeZeroes, 1);
    assert.equal(statSync(image.path).blocks, blocksBefore, "WRITE_ZEROES without UNMAP keeps the blocks allocated");
    const unmapped = zeroRequest(image.path, VirtioBlkRequest.WRITE_ZEROES, [{ sector: sectorsOf(5), sectors: sectorsOf(1), flags: UNMAP }]);
    assert.equal(unmapped.status, VirtioBlkStatus.OK);
    const discarded = zeroRequest(image.path, VirtioBlkRequest.DISCARD, [{ sector: sectorsOf(8), sectors: sectorsOf(2) }, { sector: sectorsOf(12), sectors: sectorsOf(1) }]);
    assert.equal(discarded.status, VirtioBlkStatus.OK);
    assert.equal(discarded.stats.discards, 1);
    // ext4 may report WRITE_ZEROES's unwritten extents (blocks 1-2) as holes too.
    const holes = holeBlocks(image.path).filter((b) => b !== 1 && b !== 2);
    assert.deepEqual(holes, [5, 8, 9, 12], "UNMAP and DISCARD punched holes, and only they did");
    const file = readFileSync(image.path);
    assert.equal(file.length, image.bytes.length, "the size is kept");
    const zeroBlocks = new Set([1, 2, 5, 8, 9, 12]);
    for (let b = 0; b < 16; b++) {
      const got = file.subarray(b * BLOCK, (b + 1) * BLOCK);
      if (zeroBlocks.has(b)) assert.ok(got.every((x) => x === 0), `block ${b} reads as zeroes`);
      else assert.deepEqual(got, image.bytes.subarray(b * BLOCK, (b + 1) * BLOCK), `block ${b} is untouched`);
    }
  });
}

test("malformed DISCARD and WRITE_ZEROES requests fail with UNSUPP or IOERR as the spec says, and change nothing in the file", () => {
  const image = patternImage("refused.img");
  const capacity = image.bytes.length / 512;
  const segment = (n: number): Segment[] => Array.from({ length: n }, (_, i) => ({ sector: i * 8, sectors: 8 }));
  const cases: [string, number, Segment[] | Uint8Array, number, number?][] = [
    ["a reserved flag on WRITE_ZEROES", VirtioBlkRequest.WRITE_ZEROES, [{ sector: 0, sectors: 8, flags: 2 }], VirtioBlkStatus.UNSUPP],
    ["the top reserved flag with UNMAP", VirtioBlkRequest.WRITE_ZEROES, [{ sector: 0, sectors: 8, flags: 0x8000_0001 }], VirtioBlkStatus.UNSUPP],
    ["UNMAP on a DISCARD", VirtioBlkRequest.DISCARD, [{ sector: 0, sectors: 8, flags: UNMAP }], VirtioBlkStatus.UNSUPP],
    ["a good segment then a reserved flag", VirtioBlkRequest.DISCARD, [{ sector: 0, sectors: 8 }, { sector: 16, sectors: 8, flags: 4 }], VirtioBlkStatus.UNSUPP],
    ["more segments than max_discard_seg", VirtioBlkRequest.DISCARD, segment(VIRTIO_BLK_MAX_DISCARD_SEG + 1), VirtioBlkStatus.UNSUPP],
    ["more segments than max_write_zeroes_seg", VirtioBlkRequest.WRITE_ZEROES, segment(VIRTIO_BLK_MAX_WRITE_ZEROES_SEG + 1), VirtioBlkStatus.UNSUPP],
    ["DISCARD not negotiated", VirtioBlkRequest.DISCARD, segment(1), VirtioBlkStatus.UNSUPP, 1 << Number(VIRTIO_BLK_F_WRITE_ZEROES)],
    ["WRITE_ZEROES not negotiated", VirtioBlkRequest.WRITE_ZEROES, segment(1), VirtioBlkStatus.UNSUPP, 1 << Number(VIRTIO_BLK_F_DISCARD)],
    ["a range past the end", VirtioBlkRequest.DISCARD, [{ sector: capacity - 4, sectors: 8 }], VirtioBlkStatus.IOERR],
    ["a good segment then one past the end", VirtioBlkRequest.WRITE_ZEROES, [{ sector: 0, sectors: 8 }, { sector: capacity, sectors: 1 }], VirtioBlkStatus.IOERR],
    ["a sector beyond 2^53", VirtioBlkRequest.DISCARD, [{ sector: 2n ** 63n, sectors: 1 }], VirtioBlkStatus.IOERR],
    ["num_sectors over max_discard_sectors", VirtioBlkRequest.DISCARD, [{ sector: 0, sectors: VIRTIO_BLK_MAX_DISCARD_SECTORS + 1 }], VirtioBlkStatus.IOERR],
    ["num_sectors 2^32 - 1", VirtioBlkRequest.WRITE_ZEROES, [{ sector: 0, sectors: 0xffff_ffff }], VirtioBlkStatus.IOERR],
    ["a segment list of 8 bytes", VirtioBlkRequest.DISCARD, new Uint8Array(8), VirtioBlkStatus.IOERR],
    ["a segment list of 24 bytes", VirtioBlkRequest.WRITE_ZEROES, new Uint8Array(24), VirtioBlkStatus.IOERR],
  ];
  for (const [what, type, segments, expected, features] of cases) {
    const { status, stats } = zeroRequest(image.path, type, segments, features);
    assert.equal(status, expected, what);
    assert.equal(stats.failed, 1, what);
  }
  assert.deepEqual(readFileSync(image.path), image.bytes, "no refused request touched the file");
  assert.equal(statSync(image.path).blocks, 128);
});
