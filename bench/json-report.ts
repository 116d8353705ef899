/**
 * The suite's report: the shape of `--json` output (and what the table and the SVG are
 * drawn from). Every figure carries its raw per-run samples, marker costs and busy time,
 * so each mean, percentile, rate and ratio can be recomputed from the file.
 */
import type { VmexitReport } from "./vmexit-kernel.js";
import { readFileSync, writeFileSync } from "node:fs";
import type { ExitKindName, GuestPrivilege, PathName } from "./figures.js";
import type { MachineInfo } from "./machine-info.js";

export const REPORT_SCHEMA = "workervisor-bench/1";

export interface SpinReport {
  worker_min_spins: number;
  worker_max_spins: number;
  /** A worker park shorter than this grows its spin budget; a longer one shrinks it. */
  worker_short_park_us: number;
  /** Core yields after the spin, before a worker parks. */
  worker_yields: number;
  dispatcher_spin_us: number;
  dispatcher_yield_after_ms: number;
  ring_capacity: number;
}

export interface RunReport {
  mean_ns: number;
  p50_ns: number;
  p99_ns: number;
  p999_ns: number;
  exits_per_s: number;
  /** Median marker cost of each vCPU, subtracted from every batch. */
  marker_ns: number[];
  exits: number;
  busy_ns: number;
  main_cpu_ns: number | null;
  /** Times the vCPU workers parked waiting for the main thread, and their spin budgets at the end. */
  worker_parks: number | null;
  worker_spin_budgets: number[] | null;
  /** One per measured batch (all vCPUs): (interval - marker) / K, ns. */
  samples_ns: number[];
}

/** A ratio over interleaved pairs of runs: its median and the range of the per-pair values. */
export interface RatioSpread {
  median: number;
  min: number;
  max: number;
  per_pair: number[];
}

/** This figure against the C baseline, run i paired with C's run i (same round). */
export interface VsC {
  pairs: number;
  /** Per-exit mean, p50 and p99 (lower is better), and exits/s (higher is better), figure / C. */
  mean: RatioSpread | null;
  p50: RatioSpread | null;
  p99: RatioSpread | null;
  exits_per_s: RatioSpread | null;
}

export interface FigureResult {
  kind: ExitKindName;
  path: PathName;
  privilege: GuestPrivilege;
  vcpus: number;
  samples: number;
  mean_ns: number;
  p50_ns: number;
  p99_ns: number | null;
  p999_ns: number | null;
  /** Aggregate over all vCPUs. */
  exits_per_s: number;
  main_cpu_ns_per_exit: number | null;
  /**
   * mean / the C baseline's mean for the same kind, privilege and vCPU count: the median over
   * interleaved pairs of runs (vs_c.mean); ratio_to_c_p50 likewise for p50.
   */
  ratio_to_c: number | null;
  ratio_to_c_p50: number | null;
  /** Every ratio to C with its spread over the interleaved pairs; absent without a C baseline. */
  vs_c?: VsC | null;
  /** main-coalesced: writes delivered from the kernel's queue, writes that exited on a full queue, zones the host took. */
  coalesced?: { delivered: number; full_queue_exits: number; zones: number };
  /** (max - min) / median of the per-run medians, percent. */
  spread_pct: number;
  ops_per_batch: number;
  guest_iterations: number;
  device_counted: number | null;
  counted_by: string;
  unexplained_exits: number;
  spin: SpinReport | null;
  runs: RunReport[];
  error?: string;
}

export interface StartResult {
  mode: "cold" | "warm" | "c";
  description: string;
  samples: number;
  mean_ns: number;
  p50_ns: number;
  p99_ns: number;
  p999_ns: number;
  ratio_to_c: number | null;
  samples_ns: number[];
}

/** An idle VM: main-thread wake-ups while the guest spins without exits. */
export interface IdleResult {
  mode: "spinning" | "coalesced-zone";
  /** Wall time counted over. */
  seconds: number;
  main_wakeups: number;
  wakeups_per_s: number;
  /** Futex wakes the vCPUs rang, and userspace exits, in the same window (both should be 0). */
  doorbells: number;
  exits: number;
  coalesced_zones: number;
  /** coalesced-zone: writes the counter had when pause() resolved (the guest made 1). */
  delivered: number | null;
}

export interface TargetResult {
  target: string;
  figure: string;
  value: number | null;
  limit: number;
  comparison: "<=" | ">=";
  met: boolean | null;
  detail: string;
}

export interface BenchReport {
  schema: string;
  generated: string;
  command: string;
  machine: MachineInfo;
  method: Record<string, string>;
  settings: {
    quick: boolean;
    repeats: number;
    warmup_batches: number;
    calibration_rounds: number;
    measured_batches: number | "from --iterations";
    spin: SpinReport;
  };
  results: FigureResult[];
  baselines: {
    c: FigureResult[];
    c_status: string;
    qemu: FigureResult[];
    qemu_status: string;
  };
  vm_start: StartResult[];
  /** Idle VMs; empty when skipped (absent in reports from before the figure existed). */
  idle_vm?: IdleResult[];
  /** kvm-unit-tests' vmexit kernel under workervisor and QEMU; null when skipped or missing. */
  kvm_unit_tests_vmexit: VmexitReport | null;
  kvm_unit_tests_vmexit_status: string;
  targets: TargetResult[];
  /** Wall time of the whole suite, seconds. */
  wall_s: number;
}

export const METHOD: Record<string, string> = {
  latency:
    "calibrated batch means: the guest writes a marker port before each batch of K unrolled measured " +
    "instructions; the vCPU thread timestamps it (CLOCK_MONOTONIC; process.hrtime in JS, clock_gettime in C) " +
    "and nothing else. Marker-only calibration rounds in the same run give the marker cost m (median); each " +
    "batch gives one sample (interval - m) / K. Same guest bytes and same analysis for JS and C.",
  percentiles: "nearest-rank over the batch-mean samples of all runs pooled (p99 = 99th percentile of K-exit means)",
  exits_per_s: "measured exits of all vCPUs / (makespan - B * m); makespan ends when the main thread has handled every posted write",
  main_cpu: "CLOCK_THREAD_CPUTIME_ID of the main thread between the first and last measured marker, per measured exit",
  spread: "(max - min) / median of the per-run medians, percent",
  pairs:
    "C and the JS paths of a group run interleaved, one run each per round (the order rotating); run i of a JS " +
    "figure and run i of C form a pair; ratio_to_c and vs_c are medians of the per-pair ratios, with their min..max",
  coalesced: "main-coalesced: writes KVM queued in the kernel plus those that exited on a full queue; exits_per_s is guest writes/s",
  idle_vm: "vm.stats.mainWakeups over about a second of a guest spinning without exits, after 0.5 s to settle",
  warmup: "warm-up batches run before calibration and are discarded",
  counts: "device-counted exits (counter device, eventfd, HLT count) are checked against the guest's loop counts",
  qemu: "per exit from the difference of two iteration counts (K and 0 exits per round), timed by marker bytes on isa-debugcon read through a pipe; no per-exit distribution",
  vm_start: "Vm.create to the guest's first exit (its barrier read, timestamped on the vCPU thread); C: open(/dev/kvm) to the same exit",
  pvm:
    "on kvm-pvm hosts CPL0 guest code is emulated (~1 us per instruction, loop code included in every figure) and CPL3 " +
    "code runs natively but each exit from it is costlier",
};

/** Nanoseconds to 0.1 ns, small values (ratios, percentages) to 6 significant digits. */
function round(value: number): number {
  return Math.abs(value) >= 1000 ? Math.round(value * 10) / 10 : Number(value.toPrecision(6));
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "number" && !Number.isInteger(value)) return Number.isFinite(value) ? round(value) : null;
  return value;
}

export function writeJsonReport(path: string, report: BenchReport): void {
  writeFileSync(path, JSON.stringify(report, replacer, 1) + "\n");
}

/** Reads a report written by `--json` (for `--from`: re-render without measuring). */
export function readJsonReport(path: string): BenchReport {
  const report = JSON.parse(readFileSync(path, "utf8")) as BenchReport;
  if (report.schema !== REPORT_SCHEMA) {
    throw new Error(`${path} is not a workervisor bench report (schema ${String(report.schema)}, expected ${REPORT_SCHEMA})`);
  }
  return report;
}
