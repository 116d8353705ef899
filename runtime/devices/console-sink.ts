/**
 * Collects guest console bytes and writes them to a Node stream in batches: one
 * `write()` per byte would cost more than the exit that produced it.
 */
import type { Writable } from "node:stream";

export class ConsoleSink {
  private readonly buffer = Buffer.alloc(4096);
  private length = 0;
  private scheduled = false;

  constructor(private readonly stream: Pick<Writable, "write">) {}

  /** Bound so it can be handed to a device as its `output` callback. */
  readonly push = (byte: number): void => {
    this.buffer[this.length++] = byte;
    if (this.length === this.buffer.length) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  };

  readonly flush = (): void => {
    this.scheduled = false;
    if (this.length === 0) return;
    this.stream.write(Buffer.from(this.buffer.subarray(0, this.length)));
    this.length = 0;
  };
}
