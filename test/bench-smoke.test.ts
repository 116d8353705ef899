/**
 * The benchmark suite end to end, with tiny counts: `workervisor bench --quick` runs every
 * default figure through the CLI, every exit the guest made is accounted for by a device,
 * the JSON has the documented shape and the SVG is well-formed XML. Nothing here depends on
 * how fast the figures came out (a loaded machine may make any of them huge, or the
 * marker subtraction push a cheap one below zero): it checks structure and counts only.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ALL_KINDS, DEFAULT_PLAN, planFigures } from "../bench/figures.js";
import type { BenchReport, FigureResult } from "../bench/json-report.js";
import { REPORT_WIDTH } from "../bench/fixed-width.js";

const CLI = fileURLToPath(new URL("../runtime/cli.js", import.meta.url));

const ENTITY = /^&(amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);/;
const NAME = /^[A-Za-z_:][-A-Za-z0-9_:.]*/;

/**
 * A minimal XML well-formedness check: one root element, properly nested and matching
 * tags, quoted and unique attributes, no stray `<` or `&` in text or attribute values.
 * Enough for generated SVG; throws with the offset of the first problem.
 */
function checkWellFormedXml(xml: string): string {
  let at = 0;
  const stack: string[] = [];
  let root: string | undefined;
  let rootClosed = false;
  const fail = (why: string): never => {
    throw new Error(`not well-formed XML at offset ${at}: ${why} (near ${JSON.stringify(xml.slice(at, at + 40))})`);
  };
  const checkText = (text: string, where: string) => {
    for (let i = text.indexOf("&"); i >= 0; i = text.indexOf("&", i + 1)) {
      if (!ENTITY.test(text.slice(i))) fail(`bare '&' in ${where}`);
    }
    if (text.includes("<")) fail(`'<' in ${where}`);
  };
  while (at < xml.length) {
    const lt = xml.indexOf("<", at);
    const text = xml.slice(at, lt < 0 ? xml.length : lt);
    if (stack.length === 0 && text.trim() !== "") fail("text outside the root element");
    checkText(text, "text");
    if (lt < 0) break;
    at = lt;
    if (xml.startsWith("<?", at)) {
      const end = xml.indexOf("?>", at);
      if (end < 0) fail("unterminated processing instruction");
      at = end + 2;
    } else if (xml.startsWith("<!--", at)) {
      const end = xml.indexOf("-->", at);
      if (end < 0) fail("unterminated comment");
      at = end + 3;
    } else if (xml.startsWith("</", at)) {
      const name = NAME.exec(xml.slice(at + 2))?.[0] ?? fail("bad end tag");
      at += 2 + name.length;
      while (/\s/.test(xml[at] ?? "")) at++;
      if (xml[at] !== ">") fail("bad end tag");
      at++;
      if (stack.pop() !== name) fail(`end tag </${name}> does not match`);
      if (stack.length === 0) rootClosed = true;
    } else {
      if (rootClosed) fail("a second root element");
      const name = NAME.exec(xml.slice(at + 1))?.[0] ?? fail("bad start tag");
      at += 1 + name.length;
      const seen = new Set<string>();
      for (;;) {
        const space = /^\s*/.exec(xml.slice(at))![0].length;
        at += space;
        if (xml.startsWith("/>", at)) {
          at += 2;
          if (stack.length === 0) rootClosed = true;
          break;
        }
        if (xml[at] === ">") {
          at++;
          stack.push(name);
          break;
        }
        if (space === 0) fail("attributes must be separated by white space");
        const attribute = NAME.exec(xml.slice(at))?.[0] ?? fail("bad attribute name");
        if (seen.has(attribute)) fail(`duplicate attribute ${attribute}`);
        seen.add(attribute);
        at += attribute.length;
        const eq = /^\s*=\s*/.exec(xml.slice(at))?.[0] ?? fail(`attribute ${attribute} has no value`);
        at += eq.length;
        const quote = xml[at];
        if (quote !== '"' && quote !== "'") fail(`attribute ${attribute} value is not quoted`);
        const end = xml.indexOf(quote, at + 1);
        if (end < 0) fail("unterminated attribute value");
        checkText(xml.slice(at + 1, end), `attribute ${attribute}`);
        at = end + 1;
      }
      root ??= name;
    }
  }
  if (stack.length > 0) fail(`unclosed <${stack[stack.length - 1]}>`);
  if (root === undefined) fail("no root element");
  return root!;
}

test("the XML check accepts well-formed documents and rejects broken ones", () => {
  assert.equal(checkWellFormedXml(`<?xml version="1.0"?>\n<svg a="1" b='x &amp; y'><g><text>a &lt; b</text></g><rect/></svg>\n`), "svg");
  for (const bad of ["<svg><g></svg>", "<svg a=1/>", "<svg a='1' a='2'/>", "<svg>a & b</svg>", "<svg/><svg/>", "<svg>", "x<svg/>"]) {
    assert.throws(() => checkWellFormedXml(bad), /not well-formed/, bad);
  }
});

const NUMBER_FIELDS = ["samples", "mean_ns", "p50_ns", "exits_per_s", "spread_pct", "guest_iterations", "unexplained_exits"] as const;

function checkFigureShape(r: FigureResult, where: string): void {
  assert.equal(typeof r.kind, "string", where);
  assert.equal(typeof r.path, "string", where);
  assert.ok(r.privilege === "cpl0" || r.privilege === "cpl3", where);
  assert.ok(Number.isInteger(r.vcpus) && r.vcpus >= 1, where);
  for (const field of NUMBER_FIELDS) assert.equal(typeof r[field], "number", `${where}: ${field}`);
  for (const field of ["p99_ns", "p999_ns", "main_cpu_ns_per_exit", "ratio_to_c"] as const) {
    assert.ok(r[field] === null || typeof r[field] === "number", `${where}: ${field}`);
  }
}

/** The bench's loop counts below, as the command line gives them. */
const BATCHES = 24;
const WARMUP = 2;
const CALIBRATION = 16;
const REPEATS = 1;
const START_SAMPLES = 2;

/** One sample per measured batch and vCPU, one marker cost per vCPU, K exits per batch. */
function checkCounts(r: FigureResult, where: string): void {
  assert.equal(r.samples, BATCHES * r.vcpus * REPEATS, `${where}: samples`);
  assert.equal(r.runs.length, REPEATS, `${where}: runs`);
  for (const run of r.runs) {
    assert.equal(run.samples_ns.length, BATCHES * r.vcpus, `${where}: samples of a run`);
    for (const ns of run.samples_ns) assert.equal(typeof ns, "number", `${where}: a sample is a number`);
    assert.equal(run.marker_ns.length, r.vcpus, `${where}: marker costs`);
    assert.equal(run.exits, BATCHES * r.ops_per_batch * r.vcpus, `${where}: measured exits`);
  }
  assert.equal(r.guest_iterations, (WARMUP + BATCHES) * r.ops_per_batch * r.vcpus * REPEATS, `${where}: guest iterations`);
}

/** Every exit the guest's loops made was seen by its device (or, for CPUID, none left KVM). */
function checkAccounting(r: FigureResult, where: string): void {
  assert.equal(r.error, undefined, `${where}: ${r.error}`);
  assert.equal(r.unexplained_exits, 0, `${where}: unexplained userspace exits`);
  if (r.kind === "cpuid") {
    assert.equal(r.device_counted, null, where);
  } else {
    assert.ok(r.guest_iterations > 0, where);
    assert.equal(r.device_counted, r.guest_iterations, `${where}: counted by ${r.counted_by}`);
  }
}

// Hang guards only: the run takes a few seconds on an idle machine, and many times that
// beside other work on two cores.
test("workervisor bench --quick with tiny counts: every figure, every exit accounted for, JSON and SVG", { timeout: 330_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "workervisor-bench-smoke-"));
  try {
    const json = join(dir, "out.json");
    const svg = join(dir, "out.svg");
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        CLI, "bench", "--quick", "--batches", String(BATCHES), "--warmup", String(WARMUP), "--calibration", String(CALIBRATION),
        "--repeats", String(REPEATS), "--start-samples", String(START_SAMPLES), "--no-vmexit", "--json", json, "--svg", svg,
      ],
      { timeout: 300_000, maxBuffer: 16 << 20 },
    );
    assert.match(stdout, /kind\s+path\s+samples\s+mean\s+p50\s+p99\s+p99\.9/);
    // The formatter keeps its width for any value (test/bench-table.test.ts feeds it extremes).
    for (const line of stdout.split("\n")) assert.ok(line.length <= REPORT_WIDTH, `table line wider than ${REPORT_WIDTH} columns: ${line}`);

    const report = JSON.parse(readFileSync(json, "utf8")) as BenchReport;
    for (const field of ["cpu", "kernel", "node", "koffi"] as const) assert.equal(typeof report.machine[field], "string", field);
    assert.equal(typeof report.machine.nested, "boolean");
    assert.match(report.machine.kvm_flavour, /kvm/);
    // The vmexit kernel has its own test (kvm-unit-tests.test.ts); here it is skipped on request.
    assert.equal(report.kvm_unit_tests_vmexit, null);
    assert.equal(report.kvm_unit_tests_vmexit_status, "skipped (--no-vmexit)");

    // Every default figure is there, once, and accounted for.
    const planned = planFigures(DEFAULT_PLAN).map((f) => `${f.kind}/${f.path}/${f.privilege}/${f.vcpus}`).sort();
    const measured = report.results.map((r) => `${r.kind}/${r.path}/${r.privilege}/${r.vcpus}`).sort();
    assert.deepEqual(measured, planned);
    assert.deepEqual([...new Set(report.results.map((r) => r.kind))].sort(), [...ALL_KINDS].sort());
    assert.deepEqual([...new Set(report.results.map((r) => r.vcpus))].sort(), [1, 2, 4]);
    for (const r of report.results) {
      const where = `${r.kind} ${r.path} ${r.privilege} ${r.vcpus}`;
      checkFigureShape(r, where);
      checkCounts(r, where);
      checkAccounting(r, where);
      assert.ok(r.path === "kernel" ? r.spin === null : r.spin !== null, `${where}: spin budget`);
    }

    // The C baseline runs when a compiler exists, and is said to be missing otherwise.
    if (report.baselines.c_status.startsWith("missing")) {
      assert.deepEqual(report.baselines.c, []);
    } else {
      const groups = new Set(report.results.map((r) => `${r.kind}/${r.privilege}/${r.vcpus}`));
      assert.equal(report.baselines.c.length, groups.size);
      for (const r of report.baselines.c) {
        const where = `C ${r.kind} ${r.privilege} ${r.vcpus}`;
        checkFigureShape(r, where);
        checkCounts(r, where);
        checkAccounting(r, where);
      }
      for (const r of report.results) assert.equal(typeof r.ratio_to_c, "number", `${r.kind} ${r.path}: ratio to C`);
    }
    if (report.baselines.qemu_status.startsWith("missing")) {
      assert.deepEqual(report.baselines.qemu, []);
    } else {
      assert.ok(report.baselines.qemu.length > 0, report.baselines.qemu_status);
      for (const r of report.baselines.qemu) assert.equal(r.path, "qemu");
    }
    assert.deepEqual(report.vm_start.map((s) => s.mode).sort(), report.baselines.c.length > 0 ? ["c", "cold", "warm"] : ["cold", "warm"]);
    for (const s of report.vm_start) {
      assert.equal(s.samples, START_SAMPLES, `VM start ${s.mode}: samples`);
      assert.equal(s.samples_ns.length, START_SAMPLES, `VM start ${s.mode}: samples kept`);
    }
    // The coalesced path accounts for every write: queued in the kernel, or exited on a full queue.
    for (const r of report.results.filter((x) => x.path === "main-coalesced")) {
      const where = `${r.kind} ${r.path} ${r.privilege}`;
      assert.ok(r.coalesced, `${where}: coalesced counts`);
      if (r.coalesced.zones > 0) assert.equal(r.coalesced.delivered + r.coalesced.full_queue_exits, r.device_counted, where);
    }
    // Ratios to C come from interleaved pairs, one per round.
    for (const r of report.results.filter((x) => x.vs_c)) {
      for (const metric of ["mean", "p50", "p99", "exits_per_s"] as const) {
        const spread = r.vs_c![metric];
        if (spread === null) continue;
        assert.equal(spread.per_pair.length, REPEATS, `${r.kind} ${r.path}: ${metric} pairs`);
        assert.ok(spread.min <= spread.median && spread.median <= spread.max, `${r.kind} ${r.path}: ${metric} range`);
      }
    }
    // Idle VMs: both watched, wake-ups counted, and the queued write delivered by pause().
    assert.deepEqual(report.idle_vm?.map((i) => i.mode), ["spinning", "coalesced-zone"]);
    for (const i of report.idle_vm!) {
      assert.ok(Number.isInteger(i.main_wakeups) && i.main_wakeups >= 0, i.mode);
      assert.equal(i.exits, 0, `${i.mode}: the spinning guest made no exit`);
    }
    assert.equal(report.idle_vm![1].delivered, 1);
    for (const want of ["posted via coalescing", "5 us of work", "idle VM", "aggregate exits/s >= 1 vCPU's", "(p99)"]) {
      assert.ok(report.targets.some((t) => t.target.includes(want)), `a target about '${want}'`);
    }
    assert.ok(report.targets.length > 0);
    for (const t of report.targets) assert.ok(t.met === null || typeof t.met === "boolean", t.target);

    const text = readFileSync(svg, "utf8");
    assert.equal(checkWellFormedXml(text), "svg");
    assert.match(text, /per-exit latency \(µs, log scale\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
