/**
 * `workervisor bench boot`: how long the Debian cloud kernel takes from `run` to its first
 * line ("Linux version") and to "smpboot: Allowing N CPUs", on workervisor (bzImage, payload
 * decompressed on the host, cached) and on QEMU `-M microvm` with KVM when it is installed,
 * given the same bzImage (its own decompressor) and the extracted vmlinux (PVH entry), with
 * the same initrd and command line. Each figure is the median of --runs boots.
 */
import { median } from "./paired-ratios.js";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PcMachine } from "../runtime/pc-machine.js";
import { ensureGuestAssets } from "../runtime/assets/guest-assets.js";
import { cacheDir } from "../runtime/assets/cache-dir.js";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";

const FIRST_LINE = /Linux version /;
const GUARD_MS = 10 * 60_000;
const USAGE = `usage: workervisor bench boot [--runs N] [--cpus N] [--no-qemu]

Times the Debian cloud kernel (fetched into .cache/ on first use) to its first line and to
smpboot, on workervisor and on QEMU -M microvm (bzImage, and the vmlinux by PVH).
`;

interface BootTimes {
  firstLineMs: number;
  smpbootMs: number;
}

type Peer = "workervisor bzImage (host-decompressed)" | "QEMU microvm bzImage" | "QEMU microvm vmlinux (PVH)";

/** Feeds console bytes in; resolves the times of the two lines, measured from `start`. */
function lineClock(start: number, cpus: number) {
  const smpboot = new RegExp(`smpboot: Allowing ${cpus} CPUs`);
  let partial = "";
  let firstLineMs: number | undefined;
  let resolve!: (times: BootTimes) => void;
  const done = new Promise<BootTimes>((r) => (resolve = r));
  const push = (byte: number) => {
    if (byte !== 10) {
      partial += String.fromCharCode(byte);
      return;
    }
    const now = performance.now() - start;
    if (firstLineMs === undefined && FIRST_LINE.test(partial)) firstLineMs = now;
    if (firstLineMs !== undefined && smpboot.test(partial)) resolve({ firstLineMs, smpbootMs: now });
    partial = "";
  };
  return { push, done };
}

function withGuard<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const guard = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no smpboot line within ${GUARD_MS / 1000} s`)), GUARD_MS)));
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

async function bootWorkervisor(kernel: string, initrd: string, cmdline: string, cpus: number): Promise<{ times: BootTimes; cmdline: string }> {
  const start = performance.now();
  const clock = lineClock(start, cpus);
  const machine = new PcMachine({
    kernel: readFileSync(kernel), kernelName: "bzImage", initrd: readFileSync(initrd), cmdline, cpus,
    memory: 256 * 1024 * 1024, kernelCacheDir: join(cacheDir(), "kernels"), console: clock.push,
  });
  const ended = machine.run().then((result) => Promise.reject(new Error(`workervisor: the VM ended (${result.reason}) before smpboot`)));
  ended.catch(() => {}); // raced below; a stop after smpboot is expected
  try {
    const times = await withGuard(Promise.race([clock.done, ended]), "workervisor");
    return { times, cmdline: machine.linux!.cmdline };
  } finally {
    await machine.stop();
  }
}

async function bootQemu(kernel: string, initrd: string, cmdline: string, cpus: number): Promise<BootTimes> {
  const start = performance.now();
  const clock = lineClock(start, cpus);
  const qemu = spawn("qemu-system-x86_64", [
    "-M", "microvm,acpi=on", "-accel", "kvm", "-m", "256M", "-smp", String(cpus), "-nodefaults", "-no-user-config",
    "-nographic", "-serial", "stdio", "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
  ], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  qemu.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  qemu.stdout.on("data", (chunk: Buffer) => chunk.forEach(clock.push));
  const exited = new Promise<never>((_, reject) => {
    qemu.on("error", reject);
    qemu.on("exit", (code) => reject(new Error(`QEMU exited (${code}) before smpboot: ${stderr.trim()}`)));
  });
  try {
    return await withGuard(Promise.race([clock.done, exited]), "QEMU");
  } finally {
    qemu.kill("SIGKILL");
  }
}

async function qemuInstalled(): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = spawn("qemu-system-x86_64", ["--version"], { stdio: "ignore" });
    probe.on("error", () => resolve(false));
    probe.on("exit", (code) => resolve(code === 0));
  });
}

export async function bootBenchCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { runs: { type: "string" }, cpus: { type: "string" }, "no-qemu": { type: "boolean" }, help: { type: "boolean", short: "h" } }, strict: true }));
  } catch (error) {
    process.stderr.write(`workervisor bench boot: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const runs = Number(values.runs ?? 3);
  const cpus = Number(values.cpus ?? 1);
  if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(cpus) || cpus < 1) {
    process.stderr.write(`workervisor bench boot: --runs and --cpus take whole numbers of at least 1\n${USAGE}`);
    return 2;
  }
  const assets = ensureGuestAssets({ log: (line) => process.stderr.write(`guest-fetch: ${line}\n`) });
  const log = (line: string) => process.stderr.write(`bench boot: ${line}\n`);
  const results = new Map<Peer, BootTimes[]>();
  const record = (peer: Peer, times: BootTimes) => {
    results.set(peer, [...(results.get(peer) ?? []), times]);
    log(`${peer}: first line ${(times.firstLineMs / 1000).toFixed(2)} s, smpboot ${(times.smpbootMs / 1000).toFixed(2)} s`);
  };
  const userCmdline = "console=ttyS0 earlyprintk=ttyS0";
  let cmdline = userCmdline;
  try {
    for (let run = 0; run < runs; run++) {
      const ours = await bootWorkervisor(assets.kernel, assets.initrd, userCmdline, cpus);
      cmdline = ours.cmdline; // QEMU gets exactly what our kernel got (PVM fallbacks included)
      record("workervisor bzImage (host-decompressed)", ours.times);
    }
  } finally {
    await destroyVcpuPool();
  }
  if (!values["no-qemu"] && (await qemuInstalled())) {
    const vmlinux = readdirSync(join(cacheDir(), "kernels")).find((name) => name.endsWith(".vmlinux"));
    for (let run = 0; run < runs; run++) {
      record("QEMU microvm bzImage", await bootQemu(assets.kernel, assets.initrd, cmdline, cpus));
      if (vmlinux) record("QEMU microvm vmlinux (PVH)", await bootQemu(join(cacheDir(), "kernels", vmlinux), assets.initrd, cmdline, cpus));
    }
  } else {
    log("QEMU not run (--no-qemu, or qemu-system-x86_64 not installed)");
  }
  const ours = results.get("workervisor bzImage (host-decompressed)")!;
  const oursFirst = median(ours.map((t) => t.firstLineMs));
  const oursSmp = median(ours.map((t) => t.smpbootMs));
  process.stdout.write(`Debian cloud kernel ${assets.kernelVersion}, ${cpus} vCPU, median of ${runs}; command line: ${cmdline}\n`);
  process.stdout.write(`${"peer".padEnd(42)}${"first line".padStart(12)}${"smpboot".padStart(12)}${"ours/peer".padStart(22)}\n`);
  for (const [peer, times] of results) {
    const first = median(times.map((t) => t.firstLineMs));
    const smp = median(times.map((t) => t.smpbootMs));
    const ratio = peer.startsWith("workervisor") ? "" : `${(oursFirst / first).toFixed(2)} / ${(oursSmp / smp).toFixed(2)}`;
    process.stdout.write(`${peer.padEnd(42)}${`${(first / 1000).toFixed(2)} s`.padStart(12)}${`${(smp / 1000).toFixed(2)} s`.padStart(12)}${ratio.padStart(22)}\n`);
  }
  return 0;
}
