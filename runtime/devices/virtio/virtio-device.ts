/**
 * What a virtio device (block, entropy, ...) gives its transport: its ID, features, queue
 * sizes, config space, and the work it does when a queue is notified. The transport owns
 * negotiation, status, queues and interrupts, so a device only ever sees working queues.
 */
import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { SplitVirtqueue } from "./virtqueue.js";

/** Device IDs (virtio 1.2 section 5). */
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_ENTROPY = 4;
export const VIRTIO_ID_VSOCK = 19;

/** Feature bits every transport-level device shares (virtio 1.2 section 6). */
export const VIRTIO_F_RING_INDIRECT_DESC = 28n;
export const VIRTIO_F_RING_EVENT_IDX = 29n;
export const VIRTIO_F_VERSION_1 = 32n;

export function featureBit(bit: bigint): bigint {
  return 1n << bit;
}

/** What the transport lends a device while the driver has it running. */
export interface VirtioQueueContext {
  readonly memory: GuestMemory;
  /** The features the driver accepted (FEATURES_OK). */
  readonly features: bigint;
  /**
   * The driver broke the device's own protocol (not the ring's): the device stops until
   * reset (DEVICE_NEEDS_RESET). `reason` is logged once.
   */
  needsReset(reason: string): void;
}

/**
 * What the transport lends a device for work that starts on the host side (a frame arrived,
 * a stream became writable): the device asks to be served, it never walks a queue itself.
 */
export interface VirtioDeviceHost {
  /**
   * Asks for `processQueue(index)` soon (after the current call stack, never re-entrantly);
   * nothing happens while the driver has not made the queue live.
   */
  wake(index: number): void;
  /**
   * Present where the serving thread blocks in poll(2) and has no event loop turning (a
   * device worker): host-side fds (a TAP, a switch port's eventfd) are watched through it.
   */
  watchFd?: FdWatcher;
}

/**
 * Calls `onReadable` on the serving thread each time `fd` polls readable (level-triggered:
 * the callback drains it) until the returned function is called; call that before closing the fd.
 */
export type FdWatcher = (fd: number, onReadable: () => void) => () => void;

export interface VirtioDevice {
  readonly name: string;
  readonly deviceId: number;
  /** Device-type feature bits offered; the transport adds VERSION_1, INDIRECT_DESC, EVENT_IDX. */
  readonly features: bigint;
  /** QueueNumMax of each queue (powers of 2). */
  readonly queueSizes: readonly number[];
  /** The device-specific configuration space, little-endian as the guest reads it. */
  readonly config: Uint8Array;
  /** The driver wrote `value` (size bytes) at `offset` of the config space. Default: ignored. */
  writeConfig?(offset: number, size: number, value: number): void;
  /**
   * The driver notified queue `index`: take its requests with `queue.pop()` and return them
   * with `queue.pushUsed`. A ring fault (pop returning a VirtqueueError) is the transport's
   * business: the device just stops taking from that queue.
   *
   * Returns false when what is left in the queue waits on the host, not on the device's
   * budget (receive buffers with no frame yet): the transport then leaves the queue alone
   * until the driver notifies again or the device calls `host.wake`.
   */
  processQueue(index: number, queue: SplitVirtqueue, context: VirtioQueueContext): void | boolean;
  /**
   * The device's host side runs on its thread's event loop (node:net sockets): a device
   * worker then waits for its eventfds on a pool thread so that loop keeps turning.
   */
  readonly usesEventLoop?: boolean;
  /**
   * Settles once the device's host side is up (vsock's listening socket). A device worker
   * announces the device only then, so a rejection fails its VM before the guest starts.
   */
  readonly ready?: Promise<void>;
  /** Called once by the transport that serves the device, before any other call. */
  attach?(host: VirtioDeviceHost): void;
  /** The driver reset the device: forget every request in flight. */
  reset(): void;
  /** Releases host resources (files); the machine that owns the device calls it on stop. */
  close?(): void;
}

