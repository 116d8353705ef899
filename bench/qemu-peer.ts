/**
 * The QEMU peer: boots bench/qemu-image.ts with `qemu-system-x86_64 -accel kvm` once and
 * times the exit loops from outside. Each marker is one byte on isa-debugcon, read by us
 * through a pipe and timestamped on arrival. Per exit, per program, from the difference
 * of two iteration counts: a calibration round is a batch with 0 exits, a measured batch
 * one with K, so
 *     per-exit = (T(B batches of K) - (B / C) * T(C rounds of 0)) / (B * K)
 * with T taken between phase-boundary bytes only (pipe latency is paid once per phase, not
 * per exit). The same exit loop repeated gives the spread; no per-exit distribution.
 * Targets QEMU handles itself: unassigned port and MMIO ranges (userspace exits), CPUID (in
 * KVM). HLT, MSRs and ioeventfds have no equivalent without devices, so they are not run.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { RunCounts } from "./figures.js";
import type { ExitKindName, GuestPrivilege } from "./guest-programs.js";
import { buildQemuImage, QEMU_DEBUG_EXIT_PORT, QEMU_MARKER_PORT, type QemuProgram } from "./qemu-image.js";
import { mean, percentile } from "./stats.js";

const QEMU_BINARY = "qemu-system-x86_64";
export const QEMU_KINDS: readonly ExitKindName[] = ["pio-write", "pio-read", "mmio-write", "mmio-read", "cpuid"];

export interface QemuInfo {
  binary: string;
  version: string;
}

export interface QemuFigure {
  kind: ExitKindName;
  privilege: GuestPrivilege;
  counts: RunCounts;
  /** Per-exit ns of each repetition. */
  repeatsNs: number[];
  meanNs: number;
  p50Ns: number;
}

export interface QemuRun {
  info: QemuInfo;
  /** Boot to the first marker: firmware, option ROM and stub (emulated on PVM). */
  bootMs: number;
  figures: QemuFigure[];
}

/** The QEMU on PATH (or `binary`), or undefined when it is not installed. */
export async function findQemu(binary = QEMU_BINARY): Promise<QemuInfo | undefined> {
  try {
    const { stdout } = await promisify(execFile)(binary, ["--version"], { timeout: 10_000 });
    return { binary, version: stdout.split("\n")[0].trim() };
  } catch {
    return undefined;
  }
}

interface Arrival {
  /** hrtime ns at which byte i arrived. */
  times: Float64Array;
  count: number;
}

async function boot(info: QemuInfo, kernel: string, expectedBytes: number, timeoutMs: number): Promise<{ arrival: Arrival; started: number }> {
  const args = [
    "-accel", "kvm", "-M", "pc", "-m", "64", "-smp", "1",
    "-nodefaults", "-no-reboot", "-display", "none", "-serial", "none", "-monitor", "none",
    "-chardev", "stdio,id=markers,signal=off",
    "-device", `isa-debugcon,iobase=0x${QEMU_MARKER_PORT.toString(16)},chardev=markers`,
    "-device", `isa-debug-exit,iobase=0x${QEMU_DEBUG_EXIT_PORT.toString(16)},iosize=4`,
    "-kernel", kernel,
  ];
  const arrival: Arrival = { times: new Float64Array(expectedBytes + 64), count: 0 };
  const started = Number(process.hrtime.bigint());
  const child = spawn(info.binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    const now = Number(process.hrtime.bigint());
    for (let i = 0; i < chunk.length; i++) {
      if (arrival.count < arrival.times.length) arrival.times[arrival.count] = now;
      arrival.count++;
    }
  });
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (exitCode) => resolve(exitCode));
  }).finally(() => clearTimeout(timer));
  // isa-debug-exit: QEMU exits with (status << 1) | 1; the guest writes 0.
  if (code !== 1) {
    throw new Error(`QEMU exited with ${code === null ? "a signal (timeout?)" : `code ${code}`}, expected 1 from isa-debug-exit${stderr ? `: ${stderr.trim().slice(0, 300)}` : ""}`);
  }
  if (arrival.count !== expectedBytes) {
    throw new Error(`QEMU guest sent ${arrival.count} marker bytes, expected ${expectedBytes}`);
  }
  return { arrival, started };
}

/** Runs every program `repeats` times in one boot. */
export async function runQemuPeer(
  info: QemuInfo,
  programs: readonly QemuProgram[],
  repeats: number,
  timeoutMs = 300_000,
): Promise<QemuRun> {
  const chain: QemuProgram[] = [];
  for (let r = 0; r < repeats; r++) chain.push(...programs);
  const image = buildQemuImage(chain);
  const dir = mkdtempSync(join(tmpdir(), "workervisor-qemu-"));
  try {
    const kernel = join(dir, "exit-loops.multiboot");
    writeFileSync(kernel, image.file);
    const markers = (p: QemuProgram) => p.counts.warmupBatches + p.counts.calibrationRounds + p.counts.measuredBatches + 1;
    const total = image.order.reduce((n, p) => n + markers(p), 0);
    const { arrival, started } = await boot(info, kernel, total, timeoutMs);
    const figures = new Map<string, QemuFigure>();
    let first = 0;
    image.order.forEach((p) => {
      const { warmupBatches: w, calibrationRounds: c, measuredBatches: b, opsPerBatch: k } = p.counts;
      const offset = first;
      first += markers(p);
      const at = (index: number) => arrival.times[offset + index];
      const calibration = at(w + c) - at(w);
      const measured = at(w + c + b) - at(w + c);
      const perExit = (measured - (b / c) * calibration) / (b * k);
      const key = `${p.kind}/${p.privilege}`;
      if (!figures.has(key)) figures.set(key, { ...p, repeatsNs: [], meanNs: NaN, p50Ns: NaN });
      figures.get(key)!.repeatsNs.push(perExit);
    });
    for (const f of figures.values()) {
      f.meanNs = mean(f.repeatsNs);
      f.p50Ns = percentile([...f.repeatsNs].sort((x, y) => x - y), 50);
    }
    return { info, bootMs: (arrival.times[0] - started) / 1e6, figures: [...figures.values()] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One figure per program from several boots: their repeats pooled, in boot order. */
export function mergeQemuRuns(runs: readonly QemuRun[]): QemuFigure[] {
  const merged = new Map<string, QemuFigure>();
  for (const run of runs) {
    for (const f of run.figures) {
      const key = `${f.kind}/${f.privilege}`;
      const into = merged.get(key);
      if (into) into.repeatsNs.push(...f.repeatsNs);
      else merged.set(key, { ...f, repeatsNs: [...f.repeatsNs] });
    }
  }
  for (const f of merged.values()) {
    f.meanNs = mean(f.repeatsNs);
    f.p50Ns = percentile([...f.repeatsNs].sort((x, y) => x - y), 50);
  }
  return [...merged.values()];
}

export function qemuPrograms(
  kinds: readonly ExitKindName[],
  privileges: readonly GuestPrivilege[],
  countsFor: (kind: ExitKindName) => RunCounts,
): QemuProgram[] {
  const programs: QemuProgram[] = [];
  for (const privilege of privileges) {
    for (const kind of kinds) if (QEMU_KINDS.includes(kind)) programs.push({ kind, privilege, counts: countsFor(kind) });
  }
  return programs;
}
