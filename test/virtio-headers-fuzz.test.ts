/**
 * Fuzz targets (fast-check) for the packet headers guests write to virtio-net and
 * virtio-vsock, alone and through the devices: whatever the bytes, the parsers never throw
 * and decode every field in range, the checks accept exactly what the device offered, and a
 * transmit queue full of guest-chosen chains (header bytes, lengths, segment splits) never
 * makes a device throw, carries only frames/payloads within their bounds and byte-identical
 * to the guest's, and completes or faults every request. The same for virtio-blk's requests
 * (IN, OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES segment lists, unknown types) against a
 * model of the image: every status is the one the rules give, and the host file ends up
 * exactly as the accepted requests make it.
 * Runs for WORKERVISOR_FUZZ_SECONDS (default 10) per target, or its run count, whichever ends first.
 */
import { after, test } from "node:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { PassThrough, type Duplex } from "node:stream";
import fc from "fast-check";
import { GuestMemory } from "../memory/guest-memory.js";
import { SplitVirtqueue, VIRTQ_DESC_F_NEXT } from "../runtime/devices/virtio/virtqueue.js";
import type { VirtioQueueContext } from "../runtime/devices/virtio/virtio-device.js";
import {
  parseNetHeader, transmitHeaderProblem, VirtioNet, VIRTIO_NET_HDR_BYTES, VIRTIO_NET_HDR_F_NEEDS_CSUM, TX_QUEUE,
} from "../runtime/devices/virtio/virtio-net.js";
import { ETHERNET_HEADER_BYTES, MAX_FRAME_BYTES, type NetBackend } from "../runtime/devices/virtio/net-backend.js";
import {
  parseVsockHeader, vsockPacketProblem, VirtioVsock, VsockOp, VSOCK_HEADER_BYTES, VSOCK_HOST_CID, VSOCK_MAX_PAYLOAD, VSOCK_TYPE_STREAM,
  writeVsockHeader, MAX_VSOCK_CONNECTIONS,
} from "../runtime/devices/virtio/virtio-vsock.js";
import type { VsockHost } from "../runtime/devices/virtio/vsock-host.js";
import {
  VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_DISCARD_SEG, VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS,
  VIRTIO_BLK_MAX_WRITE_ZEROES_SEG, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, VirtioBlk, VirtioBlkRequest as T, VirtioBlkStatus as S,
} from "../runtime/devices/virtio/virtio-blk.js";
import { VIRTQ_DESC_F_WRITE } from "../runtime/devices/virtio/virtqueue.js";
import { DriverRing } from "./helpers/split-ring.js";

const SECONDS = Number(process.env.WORKERVISOR_FUZZ_SECONDS ?? 10);
const limits = (runs: number) => ({ numRuns: runs, interruptAfterTimeLimit: SECONDS * 1000, markInterruptAsFailure: false });
const MiB = 1 << 20;
const RING = 0x1000;
const DATA = 0x10000;
const QUEUE = 64; // room for every descriptor the generators make (8 chains of up to 4)

test("fuzz: virtio_net_hdr and virtio_vsock_hdr parse any bytes into in-range fields; the checks accept exactly what is allowed", { timeout: (SECONDS + 60) * 1000 }, () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: VIRTIO_NET_HDR_BYTES, maxLength: 64 }), (bytes) => {
    const h = parseNetHeader(bytes);
    for (const v of [h.hdrLen, h.gsoSize, h.csumStart, h.csumOffset, h.numBuffers]) assert.ok(v >= 0 && v <= 0xffff);
    assert.equal(h.flags, bytes[0]);
    assert.equal(h.gsoType, bytes[1]);
    const refused = (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 || h.gsoType !== 0;
    assert.equal(transmitHeaderProblem(h) !== undefined, refused);
  }), limits(5000));
  assert.throws(() => parseNetHeader(new Uint8Array(11)), RangeError);

  const guestCid = 3n + BigInt(Math.floor(Math.random() * 1000));
  fc.assert(fc.property(fc.uint8Array({ minLength: VSOCK_HEADER_BYTES, maxLength: VSOCK_HEADER_BYTES }), fc.nat({ max: 2 * VSOCK_MAX_PAYLOAD }), (bytes, carried) => {
    const h = parseVsockHeader(bytes);
    const again = new Uint8Array(VSOCK_HEADER_BYTES);
    writeVsockHeader(again, h);
    assert.deepEqual(again, bytes, "parse and write are inverse");
    const problem = vsockPacketProblem(h, guestCid, carried);
    if (problem === undefined) {
      assert.ok(h.len <= carried && h.len <= VSOCK_MAX_PAYLOAD);
      assert.equal(h.srcCid, guestCid);
      assert.equal(h.dstCid, BigInt(VSOCK_HOST_CID));
      assert.equal(h.type, VSOCK_TYPE_STREAM);
      assert.ok(h.op === VsockOp.RW || h.len === 0);
    }
  }), limits(5000));
});

/** A transmit chain: header bytes then payload, cut into segments at guest-chosen points. */
const chainSpec = (headerBytes: number, maxPayload: number) => fc.record({
  header: fc.uint8Array({ minLength: 0, maxLength: headerBytes + 4 }),
  payload: fc.oneof({ weight: 4, arbitrary: fc.nat({ max: 256 }) }, fc.constantFrom(0, 13, 14, 1518, 1519, maxPayload), fc.nat({ max: maxPayload + 64 })),
  cuts: fc.array(fc.nat({ max: 2000 }), { maxLength: 3 }),
});

/**
 * Lays the chains out in guest RAM (each a run of descriptors of the same bytes, split at
 * `cuts`) and offers them; returns each chain's bytes.
 */
function offerChains(memory: GuestMemory, driver: DriverRing, chains: { header: Uint8Array; payload: number; cuts: number[] }[], seed: number): Uint8Array[] {
  let descriptor = 0;
  let at = DATA;
  const all: Uint8Array[] = [];
  for (const [n, c] of chains.entries()) {
    const bytes = new Uint8Array(c.header.length + c.payload);
    bytes.set(c.header);
    for (let i = c.header.length; i < bytes.length; i++) bytes[i] = (i * 31 + n + seed) & 0xff;
    memory.write(at, bytes);
    const cuts = [...new Set(c.cuts.filter((x) => x > 0 && x < bytes.length))].sort((a, b) => a - b);
    const bounds = [0, ...cuts, bytes.length];
    const head = descriptor;
    for (let s = 0; s + 1 < bounds.length; s++) {
      const last = s + 2 === bounds.length;
      driver.writeDescriptor(descriptor, { addr: at + bounds[s], len: bounds[s + 1] - bounds[s], flags: last ? 0 : VIRTQ_DESC_F_NEXT, next: descriptor + 1 });
      descriptor++;
    }
    driver.offer(head);
    at += bytes.length + 16;
    all.push(bytes);
  }
  return all;
}

function context(memory: GuestMemory, resets: string[], features = 0n): VirtioQueueContext {
  return { memory, features, needsReset: (reason) => resets.push(reason) };
}

test("fuzz: virtio-net transmit of guest-chosen chains: no throw, only frames within bounds and identical to the guest's, every request completed", { timeout: (SECONDS + 60) * 1000 }, () => {
  const memory = GuestMemory.allocate([{ gpa: 0, size: 2 * MiB }]);
  let frames = 0;
  let refusals = 0;
  fc.assert(fc.property(fc.array(chainSpec(VIRTIO_NET_HDR_BYTES, 1600), { minLength: 1, maxLength: 4 }), fc.nat(), (chains, seed) => {
    memory.regions[0].bytes.fill(0);
    const carried: Uint8Array[] = [];
    const backend: NetBackend = { name: "fuzz", attach: () => {}, transmit: (frame) => carried.push(frame.slice()), close: () => {} };
    const nic = new VirtioNet({ backend, mac: "52:54:00:00:00:01" });
    const driver = DriverRing.at(memory, RING, QUEUE);
    const queue = new SplitVirtqueue(memory, driver.layout, TX_QUEUE);
    const bytes = offerChains(memory, driver, chains, seed);
    const resets: string[] = [];
    nic.processQueue(TX_QUEUE, queue, context(memory, resets));
    // Requests up to the first one too short for a header complete; that one needs a reset.
    const firstShort = bytes.findIndex((b) => b.length < VIRTIO_NET_HDR_BYTES);
    const completed = firstShort < 0 ? bytes.length : firstShort;
    assert.equal(resets.length, firstShort < 0 ? 0 : 1);
    assert.equal(driver.usedIndex(), completed);
    assert.equal(nic.stats.txFrames + nic.stats.txErrors, completed);
    const expected = bytes.slice(0, completed).filter((b) => {
      const header = parseNetHeader(b);
      const length = b.length - VIRTIO_NET_HDR_BYTES;
      return transmitHeaderProblem(header) === undefined && length >= ETHERNET_HEADER_BYTES && length <= MAX_FRAME_BYTES;
    }).map((b) => b.subarray(VIRTIO_NET_HDR_BYTES));
    assert.deepEqual(carried, expected, "what went out is the guest's frames, byte for byte, and only the acceptable ones");
    frames += carried.length;
    refusals += nic.stats.txErrors;
  }), limits(1500));
  assert.ok(frames > 0 && refusals > 0, `the generator reaches carried (${frames}) and refused (${refusals}) frames`);
});

/** A host side that accepts every guest-initiated connection with an in-memory stream. */
function memoryHost(streams: Duplex[]): VsockHost {
  return {
    connect: () => {
      const stream = new PassThrough();
      streams.push(stream);
      setImmediate(() => stream.emit("connect"));
      return stream;
    },
    listen: () => {},
    close: () => {},
  };
}

test("fuzz: virtio-vsock transmit of guest-chosen packets: no throw, bounded connections, every request completed or a reset asked for", { timeout: (SECONDS + 60) * 1000 }, () => {
  const memory = GuestMemory.allocate([{ gpa: 0, size: 2 * MiB }]);
  const guestCid = 5n;
  // Headers biased towards well-addressed packets, so the state machine is reached, not just the address check.
  const header = fc.record({
    srcCid: fc.oneof({ weight: 6, arbitrary: fc.constant(guestCid) }, fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
    dstCid: fc.oneof({ weight: 6, arbitrary: fc.constant(BigInt(VSOCK_HOST_CID)) }, fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
    srcPort: fc.oneof(fc.constantFrom(1, 2), fc.nat({ max: 0xffff_ffff })),
    dstPort: fc.oneof(fc.constantFrom(1, 2), fc.nat({ max: 0xffff_ffff })),
    len: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 4, arbitrary: fc.nat({ max: 300 }) }, fc.nat({ max: 0xffff_ffff })),
    type: fc.oneof({ weight: 6, arbitrary: fc.constant(VSOCK_TYPE_STREAM) }, fc.nat({ max: 0xffff })),
    op: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 8 }) }, fc.nat({ max: 0xffff })),
    flags: fc.nat({ max: 0xffff_ffff }),
    bufAlloc: fc.nat({ max: 0xffff_ffff }),
    fwdCnt: fc.nat({ max: 0xffff_ffff }),
  });
  let opened = 0;
  fc.assert(fc.property(fc.array(fc.record({ header, extra: fc.nat({ max: 300 }), truncate: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, fc.constant(true)), cuts: fc.array(fc.nat({ max: 400 }), { maxLength: 3 }) }), { minLength: 1, maxLength: 8 }), fc.nat(), (packets, seed) => {
    memory.regions[0].bytes.fill(0);
    const streams: Duplex[] = [];
    const vsock = new VirtioVsock({ guestCid: Number(guestCid), host: memoryHost(streams) });
    const driver = DriverRing.at(memory, RING, QUEUE);
    const queue = new SplitVirtqueue(memory, driver.layout, 1);
    const chains = packets.map((p) => {
      const bytes = new Uint8Array(VSOCK_HEADER_BYTES);
      writeVsockHeader(bytes, p.header);
      return { header: p.truncate ? bytes.subarray(0, p.extra % VSOCK_HEADER_BYTES) : bytes, payload: p.truncate ? 0 : p.extra, cuts: p.cuts };
    });
    const laid = offerChains(memory, driver, chains, seed);
    const resets: string[] = [];
    vsock.processQueue(1, queue, context(memory, resets));
    const firstShort = laid.findIndex((b) => b.length < VSOCK_HEADER_BYTES);
    assert.equal(driver.usedIndex(), firstShort < 0 ? laid.length : firstShort);
    assert.equal(resets.length, firstShort < 0 ? 0 : 1);
    assert.ok(vsock.connectionCount <= Math.min(packets.length, MAX_VSOCK_CONNECTIONS));
    assert.ok(vsock.stats.bytesFromGuest <= laid.reduce((n, b) => n + Math.max(0, b.length - VSOCK_HEADER_BYTES), 0));
    opened += vsock.stats.connectionsOpened;
    vsock.close();
    assert.equal(vsock.connectionCount, 0);
    for (const s of streams) assert.ok(s.destroyed, "close() destroyed every host stream");
  }), limits(1500));
  assert.ok(opened > 0, "the generator reaches REQUESTs that open connections");
});

// ---- virtio-blk requests ----

const BLK_SECTORS = 64;
const blkDir = mkdtempSync(join(tmpdir(), "workervisor-blk-fuzz-"));
after(() => rmSync(blkDir, { recursive: true, force: true }));

const sectorValue = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: BLK_SECTORS + 2 }).map(BigInt) },
  fc.constantFrom(BigInt(BLK_SECTORS - 1), BigInt(BLK_SECTORS), 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);
const blkSegment = fc.record({
  sector: sectorValue,
  sectors: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 24 }) }, fc.constantFrom(VIRTIO_BLK_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_DISCARD_SECTORS + 1, 0xffff_ffff), fc.nat({ max: 0xffff_ffff })),
  flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0, 0, 0, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) }, fc.constantFrom(2, 0x8000_0000), fc.nat({ max: 0xffff_ffff })),
});
const blkRequest = fc.record({
  type: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(T.IN, T.OUT, T.FLUSH, T.GET_ID, T.DISCARD, T.DISCARD, T.WRITE_ZEROES, T.WRITE_ZEROES) }, fc.nat({ max: 0xffff_ffff })),
  sector: sectorValue,
  /** IN and GET_ID: writable bytes; OUT: payload bytes. */
  length: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 512, 1024, 4096) }, fc.nat({ max: 5000 })),
  segments: fc.array(blkSegment, { minLength: 0, maxLength: VIRTIO_BLK_MAX_DISCARD_SEG + 2 }),
  /** Bytes after the segment list (a list that is not whole segments). */
  ragged: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 15 })),
  cuts: fc.array(fc.nat({ max: 600 }), { maxLength: 3 }),
});
type BlkRequestSpec = typeof blkRequest extends fc.Arbitrary<infer R> ? R : never;

/** What the rules of section 5.2.6 give a DISCARD or WRITE_ZEROES request, and the byte ranges it zeroes. */
function expectedZeroing(r: BlkRequestSpec, features: bigint): { status: number; ranges: [number, number][] } {
  const discard = r.type === T.DISCARD;
  const bit = 1n << (discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES);
  if ((features & bit) === 0n) return { status: S.UNSUPP, ranges: [] };
  if (r.ragged !== 0 || r.segments.length === 0) return { status: S.IOERR, ranges: [] };
  if (r.segments.length > (discard ? VIRTIO_BLK_MAX_DISCARD_SEG : VIRTIO_BLK_MAX_WRITE_ZEROES_SEG)) return { status: S.UNSUPP, ranges: [] };
  if (r.segments.some((g) => (g.flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 || (discard && g.flags !== 0))) return { status: S.UNSUPP, ranges: [] };
  const max = discard ? VIRTIO_BLK_MAX_DISCARD_SECTORS : VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS;
  if (r.segments.some((g) => g.sectors > max || g.sector + BigInt(g.sectors) > BigInt(BLK_SECTORS))) return { status: S.IOERR, ranges: [] };
  return { status: S.OK, ranges: r.segments.map((g) => [Number(g.sector) * 512, (Number(g.sector) + g.sectors) * 512]) };
}

test("fuzz: virtio-blk requests of guest-chosen types, sectors and DISCARD/WRITE_ZEROES segment lists: no throw, the statuses the rules give, the image as the accepted requests leave it", { timeout: (SECONDS + 60) * 1000 }, () => {
  const memory = GuestMemory.allocate([{ gpa: 0, size: 2 * MiB }]);
  const path = join(blkDir, "fuzz.img");
  const initial = Buffer.from(Array.from({ length: BLK_SECTORS * 512 }, (_, i) => (i * 13 + 5) & 0xff));
  const seen = new Map<string, number>();
  fc.assert(fc.property(fc.array(blkRequest, { minLength: 1, maxLength: 6 }), fc.constantFrom(0n, 1n, 2n, 3n), (requests, featureChoice) => {
    memory.regions[0].bytes.fill(0);
    writeFileSync(path, initial);
    const model = Buffer.from(initial);
    const features = (featureChoice & 1n ? 1n << VIRTIO_BLK_F_DISCARD : 0n) | (featureChoice & 2n ? 1n << VIRTIO_BLK_F_WRITE_ZEROES : 0n);
    const blk = new VirtioBlk({ path });
    const driver = DriverRing.at(memory, RING, QUEUE);
    const queue = new SplitVirtqueue(memory, driver.layout, 0);
    let descriptor = 0;
    let at = DATA;
    const placed: { spec: BlkRequestSpec; n: number; status: number; data: number }[] = [];
    for (const [n, r] of requests.entries()) {
      const zeroing = r.type === T.DISCARD || r.type === T.WRITE_ZEROES;
      const reads = r.type === T.IN || r.type === T.GET_ID;
      const payload = new Uint8Array(zeroing ? 16 * r.segments.length + r.ragged : r.type === T.OUT ? r.length : 0);
      const view = new DataView(payload.buffer);
      if (zeroing) {
        r.segments.forEach((g, i) => {
          view.setBigUint64(16 * i, g.sector, true);
          view.setUint32(16 * i + 8, g.sectors, true);
          view.setUint32(16 * i + 12, g.flags, true);
        });
      } else {
        for (let i = 0; i < payload.length; i++) payload[i] = (i * 29 + n * 7 + 3) & 0xff;
      }
      const readable = new Uint8Array(16 + payload.length);
      new DataView(readable.buffer).setUint32(0, r.type, true);
      new DataView(readable.buffer).setBigUint64(8, r.sector, true);
      readable.set(payload, 16);
      memory.write(at, readable);
      const head = descriptor;
      const cuts = [...new Set(r.cuts.filter((x) => x > 0 && x < readable.length))].sort((a, b) => a - b);
      const bounds = [0, ...cuts, readable.length];
      for (let i = 0; i + 1 < bounds.length; i++) {
        driver.writeDescriptor(descriptor, { addr: at + bounds[i], len: bounds[i + 1] - bounds[i], flags: VIRTQ_DESC_F_NEXT, next: descriptor + 1 });
        descriptor++;
      }
      at += readable.length + 16;
      const data = at;
      if (reads && r.length > 0) {
        driver.writeDescriptor(descriptor, { addr: data, len: r.length, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: descriptor + 1 });
        descriptor++;
        at += r.length + 16;
      }
      const status = at;
      memory.writeU8(status, 0xff);
      driver.writeDescriptor(descriptor, { addr: status, len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 });
      descriptor++;
      at += 16;
      driver.offer(head);
      placed.push({ spec: r, n, status, data });
    }
    const resets: string[] = [];
    blk.processQueue(0, queue, context(memory, resets, features));
    blk.close();
    assert.deepEqual(resets, []);
    assert.equal(driver.usedIndex(), requests.length, "every request completed");
    for (const { spec: r, n, status, data } of placed) {
      const range = (length: number) => length % 512 === 0 && r.sector <= BigInt(BLK_SECTORS) && Number(r.sector) * 512 + length <= model.length;
      let expected: number;
      if (r.type === T.IN) {
        expected = range(r.length) ? S.OK : S.IOERR;
        if (expected === S.OK) {
          const position = Number(r.sector) * 512;
          assert.deepEqual(memory.slice(data, r.length), new Uint8Array(model.subarray(position, position + r.length)), "IN read what the image held then");
        }
      } else if (r.type === T.OUT) {
        expected = range(r.length) ? S.OK : S.IOERR;
        if (expected === S.OK) {
          for (let i = 0; i < r.length; i++) model[Number(r.sector) * 512 + i] = (i * 29 + n * 7 + 3) & 0xff;
        }
      } else if (r.type === T.FLUSH || r.type === T.GET_ID) {
        expected = S.OK;
      } else if (r.type === T.DISCARD || r.type === T.WRITE_ZEROES) {
        const zeroing = expectedZeroing(r, features);
        expected = zeroing.status;
        for (const [from, to] of zeroing.ranges) model.fill(0, from, to);
      } else {
        expected = S.UNSUPP;
      }
      assert.equal(memory.readU8(status), expected, `type ${r.type} at sector ${r.sector}`);
      const key = `${r.type === T.DISCARD || r.type === T.WRITE_ZEROES ? r.type : "other"}:${expected}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    assert.ok(readFileSync(path).equals(model), "the image holds what the accepted requests wrote and zeroed, nothing else");
  }), limits(1500));
  for (const type of [T.DISCARD, T.WRITE_ZEROES]) {
    for (const status of [S.OK, S.IOERR, S.UNSUPP]) assert.ok((seen.get(`${type}:${status}`) ?? 0) > 0, `the generator reaches type ${type} with status ${status}: ${[...seen].join(" ")}`);
  }
});
