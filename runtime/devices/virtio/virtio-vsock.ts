/**
 * virtio-vsock (virtio 1.2 section 5.10), stream sockets only: rx queue 0 (device to
 * driver), tx queue 1 (driver to device), event queue 2 (never used: no transport resets
 * are sent). The guest's CID is in the config space; the host is CID 2. Each connection
 * follows the spec's packet state machine (REQUEST, RESPONSE, RW, CREDIT_UPDATE,
 * CREDIT_REQUEST, SHUTDOWN, RST) with credit accounting both ways: the device sends the
 * guest no more than the guest's buf_alloc minus what it has not yet consumed (fwd_cnt), and
 * gives the guest `VSOCK_BUF_ALLOC` bytes of credit, counted off as the host stream takes
 * the data. The host side is a `VsockHost` (vsock-host.ts: Firecracker's Unix sockets).
 *
 * A packet that breaks the rules of its connection (more data than its credit, a length
 * beyond the chain, a type other than stream) resets that connection with RST; a chain too
 * short for the 44-byte header is a broken driver (DEVICE_NEEDS_RESET).
 */
import type { Duplex } from "node:stream";
import type { SplitVirtqueue } from "./virtqueue.js";
import { gather, scatter } from "./segments.js";
import { featureBit, VIRTIO_ID_VSOCK, type VirtioDevice, type VirtioDeviceHost, type VirtioQueueContext } from "./virtio-device.js";
import { UnixSocketVsockHost, type VsockHost, type VsockHostRequest } from "./vsock-host.js";

export const VIRTIO_VSOCK_F_STREAM = 0n;
export const VSOCK_HOST_CID = 2;
export const VSOCK_HEADER_BYTES = 44;
export const VSOCK_TYPE_STREAM = 1;
export const VsockOp = { INVALID: 0, REQUEST: 1, RESPONSE: 2, RST: 3, SHUTDOWN: 4, RW: 5, CREDIT_UPDATE: 6, CREDIT_REQUEST: 7 } as const;
export const VSOCK_SHUTDOWN_RCV = 1;
export const VSOCK_SHUTDOWN_SEND = 2;
/** The credit the device gives each connection: bytes it holds before the host stream takes them. */
export const VSOCK_BUF_ALLOC = 256 * 1024;
/** The largest payload taken in one packet (Linux sends at most 64 KiB). */
export const VSOCK_MAX_PAYLOAD = 64 * 1024;
/** Host bytes read ahead of the guest's credit before the host stream is paused. */
const HOST_READ_AHEAD = 64 * 1024;
export const VIRTIO_VSOCK_QUEUE_SIZE = 128;
const RX_QUEUE = 0;
const TX_QUEUE = 1;
/** Host-side ports of host-initiated connections start here (clear of well-known ones). */
const FIRST_HOST_PORT = 1 << 30;
export const MAX_VSOCK_CONNECTIONS = 1024;

export interface VsockHeader {
  srcCid: bigint;
  dstCid: bigint;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

/** Decodes struct virtio_vsock_hdr (44 bytes, little-endian, packed) at the start of `bytes`. */
export function parseVsockHeader(bytes: Uint8Array): VsockHeader {
  if (bytes.length < VSOCK_HEADER_BYTES) throw new RangeError(`a virtio_vsock_hdr is ${VSOCK_HEADER_BYTES} bytes, got ${bytes.length}`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, VSOCK_HEADER_BYTES);
  return {
    srcCid: v.getBigUint64(0, true), dstCid: v.getBigUint64(8, true), srcPort: v.getUint32(16, true), dstPort: v.getUint32(20, true),
    len: v.getUint32(24, true), type: v.getUint16(28, true), op: v.getUint16(30, true), flags: v.getUint32(32, true),
    bufAlloc: v.getUint32(36, true), fwdCnt: v.getUint32(40, true),
  };
}

export function writeVsockHeader(into: Uint8Array, h: VsockHeader): void {
  const v = new DataView(into.buffer, into.byteOffset, VSOCK_HEADER_BYTES);
  v.setBigUint64(0, h.srcCid, true);
  v.setBigUint64(8, h.dstCid, true);
  v.setUint32(16, h.srcPort, true);
  v.setUint32(20, h.dstPort, true);
  v.setUint32(24, h.len, true);
  v.setUint16(28, h.type, true);
  v.setUint16(30, h.op, true);
  v.setUint32(32, h.flags, true);
  v.setUint32(36, h.bufAlloc, true);
  v.setUint32(40, h.fwdCnt, true);
}

/**
 * Why a packet from the driver cannot be taken as it is, or undefined: addresses that are
 * not guest-to-host, a type other than stream, a length beyond what the chain carries.
 * `carried` is the chain's readable bytes after the header.
 */
export function vsockPacketProblem(h: VsockHeader, guestCid: bigint, carried: number): string | undefined {
  if (h.srcCid !== guestCid) return `src_cid ${h.srcCid} is not the guest's CID ${guestCid}`;
  if (h.dstCid !== BigInt(VSOCK_HOST_CID)) return `dst_cid ${h.dstCid} is not the host (${VSOCK_HOST_CID})`;
  if (h.type !== VSOCK_TYPE_STREAM) return `type ${h.type} is not VIRTIO_VSOCK_TYPE_STREAM`;
  if (h.len > VSOCK_MAX_PAYLOAD) return `len ${h.len} is above the ${VSOCK_MAX_PAYLOAD} bytes a packet may carry here`;
  if (h.len > carried) return `len ${h.len} is more than the ${carried} bytes the chain carries after the header`;
  if (h.op !== VsockOp.RW && h.len !== 0) return `op ${h.op} carries ${h.len} bytes of payload; only RW may`;
  return undefined;
}

export interface VirtioVsockOptions {
  /** The guest's context ID: 3 or more (0-2 are reserved), below 2^32 - 1. */
  guestCid: number;
  /** The host side, on the device's thread. */
  host?: VsockHost;
  /**
   * Instead of `host`, for a device built on a device worker: the Unix socket path the
   * device's thread listens on itself (Firecracker's uds_path; see vsock-host.ts).
   */
  udsPath?: string;
}

export interface VirtioVsockStats {
  connectionsOpened: number;
  /** RST packets sent to the guest (refused, broken or ended connections). */
  resetsSent: number;
  bytesToGuest: number;
  bytesFromGuest: number;
  /** Packets dropped: wrong addresses, or for no connection and not worth an RST. */
  packetsDropped: number;
  /** Times host data had to wait because the guest had given no credit for it. */
  creditStalls: number;
}

type State = "host-connecting" | "guest-requested" | "established";

interface Connection {
  readonly key: string;
  readonly guestPort: number;
  readonly hostPort: number;
  state: State;
  stream: Duplex;
  request: VsockHostRequest | undefined;
  /** The guest's receive space and what it has consumed (its last header said). */
  peerBufAlloc: number;
  peerFwdCnt: number;
  /** Payload bytes sent to the guest, received from it, and handed to the host stream (u32, wrapping). */
  txCnt: number;
  rxCnt: number;
  fwdCnt: number;
  announcedFwdCnt: number;
  pending: Buffer[];
  pendingBytes: number;
  hostPaused: boolean;
  /** The host stream ended: a SHUTDOWN goes to the guest once `pending` is sent. */
  hostEnded: boolean;
  shutdownSent: boolean;
  creditUpdateQueued: boolean;
  creditStalled: boolean;
}

interface ControlPacket {
  connection: Connection | undefined;
  header: VsockHeader;
}

export class VirtioVsock implements VirtioDevice {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_VSOCK;
  readonly features = featureBit(VIRTIO_VSOCK_F_STREAM);
  readonly queueSizes = [VIRTIO_VSOCK_QUEUE_SIZE, VIRTIO_VSOCK_QUEUE_SIZE, VIRTIO_VSOCK_QUEUE_SIZE];
  readonly config = new Uint8Array(8);
  readonly guestCid: bigint;
  readonly stats: VirtioVsockStats = { connectionsOpened: 0, resetsSent: 0, bytesToGuest: 0, bytesFromGuest: 0, packetsDropped: 0, creditStalls: 0 };
  private readonly host: VsockHost;
  private readonly connections = new Map<string, Connection>();
  private control: ControlPacket[] = [];
  private nextHostPort = FIRST_HOST_PORT;
  private transport: VirtioDeviceHost | undefined;
  private readonly headerBytes = new Uint8Array(VSOCK_HEADER_BYTES);
  private closed = false;
  /** Its host side is node:net sockets. */
  readonly usesEventLoop = true;

  constructor(options: VirtioVsockOptions) {
    const cid = options.guestCid;
    if (!Number.isSafeInteger(cid) || cid < 3 || cid >= 0xffff_ffff) {
      throw new RangeError(`guestCid must be a whole number from 3 to 2^32 - 2 (0-2 are reserved, -1 is VMADDR_CID_ANY), got ${cid}`);
    }
    this.guestCid = BigInt(cid);
    this.name = `virtio-vsock cid ${cid}`;
    new DataView(this.config.buffer).setBigUint64(0, this.guestCid, true);
    if ((options.host === undefined) === (options.udsPath === undefined)) {
      throw new TypeError(`a virtio-vsock device takes one host side, host or udsPath; got ${options.host === undefined ? "none" : "both"}`);
    }
    this.host = options.host ?? new UnixSocketVsockHost(options.udsPath!);
    this.host.listen((request) => this.hostRequest(request));
  }

  /** The listening socket is up (a host of our own making), or it could not be (a VsockHostError). */
  get ready(): Promise<void> | undefined {
    return this.host instanceof UnixSocketVsockHost ? this.host.listening : undefined;
  }

  /** Connections open now (any state). */
  get connectionCount(): number {
    return this.connections.size;
  }

  attach(host: VirtioDeviceHost): void {
    this.transport = host;
  }

  processQueue(index: number, queue: SplitVirtqueue, context: VirtioQueueContext): void | boolean {
    if (index === TX_QUEUE) return this.takeFromGuest(queue, context);
    if (index === RX_QUEUE) return this.sendToGuest(queue, context);
    return false; // event queue: its buffers wait for events this device never sends
  }

  /** The driver reset: every connection is gone (the host side of each is closed). */
  reset(): void {
    for (const connection of [...this.connections.values()]) this.drop(connection);
    this.control = [];
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reset();
    this.host.close();
  }

  // ---- guest to host ----

  private takeFromGuest(queue: SplitVirtqueue, context: VirtioQueueContext): void {
    for (let budget = queue.size, chain = queue.pop(); chain !== undefined && !(chain instanceof Error); chain = --budget > 0 ? queue.pop() : undefined) {
      if (chain.readableLength < VSOCK_HEADER_BYTES) {
        context.needsReset(`transmit packet ${chain.head} has ${chain.readableLength} device-readable bytes, less than the ${VSOCK_HEADER_BYTES}-byte virtio_vsock_hdr`);
        return;
      }
      gather(chain.readable, this.headerBytes);
      const header = parseVsockHeader(this.headerBytes);
      const problem = vsockPacketProblem(header, this.guestCid, chain.readableLength - VSOCK_HEADER_BYTES);
      let payload: Buffer | undefined;
      if (problem === undefined && header.len > 0) {
        payload = Buffer.allocUnsafe(header.len);
        gather(chain.readable, payload, VSOCK_HEADER_BYTES);
      }
      queue.pushUsed(chain.head, 0);
      if (problem !== undefined) {
        // Addresses that are not ours are dropped; anything else wrong resets the connection.
        if (header.srcCid !== this.guestCid || header.dstCid !== BigInt(VSOCK_HOST_CID)) this.stats.packetsDropped++;
        else this.resetConnection(header);
        continue;
      }
      this.handle(header, payload);
    }
  }

  private handle(h: VsockHeader, payload: Buffer | undefined): void {
    const key = connectionKey(h.srcPort, h.dstPort);
    const connection = this.connections.get(key);
    if (connection === undefined) {
      if (h.op === VsockOp.REQUEST) this.guestRequest(h);
      else if (h.op !== VsockOp.RST) this.resetConnection(h); // spec: a packet for no connection gets RST
      return;
    }
    connection.peerBufAlloc = h.bufAlloc;
    connection.peerFwdCnt = h.fwdCnt;
    switch (h.op) {
      case VsockOp.RESPONSE:
        if (connection.state !== "guest-requested") {
          this.resetConnection(h, connection);
          return;
        }
        connection.state = "established";
        connection.request?.accepted(connection.hostPort);
        connection.request = undefined;
        connection.stream.resume();
        break;
      case VsockOp.RW: {
        if (connection.state !== "established" || payload === undefined) {
          this.resetConnection(h, connection);
          return;
        }
        // The guest may have at most our buf_alloc in flight that the host has not taken.
        if (wrapping(connection.rxCnt + payload.length - connection.fwdCnt) > VSOCK_BUF_ALLOC) {
          this.resetConnection(h, connection);
          return;
        }
        connection.rxCnt = wrapping(connection.rxCnt + payload.length);
        this.stats.bytesFromGuest += payload.length;
        connection.stream.write(payload, () => this.forwarded(connection, payload.length));
        break;
      }
      case VsockOp.CREDIT_REQUEST:
        this.queueCreditUpdate(connection);
        break;
      case VsockOp.CREDIT_UPDATE:
        break;
      case VsockOp.SHUTDOWN:
        // A clean close (section 5.10.6.6): SHUTDOWN, then RST from the peer once both ways are shut.
        if (h.flags & VSOCK_SHUTDOWN_SEND) connection.stream.end();
        if ((h.flags & (VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV)) === (VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV)) {
          this.resetConnection(h, connection);
          return;
        }
        break;
      case VsockOp.RST:
        this.drop(connection);
        return;
      default:
        this.resetConnection(h, connection);
        return;
    }
    this.wakeRx(); // credit may have opened for pending host data
  }

  private guestRequest(h: VsockHeader): void {
    if (this.connections.size >= MAX_VSOCK_CONNECTIONS) {
      this.resetConnection(h);
      return;
    }
    const stream = this.host.connect(h.dstPort);
    const connection = this.open(h.srcPort, h.dstPort, stream, "host-connecting", undefined);
    connection.peerBufAlloc = h.bufAlloc;
    connection.peerFwdCnt = h.fwdCnt;
    stream.once("connect", () => {
      if (this.connections.get(connection.key) !== connection) return;
      connection.state = "established";
      this.queueControl(connection, VsockOp.RESPONSE);
    });
  }

  private hostRequest(request: VsockHostRequest): void {
    if (this.closed || this.connections.size >= MAX_VSOCK_CONNECTIONS) {
      request.refused();
      return;
    }
    let hostPort = this.nextHostPort;
    while (this.connections.has(connectionKey(request.guestPort, hostPort))) hostPort = (hostPort + 1) >>> 0 || FIRST_HOST_PORT;
    this.nextHostPort = (hostPort + 1) >>> 0 || FIRST_HOST_PORT;
    const connection = this.open(request.guestPort, hostPort, request.stream, "guest-requested", request);
    if (request.early.length > 0) this.takeHostData(connection, request.early);
    this.queueControl(connection, VsockOp.REQUEST);
  }

  private open(guestPort: number, hostPort: number, stream: Duplex, state: State, request: VsockHostRequest | undefined): Connection {
    const connection: Connection = {
      key: connectionKey(guestPort, hostPort), guestPort, hostPort, state, stream, request,
      peerBufAlloc: 0, peerFwdCnt: 0, txCnt: 0, rxCnt: 0, fwdCnt: 0, announcedFwdCnt: 0,
      pending: [], pendingBytes: 0, hostPaused: false, hostEnded: false, shutdownSent: false, creditUpdateQueued: false, creditStalled: false,
    };
    this.connections.set(connection.key, connection);
    this.stats.connectionsOpened++;
    stream.on("data", (chunk: Buffer) => this.takeHostData(connection, chunk));
    stream.on("end", () => {
      connection.hostEnded = true;
      this.wakeRx();
    });
    stream.on("error", () => this.hostFailed(connection));
    // A close after the end is the clean one: the SHUTDOWN follows the data still pending.
    stream.on("close", () => {
      if (!connection.hostEnded) this.hostFailed(connection);
    });
    return connection;
  }

  private forwarded(connection: Connection, bytes: number): void {
    connection.fwdCnt = wrapping(connection.fwdCnt + bytes);
    // Tell the guest of the space freed once a quarter of the credit is back.
    if (wrapping(connection.fwdCnt - connection.announcedFwdCnt) >= VSOCK_BUF_ALLOC / 4) this.queueCreditUpdate(connection);
  }

  // ---- host to guest ----

  private takeHostData(connection: Connection, chunk: Buffer): void {
    if (this.connections.get(connection.key) !== connection || chunk.length === 0) return;
    connection.pending.push(chunk);
    connection.pendingBytes += chunk.length;
    if (connection.pendingBytes >= HOST_READ_AHEAD && !connection.hostPaused) {
      connection.hostPaused = true;
      connection.stream.pause();
    }
    this.wakeRx();
  }

  /** The host side went away before a clean close: the guest hears RST. */
  private hostFailed(connection: Connection): void {
    if (this.connections.get(connection.key) !== connection) return;
    this.queueReset(connection);
  }

  private sendToGuest(queue: SplitVirtqueue, context: VirtioQueueContext): boolean {
    for (let budget = queue.size; budget > 0; budget--) {
      const next = this.nextPacket();
      if (next === undefined) return false;
      const chain = queue.pop();
      if (chain === undefined) return false; // no buffer: wait for the driver
      if (chain instanceof Error) return true;
      if (chain.writableLength < VSOCK_HEADER_BYTES) {
        context.needsReset(`receive buffer ${chain.head} has ${chain.writableLength} device-writable bytes, less than the ${VSOCK_HEADER_BYTES}-byte virtio_vsock_hdr`);
        return true;
      }
      let payload: Buffer | undefined;
      let header: VsockHeader;
      if (next === "data-ready") {
        const connection = this.sendable()!;
        payload = this.takePending(connection, Math.min(chain.writableLength - VSOCK_HEADER_BYTES, this.peerFree(connection), VSOCK_MAX_PAYLOAD));
        connection.txCnt = wrapping(connection.txCnt + payload.length);
        header = this.header(connection, VsockOp.RW, 0, payload.length);
        this.stats.bytesToGuest += payload.length;
      } else {
        const packet = this.control.shift()!;
        header = packet.header;
        // Every header carries the connection's latest credit.
        if (packet.connection !== undefined) {
          header.fwdCnt = packet.connection.fwdCnt;
          packet.connection.announcedFwdCnt = packet.connection.fwdCnt;
          if (header.op === VsockOp.CREDIT_UPDATE) packet.connection.creditUpdateQueued = false;
        }
      }
      writeVsockHeader(this.headerBytes, header);
      scatter(chain.writable, this.headerBytes);
      if (payload !== undefined) scatter(chain.writable, payload, VSOCK_HEADER_BYTES);
      queue.pushUsed(chain.head, VSOCK_HEADER_BYTES + (payload?.length ?? 0));
    }
    return this.nextPacket() !== undefined;
  }

  private nextPacket(): "control" | "data-ready" | undefined {
    if (this.control.length > 0) return "control";
    if (this.sendable() !== undefined) return "data-ready";
    this.sendShutdowns();
    return this.control.length > 0 ? "control" : undefined;
  }

  /** An established connection with host data and guest credit for it. */
  private sendable(): Connection | undefined {
    for (const connection of this.connections.values()) {
      if (connection.state !== "established" || connection.pendingBytes === 0) continue;
      if (this.peerFree(connection) > 0) {
        connection.creditStalled = false;
        return connection;
      }
      if (!connection.creditStalled) {
        connection.creditStalled = true;
        this.stats.creditStalls++;
      }
    }
    return undefined;
  }

  /** Connections whose host stream ended and whose data is all sent: SHUTDOWN both ways. */
  private sendShutdowns(): void {
    for (const connection of this.connections.values()) {
      if (connection.state === "established" && connection.hostEnded && connection.pendingBytes === 0 && !connection.shutdownSent) {
        connection.shutdownSent = true;
        this.queueControl(connection, VsockOp.SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
      }
    }
  }

  private peerFree(connection: Connection): number {
    const inFlight = wrapping(connection.txCnt - connection.peerFwdCnt);
    return Math.max(0, connection.peerBufAlloc - inFlight);
  }

  private takePending(connection: Connection, limit: number): Buffer {
    const parts: Buffer[] = [];
    let taken = 0;
    while (taken < limit && connection.pending.length > 0) {
      const head = connection.pending[0];
      const n = Math.min(head.length, limit - taken);
      parts.push(head.subarray(0, n));
      if (n === head.length) connection.pending.shift();
      else connection.pending[0] = head.subarray(n);
      taken += n;
    }
    connection.pendingBytes -= taken;
    if (connection.hostPaused && connection.pendingBytes < HOST_READ_AHEAD / 2) {
      connection.hostPaused = false;
      connection.stream.resume();
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  // ---- packets and connection ends ----

  private header(connection: Connection, op: number, flags: number, len = 0): VsockHeader {
    return {
      srcCid: BigInt(VSOCK_HOST_CID), dstCid: this.guestCid, srcPort: connection.hostPort, dstPort: connection.guestPort,
      len, type: VSOCK_TYPE_STREAM, op, flags, bufAlloc: VSOCK_BUF_ALLOC, fwdCnt: connection.fwdCnt,
    };
  }

  private queueControl(connection: Connection, op: number, flags = 0): void {
    this.control.push({ connection, header: this.header(connection, op, flags) });
    this.wakeRx();
  }

  private queueCreditUpdate(connection: Connection): void {
    if (connection.creditUpdateQueued) return;
    connection.creditUpdateQueued = true;
    this.queueControl(connection, VsockOp.CREDIT_UPDATE);
  }

  /** RST for the connection `h` names (there may be none), and the connection dropped. */
  private resetConnection(h: VsockHeader, connection?: Connection): void {
    if (connection !== undefined) this.drop(connection);
    this.stats.resetsSent++;
    this.control.push({
      connection: undefined,
      header: {
        srcCid: BigInt(VSOCK_HOST_CID), dstCid: this.guestCid, srcPort: h.dstPort, dstPort: h.srcPort,
        len: 0, type: VSOCK_TYPE_STREAM, op: VsockOp.RST, flags: 0, bufAlloc: VSOCK_BUF_ALLOC, fwdCnt: 0,
      },
    });
    this.wakeRx();
  }

  private queueReset(connection: Connection): void {
    this.resetConnection({
      srcCid: this.guestCid, dstCid: BigInt(VSOCK_HOST_CID), srcPort: connection.guestPort, dstPort: connection.hostPort,
      len: 0, type: VSOCK_TYPE_STREAM, op: VsockOp.RST, flags: 0, bufAlloc: 0, fwdCnt: 0,
    }, connection);
  }

  /** Forgets the connection and closes its host side. */
  private drop(connection: Connection): void {
    if (this.connections.get(connection.key) !== connection) return;
    this.connections.delete(connection.key);
    this.control = this.control.filter((packet) => packet.connection !== connection);
    connection.request?.refused();
    connection.stream.destroy();
  }

  private wakeRx(): void {
    this.transport?.wake(RX_QUEUE);
  }
}

function connectionKey(guestPort: number, hostPort: number): string {
  return `${guestPort}:${hostPort}`;
}

function wrapping(n: number): number {
  return n >>> 0;
}
