/**
 * The exit channel on real KVM: posted writes reach the device in program order and before
 * the same vCPU's next synchronous exit, a full ring makes the vCPU wait instead of losing
 * records, and two vCPUs share one dispatcher without mixing up each other's order.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { type AccessSize, CounterDevice, type Device, destroyVcpuPool, type HighWord, Vm } from "../runtime/index.js";
import { countingProgram } from "../runtime/guests/programs.js";
import { ascii, imm32 } from "../runtime/guests/guest-bytes.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
const COUNTER_PORT = 0x500;


test("100,000 posted writes arrive in order before the read that counts them", { timeout: 120_000 }, async () => {
  const n = 100_000;
  const counter = new CounterDevice();
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDevice({ space: "pio", base: COUNTER_PORT, length: 16, device: counter });
    vm.addDebugExit();
    vm.loadProgram({ code: countingProgram(COUNTER_PORT), mode: "long64", registers: { rcx: BigInt(n) } });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: n });
    assert.equal(counter.writes, n);
    assert.equal(counter.inOrder, n);
    assert.equal(vm.stats.posted, n);
  } finally {
    await vm.stop();
  }
});

/**
 * A counter slower than the guest: every write costs the main thread 100 µs, and the first
 * one holds it until the vCPU has found the ring full (or 10 s have passed, a hang guard).
 * So the ring fills however a loaded machine shares its cores between the two threads.
 */
class SlowCounter implements Device {
  readonly name = "slow counter";
  readonly counter = new CounterDevice();
  constructor(private readonly ringFilled: () => boolean) {}
  read(offset: number, size: AccessSize, wide: HighWord): number {
    return this.counter.read(offset, size, wide);
  }
  write(offset: number, size: AccessSize, value: number, high: number): void {
    const first = this.counter.writes === 0;
    const until = performance.now() + (first ? 10_000 : 0.1);
    while (performance.now() < until && !(first && this.ringFilled()));
    this.counter.write(offset, size, value, high);
  }
}

for (const ringCapacity of [4, 1]) {
  test(`a ring of ${ringCapacity} in front of a slow device: the vCPU waits, nothing is lost`, { timeout: 60_000 }, async () => {
    const n = 2000;
    const vm = Vm.create({ memory: 2 * MiB, ringCapacity });
    const slow = new SlowCounter(() => vm.stats.ringFullWaits > 0);
    try {
      vm.addDevice({ space: "pio", base: COUNTER_PORT, length: 16, device: slow });
      vm.addDebugExit();
      vm.loadProgram({ code: countingProgram(COUNTER_PORT), mode: "long64", registers: { rcx: BigInt(n) } });
      assert.deepEqual(await vm.run(), { reason: "debug-exit", status: n });
      assert.equal(slow.counter.writes, n);
      assert.equal(slow.counter.inOrder, n);
      assert.equal(vm.stats.posted, n);
      assert.ok(vm.stats.ringFullWaits > 0, `the ring filled up (ringFullWaits ${vm.stats.ringFullWaits})`);
    } finally {
      await vm.stop();
    }
  });
}

/** A serial-like sink: one port, every byte written kept in arrival order. */
class Collector implements Device {
  readonly name = "collector";
  readonly bytes: number[] = [];
  read(_offset: number, size: AccessSize): number {
    return 0;
  }
  write(_offset: number, _size: AccessSize, value: number): void {
    this.bytes.push(value);
  }
}

/** Writes the NUL-terminated string at `text` to port 0x3f8 one `out` per byte, then halts. */
function printBytewise(text: number): number[] {
  return [
    0xbe, ...imm32(text),                     // mov esi, text
    0x66, 0xba, 0xf8, 0x03,                   // mov dx, 0x3f8
    0xac,                                     // 1: lodsb
    0x84, 0xc0,                               // test al, al
    0x74, 0x03,                               // jz 2f
    0xee,                                     // out dx, al
    0xeb, 0xf8,                               // jmp 1b
    0xf4,                                     // 2: hlt
  ];
}

test("four vCPUs' synchronous writes through one device: all in each one's order, and the waiting threads yield their cores", { timeout: 120_000 }, async () => {
  const vcpus = 4;
  const alphabets = ["abcdefghij", "klmnopqrst", "uvwxyzABCD", "EFGHIJKLMN"];
  const texts = alphabets.map((alphabet, i) => scrambled(alphabet, 1500, i + 1));
  const collector = new Collector();
  const vm = Vm.create({ memory: 2 * MiB, vcpus });
  // The four vCPUs and the dispatcher wait on one another: more of them than cores (2 on CI).
  const oversubscribed = vcpus + 1 > availableParallelism();
  try {
    vm.addDevice({ space: "pio", base: 0x3f8, length: 1, device: collector, sync: true });
    texts.forEach((text, i) => {
      vm.memory.write(0x20000 + i * 0x1000, [...ascii(text), 0]);
      vm.loadProgram({ code: printBytewise(0x20000 + i * 0x1000), entry: 0x10000 + i * 0x1000, mode: "long64" }, i);
    });
    assert.deepEqual(await vm.run(), { reason: "halted" });

    const received = Buffer.from(collector.bytes).toString("latin1");
    assert.equal(received.length, texts.reduce((sum, t) => sum + t.length, 0));
    alphabets.forEach((alphabet, i) => {
      const own = new RegExp(`[^${alphabet}]`, "g");
      assert.equal(received.replace(own, ""), texts[i], `vCPU ${i}'s bytes in its order`);
    });
    const stats = vm.stats;
    assert.equal(stats.sync, received.length);
    assert.equal(stats.posted, 0);
    assert.ok(vm.spinPolicy.yields > 0, "waiting workers yield their core before they park");
    if (oversubscribed) {
      // More waiting threads than cores (CI's 2): short spins, and both sides yielded.
      assert.equal(vm.spinPolicy.maxSpins, vm.spinPolicy.minSpins, "oversubscribed workers spin only the minimum");
      assert.ok(stats.workerYields > 0, `workers waiting for answers yielded their cores (${stats.workerYields} yields)`);
      assert.ok(stats.dispatcherYields > 0, `the dispatcher yielded its core between requests (${stats.dispatcherYields})`);
    } else {
      assert.ok(vm.spinPolicy.maxSpins > vm.spinPolicy.minSpins, "with a core per waiting thread, workers keep their long spin");
    }
  } finally {
    await vm.stop();
  }
});

test("a dispatcher that lost time between two looks at the clock yields its core while it polls on", { timeout: 60_000 }, async () => {
  const text = scrambled("abcdefghijklmnopqrstuvwxyz", 2000, 7);
  // Three writes hold the main thread 2 ms each, as a preemption would: polling then finds
  // its clock far ahead and treats the host as contended.
  const collector = new Collector();
  const stalling: Device = {
    name: "stalling collector",
    read: () => 0,
    write(offset, size, value) {
      const n = collector.bytes.length;
      if (n === 500 || n === 1000 || n === 1500) for (const until = performance.now() + 2; performance.now() < until;);
      collector.write(offset, size, value);
    },
  };
  const vm = Vm.create({ memory: 2 * MiB, vcpus: 1, dispatcher: { blockingParks: false } });
  try {
    vm.addDevice({ space: "pio", base: 0x3f8, length: 1, device: stalling, sync: true });
    vm.memory.write(0x20000, [...ascii(text), 0]);
    vm.loadProgram({ code: printBytewise(0x20000), mode: "long64" });
    assert.deepEqual(await vm.run(), { reason: "halted" });
    assert.equal(Buffer.from(collector.bytes).toString("latin1"), text);
    const stats = vm.stats;
    assert.ok(stats.dispatcherStalls >= 1, `the dispatcher saw its stalls (${stats.dispatcherStalls})`);
    assert.ok(stats.dispatcherYields > 0, `and yielded its core after them (${stats.dispatcherYields} yields)`);
  } finally {
    await vm.stop();
  }
});

/** `length` letters from `alphabet` in a fixed pseudo-random order, so any reordering shows. */
function scrambled(alphabet: string, length: number, seed: number): string {
  let state = seed;
  let text = "";
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    text += alphabet[(state >>> 16) % alphabet.length];
  }
  return text;
}

test("two vCPUs print through one device at once; each one's bytes arrive in its order", { timeout: 60_000 }, async () => {
  const lower = scrambled("abcdefghijklmnopqrstuvwxyz", 3000, 1);
  const upper = scrambled("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 3000, 2);
  const collector = new Collector();
  const vm = Vm.create({ memory: 2 * MiB, vcpus: 2 });
  try {
    vm.addDevice({ space: "pio", base: 0x3f8, length: 1, device: collector });
    vm.memory.write(0x20000, [...ascii(lower), 0]);
    vm.memory.write(0x28000, [...ascii(upper), 0]);
    vm.loadProgram({ code: printBytewise(0x20000), entry: 0x10000, mode: "long64" }, 0);
    vm.loadProgram({ code: printBytewise(0x28000), entry: 0x11000, mode: "long64" }, 1);
    assert.deepEqual(await vm.run(), { reason: "halted" });

    const received = Buffer.from(collector.bytes).toString("latin1");
    assert.equal(received.length, lower.length + upper.length);
    assert.equal(received.replace(/[^a-z]/g, ""), lower, "vCPU 0's bytes in its order");
    assert.equal(received.replace(/[^A-Z0-9]/g, ""), upper, "vCPU 1's bytes in its order");
    assert.equal(vm.stats.posted, lower.length + upper.length);
  } finally {
    await vm.stop();
  }
});
