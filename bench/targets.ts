/** The performance targets of DESIGN section 7, checked against one run's figures. */
import type { FigureResult, IdleResult, RatioSpread, StartResult, TargetResult } from "./json-report.js";
import { fitNumber } from "./fixed-width.js";
import { pairedRatios } from "./paired-ratios.js";

export function figureName(r: Pick<FigureResult, "kind" | "path" | "privilege" | "vcpus">): string {
  return `${r.kind} ${r.path} ${r.privilege} ${r.vcpus} vCPU${r.vcpus === 1 ? "" : "s"}`;
}

function check(value: number | null, limit: number, comparison: "<=" | ">="): boolean | null {
  if (value === null || !Number.isFinite(value)) return null;
  return comparison === "<=" ? value <= limit : value >= limit;
}

/** Numbers in the prose details: as the table prints them, wide enough for any plausible value. */
const num = (value: number | null | undefined, decimals = 2) => fitNumber(value, 10, decimals);
const us = (ns: number) => `${num(ns / 1000)} us`;
const kilo = (perSecond: number) => `${num(perSecond / 1000, 1)}k`;
const ms = (ns: number) => `${num(ns / 1e6)} ms`;
/** "median 1.05 [1.01..1.09] over 3 interleaved pairs": the ratio and its spread. */
function pairText(spread: RatioSpread | null | undefined): string {
  if (!spread) return "no interleaved pairs";
  const n = spread.per_pair.length;
  return `median ${num(spread.median)} [${num(spread.min).trim()}..${num(spread.max).trim()}] over ${n} interleaved pair${n === 1 ? "" : "s"}`;
}

export function evaluateTargets(
  results: readonly FigureResult[],
  c: readonly FigureResult[],
  start: readonly StartResult[],
  cores: number,
  idle: readonly IdleResult[] = [],
): TargetResult[] {
  const targets: TargetResult[] = [];
  const ok = results.filter((r) => r.error === undefined);
  const cFor = (r: FigureResult) => c.find((x) => x.kind === r.kind && x.privilege === r.privilege && x.vcpus === r.vcpus);

  for (const r of ok.filter((r) => r.path === "worker" && (r.kind === "pio-write" || r.kind === "pio-read") && r.vcpus === 1)) {
    const base = cFor(r);
    targets.push({
      target: "in-worker handled PIO exit <= 1.10 x C per exit (mean)",
      figure: figureName(r),
      value: r.ratio_to_c,
      limit: 1.1,
      comparison: "<=",
      met: check(r.ratio_to_c, 1.1, "<="),
      detail: base
        ? `${us(r.mean_ns)} vs C ${us(base.mean_ns)}; ${pairText(r.vs_c?.mean)} (p50 ratio ${num(r.ratio_to_c_p50)})`
        : "no C baseline",
    });
  }
  for (const r of ok.filter((r) => r.path === "main-sync" && r.vcpus === 1)) {
    const base = cFor(r);
    targets.push({
      target: "synchronous exit via the main-thread dispatcher <= 1.25 x C per exit (median)",
      figure: figureName(r),
      value: r.ratio_to_c_p50,
      limit: 1.25,
      comparison: "<=",
      met: check(r.ratio_to_c_p50, 1.25, "<="),
      detail: base ? `p50 ${us(r.p50_ns)} vs C ${us(base.p50_ns)}; ${pairText(r.vs_c?.p50)}` : "no C baseline",
    });
  }
  for (const r of ok.filter((r) => r.path === "main-sync" && r.vcpus === 1)) {
    const base = cFor(r);
    const value = r.vs_c?.p99?.median ?? null;
    targets.push({
      target: "synchronous exit via the main-thread dispatcher <= 3 x C per exit (p99)",
      figure: figureName(r),
      value,
      limit: 3,
      comparison: "<=",
      met: check(value, 3, "<="),
      detail: base && r.p99_ns !== null && base.p99_ns !== null ? `p99 ${us(r.p99_ns)} vs C ${us(base.p99_ns)}; ${pairText(r.vs_c?.p99)}` : "no C baseline",
    });
  }
  for (const r of ok.filter((r) => r.path === "main-coalesced" && r.kind !== "work-write")) {
    const base = cFor(r);
    const value = r.vs_c?.exits_per_s?.median ?? null;
    const lost = r.device_counted !== r.guest_iterations;
    const met = check(value, 2, ">=");
    const queue = r.coalesced
      ? `${r.coalesced.delivered} from the kernel's queue, ${r.coalesced.full_queue_exits} exited on a full queue` +
        (r.coalesced.zones === 0 ? " (the host took no zone: posted instead)" : "")
      : "";
    targets.push({
      target: "posted via coalescing: guest writes/s >= 2 x the C inline loop's exits/s",
      figure: figureName(r),
      value,
      limit: 2,
      comparison: ">=",
      met: met === null ? null : met && !lost,
      detail: base
        ? `${kilo(r.exits_per_s)} vs C ${kilo(base.exits_per_s)}/s; ${pairText(r.vs_c?.exits_per_s)}; ` +
          `${r.device_counted} of ${r.guest_iterations} writes arrived: ${queue}`
        : "no C baseline",
    });
  }
  for (const r of ok.filter((r) => r.kind === "work-write")) {
    const base = cFor(r);
    const value = r.vs_c?.exits_per_s?.median ?? null;
    const lost = r.device_counted !== r.guest_iterations;
    const met = check(value, 1.5, ">=");
    targets.push({
      target: "a device doing 5 us of work per write, posted: exits/s >= 1.5 x C doing the work inline on the vCPU thread",
      figure: figureName(r),
      value,
      limit: 1.5,
      comparison: ">=",
      met: met === null ? null : met && !lost,
      detail: base
        ? `${kilo(r.exits_per_s)} vs C ${kilo(base.exits_per_s)}/s; ${pairText(r.vs_c?.exits_per_s)}; ${r.device_counted} of ${r.guest_iterations} writes arrived`
        : "no C baseline",
    });
  }
  for (const r of ok.filter((r) => r.path === "main-sync" && r.vcpus > 1)) {
    const one = ok.find((x) => x.path === "main-sync" && x.kind === r.kind && x.privilege === r.privilege && x.vcpus === 1);
    const pairs = one ? pairedRatios(r.runs, one.runs)?.exits_per_s : null;
    const value = one ? pairs?.median ?? r.exits_per_s / one.exits_per_s : null;
    targets.push({
      target: "sync exits from N vCPUs: aggregate exits/s >= 1 vCPU's",
      figure: figureName(r),
      value,
      limit: 1,
      comparison: ">=",
      met: check(value, 1, ">="),
      detail: one
        ? `${kilo(r.exits_per_s)} vs ${kilo(one.exits_per_s)} exits/s at 1 vCPU on ${cores} cores; ${pairText(pairs)}; p99 ${r.p99_ns === null ? "-" : us(r.p99_ns)}`
        : "no 1-vCPU sync figure to compare with",
    });
  }
  for (const r of ok.filter((r) => r.path === "main-posted" && r.kind !== "work-write")) {
    const worker = ok.find((x) => x.path === "worker" && x.kind === r.kind && x.privilege === r.privilege && x.vcpus === r.vcpus);
    const value = worker ? r.exits_per_s / worker.exits_per_s : null;
    const lost = r.device_counted !== r.guest_iterations;
    const met = check(value, 0.95, ">=");
    targets.push({
      target: "posted write throughput >= 0.95 x in-worker exits/s, no record lost",
      figure: figureName(r),
      value,
      limit: 0.95,
      comparison: ">=",
      met: met === null ? null : met && !lost,
      detail: worker
        ? `${kilo(r.exits_per_s)} vs ${kilo(worker.exits_per_s)} exits/s; ` +
          `${r.device_counted} of ${r.guest_iterations} writes arrived`
        : "no in-worker figure to compare with",
    });
  }
  for (const r of ok.filter((r) => r.path === "main-posted" && r.vcpus === 2)) {
    const one = ok.find((x) => x.path === "main-posted" && x.kind === r.kind && x.privilege === r.privilege && x.vcpus === 1);
    const pairs = one ? pairedRatios(r.runs, one.runs)?.exits_per_s : null;
    const value = one ? pairs?.median ?? r.exits_per_s / one.exits_per_s : null;
    targets.push({
      target: "2 vCPUs on 2 cores, posted: aggregate >= 1.7 x one vCPU",
      figure: figureName(r),
      value,
      limit: 1.7,
      comparison: ">=",
      met: cores < 2 ? null : check(value, 1.7, ">="),
      detail: one
        ? `${kilo(r.exits_per_s)} vs ${kilo(one.exits_per_s)} exits/s on ${cores} cores; ${pairText(pairs)}`
        : "no 1-vCPU posted figure to compare with",
    });
  }
  targets.push({
    target: "Linux boot to init faster than QEMU -M microvm",
    figure: "(boot benchmark)",
    value: null,
    limit: 1,
    comparison: "<=",
    met: null,
    detail: "not measured by the exit suite",
  });
  for (const i of idle) {
    targets.push({
      target: "an idle VM: <= 10 main-thread wake-ups per second",
      figure: `idle vm, ${i.mode}`,
      value: i.wakeups_per_s,
      limit: 10,
      comparison: "<=",
      met: check(i.wakeups_per_s, 10, "<="),
      detail: `${i.main_wakeups} wake-ups in ${num(i.seconds).trim()} s; ${i.doorbells} doorbells, ${i.exits} exits`,
    });
  }
  const warm = start.find((s) => s.mode === "warm");
  if (warm) {
    const p50 = warm.p50_ns / 1e6;
    targets.push({
      target: "VM start to first guest instruction with a warm pool <= 5 ms (median)",
      figure: "vm start, warm pool",
      value: p50,
      limit: 5,
      comparison: "<=",
      met: check(p50, 5, "<="),
      detail: `p50 ${ms(warm.p50_ns)} to the first exit (an upper bound), p99 ${ms(warm.p99_ns)}`,
    });
  }
  return targets;
}
