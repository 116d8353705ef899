/**
 * kvm-unit-tests' `vmexit` kernel under workervisor and under QEMU with KVM, side by side.
 * The kernel times each subtest itself (TSC cycles per iteration), so both VMMs are
 * measured by the same guest code and the same clock.
 */
import { median } from "./paired-ratios.js";
import { existsSync, readFileSync } from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { PcMachine } from "../runtime/pc-machine.js";
import { type Column, fitNumber, REPORT_WIDTH, tableLine, wrapText } from "./fixed-width.js";

export const VMEXIT_SUBTESTS = [
  "cpuid", "inl_from_qemu", "inl_from_kernel", "outl_to_kernel", "mov_dr", "wr_tsc_adjust_msr", "inl_from_pmtimer",
] as const;
/** For --quick: one exit handled in the kernel, one in a worker device, one unclaimed port. */
export const QUICK_VMEXIT_SUBTESTS = ["cpuid", "inl_from_pmtimer", "inl_from_qemu"] as const;

export const DEFAULT_VMEXIT_KERNEL = fileURLToPath(new URL("../../../shared/kvm-unit-tests/vmexit.flat", import.meta.url));

export interface VmexitRow {
  subtest: string;
  workervisor_cycles: number | null;
  qemu_cycles: number | null;
  /**
   * workervisor / QEMU: below 1 means workervisor's exit is cheaper. With several rounds,
   * the median of the per-round ratios (each round runs both, the order alternating), and
   * the cycle counts are medians too.
   */
  ratio_to_qemu: number | null;
  /** Per-round figures and the ratio's range; absent in single-run reports. */
  workervisor_runs?: number[];
  qemu_runs?: number[];
  ratio_min?: number | null;
  ratio_max?: number | null;
}

export interface VmexitReport {
  kernel: string;
  qemu: string;
  rows: VmexitRow[];
}

/** "cpuid 26644" lines → { cpuid: 26644 }. */
export function parseVmexitOutput(text: string): Map<string, number> {
  const cycles = new Map<string, number>();
  for (const line of text.split(/\r?\n/)) {
    const match = /^(\w+) (\d+)$/.exec(line.trim());
    if (match) cycles.set(match[1], Number(match[2]));
  }
  return cycles;
}

async function runUnderWorkervisor(kernel: string, subtests: readonly string[]): Promise<string> {
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(kernel),
    kernelName: "vmexit.flat",
    append: subtests.join(" "),
    console: (byte) => bytes.push(byte),
  });
  const result = await machine.run();
  const output = Buffer.from(bytes).toString("latin1");
  if (result.reason !== "debug-exit" || result.status !== 0) {
    throw new Error(`vmexit under workervisor ended with ${JSON.stringify(result)}:\n${output}`);
  }
  return output;
}

function qemuVersion(binary: string): string | undefined {
  const found = spawnSync(binary, ["--version"], { encoding: "utf8" });
  return found.status === 0 ? found.stdout.split("\n")[0].trim() : undefined;
}

function runUnderQemu(binary: string, kernel: string, subtests: readonly string[]): Promise<string> {
  const args = [
    "--no-reboot", "-nodefaults", "-display", "none", "-serial", "stdio",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-machine", "accel=kvm",
    "-kernel", kernel, "-append", subtests.join(" "),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let errors = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("latin1")));
    child.stderr.on("data", (chunk: Buffer) => (errors += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      // isa-debug-exit: status 0 → exit code 1.
      if (code === 1) resolve(output);
      else reject(new Error(`QEMU exited with ${code}: ${errors.trim() || output.slice(-500)}`));
    });
  });
}

function medianOrNull(values: readonly number[]): number | null {
  return values.length === 0 ? null : median(values);
}

/**
 * Runs the kernel `rounds` times under workervisor and, when `qemuBinary` is given and
 * installed, as many times under QEMU, interleaved (W Q, Q W, W Q, ...): the same subtest
 * swings 15-30% from run to run on a shared host, so one pair proves little.
 */
export async function measureVmexit(
  subtests: readonly string[] = VMEXIT_SUBTESTS,
  kernel = DEFAULT_VMEXIT_KERNEL,
  qemuBinary: string | null = "qemu-system-x86_64",
  rounds = 1,
): Promise<VmexitReport> {
  if (!existsSync(kernel)) throw new Error(`vmexit kernel not found at ${kernel}`);
  if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError(`vmexit rounds must be a whole number of at least 1, got ${rounds}`);
  const version = qemuBinary ? qemuVersion(qemuBinary) : undefined;
  const ours: Map<string, number>[] = [];
  const theirs: Map<string, number>[] = [];
  for (let round = 0; round < rounds; round++) {
    const runOurs = async () => ours.push(parseVmexitOutput(await runUnderWorkervisor(kernel, subtests)));
    const runTheirs = async () => { if (version) theirs.push(parseVmexitOutput(await runUnderQemu(qemuBinary!, kernel, subtests))); };
    if (round % 2 === 0) { await runOurs(); await runTheirs(); } else { await runTheirs(); await runOurs(); }
  }
  return {
    kernel,
    qemu: version ?? (qemuBinary ? `missing (${qemuBinary} not installed)` : "skipped (--no-qemu)"),
    rows: subtests.map((subtest) => {
      const w = ours.map((m) => m.get(subtest)).filter((v) => v !== undefined);
      const q = theirs.map((m) => m.get(subtest)).filter((v) => v !== undefined);
      const ratios = ours.flatMap((m, i) => {
        const a = m.get(subtest);
        const b = theirs[i]?.get(subtest);
        return a !== undefined && b ? [a / b] : [];
      });
      return {
        subtest,
        workervisor_cycles: medianOrNull(w),
        qemu_cycles: medianOrNull(q),
        ratio_to_qemu: medianOrNull(ratios),
        workervisor_runs: w,
        qemu_runs: q,
        ratio_min: ratios.length ? Math.min(...ratios) : null,
        ratio_max: ratios.length ? Math.max(...ratios) : null,
      };
    }),
  };
}

/** The vmexit table's columns (the subtest names come from the command line, so they may not fit). */
export const VMEXIT_COLUMNS: readonly Column[] = [
  { title: "subtest", width: 19, left: true },
  { title: "workervisor", width: 14 },
  { title: "QEMU", width: 14 },
  { title: "ratio", width: 10 },
  { title: "pair range", width: 19 },
];

/** The side-by-side table; at most REPORT_WIDTH columns whatever the counts are. */
export function formatVmexitTable(report: VmexitReport): string {
  const lines = [
    "kvm-unit-tests vmexit: TSC cycles per iteration, measured by the guest itself",
    "  (medians over interleaved runs; ratio: median of the per-pair ratios, pair range: their min..max)",
    ...wrapText(`QEMU: ${report.qemu}`, REPORT_WIDTH, "  "),
    tableLine(VMEXIT_COLUMNS, VMEXIT_COLUMNS.map((c) => c.title)),
  ];
  const [name, ours, theirs, ratio, range] = VMEXIT_COLUMNS;
  for (const row of report.rows) {
    const fits = row.subtest.length <= name.width;
    if (!fits) lines.push(...wrapText(row.subtest));
    const shown = fitNumber(row.ratio_to_qemu, ratio.width - 1);
    lines.push(tableLine(VMEXIT_COLUMNS, [
      fits ? row.subtest : "",
      fitNumber(row.workervisor_cycles, ours.width, 0),
      fitNumber(row.qemu_cycles, theirs.width, 0),
      shown === "-" ? shown : `${shown}x`,
      row.ratio_min == null || row.ratio_max == null
        ? "-"
        : `${fitNumber(row.ratio_min, 6)}..${fitNumber(row.ratio_max, 6)} (${row.workervisor_runs?.length ?? 0})`.slice(0, range.width),
    ]));
  }
  return lines.join("\n");
}
