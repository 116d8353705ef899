/**
 * The idle-VM figure: a guest that spins without exits (and one that left a write in a
 * coalesced zone first) for about a second, counting how often the VM woke the main thread
 * (vm.stats.mainWakeups: dispatcher parks ended, coalesced-queue flush timers).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Vm } from "../runtime/vm.js";
import { CounterDevice } from "../runtime/devices/counter.js";
import { imm32, imm64 } from "../runtime/guests/guest-bytes.js";
import { GUEST_MEMORY_BYTES, MMIO_TARGET } from "./layout.js";
import type { IdleResult } from "./json-report.js";

/** Where the guest says it has reached its spin loop. */
const READY_FLAG = 0x9000;
/** Long enough for the coalesced flush timer to back off to its slowest period. */
const SETTLE_MS = 500;
/** Hang guard for the guest reaching its loop (CPL0 code is emulated on PVM: slow, not this slow). */
const READY_TIMEOUT_MS = 30_000;

export type IdleMode = IdleResult["mode"];

function idleProgram(mode: IdleMode): number[] {
  const write = mode === "coalesced-zone"
    ? [
      0x48, 0xbb, ...imm64(BigInt(MMIO_TARGET.base)), // mov rbx, counter
      0xb8, ...imm32(1),                              // mov eax, 1
      0x89, 0x03,                                     // mov [rbx], eax   ; queued in the kernel
    ]
    : [];
  return [
    ...write,
    0xc7, 0x04, 0x25, ...imm32(READY_FLAG), ...imm32(1), // mov dword [READY_FLAG], 1
    0xeb, 0xfe,                                          // 1: jmp 1b        ; no exits from here on
  ];
}

/** Runs one idle VM for `seconds` once it is idle; counts main-thread wake-ups. */
export async function measureIdleVm(mode: IdleMode, seconds: number): Promise<IdleResult> {
  const vm = Vm.create({ memory: GUEST_MEMORY_BYTES });
  const counter = new CounterDevice(undefined, "idle counter");
  try {
    if (mode === "coalesced-zone") vm.addDevice({ space: "mmio", base: MMIO_TARGET.base, length: MMIO_TARGET.length, device: counter, coalesced: true });
    vm.loadProgram({ code: idleProgram(mode), mode: "long64" });
    const ended = vm.run();
    let failure: unknown;
    ended.catch((error: unknown) => (failure = error));
    const deadline = performance.now() + READY_TIMEOUT_MS;
    while (vm.memory.readU32(READY_FLAG) !== 1) {
      if (failure !== undefined) throw failure;
      if (performance.now() > deadline) throw new Error(`idle VM (${mode}): the guest did not reach its spin loop in ${READY_TIMEOUT_MS / 1000} s`);
      await sleep(1);
    }
    await sleep(SETTLE_MS);
    const before = vm.stats;
    const began = performance.now();
    await sleep(seconds * 1000);
    const after = vm.stats;
    const elapsed = (performance.now() - began) / 1000;
    if (failure !== undefined) throw failure;
    await vm.pause();
    const wakeups = after.mainWakeups - before.mainWakeups;
    return {
      mode,
      seconds: elapsed,
      main_wakeups: wakeups,
      wakeups_per_s: wakeups / elapsed,
      doorbells: after.doorbells - before.doorbells,
      exits: after.exits - before.exits,
      coalesced_zones: after.coalescedZones,
      // The one queued write must have arrived by the time pause() resolved.
      delivered: mode === "coalesced-zone" ? counter.writes : null,
    };
  } finally {
    await vm.stop();
  }
}
