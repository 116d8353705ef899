/**
 * virtio-net (virtio 1.2 section 5.1): one receive and one transmit queue, the MAC address
 * and link status in the config space, no offloads (no checksum, no segmentation, no
 * mergeable buffers, no control queue). Every frame carries the 12-byte virtio_net_hdr of
 * VERSION_1. Frames go to and come from a NetBackend (in-process switch or TAP), given
 * as an object on the device's thread or, for a device built on a device worker, named by
 * clonable options (a switch port handle, a TAP's interface name).
 *
 * Receive: frames from the backend wait in a bounded queue until the driver offers buffers;
 * when the queue is full the frame is dropped and counted, as a NIC with a full ring does.
 */
import type { SplitVirtqueue } from "./virtqueue.js";
import { gather, scatter } from "./segments.js";
import { featureBit, VIRTIO_ID_NET, type VirtioDevice, type VirtioDeviceHost, type VirtioQueueContext } from "./virtio-device.js";
import { ETHERNET_HEADER_BYTES, MAX_FRAME_BYTES, parseMac, type NetBackend } from "./net-backend.js";
import { SwitchPort, type SwitchPortHandle } from "./net-switch.js";
import { TapBackend } from "./net-tap.js";

/** Feature bits (section 5.1.3). */
export const VIRTIO_NET_F_CSUM = 0n;
export const VIRTIO_NET_F_MAC = 5n;
export const VIRTIO_NET_F_STATUS = 16n;
export const VIRTIO_NET_S_LINK_UP = 1;

/** struct virtio_net_hdr with VERSION_1 (section 5.1.6): num_buffers is always there. */
export const VIRTIO_NET_HDR_BYTES = 12;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_GSO_NONE = 0;

export const VIRTIO_NET_QUEUE_SIZE = 256;
export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/** Frames held for a guest that has no receive buffer free; beyond that they are dropped. */
export const DEFAULT_RX_BACKLOG = 256;
const CONFIG_BYTES = 12; // mac[6], status, max_virtqueue_pairs, mtu

export interface VirtioNetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  numBuffers: number;
}

/** Decodes the 12 header bytes at the start of `bytes` (which must hold them). */
export function parseNetHeader(bytes: Uint8Array): VirtioNetHeader {
  if (bytes.length < VIRTIO_NET_HDR_BYTES) throw new RangeError(`a virtio_net_hdr is ${VIRTIO_NET_HDR_BYTES} bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, VIRTIO_NET_HDR_BYTES);
  return {
    flags: view.getUint8(0), gsoType: view.getUint8(1), hdrLen: view.getUint16(2, true), gsoSize: view.getUint16(4, true),
    csumStart: view.getUint16(6, true), csumOffset: view.getUint16(8, true), numBuffers: view.getUint16(10, true),
  };
}

/**
 * Why a transmit header asks for what this device never offered (section 5.1.6.2: the
 * driver sets NEEDS_CSUM only with VIRTIO_NET_F_CSUM and a gso_type only with a HOST_TSO or UFO feature),
 * or undefined when it is acceptable. Flags the spec reserves are ignored, as it says.
 */
export function transmitHeaderProblem(header: VirtioNetHeader): string | undefined {
  if (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) return "NEEDS_CSUM without VIRTIO_NET_F_CSUM";
  if (header.gsoType !== VIRTIO_NET_HDR_GSO_NONE) return `gso_type ${header.gsoType} without a segmentation offload`;
  return undefined;
}

export interface VirtioNetOptions {
  /**
   * The host side, on the device's thread. A device built on a device worker gets one of
   * the structured-clonable forms instead: `switchPort` or `tap`.
   */
  backend?: NetBackend;
  /** A port of a NetSwitch made by `portHandle()`, opened on the device's thread. */
  switchPort?: SwitchPortHandle;
  /** A host TAP interface the device's thread opens by name (needs CAP_NET_ADMIN). */
  tap?: string;
  /** The NIC's address, e.g. "52:54:00:12:34:56" (unicast). */
  mac: string;
  /** Frames kept for the guest while it has no receive buffer (default DEFAULT_RX_BACKLOG). */
  rxBacklog?: number;
}

export interface VirtioNetStats {
  txFrames: number;
  txBytes: number;
  /** Transmit requests refused: runt or oversize frames, headers asking for offloads. */
  txErrors: number;
  rxFrames: number;
  rxBytes: number;
  /** Frames dropped: the backlog was full (the guest gave no buffers in time), or the driver reset or the device closed with frames waiting. */
  rxDropped: number;
  /** Frames dropped because the guest's buffer was shorter than header + frame. */
  rxTooLong: number;
}

export class VirtioNet implements VirtioDevice {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_NET;
  readonly features = featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS);
  readonly queueSizes = [VIRTIO_NET_QUEUE_SIZE, VIRTIO_NET_QUEUE_SIZE];
  readonly config = new Uint8Array(CONFIG_BYTES);
  readonly mac: Uint8Array;
  readonly stats: VirtioNetStats = { txFrames: 0, txBytes: 0, txErrors: 0, rxFrames: 0, rxBytes: 0, rxDropped: 0, rxTooLong: 0 };
  private readonly backend: NetBackend;
  private readonly backlogLimit: number;
  private backlog: Uint8Array[] = [];
  private host: VirtioDeviceHost | undefined;
  private readonly header = new Uint8Array(VIRTIO_NET_HDR_BYTES);
  private readonly rxHeader = new Uint8Array(VIRTIO_NET_HDR_BYTES);
  private closed = false;

  constructor(options: VirtioNetOptions) {
    const backend = openBackend(options);
    try {
      this.mac = parseMac(options.mac);
      this.backlogLimit = options.rxBacklog ?? DEFAULT_RX_BACKLOG;
      if (!Number.isInteger(this.backlogLimit) || this.backlogLimit < 0) throw new RangeError(`rxBacklog must be a whole number of frames, got ${options.rxBacklog}`);
    } catch (error) {
      // A host side the options named was opened here: a switch port must not stay taken by a device that never was.
      if (backend !== options.backend) backend.close();
      throw error;
    }
    this.backend = backend;
    this.name = `virtio-net ${options.mac} on ${this.backend.name}`;
    this.config.set(this.mac, 0);
    const config = new DataView(this.config.buffer);
    config.setUint16(6, VIRTIO_NET_S_LINK_UP, true);
    config.setUint16(8, 1, true); // max_virtqueue_pairs (read only with MQ)
    config.setUint16(10, 1500, true); // mtu (read only with F_MTU)
    // num_buffers is 1 without VIRTIO_NET_F_MRG_RXBUF (section 5.1.6.3); nothing else is set.
    this.rxHeader[10] = 1;
  }

  /** Frames waiting for a receive buffer. */
  get backlogLength(): number {
    return this.backlog.length;
  }

  /** Frames start coming once a transport serves the device, on that transport's thread. */
  attach(host: VirtioDeviceHost): void {
    this.host = host;
    this.backend.attach({ receive: (frame) => this.receive(frame) }, host.watchFd);
  }

  processQueue(index: number, queue: SplitVirtqueue, context: VirtioQueueContext): void | boolean {
    if (index === TX_QUEUE) return this.transmit(queue, context);
    if (index === RX_QUEUE) return this.fillReceiveBuffers(queue, context);
  }

  /** Frames still waiting were for the old driver: dropped, and counted as such. */
  reset(): void {
    this.stats.rxDropped += this.backlog.length;
    this.backlog = [];
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reset();
    this.backend.close();
  }

  private receive(frame: Uint8Array): void {
    if (this.closed) return;
    if (this.backlog.length >= this.backlogLimit) {
      this.stats.rxDropped++;
      return;
    }
    this.backlog.push(frame);
    this.host?.wake(RX_QUEUE);
  }

  private fillReceiveBuffers(queue: SplitVirtqueue, context: VirtioQueueContext): boolean {
    let budget = queue.size;
    while (this.backlog.length > 0 && budget-- > 0) {
      const chain = queue.pop();
      if (chain === undefined) return false; // no buffer: wait for the driver's next notify
      if (chain instanceof Error) return true;
      if (chain.writableLength < VIRTIO_NET_HDR_BYTES) {
        context.needsReset(`receive buffer ${chain.head} has ${chain.writableLength} device-writable bytes, less than the ${VIRTIO_NET_HDR_BYTES}-byte virtio_net_hdr`);
        return true;
      }
      const frame = this.backlog.shift()!;
      scatter(chain.writable, this.rxHeader);
      if (VIRTIO_NET_HDR_BYTES + frame.length > chain.writableLength) {
        // Without MRG_RXBUF the driver should offer 1526-byte buffers (section 5.1.6.3.1):
        // the frame is lost, the buffer goes back holding a header and no frame.
        this.stats.rxTooLong++;
        queue.pushUsed(chain.head, VIRTIO_NET_HDR_BYTES);
        continue;
      }
      scatter(chain.writable, frame, VIRTIO_NET_HDR_BYTES);
      queue.pushUsed(chain.head, VIRTIO_NET_HDR_BYTES + frame.length);
      this.stats.rxFrames++;
      this.stats.rxBytes += frame.length;
    }
    return this.backlog.length > 0;
  }

  private transmit(queue: SplitVirtqueue, context: VirtioQueueContext): void {
    for (let budget = queue.size, chain = queue.pop(); chain !== undefined && !(chain instanceof Error); chain = --budget > 0 ? queue.pop() : undefined) {
      if (chain.readableLength < VIRTIO_NET_HDR_BYTES) {
        context.needsReset(`transmit request ${chain.head} has ${chain.readableLength} device-readable bytes, less than the ${VIRTIO_NET_HDR_BYTES}-byte virtio_net_hdr`);
        return;
      }
      gather(chain.readable, this.header);
      const frameLength = chain.readableLength - VIRTIO_NET_HDR_BYTES;
      if (transmitHeaderProblem(parseNetHeader(this.header)) !== undefined || frameLength < ETHERNET_HEADER_BYTES || frameLength > MAX_FRAME_BYTES) {
        this.stats.txErrors++;
      } else {
        const frame = new Uint8Array(frameLength);
        gather(chain.readable, frame, VIRTIO_NET_HDR_BYTES);
        this.backend.transmit(frame);
        this.stats.txFrames++;
        this.stats.txBytes += frameLength;
      }
      queue.pushUsed(chain.head, 0);
    }
  }
}

/** The one host side `options` names. */
function openBackend(options: VirtioNetOptions): NetBackend {
  const given = (["backend", "switchPort", "tap"] as const).filter((key) => options[key] !== undefined);
  if (given.length !== 1) {
    throw new TypeError(`a virtio-net device takes one host side, backend, switchPort or tap; got ${given.length === 0 ? "none" : given.join(" and ")}`);
  }
  if (options.switchPort !== undefined) return SwitchPort.open(options.switchPort);
  if (options.tap !== undefined) return new TapBackend(options.tap);
  return options.backend!;
}
