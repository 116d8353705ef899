/**
 * Fuzz targets (fast-check) for the packet headers guests write to virtio-net and
 * virtio-vsock, alone and through the devices: whatever the bytes, the parsers never throw
 * and decode every field in range, the checks accept exactly what the device offered, and a
 * transmit queue full of guest-chosen chains (header bytes, lengths, segment splits) never
 * makes a device throw, carries only frames/payloads within their bounds and byte-identical
 * to the guest's, and completes or faults every request.
 * Runs for WORKERVISOR_FUZZ_SECONDS (default 10) per target, or its run count, whichever ends first.
 */
import { test } from "node:test";
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

function context(memory: GuestMemory, resets: string[]): VirtioQueueContext {
  return { memory, features: 0n, needsReset: (reason) => resets.push(reason) };
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
