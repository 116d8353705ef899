/**
 * The C baseline: builds bench/exit-baseline.c with the system `cc` and runs one job per
 * figure (the guest image, its vCPU state and the device map in a file). Missing compiler
 * or a failing build is reported, never fatal: the suite goes on without ratios.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Segment } from "../runtime/hypervisor/x86/cpu-state.js";
import type { GuestImage } from "./guest-image.js";
import { GUEST_MEMORY_BYTES } from "./layout.js";

const run = promisify(execFile);

const SOURCE = fileURLToPath(new URL("../../bench/exit-baseline.c", import.meta.url));

export interface CBaseline {
  binary: string;
  compiler: string;
  dir: string;
}

export type CBuildResult = { ok: true; baseline: CBaseline } | { ok: false; reason: string };

/** Compiles the baseline into a fresh temporary directory. */
export async function buildCBaseline(): Promise<CBuildResult> {
  const dir = mkdtempSync(join(tmpdir(), "workervisor-bench-"));
  const binary = join(dir, "exit-baseline");
  let compiler: string;
  try {
    const { stdout } = await run("cc", ["--version"]);
    compiler = stdout.split("\n")[0].trim();
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return { ok: false, reason: "no C compiler: `cc` is not on PATH (install gcc or clang for the C baseline)" };
  }
  try {
    await run("cc", ["-O2", "-Wall", "-o", binary, SOURCE, "-lpthread"]);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    const stderr = (error as { stderr?: string }).stderr ?? String(error);
    return { ok: false, reason: `cc failed to build ${SOURCE}: ${stderr.trim().split("\n").slice(0, 5).join(" | ")}` };
  }
  return { ok: true, baseline: { binary, compiler, dir } };
}

export function removeCBaseline(baseline: CBaseline): void {
  rmSync(baseline.dir, { recursive: true, force: true });
}

/** The device map of a job; addresses are per vCPU: base + index × stride. */
export interface CJobDevices {
  markerBase: number;
  finishPort: number;
  maxMarks: number;
  target?: { space: "pio" | "mmio" | "msr"; base: number; stride: number; length: number };
  ioeventfd?: { space: "pio" | "mmio"; base: number; stride: number; size: number };
  userspaceMsrs: boolean;
  /** Busy-wait this long (ns) on the vCPU thread for each target write: a device's work done inline. */
  workNs?: number;
}

export interface CVcpuResult {
  writes: number;
  reads: number;
  hlts: number;
  msrReads: number;
  msrWrites: number;
  markers: number;
  eventfdCount?: number;
  /** Marker timestamps, CLOCK_MONOTONIC nanoseconds. */
  marks: number[];
}

export interface CRunResult {
  /** Create (open /dev/kvm) to the first guest exit. */
  startNs: number;
  vcpus: CVcpuResult[];
}

const hex = (value: bigint | number) => "0x" + value.toString(16);

function segmentLine(name: string, s: Segment): string {
  return `segment ${name} ${hex(s.base)} ${hex(s.limit >>> 0)} ${hex(s.selector)} ${s.type} ${s.present} ${s.dpl} ${s.db} ${s.s} ${s.l} ${s.g} ${s.avl} ${s.unusable}`;
}

/** Writes the job file (and the image it names) into `dir`; returns the job's path. */
function writeJob(dir: string, name: string, image: GuestImage, vcpus: number, devices: CJobDevices): string {
  const imagePath = join(dir, `${name}.img`);
  writeFileSync(imagePath, image.bytes);
  const { registers = {}, specialRegisters = {} } = image.cpuState;
  const lines = [
    `# workervisor exit benchmark job: ${name}`,
    `memory ${hex(GUEST_MEMORY_BYTES)}`,
    `vcpus ${vcpus}`,
    `image 0 ${imagePath}`,
    `rip ${hex(registers.rip ?? 0n)}`,
    `rsp ${hex(registers.rsp ?? 0n)}`,
    `rflags ${hex(registers.rflags ?? 2n)}`,
    ...image.parameterAddresses.slice(0, vcpus).map((address, i) => `rdi ${i} ${hex(address)}`),
  ];
  for (const seg of ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const) {
    const s = specialRegisters[seg];
    if (s) lines.push(segmentLine(seg, s));
  }
  const sr = specialRegisters;
  if (sr.gdt) lines.push(`gdt ${hex(sr.gdt.base)} ${hex(sr.gdt.limit)}`);
  if (sr.idt) lines.push(`idt ${hex(sr.idt.base)} ${hex(sr.idt.limit)}`);
  for (const reg of ["cr0", "cr3", "cr4", "efer"] as const) {
    if (sr[reg] !== undefined) lines.push(`${reg} ${hex(sr[reg]!)}`);
  }
  lines.push(`user_msrs ${devices.userspaceMsrs ? 1 : 0}`);
  lines.push(`marker_base ${hex(devices.markerBase)}`);
  lines.push(`finish_port ${hex(devices.finishPort)}`);
  lines.push(`max_marks ${devices.maxMarks}`);
  if (devices.target) {
    const t = devices.target;
    lines.push(`target ${t.space} ${hex(t.base)} ${hex(t.stride)} ${hex(t.length)}`);
  }
  if (devices.workNs) lines.push(`work_ns ${devices.workNs}`);
  if (devices.ioeventfd) {
    const e = devices.ioeventfd;
    lines.push(`ioeventfd ${e.space} ${hex(e.base)} ${hex(e.stride)} ${e.size}`);
  }
  const jobPath = join(dir, `${name}.job`);
  writeFileSync(jobPath, lines.join("\n") + "\n");
  return jobPath;
}

function parseOutput(stdout: string, vcpus: number): CRunResult {
  const result: CRunResult = { startNs: NaN, vcpus: [] };
  for (let i = 0; i < vcpus; i++) {
    result.vcpus.push({ writes: 0, reads: 0, hlts: 0, msrReads: 0, msrWrites: 0, markers: 0, marks: [] });
  }
  for (const line of stdout.split("\n")) {
    const words = line.trim().split(/\s+/);
    switch (words[0]) {
      case "start_ns":
        result.startNs = Number(words[1]);
        break;
      case "vcpu": {
        const v = result.vcpus[Number(words[1])];
        const field = (key: string) => Number(words[words.indexOf(key) + 1]);
        v.writes = field("writes");
        v.reads = field("reads");
        v.hlts = field("hlts");
        v.msrReads = field("msr_reads");
        v.msrWrites = field("msr_writes");
        v.markers = field("markers");
        break;
      }
      case "eventfd":
        result.vcpus[Number(words[1])].eventfdCount = Number(words[2]);
        break;
      case "marks":
        result.vcpus[Number(words[1])].marks = words.slice(2).map(Number);
        break;
    }
  }
  if (!Number.isFinite(result.startNs)) throw new Error(`exit-baseline printed no start_ns; output was: ${stdout.slice(0, 200)}`);
  return result;
}

let jobs = 0;

/** Runs one job; rejects with the baseline's own message if it fails. */
export async function runCJob(baseline: CBaseline, image: GuestImage, vcpus: number, devices: CJobDevices): Promise<CRunResult> {
  const jobPath = writeJob(baseline.dir, `job-${++jobs}`, image, vcpus, devices);
  try {
    const { stdout } = await run(baseline.binary, [jobPath], { maxBuffer: 256 << 20, timeout: 600_000 });
    return parseOutput(stdout, vcpus);
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr;
    throw new Error(`C baseline failed on ${jobPath}: ${stderr?.trim() || String(error)}`);
  }
}
