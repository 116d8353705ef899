/**
 * Conformance: third-party kvm-unit-tests kernels (../shared/kvm-unit-tests) boot on the PC
 * machine and report what they report under QEMU.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
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

async function boot(name: string, options: { cpus?: number; append?: string } = {}): Promise<{ result: VmResult; console: string } | undefined> {
  const path = kernelPath(name);
  if (path === undefined) return undefined;
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(path),
    kernelName: `${name}.flat`,
    cpus: options.cpus,
    append: options.append,
    console: (byte) => bytes.push(byte),
  });
  const result = await machine.run();
  return { result, console: Buffer.from(bytes).toString("latin1") };
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
