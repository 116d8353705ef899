/**
 * virtio-vsock's packet state machine driven from a JS driver (rings written into guest
 * RAM, the device's queues walked by the real walker) against real Unix sockets: the
 * answers the spec requires to a REQUEST for a port no one listens on, a packet for no
 * connection, data beyond the credit the device gave, a clean SHUTDOWN, and a driver reset
 * with a connection open.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestMemory } from "../memory/guest-memory.js";
import { SplitVirtqueue, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../runtime/devices/virtio/virtqueue.js";
import {
  parseVsockHeader, VirtioVsock, VsockOp, VSOCK_BUF_ALLOC, VSOCK_HEADER_BYTES, VSOCK_HOST_CID, VSOCK_SHUTDOWN_RCV, VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_STREAM, writeVsockHeader, type VsockHeader,
} from "../runtime/devices/virtio/virtio-vsock.js";
import { UnixSocketVsockHost } from "../runtime/devices/virtio/vsock-host.js";
import { DriverRing } from "./helpers/split-ring.js";

const dir = mkdtempSync(join(tmpdir(), "workervisor-vsock-protocol-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;
const GUEST_CID = 9n;
const SIZE = 16;
const RX_BUFFERS = 0x40000;
const TX_DATA = 0x80000;
const RX_BYTES = VSOCK_HEADER_BYTES + 4096;
const tick = () => new Promise((resolve) => setTimeout(resolve, 20));
/** Closed after the tests whatever happened, so a failure cannot keep the process alive. */
const cleanups: (() => void)[] = [];
after(() => cleanups.forEach((cleanup) => cleanup()));

/** A driver for the device's rx and tx queues, in JS. */
class Driver {
  readonly memory = GuestMemory.allocate([{ gpa: 0, size: 2 * MiB }]);
  readonly rx = DriverRing.at(this.memory, 0x1000, SIZE);
  readonly tx = DriverRing.at(this.memory, 0x2000, SIZE);
  readonly rxQueue = new SplitVirtqueue(this.memory, this.rx.layout, 0);
  readonly txQueue = new SplitVirtqueue(this.memory, this.tx.layout, 1);
  readonly resets: string[] = [];
  private readonly context = { memory: this.memory, features: 0n, needsReset: (reason: string) => this.resets.push(reason) };
  private rxSeen = 0;
  private txSlot = 0;

  constructor(readonly device: VirtioVsock) {
    device.attach({ wake: () => {} });
    for (let i = 0; i < SIZE; i++) this.postRx(i);
  }

  private postRx(i: number): void {
    this.rx.writeDescriptor(i, { addr: RX_BUFFERS + i * RX_BYTES, len: RX_BYTES, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    this.rx.offer(i);
  }

  send(fields: Partial<VsockHeader>, payload = new Uint8Array(0)): void {
    const h: VsockHeader = {
      srcCid: GUEST_CID, dstCid: BigInt(VSOCK_HOST_CID), srcPort: 1000, dstPort: 2000, len: payload.length, type: VSOCK_TYPE_STREAM,
      op: VsockOp.RW, flags: 0, bufAlloc: 65536, fwdCnt: 0, ...fields,
    };
    const at = TX_DATA + (this.txSlot % SIZE) * 0x2000;
    const header = new Uint8Array(VSOCK_HEADER_BYTES);
    writeVsockHeader(header, h);
    this.memory.write(at, header);
    this.memory.write(at + VSOCK_HEADER_BYTES, payload);
    const d = (this.txSlot % (SIZE / 2)) * 2;
    this.tx.writeDescriptor(d, { addr: at, len: VSOCK_HEADER_BYTES, flags: payload.length ? VIRTQ_DESC_F_NEXT : 0, next: d + 1 });
    if (payload.length) this.tx.writeDescriptor(d + 1, { addr: at + VSOCK_HEADER_BYTES, len: payload.length, flags: 0, next: 0 });
    this.tx.offer(d);
    this.txSlot++;
    this.device.processQueue(1, this.txQueue, this.context);
  }

  /** Packets the device has put in the rx ring since the last call (buffers given back). */
  receive(): { header: VsockHeader; payload: Buffer }[] {
    this.device.processQueue(0, this.rxQueue, this.context);
    const packets = [];
    for (; this.rxSeen !== this.rx.usedIndex(); this.rxSeen = (this.rxSeen + 1) & 0xffff) {
      const { id, len } = this.rx.usedElement(this.rxSeen);
      const bytes = Buffer.from(this.memory.slice(RX_BUFFERS + id * RX_BYTES, len));
      packets.push({ header: parseVsockHeader(bytes), payload: bytes.subarray(VSOCK_HEADER_BYTES) });
      this.postRx(id);
    }
    return packets;
  }
}

function setup(name: string) {
  const udsPath = join(dir, name);
  const vsock = new VirtioVsock({ guestCid: Number(GUEST_CID), host: new UnixSocketVsockHost(udsPath) });
  cleanups.push(() => vsock.close());
  return { udsPath, vsock, driver: new Driver(vsock) };
}

test("vsock: a REQUEST to a host port no one listens on is answered with RST", async () => {
  const { vsock, driver } = setup("unbound.sock");
  driver.send({ op: VsockOp.REQUEST, dstPort: 4444 });
  await tick();
  const [rst] = driver.receive();
  assert.equal(rst?.header.op, VsockOp.RST);
  assert.deepEqual([rst.header.srcPort, rst.header.dstPort, rst.header.dstCid], [4444, 1000, GUEST_CID]);
  assert.equal(vsock.connectionCount, 0);
  vsock.close();
});

test("vsock: RW for no connection gets RST; a packet from another CID is dropped unanswered; a short header needs a reset", async () => {
  const { vsock, driver } = setup("none.sock");
  driver.send({ op: VsockOp.RW }, Buffer.from("hello"));
  driver.send({ op: VsockOp.RW, srcCid: 77n }, Buffer.from("spoofed"));
  const packets = driver.receive();
  assert.deepEqual(packets.map((p) => p.header.op), [VsockOp.RST]);
  assert.equal(vsock.stats.packetsDropped, 1);
  assert.equal(driver.resets.length, 0);
  driver.tx.writeDescriptor(0, { addr: TX_DATA, len: VSOCK_HEADER_BYTES - 1, flags: 0, next: 0 });
  driver.tx.offer(0);
  vsock.processQueue(1, driver.txQueue, { memory: driver.memory, features: 0n, needsReset: (r) => driver.resets.push(r) });
  assert.equal(driver.resets.length, 1);
  assert.match(driver.resets[0], /less than the 44-byte virtio_vsock_hdr/);
  vsock.close();
});

async function connected(name: string) {
  const { udsPath, vsock, driver } = setup(name);
  const got: Buffer[] = [];
  let hostSocket: Socket | undefined;
  let hostClosed = false;
  const server = createServer((socket) => {
    hostSocket = socket;
    socket.on("data", (chunk: Buffer) => got.push(chunk));
    socket.on("close", () => { hostClosed = true; });
  }).listen(`${udsPath}_2000`);
  cleanups.push(() => server.close());
  await new Promise((resolve) => server.once("listening", resolve));
  driver.send({ op: VsockOp.REQUEST });
  for (let i = 0; i < 50 && hostSocket === undefined; i++) await tick();
  await tick();
  const [response] = driver.receive();
  assert.equal(response?.header.op, VsockOp.RESPONSE);
  assert.equal(response.header.bufAlloc, VSOCK_BUF_ALLOC, "the device gives its credit");
  return { vsock, driver, server, got: () => Buffer.concat(got), hostClosed: () => hostClosed, hostSocket: () => hostSocket! };
}

test("vsock: more data than the device's credit resets the connection", async () => {
  const c = await connected("credit.sock");
  const chunk = Buffer.alloc(64 * 1024, 7);
  // The host stream is not read (paused) so nothing is forwarded: the credit is all there is.
  c.hostSocket().pause();
  for (let sent = 0; sent < VSOCK_BUF_ALLOC; sent += chunk.length) c.driver.send({ op: VsockOp.RW }, chunk);
  assert.equal(c.vsock.connectionCount, 1, "exactly the credit is fine");
  c.driver.send({ op: VsockOp.RW }, Buffer.alloc(1));
  const packets = c.driver.receive();
  assert.equal(packets.at(-1)?.header.op, VsockOp.RST);
  assert.equal(c.vsock.connectionCount, 0);
  c.hostSocket().resume(); // its close is seen once what it holds is read
  for (let i = 0; i < 50 && !c.hostClosed(); i++) await tick();
  assert.ok(c.hostClosed(), "the host's end was closed");
  c.server.close();
  c.vsock.close();
});

test("vsock: data reaches the host, SHUTDOWN both ways is answered with RST and closes the host's end", async () => {
  const c = await connected("shutdown.sock");
  c.driver.send({ op: VsockOp.RW }, Buffer.from("over vsock"));
  for (let i = 0; i < 50 && c.got().length < 10; i++) await tick();
  assert.equal(c.got().toString(), "over vsock");
  c.driver.send({ op: VsockOp.SHUTDOWN, flags: VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND });
  const packets = c.driver.receive();
  assert.equal(packets.at(-1)?.header.op, VsockOp.RST);
  for (let i = 0; i < 50 && !c.hostClosed(); i++) await tick();
  assert.ok(c.hostClosed());
  assert.equal(c.vsock.connectionCount, 0);
  c.server.close();
  c.vsock.close();
});

test("vsock: a driver reset with a connection open closes the host's end and forgets it", async () => {
  const c = await connected("reset.sock");
  c.vsock.reset();
  assert.equal(c.vsock.connectionCount, 0);
  for (let i = 0; i < 50 && !c.hostClosed(); i++) await tick();
  assert.ok(c.hostClosed());
  assert.deepEqual(c.driver.receive(), [], "nothing queued for the old driver survives");
  c.server.close();
  c.vsock.close();
});
