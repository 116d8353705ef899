/**
 * Runs `unittests.cfg` entries the way kvm-unit-tests' `run_tests.sh` runs them under
 * QEMU: the same skip rules (arch, nodefault group, host checks, missing kernel), each
 * kernel booted by `workervisor run` with the devices `x86/run` adds, the environment file
 * as the initrd, the entry's vCPUs, `-append` text and timeout, and the same reading of
 * the exit status (1 pass, 77 skip, anything else fail; killed at the timeout).
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseSize } from "../run-command.js";
import type { UnitTestEntry } from "./unittests-cfg.js";
import { ConsoleCapture } from "./console-capture.js";
import { type CpuFeatureChange, hostHasFeature, parseCpuFeatures } from "../boot/cpu-features.js";
import type { CpuidEntry } from "../hypervisor/x86/cpu-state.js";

export type Verdict = "PASS" | "FAIL" | "SKIP" | "TIMEOUT";

export interface EntryResult {
  name: string;
  verdict: Verdict;
  /** The guest's own SUMMARY line, or why the entry was skipped or failed. */
  detail: string;
  /** `workervisor run`'s exit status (undefined when not run or killed). */
  exitStatus?: number;
  seconds: number;
  /** QEMU options of the entry this runner could not apply (it ran without them). */
  ignoredParams: string[];
  /** The end of the guest's console output. */
  consoleTail: string;
}

export interface SuiteOptions {
  /** The hypervisor's supported CPUID, to know which `-cpu +flag`s the host can give. */
  supportedCpuid?: readonly CpuidEntry[];
  /** The kvm-unit-tests build directory (holding x86/unittests.cfg and x86/*.flat). */
  buildDir: string;
  /** Overrides every entry's timeout (seconds), as the TIMEOUT variable does. */
  timeout?: number;
  /** Run `nodefault` entries too (run_tests.sh does when they are asked for by name). */
  includeNodefault?: boolean;
  /**
   * Run every entry with this interrupt-controller placement, as QEMU's
   * `-machine kernel-irqchip=split` would (an entry's own kernel-irqchip= still wins).
   */
  irqchip?: "in-kernel" | "split";
  /** Where each booted entry's whole console goes, as `NAME.log` (created if missing). */
  logDir?: string;
  onResult?: (result: EntryResult) => void;
}

const DEFAULT_TIMEOUT_SECONDS = 90;
const ARCH = "x86_64";
const CONSOLE_TAIL_BYTES = 4096;
/** Devices x86/run always adds; asking for them again changes nothing. */
const RUNNER_DEVICES = new Set(["pc-testdev", "pci-testdev", "isa-debug-exit"]);
const CLI = fileURLToPath(new URL("../cli.js", import.meta.url));

interface Translation {
  memory?: number;
  cpus?: number;
  /** `--cpu-features` for the flags of `-cpu` this host can honour. */
  cpuFeatures?: string;
  noPit?: boolean;
  /** From `-machine kernel-irqchip=on|split`. */
  irqchip?: "in-kernel" | "split";
  ignored: string[];
  /** Set when the entry needs something this machine does not have. */
  unsupported?: string;
}

/** QEMU's `-m` takes MiB by default. */
function qemuMemory(text: string): number {
  return /^\d+$/.test(text) ? Number(text) * 1024 * 1024 : parseSize(text);
}

/**
 * The feature flags of `-cpu MODEL,flag,...` the machine can apply: removals always, and
 * additions the host offers. The model itself, properties (`vendor=`, `host-phys-bits`) and
 * additions the host lacks are reported as not applied: the test then sees the host's CPU
 * and reports its own SKIP for what it misses, as on a host without the feature.
 */
function translateCpu(value: string, supported: readonly CpuidEntry[], out: Translation): void {
  const [model, ...flags] = value.split(",");
  const applied: string[] = [];
  const ignored: string[] = [];
  if (model !== "host" && model !== "max") ignored.push(`model ${model}`);
  for (const flag of flags) {
    let change: CpuFeatureChange;
    try {
      [change] = parseCpuFeatures(flag); // the machine's own reading of QEMU's flag syntax
    } catch {
      ignored.push(flag); // a property (vendor=...) or a feature the machine does not model
      continue;
    }
    if (change === undefined) continue;
    if (change.enable && !hostHasFeature(supported, change.name)) ignored.push(`${flag} (host lacks it)`);
    else applied.push(`${change.enable ? "+" : "-"}${change.name}`);
  }
  if (applied.length) out.cpuFeatures = applied.join(",");
  if (ignored.length) out.ignored.push(`-cpu ${ignored.join(",")}`);
}

/** `-machine a=b,c=d`: false when some property has no equivalent (a machine type like q35 among them). */
function translateMachine(value: string, out: Translation): boolean {
  const changes: Partial<Translation> = {};
  for (const property of value.split(",")) {
    if (property === "pit=off") changes.noPit = true;
    else if (property === "kernel-irqchip=split") changes.irqchip = "split";
    else if (property === "kernel-irqchip=on") changes.irqchip = "in-kernel";
    else return false;
  }
  Object.assign(out, changes);
  return true;
}

/** What of an entry's qemu_params the PC machine can honour. */
export function translateQemuParams(words: string[], supported: readonly CpuidEntry[] = []): Translation {
  const out: Translation = { ignored: [] };
  for (let i = 0; i < words.length; i++) {
    const option = words[i].replace(/^--/, "-");
    const value = words[i + 1];
    switch (option) {
      case "-enable-kvm":
        break;
      case "-m":
        out.memory = qemuMemory((value ?? "").replace(/,.*$/, "").replace(/^size=/, ""));
        i++;
        break;
      case "-smp":
        out.cpus = Number((value ?? "").replace(/,.*$/, "").replace(/^cpus=/, ""));
        i++;
        break;
      case "-cpu":
        translateCpu(value ?? "", supported, out);
        i++;
        break;
      case "-device": {
        const device = (value ?? "").split(",")[0];
        if (!RUNNER_DEVICES.has(device)) out.unsupported ??= `needs QEMU device '${device}', which workervisor does not have`;
        i++;
        break;
      }
      case "-M":
      case "-machine":
        if (!translateMachine(value ?? "", out)) out.unsupported ??= `QEMU option '${words[i]} ${value}' has no workervisor equivalent`;
        i++;
        break;
      case "-global":
        out.ignored.push(`-global ${value}`);
        i++;
        break;
      default:
        out.unsupported ??= `QEMU option '${words[i]}${value !== undefined && !value.startsWith("-") ? ` ${value}` : ""}' has no workervisor equivalent`;
        if (value !== undefined && !value.startsWith("-")) i++;
    }
  }
  return out;
}

/** run_tests.sh's reasons to skip an entry before booting it. */
function skipReason(entry: UnitTestEntry, options: SuiteOptions): string | undefined {
  if (entry.arch !== undefined && entry.arch !== ARCH) return `${entry.arch} only`;
  if (entry.groups.includes("nodefault") && !options.includeNodefault) return "test marked as manual run only";
  if (entry.accel !== undefined && entry.accel !== "kvm") return `${entry.accel} only`;
  if (entry.disabledIf !== undefined) return `disabled_if '${entry.disabledIf}' needs a shell to evaluate`;
  for (const pair of entry.check) {
    const at = pair.indexOf("=");
    const path = pair.slice(0, at);
    const value = pair.slice(at + 1);
    let actual: string | undefined;
    try {
      actual = readFileSync(path, "utf8").trim();
    } catch {
      actual = undefined;
    }
    if (actual !== value) return `${path} not equal to ${value}`;
  }
  return undefined;
}

/**
 * The environment file x86/run passes as -initrd (scripts/arch-run.bash `initrd_create`):
 * the target, the accelerator, the host kernel version and the errata that version has.
 */
export function environmentFile(buildDir: string, kernelRelease = release()): string {
  const [version, patchlevel, rest = ""] = kernelRelease.split(".");
  const sublevel = /^\d+/.exec(rest)?.[0];
  const lines = [
    "TARGET=qemu", "QEMU_ACCEL=kvm", `KERNEL_VERSION_STRING=${kernelRelease}`,
    `KERNEL_VERSION=${version}`, `KERNEL_PATCHLEVEL=${patchlevel}`, ...(sublevel ? [`KERNEL_SUBLEVEL=${sublevel}`] : []),
  ];
  const errata = join(buildDir, "errata.txt");
  if (existsSync(errata)) {
    const host = [Number(version), Number(patchlevel), Number(sublevel ?? 0)];
    for (const line of readFileSync(errata, "utf8").split("\n")) {
      if (line.startsWith("#")) continue;
      const [commit, minimum] = line.split(":").map((s) => s.trim());
      if (!commit || !minimum) continue;
      const wanted = minimum.split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0);
      let have = true;
      for (let i = 0; i < 3; i++) {
        if (host[i] !== (wanted[i] ?? 0)) {
          have = host[i] > (wanted[i] ?? 0);
          break;
        }
      }
      lines.push(`ERRATA_${commit}=${have ? "y" : "n"}`);
    }
  }
  return lines.join("\n") + "\n";
}

interface RunOutcome {
  status?: number;
  timedOut: boolean;
  capture: ConsoleCapture;
}

/** `workervisor run ARGS`, killed at the timeout; its output goes to `capture` as it comes. */
function runOne(args: string[], timeoutSeconds: number, capture: ConsoleCapture): Promise<RunOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "run", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let timedOut = false;
    let failure: Error | undefined;
    // A log file that cannot be written (disk full) ends the entry with that error.
    const take = (write: (chunk: Buffer) => void) => (chunk: Buffer) => {
      if (failure !== undefined) return;
      try {
        write(chunk);
      } catch (error) {
        failure = error as Error;
        child.kill("SIGKILL");
      }
    };
    child.stdout.on("data", take((chunk) => capture.stdout(chunk)));
    child.stderr.on("data", take((chunk) => capture.stderr(chunk)));
    // As `timeout -k 1s`: TERM at the limit, KILL a second later.
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 1000).unref();
    }, timeoutSeconds * 1000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (status) => {
      clearTimeout(timer);
      if (failure !== undefined) reject(failure);
      else resolve({ status: status ?? undefined, timedOut, capture });
    });
  });
}

/** `workervisor run ARGS` with its output in `logDir/NAME.log` too (as run_tests.sh's logs/), when asked. */
async function runLogged(name: string, args: string[], timeoutSeconds: number, logDir: string | undefined): Promise<RunOutcome> {
  if (logDir === undefined) return runOne(args, timeoutSeconds, new ConsoleCapture(CONSOLE_TAIL_BYTES));
  // An entry's name is the cfg's `[name]`: nothing in it may leave the log directory.
  const logFd = openSync(join(logDir, `${name.replace(/[^\w.+-]/g, "_")}.log`), "w");
  try {
    writeSync(logFd, `workervisor run ${args.join(" ")}\n`);
    return await runOne(args, timeoutSeconds, new ConsoleCapture(CONSOLE_TAIL_BYTES, logFd));
  } finally {
    closeSync(logFd);
  }
}

export async function runEntry(entry: UnitTestEntry, options: SuiteOptions, environment: string): Promise<EntryResult> {
  const kernel = join(options.buildDir, "x86", entry.file);
  const base = { name: entry.name, seconds: 0, ignoredParams: [] as string[], consoleTail: "" };
  const skip = skipReason(entry, options);
  if (skip !== undefined) return { ...base, verdict: "SKIP", detail: skip };
  const params = translateQemuParams(entry.qemuParams, options.supportedCpuid);
  if (params.unsupported !== undefined) return { ...base, verdict: "SKIP", detail: params.unsupported, ignoredParams: params.ignored };
  if (!existsSync(kernel)) return { ...base, verdict: "SKIP", detail: `Test file '${kernel}' not found` };
  const args = ["--kernel", kernel, "--cpus", String(params.cpus ?? entry.smp), "--test-devices", "--initrd", environment];
  if (params.memory !== undefined) args.push("--mem", String(params.memory));
  if (params.cpuFeatures !== undefined) args.push(`--cpu-features=${params.cpuFeatures}`);
  if (params.noPit) args.push("--no-pit");
  const irqchip = params.irqchip ?? options.irqchip;
  if (irqchip !== undefined) args.push("--irqchip", irqchip);
  // `=` form: test_args may start with '-' (vmx's "-vmx_init_signal_test"), which a separate argument would not survive.
  if (entry.testArgs !== undefined) args.push(`--append=${entry.testArgs}`);
  const timeout = options.timeout ?? entry.timeout ?? DEFAULT_TIMEOUT_SECONDS;
  const started = performance.now();
  const run = await runLogged(entry.name, args, timeout, options.logDir);
  const seconds = Math.round((performance.now() - started) / 100) / 10;
  const consoleTail = run.capture.consoleTail;
  const common = { ...base, seconds, ignoredParams: params.ignored, consoleTail, exitStatus: run.status };
  if (run.timedOut) return { ...common, verdict: "TIMEOUT", detail: `timeout; duration=${timeout}s`, exitStatus: undefined };
  const summary = run.capture.summary;
  if (run.status === 1) return { ...common, verdict: "PASS", detail: summary };
  if (run.status === 77) return { ...common, verdict: "SKIP", detail: summary };
  // 2: the VM itself failed (a fatal guest exit): its first stderr line says why.
  const reason = run.status === 2 ? run.capture.stderrStart.split("\n")[0].replace(/^workervisor run: /, "") : summary || `exit status ${run.status}`;
  return { ...common, verdict: "FAIL", detail: reason };
}

export async function runSuite(entries: UnitTestEntry[], options: SuiteOptions): Promise<EntryResult[]> {
  const scratch = mkdtempSync(join(tmpdir(), "workervisor-kut-"));
  try {
    if (options.logDir !== undefined) mkdirSync(options.logDir, { recursive: true });
    const environment = join(scratch, "environment");
    writeFileSync(environment, environmentFile(options.buildDir));
    const results: EntryResult[] = [];
    for (const entry of entries) {
      const result = await runEntry(entry, options, environment);
      results.push(result);
      options.onResult?.(result);
    }
    return results;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
