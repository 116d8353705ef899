/**
 * From runs to report figures: pools each figure's runs (bench/stats.ts) into the JSON
 * shape (bench/json-report.ts), for JS, C, QEMU and VM start alike.
 */
import { countedBy, type RunCheck } from "./accounting.js";
import type { FigureKey, RunCounts } from "./figures.js";
import type { FigureResult, RunReport, SpinReport, StartResult } from "./json-report.js";
import type { QemuFigure } from "./qemu-peer.js";
import type { VmStats } from "../runtime/vm.js";
import { mean, percentile, poolRuns, type RunAnalysis, spread } from "./stats.js";

/** Everything measured for one figure so far. */
export interface Collected {
  spec: FigureKey & { path: FigureResult["path"] };
  counts: RunCounts;
  analyses: RunAnalysis[];
  reports: RunReport[];
  checks: RunCheck[];
  error?: string;
}

export function runReport(a: RunAnalysis, mainCpuNs: number | null, stats?: VmStats): RunReport {
  return {
    mean_ns: a.meanNs,
    p50_ns: a.p50Ns,
    p99_ns: a.p99Ns,
    p999_ns: a.p999Ns,
    exits_per_s: a.exitsPerS,
    marker_ns: a.markerNs,
    exits: a.exits,
    busy_ns: a.busyNs,
    main_cpu_ns: mainCpuNs,
    worker_parks: stats?.workerParks ?? null,
    worker_spin_budgets: stats?.workerSpinBudgets ?? null,
    samples_ns: Array.from(a.samples),
  };
}

function coalescedTotals(checks: readonly RunCheck[]): Pick<FigureResult, "coalesced"> {
  const runs = checks.map((x) => x.coalesced).filter((x) => x !== undefined);
  if (runs.length === 0) return {};
  return {
    coalesced: {
      delivered: runs.reduce((n, x) => n + x.delivered, 0),
      full_queue_exits: runs.reduce((n, x) => n + x.fullQueueExits, 0),
      zones: Math.min(...runs.map((x) => x.zones)),
    },
  };
}

/** Pools a figure's runs; a figure whose every run failed carries only its error. */
export function toResult(c: Collected, spin: SpinReport | null): FigureResult {
  const base = {
    ...c.spec,
    ops_per_batch: c.counts.opsPerBatch,
    guest_iterations: c.checks.reduce((n, x) => n + x.iterations, 0),
    device_counted: c.checks.length === 0 || c.checks.some((x) => x.counted === null) ? null : c.checks.reduce((n, x) => n + x.counted!, 0),
    counted_by: c.checks[0]?.countedBy ?? countedBy(c.spec.kind, c.spec.path),
    unexplained_exits: c.checks.reduce((n, x) => n + x.unexplainedExits, 0),
    spin,
    ratio_to_c: null,
    ratio_to_c_p50: null,
    ...coalescedTotals(c.checks),
  };
  if (c.analyses.length === 0) {
    return {
      ...base, samples: 0, mean_ns: NaN, p50_ns: NaN, p99_ns: null, p999_ns: null, exits_per_s: NaN,
      main_cpu_ns_per_exit: null, spread_pct: NaN, runs: [], error: c.error ?? "no run completed",
    };
  }
  const pooled = poolRuns(c.analyses);
  return {
    ...base,
    samples: pooled.samples,
    mean_ns: pooled.meanNs,
    p50_ns: pooled.p50Ns,
    p99_ns: pooled.p99Ns,
    p999_ns: pooled.p999Ns,
    exits_per_s: pooled.exitsPerS,
    main_cpu_ns_per_exit: pooled.mainCpuNsPerExit,
    spread_pct: pooled.spreadPct,
    runs: c.reports,
    ...(c.error !== undefined ? { error: c.error } : {}),
  };
}

/** A QEMU figure: repeat means only, so no percentiles beyond the median. */
export function qemuResult(f: QemuFigure, cResults: readonly FigureResult[]): FigureResult {
  const base = cResults.find((b) => b.kind === f.kind && b.privilege === f.privilege && b.vcpus === 1 && b.error === undefined);
  return {
    kind: f.kind,
    path: "qemu",
    privilege: f.privilege,
    vcpus: 1,
    samples: f.repeatsNs.length,
    mean_ns: f.meanNs,
    p50_ns: f.p50Ns,
    p99_ns: null,
    p999_ns: null,
    exits_per_s: 1e9 / f.meanNs,
    main_cpu_ns_per_exit: null,
    ratio_to_c: base ? f.meanNs / base.mean_ns : null,
    ratio_to_c_p50: base ? f.p50Ns / base.p50_ns : null,
    spread_pct: spread(f.repeatsNs),
    ops_per_batch: f.counts.opsPerBatch,
    guest_iterations: f.repeatsNs.length * (f.counts.warmupBatches + f.counts.measuredBatches) * f.counts.opsPerBatch,
    device_counted: null,
    counted_by: "none (QEMU has no counter device; marker bytes checked)",
    unexplained_exits: 0,
    spin: null,
    // One "run" per repeat: its per-exit estimate (exits / busy time gives the same figure).
    runs: f.repeatsNs.map((ns) => {
      const exits = f.counts.measuredBatches * f.counts.opsPerBatch;
      return {
        mean_ns: ns, p50_ns: ns, p99_ns: ns, p999_ns: ns, exits_per_s: 1e9 / ns, marker_ns: [], exits,
        busy_ns: ns * exits, main_cpu_ns: null, worker_parks: null, worker_spin_budgets: null, samples_ns: [ns],
      };
    }),
  };
}

export function startResult(mode: StartResult["mode"], samplesNs: number[], cMedian: number | undefined): StartResult {
  const sorted = [...samplesNs].sort((a, b) => a - b);
  const descriptions = {
    cold: "fresh pool: thread start, module load",
    warm: "warm piscina pool",
    c: "C: open(/dev/kvm) to first exit",
  };
  const p50 = percentile(sorted, 50);
  return {
    mode,
    description: descriptions[mode],
    samples: sorted.length,
    mean_ns: mean(sorted),
    p50_ns: p50,
    p99_ns: percentile(sorted, 99),
    p999_ns: percentile(sorted, 99.9),
    ratio_to_c: cMedian === undefined || mode === "c" ? null : p50 / cMedian,
    samples_ns: samplesNs,
  };
}
