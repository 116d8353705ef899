/**
 * Running any guest-kit kernel that reports on COM1 in `key=value` lines (the report format
 * of virtio-guest.ts) under the PC machine, or under QEMU -M microvm against QEMU's devices.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { PcMachine, type PcMachineOptions } from "../../runtime/pc-machine.js";
import { buildMultibootGuest, type MultibootBuild } from "./flat-guest.js";
import { GUEST_MEMORY_MIB, parseReport, type GuestReport } from "./virtio-guest.js";

export { GUEST_MEMORY_MIB, parseReport, type GuestReport } from "./virtio-guest.js";

/** A PC machine running `guests/<name>.c` built with `defines` (and `build`); its COM1 output collected. */
export function guestMachine(name: string, defines: Record<string, number>, options: Partial<PcMachineOptions> = {}, build: MultibootBuild = {}): { machine: PcMachine; output: () => string } {
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest(name, defines, build)), console: (b) => bytes.push(b), memory: GUEST_MEMORY_MIB << 20, ...options,
  });
  return { machine, output: () => Buffer.from(bytes).toString("latin1") };
}

/** Runs the machine to its debug exit and parses what the guest said. */
export async function runToReport(guest: { machine: PcMachine; output: () => string }): Promise<GuestReport> {
  const result = await guest.machine.run();
  assert.equal(result.reason, "debug-exit", `the guest ended by ${result.reason} ${result.detail ?? ""}: ${guest.output()}`);
  return parseReport(result.status, guest.output());
}

const qemuVersion = spawnSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" });
/** A skip reason when QEMU cannot run here, else false. */
export const noQemu = qemuVersion.error || qemuVersion.status !== 0 ? "qemu-system-x86_64 is not installed (Debian: apt-get install -y qemu-system-x86)" : false;

/** QEMU's arguments for a guest-kit kernel on microvm (or `machine`) with version-2 virtio-mmio transports. */
export function qemuArgs(kernel: string, deviceArgs: string[], machine = "microvm"): string[] {
  return [
    "-accel", "kvm", "-M", machine, "-m", String(GUEST_MEMORY_MIB), "-nodefaults", "-no-reboot", "-display", "none",
    "-serial", "stdio", "-monitor", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    // Version 2 (virtio 1.x) transports, as ours; QEMU's default is the legacy version 1.
    "-global", "virtio-mmio.force-legacy=false", ...deviceArgs, "-kernel", kernel,
  ];
}

export interface QemuGuestOptions {
  timeoutMs?: number;
  build?: MultibootBuild;
  /** QEMU's -M; default microvm. */
  machine?: string;
}

/** Runs QEMU (asynchronously, so several can talk) to the guest's debug exit. */
export function runQemuGuest(name: string, defines: Record<string, number>, deviceArgs: string[], options: QemuGuestOptions = {}): Promise<GuestReport> {
  const timeoutMs = options.timeoutMs ?? 90_000;
  const kernel = buildMultibootGuest(name, defines, options.build);
  const child = spawn("qemu-system-x86_64", qemuArgs(kernel, deviceArgs, options.machine), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("latin1").on("data", (s: string) => { stdout += s; });
  child.stderr.setEncoding("latin1").on("data", (s: string) => { stderr += s; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (error) => { clearTimeout(timer); reject(error); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // isa-debug-exit ends QEMU with (status << 1) | 1.
      if (code === null || (code & 1) !== 1) {
        reject(new Error(`QEMU ended with ${code ?? signal} (not by debug-exit): ${stderr} ${stdout}`));
        return;
      }
      resolve(parseReport(code >> 1, stdout));
    });
  });
}
