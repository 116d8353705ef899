/**
 * The bench's text reports keep their width for any value: the number formatter on its own
 * (every width, values from 5e-324 to Number.MAX_VALUE, NaN, infinities, missing), then the
 * whole table, the VM start rows, the target rows and the vmexit table fed extremes. Each
 * number must still be readable: read back from the printed cell, it is within half a unit
 * of its last digit of the value (or, clamped, on the side the clamp says).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Column, fitNumber, fitPercent, MIN_NUMBER_WIDTH, REPORT_WIDTH, tableLine, tableWidth, wrapText } from "../bench/fixed-width.js";
import { FIGURE_COLUMNS, formatTable, START_COLUMNS, targetCell } from "../bench/table.js";
import { formatVmexitTable, VMEXIT_COLUMNS, type VmexitReport } from "../bench/vmexit-kernel.js";
import { type BenchReport, type FigureResult, readJsonReport, REPORT_SCHEMA, type StartResult, type TargetResult, writeJsonReport } from "../bench/json-report.js";
import { ALL_KINDS, type ExitKindName, type PathName } from "../bench/figures.js";
import { figureName } from "../bench/targets.js";

/** What a printed cell says about its number. */
type Reading =
  | { kind: "missing" }
  | { kind: "exact"; value: number; halfUnit: number }
  | { kind: "above"; bound: number }
  | { kind: "below"; bound: number };

const UNIT_SCALE: Record<string, number> = { "": 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };

/** Reads a cell the way a person would; throws on text that is not a number at all. */
function readCell(text: string): Reading {
  if (text === "-") return { kind: "missing" };
  if (text === "NaN") return { kind: "exact", value: NaN, halfUnit: 0 };
  if (text === "inf" || text === "-inf") return { kind: "exact", value: text === "inf" ? Infinity : -Infinity, halfUnit: 0 };
  let match = /^([<>])(-?\d+(?:\.\d+)?)$/.exec(text);
  if (match) return match[1] === ">" ? { kind: "above", bound: Number(match[2]) } : { kind: "below", bound: Number(match[2]) };
  match = /^(-?\d+)(?:\.(\d+))?([kMGT]?)$/.exec(text);
  if (match) {
    const scale = UNIT_SCALE[match[3]];
    const decimals = match[2]?.length ?? 0;
    return { kind: "exact", value: Number(`${match[1]}.${match[2] ?? "0"}`) * scale, halfUnit: 0.5 * 10 ** -decimals * scale };
  }
  match = /^(-?\d)(?:\.(\d+))?e(-?\d+)$/.exec(text);
  if (match) {
    const decimals = match[2]?.length ?? 0;
    const exponent = Number(match[3]);
    return { kind: "exact", value: Number(text), halfUnit: 0.5 * 10 ** (exponent - decimals) };
  }
  throw new Error(`'${text}' is not a readable number`);
}

/** Checks that `text` shows `value` readably (see the file comment). */
function assertShows(text: string, value: number | null | undefined, where: string): void {
  const reading = readCell(text);
  const context = `${where}: ${String(value)} printed as '${text}'`;
  if (value === null || value === undefined) {
    assert.equal(reading.kind, "missing", context);
    return;
  }
  assert.notEqual(reading.kind, "missing", context);
  if (reading.kind === "above") return assert.ok(value > reading.bound, context);
  if (reading.kind === "below") return assert.ok(value < reading.bound, context);
  if (reading.kind !== "exact") return;
  if (!Number.isFinite(value)) return assert.ok(Object.is(reading.value, value), context);
  assert.ok(Number.isFinite(reading.value), context);
  // toFixed and toExponential round the exact binary value; allow for the decimal parse.
  const slack = reading.halfUnit * (1 + 1e-9) + Math.abs(value) * 1e-12;
  assert.ok(Math.abs(reading.value - value) <= slack, `${context}: off by ${Math.abs(reading.value - value)}`);
  assert.equal(reading.value === 0, value === 0, `${context}: zero only for zero`);
  assert.ok(value === 0 || Math.sign(reading.value) === Math.sign(value), `${context}: sign`);
}

/** A deterministic spread of values over every magnitude a double has, both signs. */
function everyMagnitude(): number[] {
  const values = [
    0, -0, 1e-3, 1e6, 5e-324, Number.MIN_VALUE * 3, Number.MAX_VALUE, -Number.MAX_VALUE, 1e21, 1e-7,
    0.5, 0.005, 0.0049, 0.995, 9.995, 99.995, 999.5, 999.995, 9999.5, 99_999.5, 999_999.5, 999_950, 999_999_999,
  ];
  let state = 12_345;
  const random = () => {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    return state / 2 ** 32;
  };
  for (let exponent = -323; exponent <= 308; exponent += 0.37) {
    const magnitude = Math.min(Number.MAX_VALUE, (1 + random() * 9) * 10 ** Math.floor(exponent));
    values.push(magnitude, -magnitude);
  }
  return values.filter((v) => Number.isFinite(v));
}

test("fitNumber: any value at any width fits and reads back within half a unit of its last digit", () => {
  const values = [...everyMagnitude(), NaN, Infinity, -Infinity, null, undefined];
  for (let width = MIN_NUMBER_WIDTH; width <= 12; width++) {
    for (let decimals = 0; decimals <= 3; decimals++) {
      for (const value of values) {
        const text = fitNumber(value, width, decimals);
        assert.ok(text.length <= width, `${String(value)} at width ${width}: '${text}' is ${text.length} wide`);
        assertShows(text, value, `width ${width}, ${decimals} decimals`);
        // Clamps are for absurd magnitudes only: what a bench can measure always prints.
        const magnitude = Math.abs(value ?? 0);
        if (width >= 6 && (magnitude === 0 || (magnitude >= 1e-99 && magnitude <= 1e99))) {
          assert.doesNotMatch(text, /^[<>]/, `${String(value)} at width ${width}`);
        }
      }
    }
  }
});

test("fitNumber: plain values print as before, and wide ones switch units rather than lose digits", () => {
  assert.equal(fitNumber(9.41, 6), "9.41");
  assert.equal(fitNumber(194.66, 6), "194.66");
  assert.equal(fitNumber(0, 6), "0.00");
  assert.equal(fitNumber(1234.56, 6), "1234.6");
  assert.equal(fitNumber(1_234_567, 6), "1.23M");
  assert.equal(fitNumber(24.52, 4), "24.5");
  assert.equal(fitNumber(12_345_678, 7, 0), "12.35M", "an integer column keeps its digits in units");
  assert.equal(fitNumber(0.001, 6), "1.0e-3", "a small non-zero value is not shown as 0.00");
  assert.equal(fitNumber(1e300, 4), ">999", "a clamp says which way it is cut");
  assert.equal(fitNumber(-1e300, 4), "<-99");
  assert.equal(fitNumber(1e-300, 4), "<0.1");
  assert.equal(fitNumber(NaN, 6), "NaN");
  assert.equal(fitNumber(-Infinity, 4), "-inf");
  assert.equal(fitNumber(null, 6), "-");
  assert.equal(fitPercent(1234.4, 6), "1234%");
  assert.equal(fitPercent(null, 6), "-");
  assert.throws(() => fitNumber(1, 3), /at least 4 columns, got 3/);
});

test("wrapText: lines stay within the width, and no word is lost or cut off", () => {
  const long = "x".repeat(250);
  const text = `machine: ${long} with a path /very/long/${"dir/".repeat(40)}file and words ${"word ".repeat(60)}end`;
  for (const [width, indent, first] of [[100, "", ""], [100, "      ", "    "], [40, "  ", ""], [10, " ", "   "]] as const) {
    const lines = wrapText(text, width, indent, first);
    for (const line of lines) assert.ok(line.length <= width, `'${line}' is wider than ${width}`);
    assert.ok(lines[0].startsWith(first));
    for (const line of lines.slice(1)) assert.ok(line.startsWith(indent));
    assert.equal(lines.join("").replace(/\s+/g, ""), text.replace(/\s+/g, ""), "every character is printed, in order");
  }
  assert.deepEqual(wrapText(""), [""]);
  assert.throws(() => wrapText("a", 4, "    "), /no room/);
});

test("tableLine pads cells to fixed columns and refuses a cell that would push the line wider", () => {
  const columns: Column[] = [{ title: "name", width: 6, left: true }, { title: "n", width: 4 }];
  assert.equal(tableLine(columns, ["ab", "7"]), "ab        7");
  assert.equal(tableWidth(columns), 11);
  assert.throws(() => tableLine(columns, ["ab", "12345"]), /'12345' is 5 characters, wider than the 4 of column 'n'/);
});

// ---- The whole table, fed extremes -----------------------------------------------------

/** Raw report values (ns, exits/s, ratios, percent) from the list and beyond. */
const EXTREMES: (number | null)[] = [
  0, 1e-3, 1e6, NaN, Infinity, -Infinity, null, 194_660, 24.52, 1, 1e9, 1e15, 1e300, -5e3, -1e12, 5e-324, 999_999.5,
];
const PATHS: PathName[] = ["c-inline", "qemu", "kernel", "worker", "main-sync", "main-posted", "postmessage"];

function figure(kind: ExitKindName, path: PathName, v: number | null, extra: Partial<FigureResult> = {}): FigureResult {
  return {
    kind, path, privilege: "cpl0", vcpus: 1,
    samples: v === null || !Number.isFinite(v) ? 0 : Math.round(Math.abs(v)),
    mean_ns: v as number, p50_ns: v as number, p99_ns: v, p999_ns: v, exits_per_s: v as number,
    main_cpu_ns_per_exit: v, ratio_to_c: v, ratio_to_c_p50: v, spread_pct: v as number,
    ops_per_batch: 16, guest_iterations: 0, device_counted: null, counted_by: "none", unexplained_exits: 0, spin: null, runs: [],
    ...extra,
  };
}

const LONG_WORD = `/tmp/${"a-very-long-directory-name/".repeat(8)}exit-baseline`;
const LONG_ERROR = `the C baseline died: ${LONG_WORD} was killed by signal 9 after ${"waiting ".repeat(30)}forever`;

/** Each extreme gets a figure of its own (kind, path) in the CPL0, 1 vCPU section. */
function placeOf(i: number): [ExitKindName, PathName] {
  return [ALL_KINDS[i % ALL_KINDS.length], PATHS[Math.floor(i / ALL_KINDS.length) + 2]];
}

function extremeReport(): { report: BenchReport; figures: FigureResult[] } {
  const figures = EXTREMES.map((v, i) => figure(...placeOf(i), v));
  const failed = figure("pio-read", "postmessage", null, { samples: 0, error: LONG_ERROR });
  const partly = figure("mmio-read", "postmessage", 12_345, { error: `one of two runs failed: ${LONG_ERROR}` });
  const stranger = figure("hlt", "kernel", 1e6, { kind: "a-kind-from-a-newer-report" as ExitKindName, path: "a-path-from-elsewhere" as PathName });
  const targetValues: [number | null, boolean | null][] = [[24.52, false], [Infinity, null], [1e300, false], [1e-3, true], [NaN, null], [null, null], [-1e12, true]];
  const targets: TargetResult[] = figures.slice(0, targetValues.length).map((f, i) => ({
    target: `an invented target ${i} for ${"this figure ".repeat(12)}`,
    figure: figureName(f),
    value: targetValues[i][0],
    limit: i === 3 ? 1e6 : 1.25,
    comparison: i % 2 === 0 ? "<=" : ">=",
    met: targetValues[i][1],
    detail: `${"detail ".repeat(20)}${LONG_WORD}`,
  }));
  const start = (mode: StartResult["mode"], v: number | null): StartResult => ({
    mode, description: mode === "c" ? `C: ${"a long description ".repeat(8)}` : `${mode} start`,
    samples: 3, mean_ns: v as number, p50_ns: v as number, p99_ns: v as number, p999_ns: v as number, ratio_to_c: v, samples_ns: [],
  });
  const report: BenchReport = {
    schema: REPORT_SCHEMA,
    generated: "2026-12-01T00:00:00.000Z",
    command: "workervisor bench",
    machine: {
      cpu: `AMD ${"X".repeat(150)} Processor`, cores: 2, kernel: `6.18.44-${"k".repeat(120)} #1 SMP`, nested: true,
      node: "v20.20.2", koffi: "2.16.3", kvm_flavour: "kvm-pvm (no hardware virtualization)", cc: null, qemu: null,
    },
    method: {},
    settings: {
      quick: true, repeats: 1, warmup_batches: 2, calibration_rounds: 16, measured_batches: 24,
      spin: {
        worker_min_spins: 64, worker_max_spins: 1e12, worker_short_park_us: 200, worker_yields: 1e9, dispatcher_spin_us: 50,
        dispatcher_yield_after_ms: 1, ring_capacity: 1 << 20,
      },
    },
    results: [...figures, failed, partly, stranger],
    baselines: { c: [], c_status: `missing: cc not found on ${LONG_WORD}`, qemu: [], qemu_status: "missing: qemu-system-x86_64 is not installed" },
    vm_start: [start("cold", 1e15), start("warm", 1e-3), start("c", NaN)],
    kvm_unit_tests_vmexit: extremeVmexit(),
    kvm_unit_tests_vmexit_status: "ran",
    targets,
    wall_s: 1e7,
  };
  return { report, figures: [...figures, partly] };
}

function extremeVmexit(): VmexitReport {
  return {
    kernel: "vmexit.flat",
    qemu: `QEMU emulator version 7.2.0 (Debian ${"1:7.2+dfsg-7+deb12u".repeat(10)})`,
    rows: [
      { subtest: "cpuid", workervisor_cycles: 0, qemu_cycles: 1e15, ratio_to_qemu: 0 },
      { subtest: "inl_from_qemu", workervisor_cycles: 26_644, qemu_cycles: null, ratio_to_qemu: null },
      { subtest: "inl_from_pmtimer", workervisor_cycles: 1e300, qemu_cycles: 3, ratio_to_qemu: 1e300 },
      { subtest: "a_subtest_name_longer_than_its_column", workervisor_cycles: 123_456_789, qemu_cycles: 1, ratio_to_qemu: 1e-3 },
    ],
  };
}

/** The cells of a fixed-column `line`, checking that every column boundary is a space. */
function cellsOf(line: string, columns: readonly Column[], where: string): string[] {
  const cells: string[] = [];
  let at = 0;
  for (const column of columns) {
    cells.push(line.slice(at, at + column.width).trim());
    at += column.width;
    assert.ok(at >= line.length || line[at] === " ", `${where}: column '${column.title}' overflows in '${line}'`);
    at++;
  }
  return cells;
}

function assertWithinWidth(text: string): string[] {
  const lines = text.split("\n");
  for (const line of lines) assert.ok(line.length <= REPORT_WIDTH, `${line.length} columns: '${line}'`);
  return lines;
}

test("the figure table keeps its width and its columns for extreme values, and shows each one readably", () => {
  assert.equal(tableWidth(FIGURE_COLUMNS), REPORT_WIDTH, "the figure columns fill the promised width");
  const { report, figures } = extremeReport();
  const lines = assertWithinWidth(formatTable(report));
  const header = tableLine(FIGURE_COLUMNS, FIGURE_COLUMNS.map((c) => c.title));
  assert.ok(lines.includes(header));
  const title = (name: string) => FIGURE_COLUMNS.findIndex((c) => c.title === name);
  for (const r of figures) {
    const where = `${r.kind} ${r.path}`;
    const prefix = `${r.kind.padEnd(FIGURE_COLUMNS[0].width)} ${r.path.padEnd(FIGURE_COLUMNS[1].width)} `;
    const rows = lines.filter((l) => l.startsWith(prefix));
    assert.equal(rows.length, 1, `${where}: one row`);
    const cells = cellsOf(rows[0], FIGURE_COLUMNS, where);
    assertShows(cells[title("samples")], r.samples, `${where} samples`);
    for (const [column, ns] of [["mean", r.mean_ns], ["p50", r.p50_ns], ["p99", r.p99_ns], ["p99.9", r.p999_ns], ["cpu", r.main_cpu_ns_per_exit]] as const) {
      assertShows(cells[title(column)], ns === null ? null : ns / 1000, `${where} ${column}`);
    }
    assertShows(cells[title("kexit/s")], r.exits_per_s === null ? null : r.exits_per_s / 1000, `${where} kexit/s`);
    assertShows(cells[title("xC")], r.ratio_to_c, `${where} xC`);
    const spread = cells[title("spread")];
    assertShows(spread === "-" ? spread : spread.replace(/%$/, ""), r.spread_pct, `${where} spread`);
    const target = report.targets.find((t) => t.figure === figureName(r));
    const shown = cells[title("DESIGN target")];
    if (target === undefined || target.value === null) {
      assert.equal(shown, "", `${where}: no target`);
    } else {
      const match = /^(\S+)(<=|>=)(\S+) (ok|NO|\?)$/.exec(shown);
      assert.ok(match, `${where}: target cell '${shown}'`);
      assertShows(match[1], target.value, `${where} target value`);
      assert.equal(match[2], target.comparison);
      assertShows(match[3], target.limit, `${where} target limit`);
      assert.equal(match[4], target.met === null ? "?" : target.met ? "ok" : "NO");
    }
  }
});

test("a failed figure's error, a long name and every long paragraph wrap in full instead of being cut", () => {
  const { report } = extremeReport();
  const text = formatTable(report);
  const lines = assertWithinWidth(text);
  const squeezed = (s: string) => s.replace(/\s+/g, "");
  const failedAt = lines.findIndex((l) => /^pio-read\s+postmessage\s+failed:/.test(l));
  assert.ok(failedAt >= 0, "the failed figure has its row");
  const following = lines.slice(failedAt, failedAt + 12).join(" ");
  assert.ok(squeezed(following).includes(squeezed(`failed: ${LONG_ERROR}`)), "the whole error is printed");
  const partlyAt = lines.findIndex((l) => /^mmio-read\s+postmessage\s+\d/.test(l));
  assert.ok(squeezed(lines.slice(partlyAt + 1, partlyAt + 12).join(" ")).includes(squeezed(`error: one of two runs failed: ${LONG_ERROR}`)));
  const strangerAt = lines.indexOf("a-kind-from-a-newer-report a-path-from-elsewhere");
  assert.ok(strangerAt >= 0, "a name too long for its column gets a line of its own");
  assertShows(cellsOf(lines[strangerAt + 1], FIGURE_COLUMNS, "stranger")[3], 1000, "stranger mean");
  for (const whole of [report.machine.cpu, report.baselines.c_status, ...report.targets.map((t) => t.detail)]) {
    assert.ok(squeezed(text).includes(squeezed(whole)), `printed in full: ${whole.slice(0, 40)}...`);
  }
});

test("VM start rows and the vmexit table keep their columns for extreme values", () => {
  const { report } = extremeReport();
  const lines = assertWithinWidth(formatTable(report));
  for (const s of report.vm_start) {
    const row = lines.find((l) => l.startsWith(`  ${s.mode.padEnd(START_COLUMNS[1].width)} `));
    assert.ok(row, `a row for ${s.mode}`);
    const cells = cellsOf(row, START_COLUMNS, `start ${s.mode}`);
    assertShows(cells[2], s.samples, `start ${s.mode} samples`);
    for (const [i, ns] of [[3, s.mean_ns], [4, s.p50_ns], [5, s.p99_ns]] as const) assertShows(cells[i], ns / 1e6, `start ${s.mode} ${START_COLUMNS[i].title}`);
    assertShows(cells[6], s.ratio_to_c, `start ${s.mode} xC`);
  }

  const vmexit = extremeVmexit();
  const table = assertWithinWidth(formatVmexitTable(vmexit));
  assert.ok(table.some((l) => l.includes("1:7.2+dfsg")), "the QEMU version is printed");
  for (const row of vmexit.rows) {
    const at = table.findIndex((l) => l.startsWith(row.subtest));
    assert.ok(at >= 0, row.subtest);
    const line = row.subtest.length > VMEXIT_COLUMNS[0].width ? table[at + 1] : table[at];
    const cells = cellsOf(line, VMEXIT_COLUMNS, row.subtest);
    assertShows(cells[1], row.workervisor_cycles, `${row.subtest} workervisor`);
    assertShows(cells[2], row.qemu_cycles, `${row.subtest} QEMU`);
    assertShows(cells[3] === "-" ? cells[3] : cells[3].replace(/x$/, ""), row.ratio_to_qemu, `${row.subtest} ratio`);
  }
});

test("the target cell fits its column for every value, limit and verdict", () => {
  const width = FIGURE_COLUMNS[FIGURE_COLUMNS.length - 1].width;
  for (const value of [...EXTREMES, -1e300, 1.254]) {
    for (const met of [true, false, null]) {
      for (const comparison of ["<=", ">="] as const) {
        const cell = targetCell({ target: "t", figure: "f", value, limit: 1.25, comparison, met, detail: "" });
        assert.ok(cell.length <= width, `'${cell}' is wider than ${width}`);
        if (value !== null) assertShows(/^(\S+?)[<>]=/.exec(cell)![1], value, `target ${value}`);
      }
    }
  }
});

test("a report read back from JSON (NaN and infinities stored as null) prints within the width", () => {
  const dir = mkdtempSync(join(tmpdir(), "workervisor-bench-table-"));
  try {
    const file = join(dir, "report.json");
    writeJsonReport(file, extremeReport().report);
    const lines = assertWithinWidth(formatTable(readJsonReport(file)));
    const [kind, path] = placeOf(EXTREMES.findIndex((v) => Number.isNaN(v)));
    const nanRow = lines.find((l) => l.startsWith(`${kind.padEnd(FIGURE_COLUMNS[0].width)} ${path.padEnd(FIGURE_COLUMNS[1].width)} `));
    assert.ok(nanRow, "the NaN figure has a row");
    assert.equal(cellsOf(nanRow, FIGURE_COLUMNS, "NaN row")[3], "-", "a value JSON could not keep shows as not measured");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
