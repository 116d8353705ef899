/**
 * Options on real KVM: bad configurations fail up front with a VmConfigError naming the
 * problem (and leak no fds), programs that do not fit are refused, and the other two
 * guest modes (16-bit real mode, 64-bit CPL3) run and report exactly.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import {
  CounterDevice, destroyVcpuPool, GuestProgramError, Serial16550, Vm, type VmOptions,
} from "../runtime/index.js";
import { DEBUG_EXIT } from "../runtime/guests/guest-bytes.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

const badOptions: [string, VmOptions, RegExp][] = [
  ["zero memory", { memory: 0 }, /memory region 0 .*size must be a positive whole number of bytes/],
  ["negative memory", { memory: -4096 }, /size must be a positive whole number of bytes/],
  ["memory not a multiple of the page size", { memory: 2 * MiB + 100 }, /size must be a multiple of 4096 bytes/],
  ["memory that is not a number", { memory: "2M" as unknown as number }, /memory must be a size in bytes or an array/],
  ["no memory regions", { memory: [] }, /at least one memory region is required/],
  ["an unknown interrupt-controller mode", { memory: 2 * MiB, irqchip: "userspace" as "split" }, /irqchip must be true, false, "in-kernel", "split" or "none", got userspace/],
  ["an unaligned region address", { memory: [{ gpa: 0x1800, size: 0x1000 }] }, /guest-physical address must be page-aligned/],
  [
    "overlapping memory regions",
    { memory: [{ gpa: 0, size: 2 * MiB }, { gpa: MiB, size: 2 * MiB }] },
    /memory regions overlap: \[0x0, 0x200000\) and \[0x100000, 0x300000\)/,
  ],
  ["zero vCPUs", { memory: 2 * MiB, vcpus: 0 }, /vcpus must be a whole number of at least 1, got 0/],
  ["negative vCPUs", { memory: 2 * MiB, vcpus: -2 }, /vcpus must be a whole number of at least 1, got -2/],
  ["a fractional vCPU count", { memory: 2 * MiB, vcpus: 1.5 }, /vcpus must be a whole number of at least 1, got 1.5/],
  ["too many vCPUs", { memory: 2 * MiB, vcpus: 100_000 }, /vcpus 100000 is more than this host allows \(\d+\)/],
  ["a ring capacity that is not a power of two", { memory: 2 * MiB, ringCapacity: 3 }, /ring capacity must be a power of two .*got 3/],
  ["a zero ring capacity", { memory: 2 * MiB, ringCapacity: 0 }, /ring capacity must be a power of two .*got 0/],
  ["an unknown onHalt", { memory: 2 * MiB, onHalt: "sleep" as "stop" }, /onHalt must be "stop" or "resume", got sleep/],
];

for (const [problem, options, message] of badOptions) {
  test(`Vm.create rejects ${problem} with a VmConfigError`, () => {
    const before = openFds();
    assert.throws(() => Vm.create(options), { name: "VmConfigError", message });
    assert.equal(openFds(), before, "no fd left open by the failed create");
  });
}

test("overlapping devices are rejected with a VmConfigError naming both", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDevice({ space: "pio", base: 0x3f8, length: 8, device: new Serial16550({ output: () => {}, name: "com1" }) });
    assert.throws(
      () => vm.addDevice({ space: "pio", base: 0x3fc, length: 8, device: new CounterDevice(undefined, "counter") }),
      { name: "VmConfigError", message: /pio range \[0x3fc, 0x404\) for 'counter' overlaps 'com1' at \[0x3f8, 0x400\)/ },
    );
    vm.addDevice({ space: "mmio", base: 0xd000_0000, length: 0x1000, device: new CounterDevice(undefined, "mmio one") });
    assert.throws(
      () => vm.addDevice({ space: "mmio", base: 0xcfff_f000, length: 0x2000, device: new CounterDevice(undefined, "mmio two") }),
      { name: "VmConfigError", message: /for 'mmio two' overlaps 'mmio one'/ },
    );
    assert.throws(
      () =>
        vm.addWorkerDevice({
          space: "pio", base: 0x3f8, length: 1, module: "file:///nowhere.js", shared: CounterDevice.createState(),
        }),
      { name: "VmConfigError", message: /overlaps a main-thread device/ },
    );
    // The same range in another address space is no overlap.
    vm.addDevice({ space: "mmio", base: 0x3f8, length: 8, device: new CounterDevice(undefined, "low mmio") });
    assert.throws(
      () => vm.addDevice({ space: "pio", base: 0xfffc, length: 8, device: new CounterDevice(undefined, "too high") }),
      { name: "VmConfigError", message: /outside the address space/ },
    );
  } finally {
    await vm.stop();
  }
});

test("a guest program that does not fit in RAM is refused with GuestProgramError", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    const code = new Uint8Array(0x2000).fill(0x90); // nop
    assert.throws(
      () => vm.loadProgram({ code, entry: 2 * MiB - 0x1000, mode: "long64" }),
      (error: unknown) =>
        error instanceof GuestProgramError &&
        /guest program \(8192 bytes at 0x1ff000\) does not fit in guest RAM/.test(error.message),
    );
    assert.throws(() => vm.loadProgram({ code: [0xf4], entry: 4 * MiB, mode: "long64" }), GuestProgramError);
    assert.throws(() => vm.loadProgram({ code: [], mode: "long64" }), { name: "GuestProgramError", message: /empty/ });
    assert.throws(() => vm.loadProgram({ code: [0xf4], entry: 0x10000, mode: "real16" }), {
      name: "GuestProgramError",
      message: /real-mode entry must be below 64 KiB/,
    });
  } finally {
    await vm.stop();
  }
});

test("a 16-bit real-mode guest at 0x1000 sums 1..10, stores it through a segment and reports it", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    vm.loadProgram({
      mode: "real16",
      entry: 0x1000,
      code: [
        0xb9, 0x0a, 0x00,                         // mov cx, 10
        0x31, 0xc0,                               // xor ax, ax
        0x01, 0xc8,                               // 1: add ax, cx
        0xe2, 0xfc,                               // loop 1b
        0xbb, 0x00, 0x02,                         // mov bx, 0x200
        0x8e, 0xdb,                               // mov ds, bx
        0xa3, 0x10, 0x00,                         // mov [0x10], ax    ; ds:0x10 is 0x2010
        0xe7, DEBUG_EXIT,                         // out 0xf4, ax
        0xf4,                                     // hlt
      ],
    });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 55 });
    assert.equal(vm.memory.readU16(0x2010), 55);
    assert.equal(vm.memory.readU16(0x10), 0, "the store went through DS, not to offset 0x10");
  } finally {
    await vm.stop();
  }
});

test("a CPL3 guest sums 1..1000 in a loop and reports 500500 through a port", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    vm.loadProgram({
      mode: "user64",
      code: [
        0x31, 0xc0,                               // xor eax, eax
        0xb9, 0xe8, 0x03, 0x00, 0x00,             // mov ecx, 1000
        0x01, 0xc8,                               // 1: add eax, ecx
        0xff, 0xc9,                               // dec ecx
        0x75, 0xfa,                               // jnz 1b
        0x8c, 0xcb,                               // mov ebx, cs
        0x83, 0xe3, 0x03,                         // and ebx, 3           ; the privilege level it ran at
        0x89, 0x1c, 0x25, 0x00, 0x80, 0x00, 0x00, // mov [0x8000], ebx
        0xe7, DEBUG_EXIT,                         // out 0xf4, eax
        0xf4,                                     // hlt
      ],
    });
    vm.memory.writeU32(0x8000, 0xffff_ffff);
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 500_500 });
    assert.equal(vm.memory.readU32(0x8000), 3, "CPL 3");
  } finally {
    await vm.stop();
  }
});
