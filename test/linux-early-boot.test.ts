/**
 * Debian's cloud kernel (a distribution bzImage, lz4 payload decompressed on the host) on
 * the PC machine, checked against what the machine gave it, from the kernel's own early log:
 * its banner, our command line, our e820 map line by line, KVM detected with kvm-clock, our
 * RSDP, the revision 3 FADT (the one with the reset register) and the DSDT where we put them,
 * and the CPUs from our MADT. Then the host stops the VM and every fd is released.
 * On a PVM host this is as far as a kernel gets in reasonable time (~30 s to smpboot).
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { destroyVcpuPool, warmVcpuPool } from "../runtime/vcpu-pool.js";
import { cacheDir } from "../runtime/assets/cache-dir.js";
import { e820LogLine } from "../runtime/boot/linux/e820-map.js";
import { PVM_KERNEL_PARAMETERS, withKernelParameters } from "../runtime/boot/linux/pvm-fallbacks.js";
import { bootDebianKernel, guestAssetsOrSkip, message, ON_PVM } from "./linux-guest.js";
import { parseSetupHeader, payloadOf } from "../runtime/boot/linux/setup-header.js";

after(() => destroyVcpuPool());

/** Generous: ~15 s to the first line and ~25 s to smpboot on a PVM host with nothing else running. */
const GUARD_MS = 5 * 60_000;
const CMDLINE = "console=ttyS0 earlyprintk=ttyS0 panic=-1 -- echo workervisor-command-ran";
/** This process's fds on /dev/kvm, KVM VMs and vCPUs (the vCPU pool's idle threads come and go, so only these are counted). */
function kvmFds(): number {
  let count = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (/^(\/dev\/kvm$|anon_inode:kvm-(vm|vcpu))/.test(readlinkSync(`/proc/self/fd/${fd}`))) count++;
    } catch {
      // closed while we looked
    }
  }
  return count;
}
const kernelCache = join(cacheDir(), "kernels");

/** "0x00000000000E1760": an address as the kernel's ACPI table listing prints it. */
function acpiAddress(address: number): string {
  return `0x${address.toString(16).toUpperCase().padStart(16, "0")}`;
}

/** Where the machine put its FADT and DSDT, and their lengths, found as the kernel finds them. */
function fadtAndDsdt(memory: { readU32(gpa: number): number }, rsdp: number): { fadt: number; fadtLength: number; dsdt: number; dsdtLength: number } {
  const rsdt = memory.readU32(rsdp + 16);
  const fadt = memory.readU32(rsdt + 36);
  const dsdt = memory.readU32(fadt + 40);
  return { fadt, fadtLength: memory.readU32(fadt + 4), dsdt, dsdtLength: memory.readU32(dsdt + 4) };
}

for (const cpus of [1, 2]) {
  test(`Debian cloud kernel, ${cpus} vCPU${cpus > 1 ? "s" : ""}: the early log reports the machine we built, then the host stops it`, { timeout: 2 * GUARD_MS }, async (t) => {
    const assets = guestAssetsOrSkip(t);
    if (!assets) return;
    await warmVcpuPool(cpus);
    assert.equal(kvmFds(), 0, "no VM is alive before this one");
    const { machine, console, result } = bootDebianKernel(assets, { cpus, cmdline: CMDLINE, kernelCacheDir: kernelCache });
    try {
      const linux = machine.linux!;
      assert.equal(linux.format, "bzImage");
      assert.equal(linux.entryPath, "vmlinux", "the payload was decompressed on the host");
      assert.equal(linux.payloadFormat, "lz4");
      if (cpus === 2) assert.equal(linux.decompressedFromCache, true, "the first test's boot left the vmlinux in the cache");

      await console.waitFor(new RegExp(`smpboot: Allowing ${cpus} CPUs`), GUARD_MS);
      const log = console.lines.map(message);
      const at = (prefix: string) => {
        const index = log.findIndex((line) => line.startsWith(prefix));
        assert.ok(index >= 0, `no '${prefix}' line in:\n${console.tail(40)}`);
        return index;
      };
      const banner = at("Linux version 6.");
      const commandLine = at("Command line: ");
      // On PVM the machine adds its fallback parameters before "--"; nothing else changes.
      assert.equal(linux.cmdline, ON_PVM ? withKernelParameters(CMDLINE, PVM_KERNEL_PARAMETERS) : CMDLINE);
      assert.equal(log[commandLine], `Command line: ${linux.cmdline}`);
      const e820 = log.filter((line) => line.startsWith("BIOS-e820: "));
      assert.deepEqual(e820, linux.e820.map(e820LogLine), "every BIOS-e820 line is one of our entries, in order");
      const hypervisor = at("Hypervisor detected: KVM");
      const kvmClock = at("kvm-clock: Using msrs");
      at("clocksource: kvm-clock:");
      const rsdp = at(`ACPI: RSDP ${acpiAddress(linux.rsdpAddress)} `);
      const tables = fadtAndDsdt(machine.vm.memory, linux.rsdpAddress);
      const hex6 = (n: number) => n.toString(16).toUpperCase().padStart(6, "0");
      at(`ACPI: FACP ${acpiAddress(tables.fadt)} ${hex6(tables.fadtLength)} (v03 WRKVSR WORKVISR`);
      at(`ACPI: DSDT ${acpiAddress(tables.dsdt)} ${hex6(tables.dsdtLength)} (v01 WRKVSR WORKVISR`);
      assert.ok(tables.dsdtLength > 36, "the DSDT holds AML");
      at("ACPI: Using ACPI (MADT) for SMP configuration information");
      const smpboot = at(`smpboot: Allowing ${cpus} CPUs, 0 hotplug CPUs`);
      assert.ok(banner < commandLine && commandLine < at("BIOS-e820: ") && at("BIOS-e820: ") < hypervisor, "setup_arch's order");
      assert.ok(hypervisor < kvmClock && kvmClock < rsdp && rsdp < smpboot, "the platform is probed before the CPUs are counted");
      assert.equal(log.filter((line) => /Allowing \d+ CPUs/.test(line)).length, 1);
      assert.ok(machine.vm.stats.exits > 0);
      assert.equal(kvmFds(), 2 + cpus, "the VM holds /dev/kvm, its own fd and one per vCPU");
    } finally {
      const stopped = await machine.stop();
      assert.deepEqual(stopped, { reason: "stopped" });
    }
    assert.deepEqual(await result, { reason: "stopped" });
    assert.equal(machine.vm.state, "stopped");
    assert.equal(kvmFds(), 0, "the VM's and its vCPUs' fds are closed");
  });
}

test("Debian generic kernel (an xz payload, x86 BCJ): decompressed here byte for byte as xz does, then it boots to its banner", { timeout: 2 * GUARD_MS }, async (t) => {
  const assets = guestAssetsOrSkip(t);
  if (!assets) return;
  const cache = mkdtempSync(join(tmpdir(), "wv-generic-"));
  try {
    const { machine, console, result } = bootDebianKernel(assets, { cpus: 1, cmdline: CMDLINE, kernelCacheDir: cache, kernel: "generic" });
    try {
      const linux = machine.linux!;
      assert.equal(linux.payloadFormat, "xz");
      assert.equal(linux.entryPath, "vmlinux", "the payload was decompressed on the host");
      // xz's own decoder on the same payload (its last 4 bytes are Linux's appended size).
      const image = readFileSync(assets.genericKernel);
      const payload = payloadOf(image, parseSetupHeader(image));
      const reference = execFileSync("xz", ["-dc", "--single-stream"], { input: payload.subarray(0, payload.length - 4), maxBuffer: 1 << 30 });
      const [cached] = readdirSync(cache);
      assert.ok(Buffer.from(readFileSync(join(cache, cached))).equals(reference), "our vmlinux equals xz -dc's");
      await console.waitFor(/Command line: /, GUARD_MS);
      const log = console.lines.map(message);
      assert.ok(log.some((line) => /^Linux version 6\.\S+-amd64 /.test(line)), `no generic kernel banner in:\n${console.tail(20)}`);
      assert.ok(log.includes(`Command line: ${linux.cmdline}`));
    } finally {
      await machine.stop();
    }
    assert.deepEqual(await result, { reason: "stopped" });
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});
