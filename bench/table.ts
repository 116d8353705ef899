/**
 * The report as a plain-text table for stdout, at most REPORT_WIDTH columns wide whatever
 * the figures are: every number goes through fitNumber into a fixed-width cell, and prose
 * (machine, method, errors, target details) wraps.
 */
import { formatVmexitTable } from "./vmexit-kernel.js";
import type { BenchReport, FigureResult, IdleResult, RatioSpread, StartResult, TargetResult } from "./json-report.js";
import { figureName } from "./targets.js";
import { type Column, fitNumber, fitPercent, REPORT_WIDTH, tableLine, tableWidth, wrapText } from "./fixed-width.js";

/** The figure table's columns; their widths and the single spaces between add up to REPORT_WIDTH. */
export const FIGURE_COLUMNS: readonly Column[] = [
  { title: "kind", width: 10, left: true },
  { title: "path", width: 14, left: true },
  { title: "samples", width: 7 },
  { title: "mean", width: 6 },
  { title: "p50", width: 6 },
  { title: "p99", width: 6 },
  { title: "p99.9", width: 6 },
  { title: "kexit/s", width: 7 },
  { title: "cpu", width: 4 },
  { title: "xC", width: 4 },
  { title: "spread", width: 6 },
  { title: "DESIGN target", width: 13, left: true },
];

/** Where a figure row's numbers start: wrapped failure text lines up under them. */
const NUMBERS_AT = FIGURE_COLUMNS[0].width + 1 + FIGURE_COLUMNS[1].width + 1;
const DETAIL_INDENT = " ".repeat(NUMBERS_AT);

function widthOf(title: string): number {
  const column = FIGURE_COLUMNS.find((c) => c.title === title);
  if (column === undefined) throw new Error(`no figure column '${title}'`);
  return column.width;
}

const us = (ns: number | null, title: string) => fitNumber(ns === null ? null : ns / 1000, widthOf(title));

/** "1.05<=1.10 ok": the compared value, the limit and the verdict, in the target column. */
export function targetCell(target: TargetResult | undefined, width = widthOf("DESIGN target")): string {
  if (target === undefined || target.value === null) return "";
  const op = target.comparison === "<=" ? "<=" : ">=";
  // "?": a value that cannot be judged (not finite, or the machine cannot run the figure).
  const verdict = target.met === null ? "?" : target.met ? "ok" : "NO";
  const limit = fitNumber(target.limit, 4);
  const value = fitNumber(target.value, width - op.length - limit.length - 1 - verdict.length);
  return `${value}${op}${limit} ${verdict}`;
}

/**
 * A figure's lines: its row of numbers, then (wrapped) the error it ended with. A kind or
 * path name too long for its column (a report from elsewhere, read with --from) goes on a
 * line of its own above a row that leaves those cells empty.
 */
function figureLines(r: FigureResult, target: TargetResult | undefined): string[] {
  const lines: string[] = [];
  let [kind, path] = [String(r.kind), String(r.path)];
  if (kind.length > FIGURE_COLUMNS[0].width || path.length > FIGURE_COLUMNS[1].width) {
    lines.push(...wrapText(`${kind} ${path}`));
    [kind, path] = ["", ""];
  }
  if (r.error !== undefined && r.samples === 0) {
    const first = tableLine(FIGURE_COLUMNS, [kind, path]).padEnd(NUMBERS_AT);
    return [...lines, ...wrapText(`failed: ${r.error}`, REPORT_WIDTH, DETAIL_INDENT, first)];
  }
  lines.push(tableLine(FIGURE_COLUMNS, [
    kind,
    path,
    fitNumber(r.samples, widthOf("samples"), 0),
    us(r.mean_ns, "mean"),
    us(r.p50_ns, "p50"),
    us(r.p99_ns, "p99"),
    us(r.p999_ns, "p99.9"),
    fitNumber(r.exits_per_s === null ? null : r.exits_per_s / 1000, widthOf("kexit/s"), 1),
    us(r.main_cpu_ns_per_exit, "cpu"),
    fitNumber(r.ratio_to_c, widthOf("xC")),
    fitPercent(r.spread_pct, widthOf("spread")),
    targetCell(target),
  ]));
  if (r.error !== undefined) lines.push(...wrapText(`error: ${r.error}`, REPORT_WIDTH, DETAIL_INDENT));
  return lines;
}

const PATH_ORDER = ["c-inline", "qemu", "kernel", "worker", "main-sync", "main-posted", "main-coalesced", "postmessage"];

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

/** The VM start table's columns; the description follows them, wrapped. */
export const START_COLUMNS: readonly Column[] = [
  { title: "", width: 1 }, // with its separator, the two spaces that indent the block
  { title: "mode", width: 6, left: true },
  { title: "samples", width: 8 },
  { title: "mean", width: 7 },
  { title: "p50", width: 7 },
  { title: "p99", width: 7 },
  { title: "xC", width: 6 },
];
const DESCRIPTION_INDENT = " ".repeat(tableWidth(START_COLUMNS) + 2);

function startRows(start: readonly StartResult[]): string[] {
  if (start.length === 0) return [];
  const ms = (ns: number | null, column: number) => fitNumber(ns === null ? null : ns / 1e6, START_COLUMNS[column].width);
  const lines = ["", "VM start: create to the guest's first exit (ms)", tableLine(START_COLUMNS, START_COLUMNS.map((c) => c.title))];
  for (const s of start) {
    const mode = String(s.mode);
    if (mode.length > START_COLUMNS[1].width) lines.push(...wrapText(mode, REPORT_WIDTH, "  "));
    const row = tableLine(START_COLUMNS, [
      "",
      mode.length > START_COLUMNS[1].width ? "" : mode,
      fitNumber(s.samples, START_COLUMNS[2].width, 0),
      ms(s.mean_ns, 3),
      ms(s.p50_ns, 4),
      ms(s.p99_ns, 5),
      fitNumber(s.ratio_to_c, START_COLUMNS[6].width),
    ]);
    lines.push(...wrapText(s.description, REPORT_WIDTH, DESCRIPTION_INDENT, row.padEnd(DESCRIPTION_INDENT.length)));
  }
  return lines;
}

function idleRows(idle: readonly IdleResult[] | undefined): string[] {
  if (!idle || idle.length === 0) return [];
  const lines = ["", "Idle VM: main-thread wake-ups while the guest spins without exits"];
  for (const i of idle) {
    lines.push(...wrapText(
      `${i.mode}: ${fitNumber(i.wakeups_per_s, 10, 1)} wake-ups/s (${i.main_wakeups} in ${fitNumber(i.seconds, 6)} s), ` +
        `${i.doorbells} doorbells, ${i.exits} exits` +
        (i.delivered === null ? "" : `; queued write delivered by pause(): ${i.delivered === 1 ? "yes" : `no (${i.delivered})`}`),
      REPORT_WIDTH, "    ", "  ",
    ));
  }
  return lines;
}

/** "1.05 [1.01..1.09]": a median pair ratio and its range. */
function pairCell(spread: RatioSpread | null | undefined): string {
  if (!spread) return "-";
  return `${fitNumber(spread.median, 6).trim()} [${fitNumber(spread.min, 6).trim()}..${fitNumber(spread.max, 6).trim()}]`;
}

function pairRows(results: readonly FigureResult[]): string[] {
  const paired = results.filter((r) => r.vs_c && r.error === undefined);
  if (paired.length === 0) return [];
  const lines = [
    "",
    ...wrapText(
      "Against C, interleaved (C and each JS path take turns, round by round; run i of each is a pair): " +
        "median of the per-pair ratios [min..max]; mean, p50, p99: lower is better; exits/s: higher is better",
    ),
  ];
  for (const r of paired) {
    const v = r.vs_c!;
    lines.push(...wrapText(
      `${figureName(r)} (${v.pairs}): mean ${pairCell(v.mean)}, p50 ${pairCell(v.p50)}, p99 ${pairCell(v.p99)}, exits/s ${pairCell(v.exits_per_s)}`,
      REPORT_WIDTH, "      ", "  ",
    ));
  }
  return lines;
}

function targetRows(targets: readonly TargetResult[]): string[] {
  if (targets.length === 0) return [];
  const lines = ["", "DESIGN section 7 targets, this run:"];
  let previous = "";
  for (const t of targets) {
    if (t.target !== previous) lines.push(...wrapText(t.target, REPORT_WIDTH, "    ", "  "));
    previous = t.target;
    const verdict = t.met === null ? "n/a " : t.met ? "met " : "MISS";
    const value = t.value === null ? "" : `${fitNumber(t.value, 10)}: `;
    lines.push(...wrapText(`${verdict} ${t.figure}: ${value}${t.detail}`, REPORT_WIDTH, "      ", "    "));
  }
  return lines;
}

export function formatTable(report: BenchReport): string {
  const m = report.machine;
  const s = report.settings.spin;
  const out: string[] = [];
  const paragraph = (text: string) => out.push(...wrapText(text));
  paragraph(`workervisor exit benchmark, ${report.generated}${report.settings.quick ? " (quick)" : ""}`);
  paragraph(`machine: ${m.cpu}, ${m.cores} cores, Linux ${m.kernel.split(" ")[0]}${m.nested ? ", itself a VM (nested)" : ""}, node ${m.node}, koffi ${m.koffi}`);
  paragraph(`KVM: ${m.kvm_flavour}. C baseline: ${report.baselines.c_status}. QEMU: ${report.baselines.qemu_status}.`);
  paragraph(
    `spin budget in force: vCPU workers spin ${s.worker_min_spins}..${s.worker_max_spins} iterations (doubled after a ` +
      `park under ${s.worker_short_park_us} us, halved after a longer one), then yield the core up to ` +
      `${s.worker_yields} times, then park; the dispatcher polls up to ${s.dispatcher_spin_us} us ` +
      `(adaptive) after the last sync exit, yielding its core while it polls once it has lost it, yields to the event loop ` +
      `every ${s.dispatcher_yield_after_ms} ms, and parked is woken by a sync exit or a ring turning non-empty; posted ring ` +
      `${s.ring_capacity} records per vCPU. When the vCPUs and the dispatcher outnumber the cores, workers spin only ` +
      `${s.worker_min_spins}, and the dispatcher polls up to 20 us, always yields its core while polling and parks the ` +
      `main thread itself until its slice ends.`,
  );
  paragraph(
    `method: per-exit latency in us from calibrated batch means (K exits between two markers timestamped on the vCPU ` +
      `thread, marker cost subtracted; same guest bytes and analysis for C); p99/p99.9 are nearest-rank over ` +
      `batch means; ${report.settings.repeats} run(s) per figure, spread = range of run medians; cpu = main-thread ` +
      `CPU us per exit; xC = mean / C mean, the median over interleaved pairs of runs (listed below with their ranges). ` +
      `main-coalesced: the kernel queues the writes; "exits/s" there is guest writes/s, full-queue exits included. ` +
      `work-write: pio-write to a device doing 5 us of work per write (C does it inline on the vCPU thread). DESIGN target: the compared value, its limit and ok/NO/? (in-worker PIO: xC; ` +
      `sync: p50 / C p50; posted: exits/s / in-worker; coalesced and work-write: exits/s / C; N vCPUs: aggregate / 1 vCPU, the median over runs of the same round). Numbers too wide for their ` +
      `column switch to k/M/G/T units or an exponent (1.5e-6); "-" is not measured.`,
  );
  if (m.kvm_flavour.includes("pvm")) {
    paragraph("PVM host: CPL0 guest code is emulated (~1 us per instruction, in every CPL0 figure), CPL3 runs natively with costlier exits.");
  }
  const header = tableLine(FIGURE_COLUMNS, FIGURE_COLUMNS.map((c) => c.title));
  for (const section of sections(report)) {
    out.push("", ...wrapText(section.title), header);
    for (const r of section.rows) out.push(...figureLines(r, targetFor(r, report.targets)));
  }
  out.push(...pairRows([...report.results, ...report.baselines.qemu]));
  out.push(...startRows(report.vm_start));
  out.push(...idleRows(report.idle_vm));
  if (report.kvm_unit_tests_vmexit) out.push("", formatVmexitTable(report.kvm_unit_tests_vmexit));
  else if (report.kvm_unit_tests_vmexit_status) out.push("", ...wrapText(`kvm-unit-tests vmexit: ${report.kvm_unit_tests_vmexit_status}`));
  out.push(...targetRows(report.targets));
  out.push("", `suite wall time ${fitNumber(report.wall_s, 10, 1)} s`);
  return out.join("\n") + "\n";
}
