/**
 * The exit path, for every access a guest can make: guest-physical addresses above 4 GiB
 * reach the right device whole, MMIO of any length 1..8 at any alignment arrives with its
 * exact bytes, unclaimed MSRs fault as on hardware, a device with per-VM state answers every
 * vCPU alike, piped console input is flow-controlled, STOP ends a worker wherever it waits,
 * and pause() returns with every posted write delivered.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { Worker } from "node:worker_threads";
import {
  COUNTER_LENGTH, CounterDevice, destroyVcpuPool, loadFlatProgram, Vm,
} from "../runtime/index.js";
import { AcpiPmTimer, DEFAULT_PM_TIMER_PORT, PM_TIMER_LENGTH } from "../runtime/devices/acpi.js";
import { Control, createDoorbell, ExitChannel } from "../memory/exit-channel.js";
import { exitWith, imm32, imm64 } from "../runtime/guests/guest-bytes.js";
import { buildFlatGuest, buildMultibootGuest } from "./helpers/flat-guest.js";
import { patternByte, RECORDING_LENGTH, RecordingMmioDevice } from "./fixtures/recording-mmio-device.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
const CLI = new URL("../runtime/cli.js", import.meta.url).pathname;
const COUNTER_WORKER = new URL("../runtime/devices/counter-worker.js", import.meta.url).href;
const RECORDING_WORKER = new URL("./fixtures/recording-mmio-device.js", import.meta.url).href;
const PM_TIMER_WORKER = new URL("../runtime/devices/acpi-pm-timer-worker.js", import.meta.url).href;
const CHANNEL_PRODUCER = new URL("./fixtures/channel-producer.js", import.meta.url);

/** Identity-maps the GiB at `gib` (2 MiB pages) on top of the flat loader's first 4 GiB. */
function mapGiB(vm: Vm, gib: number, directory: number): void {
  const PDPT = 0x2000;
  const flags = 0x7n; // present, writable, user
  vm.memory.writeU64(PDPT + gib * 8, BigInt(directory) | flags);
  for (let i = 0; i < 512; i++) {
    vm.memory.writeU64(directory + i * 8, (BigInt(gib) << 30n) + (BigInt(i) << 21n) | flags | 0x80n);
  }
}

test("MMIO above 4 GiB reaches the device at its whole address, never an alias 4 GiB below", { timeout: 30_000 }, async () => {
  const alias = new CounterDevice(undefined, "counter at 0xd0000000");
  const high = new CounterDevice(undefined, "counter at 0x1d0001000");
  const aliasOfWorker = new CounterDevice(undefined, "counter at 0xd0002000");
  const workerState = CounterDevice.createState();
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    vm.addDevice({ space: "mmio", base: 0xd000_0000, length: COUNTER_LENGTH, device: alias });
    vm.addDevice({ space: "mmio", base: 0x1_d000_1000, length: COUNTER_LENGTH, device: high });
    vm.addDevice({ space: "mmio", base: 0xd000_2000, length: COUNTER_LENGTH, device: aliasOfWorker });
    vm.addWorkerDevice({ space: "mmio", base: 0x1_d000_2000, length: COUNTER_LENGTH, module: COUNTER_WORKER, shared: workerState });
    vm.loadProgram({
      mode: "long64",
      code: [
        0x48, 0xbb, ...imm64(0x1_d000_0000n),     // mov rbx, 0x1d0000000   ; nothing there
        0xc7, 0x03, ...imm32(1),                  // mov dword [rbx], 1     ; posted, unclaimed
        0x48, 0xbb, ...imm64(0x1_d000_1000n),     // mov rbx, 0x1d0001000   ; main-thread counter
        0xc7, 0x03, ...imm32(1),                  // mov dword [rbx], 1     ; posted
        0x8b, 0x03,                               // mov eax, [rbx]         ; sync read: writes seen
        0x89, 0x04, 0x25, ...imm32(0x9000),       // mov [0x9000], eax
        0x48, 0xbb, ...imm64(0x1_d000_2000n),     // mov rbx, 0x1d0002000   ; worker-local counter
        0xc7, 0x03, ...imm32(1),                  // mov dword [rbx], 1
        ...exitWith(0),
      ],
    });
    mapGiB(vm, 7, 0xa000);
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
    assert.equal(alias.writes, 0, "the write to 0x1d0000000 did not reach the device at 0xd0000000");
    assert.equal(vm.stats.unclaimedWrites, 1, "it was counted as unclaimed");
    assert.equal(high.writes, 1, "the posted write to 0x1d0001000 reached its device");
    assert.equal(vm.memory.readU32(0x9000), 1, "the sync read of 0x1d0001000 was answered by its device");
    assert.equal(new CounterDevice(workerState).writes, 1, "the worker-local device above 4 GiB got its write");
    assert.equal(aliasOfWorker.writes, 0);
  } finally {
    await vm.stop();
  }
});

for (const placement of ["main thread", "vCPU worker"] as const) {
  test(`MMIO of every length 1..8 at every alignment carries exactly its bytes (device on the ${placement})`, { timeout: 120_000 }, async () => {
    const BASE = 0xd000_0000;
    const RESULTS = 0x80000;
    const shared = RecordingMmioDevice.createState();
    const device = new RecordingMmioDevice(shared);
    const vm = Vm.create({ memory: 4 * MiB });
    try {
      vm.addDebugExit();
      if (placement === "vCPU worker") {
        vm.addWorkerDevice({ space: "mmio", base: BASE, length: RECORDING_LENGTH, module: RECORDING_WORKER, shared });
      } else {
        vm.addDevice({ space: "mmio", base: BASE, length: RECORDING_LENGTH, device, sync: true });
      }
      vm.loadProgram({ code: buildFlatGuest("mmio-lengths"), registers: { rdi: BigInt(BASE) } });
      assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });

      const count = vm.memory.readU32(RESULTS);
      assert.equal(count, 32 + 7 + 3 + 1, "every case ran");
      const expected = new Map<number, number>();
      const lengthsSeen = new Set<number>();
      for (let i = 0; i < count; i++) {
        const at = RESULTS + 24 * (i + 1);
        const offset = vm.memory.readU32(at);
        const width = vm.memory.readU32(at + 4);
        const written = vm.memory.readU64(at + 8);
        const read = vm.memory.readU64(at + 16);
        const pageEnd = (Math.floor(offset / 4096) + 1) * 4096;
        if (offset + width > pageEnd) {
          lengthsSeen.add(pageEnd - offset);
          lengthsSeen.add(offset + width - pageEnd);
        } else {
          lengthsSeen.add(width);
        }
        let pattern = 0n;
        for (let b = 0; b < width; b++) {
          expected.set(offset + b, Number((written >> BigInt(8 * b)) & 0xffn));
          pattern |= BigInt(patternByte(offset + b)) << BigInt(8 * b);
        }
        assert.equal(read, pattern, `read of ${width} bytes at +0x${offset.toString(16)}`);
      }
      assert.deepEqual([...lengthsSeen].sort(), [1, 2, 3, 4, 5, 6, 7, 8], "KVM reported every length");
      for (const [offset, byte] of expected) {
        assert.equal(device.writeCounts[offset], 1, `byte +0x${offset.toString(16)} written once`);
        assert.equal(device.bytes[offset], byte, `byte +0x${offset.toString(16)}`);
      }
      const written = device.writeCounts.reduce((sum, n) => sum + n, 0);
      assert.equal(written, expected.size, "no byte written that the guest did not write");
      assert.equal(device.badSizes, 0, "the device was only ever given 1, 2, 4 or 8 bytes");
    } finally {
      await vm.stop();
    }
  });
}

/** Writes a 64-bit interrupt gate for `vector` to `handler` into the IDT at `idt`. */
function writeGate(vm: Vm, idt: number, vector: number, handler: number): void {
  const at = idt + vector * 16;
  vm.memory.writeU16(at, handler & 0xffff);
  vm.memory.writeU16(at + 2, 0x08); // the flat loader's kernel code selector
  vm.memory.writeU8(at + 4, 0);
  vm.memory.writeU8(at + 5, 0x8e); // present, DPL 0, interrupt gate
  vm.memory.writeU16(at + 6, (handler >>> 16) & 0xffff);
  vm.memory.writeU32(at + 8, 0);
  vm.memory.writeU32(at + 12, 0);
}

const UNKNOWN_MSR = 0x1234_5678;
const GP_STATUS = 13;

/** Reads (or writes) `msr` and reports the low bits read; a #GP handler reports 13 instead. */
function msrVm(options: { userspaceMsrs: boolean; write?: boolean; device?: boolean }): Vm {
  const vm = Vm.create({ memory: 2 * MiB, userspaceMsrs: options.userspaceMsrs });
  vm.addDebugExit();
  if (options.device) {
    vm.addDevice({
      space: "msr", base: UNKNOWN_MSR, length: 1,
      device: { name: "msr 0x12345678", read: () => 42, write: () => {} },
    });
  }
  const ENTRY = 0x10000;
  const HANDLER_OFFSET = 0x40;
  const access = options.write
    ? [0x31, 0xc0, 0x31, 0xd2, 0x0f, 0x30, 0xb8, ...imm32(42)] // xor eax,eax; xor edx,edx; wrmsr; mov eax, 42
    : [0x0f, 0x32];                                             // rdmsr
  const main = [
    0xb9, ...imm32(UNKNOWN_MSR),              // mov ecx, msr
    ...access,
    0xe7, 0xf4,                               // out 0xf4, eax
    0xf4,                                     // hlt
  ];
  const code = [...main, ...new Array(HANDLER_OFFSET - main.length).fill(0x90), ...exitWith(GP_STATUS)];
  const state = loadFlatProgram(vm.memory, { code, entry: ENTRY });
  const IDT = 0x8000;
  vm.memory.fill(IDT, 256 * 16, 0);
  writeGate(vm, IDT, 13, ENTRY + HANDLER_OFFSET);
  state.specialRegisters = { ...state.specialRegisters, idt: { base: BigInt(IDT), limit: 256 * 16 - 1 } };
  vm.setCpuState(0, state);
  return vm;
}

for (const write of [false, true]) {
  const op = write ? "wrmsr" : "rdmsr";
  test(`${op} of an MSR no device claims raises #GP, with or without userspace MSRs; a device's MSR works`, { timeout: 30_000 }, async () => {
    for (const userspaceMsrs of [true, false]) {
      const vm = msrVm({ userspaceMsrs, write });
      try {
        assert.deepEqual(await vm.run(), { reason: "debug-exit", status: GP_STATUS }, `${op}, userspaceMsrs ${userspaceMsrs}`);
      } finally {
        await vm.stop();
      }
    }
    const claimed = msrVm({ userspaceMsrs: true, write, device: true });
    try {
      assert.deepEqual(await claimed.run(), { reason: "debug-exit", status: 42 }, `${op} of a claimed MSR`);
      assert.equal(claimed.stats.unclaimedReads + claimed.stats.unclaimedWrites, 0);
    } finally {
      await claimed.stop();
    }
  });
}

test("two vCPUs taking turns read a worker-local PM timer that never runs backwards", { timeout: 60_000 }, async () => {
  const vm = Vm.create({ memory: 2 * MiB, vcpus: 2 });
  try {
    vm.addDebugExit();
    vm.addWorkerDevice({
      space: "pio", base: DEFAULT_PM_TIMER_PORT, length: PM_TIMER_LENGTH, module: PM_TIMER_WORKER,
      shared: AcpiPmTimer.createOrigin(),
    });
    const code = buildFlatGuest("pm-timer-order");
    for (const vcpu of [0, 1]) {
      const state = loadFlatProgram(vm.memory, { code, registers: { rdi: BigInt(vcpu) } });
      state.registers = { ...state.registers, rsp: BigInt(0xf000 - vcpu * 0x1000) };
      vm.setCpuState(vcpu, state);
    }
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
    const values = Array.from({ length: 128 }, (_, i) => vm.memory.readU32(0x90100 + 4 * i));
    for (let i = 1; i < values.length; i++) {
      assert.ok(values[i] >= values[i - 1], `read ${i} (vCPU ${i % 2}) gave ${values[i]} after ${values[i - 1]}`);
    }
  } finally {
    await vm.stop();
  }
});

test("workervisor run: 4096 piped bytes reach a late-starting guest in order, none overrun", { timeout: 120_000 }, async () => {
  const kernel = buildMultibootGuest("serial-input-check", { COUNT: 4096 });
  const input = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 13 + 7) & 0xff));
  const child = spawn(process.execPath, [CLI, "run", "--kernel", kernel], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("latin1")));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString("latin1")));
  // In small pieces, as a pipe delivers them, all long before the guest opens its FIFO.
  for (let at = 0; at < input.length; at += 23) child.stdin.write(input.subarray(at, at + 23));
  child.stdin.end();
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  assert.equal(code, 1, `guest status 0 expected (exit code 1), got ${code}: ${output}`);
});

/** Starts a channel producer thread and resolves its messages in order. */
function producer(mode: "post" | "request", capacity: number) {
  const doorbell = createDoorbell();
  const channel = ExitChannel.create(capacity, doorbell);
  const worker = new Worker(CHANNEL_PRODUCER, { workerData: { channel: channel.buffer, doorbell: doorbell.buffer, mode } });
  const messages: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  worker.on("message", (m: Record<string, unknown>) => {
    messages.push(m);
    wake?.();
  });
  const next = async (): Promise<Record<string, unknown>> => {
    while (messages.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return messages.shift()!;
  };
  return { channel, worker, next };
}

test("STOP ends a worker parked on a full ring that nobody drains; post() reports it", { timeout: 30_000 }, async () => {
  const { channel, worker, next } = producer("post", 8);
  try {
    assert.deepEqual(await next(), { full: true });
    // Let it park (its spin budget is small), then stop it without draining a single record.
    await new Promise((resolve) => setTimeout(resolve, 50));
    channel.setControl(Control.STOP);
    const repeat = setInterval(() => channel.setControl(Control.STOP), 50);
    const ended = await next();
    clearInterval(repeat);
    assert.deepEqual(ended, { ended: "stopped", posted: 8 }, "the ninth record was never posted");
  } finally {
    await worker.terminate();
  }
});

test("STOP ends a worker waiting for a sync answer that never comes", { timeout: 30_000 }, async () => {
  const { channel, worker, next } = producer("request", 8);
  try {
    assert.deepEqual(await next(), { waiting: true });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(channel.hasRequest(), "the request is pending");
    channel.setControl(Control.STOP);
    const repeat = setInterval(() => channel.setControl(Control.STOP), 50);
    const ended = await next();
    clearInterval(repeat);
    assert.deepEqual(ended, { ended: "stopped" });
    assert.ok(!channel.hasRequest(), "the worker withdrew its request");
  } finally {
    await worker.terminate();
  }
});

test("clear errors: guest RAM the host cannot give, an I/O event of an impossible size", { timeout: 60_000 }, async () => {
  const run = spawnSync(process.execPath, [CLI, "run", "--kernel", buildMultibootGuest("serial-input-check", { COUNT: 1 }), "--mem", "60000G"], {
    encoding: "utf8", timeout: 60_000,
  });
  assert.equal(run.status, 2);
  assert.match(run.stderr, /cannot allocate 59997 GiB of guest RAM \(the region at 0x100000000\): the host has \d+(\.\d)? GiB of memory \(.* free\) and refused the allocation\. Ask for less guest memory\./);

  const vm = Vm.create({ memory: 2 * MiB });
  try {
    assert.throws(() => vm.addIoEvent({ space: "pio", address: 0x500, size: 3 as 4 }), {
      name: "VmConfigError", message: "I/O event at pio 0x500: size must be 1, 2, 4 or 8 bytes (or 0: any write), got 3",
    });
    assert.throws(() => vm.addIoEvent({ space: "mmio", address: 0xd000_0000, size: 1, value: 256 }), {
      name: "VmConfigError", message: "I/O event at mmio 0xd0000000: value 256 does not fit in 1 byte(s)",
    });
    assert.throws(() => vm.addIoEvent({ space: "pio", address: 0xffff, size: 2 }), /address is outside the pio space/);
    vm.addIoEvent({ space: "pio", address: 0x500, size: 4, value: 7 });
    assert.throws(() => vm.addIoEvent({ space: "pio", address: 0x500, size: 4, value: 7 }), {
      name: "HypervisorError", message: /^KVM_IOEVENTFD \(pio 0x500, 4 bytes\) failed: EEXIST .*already registered/,
    });
  } finally {
    await vm.stop();
  }
});
