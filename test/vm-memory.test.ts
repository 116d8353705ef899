/**
 * Guest RAM on real KVM: what JS writes is what the guest runs and reads, what the guest
 * stores is what JS sees, and every access from JS is bounds-checked against the regions.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { destroyVcpuPool, GuestMemory, GuestMemoryError, Vm } from "../runtime/index.js";
import { DEBUG_EXIT, exitWith } from "../runtime/guests/guest-bytes.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;


test("100 fresh VMs in a row each run the code JS wrote into their RAM", async () => {
  for (let i = 0; i < 100; i++) {
    // Spread the values over all 32 bits, high bit included, so no two runs look alike.
    const value = (Math.imul(i + 1, 0x9e37_79b9) ^ i) >>> 0;
    const vm = Vm.create({ memory: 2 * MiB });
    try {
      vm.addDebugExit();
      vm.loadProgram({ code: exitWith(value), mode: "long64" });
      assert.deepEqual(vm.memory.read(0x10000, 8), Uint8Array.from(exitWith(value)), `VM ${i}: code in RAM`);
      assert.deepEqual(await vm.run(), { reason: "debug-exit", status: value }, `VM ${i}`);
    } finally {
      await vm.stop();
    }
  }
});

test("GuestMemory accessors reject reads and writes across region ends and into holes", () => {
  // RAM at [0, 64 KiB) and [128 KiB, 192 KiB); [64 KiB, 128 KiB) is a hole.
  const memory = GuestMemory.allocate([
    { gpa: 0x20000, size: 0x10000 },
    { gpa: 0, size: 0x10000 },
  ]);
  assert.deepEqual(memory.regions.map((r) => [r.gpa, r.size]), [[0, 0x10000], [0x20000, 0x10000]]);
  assert.equal(memory.totalSize, 0x20000);

  // The last bytes of each region are fine.
  memory.writeU64(0xfff8, 0x1122_3344_5566_7788n);
  assert.equal(memory.readU64(0xfff8), 0x1122_3344_5566_7788n);
  memory.writeU32(0x2fffc, 0xdead_beef);
  assert.equal(memory.readU32(0x2fffc), 0xdead_beef);
  memory.writeU8(0x20000, 0x5a);
  assert.equal(memory.readU8(0x20000), 0x5a);

  const pastEnd = { name: "GuestMemoryError", message: /runs past the end of its RAM region/ };
  const inHole = { name: "GuestMemoryError", message: /not backed by guest RAM/ };
  // Across the end of the first region, into the hole.
  assert.throws(() => memory.readU16(0xffff), pastEnd);
  assert.throws(() => memory.readU32(0xfffe), pastEnd);
  assert.throws(() => memory.readU64(0xfff9), pastEnd);
  assert.throws(() => memory.writeU64(0xfffc, 1n), pastEnd);
  assert.throws(() => memory.write(0xff00, new Uint8Array(0x101)), pastEnd);
  assert.throws(() => memory.read(0xff00, 0x101), pastEnd);
  assert.throws(() => memory.fill(0x8000, 0x8001, 0xaa), pastEnd);
  // Inside the hole, and beyond the last region.
  assert.throws(() => memory.readU8(0x10000), inHole);
  assert.throws(() => memory.writeU32(0x1fffc, 1), inHole);
  assert.throws(() => memory.read(0x18000, 1), inHole);
  assert.throws(() => memory.readU8(0x30000), inHole);
  assert.throws(() => memory.writeU16(0x2ffff, 1), pastEnd);
  // Addresses and lengths a guest could hand a device.
  assert.throws(() => memory.readU8(-1), { name: "GuestMemoryError", message: /non-negative integers/ });
  assert.throws(() => memory.read(0x100, -1), { name: "GuestMemoryError", message: /non-negative integers/ });
  assert.throws(() => memory.readU8(0.5), { name: "GuestMemoryError", message: /non-negative integers/ });
  assert.throws(() => memory.readU8(2 ** 64), { name: "GuestMemoryError", message: /non-negative integers/ });

  const error = (() => {
    try {
      memory.readU32(0xfffe);
    } catch (e) {
      return e;
    }
  })();
  assert.ok(error instanceof GuestMemoryError);
  assert.equal(error.gpa, 0xfffe);
  assert.equal(error.length, 4);

  // A failed write changes nothing: the bytes before the region end stay as they were.
  assert.equal(memory.readU64(0xfff8), 0x1122_3344_5566_7788n);
  assert.equal(memory.isBacked(0xfff8, 8), true);
  assert.equal(memory.isBacked(0xfff8, 9), false);
  assert.equal(memory.isBacked(0x20000, 0x10000), true);
});

test("a guest with two RAM regions and a hole: stores land in RAM, the hole is unclaimed MMIO", async () => {
  // RAM at [0, 1 MiB) and [4 MiB, 5 MiB); [1 MiB, 4 MiB) is a hole.
  const vm = Vm.create({ memory: [{ gpa: 0, size: MiB }, { gpa: 4 * MiB, size: MiB }] });
  try {
    vm.addDebugExit();
    vm.memory.writeU64(0x40_0000, 0x0fff_ffff_ffff_fffen); // for the guest to read
    vm.memory.fill(0x8000, 16, 0);
    vm.loadProgram({
      mode: "long64",
      code: [
        0x48, 0xb8, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // mov rax, 0x0123456789abcdef
        0x48, 0x89, 0x04, 0x25, 0x00, 0x08, 0x40, 0x00,             // mov [0x400800], rax   ; second region
        0xc7, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, 0x0d, 0xf0, 0xfe, 0xca, // mov dword [0x8000], 0xcafef00d ; first region
        0xbb, 0x00, 0x00, 0x20, 0x00,                               // mov ebx, 0x200000     ; in the hole
        0x89, 0x03,                                                 // mov [rbx], eax        ; unclaimed: dropped
        0x48, 0x8b, 0x0b,                                           // mov rcx, [rbx]        ; unclaimed: all-ones
        0x48, 0x89, 0x0c, 0x25, 0x08, 0x80, 0x00, 0x00,             // mov [0x8008], rcx
        0x48, 0x8b, 0x14, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rdx, [0x400000]   ; what JS put there
        0x48, 0x83, 0xc2, 0x01,                                     // add rdx, 1
        0x48, 0x89, 0x14, 0x25, 0x08, 0x00, 0x40, 0x00,             // mov [0x400008], rdx
        0x31, 0xc0,                                                 // xor eax, eax
        0xe6, DEBUG_EXIT,                                           // out 0xf4, al
        0xf4,                                                       // hlt
      ],
    });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });

    assert.equal(vm.memory.readU64(0x40_0800), 0x0123_4567_89ab_cdefn);
    assert.equal(vm.memory.readU32(0x8000), 0xcafe_f00d);
    assert.equal(vm.memory.readU64(0x8008), 0xffff_ffff_ffff_ffffn);
    assert.equal(vm.memory.readU64(0x40_0008), 0x0fff_ffff_ffff_ffffn);
    assert.equal(vm.stats.unclaimedReads, 1);
    assert.equal(vm.stats.unclaimedWrites, 1);
    // The hole is not RAM from JS either.
    assert.throws(() => vm.memory.readU32(0x20_0000), { name: "GuestMemoryError", message: /not backed/ });
    assert.throws(() => vm.memory.readU64(MiB - 4), { name: "GuestMemoryError", message: /past the end/ });
  } finally {
    await vm.stop();
  }
});

test("a guest summing a table JS wrote into RAM writes the sum where JS reads it", async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    const table = Array.from({ length: 512 }, (_, i) => BigInt(i) * 0x1_0000_0001n + 7n);
    table.forEach((value, i) => vm.memory.writeU64(0x20000 + i * 8, value));
    vm.loadProgram({
      mode: "long64",
      registers: { rcx: BigInt(table.length) },
      code: [
        0xbe, 0x00, 0x00, 0x02, 0x00,             // mov esi, 0x20000
        0x31, 0xd2,                               // xor edx, edx
        0x48, 0xad,                               // 1: lodsq
        0x48, 0x01, 0xc2,                         // add rdx, rax
        0xe2, 0xf9,                               // loop 1b
        0x48, 0x89, 0x14, 0x25, 0x00, 0x00, 0x03, 0x00, // mov [0x30000], rdx
        0x31, 0xc0,                               // xor eax, eax
        0xe6, DEBUG_EXIT,                         // out 0xf4, al
        0xf4,                                     // hlt
      ],
    });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
    assert.equal(vm.memory.readU64(0x30000), table.reduce((a, b) => a + b, 0n));
  } finally {
    await vm.stop();
  }
});
