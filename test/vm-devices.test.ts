/**
 * Devices on real KVM: values round-trip exactly through a main-thread device and a
 * worker-local one for every access size, string I/O moves whole buffers in order, and an
 * unclaimed port reads all-ones and swallows writes.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import {
  type AccessSize, COUNTER_LENGTH, CounterDevice, CounterRegister, type Device, destroyVcpuPool, joinWords, Serial16550, Vm,
} from "../runtime/index.js";
import { DEBUG_EXIT, ascii } from "../runtime/guests/guest-bytes.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
const COUNTER_WORKER = new URL("../runtime/devices/counter-worker.js", import.meta.url).href;
const COUNTER_PORT = 0x500;
const COUNTER_MMIO = 0xd000_0000;
/** Where the echo programs leave RAX after reading the register back. */
const RESULT = 0x8000;
/** What the guest writes (its low `size` bytes), every size with its top bit set. */
const WRITTEN = 0xf1e2_d3c4_b5a6_9788n;
/** What RAX holds before the read, so a read of the wrong width shows. */
const FILL = 0x5a5a_5a5a_5a5a_5a5an;

type Placement = "main thread" | "worker";

/** A VM with a counter device at `space`, on the main thread or inside the vCPU worker. */
function counterVm(placement: Placement, space: "pio" | "mmio"): { vm: Vm; counter: CounterDevice } {
  const vm = Vm.create({ memory: 2 * MiB });
  vm.addDebugExit();
  const base = space === "pio" ? COUNTER_PORT : COUNTER_MMIO;
  const shared = CounterDevice.createState();
  if (placement === "worker") {
    vm.addWorkerDevice({ space, base, length: COUNTER_LENGTH, module: COUNTER_WORKER, shared });
  } else {
    vm.addDevice({ space, base, length: COUNTER_LENGTH, device: new CounterDevice(shared) });
  }
  // A second view of the same SAB state: what the device saw, wherever it ran.
  return { vm, counter: new CounterDevice(shared) };
}

/** RAX after writing WRITTEN with `size` bytes and reading it back into FILL. */
function expectedRax(size: AccessSize): bigint {
  const mask = (1n << BigInt(size * 8)) - 1n;
  // A 32-bit register write zero-extends into RAX; 8- and 16-bit writes keep the rest.
  if (size >= 4) return WRITTEN & mask;
  return (FILL & ~mask) | (WRITTEN & mask);
}

/** The write and the read were handled in the worker, or posted and synchronous on the main thread. */
function assertHandledWhere(vm: Vm, placement: Placement): void {
  const { inWorker, posted, sync } = vm.stats;
  // The debug-exit write is always a sync exit to the main thread.
  if (placement === "worker") assert.deepEqual({ inWorker, posted, sync }, { inWorker: 2, posted: 0, sync: 1 });
  else assert.deepEqual({ inWorker, posted, sync }, { inWorker: 0, posted: 1, sync: 2 });
}

const PORT_OUT = {
  1: [0xee],                                  // out dx, al
  2: [0x66, 0xef],                            // out dx, ax
  4: [0xef],                                  // out dx, eax
};
const PORT_IN = {
  1: [0xec],                                  // in al, dx
  2: [0x66, 0xed],                            // in ax, dx
  4: [0xed],                                  // in eax, dx
};
const MMIO_STORE = {
  1: [0x88, 0x03],                            // mov [rbx], al
  2: [0x66, 0x89, 0x03],                      // mov [rbx], ax
  4: [0x89, 0x03],                            // mov [rbx], eax
  8: [0x48, 0x89, 0x03],                      // mov [rbx], rax
};
const MMIO_LOAD = {
  1: [0x8a, 0x03],                            // mov al, [rbx]
  2: [0x66, 0x8b, 0x03],                      // mov ax, [rbx]
  4: [0x8b, 0x03],                            // mov eax, [rbx]
  8: [0x48, 0x8b, 0x03],                      // mov rax, [rbx]
};

/** Writes the ECHO port with `out` of `size` bytes, reads it back with `in`, stores RAX. */
function portEchoProgram(size: 1 | 2 | 4): number[] {
  return [
    0x66, 0xba, 0x08, 0x05,                   // mov dx, 0x508          ; counter ECHO
    0x48, 0xb8, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, // mov rax, 0xf1e2d3c4b5a69788
    ...PORT_OUT[size],                        // out dx, al|ax|eax
    0x48, 0xb8, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, // mov rax, 0x5a5a5a5a5a5a5a5a
    ...PORT_IN[size],                         // in al|ax|eax, dx
    0x48, 0x89, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, // mov [0x8000], rax
    0x31, 0xc0,                               // xor eax, eax
    0xe6, DEBUG_EXIT,                         // out 0xf4, al
    0xf4,                                     // hlt
  ];
}

/** The same through MMIO at 0xd0000008, with `mov` of `size` bytes. */
function mmioEchoProgram(size: AccessSize): number[] {
  return [
    0xbb, 0x08, 0x00, 0x00, 0xd0,             // mov ebx, 0xd0000008    ; counter ECHO
    0x48, 0xb8, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, // mov rax, 0xf1e2d3c4b5a69788
    ...MMIO_STORE[size],                      // mov [rbx], al|ax|eax|rax
    0x48, 0xb8, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, // mov rax, 0x5a5a5a5a5a5a5a5a
    ...MMIO_LOAD[size],                       // mov al|ax|eax|rax, [rbx]
    0x48, 0x89, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, // mov [0x8000], rax
    0x31, 0xc0,                               // xor eax, eax
    0xe6, DEBUG_EXIT,                         // out 0xf4, al
    0xf4,                                     // hlt
  ];
}

for (const placement of ["main thread", "worker"] as const) {
  const cases = [
    { space: "pio", label: "port I/O", sizes: [1, 2, 4], program: portEchoProgram },
    { space: "mmio", label: "MMIO", sizes: [1, 2, 4, 8], program: mmioEchoProgram },
  ] as const;
  for (const { space, label, sizes, program } of cases) {
    for (const size of sizes) {
      test(`${label} of ${size} byte(s) round-trips through the counter ECHO register (${placement})`, async () => {
        const { vm, counter } = counterVm(placement, space);
        try {
          vm.loadProgram({ code: (program as (s: AccessSize) => number[])(size), mode: "long64" });
          assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
          assert.equal(counter.reads, 1, "one read by the guest");
          assert.equal(vm.memory.readU64(RESULT), expectedRax(size), "what the guest read back");
          const mask = (1n << BigInt(size * 8)) - 1n;
          const wide = { high: 0 };
          const low = counter.read(CounterRegister.ECHO, 8, wide);
          assert.equal(joinWords(low, wide.high), WRITTEN & mask, "what the device stored");
          assertHandledWhere(vm, placement);
        } finally {
          await vm.stop();
        }
      });
    }
  }
}

test("rep outsb sends a text longer than a page to the serial port, byte for byte", async () => {
  const text = Array.from({ length: 400 }, (_, i) => `line ${String(i).padStart(3, "0")}: the quick brown fox\n`).join("");
  assert.ok(text.length > 2 * 4096, "spans several string I/O exits");
  const received: number[] = [];
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDevice({ space: "pio", base: 0x3f8, length: 8, device: new Serial16550({ output: (byte) => received.push(byte) }) });
    vm.addDebugExit();
    vm.memory.write(0x20000, ascii(text));
    vm.loadProgram({
      mode: "long64",
      registers: { rcx: BigInt(text.length) },
      code: [
        0xbe, 0x00, 0x00, 0x02, 0x00,             // mov esi, 0x20000   ; the text
        0x66, 0xba, 0xf8, 0x03,                   // mov dx, 0x3f8      ; COM1 THR
        0xf3, 0x6e,                               // rep outsb          ; rcx bytes
        0x31, 0xc0,                               // xor eax, eax
        0xe6, DEBUG_EXIT,                         // out 0xf4, al
        0xf4,                                     // hlt
      ],
    });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
    assert.equal(Buffer.from(received).toString("latin1"), text);
  } finally {
    await vm.stop();
  }
});

/** Reads return a fixed sequence per access size: element i of size s is sequenceValue(s, i). */
class SequenceDevice implements Device {
  readonly name = "sequence";
  readonly reads = { 1: 0, 2: 0, 4: 0, 8: 0 };
  read(_offset: number, size: AccessSize): number {
    return sequenceValue(size, this.reads[size]++);
  }
  write(): void {
    throw new Error("the sequence device is read-only");
  }
}

function sequenceValue(size: AccessSize, i: number): number {
  if (size === 1) return (i * 7 + 1) & 0xff;
  if (size === 2) return (Math.imul(i, 0x9e37) + 3) & 0xffff;
  return (Math.imul(i, 0x9e37_79b1) + 5) >>> 0;
}

test("rep insb, insw and insd fill guest RAM with exactly what the device returned, in order", async () => {
  const bytes = 5000, words = 3000, dwords = 1500; // each more than one page
  const device = new SequenceDevice();
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDevice({ space: "pio", base: 0x600, length: 1, device });
    vm.addDebugExit();
    vm.loadProgram({
      mode: "long64",
      code: [
        0x66, 0xba, 0x00, 0x06,                   // mov dx, 0x600
        0xbf, 0x00, 0x00, 0x02, 0x00,             // mov edi, 0x20000
        0xb9, 0x88, 0x13, 0x00, 0x00,             // mov ecx, 5000
        0xf3, 0x6c,                               // rep insb
        0xbf, 0x00, 0x00, 0x03, 0x00,             // mov edi, 0x30000
        0xb9, 0xb8, 0x0b, 0x00, 0x00,             // mov ecx, 3000
        0x66, 0xf3, 0x6d,                         // rep insw
        0xbf, 0x00, 0x00, 0x04, 0x00,             // mov edi, 0x40000
        0xb9, 0xdc, 0x05, 0x00, 0x00,             // mov ecx, 1500
        0xf3, 0x6d,                               // rep insd
        0x31, 0xc0,                               // xor eax, eax
        0xe6, DEBUG_EXIT,                         // out 0xf4, al
        0xf4,                                     // hlt
      ],
    });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
    assert.deepEqual(device.reads, { 1: bytes, 2: words, 4: dwords, 8: 0 });
    const expectBytes = Array.from({ length: bytes }, (_, i) => sequenceValue(1, i));
    const expectWords = Array.from({ length: words }, (_, i) => sequenceValue(2, i));
    const expectDwords = Array.from({ length: dwords }, (_, i) => sequenceValue(4, i));
    assert.deepEqual(Array.from(vm.memory.read(0x20000, bytes)), expectBytes);
    assert.deepEqual(Array.from({ length: words }, (_, i) => vm.memory.readU16(0x30000 + i * 2)), expectWords);
    assert.deepEqual(Array.from({ length: dwords }, (_, i) => vm.memory.readU32(0x40000 + i * 4)), expectDwords);
    // Nothing written past the end of each buffer.
    assert.equal(vm.memory.readU8(0x20000 + bytes), 0);
    assert.equal(vm.memory.readU16(0x30000 + words * 2), 0);
    assert.equal(vm.memory.readU32(0x40000 + dwords * 4), 0);
  } finally {
    await vm.stop();
  }
});

for (const placement of ["main thread", "worker"] as const) {
  test(`rep outsd delivers 1..3000 from RAM to the counter in order (${placement})`, async () => {
    const n = 3000;
    const { vm, counter } = counterVm(placement, "pio");
    try {
      for (let i = 0; i < n; i++) vm.memory.writeU32(0x20000 + i * 4, i + 1);
      vm.loadProgram({
        mode: "long64",
        registers: { rcx: BigInt(n) },
        code: [
          0xbe, 0x00, 0x00, 0x02, 0x00,             // mov esi, 0x20000   ; 1, 2, ... n as dwords
          0x66, 0xba, 0x00, 0x05,                   // mov dx, 0x500      ; counter COUNT
          0xf3, 0x6f,                               // rep outsd
          0x31, 0xc0,                               // xor eax, eax
          0xe6, DEBUG_EXIT,                         // out 0xf4, al
          0xf4,                                     // hlt
        ],
      });
      assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
      assert.equal(counter.writes, n);
      assert.equal(counter.inOrder, n);
    } finally {
      await vm.stop();
    }
  });
}

test("an unclaimed port reads all-ones at every size and drops writes, and both are counted", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    vm.memory.fill(RESULT, 24, 0);
    vm.loadProgram({
      mode: "long64",
      code: [
        0x66, 0xba, 0x00, 0x07,                   // mov dx, 0x700      ; nobody's port
        0x31, 0xc0,                               // xor eax, eax
        0xec,                                     // in al, dx
        0x48, 0x89, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, // mov [0x8000], rax
        0x31, 0xc0,                               // xor eax, eax
        0x66, 0xed,                               // in ax, dx
        0x48, 0x89, 0x04, 0x25, 0x08, 0x80, 0x00, 0x00, // mov [0x8008], rax
        0x31, 0xc0,                               // xor eax, eax
        0xed,                                     // in eax, dx
        0x48, 0x89, 0x04, 0x25, 0x10, 0x80, 0x00, 0x00, // mov [0x8010], rax
        0xb8, 0x78, 0x56, 0x34, 0x12,             // mov eax, 0x12345678
        0xee,                                     // out dx, al
        0x66, 0xef,                               // out dx, ax
        0xef,                                     // out dx, eax
        0x31, 0xc0,                               // xor eax, eax
        0xe6, DEBUG_EXIT,                         // out 0xf4, al
        0xf4,                                     // hlt
      ],
    });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
    assert.equal(vm.memory.readU64(RESULT), 0xffn);
    assert.equal(vm.memory.readU64(RESULT + 8), 0xffffn);
    assert.equal(vm.memory.readU64(RESULT + 16), 0xffff_ffffn);
    assert.equal(vm.stats.unclaimedReads, 3);
    assert.equal(vm.stats.unclaimedWrites, 3);
  } finally {
    await vm.stop();
  }
});
