/**
 * Runs the whole suite: for each (kind, privilege, vCPUs) group, the C baseline and every
 * JS path, interleaved repeat by repeat so slow drifts of a shared machine hit all of them;
 * then VM start and the QEMU peer. Returns the report the table, JSON and SVG are made of.
 */
import { existsSync } from "node:fs";
import { DEFAULT_VMEXIT_KERNEL, measureVmexit, QUICK_VMEXIT_SUBTESTS, VMEXIT_SUBTESTS, type VmexitReport } from "./vmexit-kernel.js";
import { destroyVcpuPool, warmVcpuPool } from "../runtime/vcpu-pool.js";
import { type BenchOptions, opsPerBatchFor } from "./bench-options.js";
import { buildCBaseline, type CBaseline, removeCBaseline } from "./c-baseline.js";
import { cCheck, runCFigure } from "./c-runner.js";
import { type FigureKey, type FigureSpec, figureGroups, keyOf, planFigures, type RunCounts } from "./figures.js";
import { type FigureRun, runJsFigure } from "./js-runner.js";
import { runPostMessageFigure } from "./postmessage-runner.js";
import { analyzeRun, percentile } from "./stats.js";
import { measureVmStart } from "./vm-start.js";
import { measureIdleVm } from "./idle-vm.js";
import { findQemu, mergeQemuRuns, qemuPrograms, type QemuRun, runQemuPeer } from "./qemu-peer.js";
import { machineInfo } from "./machine-info.js";
import { evaluateTargets, figureName } from "./targets.js";
import { type BenchReport, type FigureResult, type IdleResult, METHOD, type RunReport, REPORT_SCHEMA, type SpinReport, type StartResult } from "./json-report.js";
import { pairedRatios } from "./paired-ratios.js";
import { type Collected, qemuResult, runReport, startResult, toResult } from "./results.js";

type Progress = (line: string) => void;

/** How long each idle VM is watched once idle. */
const IDLE_SECONDS = 1;

export function countsFor(kind: FigureKey["kind"], options: BenchOptions): RunCounts {
  const k = opsPerBatchFor(kind, options);
  return {
    opsPerBatch: k,
    warmupBatches: options.warmupBatches,
    calibrationRounds: options.calibrationRounds,
    measuredBatches: options.iterations !== undefined ? Math.max(1, Math.ceil(options.iterations / k)) : options.measuredBatches,
  };
}

function runFigure(spec: FigureSpec, counts: RunCounts, options: BenchOptions): Promise<FigureRun> {
  if (spec.path === "postmessage") return runPostMessageFigure(spec, counts);
  return runJsFigure(spec, counts, { spin: options.spin, dispatcher: options.dispatcher, ringCapacity: options.ringCapacity });
}

export async function runSuite(options: BenchOptions, progress: Progress): Promise<BenchReport> {
  const began = performance.now();
  const spin: SpinReport = {
    worker_min_spins: options.spin.minSpins,
    worker_max_spins: options.spin.maxSpins,
    worker_short_park_us: options.spin.shortParkMicros,
    worker_yields: options.spin.yields,
    dispatcher_spin_us: options.dispatcher.spinMicros,
    dispatcher_yield_after_ms: options.dispatcher.yieldAfterMs,
    ring_capacity: options.ringCapacity,
  };
  let c: CBaseline | undefined;
  let cStatus = "skipped (--no-c)";
  if (options.c) {
    const built = await buildCBaseline();
    if (built.ok) {
      c = built.baseline;
      cStatus = `built with ${c.compiler}`;
    } else {
      cStatus = `missing: ${built.reason}`;
      progress(`bench: C baseline unavailable, going on without ratios: ${built.reason}`);
    }
  }
  const qemu = options.qemu ? await findQemu(options.qemuBinary) : undefined;
  const machine = machineInfo(c?.compiler ?? null, qemu?.version ?? null);

  const figures = planFigures(options.plan);
  const groups = figureGroups(figures);
  const collected = new Map<string, Collected>();
  const cCollected = new Map<string, Collected>();
  const collect = (map: Map<string, Collected>, id: string, spec: Collected["spec"], counts: RunCounts) => {
    if (!map.has(id)) map.set(id, { spec, counts, analyses: [], reports: [], checks: [] });
    return map.get(id)!;
  };
  const total = groups.length * options.repeats * (c ? 1 : 0) + figures.length * options.repeats;
  let done = 0;
  const step = (what: string) => progress(`[${++done}/${total} ${((performance.now() - began) / 1000).toFixed(1)}s] ${what}`);

  try {
    await warmVcpuPool(Math.max(2, ...options.plan.vcpuCounts));
    // A family is one kind at one privilege, every vCPU count: its runs interleave, so the
    // scaling figures (N vCPUs against 1) pair runs made in the same round, as C's do.
    const families = new Map<string, FigureKey[]>();
    for (const group of groups) {
      const family = `${group.kind}/${group.privilege}`;
      families.set(family, [...(families.get(family) ?? []), group]);
    }
    for (const family of families.values()) {
      // One job per implementation and vCPU count; each repeat starts one further along, so
      // no job is always the one that runs right after a VM teardown or first in a warm machine.
      const jobs: (() => Promise<void>)[] = [];
      for (const group of family) {
        const counts = countsFor(group.kind, options);
        const members = figures.filter((f) => keyOf(f) === keyOf(group));
        if (c) {
          const baseline = c;
          jobs.push(async () => {
            const entry = collect(cCollected, keyOf(group), { ...group, path: "c-inline" }, counts);
            step(`${group.kind} c-inline ${group.privilege} ${group.vcpus} vCPU${group.vcpus === 1 ? "" : "s"}`);
            if (entry.error !== undefined) return;
            try {
              const run = await runCFigure(baseline, group, counts);
              const a = analyzeRun({ counts, marks: run.vcpus.map((v) => v.marks), mainCpuNs: null });
              entry.analyses.push(a);
              entry.reports.push(runReport(a, null));
              entry.checks.push(cCheck(group.kind, run, counts, group.vcpus));
            } catch (error) {
              entry.error = (error as Error).message;
              progress(`bench: C baseline failed for ${keyOf(group)}: ${entry.error}`);
            }
          });
        }
        for (const figure of members) {
          jobs.push(async () => {
            const entry = collect(collected, `${keyOf(figure)}/${figure.path}`, figure, counts);
            step(figureName(figure));
            if (entry.error !== undefined) return;
            try {
              const run = await runFigure(figure, counts, options);
              const a = analyzeRun(run.raw);
              entry.analyses.push(a);
              entry.reports.push(runReport(a, run.raw.mainCpuNs, run.stats));
              entry.checks.push(run.check);
            } catch (error) {
              entry.error = (error as Error).message;
              progress(`bench: ${figureName(figure)} failed: ${entry.error}`);
            }
          });
        }
      }
      for (let repeat = 0; repeat < options.repeats; repeat++) {
        for (let j = 0; j < jobs.length; j++) await jobs[(j + repeat) % jobs.length]();
      }
    }

    let vmStart: StartResult[] = [];
    if (options.start) {
      progress(`bench: VM start, ${options.startSamples} VMs each cold, warm${c ? " and C" : ""}`);
      try {
        const starts = await measureVmStart(options.startSamples, c);
        const cStart = starts.find((s) => s.mode === "c");
        const cMedian = cStart ? percentile([...cStart.samplesNs].sort((a, b) => a - b), 50) : undefined;
        vmStart = starts.map((s) => startResult(s.mode, s.samplesNs, cMedian));
      } catch (error) {
        progress(`bench: VM start failed: ${(error as Error).message}`);
      }
    }

    const idle: IdleResult[] = [];
    if (options.idle) {
      for (const mode of ["spinning", "coalesced-zone"] as const) {
        progress(`bench: idle VM (${mode}), main-thread wake-ups over ${IDLE_SECONDS} s`);
        try {
          idle.push(await measureIdleVm(mode, IDLE_SECONDS));
        } catch (error) {
          progress(`bench: idle VM (${mode}) failed: ${(error as Error).message}`);
        }
      }
    }

    const cResults = [...cCollected.values()].map((x) => toResult(x, null));
    const results = [...collected.values()].map((x) => {
      const r = toResult(x, x.spec.path === "kernel" ? null : spin);
      const base = cResults.find((b) => keyOf(b) === keyOf(r) && b.error === undefined);
      if (base && r.error === undefined) {
        // Run i of each was made in the same round of the interleaved schedule: pair them.
        r.vs_c = pairedRatios(r.runs, base.runs);
        r.ratio_to_c = r.vs_c?.mean?.median ?? r.mean_ns / base.mean_ns;
        r.ratio_to_c_p50 = r.vs_c?.p50?.median ?? r.p50_ns / base.p50_ns;
      }
      return r;
    });

    let qemuResults: FigureResult[] = [];
    let qemuStatus = options.qemu ? "missing: qemu-system-x86_64 is not installed" : "skipped (--no-qemu)";
    if (qemu) {
      const programs = qemuPrograms(options.plan.kinds, options.plan.privileges, (kind) => countsFor(kind, options));
      if (programs.length === 0) {
        qemuStatus = `${qemu.version}: none of the selected kinds runs under QEMU`;
      } else {
        progress(`bench: QEMU peer (${qemu.version}), ${programs.length} exit loops per boot, ${options.repeats} boots interleaved with C`);
        try {
          // A boot per round, C's runs of the same loops beside it (the order alternating), so
          // each QEMU figure pairs with a C run made next to it in time.
          const cRuns = new Map<string, RunReport[]>();
          const runs: QemuRun[] = [];
          const runC = async () => {
            for (const p of programs) {
              const key = `${p.kind}/${p.privilege}`;
              const run = await runCFigure(c!, { kind: p.kind, privilege: p.privilege, vcpus: 1 }, p.counts);
              const a = analyzeRun({ counts: p.counts, marks: run.vcpus.map((v) => v.marks), mainCpuNs: null });
              cRuns.set(key, [...(cRuns.get(key) ?? []), runReport(a, null)]);
            }
          };
          for (let round = 0; round < options.repeats; round++) {
            if (c && round % 2 === 0) await runC();
            runs.push(await runQemuPeer(qemu, programs, 1));
            if (c && round % 2 === 1) await runC();
          }
          qemuStatus = `${qemu.version}, -accel kvm -M pc; firmware to first marker ${runs[0].bootMs.toFixed(0)} ms`;
          qemuResults = mergeQemuRuns(runs).map((f) => {
            const r = qemuResult(f, cResults);
            const pairs = pairedRatios(r.runs, cRuns.get(`${f.kind}/${f.privilege}`) ?? []);
            if (pairs) {
              // QEMU gives one per-exit mean per run, no distribution: only means and rates pair.
              r.vs_c = { ...pairs, p50: null, p99: null };
              r.ratio_to_c = pairs.mean?.median ?? r.ratio_to_c;
            }
            return r;
          });
        } catch (error) {
          qemuStatus = `failed: ${(error as Error).message}`;
          progress(`bench: QEMU peer failed: ${(error as Error).message}`);
        }
      }
    }

    let vmexit: VmexitReport | null = null;
    let vmexitStatus = "skipped (--no-vmexit)";
    if (options.vmexit) {
      if (!existsSync(DEFAULT_VMEXIT_KERNEL)) {
        vmexitStatus = `missing: ${DEFAULT_VMEXIT_KERNEL} not found`;
      } else {
        const subtests = options.quick ? QUICK_VMEXIT_SUBTESTS : VMEXIT_SUBTESTS;
        progress(`bench: kvm-unit-tests vmexit (${subtests.length} subtests) under workervisor${qemu ? " and QEMU, interleaved" : ""}, ${options.repeats} round(s)`);
        try {
          // null, not undefined: undefined would take the default binary despite --no-qemu.
          vmexit = await measureVmexit(subtests, DEFAULT_VMEXIT_KERNEL, qemu ? options.qemuBinary ?? "qemu-system-x86_64" : null, options.repeats);
          vmexitStatus = "measured";
        } catch (error) {
          vmexitStatus = `failed: ${(error as Error).message}`;
          progress(`bench: vmexit kernel failed: ${(error as Error).message}`);
        }
      }
    }

    return {
      schema: REPORT_SCHEMA,
      generated: new Date().toISOString(),
      command: ["workervisor", "bench", ...options.argv].join(" "),
      machine,
      method: METHOD,
      settings: {
        quick: options.quick,
        repeats: options.repeats,
        warmup_batches: options.warmupBatches,
        calibration_rounds: options.calibrationRounds,
        measured_batches: options.iterations !== undefined ? "from --iterations" : options.measuredBatches,
        spin,
      },
      results,
      baselines: { c: cResults, c_status: cStatus, qemu: qemuResults, qemu_status: qemuStatus },
      vm_start: vmStart,
      idle_vm: idle,
      kvm_unit_tests_vmexit: vmexit,
      kvm_unit_tests_vmexit_status: vmexitStatus,
      targets: evaluateTargets(results, cResults, vmStart, machine.cores, idle),
      wall_s: (performance.now() - began) / 1000,
    };
  } finally {
    if (c) removeCBaseline(c);
    await destroyVcpuPool();
  }
}
