/**
 * The hypervisor-neutral seam. Everything outside `runtime/hypervisor/<backend>/` speaks
 * only these types; KVM's run page, exit codes and ioctl numbers never leak past it.
 * The picture (what each side supplies, what is verified for each backend) is in
 * ./README.md; the x86 register model is the architecture module ./x86/cpu-state.ts.
 */
import type { GuestMemory, RegionSpec } from "../../memory/guest-memory.js";
import { errnoName } from "./errno.js";
import type { CpuidEntry, X86VcpuState } from "./x86/cpu-state.js";

// The register model lives in the architecture module; re-exported for existing importers.
export type {
  CpuidEntry, CpuState, DescriptorTable, FpuControl, MsrEntry, Registers, Segment, SpecialRegisters,
} from "./x86/cpu-state.js";

/** Exit kinds as small integers: they travel through the exit channel SAB as-is. */
export const ExitKind = {
  IoIn: 1,
  IoOut: 2,
  MmioRead: 3,
  MmioWrite: 4,
  Hlt: 5,
  Shutdown: 6,
  SystemEvent: 7,
  Hypercall: 8,
  MsrRead: 9,
  MsrWrite: 10,
  Debug: 11,
  Interrupted: 12,
  InternalError: 13,
  FailEntry: 14,
  Unknown: 15,
  /** Split interrupt controllers: the guest ended a level-triggered IOAPIC interrupt; `data` is its vector. */
  IoapicEoi: 16,
  /** The guest can take an external (PIC) interrupt now: the window `requestInterruptWindow` asked for. */
  InterruptWindow: 17,
  /** Exit-channel only: a worker asks the userspace PIC for the vector to inject (INTA). */
  InterruptAcknowledge: 18,
} as const;
export type ExitKind = (typeof ExitKind)[keyof typeof ExitKind];

const EXIT_KIND_NAMES: Record<number, string> = {
  1: "io-in", 2: "io-out", 3: "mmio-read", 4: "mmio-write", 5: "hlt", 6: "shutdown",
  7: "system-event", 8: "hypercall", 9: "msr-read", 10: "msr-write", 11: "debug",
  12: "interrupted", 13: "internal-error", 14: "fail-entry", 15: "unknown", 16: "ioapic-eoi",
  17: "interrupt-window", 18: "interrupt-acknowledge",
};
export function exitKindName(kind: number): string {
  return EXIT_KIND_NAMES[kind] ?? `exit-${kind}`;
}

/**
 * One exit, decoded by the backend. A single record per vCPU is reused for every exit so
 * the run loop allocates nothing; copy what you keep.
 */
export interface Exit {
  kind: ExitKind;
  /** Port number, MMIO guest-physical address or MSR index. */
  address: number;
  /** Access width in bytes: 1, 2, 4 or 8. */
  size: number;
  /** Elements of a string I/O access (`rep outsb`): more than 1 means data is in `buffer`. */
  count: number;
  /** Low 32 bits of the written value (io-out, mmio-write, msr-write). */
  data: number;
  /** High 32 bits for 8-byte accesses. */
  dataHigh: number;
  /** Backend detail for fatal exits (hardware reason, suberror, event type). */
  detail: string;
}

/**
 * Who emulates the x86 interrupt controllers:
 * - "in-kernel": PIC pair, IOAPIC and local APICs (and the PIT) in the hypervisor;
 * - "split": local APICs in the hypervisor; IOAPIC, PIC and PIT in userspace, the IOAPIC
 *   delivering MSIs and the hypervisor reporting EOIs of its level-triggered vectors;
 * - "none": nothing in the hypervisor (a guest's HLT exits to userspace).
 */
export type IrqChipMode = "in-kernel" | "split" | "none";

export interface HypervisorInfo {
  name: string;
  /** e.g. "kvm", "kvm (PVM, no hardware virtualization)". */
  flavour: string;
  maxVcpus: number;
  maxMemorySlots: number;
  /** The interrupt-controller modes a VM of this host can ask for. */
  irqChipModes: readonly IrqChipMode[];
}

/** An IOAPIC pin's redirection entry as the MSI it sends (Intel SDM 10.11 format). */
export interface IoapicPinRoute {
  pin: number;
  address: bigint;
  data: number;
}

/**
 * What a worker needs to attach to a vCPU created on the main thread: structured-clonable.
 * `attachment` is the backend's own business (KVM: vCPU fd, run page, kick word); nothing
 * outside the backend reads it.
 */
export interface VcpuDescriptor {
  readonly backend: string;
  readonly index: number;
  readonly attachment: unknown;
}

/**
 * What the worker hands the backend when it attaches: the run path's view of the VM.
 * A backend that emulates (MSHV decodes MMIO instructions, walks page tables for string
 * I/O) reads and writes guest RAM through `memory`; KVM does that in the kernel.
 */
export interface VcpuRunContext {
  readonly memory: GuestMemory;
}

export interface IoEventOptions {
  space: "pio" | "mmio";
  address: number;
  size: 0 | 1 | 2 | 4 | 8;
  /** Only writes of this value signal the event; any value when absent. */
  value?: number;
}

/** The eventfds of `VmHandle.registerLevelIrqFd`; they close with the VM. */
export interface LevelIrqFd {
  trigger: number;
  resample: number;
}

export type CoalescedConsumer = (space: number, address: number, size: number, low: number, high: number) => void;

export interface Hypervisor {
  readonly info: HypervisorInfo;
  /** The CPUID leaves this hypervisor can give a guest (x86). */
  supportedCpuid(): CpuidEntry[];
  createVm(): VmHandle;
  close(): void;
}

/** The rates a guest's time-stamp counter and local APIC timer run at. */
export interface TimerFrequencies {
  tscKHz: number;
  apicKHz: number;
}

export interface VmHandle {
  /**
   * Guest RAM for these regions, mapped into the VM. The backend decides what backs it
   * (KVM and MSHV: SAB-backed, page-aligned, see memory/guest-memory.ts); a backend whose
   * hypervisor hands memory out itself returns that. Call once, before any vCPU runs.
   */
  createGuestMemory(regions: readonly RegionSpec[]): GuestMemory;
  /** What the guest's TSC and APIC timer count at, when the hypervisor says. */
  timerFrequencies?(): TimerFrequencies | undefined;
  /** Registers (or, with `size` 0, removes) a RAM slot backed by host memory. */
  setMemoryRegion(slot: number, gpa: number, size: number, hostAddress: bigint): void;
  /**
   * Interrupt controllers in the hypervisor, before any vCPU exists: all of them and the PIT
   * (unless `pit` is false) for "in-kernel", the local APICs alone for "split" (the IOAPIC's
   * pins are then GSIs 0-23 of `routeIoapicPins`). Only modes in `info.irqChipModes`.
   */
  createIrqChip(mode: Exclude<IrqChipMode, "none">, options?: { pit?: boolean }): void;
  /**
   * Split mode: the userspace IOAPIC's level-triggered pins as the MSIs they send, so the
   * hypervisor knows which vCPUs' EOIs of which vectors to report (ioapic-eoi exits).
   * Replaces the previous set; call it whenever the guest reprograms a redirection entry.
   */
  routeIoapicPins?(routes: readonly IoapicPinRoute[]): void;
  irqLine(gsi: number, level: boolean): void;
  /** An eventfd signalled in the kernel on a guest write; returns the eventfd (`fd`, if given, is reused). */
  registerIoEvent(options: IoEventOptions, fd?: number): number;
  registerIrqFd(gsi: number): number;
  /**
   * An interrupt eventfd pair for a level-triggered line: a write to `trigger` asserts the
   * GSI; the hypervisor deasserts it when the guest acknowledges (EOI) and then signals
   * `resample`, so the device asserts it again while it still has an interrupt pending.
   * Undefined when this host cannot (the line is then driven with `irqLine`).
   */
  registerLevelIrqFd?(gsi: number): LevelIrqFd | undefined;
  /** Removes an I/O event registered with the same options; its eventfd stays open. */
  unregisterIoEvent?(options: IoEventOptions, fd: number): void;
  /** Reads and clears an I/O event's counter without blocking (0 when not signalled). */
  drainEventFd?(fd: number): number;
  /**
   * Programs the legacy PIC pair's vector bases as PC firmware leaves them (0x08, 0x70),
   * for guests started without firmware. x86 with an in-kernel PIC only.
   */
  setPicVectorBases?(master: number, slave: number): void;
  /** Delivers a message-signalled interrupt; false when the guest blocked it. */
  signalMsi?(address: bigint, data: number): boolean;
  /** Lets the guest's MSR accesses (those the hypervisor does not know) exit to userspace. */
  enableUserspaceMsrs(): void;
  createVcpu(index: number): VcpuDescriptor;
  /**
   * Makes vCPU `vcpu`'s current or next `run()` return promptly (as `interrupted`), from the
   * main thread. How is the backend's (KVM: immediate_exit and a signal to the thread that
   * attached it; MSHV: a signal). A kick before the worker attached reaches its first run()
   * where the backend can latch it (KVM), else the caller repeats it until the worker is out.
   */
  kick(vcpu: number): void;
  /**
   * Lets the hypervisor queue guest writes to the zone without leaving the kernel, for
   * `drainCoalesced` to hand over later. Returns false when this host cannot: the writes
   * then exit as usual. A write the queue has no room for also exits as usual.
   */
  registerCoalescedZone(space: "pio" | "mmio", address: number, size: number): boolean;
  /**
   * Hands the queued writes to `consume` oldest first (space 0 = pio, 1 = mmio; value in
   * two 32-bit halves) and frees their slots; returns how many. Main thread only.
   */
  drainCoalesced(consume: CoalescedConsumer): number;
  close(): void;
}

/**
 * One vCPU, used inside its worker thread. Every access exit `run()` returns (port, MMIO,
 * MSR) is completed explicitly before the next `run()`: `completeRead` for a read,
 * `complete` for a write or a string io-in whose bytes were put in `stringData()`,
 * `failMsr` for an MSR access that faults. Other exits (hlt, interrupted, interrupt
 * controller events) need no completion. KVM's completions are mostly nothing (the kernel
 * finishes the instruction on the next KVM_RUN); MSHV's write registers and RIP.
 */
export interface VcpuCore {
  readonly index: number;
  /** Enters the guest; returns the reused exit record when it exits. */
  run(): Exit;
  /**
   * The bytes of a string I/O exit (count × size): for io-out the backend has filled them
   * (from its run structure, or from guest memory); for io-in the loop fills them, then
   * calls `complete()`. Valid until the exit is completed.
   */
  stringData(): Uint8Array;
  /** Answers an io-in, mmio-read or msr-read exit. */
  completeRead(low: number, high?: number): void;
  /** Completes any other exit the loop handled: a write, or a string io-in (data in `stringData()`). */
  complete(): void;
  /** Fails an msr-read or msr-write exit: the guest gets #GP. */
  failMsr(): void;
  /** Clears a pending kick after `run()` returned `interrupted`. */
  clearKick(): void;
  /**
   * Split mode, userspace PIC: whether the vCPU can take an external interrupt now (as of
   * the last exit), asking for an interrupt-window exit when it cannot, and the injection
   * of the vector the PIC acknowledged. Backends without a userspace PIC path omit them.
   */
  readyForExternalInterrupt?(): boolean;
  requestInterruptWindow?(on: boolean): void;
  injectExternalInterrupt?(vector: number): void;
  /**
   * Ends a HLT the hypervisor is waiting in (the guest resumes after it, as after a wake-up
   * event); returns whether the vCPU was halted. For split mode on hosts that leave a
   * pending EOI report unsent while the vCPU halts (see SplitIrqChip).
   */
  leaveHalt?(): boolean;
  /**
   * Completes a CPL0 instruction the backend could not run (PVM: INT3, FWAIT) as the CPU
   * would; false if the last exit was not that. Optional: only backends that need it.
   */
  completeUnemulatedKernelInstruction?(): boolean;
  close(): void;
}

/** A vCPU of the architecture this build targets: x86-64 (register model in ./x86/). */
export interface VcpuHandle extends VcpuCore, X86VcpuState {}

/**
 * A backend as the registry (backends.ts) sees it: its folder's one entry point. `open` runs
 * on the main thread; `attachVcpu` in the worker that owns the vCPU.
 */
export interface Backend {
  readonly name: string;
  open(): Hypervisor;
  attachVcpu(descriptor: VcpuDescriptor, context: VcpuRunContext): VcpuHandle;
}

/** A failing hypervisor call: names the operation and the errno. */
export class HypervisorError extends Error {
  override name = "HypervisorError";
  readonly code: string;
  constructor(
    readonly operation: string,
    readonly errno: number,
    hint = "",
  ) {
    super(`${operation} failed: ${errnoName(errno)} (errno ${errno})${hint ? `. ${hint}` : ""}`);
    this.code = errnoName(errno);
  }
}

/** The host has no usable hypervisor (missing device, missing capability, old API). */
export class HypervisorUnavailableError extends Error {
  override name = "HypervisorUnavailableError";
}

/** A feature the caller asked for needs a hypervisor capability this host lacks. */
export class MissingCapabilityError extends HypervisorUnavailableError {
  override name = "MissingCapabilityError";
  constructor(
    readonly capability: string,
    readonly feature: string,
    hint: string,
  ) {
    super(`${feature} needs ${capability}, which this host's hypervisor does not offer. ${hint}`);
  }
}
