/**
 * The per-vCPU exit channel (DESIGN section 4): a sync mailbox for exits that need an
 * answer and a posted SPSC ring for writes that do not, in one SharedArrayBuffer, plus a
 * doorbell word shared by every vCPU of a VM.
 *
 * Producer: the vCPU worker. Consumer: the dispatcher on the main thread. Records carry
 * exit kinds as small integers; this module does not interpret them.
 */
import { AdaptiveSpinner, type SpinPolicy, waitWhileEqual } from "./waiter.js";

/** Int32 slots of the header. */
const H = {
  SYNC_STATE: 0,
  SYNC_PARKED: 1,
  SYNC_KIND: 2,
  SYNC_SIZE: 3,
  SYNC_ADDRESS_LOW: 4,
  SYNC_ADDRESS_HIGH: 5,
  SYNC_DATA_LOW: 6,
  SYNC_DATA_HIGH: 7,
  SYNC_COUNT: 8,
  SYNC_FAILED: 9,
  RING_HEAD: 10,
  RING_TAIL: 11,
  RING_PARKED: 12,
  THREAD_ID: 13,
  CONTROL: 14,
  CONTROL_PARKED: 15,
  WORKER_STATE: 16,
  RING_CAPACITY: 17,
} as const;
const HEADER_BYTES = 128;
/** Float64 statistics written by the worker only. */
const STATS_BYTES = 64;
/** String I/O data of a sync exit; KVM hands at most a page of it per exit. */
export const SYNC_DATA_BYTES = 4096;
const RECORD_INTS = 4;
const RECORD_BYTES = RECORD_INTS * 4;

const SyncState = { IDLE: 0, REQUEST: 1, DONE: 2 } as const;

export const Control = { RUN: 0, PAUSE: 1, STOP: 2 } as const;
export const WorkerState = { STARTING: 0, RUNNING: 1, PAUSED: 2, EXITED: 3 } as const;

export const Stat = {
  EXITS: 0, IN_WORKER: 1, SYNC: 2, POSTED: 3, RING_FULL_WAITS: 4,
  /** Times the worker parked waiting for an answer or ring space, and its spin budget now. */
  WORKER_PARKS: 5, WORKER_SPIN_BUDGET: 6,
  /** CPL0 instructions (INT3, FWAIT) the worker completed for a host that cannot (PVM). */
  KERNEL_INSTRUCTIONS_COMPLETED: 7,
} as const;

/** Doorbell slots: a sequence bumped on every publish, and the main thread's parked flag. */
export const Doorbell = { SEQUENCE: 0, MAIN_PARKED: 1 } as const;
export function createDoorbell(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(8));
}

/** A record handed to the consumer; reused, copy what you keep. */
export interface ChannelRecord {
  kind: number;
  size: number;
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
  /** Posted records wake a parked dispatcher only from this ring occupancy on (batching). */
  private readonly postedWakeThreshold: number;

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
    this.postedWakeThreshold = Math.max(1, this.capacity >> 1);
  }

  /** Publishes this side's spin adaptation (worker side) into the stats. */
  private recordSpin(): void {
    this.stats[Stat.WORKER_PARKS] = this.spinner.parks;
    this.stats[Stat.WORKER_SPIN_BUDGET] = this.spinner.budget;
  }

  private ringDoorbell(): void {
    Atomics.add(this.doorbell, Doorbell.SEQUENCE, 1);
    if (Atomics.load(this.doorbell, Doorbell.MAIN_PARKED) !== 0) Atomics.notify(this.doorbell, Doorbell.SEQUENCE);
  }

  // ---- producer side (vCPU worker) ----

  /**
   * Appends a posted write. Waits while the ring is full (backpressure, never loss);
   * returns false if the VM was told to stop while waiting.
   */
  post(kind: number, size: number, address: number, data: number, dataHigh: number): boolean {
    const header = this.header;
    const head = header[H.RING_HEAD];
    if (((head - Atomics.load(header, H.RING_TAIL)) | 0) >= this.capacity) {
      this.stats[Stat.RING_FULL_WAITS]++;
      this.ringDoorbell();
      for (;;) {
        const tail = Atomics.load(header, H.RING_TAIL);
        if (((head - tail) | 0) < this.capacity) break;
        if (Atomics.load(header, H.CONTROL) === Control.STOP) return false;
        waitWhileEqual(header, H.RING_TAIL, tail, this.spinner, H.RING_PARKED);
        this.recordSpin();
      }
    }
    const at = ((head >>> 0) % this.capacity) * RECORD_INTS;
    const ring = this.ring;
    ring[at] = kind | (size << 8);
    ring[at + 1] = address;
    ring[at + 2] = data;
    ring[at + 3] = dataHigh;
    Atomics.store(header, H.RING_HEAD, (head + 1) | 0);
    // A spinning dispatcher polls the rings itself, and a parked one wakes on its flush
    // timer: posted writes cost no futex wake until the ring is half full.
    if (
      Atomics.load(this.doorbell, Doorbell.MAIN_PARKED) !== 0 &&
      ((head + 1 - Atomics.load(header, H.RING_TAIL)) | 0) >= this.postedWakeThreshold
    ) {
      this.ringDoorbell();
    }
    return true;
  }

  /**
   * Publishes an exit that needs an answer and waits for it. Returns false if the
   * dispatcher failed the request (the VM is stopping); the answer is in `answerLow/High`
   * (and `syncData` for string input).
   */
  request(kind: number, size: number, address: number, data: number, dataHigh: number, count: number): boolean {
    const header = this.header;
    header[H.SYNC_KIND] = kind;
    header[H.SYNC_SIZE] = size;
    header[H.SYNC_ADDRESS_LOW] = address | 0;
    header[H.SYNC_ADDRESS_HIGH] = Math.floor(address / TWO_POW_32);
    header[H.SYNC_DATA_LOW] = data;
    header[H.SYNC_DATA_HIGH] = dataHigh;
    header[H.SYNC_COUNT] = count;
    header[H.SYNC_FAILED] = 0;
    Atomics.store(header, H.SYNC_STATE, SyncState.REQUEST);
    this.ringDoorbell();
    waitWhileEqual(header, H.SYNC_STATE, SyncState.REQUEST, this.spinner, H.SYNC_PARKED);
    Atomics.store(header, H.SYNC_STATE, SyncState.IDLE);
    this.recordSpin();
    return header[H.SYNC_FAILED] === 0;
  }

  get answerLow(): number {
    return this.header[H.SYNC_DATA_LOW];
  }
  get answerHigh(): number {
    return this.header[H.SYNC_DATA_HIGH];
  }

  setThreadId(tid: number): void {
    Atomics.store(this.header, H.THREAD_ID, tid);
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

  threadId(): number {
    return Atomics.load(this.header, H.THREAD_ID);
  }

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

  setControl(control: number): void {
    Atomics.store(this.header, H.CONTROL, control);
    Atomics.notify(this.header, H.CONTROL);
    if (control === Control.STOP) {
      // Wake a worker parked on a full ring so it sees the stop.
      Atomics.notify(this.header, H.RING_TAIL);
    }
  }

  hasRequest(): boolean {
    return Atomics.load(this.header, H.SYNC_STATE) === SyncState.REQUEST;
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
    while (tail !== head) {
      const at = ((tail >>> 0) % capacity) * RECORD_INTS;
      const meta = ring[at];
      record.kind = meta & 0xff;
      record.size = meta >>> 8;
      record.address = ring[at + 1] >>> 0;
      record.data = ring[at + 2] >>> 0;
      record.dataHigh = ring[at + 3] >>> 0;
      tail = (tail + 1) | 0;
      consume(record);
      // Free the slot as we go so a producer waiting on a full ring resumes early.
      Atomics.store(header, H.RING_TAIL, tail);
    }
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

  /** Completes the pending sync request; `failed` tells the worker to stop. */
  complete(low: number, high: number, failed = false): void {
    const header = this.header;
    header[H.SYNC_DATA_LOW] = low;
    header[H.SYNC_DATA_HIGH] = high;
    header[H.SYNC_FAILED] = failed ? 1 : 0;
    Atomics.store(header, H.SYNC_STATE, SyncState.DONE);
    if (Atomics.load(header, H.SYNC_PARKED) !== 0) Atomics.notify(header, H.SYNC_STATE);
  }
}
