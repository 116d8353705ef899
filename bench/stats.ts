/**
 * From marker timestamps to per-exit figures, the same code for JS and C runs.
 *
 * Method ("calibrated batch means"): the guest writes a marker port before each batch of K
 * unrolled measured instructions; the vCPU thread timestamps the marker and nothing else.
 * A batch interval is (marker exit + K exits). Calibration rounds (a marker with K = 0,
 * same loop code) measured in the same run give the marker's own cost m (their median).
 * Each measured batch yields one sample, (interval - m) / K: the mean per-exit latency of
 * that batch. Percentiles are nearest-rank over those samples, so p99 is "the 99th
 * percentile of 16-exit batch means", not of single exits; the mean is exact.
 * Throughput: measured exits / (makespan - B * m), where the makespan runs from the first
 * measured marker to the final marker or, when later, to the moment the main thread had
 * handled every posted write (so a ring that still holds records does not flatter it).
 */
import type { RunCounts } from "./figures.js";

export interface RawRun {
  counts: RunCounts;
  /** Marker timestamps (ns, CLOCK_MONOTONIC) of each vCPU, in order. */
  marks: ArrayLike<number>[];
  /** When every measured exit had been handled, if that can be after the final marker. */
  drainedAt?: number;
  /** Main-thread CPU time (ns) from the first measured marker to the final one; null: n/a. */
  mainCpuNs: number | null;
}

export interface RunAnalysis {
  samples: Float64Array;
  /** Median marker cost per vCPU (ns). */
  markerNs: number[];
  exits: number;
  busyNs: number;
  exitsPerS: number;
  meanNs: number;
  p50Ns: number;
  p99Ns: number;
  p999Ns: number;
  mainCpuNsPerExit: number | null;
}

export class MarkerCountError extends Error {
  override name = "MarkerCountError";
}

/** Nearest-rank percentile of ascending `sorted` (p in 0..100). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return percentile(sorted, 50);
}

export function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  return values.length === 0 ? NaN : sum / values.length;
}

export function expectedMarkers(counts: RunCounts): number {
  return counts.warmupBatches + counts.calibrationRounds + counts.measuredBatches + 1;
}

export function analyzeRun(run: RawRun): RunAnalysis {
  const { opsPerBatch: k, warmupBatches: w, calibrationRounds: c, measuredBatches: b } = run.counts;
  const expected = expectedMarkers(run.counts);
  const samples = new Float64Array(b * run.marks.length);
  const markerNs: number[] = [];
  let start = Infinity;
  let end = -Infinity;
  run.marks.forEach((marks, vcpu) => {
    if (marks.length !== expected) {
      throw new MarkerCountError(`vCPU ${vcpu} left ${marks.length} markers, expected ${expected} (W ${w} + C ${c} + B ${b} + 1)`);
    }
    const calibration: number[] = [];
    for (let j = 0; j < c; j++) calibration.push(marks[w + j + 1] - marks[w + j]);
    const m = median(calibration);
    markerNs.push(m);
    for (let j = 0; j < b; j++) samples[vcpu * b + j] = (marks[w + c + j + 1] - marks[w + c + j] - m) / k;
    start = Math.min(start, marks[w + c]);
    end = Math.max(end, marks[w + c + b]);
  });
  if (run.drainedAt !== undefined && run.drainedAt > end) end = run.drainedAt;
  const exits = b * k * run.marks.length;
  const busyNs = end - start - b * mean(markerNs);
  const sorted = Float64Array.from(samples).sort();
  return {
    samples,
    markerNs,
    exits,
    busyNs,
    exitsPerS: (exits / busyNs) * 1e9,
    meanNs: mean(samples),
    p50Ns: percentile(sorted, 50),
    p99Ns: percentile(sorted, 99),
    p999Ns: percentile(sorted, 99.9),
    mainCpuNsPerExit: run.mainCpuNs === null ? null : run.mainCpuNs / exits,
  };
}

export interface PooledFigure {
  samples: number;
  meanNs: number;
  p50Ns: number;
  p99Ns: number;
  p999Ns: number;
  exitsPerS: number;
  mainCpuNsPerExit: number | null;
  /** (max - min) / median of the per-run medians, in percent. */
  spreadPct: number;
  /** All samples, sorted (for plots). */
  sorted: Float64Array;
}

/** Pools the samples of repeated runs of one figure. */
export function poolRuns(runs: readonly RunAnalysis[]): PooledFigure {
  const total = runs.reduce((n, r) => n + r.samples.length, 0);
  const all = new Float64Array(total);
  let at = 0;
  for (const r of runs) {
    all.set(r.samples, at);
    at += r.samples.length;
  }
  const meanNs = mean(all);
  const sorted = all.sort();
  const exits = runs.reduce((n, r) => n + r.exits, 0);
  const busy = runs.reduce((n, r) => n + r.busyNs, 0);
  const cpu = runs.every((r) => r.mainCpuNsPerExit !== null)
    ? runs.reduce((n, r) => n + r.mainCpuNsPerExit! * r.exits, 0) / exits
    : null;
  return {
    samples: total,
    meanNs,
    p50Ns: percentile(sorted, 50),
    p99Ns: percentile(sorted, 99),
    p999Ns: percentile(sorted, 99.9),
    exitsPerS: (exits / busy) * 1e9,
    mainCpuNsPerExit: cpu,
    spreadPct: spread(runs.map((r) => r.p50Ns)),
    sorted,
  };
}

/** (max - min) / median, in percent; 0 for a single value. */
export function spread(values: readonly number[]): number {
  if (values.length < 2) return 0;
  const m = median([...values]);
  return ((Math.max(...values) - Math.min(...values)) / m) * 100;
}
