/**
 * virtio-console (virtio 1.2 section 5.3) with one port and no multiport: receiveq 0 carries
 * host input to the guest, transmitq 1 the guest's output to the host. The host side is a
 * pair of Node streams, flow-controlled both ways: input is read from the Readable only
 * while at most `inputHighWater` bytes wait for receive buffers (the stream is paused past
 * that), and the guest's transmit buffers are left in its ring while the Writable is full
 * (until 'drain'), so neither side can make the other buffer without bound.
 * VIRTIO_CONSOLE_F_EMERG_WRITE is offered: a byte written to emerg_wr goes to the output.
 * On a device worker the streams stay on the main thread in a ConsoleChannel, and the
 * device gets its handle (console-channel.ts), with the same flow control.
 */
import type { Readable, Writable } from "node:stream";
import { ConsoleChannelEnd, type ConsoleChannelHandle } from "./console-channel.js";
import type { SplitVirtqueue } from "./virtqueue.js";
import { gather, scatter } from "./segments.js";
import { featureBit, VIRTIO_ID_CONSOLE, type VirtioDevice, type VirtioDeviceHost, type VirtioQueueContext } from "./virtio-device.js";

/** Feature bits (section 5.3.3). */
export const VIRTIO_CONSOLE_F_SIZE = 0n;
export const VIRTIO_CONSOLE_F_MULTIPORT = 1n;
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2n;

export const VIRTIO_CONSOLE_QUEUE_SIZE = 128;
export const CONSOLE_RX_QUEUE = 0;
export const CONSOLE_TX_QUEUE = 1;
/** Host input held for the guest before the Readable is paused. */
export const DEFAULT_INPUT_HIGH_WATER = 64 * 1024;
/**
 * The largest transmit request taken: far above any driver's (Linux sends at most a few
 * pages), low enough that a chain naming the same RAM many times cannot make the host copy
 * gigabytes in one go.
 */
export const MAX_CONSOLE_REQUEST_BYTES = 1 << 20;
const EMERG_WR_OFFSET = 8;
const CONFIG_BYTES = 12; // cols, rows, max_nr_ports, emerg_wr

/** What the device uses of a Readable (or of a ConsoleChannelEnd, on a device worker). */
export interface ConsoleInput {
  on(event: "data", listener: (chunk: Buffer | string) => void): unknown;
  off(event: "data", listener: (chunk: Buffer | string) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** What the device uses of a Writable (or of a ConsoleChannelEnd). */
export interface ConsoleOutput {
  write(bytes: Uint8Array): boolean;
  once(event: "drain", listener: () => void): unknown;
  off(event: "drain", listener: () => void): unknown;
}

export interface VirtioConsoleOptions {
  /** What the host types: its bytes reach the guest in order, none dropped. */
  input?: Readable;
  /** Where the guest's output goes. */
  output?: Writable;
  /**
   * Instead of the streams, for a device built on a device worker: the handle of a
   * ConsoleChannel that holds them on the main thread (structured-clonable).
   */
  channel?: ConsoleChannelHandle;
  inputHighWater?: number;
}

export interface VirtioConsoleStats {
  bytesIn: number;
  bytesOut: number;
  /** Times the output was full and the guest's transmit ring was left to wait for 'drain'. */
  outputStalls: number;
  /** Times the input stream was paused because the guest was not taking it. */
  inputPauses: number;
}

export class VirtioConsole implements VirtioDevice {
  readonly name = "virtio-console";
  readonly deviceId = VIRTIO_ID_CONSOLE;
  readonly features = featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE);
  readonly queueSizes = [VIRTIO_CONSOLE_QUEUE_SIZE, VIRTIO_CONSOLE_QUEUE_SIZE];
  readonly config = new Uint8Array(CONFIG_BYTES);
  readonly stats: VirtioConsoleStats = { bytesIn: 0, bytesOut: 0, outputStalls: 0, inputPauses: 0 };
  private readonly input: ConsoleInput | undefined;
  private readonly output: ConsoleOutput | undefined;
  private readonly channel: ConsoleChannelEnd | undefined;
  private readonly highWater: number;
  /** Input read from the stream, not yet in a guest buffer; `pendingOffset` into the first. */
  private pending: Buffer[] = [];
  private pendingOffset = 0;
  private pendingBytes = 0;
  private inputPaused = false;
  private outputBlocked = false;
  private host: VirtioDeviceHost | undefined;
  private closed = false;
  private readonly onData = (chunk: Buffer | string) => this.takeInput(chunk);
  private readonly onDrain = () => {
    this.outputBlocked = false;
    this.host?.wake(CONSOLE_TX_QUEUE);
  };

  constructor(options: VirtioConsoleOptions = {}) {
    this.highWater = options.inputHighWater ?? DEFAULT_INPUT_HIGH_WATER;
    if (!Number.isInteger(this.highWater) || this.highWater < 1) throw new RangeError(`inputHighWater must be a whole number of bytes above 0, got ${options.inputHighWater}`);
    if (options.channel !== undefined) {
      if (options.input !== undefined || options.output !== undefined) throw new TypeError("a virtio-console takes streams (input, output) or a channel, not both");
      this.channel = new ConsoleChannelEnd(options.channel);
    }
    this.input = this.channel ?? options.input;
    this.output = this.channel ?? options.output;
    this.input?.on("data", this.onData);
  }

  attach(host: VirtioDeviceHost): void {
    this.host = host;
    this.channel?.attach(host.watchFd);
  }

  writeConfig(offset: number, size: number, value: number): void {
    if (offset !== EMERG_WR_OFFSET || this.output === undefined || this.closed) return;
    // emerg_wr is 32 bits of which the low byte is the character (section 5.3.4).
    if (size === 4 || size === 1) {
      this.output.write(Buffer.of(value & 0xff));
      this.stats.bytesOut++;
    }
  }

  processQueue(index: number, queue: SplitVirtqueue, context: VirtioQueueContext): void | boolean {
    if (index === CONSOLE_RX_QUEUE) return this.deliverInput(queue);
    if (index === CONSOLE_TX_QUEUE) return this.takeOutput(queue, context);
  }

  /** Requests in flight are the guest's buffers, which the device never holds; host input stays queued. */
  reset(): void {}

  /** Lets go of both streams (they stay the caller's to end); a channel's main end then lets go of them too. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.input?.off("data", this.onData);
    this.output?.off("drain", this.onDrain);
    this.channel?.close();
    this.pending = [];
    this.pendingBytes = 0;
  }

  private takeInput(chunk: Buffer | string): void {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (bytes.length === 0 || this.closed) return;
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    if (this.pendingBytes >= this.highWater && !this.inputPaused) {
      this.inputPaused = true;
      this.stats.inputPauses++;
      this.input?.pause();
    }
    this.host?.wake(CONSOLE_RX_QUEUE);
  }

  private deliverInput(queue: SplitVirtqueue): boolean {
    let budget = queue.size;
    while (this.pendingBytes > 0 && budget-- > 0) {
      const chain = queue.pop();
      if (chain === undefined) return false; // wait for the guest to offer buffers
      if (chain instanceof Error) return true;
      let written = 0;
      while (this.pending.length > 0 && written < chain.writableLength) {
        const head = this.pending[0];
        const n = scatter(chain.writable, head.subarray(this.pendingOffset), written);
        written += n;
        this.pendingOffset += n;
        if (this.pendingOffset === head.length) {
          this.pending.shift();
          this.pendingOffset = 0;
        }
      }
      this.pendingBytes -= written;
      this.stats.bytesIn += written;
      queue.pushUsed(chain.head, written);
    }
    if (this.inputPaused && this.pendingBytes < this.highWater / 2) {
      this.inputPaused = false;
      this.input?.resume();
    }
    return this.pendingBytes > 0;
  }

  private takeOutput(queue: SplitVirtqueue, context: VirtioQueueContext): boolean {
    let budget = queue.size;
    while (!this.outputBlocked && budget-- > 0) {
      const chain = queue.pop();
      if (chain === undefined || chain instanceof Error) return true;
      if (chain.readableLength > MAX_CONSOLE_REQUEST_BYTES) {
        context.needsReset(`transmit request ${chain.head} is ${chain.readableLength} bytes, more than the ${MAX_CONSOLE_REQUEST_BYTES} this console takes at once`);
        return true;
      }
      const bytes = Buffer.allocUnsafe(chain.readableLength);
      gather(chain.readable, bytes);
      queue.pushUsed(chain.head, 0);
      this.stats.bytesOut += bytes.length;
      if (this.output === undefined || this.closed) continue;
      if (!this.output.write(bytes)) {
        // The stream took these bytes but is over its mark: leave the rest in the ring.
        this.outputBlocked = true;
        this.stats.outputStalls++;
        this.output.once("drain", this.onDrain);
      }
    }
    return !this.outputBlocked;
  }
}
