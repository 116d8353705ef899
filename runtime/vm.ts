/**
 * A virtual machine: guest memory, vCPU workers, the device buses and the main-thread
 * dispatcher, with the lifecycle created → running ⇄ paused → stopped (DESIGN section 6).
 */
import { EventEmitter } from "node:events";
import { openHypervisor, type BackendName } from "./hypervisor/backends.js";
import type { Hypervisor, IoEventOptions, IrqChipMode, LevelIrqFd, VcpuDescriptor, VmHandle } from "./hypervisor/hypervisor.js";
import type { CpuidEntry, CpuState } from "./hypervisor/x86/cpu-state.js";
import { SplitIrqChip } from "./devices/irqchip/split-irqchip.js";
import { Bus } from "./bus.js";
import { DEFAULT_DISPATCHER_OPTIONS, type DeviceError, Dispatcher, type DispatcherOptions } from "./dispatcher.js";
import type { Device, InterruptLine } from "./devices/device.js";
import { DEBUG_EXIT_LENGTH, DEBUG_EXIT_PORT, DebugExit } from "./devices/debug-exit.js";
import { loadFlatProgram, type FlatProgram } from "./boot/flat-loader.js";
import { cpuidForVcpu } from "./boot/cpuid.js";
import { HypervisorCpuidError, withHypervisorLeaves, type HypervisorCpuidOptions } from "./boot/hypervisor-cpuid.js";
import { applyCpuFeatures, CpuFeatureError, parseCpuFeatures, type CpuFeatureChange } from "./boot/cpu-features.js";
import { withResetState } from "./boot/x86-reset.js";
import { GuestFatalError, VcpuWorkerError, VmConfigError, VmStateError } from "./errors.js";
import { vcpuPool } from "./vcpu-pool.js";
import { availableParallelism } from "node:os";
import { type GuestMemory, GuestMemoryAllocationError, MemoryLayoutError, type RegionSpec } from "../memory/guest-memory.js";
import { Control, createDoorbell, ExitChannel, Stat, WorkerState } from "../memory/exit-channel.js";
import { DEFAULT_SPIN, oversubscribedPolicy, type SpinPolicy } from "../memory/waiter.js";
import type { AddressRange, AddressSpace, VcpuOutcome, VcpuTask, WorkerDeviceSpec } from "../workers/vcpu-task.js";

export interface VmOptions {
  /** RAM size in bytes (one region at guest-physical 0), or explicit regions with holes. */
  memory: number | RegionSpec[];
  vcpus?: number;
  /**
   * Interrupt controllers (see IrqChipMode): "in-kernel" (or true) puts PIC, IOAPIC, local
   * APICs and PIT in the hypervisor; "split" keeps the local APICs there and emulates the
   * IOAPIC, PIC and PIT here (QEMU's kernel-irqchip=split); "none" (or false, the default)
   * has none.
   */
  irqchip?: boolean | IrqChipMode;
  /** With interrupt controllers: whether the machine has a PIT (default true; QEMU's `-machine pit=off` is false). */
  pit?: boolean;
  /** Send MSR accesses the hypervisor does not handle to the `msr` bus. */
  userspaceMsrs?: boolean;
  /** Posted-ring records per vCPU (a power of two). */
  ringCapacity?: number;
  spin?: Partial<SpinPolicy>;
  dispatcher?: Partial<DispatcherOptions>;
  backend?: BackendName;
  /**
   * CPUID features to remove (`-pcid`) or require (`+x2apic`) relative to what the
   * hypervisor supports, as QEMU's `-cpu` flags name them; one the host lacks is refused.
   */
  cpuFeatures?: string | CpuFeatureChange[];
  /** What a vCPU does on a HLT exit (no in-kernel irqchip): end (default) or re-enter the guest. */
  onHalt?: "stop" | "resume";
  /** The hypervisor CPUID leaves the guest sees (default: KVM's signature and every PV feature the host has). */
  hypervisorCpuid?: HypervisorCpuidOptions;
}

export type VmState = "created" | "running" | "paused" | "stopped";

export interface VmResult {
  reason: "debug-exit" | "halted" | "stopped" | "system-event" | "reset" | "poweroff";
  /** The debug-exit status the guest wrote. */
  status?: number;
  detail?: string;
}

export interface VmStats {
  exits: number;
  inWorker: number;
  posted: number;
  sync: number;
  ringFullWaits: number;
  unclaimedReads: number;
  unclaimedWrites: number;
  dispatcherParks: number;
  /** Writes the kernel queued without an exit (coalesced) and delivered, and the zones that take them. */
  coalesced: number;
  coalescedZones: number;
  /** Times the VM woke the main thread: dispatcher parks ended, coalesced-queue flush timers. */
  mainWakeups: number;
  /** Times a vCPU had to wake a parked dispatcher (a futex wake on the main thread). */
  doorbells: number;
  /** The dispatcher's adaptive polling window after a sync exit, µs. */
  dispatcherSpinMicros: number;
  /** Times vCPU workers parked (spin budget ran out) waiting for an answer or ring space. */
  workerParks: number;
  /** Each worker's adaptive spin budget (iterations) when last published. */
  workerSpinBudgets: number[];
  /**
   * Times waiting threads yielded their core rather than spin on or park (workers once their
   * short spin is spent; the dispatcher while polling on a contended host), and yields that
   * lost a time slice to a thread that kept the core.
   */
  workerYields: number;
  workerSlicesLost: number;
  dispatcherYields: number;
  dispatcherSlicesLost: number;
  /** Times the dispatcher's polling found it had lost its core (it then yields for a while). */
  dispatcherStalls: number;
  /** Contended spells the dispatcher ended early, its yields having given the core to nobody. */
  dispatcherCalmings: number;
  /** CPL0 INT3s and FWAITs completed by the host fallback (PVM only; see `completeUnemulatedKernelInstructions()`). */
  kernelInstructionsCompleted: number;
}

export interface DeviceRegistration {
  space: AddressSpace;
  base: number;
  length: number;
  device: Device;
  /** The vCPU waits until a write is handled (default: writes are posted). */
  sync?: boolean;
  /**
   * Let the hypervisor queue the guest's writes in the kernel without a userspace exit
   * (KVM's coalesced MMIO/PIO), where the host can; otherwise they are posted as usual.
   * Queued writes reach the device in order, before any synchronous exit of any vCPU is
   * handled, before `pause()` resolves and before `stop()` ends, and otherwise within about
   * a millisecond while writes keep coming. Reads still exit.
   */
  coalesced?: boolean;
}

/**
 * A thread of a device's own (a device worker) that uses the VM's eventfds: the VM stops it
 * after its vCPUs and before it closes them, and it may stop the VM when it fails.
 */
export interface DeviceThread {
  readonly name: string;
  /** Ends the thread and releases what it holds; resolves once it has exited. */
  stop(): Promise<void>;
}

const MAX_POOL_VCPUS = 512;

/** Rejects what the hypervisor would refuse with a bare EINVAL, saying why. */
function checkIoEvent(options: IoEventOptions): void {
  const { space, address, size, value } = options;
  const what = `I/O event at ${space} 0x${Number(address).toString(16)}`;
  if (space !== "pio" && space !== "mmio") throw new VmConfigError(`${what}: space must be "pio" or "mmio", got ${String(space)}`);
  if (![0, 1, 2, 4, 8].includes(size)) {
    throw new VmConfigError(`${what}: size must be 1, 2, 4 or 8 bytes (or 0: any write), got ${size}`);
  }
  const limit = space === "pio" ? 0x10000 : 2 ** 52;
  if (!Number.isSafeInteger(address) || address < 0 || address + Math.max(size, 1) > limit) {
    throw new VmConfigError(`${what}: address is outside the ${space} space`);
  }
  if (value !== undefined) {
    if (size === 0) throw new VmConfigError(`${what}: matching a value needs the access size (1, 2, 4 or 8), not 0`);
    if (!Number.isSafeInteger(value) || value < 0 || (size < 8 && value >= 2 ** (size * 8))) {
      throw new VmConfigError(`${what}: value ${value} does not fit in ${size} byte(s)`);
    }
  }
}

const IRQCHIP_MODES: readonly IrqChipMode[] = ["in-kernel", "split", "none"];

function irqChipMode(option: VmOptions["irqchip"]): IrqChipMode {
  if (option === undefined || option === false) return "none";
  if (option === true) return "in-kernel";
  if (!IRQCHIP_MODES.includes(option)) throw new VmConfigError(`irqchip must be true, false, "in-kernel", "split" or "none", got ${String(option)}`);
  return option;
}

function toRegions(memory: VmOptions["memory"]): RegionSpec[] {
  if (typeof memory === "number") return [{ gpa: 0, size: memory }];
  if (!Array.isArray(memory)) throw new VmConfigError("memory must be a size in bytes or an array of { gpa, size }");
  return memory;
}

export class Vm extends EventEmitter {
  readonly memory: GuestMemory;
  readonly vcpuCount: number;
  private stateValue: VmState = "created";
  private readonly hypervisor: Hypervisor;
  private readonly handle: VmHandle;
  private readonly descriptors: VcpuDescriptor[] = [];
  private readonly cpuStates: CpuState[];
  private readonly buses = { pio: new Bus("pio"), mmio: new Bus("mmio"), msr: new Bus("msr") };
  /** The interrupt-controller mode the VM was made with. */
  readonly irqChipMode: IrqChipMode;
  /** Split mode: the userspace IOAPIC, PIC and PIT. */
  readonly splitIrqChip: SplitIrqChip | undefined;
  /** Split mode: the PIC's INT output as the boot vCPU's worker sees it (word 0: 1 = asserted). */
  private readonly picOutput: Int32Array | undefined;
  /** Split mode: one word per vCPU, set to ask its worker to leave a HLT (see SplitIrqChip.onEoiOverdue). */
  private readonly leaveHalt: Int32Array | undefined;
  private readonly workerDevices: WorkerDeviceSpec[] = [];
  private readonly deviceThreads: DeviceThread[] = [];
  private readonly coalescedZones: { space: AddressSpace; base: number; length: number }[] = [];
  private coalescedFlush: NodeJS.Timeout | undefined;
  private coalescedFlushes = 0;
  private readonly doorbell = createDoorbell();
  private readonly channels: ExitChannel[] = [];
  private readonly dispatcher: Dispatcher;
  private readonly spin: SpinPolicy;
  /** The policy the workers use: `spin`, capped when spinning threads outnumber the cores. */
  private readonly workerSpin: SpinPolicy;
  private readonly ringCapacity: number;
  private readonly resumeOnHalt: boolean;
  private tasks: Promise<void>[] = [];
  private ended = 0;
  /** Between suspendVcpus and resumeVcpus: no vCPU task runs. */
  private suspended = false;
  private syncWrites: AddressRange[] = [];
  private ending: Promise<void> | undefined;
  private keepAlive: NodeJS.Timeout | undefined;
  private readonly done: Promise<VmResult>;
  private settle!: { resolve: (r: VmResult) => void; reject: (e: Error) => void };

  static create(options: VmOptions): Vm {
    return new Vm(options);
  }

  private constructor(options: VmOptions) {
    super();
    if (options === null || typeof options !== "object") throw new VmConfigError("Vm.create needs an options object");
    const vcpus = options.vcpus ?? 1;
    if (!Number.isInteger(vcpus) || vcpus < 1) throw new VmConfigError(`vcpus must be a whole number of at least 1, got ${vcpus}`);
    this.ringCapacity = options.ringCapacity ?? 1024;
    this.spin = { ...DEFAULT_SPIN, ...options.spin };
    // vCPU workers and the dispatcher all spin while they wait for each other.
    const spinners = vcpus + 1;
    const cores = availableParallelism();
    this.workerSpin = oversubscribedPolicy(this.spin, spinners, cores);
    if (options.onHalt !== undefined && options.onHalt !== "stop" && options.onHalt !== "resume") {
      throw new VmConfigError(`onHalt must be "stop" or "resume", got ${String(options.onHalt)}`);
    }
    this.resumeOnHalt = options.onHalt === "resume";
    const regions = toRegions(options.memory);
    const mode = irqChipMode(options.irqchip);
    this.irqChipMode = mode;
    const hypervisor = openHypervisor(options.backend);
    let handle: VmHandle | undefined;
    let memory: GuestMemory;
    try {
      const limit = Math.min(hypervisor.info.maxVcpus, MAX_POOL_VCPUS);
      if (vcpus > limit) throw new VmConfigError(`vcpus ${vcpus} is more than this host allows (${limit})`);
      if (regions.length > hypervisor.info.maxMemorySlots) {
        throw new VmConfigError(`${regions.length} memory regions exceed the host's ${hypervisor.info.maxMemorySlots} slots`);
      }
      handle = hypervisor.createVm();
      memory = handle.createGuestMemory(regions);
      if (mode !== "none") {
        if (!hypervisor.info.irqChipModes.includes(mode)) {
          throw new VmConfigError(`the ${hypervisor.info.name} backend on this host cannot give irqchip "${mode}" (it offers ${hypervisor.info.irqChipModes.join(", ")})`);
        }
        handle.createIrqChip(mode, { pit: options.pit ?? true });
      }
      if (options.userspaceMsrs) handle.enableUserspaceMsrs();
      let supported = hypervisor.supportedCpuid();
      if (options.cpuFeatures !== undefined) {
        try {
          const changes = typeof options.cpuFeatures === "string" ? parseCpuFeatures(options.cpuFeatures) : options.cpuFeatures;
          supported = applyCpuFeatures(supported, changes);
        } catch (error) {
          if (error instanceof CpuFeatureError) throw new VmConfigError(error.message, { cause: error });
          throw error;
        }
      }
      const vmHandle = handle;
      supported = withHypervisorLeaves(supported, options.hypervisorCpuid, () => vmHandle.timerFrequencies?.());
      this.cpuStates = [];
      for (let i = 0; i < vcpus; i++) {
        this.descriptors.push(handle.createVcpu(i));
        this.cpuStates.push(withResetState({}));
        this.channels.push(ExitChannel.create(this.ringCapacity, this.doorbell, this.workerSpin));
      }
      this.cpuidTable = Array.from({ length: vcpus }, (_, i) => cpuidForVcpu(supported, i));
    } catch (error) {
      handle?.close();
      hypervisor.close();
      if (error instanceof RangeError || error instanceof HypervisorCpuidError || error instanceof MemoryLayoutError ||
        error instanceof GuestMemoryAllocationError) {
        throw new VmConfigError(error.message, { cause: error });
      }
      throw error;
    }
    this.hypervisor = hypervisor;
    this.handle = handle;
    this.memory = memory;
    this.vcpuCount = vcpus;
    this.dispatcher = new Dispatcher(
      this.channels,
      this.doorbell,
      this.buses,
      (error) => this.fail(error),
      { ...DEFAULT_DISPATCHER_OPTIONS, spinners, cores, ...options.dispatcher },
    );
    if (mode === "split") {
      this.picOutput = new Int32Array(new SharedArrayBuffer(4));
      this.leaveHalt = new Int32Array(new SharedArrayBuffer(4 * vcpus));
      this.splitIrqChip = this.createSplitIrqChip(options.pit ?? true);
    } else {
      this.picOutput = undefined;
      this.leaveHalt = undefined;
      this.splitIrqChip = undefined;
    }
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => {}); // surfaced through wait()/run() and the 'error' event
  }

  /**
   * Split mode: the controllers on the main thread, their EOIs and INTA cycles coming from
   * the workers through the dispatcher; the PIC's output reaches the boot vCPU through a
   * shared word its worker checks before entering the guest, with a kick when it rises.
   */
  private createSplitIrqChip(pit: boolean): SplitIrqChip {
    const live = () => this.stateValue !== "stopped" && this.ending === undefined;
    const chip = new SplitIrqChip({
      deliverMsi: (address, data) => {
        if (live()) this.backendFeature("signalMsi").call(this.handle, address, data);
      },
      routeLevelPins: (routes) => {
        if (live()) this.backendFeature("routeIoapicPins").call(this.handle, routes);
      },
      onPicOutput: (level) => {
        Atomics.store(this.picOutput!, 0, level ? 1 : 0);
        if (level && this.stateValue === "running") this.handle.kick(0);
      },
      onEoiOverdue: () => {
        if (this.stateValue !== "running") return;
        this.channels.forEach((channel, i) => {
          Atomics.store(this.leaveHalt!, i, 1);
          this.handle.kick(i);
        });
      },
      pit,
    });
    for (const { space, base, length, device } of chip.devices()) this.buses[space].insert({ base, length, device, sync: false });
    this.dispatcher.setInterruptControllers({
      endOfInterrupt: (vector) => chip.ioapic.endOfInterrupt(vector),
      acknowledge: () => chip.pic.acknowledge(),
    });
    return chip;
  }

  private readonly cpuidTable: ReturnType<typeof cpuidForVcpu>[];

  /**
   * Host fallback for PVM, which cannot emulate INT3 or FWAIT in kernel mode: the worker
   * completes them as the CPU would instead of failing the VM. Counted in
   * `stats.kernelInstructionsCompleted`.
   */
  completeUnemulatedKernelInstructions(): void {
    this.requireState(["created"], "enable the kernel-instruction fallback on");
    this.kernelInstructionFallback = true;
  }

  private kernelInstructionFallback = false;

  /** Edits each vCPU's CPUID (already carrying its APIC ID) before the VM starts, e.g. to hide a feature. */
  editCpuid(edit: (entries: CpuidEntry[], vcpu: number) => CpuidEntry[]): void {
    this.requireState(["created"], "edit the CPUID of");
    this.cpuidTable.forEach((entries, i) => (this.cpuidTable[i] = edit(entries, i)));
  }

  get state(): VmState {
    return this.stateValue;
  }

  get hypervisorFlavour(): string {
    return this.hypervisor.info.flavour;
  }

  private setState(state: VmState): void {
    this.stateValue = state;
    this.emit("state", state);
  }

  private requireState(allowed: VmState[], action: string): void {
    if (!allowed.includes(this.stateValue)) {
      throw new VmStateError(`cannot ${action} a VM that is ${this.stateValue} (it must be ${allowed.join(" or ")})`);
    }
  }

  // ---- configuration (before start) ----

  addDevice(registration: DeviceRegistration): void {
    this.requireState(["created"], "add a device to");
    const { space, base, length, device, sync = false, coalesced = false } = registration;
    const bus = this.buses[space];
    if (bus === undefined) throw new VmConfigError(`unknown address space '${String(space)}' (pio, mmio or msr)`);
    try {
      this.checkWorkerOverlap(space, base, length, device.name);
      if (coalesced && sync) throw new Error(`'${device.name}': a device cannot be both sync and coalesced`);
      if (coalesced && space === "msr") throw new Error(`'${device.name}': MSR writes cannot be coalesced`);
      bus.insert({ base, length, device, sync });
      if (coalesced && this.handle.registerCoalescedZone(space as "pio" | "mmio", base, length)) {
        // Only a VM with a zone pays for looking at the kernel's queue on every drain.
        if (this.coalescedZones.length === 0) {
          this.dispatcher.setBeforeDrain(() => this.handle.drainCoalesced(this.dispatcher.consumeCoalesced));
        }
        this.coalescedZones.push({ space, base, length });
      }
    } catch (error) {
      throw new VmConfigError((error as Error).message, { cause: error });
    }
  }

  /** A device run inside every vCPU worker, built there from `module`'s default export and `shared`. */
  addWorkerDevice(spec: WorkerDeviceSpec): void {
    this.requireState(["created"], "add a device to");
    const probe = new Bus(spec.space);
    try {
      probe.insert({ base: spec.base, length: spec.length, device: { name: spec.module, read: () => 0, write: () => {} }, sync: true });
      if (this.buses[spec.space].all().some((r) => spec.base < r.base + r.length && r.base < spec.base + spec.length)) {
        throw new Error(`${spec.space} range 0x${spec.base.toString(16)} for worker device ${spec.module} overlaps a main-thread device`);
      }
      this.checkWorkerOverlap(spec.space, spec.base, spec.length, spec.module);
    } catch (error) {
      throw new VmConfigError((error as Error).message, { cause: error });
    }
    this.workerDevices.push(spec);
  }

  private checkWorkerOverlap(space: AddressSpace, base: number, length: number, name: string): void {
    for (const other of this.workerDevices) {
      if (other.space === space && base < other.base + other.length && other.base < base + length) {
        throw new Error(`${space} range 0x${base.toString(16)} for '${name}' overlaps worker device ${other.module}`);
      }
    }
  }

  /** Adds QEMU's isa-debug-exit: a guest write stops the VM with that status. */
  addDebugExit(port = DEBUG_EXIT_PORT): void {
    this.addDevice({ space: "pio", base: port, length: DEBUG_EXIT_LENGTH, device: new DebugExit((s) => this.exit(s)), sync: true });
  }

  interruptLine(gsi: number): InterruptLine {
    const chip = this.splitIrqChip;
    return {
      set: (level: boolean) => {
        if (this.stateValue === "stopped" || this.ending !== undefined) return;
        if (chip !== undefined) chip.setLine(gsi, level);
        else this.handle.irqLine(gsi, level);
      },
    };
  }

  /**
   * An eventfd the hypervisor signals on a guest write to `address`, without a userspace
   * exit (a virtio doorbell). Closed when the VM stops.
   */
  addIoEvent(options: IoEventOptions): number {
    this.requireState(["created"], "add an I/O event to");
    checkIoEvent(options);
    return this.handle.registerIoEvent(options);
  }

  /**
   * Attaches an eventfd to guest writes at `address` while the VM runs (a device starting a
   * doorbell or following a BAR the guest moved). Pass `fd` to re-attach an eventfd this VM
   * made before; returns the eventfd, which closes with the VM.
   */
  attachIoEvent(options: IoEventOptions, fd?: number): number {
    this.requireState(["created", "running", "paused"], "attach an I/O event to");
    checkIoEvent(options);
    return this.handle.registerIoEvent(options, fd);
  }

  /** Detaches an eventfd attached with the same options. */
  detachIoEvent(options: IoEventOptions, fd: number): void {
    if (this.stateValue === "stopped" || this.ending !== undefined) return;
    this.backendFeature("unregisterIoEvent").call(this.handle, options, fd);
  }

  /** Reads and clears an I/O event's count without blocking. */
  drainIoEvent(fd: number): number {
    if (this.stateValue === "stopped" || this.ending !== undefined) return 0;
    return this.backendFeature("drainEventFd").call(this.handle, fd);
  }

  /**
   * A resampling interrupt eventfd pair for the level-triggered `gsi` (see
   * VmHandle.registerLevelIrqFd), or undefined when this host cannot make one or the VM's
   * interrupt controllers are split. Closed when the VM stops.
   */
  levelIrqFd(gsi: number): LevelIrqFd | undefined {
    this.requireState(["created"], "add an interrupt eventfd to");
    if (!Number.isInteger(gsi) || gsi < 0) throw new VmConfigError(`GSI must be a whole number, got ${gsi}`);
    // Split mode's lines go through the userspace IOAPIC and PIC, which the kernel's irqfd
    // (and its resampling on EOI) cannot reach: such devices raise their line from here.
    if (this.splitIrqChip !== undefined) return undefined;
    return this.handle.registerLevelIrqFd?.(gsi);
  }

  /**
   * Registers a device's own thread: stopped after the vCPUs, before the VM's fds close.
   * Returns what the thread calls to stop the VM with the error that broke it.
   */
  addDeviceThread(thread: DeviceThread): (error: Error) => void {
    this.requireState(["created"], "add a device thread to");
    this.deviceThreads.push(thread);
    return (error) => this.fail(error);
  }

  /** Delivers a message-signalled interrupt (PCI MSI); false when the guest blocked it. */
  signalMsi(address: bigint, data: number): boolean {
    if (this.stateValue === "stopped" || this.ending !== undefined) return false;
    return this.backendFeature("signalMsi").call(this.handle, address, data);
  }

  /** Leaves the legacy PICs with the vector bases PC firmware gives them (see VmHandle). */
  setPicVectorBases(master: number, slave: number): void {
    this.requireState(["created"], "set the PIC vector bases of");
    if (this.splitIrqChip !== undefined) this.splitIrqChip.pic.setVectorBases(master, slave);
    else this.backendFeature("setPicVectorBases").call(this.handle, master, slave);
  }

  private backendFeature<K extends "unregisterIoEvent" | "drainEventFd" | "signalMsi" | "setPicVectorBases" | "routeIoapicPins">(
    name: K,
  ): NonNullable<VmHandle[K]> {
    const method = this.handle[name];
    if (method === undefined) throw new VmConfigError(`the ${this.hypervisor.info.name} backend cannot ${name}`);
    return method as NonNullable<VmHandle[K]>;
  }

  setCpuState(vcpu: number, state: CpuState): void {
    this.requireState(["created"], "set the CPU state of");
    if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= this.vcpuCount) {
      throw new VmConfigError(`vCPU ${vcpu} does not exist (this VM has ${this.vcpuCount})`);
    }
    this.cpuStates[vcpu] = withResetState(state);
  }

  /** Writes a flat guest program into RAM and points `vcpu` at it. */
  loadProgram(program: FlatProgram, vcpu = 0): void {
    this.setCpuState(vcpu, loadFlatProgram(this.memory, program));
  }

  // ---- lifecycle ----

  start(): void {
    this.requireState(["created"], "start");
    // A write to a coalesced zone exits only when the kernel's queue is full: it then waits
    // for the dispatcher, which empties the queue first, so it cannot overtake the queue.
    const syncWrites = [
      ...(["pio", "mmio", "msr"] as const).flatMap((space) =>
        this.buses[space].all().filter((r) => r.sync).map((r) => ({ space, base: r.base, length: r.length })),
      ),
      ...this.coalescedZones,
    ];
    if (this.coalescedZones.length > 0) this.startCoalescedFlush();
    // A pending waitAsync does not keep Node alive (nodejs/node#44729): hold a handle.
    this.keepAlive = setInterval(() => {}, 1 << 30);
    this.dispatcher.start();
    this.setState("running");
    this.startVcpus(syncWrites, false);
  }

  private startVcpus(syncWrites: AddressRange[], resumed: boolean): void {
    const pool = vcpuPool();
    this.syncWrites = syncWrites;
    this.tasks = this.descriptors.map((descriptor, i) => {
      const task: VcpuTask = {
        descriptor,
        channel: this.channels[i].buffer,
        doorbell: this.doorbell.buffer as SharedArrayBuffer,
        memory: this.memory.toShared(),
        cpuState: this.cpuStates[i],
        cpuid: this.cpuidTable[i],
        cpuidSet: resumed,
        syncWrites,
        workerDevices: this.workerDevices,
        spin: this.workerSpin,
        resumeOnHalt: this.resumeOnHalt,
        completeKernelInstructions: this.kernelInstructionFallback,
        // The PIC's INT reaches the boot processor only, as on a PC whose other LINT0s are masked.
        picOutput: i === 0 ? (this.picOutput?.buffer as SharedArrayBuffer | undefined) : undefined,
        leaveHalt: this.leaveHalt?.buffer as SharedArrayBuffer | undefined,
      };
      return pool.run(task).then(
        (outcome) => this.vcpuEnded(i, outcome as VcpuOutcome),
        (error) => this.fail(new VcpuWorkerError(i, error)),
      );
    });
  }

  /** Resolves with how the VM ended; rejects with the error that stopped it. */
  wait(): Promise<VmResult> {
    return this.done;
  }

  async run(): Promise<VmResult> {
    this.start();
    return this.wait();
  }

  /**
   * Ends every vCPU's run loop and resolves once all have left, their register state given
   * up (ACPI S3: "the CPU context is lost"); RAM, devices and the vCPUs themselves stay.
   * `resumeVcpus` starts them again. A stop meanwhile wins: the VM just ends.
   */
  async suspendVcpus(): Promise<void> {
    this.requireState(["running"], "suspend");
    if (this.suspended || this.ending !== undefined) return;
    this.suspended = true;
    const kickAll = () =>
      this.channels.forEach((channel, i) => {
        if (channel.control() === Control.STOP) return;
        channel.setControl(Control.SUSPEND);
        this.handle.kick(i);
      });
    kickAll();
    // As in teardown: a kick can land between a worker's control check and KVM_RUN.
    const rekick = setInterval(kickAll, 50);
    try {
      await Promise.allSettled(this.tasks);
    } finally {
      clearInterval(rekick);
    }
  }

  /** Starts the vCPUs suspendVcpus ended, vCPU i from `states[i]` (over the reset state). */
  resumeVcpus(states: CpuState[]): void {
    if (!this.suspended) throw new VmStateError("cannot resume vCPUs that are not suspended (suspendVcpus first)");
    if (states.length !== this.vcpuCount) throw new VmConfigError(`resumeVcpus: ${states.length} CPU states for ${this.vcpuCount} vCPUs`);
    if (this.ending !== undefined) return;
    this.suspended = false;
    states.forEach((state, i) => (this.cpuStates[i] = withResetState(state)));
    this.channels.forEach((channel) => channel.setControl(Control.RUN));
    this.startVcpus(this.syncWrites, true);
  }

  async pause(): Promise<void> {
    this.requireState(["running"], "pause");
    if (this.suspended) throw new VmStateError("cannot pause a VM whose vCPUs are suspended (ACPI S3); stop it, or let it wake");
    this.channels.forEach((channel, i) => {
      channel.setControl(Control.PAUSE);
      this.handle.kick(i);
    });
    await Promise.all(this.channels.map((c) => c.waitForWorkerState(WorkerState.PAUSED)));
    // Every write the guest made before it paused has reached its device when pause()
    // resolves (a parked dispatcher may not have drained the rings yet).
    this.dispatcher.drainAll();
    if (this.stateValue === "running") this.setState("paused");
  }

  resume(): void {
    this.requireState(["paused"], "resume");
    this.channels.forEach((channel) => channel.setControl(Control.RUN));
    this.setState("running");
  }

  /** Stops the guest from any state and releases every fd, worker and mapping. */
  async stop(): Promise<VmResult> {
    if (this.stateValue === "created" && this.ending === undefined) {
      const released = () => {
        this.release();
        this.finish({ reason: "stopped" });
      };
      // Without device threads this stays synchronous, as callers have relied on.
      if (this.deviceThreads.length === 0) {
        this.ending = Promise.resolve();
        released();
      } else {
        this.ending = this.stopDeviceThreads().then(released);
      }
    }
    this.end({ reason: "stopped" });
    await this.ending;
    return this.done.catch(() => ({ reason: "stopped" }) as VmResult);
  }

  /** Ends the VM because the guest reset the machine (a PC's reset line); `detail` says how. */
  reset(detail: string): void {
    this.end({ reason: "reset", detail });
  }

  /** Ends the VM because the guest powered the machine off (ACPI S5); `detail` says more. */
  powerOff(detail?: string): void {
    this.end(detail === undefined ? { reason: "poweroff" } : { reason: "poweroff", detail });
  }

  /** Stops the VM with a debug-exit status (used by the debug-exit device). */
  exit(status: number): void {
    this.end({ reason: "debug-exit", status });
  }

  get stats(): VmStats {
    const sum = (stat: number) => this.channels.reduce((total, c) => total + c.stats[stat], 0);
    const d = this.dispatcher.stats;
    return {
      exits: sum(Stat.EXITS),
      inWorker: sum(Stat.IN_WORKER),
      posted: sum(Stat.POSTED),
      sync: sum(Stat.SYNC),
      ringFullWaits: sum(Stat.RING_FULL_WAITS),
      unclaimedReads: d.unclaimedReads,
      unclaimedWrites: d.unclaimedWrites,
      dispatcherParks: d.parks,
      doorbells: sum(Stat.DOORBELLS),
      coalesced: d.coalesced,
      mainWakeups: d.parks + this.coalescedFlushes,
      coalescedZones: this.coalescedZones.length,
      dispatcherSpinMicros: d.spinWindowMicros,
      workerParks: sum(Stat.WORKER_PARKS),
      workerSpinBudgets: this.channels.map((c) => c.stats[Stat.WORKER_SPIN_BUDGET]),
      workerYields: sum(Stat.WORKER_YIELDS),
      workerSlicesLost: sum(Stat.WORKER_SLICES_LOST),
      dispatcherYields: d.yields,
      dispatcherSlicesLost: d.slicesLost,
      dispatcherStalls: d.stalls,
      dispatcherCalmings: d.calmings,
      kernelInstructionsCompleted: sum(Stat.KERNEL_INSTRUCTIONS_COMPLETED),
    };
  }

  /** The spin bounds (iterations) both sides of every exit channel adapt within. */
  get spinPolicy(): SpinPolicy {
    return this.workerSpin;
  }

  private vcpuEnded(index: number, outcome: VcpuOutcome): void {
    this.ended++;
    switch (outcome.reason) {
      case "fatal":
        this.fail(new GuestFatalError(index, outcome.exitKind, outcome.detail, outcome.registers));
        return;
      case "system-event":
        this.end({ reason: "system-event", detail: outcome.detail });
        return;
      case "hlt":
        if (this.ended === this.vcpuCount) this.end({ reason: "halted" });
        return;
      case "stopped":
        return;
      case "suspended":
        this.ended--; // it will run again
        return;
    }
  }

  private fail(error: Error | DeviceError): void {
    this.end(error);
  }

  /** Begins the stop sequence once; the first cause wins. */
  private end(cause: VmResult | Error): void {
    if (this.ending !== undefined || this.stateValue === "created") return;
    this.ending = this.teardown(cause);
  }

  private async teardown(cause: VmResult | Error): Promise<void> {
    const kickAll = () =>
      this.channels.forEach((channel, i) => {
        channel.setControl(Control.STOP);
        this.handle.kick(i);
      });
    kickAll();
    // A kick can land between a worker's control check and KVM_RUN on some backends: repeat until all are out.
    const rekick = setInterval(kickAll, 50);
    await Promise.allSettled(this.tasks);
    clearInterval(rekick);
    await this.dispatcher.stop();
    await this.stopDeviceThreads();
    this.release();
    this.finish(cause);
  }

  /** Device threads hold the VM's eventfds: they end before those close. */
  private async stopDeviceThreads(): Promise<void> {
    await Promise.allSettled(this.deviceThreads.map((thread) => thread.stop()));
  }

  /**
   * Coalesced writes never wake the dispatcher: a timer empties the queue, every
   * millisecond while it keeps finding writes, backing off fourfold to 200 ms when it finds none, so
   * an idle VM costs the main thread a few wake-ups a second.
   */
  private startCoalescedFlush(): void {
    let interval = 1;
    const flush = () => {
      this.coalescedFlushes++;
      const drained = this.dispatcher.drainCoalesced();
      interval = drained > 0 ? 1 : Math.min(200, interval * 4);
      this.coalescedFlush = setTimeout(flush, interval);
    };
    this.coalescedFlush = setTimeout(flush, interval);
  }

  private release(): void {
    this.splitIrqChip?.close();
    if (this.coalescedFlush) clearTimeout(this.coalescedFlush);
    this.coalescedFlush = undefined;
    this.handle.close();
    this.hypervisor.close();
    if (this.keepAlive) clearInterval(this.keepAlive);
    this.keepAlive = undefined;
  }

  private finish(cause: VmResult | Error): void {
    this.setState("stopped");
    if (cause instanceof Error) {
      // An 'error' event with no listener would throw; the rejection of wait() carries it.
      if (this.listenerCount("error") > 0) this.emit("error", cause);
      this.settle.reject(cause);
    } else {
      this.emit("exit", cause);
      this.settle.resolve(cause);
    }
    this.emit("stopped");
  }
}
