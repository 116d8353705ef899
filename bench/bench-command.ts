/**
 * `workervisor bench`: runs the exit-latency suite, prints the table on stdout (progress
 * on stderr) and writes `--json` / `--svg`. Exit status 0 when every figure ran and every
 * exit was accounted for, 1 when a figure failed or an exit went missing, 2 on bad usage.
 * Performance targets that are not met do not fail the command: they are reported.
 */
import { BENCH_USAGE, BenchUsageError, parseBenchOptions } from "./bench-options.js";
import { runSuite } from "./suite.js";
import { formatTable } from "./table.js";
import { type BenchReport, readJsonReport, writeJsonReport } from "./json-report.js";
import { renderSvg } from "./svg-plot.js";
import { evaluateTargets } from "./targets.js";
import { writeFileSync } from "node:fs";

function accountingProblems(report: BenchReport): string[] {
  const problems: string[] = [];
  for (const r of [...report.results, ...report.baselines.c]) {
    const name = `${r.kind} ${r.path} ${r.privilege} ${r.vcpus} vCPU`;
    if (r.error !== undefined) problems.push(`${name}: ${r.error}`);
    if (r.device_counted !== null && r.device_counted !== r.guest_iterations) {
      problems.push(`${name}: ${r.device_counted} exits counted, the guest made ${r.guest_iterations}`);
    }
    if (r.unexplained_exits > 0) problems.push(`${name}: ${r.unexplained_exits} userspace exits nobody expected`);
  }
  return problems;
}

/** A stored report with its targets judged again from its figures (so --from reproduces them). */
function rejudge(report: BenchReport): BenchReport {
  return { ...report, targets: evaluateTargets(report.results, report.baselines.c, report.vm_start, report.machine.cores) };
}

export async function benchCommand(args: string[]): Promise<number> {
  if (args[0] === "virtio") {
    const { virtioBenchCommand } = await import("./virtio-bench.js");
    return virtioBenchCommand(args.slice(1));
  }
  if (args[0] === "boot") {
    const { bootBenchCommand } = await import("./linux-boot-bench.js");
    return bootBenchCommand(args.slice(1));
  }
  let options;
  try {
    options = parseBenchOptions(args);
  } catch (error) {
    if (error instanceof BenchUsageError) {
      process.stderr.write(`workervisor bench: ${error.message}\n\n${BENCH_USAGE}`);
      return 2;
    }
    throw error;
  }
  if (options.help) {
    process.stdout.write(BENCH_USAGE);
    return 0;
  }
  const report = options.from !== undefined
    ? rejudge(readJsonReport(options.from))
    : await runSuite(options, (text) => process.stderr.write(`${text}\n`));
  process.stdout.write(formatTable(report));
  if (options.json !== undefined && options.from === undefined) {
    writeJsonReport(options.json, report);
    process.stderr.write(`bench: JSON written to ${options.json}\n`);
  }
  if (options.svg !== undefined) {
    writeFileSync(options.svg, renderSvg(report));
    process.stderr.write(`bench: SVG written to ${options.svg}\n`);
  }
  const problems = accountingProblems(report);
  for (const problem of problems) process.stderr.write(`bench: ${problem}\n`);
  return problems.length === 0 ? 0 : 1;
}
