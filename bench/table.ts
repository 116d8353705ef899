/** The report as a plain-text table for stdout, at most 100 columns wide. */
import { formatVmexitTable } from "./vmexit-kernel.js";
import type { BenchReport, FigureResult, StartResult, TargetResult } from "./json-report.js";
import { figureName } from "./targets.js";

const WIDTH = 100;

interface Column {
  title: string;
  width: number;
  left?: boolean;
}

const COLUMNS: Column[] = [
  { title: "kind", width: 10, left: true },
  { title: "path", width: 11, left: true },
  { title: "samples", width: 7 },
  { title: "mean", width: 6 },
  { title: "p50", width: 6 },
  { title: "p99", width: 6 },
  { title: "p99.9", width: 6 },
  { title: "kexit/s", width: 7 },
  { title: "cpu/ex", width: 6 },
  { title: "xC", width: 5 },
  { title: "spread", width: 6 },
  { title: "DESIGN target", width: 13, left: true },
];

function cell(text: string, column: Column): string {
  return column.left ? text.padEnd(column.width) : text.padStart(column.width);
}

function line(cells: string[]): string {
  return cells.map((text, i) => cell(text, COLUMNS[i])).join(" ").trimEnd();
}

const us = (ns: number | null) => (ns === null || !Number.isFinite(ns) ? "-" : (ns / 1000).toFixed(ns >= 1e6 ? 0 : 2));
const ratio = (value: number | null) => (value === null || !Number.isFinite(value) ? "-" : value.toFixed(2));

function targetCell(target: TargetResult | undefined): string {
  if (target === undefined || target.value === null) return "";
  const op = target.comparison === "<=" ? "<=" : ">=";
  return `${target.value.toFixed(2)}${op}${target.limit.toFixed(2)} ${target.met ? "ok" : "NO"}`;
}

function row(r: FigureResult, target: TargetResult | undefined): string {
  if (r.error !== undefined && r.samples === 0) return line([r.kind, r.path, `failed: ${r.error}`.slice(0, 60)]);
  return line([
    r.kind,
    r.path,
    String(r.samples),
    us(r.mean_ns),
    us(r.p50_ns),
    us(r.p99_ns),
    us(r.p999_ns),
    Number.isFinite(r.exits_per_s) ? (r.exits_per_s / 1000).toFixed(1) : "-",
    us(r.main_cpu_ns_per_exit),
    ratio(r.ratio_to_c),
    Number.isFinite(r.spread_pct) ? `${r.spread_pct.toFixed(1)}%` : "-",
    targetCell(target),
  ]);
}

function wrap(text: string, indent: string): string[] {
  const words = text.split(/\s+/);
  const lines: string[] = [];
  let current = "";
  for (const word of words) {
    if (current.length + word.length + 1 > WIDTH - indent.length && current !== "") {
      lines.push(indent + current);
      current = word;
    } else {
      current = current === "" ? word : `${current} ${word}`;
    }
  }
  if (current !== "") lines.push(indent + current);
  return lines;
}

const PATH_ORDER = ["c-inline", "qemu", "kernel", "worker", "main-sync", "main-posted", "postmessage"];

function sections(report: BenchReport): { title: string; rows: FigureResult[] }[] {
  const all = [...report.baselines.c, ...report.baselines.qemu, ...report.results];
  const keys = [...new Set(all.map((r) => `${r.vcpus}/${r.privilege}`))].sort();
  const kindOrder = [...new Set(report.results.map((r) => r.kind))];
  return keys.map((key) => {
    const [vcpus, privilege] = key.split("/");
    const rows = all
      .filter((r) => `${r.vcpus}/${r.privilege}` === key && kindOrder.includes(r.kind))
      .sort((a, b) => kindOrder.indexOf(a.kind) - kindOrder.indexOf(b.kind) || PATH_ORDER.indexOf(a.path) - PATH_ORDER.indexOf(b.path));
    const n = Number(vcpus);
    return { title: `${privilege.toUpperCase()}, ${n} vCPU${n === 1 ? "" : `s (kexit/s: aggregate of all ${n})`}`, rows };
  });
}

/** The target shown beside a row: the one about that figure (scaling before throughput). */
function targetFor(r: FigureResult, targets: readonly TargetResult[]): TargetResult | undefined {
  const mine = targets.filter((t) => t.figure === figureName(r));
  return mine.find((t) => t.target.startsWith("2 vCPUs")) ?? mine[0];
}

function startRows(start: readonly StartResult[]): string[] {
  if (start.length === 0) return [];
  const ms = (ns: number) => (ns / 1e6).toFixed(2);
  const lines = ["", "VM start: create to the guest's first exit (ms)", "  mode     samples    mean     p50     p99     xC"];
  for (const s of start) {
    lines.push(
      `  ${s.mode.padEnd(6)} ${String(s.samples).padStart(8)} ${ms(s.mean_ns).padStart(7)} ${ms(s.p50_ns).padStart(7)} ` +
        `${ms(s.p99_ns).padStart(7)} ${ratio(s.ratio_to_c).padStart(6)}  ${s.description}`,
    );
  }
  return lines.map((l) => (l.length > WIDTH ? l.slice(0, WIDTH) : l));
}

function targetRows(targets: readonly TargetResult[]): string[] {
  if (targets.length === 0) return [];
  const lines = ["", "DESIGN section 7 targets, this run:"];
  let previous = "";
  for (const t of targets) {
    if (t.target !== previous) lines.push(`  ${t.target}`);
    previous = t.target;
    const verdict = t.met === null ? "n/a " : t.met ? "met " : "MISS";
    const value = t.value === null ? "" : `${t.value.toFixed(2)}: `;
    lines.push(...wrap(`${verdict} ${t.figure}: ${value}${t.detail}`, "    "));
  }
  return lines;
}

export function formatTable(report: BenchReport): string {
  const m = report.machine;
  const s = report.settings.spin;
  const out: string[] = [];
  out.push(`workervisor exit benchmark, ${report.generated}${report.settings.quick ? " (quick)" : ""}`);
  out.push(...wrap(`machine: ${m.cpu}, ${m.cores} cores, Linux ${m.kernel.split(" ")[0]}${m.nested ? ", itself a VM (nested)" : ""}, node ${m.node}, koffi ${m.koffi}`, ""));
  out.push(...wrap(`KVM: ${m.kvm_flavour}. C baseline: ${report.baselines.c_status}. QEMU: ${report.baselines.qemu_status}.`, ""));
  out.push(...wrap(
    `spin budget in force: vCPU workers spin ${s.worker_min_spins}..${s.worker_max_spins} iterations before parking ` +
      `(doubled after a park under ${s.worker_short_park_us} us, halved after a longer one); the dispatcher polls ` +
      `up to ${s.dispatcher_spin_us} us (adaptive) after the last sync exit, yields every ${s.dispatcher_yield_after_ms} ms, and ` +
      `parked is woken by a sync exit or a ring turning non-empty; posted ring ${s.ring_capacity} records per vCPU.`,
    "",
  ));
  out.push(...wrap(
    `method: per-exit latency in us from calibrated batch means (K exits between two markers timestamped on the vCPU ` +
      `thread, marker cost subtracted; same guest bytes and analysis for C); p99/p99.9 are nearest-rank over ` +
      `batch means; ${report.settings.repeats} run(s) per figure, spread = range of run medians; cpu/ex = main-thread ` +
      `CPU us per exit; xC = mean / C mean. DESIGN target: the compared value, its limit and ok/NO (in-worker PIO: xC; ` +
      `sync: p50 / C p50; posted: exits/s / in-worker; 2 vCPUs: aggregate / 1 vCPU).`,
    "",
  ));
  if (m.kvm_flavour.includes("pvm")) {
    out.push(...wrap("PVM host: CPL0 guest code is emulated (~1 us per instruction, in every CPL0 figure), CPL3 runs natively with costlier exits.", ""));
  }
  const header = line(COLUMNS.map((c) => c.title));
  for (const section of sections(report)) {
    out.push("", section.title, header);
    for (const r of section.rows) out.push(row(r, targetFor(r, report.targets)));
  }
  out.push(...startRows(report.vm_start));
  if (report.kvm_unit_tests_vmexit) out.push("", formatVmexitTable(report.kvm_unit_tests_vmexit));
  else if (report.kvm_unit_tests_vmexit_status) out.push("", `kvm-unit-tests vmexit: ${report.kvm_unit_tests_vmexit_status}`);
  out.push(...targetRows(report.targets));
  out.push("", `suite wall time ${report.wall_s.toFixed(1)} s`);
  return out.join("\n") + "\n";
}
