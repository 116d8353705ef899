/**
 * The firmware-table guests (ACPI reset register, S3 resume, MP table) under QEMU with
 * SeaBIOS's tables: a cross-check that they read the tables and expect the behaviour a
 * third-party PC platform gives, not only ours. QEMU 7.2's `pc` FADT is revision 1 (no reset
 * register); its `q35` one has the reset register at 0xCF9, as ours.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { buildMultibootGuest } from "./helpers/flat-guest.js";

const qemu = spawnSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" });
const skip = qemu.error || qemu.status !== 0 ? "qemu-system-x86_64 is not installed (Debian: apt-get install -y qemu-system-x86)" : false;

/** QEMU's exit status and console; isa-debug-exit ends it with (status << 1) | 1, a reset under -no-reboot with 0. */
function runQemu(machine: string, kernel: string): { status: number | null; console: string; stderr: string } {
  const run = spawnSync("qemu-system-x86_64", [
    "-accel", "kvm", "-M", machine, "-m", "128", "-nodefaults", "-no-reboot", "-display", "none",
    "-serial", "stdio", "-monitor", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", kernel,
  ], { encoding: "latin1", timeout: 90_000 });
  assert.ok(run.error === undefined, `QEMU did not run: ${run.error?.message}`);
  return { status: run.status, console: run.stdout, stderr: run.stderr };
}

test("under QEMU q35: the reset-register guest resets the machine through SeaBIOS's FADT", { skip, timeout: 120_000 }, () => {
  const run = runQemu("q35", buildMultibootGuest("acpi-reset"));
  assert.match(run.console, /resetting through the FADT's reset register/);
  assert.equal(run.status, 0, `QEMU did not end by a reset: ${run.stderr}`);
});

test("under QEMU pc: the S3 guest sleeps, wakes on the RTC alarm and resumes in real mode with RAM kept", { skip, timeout: 120_000 }, () => {
  const run = runQemu("pc", buildMultibootGuest("acpi-s3"));
  assert.equal(run.console, "sleeping\n");
  // Bits 0-2 are RTC_STS, WAK_STS and the marker, as under workervisor; QEMU's PM timer has
  // also overflowed by then, but TMR_STS is not among the bits the guest reports.
  assert.equal(run.status, (7 << 1) | 1, run.stderr);
});

test("under QEMU pc: the MP-table guest finds SeaBIOS's table, its IOAPIC and IRQ 0 on pin 2", { skip, timeout: 120_000 }, () => {
  const run = runQemu("pc", buildMultibootGuest("mp-table-check", { CPUS: 1 }));
  assert.equal(run.console, "cpus=1 bsp=0 ioapic=0xfec00000 isa-irq0-pin=2\n");
  assert.equal(run.status, 1, run.stderr);
});
