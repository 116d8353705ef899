/**
 * A ring of variable-length records in a SharedArrayBuffer, read by one consumer thread and
 * written by any number of producer threads (serialised by a futex-style lock in the ring):
 * Ethernet frames into a switch port, whatever thread the sending NIC runs on. Records never
 * wrap (a skip marker fills the tail), so a reader sees each one as one contiguous view.
 *
 * Wake-ups: a producer that finds the ring empty (from the consumer's side) rings the
 * consumer's bell; nothing is signalled while the consumer still has records to read. A
 * bell is an Atomics word (for a thread with an event loop: `Atomics.waitAsync`) and, when
 * the consumer registered one, an eventfd (for a thread blocked in poll(2)). The eventfd is
 * written only under the lock, and the consumer clears it under the lock before closing it,
 * so no thread ever writes to an fd number that has been closed and reused.
 */
import { signalEventFd } from "../../hypervisor/eventfd.js";

const enum RingWord {
  Lock = 0,
  /** Free-running byte positions (u32, wrapping): what was written and what was read. */
  Write = 1,
  Read = 2,
  ConsumerBell = 3,
  /** The eventfd rung with the bell, or -1. */
  ConsumerFd = 4,
  /** 1 while the ring takes records; a closed ring refuses them. */
  Open = 5,
  /** Records refused because the ring was full. */
  Refused = 6,
}
const HEADER_BYTES = 32;
const SKIP = -1;

export const enum RingWrite {
  Written = 0,
  Full = 1,
  Closed = 2,
}

const pad4 = (n: number) => (n + 3) & ~3;

export class RecordRing {
  /** The bytes a ring of `capacity` data bytes takes in its buffer. */
  static bytesFor(capacity: number): number {
    return HEADER_BYTES + capacity;
  }

  /** The largest record: a quarter of the ring, so a skip marker can never starve a record of room. */
  readonly maxRecord: number;
  private readonly words: Int32Array;
  private readonly dataWords: Int32Array;
  private readonly data: Uint8Array;
  private readonly mask: number;

  /** The ring at `byteOffset` of `shared` (a multiple of 8), `capacity` data bytes (a power of 2, at least 64). */
  constructor(shared: SharedArrayBuffer, byteOffset: number, readonly capacity: number) {
    if (capacity < 64 || (capacity & (capacity - 1)) !== 0) throw new RangeError(`a record ring's capacity must be a power of 2 of at least 64 bytes, got ${capacity}`);
    if (byteOffset % 8 !== 0 || byteOffset + RecordRing.bytesFor(capacity) > shared.byteLength) {
      throw new RangeError(`a record ring of ${capacity} bytes at ${byteOffset} does not fit a ${shared.byteLength}-byte buffer on an 8-byte boundary`);
    }
    this.words = new Int32Array(shared, byteOffset, HEADER_BYTES / 4);
    this.dataWords = new Int32Array(shared, byteOffset + HEADER_BYTES, capacity / 4);
    this.data = new Uint8Array(shared, byteOffset + HEADER_BYTES, capacity);
    this.mask = capacity - 1;
    this.maxRecord = capacity / 4 - 4;
  }

  /** Empties the ring and makes it take records (the consumer's eventfd is cleared). */
  open(): void {
    this.withLock(() => {
      const w = this.words;
      Atomics.store(w, RingWord.Write, 0);
      Atomics.store(w, RingWord.Read, 0);
      Atomics.store(w, RingWord.Refused, 0);
      Atomics.store(w, RingWord.ConsumerFd, -1);
      Atomics.store(w, RingWord.Open, 1);
    });
  }

  /** Refuses records from now on and wakes the consumer (so an async wait ends). */
  close(): void {
    this.withLock(() => {
      Atomics.store(this.words, RingWord.Open, 0);
      Atomics.store(this.words, RingWord.ConsumerFd, -1);
      this.ringBell();
    });
  }

  get isOpen(): boolean {
    return Atomics.load(this.words, RingWord.Open) === 1;
  }

  get refused(): number {
    return Atomics.load(this.words, RingWord.Refused) >>> 0;
  }

  /** The eventfd rung with the bell from now on (-1: none). Clear it before closing the fd. */
  setConsumerFd(fd: number): void {
    this.withLock(() => Atomics.store(this.words, RingWord.ConsumerFd, fd));
  }

  /** The bell's count: wait for it to change (`Atomics.waitAsync(bellWords, bellIndex, count)`). */
  get bell(): number {
    return Atomics.load(this.words, RingWord.ConsumerBell);
  }

  get bellWords(): Int32Array {
    return this.words;
  }

  readonly bellIndex = RingWord.ConsumerBell;

  /** Appends `record` (copied), or refuses it whole: ring full (counted) or closed. */
  write(record: Uint8Array): RingWrite {
    const length = record.length;
    if (length > this.maxRecord) throw new RangeError(`a ${length}-byte record does not fit a ring that takes at most ${this.maxRecord}`);
    this.lock();
    try {
      const w = this.words;
      if (Atomics.load(w, RingWord.Open) !== 1) return RingWrite.Closed;
      const start = Atomics.load(w, RingWord.Write) >>> 0;
      const used = (start - (Atomics.load(w, RingWord.Read) >>> 0)) >>> 0;
      const need = 4 + pad4(length);
      let at = start & this.mask;
      const tail = this.capacity - at;
      if (used + need + (tail < need ? tail : 0) > this.capacity) {
        Atomics.add(w, RingWord.Refused, 1);
        return RingWrite.Full;
      }
      let end = start;
      if (tail < need) {
        this.dataWords[at >> 2] = SKIP;
        end = (end + tail) >>> 0;
        at = 0;
      }
      this.dataWords[at >> 2] = length;
      this.data.set(record, at + 4);
      Atomics.store(w, RingWord.Write, (end + need) | 0);
      // The consumer had read everything before this record: it may be waiting for a bell.
      if ((Atomics.load(w, RingWord.Read) >>> 0) === start) this.ringBell();
      return RingWrite.Written;
    } finally {
      this.unlock();
    }
  }

  /**
   * Gives each record to `take` (a view into the ring, valid during the call only), oldest
   * first, until the ring is empty; consumer thread only. Returns how many were taken.
   */
  drain(take: (record: Uint8Array) => void): number {
    const w = this.words;
    let read = Atomics.load(w, RingWord.Read) >>> 0;
    let taken = 0;
    for (;;) {
      const written = Atomics.load(w, RingWord.Write) >>> 0;
      if (read === written) break;
      const at = read & this.mask;
      const length = this.dataWords[at >> 2];
      if (length === SKIP) {
        read = (read + this.capacity - at) >>> 0;
      } else {
        if (length < 0 || length > this.maxRecord || at + 4 + length > this.capacity) throw new Error(`record ring corrupted: a record of ${length} bytes at ${at}`);
        take(this.data.subarray(at + 4, at + 4 + length));
        taken++;
        read = (read + 4 + pad4(length)) >>> 0;
      }
      // Published per record, so producers get the room back at once; the loop re-reads
      // Write after it, which pairs with write()'s check of Read (no lost bell).
      Atomics.store(w, RingWord.Read, read | 0);
    }
    return taken;
  }

  private ringBell(): void {
    Atomics.add(this.words, RingWord.ConsumerBell, 1);
    Atomics.notify(this.words, RingWord.ConsumerBell);
    const fd = Atomics.load(this.words, RingWord.ConsumerFd);
    if (fd >= 0) signalEventFd(fd);
  }

  private withLock(body: () => void): void {
    this.lock();
    try {
      body();
    } finally {
      this.unlock();
    }
  }

  /** 0 free, 1 held, 2 held with waiters (a futex mutex); held for one copy at most. */
  private lock(): void {
    const w = this.words;
    for (let spin = 0; spin < 200; spin++) {
      if (Atomics.compareExchange(w, RingWord.Lock, 0, 1) === 0) return;
    }
    while (Atomics.exchange(w, RingWord.Lock, 2) !== 0) Atomics.wait(w, RingWord.Lock, 2, 1);
  }

  private unlock(): void {
    if (Atomics.sub(this.words, RingWord.Lock, 1) !== 1) {
      Atomics.store(this.words, RingWord.Lock, 0);
      Atomics.notify(this.words, RingWord.Lock, 1);
    }
  }
}
