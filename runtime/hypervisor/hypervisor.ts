/**
 * The hypervisor-neutral seam. Everything outside `runtime/hypervisor/<backend>/` speaks
 * only these types; KVM's run page, exit codes and ioctl numbers never leak past it.
 */
import { errnoName } from "./errno.js";

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

export interface Registers {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

export interface Segment {
  base: bigint; limit: number; selector: number; type: number; present: number; dpl: number;
  db: number; s: number; l: number; g: number; avl: number; unusable: number;
}

export interface DescriptorTable {
  base: bigint;
  limit: number;
}

export interface SpecialRegisters {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DescriptorTable; idt: DescriptorTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apicBase: bigint;
}

export interface CpuidEntry {
  function: number; index: number; flags: number; eax: number; ebx: number; ecx: number; edx: number;
}

export interface MsrEntry {
  index: number;
  value: bigint;
}

/** x87 control word and SSE control/status register. */
export interface FpuControl {
  fcw: number;
  mxcsr: number;
}

/** An initial CPU state: the registers to change from the reset state. */
export interface CpuState {
  registers?: Partial<Registers>;
  specialRegisters?: Partial<SpecialRegisters>;
  msrs?: MsrEntry[];
  fpu?: FpuControl;
  /** A vCPU that waits for INIT/SIPI from another vCPU (an SMP application processor). */
  waitForStartup?: boolean;
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
 * What a worker needs to attach to a vCPU created on the main thread. Structured-clonable;
 * everything but `backend` and `index` is the backend's own business.
 */
export interface VcpuDescriptor {
  backend: string;
  index: number;
  fd: number;
  /** The vCPU's shared run structure, mapped once by the VM and used by its worker. */
  runAddress: bigint;
  runSize: number;
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
  /** Makes the vCPU's current or next `run()` return promptly, from any thread. */
  kick(vcpu: number, threadId: number): void;
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

/** Used inside the vCPU's worker thread. */
export interface VcpuHandle {
  readonly index: number;
  /** Enters the guest; returns the reused exit record when it exits. */
  run(): Exit;
  /** Bytes of a string I/O exit (count × size), live in the run structure. */
  stringData(): Uint8Array;
  /** Answers an io-in, mmio-read or msr-read exit before the next `run()`. */
  completeRead(low: number, high?: number): void;
  /** Fails an msr-read or msr-write exit: the guest gets #GP. */
  failMsr(): void;
  /** Clears a pending kick after `run()` returned `interrupted`. */
  clearKick(): void;
  threadId(): number;
  getRegisters(): Registers;
  setRegisters(registers: Registers): void;
  getSpecialRegisters(): SpecialRegisters;
  setSpecialRegisters(sregs: SpecialRegisters): void;
  setCpuid(entries: CpuidEntry[]): void;
  setMsrs(msrs: MsrEntry[]): void;
  setFpuControl(fpu: FpuControl): void;
  /** Marks the vCPU as waiting for INIT/SIPI (an SMP application processor). */
  setWaitForStartup(): void;
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
