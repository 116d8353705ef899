/**
 * Writes the kernel queues without a userspace exit (KVM's coalesced MMIO and PIO): every
 * one reaches its device in order, before the synchronous read that follows them, across a
 * full queue (the write then exits and must not overtake the queue), and before pause()
 * resolves; an idle VM with a coalesced zone wakes the main thread only a few times.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { COUNTER_LENGTH, CounterDevice, destroyVcpuPool, Vm } from "../runtime/index.js";
import { countingProgram } from "../runtime/guests/programs.js";
import { imm32, imm64 } from "../runtime/guests/guest-bytes.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
const MMIO_COUNTER = 0xd000_0000;
const FLAG = 0x9000;

/** Writes 1..RCX to the MMIO counter's COUNT register, then reads IN_ORDER and exits with it. */
function mmioCountingProgram(base: number): number[] {
  return [
    0x48, 0xbb, ...imm64(BigInt(base)),       // mov rbx, base
    0x31, 0xc0,                               // xor eax, eax
    0xff, 0xc0,                               // 1: inc eax
    0x89, 0x03,                               // mov [rbx], eax         ; coalesced
    0x39, 0xc8,                               // cmp eax, ecx
    0x75, 0xf8,                               // jne 1b
    0x8b, 0x43, 0x04,                         // mov eax, [rbx + 4]     ; IN_ORDER: a read exits
    0xe7, 0xf4,                               // out 0xf4, eax
    0xf4,                                     // hlt
  ];
}

/**
 * Starts `vm`, waits for its guest to set FLAG (from then on it spins without exits), lets
 * `settleMs` pass and returns the main-thread wake-ups of the next second.
 */
async function wakeupsWhileIdle(vm: Vm, settleMs: number): Promise<number> {
  vm.start();
  while (vm.memory.readU32(FLAG) !== 1) await sleep(1);
  await sleep(settleMs);
  const before = vm.stats.mainWakeups;
  await sleep(1000);
  return vm.stats.mainWakeups - before;
}

for (const space of ["mmio", "pio"] as const) {
  test(`${space}: 20,000 coalesced writes arrive in order before the read that counts them`, { timeout: 120_000 }, async () => {
    const n = 20_000;
    const counter = new CounterDevice();
    const vm = Vm.create({ memory: 2 * MiB });
    try {
      vm.addDebugExit();
      const base = space === "mmio" ? MMIO_COUNTER : 0x500;
      vm.addDevice({ space, base, length: COUNTER_LENGTH, device: counter, coalesced: true });
      const code = space === "mmio" ? mmioCountingProgram(base) : countingProgram(base);
      vm.loadProgram({ code, registers: { rcx: BigInt(n) } });
      assert.deepEqual(await vm.run(), { reason: "debug-exit", status: n });
      const stats = vm.stats;
      assert.equal(stats.coalescedZones, 1, "the host's KVM took the zone");
      assert.equal(counter.writes, n);
      assert.equal(counter.inOrder, n, "in order, including the writes that found the queue full");
      assert.ok(stats.coalesced > n / 2, `most writes never left the kernel (${stats.coalesced} of ${n} coalesced)`);
      assert.equal(stats.coalesced + stats.sync - 2, n, "every write was either coalesced or a (full-queue) sync exit");
    } finally {
      await vm.stop();
    }
  });
}

test("coalesced writes have reached the device when pause() resolves; an idle VM barely wakes the main thread", { timeout: 60_000 }, async () => {
  const n = 100;
  const counter = new CounterDevice();
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDevice({ space: "mmio", base: MMIO_COUNTER, length: COUNTER_LENGTH, device: counter, coalesced: true });
    vm.loadProgram({
      code: [
        0x48, 0xbb, ...imm64(BigInt(MMIO_COUNTER)), // mov rbx, base
        0x31, 0xc0,                               // xor eax, eax
        0xff, 0xc0,                               // 1: inc eax
        0x89, 0x03,                               // mov [rbx], eax
        0x3d, ...imm32(n),                        // cmp eax, n
        0x75, 0xf5,                               // jne 1b
        0xc7, 0x04, 0x25, ...imm32(FLAG), ...imm32(1), // mov dword [FLAG], 1
        0xeb, 0xfe,                               // 2: jmp 2b
      ],
    });
    // Once the flush timer has backed off, count. A count, not a speed: a loaded host fires
    // the flush timer later, so less often.
    const wakeups = await wakeupsWhileIdle(vm, 500);
    assert.ok(wakeups <= 10, `an idle VM woke the main thread ${wakeups} times in a second`);
    await vm.pause();
    assert.equal(counter.writes, n, "every coalesced write was delivered when pause() resolved");
    assert.equal(counter.inOrder, n);
  } finally {
    await vm.stop();
  }
});

test("an idle VM (a guest spinning without exits) does not wake the main thread", { timeout: 30_000 }, async () => {
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.loadProgram({
      code: [
        0xc7, 0x04, 0x25, ...imm32(FLAG), ...imm32(1), // mov dword [FLAG], 1
        0xeb, 0xfe,                               // 1: jmp 1b
      ],
    });
    const wakeups = await wakeupsWhileIdle(vm, 100);
    assert.ok(wakeups <= 1, `an idle VM woke the main thread ${wakeups} times in a second`);
  } finally {
    await vm.stop();
  }
});
