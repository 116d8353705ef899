/**
 * The VM lifecycle on real KVM: pause, resume and stop from every state, fatal guest exits
 * and failing devices or workers surface as typed errors, and nothing leaks across VMs.
 */
import { readFileSync } from "node:fs";
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import {
  CounterDevice, type Device, DeviceError, destroyVcpuPool, GuestFatalError, VcpuWorkerError, Vm, VmStateError,
} from "../runtime/index.js";
import { DEBUG_EXIT, exitWith } from "../runtime/guests/guest-bytes.js";
import { THROWING_DEVICE_MESSAGE } from "./fixtures/throwing-device.js";
import { threadCpuNs } from "../runtime/thread-cpu.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
const COUNTER_PORT = 0x500;
const THROWING_DEVICE = new URL("./fixtures/throwing-device.js", import.meta.url).href;
const EXITING_DEVICE = new URL("./fixtures/exiting-device.js", import.meta.url).href;

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

/** Resolves once `condition` holds, checking every few milliseconds (the test timeout bounds it). */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(2);
}

/** What `promise` rejected with; fails the test if it resolved. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  let result: unknown;
  try {
    result = await promise;
  } catch (error) {
    return error;
  }
  return assert.fail(`expected the VM to fail, it ended with ${JSON.stringify(result)}`);
}

const SPIN = [
  0xeb, 0xfe,                               // 1: jmp 1b
];


/** Writes 1, 2, 3, ... to the counter's COUNT port forever (posted writes). */
const COUNT_FOREVER = [
  0x66, 0xba, 0x00, 0x05,                   // mov dx, 0x500
  0x31, 0xc0,                               // xor eax, eax
  0xff, 0xc0,                               // 1: inc eax
  0xef,                                     // out dx, eax
  0xeb, 0xfb,                               // jmp 1b
];

/** A VM counting forever into a main-thread counter. */
function countingVm(): { vm: Vm; counter: CounterDevice } {
  const counter = new CounterDevice();
  const vm = Vm.create({ memory: 2 * MiB });
  vm.addDevice({ space: "pio", base: COUNTER_PORT, length: 16, device: counter });
  vm.loadProgram({ code: COUNT_FOREVER, mode: "long64" });
  return { vm, counter };
}

// First in this file: later tests start and lose pool threads, whose event loops own fds.

/** A VM created after a failure boots and exits with `status`: the process is intact. */
async function assertFreshVmRuns(status: number): Promise<void> {
  const next = Vm.create({ memory: 2 * MiB });
  try {
    next.addDebugExit();
    next.loadProgram({ code: exitWith(status), mode: "long64" });
    assert.deepEqual(await next.run(), { reason: "debug-exit", status });
  } finally {
    await next.stop();
  }
}

/** A running VM whose guest spins in `jmp $`, never exiting on its own. */
function startSpinningVm(): Vm {
  const vm = Vm.create({ memory: 2 * MiB });
  vm.loadProgram({ code: SPIN, mode: "long64" });
  vm.start();
  return vm;
}

test("50 create/run/stop cycles leave the open fd count unchanged", { timeout: 120_000 }, async () => {
  async function cycle(i: number): Promise<void> {
    const vm = Vm.create({ memory: 2 * MiB });
    try {
      vm.addDebugExit();
      vm.loadProgram({ code: exitWith(i), mode: "long64" });
      assert.deepEqual(await vm.run(), { reason: "debug-exit", status: i });
    } finally {
      await vm.stop();
    }
  }
  // Warm up with two VMs at once, so both warm pool threads (and their fds) exist.
  await Promise.all([cycle(1000), cycle(1001)]);
  const before = openFds();
  for (let i = 0; i < 50; i++) await cycle(i);
  assert.equal(openFds(), before);
});

test("stop() from 'created' releases the VM's fds, and a second stop() is harmless", async () => {
  const before = openFds();
  const vm = Vm.create({ memory: 2 * MiB });
  assert.equal(vm.state, "created");
  assert.ok(openFds() > before, "the VM holds KVM fds");
  assert.deepEqual(await vm.stop(), { reason: "stopped" });
  assert.equal(vm.state, "stopped");
  assert.equal(openFds(), before);
  assert.deepEqual(await vm.wait(), { reason: "stopped" });
  assert.deepEqual(await vm.stop(), { reason: "stopped" });
  assert.throws(() => vm.start(), VmStateError);
});

test("stop() from 'running' ends a guest that never exits", async () => {
  const vm = startSpinningVm();
  try {
    assert.equal(vm.state, "running");
    await sleep(20);
    assert.deepEqual(await vm.stop(), { reason: "stopped" });
    assert.equal(vm.state, "stopped");
    assert.deepEqual(await vm.wait(), { reason: "stopped" });
  } finally {
    await vm.stop();
  }
});

test("stop() from 'paused' ends the VM", async () => {
  const vm = startSpinningVm();
  try {
    await vm.pause();
    assert.equal(vm.state, "paused");
    assert.deepEqual(await vm.stop(), { reason: "stopped" });
    assert.equal(vm.state, "stopped");
  } finally {
    await vm.stop();
  }
});

test("stop() called twice at once: both resolve 'stopped', and a third call after too", async () => {
  const vm = startSpinningVm();
  try {
    await sleep(10);
    const [first, second] = await Promise.all([vm.stop(), vm.stop()]);
    assert.deepEqual(first, { reason: "stopped" });
    assert.deepEqual(second, { reason: "stopped" });
    assert.deepEqual(await vm.stop(), { reason: "stopped" });
    assert.throws(() => vm.resume(), VmStateError);
    await assert.rejects(vm.pause(), VmStateError);
  } finally {
    await vm.stop();
  }
});

test("pause and resume a guest spinning without exits", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.loadProgram({ code: SPIN, mode: "long64" });
    const states: string[] = [];
    vm.on("state", (state: string) => states.push(state));
    vm.start();
    for (let round = 0; round < 3; round++) {
      await sleep(10);
      await vm.pause();
      assert.equal(vm.state, "paused");
      vm.resume();
      assert.equal(vm.state, "running");
    }
    assert.deepEqual(await vm.stop(), { reason: "stopped" });
    assert.deepEqual(states, ["running", "paused", "running", "paused", "running", "paused", "running", "stopped"]);
  } finally {
    await vm.stop();
  }
});

test("pause and resume a guest that exits continuously: no progress while paused, nothing lost", { timeout: 30_000 }, async () => {
  const { vm, counter } = countingVm();
  try {
    vm.start();
    await until(() => counter.writes > 1000);
    await vm.pause();
    assert.equal(vm.state, "paused");
    const exits = vm.stats.exits;
    // pause() resolves only once every write posted before it has reached its device.
    assert.equal(counter.writes, vm.stats.posted, "every posted write was delivered when pause() resolved");
    const writes = counter.writes;
    await sleep(50);
    assert.equal(vm.stats.exits, exits, "the vCPU did not run while paused");
    assert.equal(counter.writes, writes, "no writes while paused");

    vm.resume();
    await until(() => counter.writes > writes + 1000);
    assert.deepEqual(await vm.stop(), { reason: "stopped" });
    assert.equal(counter.inOrder, counter.writes, "every write arrived, in order, across the pause");
  } finally {
    await vm.stop();
  }
});

test("a timer set while the guest floods the dispatcher with exits still fires promptly", { timeout: 30_000 }, async () => {
  const counter = new CounterDevice();
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDevice({ space: "pio", base: COUNTER_PORT, length: 16, device: counter });
    vm.loadProgram({
      mode: "long64",
      code: [
        0x66, 0xba, 0x00, 0x05,                   // mov dx, 0x500
        0xef,                                     // 1: out dx, eax    ; posted
        0xed,                                     // in eax, dx        ; sync
        0xeb, 0xfc,                               // jmp 1b
      ],
    });
    vm.start();
    await until(() => vm.stats.sync > 1000);
    const syncBefore = vm.stats.sync;
    for (let i = 0; i < 20; i++) {
      const cpuBefore = threadCpuNs();
      const wallBefore = performance.now();
      await sleep(1);
      const cpuMs = (threadCpuNs() - cpuBefore) / 1e6;
      const wallMs = performance.now() - wallBefore;
      // Main-thread CPU time, not wall time: waiting for a core on a loaded machine costs none.
      // The dispatcher yields every ~1 ms, so a 1 ms timer costs it ~2 ms; 100 ms is a margin of
      // 50x for a slow machine, while a dispatcher that never yields spins until the test timeout.
      assert.ok(cpuMs < 100, `a 1 ms timer fired after ${cpuMs.toFixed(1)} ms of main-thread CPU (${wallMs.toFixed(1)} ms wall)`);
    }
    assert.ok(vm.stats.sync > syncBefore, "the guest went on exiting while the timers fired");
    assert.equal(vm.state, "running");
  } finally {
    await vm.stop();
  }
});

/** Checks the error's exit kind and that its message carries the whole register dump. */
function assertFatal(error: unknown, exitKind: string): GuestFatalError {
  assert.ok(error instanceof GuestFatalError, `expected a GuestFatalError, got ${String(error)}`);
  assert.equal(error.exitKind, exitKind);
  assert.equal(error.vcpu, 0);
  assert.match(error.message, new RegExp(`fatal ${exitKind} exit`));
  for (const register of ["RIP", "RSP", "RFLAGS", "CR0", "CR3", "CR4", "EFER", "CS"]) {
    assert.match(error.message, new RegExp(`\\b${register}\\b`), `${register} in the dump`);
  }
  assert.match(error.message, new RegExp(error.registers.rip));
  return error;
}

/** Runs `code` to its fatal exit and returns the checked GuestFatalError; the VM is stopped. */
async function fatalRun(code: number[], mode: "long64" | "user64", exitKind: string): Promise<GuestFatalError> {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    vm.loadProgram({ code, mode });
    const error = assertFatal(await rejection(vm.run()), exitKind);
    assert.equal(vm.state, "stopped");
    return error;
  } finally {
    await vm.stop();
  }
}

test("a jump to a non-canonical address triple-faults: GuestFatalError with the faulting RIP", async () => {
  const error = await fatalRun([
    0x48, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, // mov rax, 0x8000000000000000
    0xff, 0xe0,                               // jmp rax             ; at 0x1000a: #GP, no IDT, shutdown
  ], "long64", "shutdown");
  // The #GP is raised by the jump itself, so RIP still points at it.
  assert.equal(BigInt(error.registers.rip), 0x1000an);
  assert.equal(BigInt(error.registers.cr3), 0x1000n);
});

test("int3 at CPL3 with an empty IDT triple-faults: GuestFatalError showing the user code segment", async () => {
  const error = await fatalRun([
    0xcc,                                     // int3                ; IDT limit 0: #GP, #DF, shutdown
    0xf4,                                     // hlt
  ], "user64", "shutdown");
  assert.match(error.registers.cs, /dpl 3/);
});

test("executing from an address with no RAM behind it is a fatal exit at that address", async () => {
  // KVM cannot fetch an instruction from MMIO; its emulator gives up (KVM_INTERNAL_ERROR_EMULATION).
  const error = await fatalRun([
    0xb8, 0x00, 0x00, 0x00, 0x80,             // mov eax, 0x80000000 ; mapped by the page tables, no RAM
    0xff, 0xe0,                               // jmp rax
  ], "long64", "internal-error");
  assert.equal(BigInt(error.registers.rip), 0x8000_0000n);
});

/** Writes 1 to port 0x600, then exits with status 0 (if it gets that far). */
const WRITE_THEN_EXIT = [
  0x66, 0xba, 0x00, 0x06,                   // mov dx, 0x600
  0xb0, 0x01,                               // mov al, 1
  0xee,                                     // out dx, al
  0x31, 0xc0,                               // xor eax, eax
  0xe6, DEBUG_EXIT,                         // out 0xf4, al
  0xf4,                                     // hlt
];

/** Reads port 0x600, then exits with status 0 (if it gets that far). */
const READ_THEN_EXIT = [
  0x66, 0xba, 0x00, 0x06,                   // mov dx, 0x600
  0xec,                                     // in al, dx
  0x31, 0xc0,                               // xor eax, eax
  0xe6, DEBUG_EXIT,                         // out 0xf4, al
  0xf4,                                     // hlt
];

test("a worker-local device that throws stops its VM with VcpuWorkerError; the next VM runs fine", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    vm.addWorkerDevice({ space: "pio", base: 0x600, length: 1, module: THROWING_DEVICE, shared: new SharedArrayBuffer(8) });
    vm.loadProgram({ code: WRITE_THEN_EXIT, mode: "long64" });
    const error = await rejection(vm.run());
    assert.ok(error instanceof VcpuWorkerError, `expected a VcpuWorkerError, got ${String(error)}`);
    assert.equal(error.vcpu, 0);
    assert.match(error.message, /vCPU 0 worker failed/);
    assert.ok(error.message.includes(THROWING_DEVICE_MESSAGE), error.message);
    assert.equal((error.cause as Error).message, THROWING_DEVICE_MESSAGE);
    assert.equal(vm.state, "stopped");
  } finally {
    await vm.stop();
  }

  await assertFreshVmRuns(42);
});

class ThrowingDevice implements Device {
  readonly name = "throwing device";
  read(): number {
    throw new Error("cannot read today");
  }
  write(): void {
    throw new Error("cannot write today");
  }
}

for (const [access, code, kind, reason] of [
  ["write (posted)", WRITE_THEN_EXIT, "io-out", "cannot write today"],
  ["read (sync)", READ_THEN_EXIT, "io-in", "cannot read today"],
] as const) {
  test(`a main-thread device that throws on a ${access} stops its VM with DeviceError`, async () => {
    const vm = Vm.create({ memory: 2 * MiB });
    try {
      vm.addDebugExit();
      vm.addDevice({ space: "pio", base: 0x600, length: 1, device: new ThrowingDevice() });
      vm.loadProgram({ code, mode: "long64" });
      const error = await rejection(vm.run());
      assert.ok(error instanceof DeviceError, `expected a DeviceError, got ${String(error)}`);
      assert.equal(error.message, `device 'throwing device' threw on ${kind} at 0x600: ${reason}`);
      assert.equal((error.cause as Error).message, reason);
      assert.equal(vm.state, "stopped");
    } finally {
      await vm.stop();
    }
  });
}

test("a vCPU worker that dies stops its VM with VcpuWorkerError; a VM running beside it is untouched", { timeout: 30_000 }, async () => {
  const { vm: bystander, counter } = countingVm();
  try {
    bystander.start();
    await until(() => counter.writes > 1000);

    const vm = Vm.create({ memory: 2 * MiB });
    try {
      vm.addDebugExit();
      vm.addWorkerDevice({ space: "pio", base: 0x600, length: 1, module: EXITING_DEVICE, shared: new SharedArrayBuffer(8) });
      vm.loadProgram({ code: WRITE_THEN_EXIT, mode: "long64" });
      const error = await rejection(vm.run());
      assert.ok(error instanceof VcpuWorkerError, `expected a VcpuWorkerError, got ${String(error)}`);
      assert.match(error.message, /vCPU 0 worker failed: .*exited with code:? 3/);
      assert.equal(vm.state, "stopped");
    } finally {
      await vm.stop();
    }

    assert.equal(bystander.state, "running");
    const writes = counter.writes;
    await until(() => counter.writes > writes + 1000);
    assert.deepEqual(await bystander.stop(), { reason: "stopped" });
    assert.equal(counter.inOrder, counter.writes, "the bystander lost nothing");
  } finally {
    await bystander.stop();
  }

  await assertFreshVmRuns(7);
  // The dead worker left no mapping of a vCPU run page behind (it would pin the VM in the kernel).
  assert.doesNotMatch(readFileSync("/proc/self/maps", "utf8"), /kvm-vcpu/);
});
