/**
 * The per-vCPU exit channel (DESIGN section 4): a sync mailbox for exits that need an
 * answer and a posted SPSC ring for writes that do not, in one SharedArrayBuffer, plus a
 * doorbell word shared by every vCPU of a VM.
 *
 * Producer: the vCPU worker. Consumer: the dispatcher on the main thread. Records carry
 * exit kinds as small integers; this module does not interpret them.
 *
 * Layout: words written by the worker, words written by the dispatcher, the mailbox (a
 * ping-pong both sides write in turn) and the control words each sit on their own 64-byte
 * cache line, so the hot path never bounces a line that the other side writes meanwhile.
 */
import { AdaptiveSpinner, type SpinPolicy, waitWhileEqual } from "./waiter.js";

const LINE_INTS = 16;
/** Int32 slots of the header, one cache line per writer. */
const H = {
  // written by the worker
  RING_HEAD: 0,
  RING_PARKED: 1,
  SYNC_PARKED: 2,
  // 3: free (the vCPU thread id moved to the backend's kick target)
  WORKER_STATE: 4,
  // written by the dispatcher
  RING_TAIL: LINE_INTS,
  // the sync mailbox
  SYNC_STATE: 2 * LINE_INTS,
  SYNC_KIND: 2 * LINE_INTS + 1,
  SYNC_SIZE: 2 * LINE_INTS + 2,
  SYNC_ADDRESS_LOW: 2 * LINE_INTS + 3,
  SYNC_ADDRESS_HIGH: 2 * LINE_INTS + 4,
  SYNC_DATA_LOW: 2 * LINE_INTS + 5,
  SYNC_DATA_HIGH: 2 * LINE_INTS + 6,
  SYNC_COUNT: 2 * LINE_INTS + 7,
  SYNC_ANSWER: 2 * LINE_INTS + 8,
  // written by the VM (main thread), read on every exit
  CONTROL: 3 * LINE_INTS,
  RING_CAPACITY: 3 * LINE_INTS + 1,
} as const;
const HEADER_BYTES = 4 * LINE_INTS * 4;
/** Float64 statistics written by the worker only. */
const STATS_BYTES = 128;
/** String I/O data of a sync exit; KVM hands at most a page of it per exit. */
export const SYNC_DATA_BYTES = 4096;
/**
 * A ring record: [kind | size << 8 | address bits 32..51 << 12, address bits 0..31, data
 * low, data high]. Guest-physical addresses are 52 bits wide, so they fit whole.
 */
const RECORD_INTS = 4;
const RECORD_BYTES = RECORD_INTS * 4;
/** The consumer publishes its tail at least this often within one long batch. */
const TAIL_PUBLISH_EVERY = 64;

const SyncState = { IDLE: 0, REQUEST: 1, DONE: 2 } as const;

/** How the dispatcher answered a sync request. */
export const Answer = {
  /** Handled; a read's value is in `answerLow/High`. */
  OK: 0,
  /** The VM is stopping: the worker must leave the guest. */
  STOPPED: 1,
  /** No device claims the access and the architecture faults on it (an MSR: #GP). */
  FAULT: 2,
} as const;

/** SUSPEND: leave the run loop, keeping the vCPU for a later task (ACPI S3: CPU context is lost). */
export const Control = { RUN: 0, PAUSE: 1, STOP: 2, SUSPEND: 3 } as const;
export const WorkerState = { STARTING: 0, RUNNING: 1, PAUSED: 2, EXITED: 3 } as const;

export const Stat = {
  EXITS: 0, IN_WORKER: 1, SYNC: 2, POSTED: 3, RING_FULL_WAITS: 4,
  /** Times the worker parked waiting for an answer or ring space, and its spin budget now. */
  WORKER_PARKS: 5, WORKER_SPIN_BUDGET: 6,
  /** Times a posted write or sync request had to wake a parked dispatcher. */
  DOORBELLS: 7,
  /** CPL0 instructions (INT3, FWAIT) the worker completed for a host that cannot (PVM). */
  KERNEL_INSTRUCTIONS_COMPLETED: 8,
  /** Times a waiting worker yielded its core (its spin spent), and yields that lost a slice. */
  WORKER_YIELDS: 9, WORKER_SLICES_LOST: 10,
} as const;

/**
 * Doorbell slots: a sequence bumped on every wake-up, the main thread's parked flag, and its
 * word that the host is contended (the dispatcher lost its core lately: waiters spin short).
 */
export const Doorbell = { SEQUENCE: 0, MAIN_PARKED: 16, CONTENDED: 17 } as const;
export function createDoorbell(): Int32Array {
  // The two words on separate lines: the sequence is bumped by any vCPU, the flag by main.
  return new Int32Array(new SharedArrayBuffer(2 * LINE_INTS * 4));
}

/** A record handed to the consumer; reused, copy what you keep. */
export interface ChannelRecord {
  kind: number;
  size: number;
  /** Port, MSR index or guest-physical address (up to 52 bits). */
  address: number;
  data: number;
  dataHigh: number;
  count: number;
}

const TWO_POW_32 = 2 ** 32;

export class ExitChannel {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly header: Int32Array;
  readonly stats: Float64Array;
  /** Data of a sync string I/O exit. */
  readonly syncData: Uint8Array;
  private readonly ring: Int32Array;
  private readonly spinner: AdaptiveSpinner;
  private readonly doorbell: Int32Array;
  /** Producer only: the head it owns and the last tail it saw (refreshed only when full). */
  private head = 0;
  private cachedTail = 0;
  private readonly halfCapacity: number;
  private syncDataPrefix: Uint8Array | undefined;

  static create(capacity: number, doorbell: Int32Array, spin?: SpinPolicy): ExitChannel {
    // A power of two keeps slot = counter % capacity continuous when the counters wrap.
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 20 || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`exit ring capacity must be a power of two from 1 to ${1 << 20}, got ${capacity}`);
    }
    const buffer = new SharedArrayBuffer(HEADER_BYTES + STATS_BYTES + SYNC_DATA_BYTES + capacity * RECORD_BYTES);
    new Int32Array(buffer)[H.RING_CAPACITY] = capacity;
    return new ExitChannel(buffer, doorbell, spin);
  }

  constructor(buffer: SharedArrayBuffer, doorbell: Int32Array, spin?: SpinPolicy) {
    this.buffer = buffer;
    this.doorbell = doorbell;
    this.header = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.capacity = this.header[H.RING_CAPACITY];
    this.stats = new Float64Array(buffer, HEADER_BYTES, STATS_BYTES / 8);
    this.syncData = new Uint8Array(buffer, HEADER_BYTES + STATS_BYTES, SYNC_DATA_BYTES);
    this.ring = new Int32Array(buffer, HEADER_BYTES + STATS_BYTES + SYNC_DATA_BYTES, this.capacity * RECORD_INTS);
    this.spinner = new AdaptiveSpinner(spin);
    this.halfCapacity = Math.max(1, this.capacity >> 1);
    this.head = Atomics.load(this.header, H.RING_HEAD);
    this.cachedTail = Atomics.load(this.header, H.RING_TAIL);
  }

  /** Publishes this side's spin adaptation (worker side) into the stats. */
  private recordSpin(): void {
    this.stats[Stat.WORKER_PARKS] = this.spinner.parks;
    this.stats[Stat.WORKER_SPIN_BUDGET] = this.spinner.budget;
    this.stats[Stat.WORKER_YIELDS] = this.spinner.yielder.yields;
    this.stats[Stat.WORKER_SLICES_LOST] = this.spinner.yielder.slicesLost;
  }

  private ringDoorbell(): void {
    Atomics.add(this.doorbell, Doorbell.SEQUENCE, 1);
    Atomics.notify(this.doorbell, Doorbell.SEQUENCE);
  }

  // ---- producer side (vCPU worker) ----

  /**
   * Appends a posted write. Waits while the ring is full (backpressure, never loss);
   * returns false if the VM was told to stop, before or while waiting.
   */
  post(kind: number, size: number, address: number, data: number, dataHigh: number): boolean {
    const header = this.header;
    const head = this.head;
    if (((head - this.cachedTail) | 0) >= this.capacity && !this.waitForSpace(head)) return false;
    const at = ((head >>> 0) % this.capacity) * RECORD_INTS;
    const ring = this.ring;
    const high = address >= TWO_POW_32 ? Math.floor(address / TWO_POW_32) : 0;
    ring[at] = kind | (size << 8) | (high << 12);
    ring[at + 1] = address | 0;
    ring[at + 2] = data;
    ring[at + 3] = dataHigh;
    const next = (head + 1) | 0;
    this.head = next;
    Atomics.store(header, H.RING_HEAD, next);
    // A spinning dispatcher polls the rings itself. A parked one is woken when its ring goes
    // from empty to non-empty (it checked every ring after raising its flag, so it cannot
    // miss this one), and again when the batch it lets gather fills half the ring.
    if (Atomics.load(this.doorbell, Doorbell.MAIN_PARKED) !== 0) {
      const occupancy = (next - Atomics.load(header, H.RING_TAIL)) | 0;
      if (occupancy === 1 || occupancy === this.halfCapacity) {
        this.stats[Stat.DOORBELLS]++;
        this.ringDoorbell();
      }
    }
    return true;
  }

  private waitForSpace(head: number): boolean {
    const header = this.header;
    this.cachedTail = Atomics.load(header, H.RING_TAIL);
    if (((head - this.cachedTail) | 0) < this.capacity) return true;
    this.stats[Stat.RING_FULL_WAITS]++;
    this.ringDoorbell();
    this.spinner.contended = Atomics.load(this.doorbell, Doorbell.CONTENDED) !== 0;
    for (;;) {
      const tail = this.cachedTail;
      if (!waitWhileEqual(header, H.RING_TAIL, tail, this.spinner, H.RING_PARKED, H.CONTROL, Control.STOP)) {
        this.recordSpin();
        return false;
      }
      this.recordSpin();
      this.cachedTail = Atomics.load(header, H.RING_TAIL);
      if (((head - this.cachedTail) | 0) < this.capacity) return true;
    }
  }

  /**
   * Publishes an exit that needs an answer and waits for it. Returns an `Answer`: the value
   * of a read is then in `answerLow/High` (and `syncData` for string input). A STOP sent
   * while waiting ends the wait with `Answer.STOPPED` even if nobody answers.
   */
  request(kind: number, size: number, address: number, data: number, dataHigh: number, count: number): number {
    const header = this.header;
    header[H.SYNC_KIND] = kind;
    header[H.SYNC_SIZE] = size;
    header[H.SYNC_ADDRESS_LOW] = address | 0;
    header[H.SYNC_ADDRESS_HIGH] = address >= TWO_POW_32 ? Math.floor(address / TWO_POW_32) : 0;
    header[H.SYNC_DATA_LOW] = data;
    header[H.SYNC_DATA_HIGH] = dataHigh;
    header[H.SYNC_COUNT] = count;
    header[H.SYNC_ANSWER] = Answer.OK;
    Atomics.store(header, H.SYNC_STATE, SyncState.REQUEST);
    if (Atomics.load(this.doorbell, Doorbell.MAIN_PARKED) !== 0) {
      this.stats[Stat.DOORBELLS]++;
      this.ringDoorbell();
    }
    this.spinner.contended = Atomics.load(this.doorbell, Doorbell.CONTENDED) !== 0;
    const answered = waitWhileEqual(header, H.SYNC_STATE, SyncState.REQUEST, this.spinner, H.SYNC_PARKED, H.CONTROL, Control.STOP);
    this.recordSpin();
    if (!answered) {
      // Withdraw the request; if the dispatcher took it meanwhile, its answer is dropped.
      Atomics.compareExchange(header, H.SYNC_STATE, SyncState.REQUEST, SyncState.IDLE);
      return Answer.STOPPED;
    }
    Atomics.store(header, H.SYNC_STATE, SyncState.IDLE);
    return header[H.SYNC_ANSWER];
  }

  /**
   * The first `length` bytes of `syncData` (string input the dispatcher answered). The view
   * is kept while the length repeats, as it does in a `rep insb` loop, so such a loop
   * makes no view per exit.
   */
  syncDataView(length: number): Uint8Array {
    const view = this.syncDataPrefix;
    if (view !== undefined && view.length === length) return view;
    return (this.syncDataPrefix = this.syncData.subarray(0, length));
  }

  get answerLow(): number {
    return this.header[H.SYNC_DATA_LOW];
  }
  get answerHigh(): number {
    return this.header[H.SYNC_DATA_HIGH];
  }

  setWorkerState(state: number): void {
    Atomics.store(this.header, H.WORKER_STATE, state);
    Atomics.notify(this.header, H.WORKER_STATE);
    this.ringDoorbell();
  }

  control(): number {
    return Atomics.load(this.header, H.CONTROL);
  }

  /** Worker: blocks while the VM is paused; returns the control word that ended the pause. */
  waitWhilePaused(): number {
    while (Atomics.load(this.header, H.CONTROL) === Control.PAUSE) {
      Atomics.wait(this.header, H.CONTROL, Control.PAUSE);
    }
    return Atomics.load(this.header, H.CONTROL);
  }

  // ---- consumer side (dispatcher, main thread) ----

  workerState(): number {
    return Atomics.load(this.header, H.WORKER_STATE);
  }

  /** Resolves when the worker's state is `state` (or it exited). */
  async waitForWorkerState(state: number): Promise<void> {
    for (;;) {
      const current = Atomics.load(this.header, H.WORKER_STATE);
      if (current === state || current === WorkerState.EXITED) return;
      const result = Atomics.waitAsync(this.header, H.WORKER_STATE, current, 1000);
      if (result.async) await result.value;
    }
  }

  /**
   * Sets the control word and wakes the worker wherever it waits: paused, for ring space or
   * for an answer. Callers repeat a STOP until the worker has left (a notify that lands just
   * before the worker parks is lost).
   */
  setControl(control: number): void {
    const header = this.header;
    Atomics.store(header, H.CONTROL, control);
    Atomics.notify(header, H.CONTROL);
    if (control === Control.STOP) {
      Atomics.notify(header, H.RING_TAIL);
      Atomics.notify(header, H.SYNC_STATE);
    }
  }

  hasRequest(): boolean {
    return Atomics.load(this.header, H.SYNC_STATE) === SyncState.REQUEST;
  }

  /** True when the ring holds records the consumer has not taken. */
  hasPosted(): boolean {
    return Atomics.load(this.header, H.RING_HEAD) !== this.header[H.RING_TAIL];
  }

  /** Hands every posted record to `consume`, in order; returns how many. */
  drainPosted(consume: (record: ChannelRecord) => void, record: ChannelRecord): number {
    const header = this.header;
    const head = Atomics.load(header, H.RING_HEAD);
    let tail = header[H.RING_TAIL];
    const drained = (head - tail) | 0;
    if (drained === 0) return 0;
    const ring = this.ring;
    const capacity = this.capacity;
    record.count = 1;
    let sincePublish = 0;
    while (tail !== head) {
      const at = ((tail >>> 0) % capacity) * RECORD_INTS;
      const meta = ring[at];
      record.kind = meta & 0xff;
      record.size = (meta >>> 8) & 0xf;
      record.address = (meta >>> 12) * TWO_POW_32 + (ring[at + 1] >>> 0);
      record.data = ring[at + 2] >>> 0;
      record.dataHigh = ring[at + 3] >>> 0;
      tail = (tail + 1) | 0;
      consume(record);
      // In a long batch behind a slow device, let a producer waiting for space resume early.
      if (++sincePublish === TAIL_PUBLISH_EVERY) {
        sincePublish = 0;
        Atomics.store(header, H.RING_TAIL, tail);
        if (Atomics.load(header, H.RING_PARKED) !== 0) Atomics.notify(header, H.RING_TAIL);
      }
    }
    Atomics.store(header, H.RING_TAIL, tail);
    if (Atomics.load(header, H.RING_PARKED) !== 0) Atomics.notify(header, H.RING_TAIL);
    return drained;
  }

  /** Fills `record` from the pending sync request. */
  readRequest(record: ChannelRecord): void {
    const header = this.header;
    record.kind = header[H.SYNC_KIND];
    record.size = header[H.SYNC_SIZE];
    record.address = (header[H.SYNC_ADDRESS_LOW] >>> 0) + header[H.SYNC_ADDRESS_HIGH] * TWO_POW_32;
    record.data = header[H.SYNC_DATA_LOW] >>> 0;
    record.dataHigh = header[H.SYNC_DATA_HIGH] >>> 0;
    record.count = header[H.SYNC_COUNT];
  }

  /** Completes the pending sync request with an `Answer`. */
  complete(low: number, high: number, answer: number = Answer.OK): void {
    const header = this.header;
    header[H.SYNC_DATA_LOW] = low;
    header[H.SYNC_DATA_HIGH] = high;
    header[H.SYNC_ANSWER] = answer;
    // Only if the request is still there: a stopping worker may have withdrawn it.
    if (Atomics.compareExchange(header, H.SYNC_STATE, SyncState.REQUEST, SyncState.DONE) !== SyncState.REQUEST) return;
    if (Atomics.load(header, H.SYNC_PARKED) !== 0) Atomics.notify(header, H.SYNC_STATE);
  }
}
