/**
 * Conformance: third-party kvm-unit-tests kernels (../shared/kvm-unit-tests) boot on the PC
 * machine and report what they report under QEMU.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { PcMachine } from "../runtime/pc-machine.js";
import type { VmResult } from "../runtime/vm.js";

const KERNELS = fileURLToPath(new URL("../../../shared/kvm-unit-tests/", import.meta.url));
const CLI = fileURLToPath(new URL("../runtime/cli.js", import.meta.url));
const HOW_TO_GET =
  `kvm-unit-tests kernels not found in ${KERNELS}: build them from the kvm-unit-tests repository ` +
  `(./configure && make, x86_64) and copy x86/*.flat there`;

function kernelPath(name: string): string | undefined {
  const path = `${KERNELS}${name}.flat`;
  if (existsSync(path)) return path;
  if (process.env.CI) assert.fail(HOW_TO_GET);
  return undefined;
}

interface BootOptions {
  cpus?: number;
  pit?: boolean;
  append?: string;
  /** pc-testdev and pci-testdev, as kvm-unit-tests' x86/run always gives QEMU. */
  testDevices?: boolean;
  /** Stop the guest once its console matches (for tests that run on for minutes). */
  stopWhen?: RegExp;
  /** Interrupt controllers: the kernel's (default) or split mode's userspace IOAPIC, PIC and PIT. */
  irqchip?: "in-kernel" | "split";
}

interface BootOutcome {
  result?: VmResult;
  /** Set when the VM stopped with an error (a fatal guest exit). */
  error?: Error;
  console: string;
}

async function boot(name: string, options: BootOptions = {}): Promise<BootOutcome | undefined> {
  const path = kernelPath(name);
  if (path === undefined) return undefined;
  const bytes: number[] = [];
  let machine: PcMachine | undefined = undefined;
  let seen = "";
  machine = new PcMachine({
    kernel: readFileSync(path),
    kernelName: `${name}.flat`,
    cpus: options.cpus,
    append: options.append,
    testDevices: options.testDevices,
    pit: options.pit,
    irqchip: options.irqchip,
    console: (byte) => {
      bytes.push(byte);
      if (options.stopWhen && byte === 0x0a) {
        seen = Buffer.from(bytes).toString("latin1");
        if (options.stopWhen.test(seen)) void machine?.stop();
      }
    },
  });
  try {
    const result = await machine.run();
    return { result, console: Buffer.from(bytes).toString("latin1") };
  } catch (error) {
    return { error: error as Error, console: Buffer.from(bytes).toString("latin1") };
  }
}

function lines(text: string, prefix: string): string[] {
  return text.split("\n").filter((line) => line.startsWith(prefix));
}

test("dummy prints its greeting and exits with status 0", async (t) => {
  const run = await boot("dummy");
  if (!run) return t.skip(HOW_TO_GET);
  assert.match(run.console, /Dummy Hello World!/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("setjmp passes all 10 checks", async (t) => {
  const run = await boot("setjmp");
  if (!run) return t.skip(HOW_TO_GET);
  assert.equal(lines(run.console, "PASS:").length, 10);
  assert.deepEqual(lines(run.console, "FAIL:"), []);
  assert.match(run.console, /SUMMARY: 10 tests\r?\n/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("idt_test passes its 4 exception checks", async (t) => {
  const run = await boot("idt_test");
  if (!run) return t.skip(HOW_TO_GET);
  assert.deepEqual(lines(run.console, "PASS:").map((l) => l.trim()), [
    "PASS: Testing #GP", "PASS: Testing #GP rflags.rf", "PASS: Testing #UD", "PASS: Testing #UD rflags.rf",
  ]);
  assert.match(run.console, /SUMMARY: 4 tests\r?\n/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("smptest brings up the second vCPU through INIT/SIPI and IPIs both", async (t) => {
  const run = await boot("smptest", { cpus: 2 });
  if (!run) return t.skip(HOW_TO_GET);
  assert.match(run.console, /found 2 cpus/);
  assert.match(run.console, /ipi called, cpu 0/);
  assert.match(run.console, /ipi called, cpu 1/);
  assert.deepEqual(lines(run.console, "FAIL:"), []);
  assert.match(run.console, /PASS: IPI to each CPU/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

const VMEXIT_SUBTESTS = ["cpuid", "inl_from_qemu", "inl_from_kernel", "outl_to_kernel", "mov_dr", "wr_tsc_adjust_msr", "inl_from_pmtimer"];

test("vmexit measures every requested subtest and reports our PM timer port", { timeout: 300_000 }, async (t) => {
  const run = await boot("vmexit", { append: VMEXIT_SUBTESTS.join(" ") });
  if (!run) return t.skip(HOW_TO_GET);
  for (const name of VMEXIT_SUBTESTS) {
    assert.match(run.console, new RegExp(`^${name} \\d+\\r?$`, "m"), `no cycle count for ${name}`);
  }
  // The guest found the PM timer through our FADT.
  assert.match(run.console, /PM timer port is 608/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("the run command exits with QEMU's (status << 1) | 1 convention", (t) => {
  const path = kernelPath("dummy");
  if (!path) return t.skip(HOW_TO_GET);
  const run = spawnSync(process.execPath, [CLI, "run", "--kernel", path], { encoding: "latin1", timeout: 60_000 });
  assert.match(run.stdout, /Dummy Hello World!/);
  assert.equal(run.status, 1);
});

test("the run command names what it found in a file it cannot boot", () => {
  const run = spawnSync(process.execPath, [CLI, "run", "--kernel", CLI], { encoding: "utf8", timeout: 60_000 });
  assert.equal(run.status, 2);
  assert.match(run.stderr, /not an ELF file and no multiboot header/);
});

// ---- with the runner's test devices (pc-testdev, pci-testdev), as x86/run starts QEMU ----

test("realmode passes all 127 checks, sti inhibit included (IRQ 11 from pc-testdev's line ports)", { timeout: 300_000 }, async (t) => {
  const run = await boot("realmode", { testDevices: true });
  if (!run) return t.skip(HOW_TO_GET);
  assert.deepEqual(lines(run.console, "FAIL"), []);
  assert.match(run.console, /PASS: sti inhibit/);
  // Its string and width tests of port 0xe0 read back what they wrote.
  for (const name of ["pio 1", "pio 2", "pio 3", "pio 4", "pio 5", "pio 6"]) {
    assert.match(run.console, new RegExp(`PASS: ${name}\\r?$`, "m"));
  }
  assert.equal(lines(run.console, "PASS:").length, 127);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("emulator: its MMIO operands in pc-testdev's RAM-like region and string I/O on port 0xe0 all pass", { timeout: 300_000 }, async (t) => {
  const run = await boot("emulator", { testDevices: true });
  if (!run) return t.skip(HOW_TO_GET);
  assert.deepEqual(lines(run.console, "FAIL"), []);
  for (const name of ["mov reg, r/m \\(1\\)", "string_io_mmio", "cross-page mmio read", "cross-page mmio write", "outsb up", "outsb down"]) {
    assert.match(run.console, new RegExp(`PASS: ${name}`), `missing PASS: ${name}`);
  }
  // QEMU: 98 PASS and no FAIL. Its next check executes MOVBE with a register operand
  // (because this host's CPUID offers MOVBE, which QEMU's default qemu64 CPU hides) and
  // PVM's instruction emulator cannot emulate it at CPL0: a KVM internal error.
  assert.ok(lines(run.console, "PASS:").length >= 98, `only ${lines(run.console, "PASS:").length} PASS`);
  if (run.error) assert.match(run.error.message, /internal-error/);
  else assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

/**
 * The ioapic entry's checks under QEMU here, in order, up to test_ioapic_physical_destination_mode,
 * where both VMMs wait for good for an interrupt to APIC ID 1. The three marked `timing`
 * fail in some runs under both (QEMU at -smp 1 and 4 too): interrupt timing on PVM.
 */
const IOAPIC_CHECKS_BEFORE_HANG: [string, "pass" | "timing"][] = [
  ["version register read only test", "pass"], ["id register only bits [24:27] writable", "pass"],
  ["arbitration register set by id", "pass"], ["arbtration register read only", "pass"], ["edge triggered intr", "pass"],
  ["level triggered intr", "pass"], ["ioapic simultaneous edge interrupts", "timing"], ["coalesce simultaneous level interrupts", "pass"],
  ["sequential level interrupts", "pass"], ["retriggered level interrupts without masking", "pass"], ["masked level interrupt", "pass"],
  ["unmasked level interrupt", "pass"], ["masked level interrupt", "pass"], ["unmasked level interrupt", "timing"],
  ["retriggered level interrupts with mask", "timing"], ["TMR for ioapic edge interrupts (expected false)", "pass"],
  ["TMR for ioapic level interrupts (expected false)", "pass"], ["TMR for ioapic level interrupts (expected true)", "pass"],
  ["TMR for ioapic edge interrupts (expected true)", "pass"],
];

test("ioapic: interrupts raised through pc-testdev's IRQ-line ports reach their vectors; the same 19 checks as QEMU, in its order", { timeout: 300_000 }, async (t) => {
  const run = await boot("ioapic", { cpus: 4, testDevices: true, stopWhen: /TMR for ioapic edge interrupts \(expected true\)/ });
  if (!run) return t.skip(HOW_TO_GET);
  const reports = run.console.split("\n").filter((l) => /^(PASS|FAIL): /.test(l)).map((l) => l.trim());
  assert.deepEqual(reports.map((l) => l.slice(6)), IOAPIC_CHECKS_BEFORE_HANG.map(([name]) => name));
  reports.forEach((report, i) => {
    if (IOAPIC_CHECKS_BEFORE_HANG[i][1] === "pass") assert.ok(report.startsWith("PASS: "), report);
  });
});

test("eventinj stops where PVM cannot emulate INT3 at CPL0, as it does under QEMU here", { timeout: 120_000 }, async (t) => {
  const run = await boot("eventinj", { testDevices: true });
  if (!run) return t.skip(HOW_TO_GET);
  assert.deepEqual(lines(run.console, "FAIL"), []);
  assert.ok(run.error, "expected the KVM internal error");
  assert.match(run.error.message, /internal-error/);
});

test("the run command takes --initrd as the environment file and names a missing one", (t) => {
  const path = kernelPath("dummy");
  if (!path) return t.skip(HOW_TO_GET);
  const env = join(mkdtempSync(join(tmpdir(), "workervisor-env-")), "env");
  writeFileSync(env, "QEMU_ACCEL=kvm\nTESTNAME=dummy\n");
  const run = spawnSync(process.execPath, [CLI, "run", "--kernel", path, "--initrd", env, "--test-devices"], { encoding: "latin1", timeout: 60_000 });
  assert.match(run.stdout, /Dummy Hello World!/);
  assert.equal(run.status, 1);
  const missing = spawnSync(process.execPath, [CLI, "run", "--kernel", path, "--initrd", `${env}.missing`], { encoding: "utf8", timeout: 60_000 });
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /initrd '.*env\.missing': no such file/);
});

test("vmexit finds pci-testdev on the PCI bus and runs its six PCI subtests, eventfd ones included", { timeout: 300_000 }, async (t) => {
  const run = await boot("vmexit", { testDevices: true, append: "pci-mem pci-io" });
  if (!run) return t.skip(HOW_TO_GET);
  // Firmware-style placement: memory BAR at the bottom of the 0xc0000000 window, I/O BAR at 0xc000.
  assert.match(run.console, /pci-testdev at 0x10 membar c0000000 iobar c000/);
  for (const type of ["mmio", "portio"]) {
    for (const kind of ["no-eventfd", "wildcard-eventfd", "datamatch-eventfd"]) {
      assert.match(run.console, new RegExp(`^${type}-${kind}:pci-${type === "mmio" ? "mem" : "io"} \\d+\\r?$`, "m"));
    }
  }
  assert.doesNotMatch(run.console, /skipped/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("without the test devices vmexit finds no pci-testdev and skips its PCI subtests", { timeout: 300_000 }, async (t) => {
  const run = await boot("vmexit", { append: "pci-mem pci-io" });
  if (!run) return t.skip(HOW_TO_GET);
  assert.match(run.console, /pci-mem \(skipped\)/);
  assert.match(run.console, /pci-io \(skipped\)/);
});

test("vmexit_ipi as unittests.cfg runs it (2 vCPUs, -machine pit=off) passes, as under QEMU", { timeout: 300_000 }, async (t) => {
  const run = await boot("vmexit", { cpus: 2, pit: false, testDevices: true, append: "ipi" });
  if (!run) return t.skip(HOW_TO_GET);
  assert.match(run.console, /^ipi \d+\r?$/m);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("s3: suspends to RAM, wakes on the RTC alarm and resumes at the FACS waking vector in real mode; passes, as under QEMU", { timeout: 300_000 }, async (t) => {
  const run = await boot("s3", { testDevices: true });
  if (!run) return t.skip(HOW_TO_GET);
  assert.deepEqual(lines(run.console, "FAIL"), []);
  // Its resume code exits with the word at address 0: 0 as written before sleeping, 1 had
  // the guest run on past its sleep request.
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

/**
 * The x2apic entry's checks under QEMU here, in order, up to test_pv_ipi: there QEMU's vCPU
 * sits at VMMCALL with RAX = 10 (KVM_HC_SEND_IPI) and never comes back (this host's KVM,
 * as with vmexit_vmcall and hypercall), so the entry cannot finish on this host.
 */
const APIC_CHECKS_BEFORE_PV_IPI = [
  "PASS: apic existence",
  "PASS: apic_disable: Local apic disabled",
  "PASS: apic_disable: CPUID.1H:EDX.APIC[bit 9] is clear",
  "PASS: apic_disable: *0xfee00030: ffffffff",
  "PASS: apic_disable: CR8: 0",
  "PASS: apic_disable: CR8: f",
  "PASS: apic_disable: *0xfee00080: ffffffff",
  "PASS: apic_disable: Local apic enabled in xAPIC mode",
  "PASS: apic_disable: CPUID.1H:EDX.APIC[bit 9] is set",
  "PASS: apic_disable: *0xfee00030: 50014",
  "PASS: apic_disable: *0xfee00080: 0",
  "PASS: apic_disable: *0xfee00080: f0",
  "PASS: apic_disable: Local apic enabled in x2APIC mode",
  "PASS: apic_disable: CPUID.1H:EDX.APIC[bit 9] is set",
  "PASS: apic_disable: *0xfee00030: ffffffff",
  "PASS: apic_disable: CR8: 0",
  "PASS: apic_disable: CR8: f",
  "PASS: apic_disable: *0xfee00080: ffffffff",
  "PASS: x2apic enabled to invalid state",
  "PASS: x2apic enabled to apic enabled",
  "PASS: x2apic enabled to disabled state",
  "PASS: disabled to invalid state",
  "PASS: disabled to x2apic enabled",
  "PASS: apic disabled to apic enabled",
  "PASS: apic enabled to invalid state",
  "PASS: self_ipi_xapic: Local apic enabled in xAPIC mode",
  "PASS: self_ipi_xapic: self ipi",
  "PASS: self_ipi_x2apic: Local apic enabled in x2APIC mode",
  "PASS: self_ipi_x2apic: self ipi",
  "PASS: APIC physical broadcast address",
  "PASS: APIC physical broadcast shorthand",
];

/**
 * These wait at most 10^9 TSC cycles (under half a second here) for an IPI the in-kernel
 * LAPIC delivers: on this loaded 2-core host the wait can run out (seen in 2 of 5 runs).
 */
const APIC_TIME_BOUNDED_CHECKS = new Set(["self_ipi_xapic: self ipi", "self_ipi_x2apic: self ipi"]);

test("apic (x2apic entry, 2 vCPUs): the same 31 checks in the same order as under QEMU pass, up to the hypercall this host never returns from", { timeout: 600_000 }, async (t) => {
  const run = await boot("apic", { cpus: 2, testDevices: true, stopWhen: /: APIC physical broadcast shorthand/ });
  if (!run) return t.skip(HOW_TO_GET);
  const reports = run.console.split("\n").filter((l) => /^(PASS|FAIL): /.test(l)).map((l) => l.trim());
  assert.deepEqual(reports.map((l) => `PASS: ${l.slice(6)}`), APIC_CHECKS_BEFORE_PV_IPI);
  for (const failed of reports.filter((l) => l.startsWith("FAIL: "))) {
    assert.ok(APIC_TIME_BOUNDED_CHECKS.has(failed.slice(6)), failed);
    t.diagnostic(`${failed}: its IPI wait ran out on this loaded host`);
  }
});

test("msr: every check passes but the six mitigation MSRs this host's KVM accepts, as msr64 under QEMU here", { timeout: 300_000 }, async (t) => {
  const run = await boot("msr", { testDevices: true });
  if (!run) return t.skip(HOW_TO_GET);
  const failures = lines(run.console, "FAIL:");
  assert.equal(failures.length, 6, failures.join("\n"));
  for (const line of failures) assert.match(line, /Expected #GP on (RD|WR)MSR\((SPEC_CTRL|PRED_CMD|FLUSH_CMD)/);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 1 });
});

test("tsc reports its own SKIP (exit 77 from the run command's status)", { timeout: 300_000 }, async (t) => {
  const run = await boot("tsc", { testDevices: true });
  if (!run) return t.skip(HOW_TO_GET);
  assert.deepEqual(lines(run.console, "FAIL"), []);
  assert.ok(run.result?.status !== undefined && ((run.result.status << 1) | 1) === 77, `status ${run.result?.status}`);
});

// ---- split interrupt controllers: local APICs in KVM, IOAPIC, PIC and PIT in workervisor ----

/** Each `PASS:`/`FAIL:` line as "VERDICT name", in order. */
function verdicts(console: string): string[] {
  return console.split("\n").filter((l) => /^(PASS|FAIL): /.test(l)).map((l) => l.trim());
}

/** ioapic subtests that fail or pass by timing, under QEMU too (kvm-unit-tests' README for this host): compared by name. */
const IOAPIC_FLAKY = new Set(["ioapic simultaneous edge interrupts", "unmasked level interrupt", "retriggered level interrupts with mask"]);
const IOAPIC_IN_KERNEL_END = /TMR for ioapic edge interrupts \(expected true\)/;

test("ioapic in split mode: the same verdict per subtest as with KVM's IOAPIC, and on through the SMP subtests", { timeout: 600_000 }, async (t) => {
  // KVM's own IOAPIC never gets past "physical destination mode" on this host (nor in 400 s),
  // so the comparison stops where it stops; the userspace one runs to the summary.
  const kernel = await boot("ioapic", { cpus: 4, testDevices: true, stopWhen: IOAPIC_IN_KERNEL_END });
  if (!kernel) return t.skip(HOW_TO_GET);
  const split = await boot("ioapic", { cpus: 4, testDevices: true, irqchip: "split", stopWhen: /^SUMMARY: /m });
  assert.ok(split && !split.error, String(split?.error));
  const reference = verdicts(kernel.console);
  const ours = verdicts(split.console);
  const comparable = (list: string[]) => list.map((v) => (IOAPIC_FLAKY.has(v.slice(6)) ? v.slice(6) : v));
  assert.ok(reference.length >= 19, kernel.console);
  assert.deepEqual(comparable(ours.slice(0, reference.length)), comparable(reference));
  for (const name of ["ioapic physical destination mode", "ioapic logical destination mode"]) assert.ok(ours.includes(`PASS: ${name}`), split.console);
  t.diagnostic(`split: ${split.console.match(/SUMMARY: .*/)?.[0]}; past KVM's stopping point: ${ours.slice(reference.length).join("; ")}`);
});

for (const cpus of [2, 3]) {
  test(`smptest (${cpus} vCPUs) in split mode: INIT/SIPI and IPIs through KVM's local APICs`, { timeout: 300_000 }, async (t) => {
    const run = await boot("smptest", { cpus, irqchip: "split" });
    if (!run) return t.skip(HOW_TO_GET);
    assert.match(run.console, new RegExp(`found ${cpus} cpus`));
    assert.deepEqual(lines(run.console, "FAIL:"), []);
    assert.match(run.console, /PASS: IPI to each CPU/);
    assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
  });
}

test("realmode in split mode passes all 127 checks, sti inhibit's IRQ 11 through the userspace PIC", { timeout: 300_000 }, async (t) => {
  const run = await boot("realmode", { testDevices: true, irqchip: "split" });
  if (!run) return t.skip(HOW_TO_GET);
  assert.deepEqual(lines(run.console, "FAIL"), []);
  assert.match(run.console, /PASS: sti inhibit/);
  assert.equal(lines(run.console, "PASS:").length, 127);
  assert.deepEqual(run.result, { reason: "debug-exit", status: 0 });
});

test("apic (2 vCPUs) in split mode: the same verdicts as with the in-kernel irqchip up to the physical broadcast check", { timeout: 900_000 }, async (t) => {
  // apic runs for many minutes on PVM (its x2apic and xapic entries do not end in 400 s):
  // both runs stop at the same check, which comes after the IOAPIC- and PIC-independent ones.
  const stopWhen = /PASS: APIC physical broadcast shorthand/;
  const kernel = await boot("apic", { cpus: 2, testDevices: true, stopWhen });
  if (!kernel) return t.skip(HOW_TO_GET);
  const split = await boot("apic", { cpus: 2, testDevices: true, irqchip: "split", stopWhen });
  assert.ok(split && !split.error, String(split?.error));
  // Two differences by design or by timing: KVM's local APIC version register offers
  // directed EOI (bit 24) when the IOAPIC is not KVM's, and self_ipi_xapic's single
  // self-IPI check passes or fails by timing on this host in either mode.
  const comparable = (console: string) => verdicts(console)
    .map((v) => v.replace(/^(PASS: apic_disable: \*0xfee00030: )10(50014)$/, "$1$2"))
    .map((v) => (v.endsWith("self_ipi_xapic: self ipi") ? v.slice(6) : v));
  assert.match(split.console, /PASS: apic_disable: \*0xfee00030: 1050014/);
  assert.deepEqual(comparable(split.console), comparable(kernel.console));
  assert.ok(verdicts(split.console).length >= 21);
});
