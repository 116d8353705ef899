/**
 * The report as one SVG figure, written as text (no browser, no dependencies):
 *   top:    per-exit latency distribution per kind and path, CPL0 and CPL3 side by side,
 *           C and QEMU drawn beside the JS paths, on a shared log axis in microseconds
 *   bottom: aggregate exits/s against vCPU count, and VM start (cold, warm, C)
 */
import type { BenchReport, FigureResult, StartResult } from "./json-report.js";
import { percentile } from "./stats.js";

const WIDTH = 1100;
const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";
const ROW = 13;
const GROUP_GAP = 7;

const PATH_STYLE: Record<string, { color: string; label: string }> = {
  "c-inline": { color: "#252525", label: "C, inline" },
  qemu: { color: "#e08214", label: "QEMU" },
  kernel: { color: "#7b3294", label: "in KVM" },
  worker: { color: "#2166ac", label: "worker" },
  "main-sync": { color: "#1b7837", label: "main, sync" },
  "main-posted": { color: "#5aae61", label: "main, posted" },
  "main-coalesced": { color: "#a6dba0", label: "main, coalesced" },
  postmessage: { color: "#b2182b", label: "postMessage" },
};
const PATH_ORDER = ["c-inline", "qemu", "kernel", "worker", "main-sync", "main-posted", "main-coalesced", "postmessage"];

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;");
}

const n = (v: number) => (Math.round(v * 10) / 10).toString();

class Svg {
  readonly parts: string[] = [];
  text(x: number, y: number, content: string, attrs: Record<string, string | number> = {}): void {
    this.parts.push(`<text x="${n(x)}" y="${n(y)}"${attributes({ "font-size": 11, ...attrs })}>${esc(content)}</text>`);
  }
  line(x1: number, y1: number, x2: number, y2: number, attrs: Record<string, string | number> = {}): void {
    this.parts.push(`<line x1="${n(x1)}" y1="${n(y1)}" x2="${n(x2)}" y2="${n(y2)}"${attributes({ stroke: "#000", ...attrs })}/>`);
  }
  rect(x: number, y: number, w: number, h: number, attrs: Record<string, string | number> = {}): void {
    this.parts.push(`<rect x="${n(x)}" y="${n(y)}" width="${n(Math.max(0, w))}" height="${n(Math.max(0, h))}"${attributes(attrs)}/>`);
  }
  circle(x: number, y: number, r: number, attrs: Record<string, string | number> = {}): void {
    this.parts.push(`<circle cx="${n(x)}" cy="${n(y)}" r="${n(r)}"${attributes(attrs)}/>`);
  }
  diamond(x: number, y: number, r: number, attrs: Record<string, string | number> = {}): void {
    this.parts.push(`<path d="M${n(x)} ${n(y - r)}L${n(x + r)} ${n(y)}L${n(x)} ${n(y + r)}L${n(x - r)} ${n(y)}Z"${attributes(attrs)}/>`);
  }
  polyline(points: [number, number][], attrs: Record<string, string | number> = {}): void {
    this.parts.push(`<polyline points="${points.map(([x, y]) => `${n(x)},${n(y)}`).join(" ")}"${attributes({ fill: "none", ...attrs })}/>`);
  }
}

function attributes(attrs: Record<string, string | number>): string {
  return Object.entries(attrs).map(([k, v]) => ` ${k}="${esc(String(v))}"`).join("");
}

/** A log10 axis over [min, max] mapped onto [x0, x1]. */
class LogAxis {
  constructor(readonly min: number, readonly max: number, readonly x0: number, readonly x1: number) {}
  x(value: number): number {
    const v = Math.min(this.max, Math.max(this.min, value));
    return this.x0 + ((Math.log10(v) - Math.log10(this.min)) / (Math.log10(this.max) - Math.log10(this.min))) * (this.x1 - this.x0);
  }
  ticks(): number[] {
    const ticks: number[] = [];
    for (let d = Math.floor(Math.log10(this.min)); d <= Math.ceil(Math.log10(this.max)); d++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** d;
        if (v >= this.min * 0.999 && v <= this.max * 1.001) ticks.push(v);
      }
    }
    return ticks;
  }
}

function niceLogBounds(values: number[]): [number, number] {
  const finite = values.filter((v) => Number.isFinite(v) && v > 0);
  if (finite.length === 0) return [1, 1000];
  const lo = 10 ** Math.floor(Math.log10(Math.min(...finite)));
  const hiExp = Math.log10(Math.max(...finite));
  const hiDecade = 10 ** Math.floor(hiExp);
  const hi = [1, 2, 5, 10].map((m) => m * hiDecade).find((v) => v >= Math.max(...finite)) ?? 10 * hiDecade;
  return [lo, hi];
}

const tickLabel = (v: number) => (v >= 1 ? String(v) : v.toPrecision(1));

interface Distribution {
  p5: number; p25: number; p50: number; p75: number; p99: number; p999: number; mean: number;
}

/** Percentiles of the pooled samples of a figure (us); QEMU rows only have repeat means. */
function distribution(r: FigureResult): Distribution | undefined {
  const samples = r.runs.flatMap((run) => run.samples_ns);
  if (r.path === "qemu" || samples.length < 20) return undefined;
  const sorted = Float64Array.from(samples).sort();
  const at = (p: number) => Math.max(percentile(sorted, p), 1) / 1000;
  return { p5: at(5), p25: at(25), p50: at(50), p75: at(75), p99: at(99), p999: at(99.9), mean: Math.max(r.mean_ns, 1) / 1000 };
}

interface PanelRow {
  kind: string;
  figure: FigureResult;
}

function panelRows(report: BenchReport, privilege: string): PanelRow[] {
  const all = [...report.baselines.c, ...report.baselines.qemu, ...report.results].filter(
    (r) => r.vcpus === 1 && r.privilege === privilege && r.samples > 0,
  );
  const kinds = [...new Set(report.results.map((r) => r.kind))];
  return all
    .filter((r) => kinds.includes(r.kind))
    .sort((a, b) => kinds.indexOf(a.kind) - kinds.indexOf(b.kind) || PATH_ORDER.indexOf(a.path) - PATH_ORDER.indexOf(b.path))
    .map((figure) => ({ kind: figure.kind, figure }));
}

function panelHeight(rows: PanelRow[]): number {
  const groups = new Set(rows.map((r) => r.kind)).size;
  return rows.length * ROW + groups * GROUP_GAP;
}

/** One latency panel; returns its height. */
function latencyPanel(svg: Svg, rows: PanelRow[], title: string, x: number, y: number, w: number, axisBounds: [number, number]): number {
  const labelW = 150;
  const valueW = 92;
  const axis = new LogAxis(axisBounds[0], axisBounds[1], x + labelW, x + w - valueW);
  const top = y + 22;
  const height = panelHeight(rows);
  svg.text(x, y + 10, title, { "font-size": 13, "font-weight": "bold" });
  svg.text(x + w - valueW + 6, y + 10, "mean, x C", { "font-size": 10, fill: "#555" });
  let lastLabelX = -Infinity;
  for (const v of axis.ticks()) {
    const gx = axis.x(v);
    const major = Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
    svg.line(gx, top - 4, gx, top + height, { stroke: major ? "#bbb" : "#e4e4e4", "stroke-width": 1 });
    // Labels crowd where the log scale squeezes ticks together: skip one that would touch its neighbour.
    const labelWidth = tickLabel(v).length * 6;
    if (gx - lastLabelX < labelWidth + 4) continue;
    svg.text(gx, top + height + 13, tickLabel(v), { "text-anchor": "middle", "font-size": 10 });
    lastLabelX = gx;
  }
  svg.text((axis.x0 + axis.x1) / 2, top + height + 28, "per-exit latency (µs, log scale)", { "text-anchor": "middle", "font-size": 11 });
  let cy = top;
  let previousKind = "";
  let band = false;
  for (const { kind, figure } of rows) {
    if (kind !== previousKind) {
      if (previousKind !== "") cy += GROUP_GAP;
      const group = rows.filter((r) => r.kind === kind);
      band = !band;
      if (band) svg.rect(x, cy - 2, w, group.length * ROW + 2, { fill: "#f4f6f8" });
      svg.text(x + 2, cy + ROW - 3, kind, { "font-size": 11, "font-weight": "bold" });
      // The C median as a reference line through the whole group: ratios at a glance.
      const c = group.find((r) => r.figure.path === "c-inline")?.figure;
      if (c !== undefined && Number.isFinite(c.p50_ns)) {
        const cx = axis.x(c.p50_ns / 1000);
        svg.line(cx, cy - 2, cx, cy + group.length * ROW, { stroke: PATH_STYLE["c-inline"].color, "stroke-width": 0.8, "stroke-dasharray": "2 2", "stroke-opacity": 0.6 });
      }
      previousKind = kind;
    }
    const style = PATH_STYLE[figure.path] ?? { color: "#000", label: figure.path };
    const mid = cy + ROW / 2;
    svg.text(x + labelW - 6, cy + ROW - 3, style.label, { "text-anchor": "end", "font-size": 10, fill: style.color });
    const d = distribution(figure);
    if (d !== undefined) {
      svg.line(axis.x(d.p5), mid, axis.x(d.p99), mid, { stroke: style.color, "stroke-width": 1 });
      svg.rect(axis.x(d.p25), mid - 4, axis.x(d.p75) - axis.x(d.p25), 8, { fill: style.color, "fill-opacity": 0.35, stroke: style.color, "stroke-width": 0.8 });
      svg.line(axis.x(d.p50), mid - 5, axis.x(d.p50), mid + 5, { stroke: style.color, "stroke-width": 2 });
      svg.line(axis.x(d.p99), mid - 3, axis.x(d.p99), mid + 3, { stroke: style.color, "stroke-width": 1 });
      svg.circle(axis.x(d.p999), mid, 2.2, { fill: "#fff", stroke: style.color, "stroke-width": 1 });
      svg.diamond(axis.x(d.mean), mid, 3, { fill: style.color });
    } else {
      const repeats = figure.runs.map((r) => r.mean_ns / 1000);
      if (repeats.length > 1) {
        svg.line(axis.x(Math.min(...repeats)), mid, axis.x(Math.max(...repeats)), mid, { stroke: style.color, "stroke-width": 2 });
      }
      svg.diamond(axis.x(figure.mean_ns / 1000), mid, 3.5, { fill: style.color });
    }
    const ratio = figure.ratio_to_c !== null && figure.path !== "c-inline" ? `  ${figure.ratio_to_c.toFixed(2)}×` : "";
    svg.text(x + w - valueW + 6, cy + ROW - 3, `${(figure.mean_ns / 1000).toFixed(figure.mean_ns < 10_000 ? 2 : 1)} µs${ratio}`, { "font-size": 10, fill: style.color });
    cy += ROW;
  }
  svg.line(axis.x0, top + height, axis.x1, top + height, { stroke: "#444" });
  return top + height + 34 - y;
}

function legend(svg: Svg, x: number, y: number): void {
  const c = "#444";
  svg.line(x, y, x + 40, y, { stroke: c });
  svg.rect(x + 10, y - 4, 18, 8, { fill: c, "fill-opacity": 0.35, stroke: c, "stroke-width": 0.8 });
  svg.line(x + 18, y - 5, x + 18, y + 5, { stroke: c, "stroke-width": 2 });
  svg.circle(x + 48, y, 2.2, { fill: "#fff", stroke: c });
  svg.diamond(x + 58, y, 3, { fill: c });
  svg.text(x + 68, y + 4, "whiskers p5-p99, box p25-p75, | p50, ○ p99.9, ◆ mean of K-exit batch means (marker cost subtracted); dashed: C p50; QEMU: ◆ mean, bar = range of repeats", { "font-size": 10 });
}

function scalingPanel(svg: Svg, report: BenchReport, x: number, y: number, w: number, h: number): void {
  const all = [...report.baselines.c, ...report.results].filter((r) => r.samples > 0 && Number.isFinite(r.exits_per_s));
  const series = new Map<string, FigureResult[]>();
  for (const r of all) {
    const others = all.filter((o) => o.kind === r.kind && o.path === r.path && o.privilege === r.privilege);
    if (new Set(others.map((o) => o.vcpus)).size < 2) continue;
    const key = `${r.kind} ${r.privilege}|${r.path}`;
    series.set(key, [...(series.get(key) ?? []), r].sort((a, b) => a.vcpus - b.vcpus));
  }
  svg.text(x, y + 10, "Aggregate throughput against vCPUs", { "font-size": 13, "font-weight": "bold" });
  if (series.size === 0) {
    svg.text(x, y + 40, "no multi-vCPU figures in this run", { "font-size": 11, fill: "#555" });
    return;
  }
  const left = x + 50;
  const right = x + w - 120;
  const top = y + 24;
  const bottom = y + h - 34;
  const counts = [...new Set([...series.values()].flat().map((r) => r.vcpus))].sort((a, b) => a - b);
  const maxRate = Math.max(...[...series.values()].flat().map((r) => r.exits_per_s)) / 1000;
  const step = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000].find((s) => maxRate / s <= 6) ?? 1000;
  const yMax = Math.ceil(maxRate / step) * step;
  const px = (v: number) => left + (counts.indexOf(v) / Math.max(1, counts.length - 1)) * (right - left);
  const py = (k: number) => bottom - (k / yMax) * (bottom - top);
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    svg.line(left, py(v), right, py(v), { stroke: v === 0 ? "#444" : "#e4e4e4" });
    svg.text(left - 6, py(v) + 4, String(v), { "text-anchor": "end", "font-size": 10 });
  }
  for (const v of counts) svg.text(px(v), bottom + 14, String(v), { "text-anchor": "middle", "font-size": 10 });
  if (counts.includes(report.machine.cores)) {
    const cx = px(report.machine.cores);
    svg.line(cx, top, cx, bottom, { stroke: "#999", "stroke-dasharray": "4 3" });
    svg.text(cx + 4, bottom - 6, `${report.machine.cores} host cores`, { "font-size": 10, fill: "#777" });
  }
  svg.text((left + right) / 2, bottom + 28, "vCPUs (one worker thread each)", { "text-anchor": "middle", "font-size": 11 });
  svg.text(x + 12, (top + bottom) / 2, "exits/s (thousands, all vCPUs)", {
    "text-anchor": "middle", "font-size": 11, transform: `rotate(-90 ${n(x + 12)} ${n((top + bottom) / 2)})`,
  });
  let ly = top + 4;
  for (const [key, points] of series) {
    const path = key.split("|")[1];
    const style = PATH_STYLE[path] ?? { color: "#000", label: path };
    const coords = points.map((r) => [px(r.vcpus), py(r.exits_per_s / 1000)] as [number, number]);
    svg.polyline(coords, { stroke: style.color, "stroke-width": 1.5 });
    for (const [cx, cy] of coords) svg.circle(cx, cy, 3, { fill: style.color });
    svg.line(right + 12, ly, right + 28, ly, { stroke: style.color, "stroke-width": 2 });
    svg.text(right + 32, ly + 4, `${style.label} (${key.split("|")[0]})`, { "font-size": 10 });
    ly += 14;
  }
}

function startPanel(svg: Svg, start: readonly StartResult[], x: number, y: number, w: number, h: number): void {
  svg.text(x, y + 10, "VM start: create to first guest exit", { "font-size": 13, "font-weight": "bold" });
  if (start.length === 0) {
    svg.text(x, y + 40, "not measured in this run", { "font-size": 11, fill: "#555" });
    return;
  }
  const ms = start.flatMap((s) => s.samples_ns.map((v) => v / 1e6));
  const [lo, hi] = niceLogBounds([...ms, 5]);
  const axis = new LogAxis(lo, hi, x + 110, x + w - 20);
  const top = y + 30;
  const rowH = Math.min(28, (h - 70) / start.length);
  const bottom = top + rowH * start.length;
  for (const v of axis.ticks()) {
    svg.line(axis.x(v), top - 4, axis.x(v), bottom, { stroke: "#e4e4e4" });
    svg.text(axis.x(v), bottom + 13, tickLabel(v), { "text-anchor": "middle", "font-size": 10 });
  }
  svg.text((axis.x0 + axis.x1) / 2, bottom + 28, "milliseconds (log scale); dots: one VM each, bar: median", { "text-anchor": "middle", "font-size": 11 });
  const labels = { cold: "cold worker", warm: "warm pool", c: "C baseline" };
  const colors = { cold: "#b2182b", warm: "#2166ac", c: "#252525" };
  start.forEach((s, i) => {
    const mid = top + i * rowH + rowH / 2;
    svg.text(x + 104, mid + 4, labels[s.mode], { "text-anchor": "end", "font-size": 11, fill: colors[s.mode] });
    for (const v of s.samples_ns) svg.circle(axis.x(v / 1e6), mid, 2.5, { fill: colors[s.mode], "fill-opacity": 0.5 });
    svg.line(axis.x(s.p50_ns / 1e6), mid - 8, axis.x(s.p50_ns / 1e6), mid + 8, { stroke: colors[s.mode], "stroke-width": 2.5 });
  });
  svg.line(axis.x(5), top - 8, axis.x(5), bottom, { stroke: "#d6604d", "stroke-dasharray": "4 3", "stroke-width": 1.2 });
  svg.text(axis.x(5) + 4, top - 10, "target: warm ≤ 5 ms", { "font-size": 10, fill: "#d6604d" });
}

export function renderSvg(report: BenchReport): string {
  const svg = new Svg();
  const m = report.machine;
  const margin = 20;
  svg.text(margin, 26, "workervisor: VM exit latency by exit kind and dispatch path", { "font-size": 17, "font-weight": "bold" });
  svg.text(margin, 44, `${m.kvm_flavour} · ${m.cpu}, ${m.cores} cores${m.nested ? ", nested" : ""} · Linux ${m.kernel.split(" ")[0]} · node ${m.node} · ${report.generated.slice(0, 16).replace("T", " ")} UTC${report.settings.quick ? " · quick run" : ""}`, { "font-size": 11, fill: "#444" });
  svg.text(margin, 58, `C baseline: ${report.baselines.c_status} · QEMU: ${report.baselines.qemu_status}`.slice(0, 190), { "font-size": 11, fill: "#444" });
  legend(svg, margin, 76);

  const panels = ["cpl0", "cpl3"].map((p) => ({ privilege: p, rows: panelRows(report, p) })).filter((p) => p.rows.length > 0);
  const values: number[] = [];
  for (const p of panels) {
    for (const { figure } of p.rows) {
      const d = distribution(figure);
      values.push(figure.mean_ns / 1000, ...(d ? [d.p5, d.p999] : figure.runs.map((r) => r.mean_ns / 1000)));
    }
  }
  const bounds = niceLogBounds(values);
  const panelW = panels.length > 1 ? (WIDTH - 3 * margin) / 2 : WIDTH - 2 * margin;
  let bottom = 96;
  panels.forEach((p, i) => {
    const title = p.privilege === "cpl0" ? "Guest kernel mode (CPL0), 1 vCPU" : "Guest user mode (CPL3), 1 vCPU";
    const used = latencyPanel(svg, p.rows, title, margin + i * (panelW + margin), 96, panelW, bounds);
    bottom = Math.max(bottom, 96 + used);
  });
  const lowerH = 210;
  const halfW = (WIDTH - 3 * margin) / 2;
  scalingPanel(svg, report, margin, bottom + 10, halfW, lowerH);
  startPanel(svg, report.vm_start, 2 * margin + halfW, bottom + 10, halfW, lowerH);
  const height = bottom + 10 + lowerH + 20;
  svg.text(margin, height - 8, `Per exit = (batch interval - marker cost) / K, timestamps on the vCPU thread; ${report.settings.repeats} run(s) per figure pooled. Raw samples: --json.`, { "font-size": 10, fill: "#555" });
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${n(height)}" viewBox="0 0 ${WIDTH} ${n(height)}" font-family="${FONT}">`,
    `<title>workervisor exit latency</title>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...svg.parts,
    `</svg>`,
    "",
  ].join("\n");
}
