/**
 * virtio-console's host streams reached from another thread: a VirtioConsole built on a
 * device worker cannot hold the main thread's Node streams, so `ConsoleChannel` (main
 * thread) holds them and the device gets a structured-clonable handle to two record rings
 * in one SharedArrayBuffer, one per direction. Flow control both ways, nothing dropped:
 * input is read from the Readable only while the ring towards the guest has room (it is
 * paused otherwise, until the device has taken some), and the device's output waits while
 * the ring from the guest is full (its `write` returns false and 'drain' follows, as a
 * Writable's would), which leaves the guest's transmit buffers in its ring; the main thread
 * reads that ring only while the Writable takes more.
 * When the device closes the rings (its VM stopped), the main end lets go of the streams.
 */
import { EventEmitter } from "node:events";
import type { Readable, Writable } from "node:stream";
import { RecordRing, RingWrite } from "./record-ring.js";
import type { FdWatcher } from "./virtio-device.js";

/** What a VirtioConsole on a device worker is given (its `channel` option). */
export interface ConsoleChannelHandle {
  shared: SharedArrayBuffer;
  ringBytes: number;
}

export interface ConsoleChannelOptions {
  input?: Readable;
  output?: Writable;
  /** Bytes of each direction's ring, a power of 2 (default 64 KiB). */
  ringBytes?: number;
}

function rings(handle: ConsoleChannelHandle): { toGuest: RecordRing; fromGuest: RecordRing } {
  if (!(handle?.shared instanceof SharedArrayBuffer) || !Number.isInteger(handle.ringBytes)) {
    throw new TypeError("a console channel handle is { shared: SharedArrayBuffer, ringBytes: number }, from ConsoleChannel.handle");
  }
  return {
    toGuest: new RecordRing(handle.shared, 0, handle.ringBytes),
    fromGuest: new RecordRing(handle.shared, RecordRing.bytesFor(handle.ringBytes), handle.ringBytes),
  };
}

/** Splits `bytes` into pieces a ring takes as records. */
function* pieces(bytes: Uint8Array, most: number): Generator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += most) yield bytes.subarray(at, at + most);
}

/** The main thread's end: the host's streams, for a console device on another thread. */
export class ConsoleChannel {
  readonly handle: ConsoleChannelHandle;
  private readonly toGuest: RecordRing;
  private readonly fromGuest: RecordRing;
  private readonly input: Readable | undefined;
  private readonly output: Writable | undefined;
  /** Input read but not yet in the ring (it was full); the Readable is paused meanwhile. */
  private waiting: Uint8Array[] = [];
  private outputBlocked = false;
  private closed = false;
  private readonly stops: (() => void)[] = [];
  private readonly onData = (chunk: Buffer | string) => {
    this.waiting.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    this.sendInput();
  };

  constructor(options: ConsoleChannelOptions = {}) {
    const ringBytes = options.ringBytes ?? 64 * 1024;
    this.handle = { shared: new SharedArrayBuffer(2 * RecordRing.bytesFor(ringBytes)), ringBytes };
    ({ toGuest: this.toGuest, fromGuest: this.fromGuest } = rings(this.handle));
    this.toGuest.open();
    this.fromGuest.open();
    this.input = options.input;
    this.output = options.output;
    this.stops.push(this.fromGuest.onBell("consumer", () => this.takeOutput()));
    this.stops.push(this.toGuest.onBell("producer", () => this.sendInput()));
    this.input?.on("data", this.onData);
  }

  /** Whether the channel still serves its streams (until the device closes it, or `close()`). */
  get open(): boolean {
    return !this.closed;
  }

  /** Lets go of both streams (they stay the caller's to end). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.input?.off("data", this.onData);
    this.output?.off("drain", this.onDrain);
    for (const stop of this.stops) stop();
    this.waiting = [];
  }

  private readonly onDrain = () => {
    this.outputBlocked = false;
    this.takeOutput();
  };

  private sendInput(): void {
    if (this.closed) return;
    if (!this.toGuest.isOpen) return this.close();
    while (this.waiting.length > 0) {
      const head = this.waiting[0];
      const piece = head.subarray(0, this.toGuest.maxRecord);
      const written = this.toGuest.write(piece);
      if (written === RingWrite.Closed) return this.close();
      if (written === RingWrite.Full) {
        this.input?.pause();
        if (this.toGuest.waitForRoom(piece.length)) continue;
        return; // the producer bell calls again once the device has taken some
      }
      if (piece.length === head.length) this.waiting.shift();
      else this.waiting[0] = head.subarray(piece.length);
    }
    this.input?.resume();
  }

  private takeOutput(): void {
    if (this.closed) return;
    this.fromGuest.drain((record) => {
      if (this.outputBlocked) return false;
      if (this.output !== undefined && !this.output.write(Buffer.from(record))) {
        this.outputBlocked = true;
        this.output.once("drain", this.onDrain);
      }
    });
    if (!this.fromGuest.isOpen && !this.outputBlocked) this.close();
  }
}

/**
 * The device's end, on the device's thread: what VirtioConsole reads its input from and
 * writes its output to, with the part of a Readable's and a Writable's contract it uses
 * ('data', pause/resume; write returning false, then 'drain'). Events are emitted
 * synchronously from the ring's bells: a device worker has no event loop turning.
 */
export class ConsoleChannelEnd extends EventEmitter {
  private readonly toGuest: RecordRing;
  private readonly fromGuest: RecordRing;
  private paused = false;
  private overflow: Uint8Array[] = [];
  private readonly stops: (() => void)[] = [];
  private closed = false;
  private readonly emitInput = (record: Uint8Array) => {
    if (this.paused || this.closed) return false;
    this.emit("data", Buffer.from(record));
  };

  constructor(handle: ConsoleChannelHandle) {
    super();
    ({ toGuest: this.toGuest, fromGuest: this.fromGuest } = rings(handle));
    if (!this.toGuest.isOpen || !this.fromGuest.isOpen) throw new Error("the console channel is closed: a handle serves one device, once");
  }

  /** Starts taking input and room notices on this thread (see RecordRing.onBell). */
  attach(watchFd?: FdWatcher): void {
    if (this.stops.length > 0 || this.closed) return;
    this.stops.push(this.toGuest.onBell("consumer", () => this.toGuest.drain(this.emitInput), watchFd));
    this.stops.push(this.fromGuest.onBell("producer", () => this.flush(), watchFd));
  }

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    if (!this.paused) return this;
    this.paused = false;
    this.toGuest.drain(this.emitInput);
    return this;
  }

  /** Takes all of `bytes`; false when they wait for room (then 'drain' comes once they are in the ring). */
  write(bytes: Uint8Array): boolean {
    if (this.closed) return false;
    if (this.overflow.length > 0) {
      this.overflow.push(Uint8Array.from(bytes));
      return false;
    }
    for (const piece of pieces(bytes, this.fromGuest.maxRecord)) {
      if (this.overflow.length > 0 || this.fromGuest.write(piece) === RingWrite.Full) this.overflow.push(Uint8Array.from(piece));
    }
    if (this.overflow.length === 0) return true;
    if (this.fromGuest.waitForRoom(this.overflow[0].length)) this.flush();
    return this.overflow.length === 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stop of this.stops) stop();
    this.toGuest.close();
    this.fromGuest.close();
    this.overflow = [];
    this.removeAllListeners();
  }

  private flush(): void {
    if (this.overflow.length === 0 || this.closed) return;
    for (;;) {
      while (this.overflow.length > 0 && this.fromGuest.write(this.overflow[0]) === RingWrite.Written) this.overflow.shift();
      if (this.overflow.length === 0) break;
      if (!this.fromGuest.waitForRoom(this.overflow[0].length)) return; // the producer bell calls again
    }
    this.emit("drain");
  }
}
