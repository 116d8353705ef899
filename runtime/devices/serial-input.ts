/**
 * Host input for a 16550 with flow control: bytes from a stream wait in a queue and enter
 * the UART only as fast as its receiver has room (`rxSpace()`), more following each time
 * the guest drains it. A long queue pauses the stream, so a large pipe never piles up in
 * memory, and bytes a FIFO reset threw away are queued again: piped input is never lost.
 */
import type { Serial16550 } from "./serial-16550.js";

/** Pause the source above this many queued bytes, resume below half of it. */
const HIGH_WATER = 64 * 1024;

export interface InputSource {
  on(event: "data", listener: (chunk: Buffer | string) => void): unknown;
  off(event: "data", listener: (chunk: Buffer | string) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

export class SerialInputPump {
  private serial: Serial16550 | undefined;
  private source: InputSource | undefined;
  private chunks: Uint8Array[] = [];
  /** Bytes of chunks[0] already delivered. */
  private offset = 0;
  private queued = 0;
  private paused = false;
  private readonly onData = (chunk: Buffer | string): void => this.push(typeof chunk === "string" ? Buffer.from(chunk, "latin1") : chunk);
  /** Give these to the UART's options: `onRxDrained` and `onRxDiscarded`. */
  readonly drained = (): void => this.pump();
  readonly discarded = (bytes: Uint8Array): void => {
    this.chunks.unshift(bytes.slice());
    if (this.offset > 0 && this.chunks.length > 1) {
      this.chunks[1] = this.chunks[1].subarray(this.offset);
      this.offset = 0;
    }
    this.queued += bytes.length;
  };

  /** Bytes waiting for room in the UART. */
  get pending(): number {
    return this.queued;
  }

  /** Connects the UART (once it exists) and starts delivering. */
  attach(serial: Serial16550): void {
    this.serial = serial;
    this.pump();
  }

  /** Reads `source` until `detach()`. */
  connect(source: InputSource): void {
    this.source = source;
    source.on("data", this.onData);
  }

  detach(): void {
    this.source?.off("data", this.onData);
    this.source = undefined;
  }

  push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.chunks.push(bytes);
    this.queued += bytes.length;
    this.pump();
    if (this.queued > HIGH_WATER && !this.paused && this.source !== undefined) {
      this.paused = true;
      this.source.pause();
    }
  }

  private pump(): void {
    const serial = this.serial;
    if (serial === undefined) return;
    let space = serial.rxSpace();
    while (space > 0 && this.chunks.length > 0) {
      const chunk = this.chunks[0];
      const take = Math.min(space, chunk.length - this.offset);
      serial.receive(chunk.subarray(this.offset, this.offset + take));
      this.offset += take;
      this.queued -= take;
      space -= take;
      if (this.offset === chunk.length) {
        this.chunks.shift();
        this.offset = 0;
      }
      space = Math.min(space, serial.rxSpace());
    }
    if (this.paused && this.queued < HIGH_WATER / 2) {
      this.paused = false;
      this.source?.resume();
    }
  }
}
