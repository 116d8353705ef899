/**
 * Ratios between two programs measured interleaved (A B A B ...): run i of one is paired
 * with run i of the other, made in the same round, so a slow drift of a shared machine
 * hits both members of a pair. The ratio reported is the median over pairs, with the
 * min..max of the per-pair ratios as its spread: a single pair can show a gap that is not there.
 */
import type { RatioSpread, RunReport, VsC } from "./json-report.js";

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Median and range of `values`; null when there are none (or any is not finite). */
export function ratioSpread(values: readonly number[]): RatioSpread | null {
  if (values.length === 0 || values.some((v) => !Number.isFinite(v))) return null;
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), per_pair: [...values] };
}

/** Pairs `runs[i]` with `baseline[i]` (the same round) for each figure the targets judge. */
export function pairedRatios(runs: readonly RunReport[], baseline: readonly RunReport[]): VsC | null {
  const pairs = Math.min(runs.length, baseline.length);
  if (pairs === 0) return null;
  const ratios = (of: (r: RunReport) => number) =>
    ratioSpread(Array.from({ length: pairs }, (_, i) => of(runs[i]) / of(baseline[i])));
  return {
    pairs,
    mean: ratios((r) => r.mean_ns),
    p50: ratios((r) => r.p50_ns),
    p99: ratios((r) => r.p99_ns),
    exits_per_s: ratios((r) => r.exits_per_s),
  };
}
