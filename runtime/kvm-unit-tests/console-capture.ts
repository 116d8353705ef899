/**
 * One entry's console as the suite runner reads it: a guest may print without end (a
 * looping test until its timeout), so only what the verdict needs stays in memory -- the
 * last bytes, the last `SUMMARY:` line, the first bytes of the VMM's stderr -- and the
 * whole of it goes to the entry's log file when there is one.
 */
import { writeSync } from "node:fs";

const SUMMARY_PREFIX = "SUMMARY: ";
/** A line longer than this is no SUMMARY line (kvm-unit-tests prints a few dozen bytes). */
const MAX_SUMMARY_LINE_BYTES = 1024;
const NEWLINE = 0x0a;

export class ConsoleCapture {
  private tail = Buffer.alloc(0);
  /** The current line's first bytes (enough to tell a SUMMARY line) and whether it ran over. */
  private line = Buffer.alloc(0);
  private lineTooLong = false;
  private lastSummary = "";
  private stderrHead = Buffer.alloc(0);

  /** `logFd`: an open file the whole output is appended to (the caller closes it). */
  constructor(private readonly tailBytes: number, private readonly logFd?: number) {
    if (!Number.isInteger(tailBytes) || tailBytes < 1) throw new RangeError(`tailBytes must be a positive integer, got ${tailBytes}`);
  }

  stdout(chunk: Buffer): void {
    this.log(chunk);
    this.tail = this.tail.length + chunk.length <= this.tailBytes
      ? Buffer.concat([this.tail, chunk])
      : Buffer.concat([this.tail, chunk]).subarray(-this.tailBytes);
    this.scanLines(chunk);
  }

  stderr(chunk: Buffer): void {
    this.log(chunk);
    if (this.stderrHead.length < this.tailBytes) this.stderrHead = Buffer.concat([this.stderrHead, chunk]).subarray(0, this.tailBytes);
  }

  /** The last `tailBytes` of the guest's console. */
  get consoleTail(): string {
    return this.tail.toString("latin1");
  }

  /** The text after `SUMMARY: ` on the last such line (an unterminated last line counts). */
  get summary(): string {
    return this.summaryOf(this.line, this.lineTooLong) ?? this.lastSummary;
  }

  /** The first `tailBytes` of the VMM's stderr (its first line says why a VM failed). */
  get stderrStart(): string {
    return this.stderrHead.toString("utf8");
  }

  /** Bytes held in memory, whatever was printed: the tail, one line's start, stderr's start. */
  get retainedBytes(): number {
    return this.tail.length + this.line.length + this.stderrHead.length;
  }

  private log(chunk: Buffer): void {
    if (this.logFd === undefined) return;
    for (let at = 0; at < chunk.length;) at += writeSync(this.logFd, chunk, at);
  }

  private scanLines(chunk: Buffer): void {
    let start = 0;
    for (let end = chunk.indexOf(NEWLINE); end !== -1; end = chunk.indexOf(NEWLINE, start)) {
      this.appendToLine(chunk.subarray(start, end));
      const summary = this.summaryOf(this.line, this.lineTooLong);
      if (summary !== undefined) this.lastSummary = summary;
      this.line = Buffer.alloc(0);
      this.lineTooLong = false;
      start = end + 1;
    }
    this.appendToLine(chunk.subarray(start));
  }

  private appendToLine(bytes: Buffer): void {
    if (this.lineTooLong || bytes.length === 0) return;
    if (this.line.length + bytes.length > MAX_SUMMARY_LINE_BYTES) {
      this.lineTooLong = true;
      this.line = Buffer.alloc(0);
      return;
    }
    this.line = Buffer.concat([this.line, bytes]);
  }

  private summaryOf(line: Buffer, tooLong: boolean): string | undefined {
    if (tooLong) return undefined;
    const text = line.toString("latin1").replace(/\r$/, "");
    return text.startsWith(SUMMARY_PREFIX) ? text.slice(SUMMARY_PREFIX.length) : undefined;
  }
}
