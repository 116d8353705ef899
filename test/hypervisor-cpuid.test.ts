/**
 * Hypervisor CPUID leaves, configurable: a guest of our own (guests/hypervisor-cpuid.c)
 * reads the 0x40000000 range back under each configuration and tries KVM's two kvmclock
 * MSRs (a withheld feature must raise #GP), and kvm-unit-tests' kvmclock_test uses kvmclock
 * only when it is offered.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { PcMachine } from "../runtime/pc-machine.js";
import { Vm } from "../runtime/vm.js";
import { VmConfigError } from "../runtime/errors.js";
import { openHypervisor } from "../runtime/hypervisor/backends.js";
import { withHypervisorLeaves, type HypervisorCpuidOptions } from "../runtime/boot/hypervisor-cpuid.js";
import { parseHypervisorCpuidSpec } from "../runtime/boot/hypervisor-cpuid-spec.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";

const CLI = fileURLToPath(new URL("../runtime/cli.js", import.meta.url));
const KVMCLOCK_TEST = fileURLToPath(new URL("../../../shared/kvm-unit-tests/kvmclock_test.flat", import.meta.url));
const HYPERVISOR_PRESENT = 1 << 31;

interface Leaf { eax: number; ebx: number; ecx: number; edx: number }
const MSR_KVM_SYSTEM_TIME = 0x11; // needs KVM_FEATURE_CLOCKSOURCE
const MSR_KVM_SYSTEM_TIME_NEW = 0x4b56_4d01; // needs KVM_FEATURE_CLOCKSOURCE2

interface Probe {
  leaves: Map<number, Leaf>;
  /** MSR index -> whether the guest's WRMSR raised #GP. */
  msrFaults: Map<number, boolean>;
  /** The TSC rate the guest measured against the ACPI PM timer, in kHz. */
  measuredTscKHz: number;
}

const PM_TIMER_HZ = 3_579_545;

async function boot(kernel: string, options: { cpus?: number; append?: string; hypervisorCpuid?: HypervisorCpuidOptions }) {
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(kernel), kernelName: kernel, console: (b) => bytes.push(b), ...options,
  });
  const result = await machine.run();
  return { result, console: Buffer.from(bytes).toString("latin1") };
}

/** Runs the probe guest and parses its "cpuid LEAF: EAX EBX ECX EDX" and "msr INDEX: ok|gp" lines. */
async function probe(hypervisorCpuid?: HypervisorCpuidOptions): Promise<Probe> {
  const run = await boot(buildMultibootGuest("hypervisor-cpuid"), { hypervisorCpuid });
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
  assert.match(run.console, /^done$/m);
  const leaves = new Map<number, Leaf>();
  for (const match of run.console.matchAll(/^cpuid ([0-9a-f]{8}): ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8})$/gm)) {
    const [eax, ebx, ecx, edx] = match.slice(2).map((h) => Number.parseInt(h, 16));
    leaves.set(Number.parseInt(match[1], 16), { eax, ebx, ecx, edx });
  }
  const msrFaults = new Map<number, boolean>();
  for (const match of run.console.matchAll(/^msr ([0-9a-f]{8}): (ok|gp)$/gm)) msrFaults.set(Number.parseInt(match[1], 16), match[2] === "gp");
  assert.equal(msrFaults.size, 2, `the guest reported ${msrFaults.size} of its 2 MSR probes`);
  const timing = /^timing ([0-9a-f]{16}) ([0-9a-f]{8})$/m.exec(run.console);
  assert.ok(timing, "the guest reported no TSC measurement");
  const measuredTscKHz = (Number.parseInt(timing[1], 16) * PM_TIMER_HZ) / Number.parseInt(timing[2], 16) / 1000;
  return { leaves, msrFaults, measuredTscKHz };
}

function signatureOf(leaf: Leaf): string {
  const bytes = Buffer.alloc(12);
  bytes.writeUInt32LE(leaf.ebx, 0);
  bytes.writeUInt32LE(leaf.ecx, 4);
  bytes.writeUInt32LE(leaf.edx, 8);
  return bytes.toString("latin1");
}

function hostKvmFeatures(): number {
  const hypervisor = openHypervisor();
  try {
    return hypervisor.supportedCpuid().find((e) => e.function === 0x4000_0001)?.eax ?? 0;
  } finally {
    hypervisor.close();
  }
}

test("by default the guest sees KVM's signature and every PV feature the host offers", async () => {
  const { leaves, msrFaults } = await probe();
  assert.equal(signatureOf(leaves.get(0x4000_0000)!), "KVMKVMKVM\0\0\0");
  assert.equal(leaves.get(0x4000_0000)!.eax, 0x4000_0001);
  assert.equal(leaves.get(0x4000_0001)!.eax, hostKvmFeatures());
  assert.notEqual(leaves.get(1)!.ecx & HYPERVISOR_PRESENT, 0);
  assert.deepEqual([...msrFaults], [[MSR_KVM_SYSTEM_TIME, false], [MSR_KVM_SYSTEM_TIME_NEW, false]]);
});

test("chosen KVM features, a frequency leaf and the highest leaf read back as configured, and only chosen features work", async () => {
  const { leaves, msrFaults } = await probe({
    signature: "kvm", kvmFeatures: ["clocksource2", "pv-eoi"], frequencies: { tscKHz: 2_100_000, apicKHz: 1_000_000 },
  });
  assert.equal(signatureOf(leaves.get(0x4000_0000)!), "KVMKVMKVM\0\0\0");
  assert.equal(leaves.get(0x4000_0000)!.eax, 0x4000_0010, "highest leaf defaults to the highest offered");
  assert.equal(leaves.get(0x4000_0001)!.eax, (1 << 3) | (1 << 6));
  assert.deepEqual(leaves.get(0x4000_0010), { eax: 2_100_000, ebx: 1_000_000, ecx: 0, edx: 0 });
  // KVM enforces what CPUID offers: the withheld old kvmclock MSR raises #GP.
  assert.deepEqual([...msrFaults], [[MSR_KVM_SYSTEM_TIME, true], [MSR_KVM_SYSTEM_TIME_NEW, false]]);
});

test('frequencies "host" offers the TSC rate the guest measures against the PM timer, and KVM\'s 1 GHz APIC bus', async () => {
  const { leaves, measuredTscKHz } = await probe({ frequencies: "host" });
  const timing = leaves.get(0x4000_0010)!;
  assert.equal(leaves.get(0x4000_0000)!.eax, 0x4000_0010);
  assert.equal(timing.ebx, 1_000_000);
  // The guest brackets each PM timer read with TSC reads and drops slow ones, so its error is
  // well under 1% of its 100 ms window; 5% still tells kHz from a wrong unit or a made-up rate.
  const ratio = measuredTscKHz / timing.eax;
  assert.ok(ratio > 0.95 && ratio < 1.05, `the leaf says ${timing.eax} kHz, the guest measured ${Math.round(measuredTscKHz)} kHz`);
});

test("a caller's own signature comes without KVM's feature leaf; the highest leaf may be raised", async () => {
  const { leaves, msrFaults } = await probe({ signature: "OwnHypervisr", frequencies: { tscKHz: 5, apicKHz: 6 }, maxLeaf: 0x4000_0020 });
  assert.equal(signatureOf(leaves.get(0x4000_0000)!), "OwnHypervisr");
  assert.equal(leaves.get(0x4000_0000)!.eax, 0x4000_0020);
  assert.deepEqual(leaves.get(0x4000_0001), { eax: 0, ebx: 0, ecx: 0, edx: 0 });
  assert.deepEqual(leaves.get(0x4000_0010), { eax: 5, ebx: 6, ecx: 0, edx: 0 });
  assert.ok(leaves.has(0x4000_0020), "the guest also read the highest leaf it was told about");
  assert.deepEqual([...msrFaults], [[MSR_KVM_SYSTEM_TIME, true], [MSR_KVM_SYSTEM_TIME_NEW, true]]);
});

test("with the signature hidden the guest sees no hypervisor leaves and no hypervisor bit", async () => {
  const { leaves, msrFaults } = await probe({ signature: "none" });
  assert.equal(leaves.get(1)!.ecx & HYPERVISOR_PRESENT, 0);
  // Out of range, a CPU answers zeros (AMD) or its highest basic leaf (Intel): never a
  // signature, never a highest hypervisor leaf.
  for (const fn of [0x4000_0000, 0x4000_0001, 0x4000_0010]) {
    const leaf = leaves.get(fn)!;
    assert.ok(leaf.eax < 0x4000_0000, `leaf ${fn.toString(16)} names a hypervisor range (eax 0x${leaf.eax.toString(16)})`);
  }
  assert.deepEqual([...msrFaults], [[MSR_KVM_SYSTEM_TIME, true], [MSR_KVM_SYSTEM_TIME_NEW, true]], "no KVM PV MSRs either");
  assert.doesNotMatch(signatureOf(leaves.get(0x4000_0000)!), /KVM/);
});

test("bad hypervisor CPUID options name the cause", () => {
  const create = (hypervisorCpuid: HypervisorCpuidOptions) => () => Vm.create({ memory: 1 << 20, hypervisorCpuid });
  assert.throws(create({ kvmFeatures: ["warp-drive" as never] }), (e: Error) =>
    e instanceof VmConfigError && /unknown KVM paravirtual feature 'warp-drive'/.test(e.message));
  assert.throws(create({ signature: "Thirteen chars" }), /1 to 12 ASCII characters/);
  assert.throws(create({ signature: "OwnHypervisr", kvmFeatures: ["pv-eoi"] }), /only under KVM's signature/);
  assert.throws(create({ frequencies: { tscKHz: 1, apicKHz: 1 }, maxLeaf: 0x4000_0001 }), /hides the frequency leaf/);
  assert.throws(create({ signature: "none", maxLeaf: 0x4000_0001 }), /offers no hypervisor leaves/);
  assert.throws(create({ maxLeaf: 0x4000_0100 }), /maxLeaf must be from 0x40000000 to 0x400000ff/);
  assert.throws(() => parseHypervisorCpuidSpec("tsc-khz=5"), /tsc-khz and apic-khz go together/);
  assert.throws(() => parseHypervisorCpuidSpec("colour=blue"), /unknown key 'colour'/);
  assert.throws(() => parseHypervisorCpuidSpec("frequencies=host,tsc-khz=1,apic-khz=2"), /contradict each other/);
  assert.throws(() => withHypervisorLeaves([], { frequencies: "host" }, () => undefined), /does not report its TSC and APIC timer rates/);
  assert.deepEqual(parseHypervisorCpuidSpec("frequencies=host"), { frequencies: "host" });
  assert.deepEqual(parseHypervisorCpuidSpec("signature=kvm,features=pv-eoi+pv-unhalt,max-leaf=0x40000010,tsc-khz=7,apic-khz=8"), {
    signature: "kvm", kvmFeatures: ["pv-eoi", "pv-unhalt"], maxLeaf: 0x4000_0010, frequencies: { tscKHz: 7, apicKHz: 8 },
  });
});

function kvmclockArgs(): string {
  // Loops: the test's own default (10^8) takes hours at PVM's emulated CPL0; the wall-clock
  // check compares kvmclock with the host's seconds, within the test's 5 s threshold.
  return `1000 ${Math.floor(Date.now() / 1000)}`;
}

test("kvm-unit-tests kvmclock_test passes on 2 vCPUs with kvmclock offered", { timeout: 300_000 }, async (t) => {
  if (!existsSync(KVMCLOCK_TEST)) return t.skip(`${KVMCLOCK_TEST} is missing (see shared/kvm-unit-tests/README.md)`);
  const run = await boot(KVMCLOCK_TEST, {
    cpus: 2, append: kvmclockArgs(), hypervisorCpuid: { kvmFeatures: ["clocksource2", "clocksource-stable"] },
  });
  assert.match(run.console, /Seconds get from kvmclock: \d+ \(cpu 1, offset: -?[0-5]\)/);
  assert.match(run.console, /Monotonic cycle test:\r?\nTotal vcpus: 2\r?\nTest  loops: 1000\r?\nTotal warps:  0/);
  assert.match(run.console, /PASS: 0 time warps detected/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("kvmclock_test finds no kvmclock when it is withheld or the hypervisor is hidden", { timeout: 300_000 }, async (t) => {
  if (!existsSync(KVMCLOCK_TEST)) return t.skip(`${KVMCLOCK_TEST} is missing (see shared/kvm-unit-tests/README.md)`);
  for (const hypervisorCpuid of [{ kvmFeatures: ["clocksource" as const] }, { signature: "none" }]) {
    const run = await boot(KVMCLOCK_TEST, { cpus: 2, append: kvmclockArgs(), hypervisorCpuid });
    assert.match(run.console, /SKIP: CPU not running on KVM with CLOCKSOURCE2/, JSON.stringify(hypervisorCpuid));
    assert.doesNotMatch(run.console, /PASS:/);
    assert.equal(run.result.reason, "debug-exit");
    assert.notEqual(run.result.status, 0);
  }
});

test("the run command takes --hypervisor-cpuid and explains a bad one", () => {
  const kernel = buildMultibootGuest("hypervisor-cpuid");
  const hidden = spawnSync(process.execPath, [CLI, "run", "--kernel", kernel, "--hypervisor-cpuid", "none"], { encoding: "latin1", timeout: 60_000 });
  assert.equal(hidden.status, 1, hidden.stderr);
  assert.match(hidden.stdout, /^cpuid 40000000: 00000000 /m);
  const bad = spawnSync(process.execPath, [CLI, "run", "--kernel", kernel, "--hypervisor-cpuid", "features=warp"], { encoding: "utf8", timeout: 60_000 });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--hypervisor-cpuid: unknown KVM paravirtual feature 'warp'/);
});
