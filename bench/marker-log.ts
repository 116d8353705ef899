/**
 * The marker log: where the vCPU threads of a JS run record the guest's batch markers,
 * in one SharedArrayBuffer readable by the main thread afterwards.
 *
 *   Int32 header: ARRIVED (start barrier), VCPUS, PHASE (0 before, 1 measuring, 2 done),
 *                 MEASURE_FROM / MEASURE_TO (vCPU 0's marker indexes that move PHASE),
 *                 then one marker count per vCPU
 *   Float64 arrivals: when each vCPU reached the start barrier (its first exit)
 *   Float64 times: `capacity` timestamps per vCPU
 * All timestamps are process.hrtime nanoseconds (CLOCK_MONOTONIC, the clock the C
 * baseline reads, the same in every thread).
 *
 * PHASE lets the main thread read its own CPU clock just as the measured batches begin and
 * end, without polling.
 */
import { threadCpuNs } from "../runtime/thread-cpu.js";

export const MAX_MARKER_VCPUS = 64;
const H = { ARRIVED: 0, VCPUS: 1, PHASE: 2, MEASURE_FROM: 3, MEASURE_TO: 4, BARRIER_TIMEOUT_MS: 5, COUNTS: 8 } as const;
const HEADER_INTS = H.COUNTS + MAX_MARKER_VCPUS;
const HEADER_BYTES = HEADER_INTS * 4 + MAX_MARKER_VCPUS * 8;

export const Phase = { BEFORE: 0, MEASURING: 1, DONE: 2 } as const;

export class MarkerLog {
  readonly buffer: SharedArrayBuffer;
  readonly header: Int32Array;
  readonly times: Float64Array;
  readonly arrivals: Float64Array;
  readonly capacity: number;

  /**
   * `measureFrom`/`measureTo`: indexes of vCPU 0's first measured marker and final marker.
   * `barrierTimeoutMs`: how long a vCPU waits at the start barrier before running on.
   */
  static create(vcpus: number, capacity: number, measureFrom: number, measureTo: number, barrierTimeoutMs = 30_000): MarkerLog {
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_MARKER_VCPUS) {
      throw new RangeError(`marker log holds 1 to ${MAX_MARKER_VCPUS} vCPUs, got ${vcpus}`);
    }
    const buffer = new SharedArrayBuffer(HEADER_BYTES + vcpus * capacity * 8);
    const header = new Int32Array(buffer, 0, HEADER_INTS);
    header[H.VCPUS] = vcpus;
    header[H.MEASURE_FROM] = measureFrom;
    header[H.MEASURE_TO] = measureTo;
    header[H.BARRIER_TIMEOUT_MS] = barrierTimeoutMs;
    return new MarkerLog(buffer);
  }

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.header = new Int32Array(buffer, 0, HEADER_INTS);
    const vcpus = this.header[H.VCPUS];
    this.capacity = (buffer.byteLength - HEADER_BYTES) / 8 / vcpus;
    this.arrivals = new Float64Array(buffer, HEADER_INTS * 4, MAX_MARKER_VCPUS);
    this.times = new Float64Array(buffer, HEADER_BYTES, vcpus * this.capacity);
  }

  get vcpus(): number {
    return this.header[H.VCPUS];
  }

  /** Markers vCPU `index` wrote (may exceed capacity; only `capacity` are kept). */
  count(index: number): number {
    return Atomics.load(this.header, H.COUNTS + index);
  }

  /** The kept timestamps of vCPU `index`. */
  marks(index: number): Float64Array {
    const n = Math.min(this.count(index), this.capacity);
    return this.times.slice(index * this.capacity, index * this.capacity + n);
  }

  /** vCPU thread: timestamps marker `index`'s next mark. Allocates one BigInt, nothing else. */
  mark(index: number): void {
    const header = this.header;
    const n = header[H.COUNTS + index];
    if (n < this.capacity) this.times[index * this.capacity + n] = Number(process.hrtime.bigint());
    header[H.COUNTS + index] = n + 1;
    if (index === 0 && (n === header[H.MEASURE_FROM] || n === header[H.MEASURE_TO])) {
      Atomics.store(header, H.PHASE, n === header[H.MEASURE_FROM] ? Phase.MEASURING : Phase.DONE);
      Atomics.notify(header, H.PHASE);
    }
  }

  /** vCPU thread: blocks until every vCPU has arrived (or the timeout passes). */
  arriveAndWait(index: number): void {
    this.arrivals[index] = Number(process.hrtime.bigint());
    const header = this.header;
    const vcpus = header[H.VCPUS];
    const deadline = Date.now() + header[H.BARRIER_TIMEOUT_MS];
    if (Atomics.add(header, H.ARRIVED, 1) + 1 >= vcpus) {
      Atomics.notify(header, H.ARRIVED);
      return;
    }
    for (;;) {
      const arrived = Atomics.load(header, H.ARRIVED);
      const left = deadline - Date.now();
      if (arrived >= vcpus || left <= 0) return;
      Atomics.wait(header, H.ARRIVED, arrived, left);
    }
  }

  reached(phase: number): boolean {
    return Atomics.load(this.header, H.PHASE) >= phase;
  }

  /** Main thread: resolves once PHASE has reached `phase`. */
  async phaseReached(phase: number): Promise<void> {
    for (;;) {
      const current = Atomics.load(this.header, H.PHASE);
      if (current >= phase) return;
      const wait = Atomics.waitAsync(this.header, H.PHASE, current);
      if (wait.async) await wait.value;
    }
  }
}

/**
 * Main-thread CPU time (ns) spent while the guest is in its measured phase: resolves once
 * the log reaches DONE.
 */
export async function mainCpuWhileMeasuring(log: MarkerLog): Promise<number> {
  await log.phaseReached(Phase.MEASURING);
  const from = threadCpuNs();
  await log.phaseReached(Phase.DONE);
  return threadCpuNs() - from;
}
