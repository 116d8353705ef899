/**
 * `workervisor kvm-unit-tests BUILD_DIR [--only REGEX] [--timeout S] [--json FILE] [--log-dir DIR]`: the
 * whole kvm-unit-tests x86 suite against workervisor, one line per entry as run_tests.sh
 * prints it, then a summary.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseDuration, parseUnitTestsConfig } from "./unittests-cfg.js";
import { runSuite, type EntryResult, type Verdict } from "./suite-runner.js";
import { openHypervisor } from "../hypervisor/backends.js";

const USAGE = `usage: workervisor kvm-unit-tests BUILD_DIR [--only REGEX] [--timeout S] [--json FILE] [--log-dir DIR]
                                  [--irqchip in-kernel|split]

  BUILD_DIR      a kvm-unit-tests build (./configure && make): x86/unittests.cfg and x86/*.flat
  --only REGEX   run only entries whose name matches (nodefault entries included then)
  --timeout S    every entry's timeout (seconds, or 2m etc.), instead of its own (default 90 s)
  --json FILE    write every entry's result, detail and console tail to FILE
  --log-dir DIR  write each booted entry's whole console to DIR/NAME.log (as run_tests.sh's
                 logs/); without it only the tail needed for the verdict is kept
  --irqchip MODE run every entry with "in-kernel" (default) or "split" interrupt controllers
                 (QEMU's -machine kernel-irqchip=split)

Each entry boots as x86/run starts QEMU: pc-testdev and pci-testdev, the environment
file as initrd, the entry's smp and test_args. Exit status: 0 when no entry failed or
timed out, 1 otherwise, 2 on bad usage.
`;

export async function kvmUnitTestsCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        only: { type: "string" }, timeout: { type: "string" }, json: { type: "string" }, "log-dir": { type: "string" },
        irqchip: { type: "string" }, help: { type: "boolean", short: "h" },
      },
      strict: true,
    });
  } catch (error) {
    process.stderr.write(`workervisor kvm-unit-tests: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    if (positionals.length !== 1) throw new Error(`expected one BUILD_DIR, got ${positionals.length}`);
    const buildDir = positionals[0];
    const cfgPath = join(buildDir, "x86", "unittests.cfg");
    let text: string;
    try {
      text = readFileSync(cfgPath, "utf8");
    } catch {
      throw new Error(`no ${cfgPath}: BUILD_DIR must be a kvm-unit-tests tree built with ./configure && make`);
    }
    let only: RegExp | undefined;
    try {
      only = values.only === undefined ? undefined : new RegExp(values.only);
    } catch (error) {
      throw new Error(`--only: ${(error as Error).message}`);
    }
    const timeout = values.timeout === undefined ? undefined : parseDuration(values.timeout, "--timeout");
    const irqchip = values.irqchip;
    if (irqchip !== undefined && irqchip !== "in-kernel" && irqchip !== "split") throw new Error(`--irqchip: '${irqchip}' is neither 'in-kernel' nor 'split'`);
    const entries = parseUnitTestsConfig(text, cfgPath).filter((e) => only === undefined || only.test(e.name));
    const hypervisor = openHypervisor();
    let supportedCpuid;
    try {
      supportedCpuid = hypervisor.supportedCpuid();
    } finally {
      hypervisor.close();
    }
    const results = await runSuite(entries, {
      buildDir, timeout, logDir: values["log-dir"], includeNodefault: only !== undefined, supportedCpuid, irqchip,
      onResult: (r) => process.stdout.write(formatResult(r) + "\n"),
    });
    process.stdout.write(summaryLine(results) + "\n");
    if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ buildDir, results }, null, 2) + "\n");
    return results.some((r) => r.verdict === "FAIL" || r.verdict === "TIMEOUT") ? 1 : 0;
  } catch (error) {
    process.stderr.write(`workervisor kvm-unit-tests: ${(error as Error).message}\n`);
    return 2;
  }
}

export function formatResult(result: EntryResult): string {
  const detail = result.detail ? ` (${result.detail})` : "";
  const ignored = result.ignoredParams.length ? ` [not applied: ${result.ignoredParams.join(" ")}]` : "";
  return `${result.verdict} ${result.name}${detail}${ignored}`;
}

export function summaryLine(results: EntryResult[]): string {
  const count = (v: Verdict) => results.filter((r) => r.verdict === v).length;
  return `${results.length} entries: ${count("PASS")} PASS, ${count("FAIL")} FAIL, ${count("SKIP")} SKIP, ${count("TIMEOUT")} TIMEOUT`;
}
