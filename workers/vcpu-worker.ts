/**
 * The per-vCPU thread (DESIGN section 5): enters the guest, decodes each exit, handles it
 * in place when a worker-local device owns the address, else hands it to the main thread
 * through the exit channel (posted for writes, sync for reads and sync devices).
 * The loop allocates nothing per exit.
 */
import { attachVcpu } from "../runtime/hypervisor/backends.js";
import { type Exit, ExitKind, exitKindName, type VcpuHandle } from "../runtime/hypervisor/hypervisor.js";
import { applyCpuState, registerDump } from "../runtime/hypervisor/x86/cpu-state.js";
import { Bus, BusAccessor } from "../runtime/bus.js";
import type { AccessSize, Device } from "../runtime/devices/device.js";
import { Answer, Control, ExitChannel, Stat, WorkerState } from "../memory/exit-channel.js";
import { GuestMemory } from "../memory/guest-memory.js";
import type { AddressRange, VcpuOutcome, VcpuTask, WorkerDeviceSpec } from "./vcpu-task.js";

/** What a worker-local device module exports by default. */
export type WorkerDeviceFactory = (shared: SharedArrayBuffer, memory: GuestMemory) => Device | Promise<Device>;

async function loadWorkerDevices(specs: WorkerDeviceSpec[], memory: GuestMemory): Promise<Record<string, Bus>> {
  const buses = { pio: new Bus("pio"), mmio: new Bus("mmio"), msr: new Bus("msr") };
  for (const spec of specs) {
    const module = await import(spec.module);
    const factory = module.default as WorkerDeviceFactory;
    if (typeof factory !== "function") {
      throw new TypeError(`worker device module ${spec.module} has no default export building a device`);
    }
    const device = await factory(spec.shared, memory);
    buses[spec.space].insert({ base: spec.base, length: spec.length, device, sync: true });
  }
  return buses;
}

function inRanges(ranges: AddressRange[], space: string, address: number): boolean {
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i];
    if (r.space === space && address >= r.base && address < r.base + r.length) return true;
  }
  return false;
}

/**
 * An MMIO access handled here must lie wholly in the worker's device; one that runs past it
 * (pieces of a page-crossing access) goes to the main thread, which splits it by address.
 * Ports are matched by their first port alone, as the PC bus decodes them.
 */
function fitsIn(range: { base: number; length: number }, address: number, size: number): boolean {
  return address + size <= range.base + range.length;
}

export default async function runVcpu(task: VcpuTask | { warmup: true }): Promise<VcpuOutcome | "warm"> {
  if ("warmup" in task) return "warm";
  const doorbell = new Int32Array(task.doorbell);
  const channel = new ExitChannel(task.channel, doorbell, task.spin);
  const memory = GuestMemory.fromShared(task.memory);
  const vcpu = attachVcpu(task.descriptor, { memory });
  try {
    const local = await loadWorkerDevices(task.workerDevices, memory);
    // A vCPU that ran before (resumed after a suspend) keeps its CPUID: KVM refuses a change after KVM_RUN.
    applyCpuState(vcpu, task.cpuState, task.cpuidSet ? undefined : task.cpuid);
    channel.setWorkerState(WorkerState.RUNNING);
    const picOutput = task.picOutput === undefined ? undefined : new Int32Array(task.picOutput);
    if (picOutput !== undefined && (!vcpu.readyForExternalInterrupt || !vcpu.requestInterruptWindow || !vcpu.injectExternalInterrupt)) {
      throw new Error(`the ${task.descriptor.backend} backend cannot inject a userspace PIC's interrupts`);
    }
    const leaveHalt = task.leaveHalt === undefined ? undefined : new Int32Array(task.leaveHalt);
    return runLoop(vcpu, channel, local, task.syncWrites, task.resumeOnHalt, task.completeKernelInstructions === true, picOutput, leaveHalt);
  } finally {
    vcpu.close();
    channel.setWorkerState(WorkerState.EXITED);
  }
}

/**
 * Split mode's userspace PIC: while its INT output is up, acknowledge it (the INTA cycle, on
 * the main thread) and inject the vector once the vCPU can take it, else ask for the exit
 * that says it can. Returns false when the VM stopped meanwhile.
 */
function offerExternalInterrupt(vcpu: VcpuHandle, channel: ExitChannel, picOutput: Int32Array): boolean {
  if (Atomics.load(picOutput, 0) === 0) {
    vcpu.requestInterruptWindow!(false);
    return true;
  }
  if (!vcpu.readyForExternalInterrupt!()) {
    vcpu.requestInterruptWindow!(true);
    return true;
  }
  vcpu.requestInterruptWindow!(false);
  if (channel.request(ExitKind.InterruptAcknowledge, 1, 0, 0, 0, 1) === Answer.STOPPED) return false;
  vcpu.injectExternalInterrupt!(channel.answerLow);
  return true;
}

/*
 * The run loop's accesses, to a worker-local device or through the exit channel. They take
 * the exit whole rather than its fields: the run loop is too big for V8 to inline the calls
 * below, and a number of 2^31 or more (an MMIO address, a word with its top bit set) passed
 * to a call that is not inlined is boxed in a fresh heap number. Inside these small
 * functions the bus, the device and the channel calls are inlined. Measured with 64-bit
 * values at 0xd0000000 (test/wide-access.test.ts): a worker-local device 15 heap bytes per
 * exit rather than 38; posted writes and sync reads to the main thread 17-21 per exit
 * rather than 42, parks (two clock reads each, in memory/waiter.ts) included.
 */
function writeLocal(accessor: BusAccessor, exit: Exit): void {
  accessor.write(exit.address, exit.size, exit.data, exit.dataHigh);
}

function readLocal(accessor: BusAccessor, vcpu: VcpuHandle, exit: Exit): void {
  accessor.read(exit.address, exit.size);
  vcpu.completeRead(accessor.low, accessor.high);
}

/** The same for the exits handed to the main thread: posted writes, sync writes and reads. */
function postWrite(channel: ExitChannel, exit: Exit): boolean {
  return channel.post(exit.kind, exit.size, exit.address, exit.data, exit.dataHigh);
}

function requestWrite(channel: ExitChannel, exit: Exit): number {
  return channel.request(exit.kind, exit.size, exit.address, exit.data, exit.dataHigh, exit.count);
}

function requestRead(channel: ExitChannel, exit: Exit): number {
  return channel.request(exit.kind, exit.size, exit.address, 0, 0, exit.count);
}

function runLoop(
  vcpu: VcpuHandle,
  channel: ExitChannel,
  local: Record<string, Bus>,
  syncWrites: AddressRange[],
  resumeOnHalt: boolean,
  completeKernelInstructions: boolean,
  picOutput: Int32Array | undefined,
  leaveHalt: Int32Array | undefined,
): VcpuOutcome {
  const index = vcpu.index;
  const stats = channel.stats;
  const pio = local.pio;
  const mmio = local.mmio;
  const msr = local.msr;
  const accessors = { pio: new BusAccessor(pio), mmio: new BusAccessor(mmio), msr: new BusAccessor(msr) };
  for (;;) {
    const control = channel.control();
    if (control !== Control.RUN) {
      if (control === Control.STOP) return { reason: "stopped" };
      if (control === Control.SUSPEND) return { reason: "suspended" };
      channel.setWorkerState(WorkerState.PAUSED);
      const resumed = channel.waitWhilePaused();
      channel.setWorkerState(WorkerState.RUNNING);
      if (resumed === Control.STOP) return { reason: "stopped" };
      continue;
    }
    if (picOutput !== undefined && !offerExternalInterrupt(vcpu, channel, picOutput)) return { reason: "stopped" };
    const exit = vcpu.run();
    stats[Stat.EXITS]++;
    const kind = exit.kind;
    switch (kind) {
      case ExitKind.IoOut:
      case ExitKind.MmioWrite:
      case ExitKind.MsrWrite: {
        const space = kind === ExitKind.IoOut ? "pio" : kind === ExitKind.MmioWrite ? "mmio" : "msr";
        const range = (kind === ExitKind.IoOut ? pio : kind === ExitKind.MmioWrite ? mmio : msr).find(exit.address);
        if (range !== undefined && (kind !== ExitKind.MmioWrite || fitsIn(range, exit.address, exit.size))) {
          stats[Stat.IN_WORKER]++;
          if (exit.count > 1) {
            accessors[space].writeRepeated(exit.address, exit.size as AccessSize, exit.count, vcpu.stringData());
          } else {
            writeLocal(accessors[space], exit);
          }
          vcpu.complete();
        } else if (exit.count > 1 || kind === ExitKind.MsrWrite || inRanges(syncWrites, space, exit.address)) {
          stats[Stat.SYNC]++;
          if (exit.count > 1) channel.syncData.set(vcpu.stringData());
          const answer = requestWrite(channel, exit);
          if (answer === Answer.STOPPED) return { reason: "stopped" };
          if (answer === Answer.FAULT) vcpu.failMsr();
          else vcpu.complete();
        } else {
          stats[Stat.POSTED]++;
          if (!postWrite(channel, exit)) return { reason: "stopped" };
          vcpu.complete();
        }
        break;
      }
      case ExitKind.IoIn:
      case ExitKind.MmioRead:
      case ExitKind.MsrRead: {
        const space = kind === ExitKind.IoIn ? "pio" : kind === ExitKind.MmioRead ? "mmio" : "msr";
        const range = (kind === ExitKind.IoIn ? pio : kind === ExitKind.MmioRead ? mmio : msr).find(exit.address);
        if (range !== undefined && (kind !== ExitKind.MmioRead || fitsIn(range, exit.address, exit.size))) {
          stats[Stat.IN_WORKER]++;
          if (exit.count > 1) {
            accessors[space].readRepeated(exit.address, exit.size as AccessSize, exit.count, vcpu.stringData());
            vcpu.complete();
          } else {
            readLocal(accessors[space], vcpu, exit);
          }
        } else {
          stats[Stat.SYNC]++;
          const answer = requestRead(channel, exit);
          if (answer === Answer.STOPPED) return { reason: "stopped" };
          if (answer === Answer.FAULT) vcpu.failMsr();
          else if (exit.count > 1) {
            vcpu.stringData().set(channel.syncDataView(exit.size * exit.count));
            vcpu.complete();
          } else vcpu.completeRead(channel.answerLow, channel.answerHigh);
        }
        break;
      }
      case ExitKind.Interrupted:
        vcpu.clearKick();
        if (leaveHalt !== undefined && Atomics.exchange(leaveHalt, index, 0) !== 0) vcpu.leaveHalt?.();
        break;
      case ExitKind.IoapicEoi:
        // The IOAPIC on the main thread ends remote IRR; the guest need not wait for it.
        stats[Stat.POSTED]++;
        if (!channel.post(kind, 1, 0, exit.data, 0)) return { reason: "stopped" };
        break;
      case ExitKind.InterruptWindow:
        break; // offerExternalInterrupt injects before the next entry
      case ExitKind.Hlt:
        if (!resumeOnHalt) return { reason: "hlt" };
        stats[Stat.IN_WORKER]++;
        break;
      case ExitKind.SystemEvent:
        return { reason: "system-event", detail: exit.detail };
      case ExitKind.InternalError:
        if (completeKernelInstructions && vcpu.completeUnemulatedKernelInstruction?.()) {
          stats[Stat.KERNEL_INSTRUCTIONS_COMPLETED]++;
          break;
        }
        return { reason: "fatal", exitKind: exitKindName(kind), detail: exit.detail, registers: registerDump(vcpu) };
      default:
        return { reason: "fatal", exitKind: exitKindName(kind), detail: exit.detail, registers: registerDump(vcpu) };
    }
  }
}
