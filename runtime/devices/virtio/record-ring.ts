/**
 * A ring of variable-length records in a SharedArrayBuffer, read by one consumer thread and
 * written by any number of producer threads (serialised by a futex-style lock in the ring):
 * Ethernet frames into a switch port, whatever thread the sending NIC runs on; console bytes
 * between a device worker and the main thread. Records never
 * wrap (a skip marker fills the tail), so a reader sees each one as one contiguous view.
 *
 * Wake-ups: a producer that finds the ring empty (from the consumer's side) rings the
 * consumer's bell; nothing is signalled while the consumer still has records to read. A
 * bell is an Atomics word (for a thread with an event loop: `Atomics.waitAsync`) and, when
 * the consumer registered one, an eventfd (for a thread blocked in poll(2)). The eventfd is
 * written only under the lock, and the consumer clears it under the lock before closing it,
 * so no thread ever writes to an fd number that has been closed and reused. A producer that
 * must not drop (a console) asks for the producer bell when it finds the ring full, and the
 * consumer rings it once it has made room.
 */
import { closeEventFd, createEventFd, drainEventFd, signalEventFd } from "../../hypervisor/eventfd.js";
import type { FdWatcher } from "./virtio-device.js";

const enum RingWord {
  Lock = 0,
  /** Free-running byte positions (u32, wrapping): what was written and what was read. */
  Write = 1,
  Read = 2,
  ConsumerBell = 3,
  /** The eventfd rung with the bell, plus 1 (0: none; a zeroed buffer has none). */
  ConsumerFd = 4,
  /** 1 while the ring takes records; a closed ring refuses them. */
  Open = 5,
  /** Records refused because the ring was full. */
  Refused = 6,
  /** 1 while a producer that found the ring full waits for room (see `waitForRoom`). */
  ProducerWaiting = 7,
  ProducerBell = 8,
  ProducerFd = 9,
}
const HEADER_BYTES = 48;
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
      Atomics.store(w, RingWord.ConsumerFd, 0);
      Atomics.store(w, RingWord.ProducerFd, 0);
      Atomics.store(w, RingWord.ProducerWaiting, 0);
      Atomics.store(w, RingWord.Open, 1);
    });
  }

  /** Refuses records from now on and wakes the consumer (so an async wait ends). */
  close(): void {
    this.withLock(() => {
      Atomics.store(this.words, RingWord.Open, 0);
      this.ringBell(RingWord.ConsumerBell, RingWord.ConsumerFd);
      this.ringBell(RingWord.ProducerBell, RingWord.ProducerFd);
      Atomics.store(this.words, RingWord.ConsumerFd, 0);
      Atomics.store(this.words, RingWord.ProducerFd, 0);
    });
  }

  get isOpen(): boolean {
    return Atomics.load(this.words, RingWord.Open) === 1;
  }

  get refused(): number {
    return Atomics.load(this.words, RingWord.Refused) >>> 0;
  }

  /**
   * Calls `rung` each time `side`'s bell rings (the consumer's: records to read; a
   * producer's: room after a full ring), on this thread, until the returned function is
   * called. With `watchFd` (a thread blocked in poll(2)) the bell is an eventfd that thread
   * watches; without, it is awaited with Atomics.waitAsync on this thread's event loop.
   * `rung` is called once at the start, for what came before.
   */
  onBell(side: "consumer" | "producer", rung: () => void, watchFd?: FdWatcher): () => void {
    const bellWord = side === "consumer" ? RingWord.ConsumerBell : RingWord.ProducerBell;
    const fdWord = side === "consumer" ? RingWord.ConsumerFd : RingWord.ProducerFd;
    let stopped = false;
    if (watchFd !== undefined) {
      const fd = createEventFd();
      this.withLock(() => Atomics.store(this.words, fdWord, fd + 1));
      const unwatch = watchFd(fd, () => {
        drainEventFd(fd);
        if (!stopped) rung();
      });
      rung();
      return () => {
        if (stopped) return;
        stopped = true;
        // Cleared under the lock: no thread writes to the fd after this, so it may be closed.
        this.withLock(() => {
          if (Atomics.load(this.words, fdWord) === fd + 1) Atomics.store(this.words, fdWord, 0);
        });
        unwatch();
        closeEventFd(fd);
      };
    }
    const words = this.words;
    void (async () => {
      while (!stopped) {
        const bell = Atomics.load(words, bellWord);
        rung();
        if (stopped) return;
        const waited = Atomics.waitAsync(words, bellWord, bell);
        if (waited.async) await waited.value;
      }
    })();
    return () => {
      if (stopped) return;
      stopped = true;
      Atomics.add(words, bellWord, 1);
      Atomics.notify(words, bellWord);
    };
  }

  /** Room for a `length`-byte record now (a producer may then write without a refusal). */
  hasRoomFor(length: number): boolean {
    const w = this.words;
    const start = Atomics.load(w, RingWord.Write) >>> 0;
    const used = (start - (Atomics.load(w, RingWord.Read) >>> 0)) >>> 0;
    const need = 4 + pad4(length);
    const tail = this.capacity - (start & this.mask);
    return used + need + (tail < need ? tail : 0) <= this.capacity;
  }

  /**
   * A producer that will not drop: asks for the producer bell once the consumer has made
   * room, and says whether there is room already (then no bell comes; write again now).
   */
  waitForRoom(length: number): boolean {
    Atomics.store(this.words, RingWord.ProducerWaiting, 1);
    // Pairs with drain()'s store of Read then load of ProducerWaiting: one of us sees the other.
    if (!this.hasRoomFor(length)) return false;
    Atomics.store(this.words, RingWord.ProducerWaiting, 0);
    return true;
  }

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
        // Counted as a drop (the switch's); a producer that waits (waitForRoom) writes again.
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
      if ((Atomics.load(w, RingWord.Read) >>> 0) === start) this.ringBell(RingWord.ConsumerBell, RingWord.ConsumerFd);
      return RingWrite.Written;
    } finally {
      this.unlock();
    }
  }

  /**
   * Gives each record to `take` (a view into the ring, valid during the call only), oldest
   * first, until the ring is empty or `take` returns false (that record stays, for the next
   * drain); consumer thread only. Returns how many were taken.
   */
  drain(take: (record: Uint8Array) => boolean | void): number {
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
        if (take(this.data.subarray(at + 4, at + 4 + length)) === false) break;
        taken++;
        read = (read + 4 + pad4(length)) >>> 0;
      }
      // Published per record, so producers get the room back at once; the loop re-reads
      // Write after it, which pairs with write()'s check of Read (no lost bell).
      Atomics.store(w, RingWord.Read, read | 0);
      if (Atomics.load(w, RingWord.ProducerWaiting) === 1) this.wakeProducer();
    }
    return taken;
  }

  private wakeProducer(): void {
    this.withLock(() => {
      if (Atomics.exchange(this.words, RingWord.ProducerWaiting, 0) === 1) this.ringBell(RingWord.ProducerBell, RingWord.ProducerFd);
    });
  }

  /** Under the lock. */
  private ringBell(bellWord: RingWord, fdWord: RingWord): void {
    Atomics.add(this.words, bellWord, 1);
    Atomics.notify(this.words, bellWord);
    const fdPlusOne = Atomics.load(this.words, fdWord);
    if (fdPlusOne > 0) signalEventFd(fdPlusOne - 1);
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
