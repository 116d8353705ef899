/** A KVM VM file descriptor: memory slots, irqchip, eventfds, vCPU creation, kicks. */
import type { GuestMemory, RegionSpec } from "../../../memory/guest-memory.js";
import {
  type CoalescedConsumer, HypervisorError, type IoapicPinRoute, type IoEventOptions, type LevelIrqFd, MissingCapabilityError,
  type TimerFrequencies,
  type VcpuDescriptor, type VmHandle,
} from "../hypervisor.js";
import { KickTarget } from "../kick-target.js";
import { mapSharedGuestMemory } from "../shared-guest-memory.js";
import {
  Cap, COALESCED_ZONE_SIZE, CoalescedRing, IOEVENTFD_FLAG_DATAMATCH, IOEVENTFD_FLAG_DEASSIGN, IOEVENTFD_FLAG_PIO, Ioctl,
  IRQCHIP_PIC_MASTER, IRQCHIP_PIC_SLAVE, IRQFD_FLAG_RESAMPLE, IrqChip, KVM_APIC_BUS_KHZ, KVM_IRQCHIP_SIZE, KVM_MSI_SIZE, MSR_EXIT_FILTER,
  MSR_EXIT_INVAL, MSR_EXIT_UNKNOWN, PicState, Run, SPLIT_IRQCHIP_IOAPIC_PINS, IRQ_ROUTING_HEADER_SIZE,
  IRQ_ROUTING_ENTRY_SIZE, IRQ_ROUTING_IRQCHIP, IRQ_ROUTING_MSI, IRQCHIP_IOAPIC, IrqRoutingEntry,
} from "./kvm-abi.js";
import * as libc from "./libc.js";

// Intel needs these three pages below 4 GiB for real-mode emulation; the addresses
// sit just under the BIOS area, where PC guests expect nothing.
const TSS_ADDRESS = 0xfffb_d000;
const EINVAL = 22;
const EPERM = 1;
const EEXIST = 17;
const ENOSPC = 28;
const IDENTITY_MAP_ADDRESS = 0xfffb_c000n;

function ioEventBytes(options: IoEventOptions, fd: number, extraFlags: number): Uint8Array {
  const bytes = new Uint8Array(64);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(options.value ?? 0), true);
  view.setBigUint64(8, BigInt(options.address), true);
  view.setUint32(16, options.size, true);
  view.setInt32(20, fd, true);
  let flags = extraFlags | (options.space === "pio" ? IOEVENTFD_FLAG_PIO : 0);
  if (options.value !== undefined) flags |= IOEVENTFD_FLAG_DATAMATCH;
  view.setUint32(24, flags, true);
  return bytes;
}

interface VcpuRecord {
  fd: number;
  run: Uint8Array;
  runPointer: unknown;
  kickTarget: KickTarget;
}

/** What a KVM vCPU descriptor carries: read only by KvmVcpu, in the worker. */
export interface KvmVcpuAttachment {
  fd: number;
  /** The vCPU's kvm_run, mapped once by the VM and used by its worker. */
  runAddress: bigint;
  runSize: number;
  /** The word the worker publishes its thread id in (KickTarget). */
  kickTarget: SharedArrayBuffer;
}

export class KvmVm implements VmHandle {
  private fd: number;
  private readonly vcpus = new Map<number, VcpuRecord>();
  private readonly eventFds: number[] = [];
  /** Page offset of the coalesced-write ring in a vCPU mapping; 0 until a zone exists. */
  private coalescedPageOffset = 0;
  private ring: { words: Uint32Array; bytes: Uint8Array } | undefined;

  constructor(
    fd: number,
    private readonly runSize: number,
    private readonly checkExtension: (cap: number) => number,
  ) {
    this.fd = fd;
    try {
      this.check(libc.ioctlValue(fd, Ioctl.SET_TSS_ADDR, TSS_ADDRESS), "KVM_SET_TSS_ADDR");
      const address = new Uint8Array(8);
      new DataView(address.buffer).setBigUint64(0, IDENTITY_MAP_ADDRESS, true);
      this.check(libc.ioctlBuffer(fd, Ioctl.SET_IDENTITY_MAP_ADDR, address), "KVM_SET_IDENTITY_MAP_ADDR");
    } catch (error) {
      this.close();
      throw error;
    }
  }

  private check(result: number, operation: string): number {
    if (result < 0) throw new HypervisorError(operation, libc.errno());
    return result;
  }

  createGuestMemory(regions: readonly RegionSpec[]): GuestMemory {
    return mapSharedGuestMemory(regions, (slot, gpa, size, hostAddress) => this.setMemoryRegion(slot, gpa, size, hostAddress));
  }

  setMemoryRegion(slot: number, gpa: number, size: number, hostAddress: bigint): void {
    const bytes = new Uint8Array(32);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, slot, true);
    view.setBigUint64(8, BigInt(gpa), true);
    view.setBigUint64(16, BigInt(size), true);
    view.setBigUint64(24, hostAddress, true);
    this.check(
      libc.ioctlBuffer(this.fd, Ioctl.SET_USER_MEMORY_REGION, bytes),
      `KVM_SET_USER_MEMORY_REGION (slot ${slot}, gpa 0x${gpa.toString(16)}, ${size} bytes)`,
    );
  }

  createIrqChip(mode: "in-kernel" | "split", options: { pit?: boolean } = {}): void {
    if (mode === "split") {
      this.enableSplitIrqChip();
      return;
    }
    if (mode !== "in-kernel") throw new RangeError(`unknown interrupt-controller mode '${String(mode)}'`);
    const pit = options.pit ?? true;
    if (this.checkExtension(Cap.IRQCHIP) <= 0) {
      throw new MissingCapabilityError("KVM_CAP_IRQCHIP", "an in-kernel interrupt controller (irqchip: true)", "Run without irqchip, or on a host whose KVM has it.");
    }
    if (pit && this.checkExtension(Cap.PIT2) <= 0) {
      throw new MissingCapabilityError("KVM_CAP_PIT2", "an in-kernel PIT (irqchip: true)", "Run without the PIT (pit: false), or on a host whose KVM has it.");
    }
    this.check(libc.ioctlValue(this.fd, Ioctl.CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP");
    if (this.checkExtension(Cap.IRQ_ROUTING) > 0) this.routePcGsis();
    if (pit) this.check(libc.ioctlBuffer(this.fd, Ioctl.CREATE_PIT2, new Uint8Array(64)), "KVM_CREATE_PIT2");
  }

  /**
   * A PC's wiring of GSIs to the in-kernel chips, as the MADT describes it: ISA IRQ 0 (the
   * PIT's) reaches PIC input 0 and IOAPIC pin 2 (the interrupt source override), IRQ 2 is
   * the PIC cascade and reaches neither, IRQs 1 and 3-15 reach their PIC input and the IOAPIC
   * pin of the same number, GSIs 16-23 the IOAPIC only. KVM's default routing sends GSI 0 to
   * IOAPIC pin 0, where a guest that follows the MADT never looks for the timer.
   */
  private routePcGsis(): void {
    const routes: [gsi: number, chip: number, pin: number][] = [];
    for (let irq = 0; irq < 16; irq++) {
      if (irq === 2) continue;
      routes.push([irq, irq < 8 ? IRQCHIP_PIC_MASTER : IRQCHIP_PIC_SLAVE, irq % 8]);
    }
    for (let gsi = 0; gsi < 24; gsi++) {
      if (gsi !== 2) routes.push([gsi, IRQCHIP_IOAPIC, gsi === 0 ? 2 : gsi]);
    }
    const bytes = new Uint8Array(IRQ_ROUTING_HEADER_SIZE + routes.length * IRQ_ROUTING_ENTRY_SIZE);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, routes.length, true);
    routes.forEach(([gsi, chip, pin], i) => {
      const at = IRQ_ROUTING_HEADER_SIZE + i * IRQ_ROUTING_ENTRY_SIZE;
      view.setUint32(at + IrqRoutingEntry.gsi, gsi, true);
      view.setUint32(at + IrqRoutingEntry.type, IRQ_ROUTING_IRQCHIP, true);
      view.setUint32(at + IrqRoutingEntry.irqchip, chip, true);
      view.setUint32(at + IrqRoutingEntry.pin, pin, true);
    });
    this.check(libc.ioctlBuffer(this.fd, Ioctl.SET_GSI_ROUTING, bytes), `KVM_SET_GSI_ROUTING (PC wiring, ${routes.length} routes)`);
  }

  /** Local APICs in the kernel; PIC, IOAPIC and PIT are the VMM's (api.rst, KVM_CAP_SPLIT_IRQCHIP). */
  private enableSplitIrqChip(): void {
    for (const [cap, name] of [[Cap.SPLIT_IRQCHIP, "KVM_CAP_SPLIT_IRQCHIP"], [Cap.SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"], [Cap.IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"]] as const) {
      if (this.checkExtension(cap) <= 0) {
        throw new MissingCapabilityError(name, "split interrupt controllers (irqchip: \"split\")", "Use irqchip \"in-kernel\" or \"none\".");
      }
    }
    if (this.vcpus.size > 0) throw new Error("split interrupt controllers must be enabled before any vCPU is created");
    const bytes = new Uint8Array(104);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, Cap.SPLIT_IRQCHIP, true);
    view.setBigUint64(8, BigInt(SPLIT_IRQCHIP_IOAPIC_PINS), true);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.ENABLE_CAP, bytes), "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)");
  }

  /**
   * KVM learns which vectors' EOIs to report from the MSI routes of GSIs below the reserved
   * IOAPIC pin count whose data has the level-trigger bit (kvm_scan_ioapic_routes); the
   * interrupts themselves go through KVM_SIGNAL_MSI.
   */
  routeIoapicPins(routes: readonly IoapicPinRoute[]): void {
    const bytes = new Uint8Array(IRQ_ROUTING_HEADER_SIZE + routes.length * IRQ_ROUTING_ENTRY_SIZE);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, routes.length, true);
    routes.forEach((route, i) => {
      if (!Number.isInteger(route.pin) || route.pin < 0 || route.pin >= SPLIT_IRQCHIP_IOAPIC_PINS) {
        throw new RangeError(`IOAPIC pin ${route.pin} is outside the ${SPLIT_IRQCHIP_IOAPIC_PINS} reserved for it`);
      }
      const at = IRQ_ROUTING_HEADER_SIZE + i * IRQ_ROUTING_ENTRY_SIZE;
      view.setUint32(at + IrqRoutingEntry.gsi, route.pin, true);
      view.setUint32(at + IrqRoutingEntry.type, IRQ_ROUTING_MSI, true);
      view.setUint32(at + IrqRoutingEntry.msi_address_lo, Number(route.address & 0xffff_ffffn), true);
      view.setUint32(at + IrqRoutingEntry.msi_address_hi, Number((route.address >> 32n) & 0xffff_ffffn), true);
      view.setUint32(at + IrqRoutingEntry.msi_data, route.data >>> 0, true);
    });
    this.check(libc.ioctlBuffer(this.fd, Ioctl.SET_GSI_ROUTING, bytes), `KVM_SET_GSI_ROUTING (${routes.length} IOAPIC pins)`);
  }

  irqLine(gsi: number, level: boolean): void {
    const bytes = new Uint8Array(8);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, gsi, true);
    view.setUint32(4, level ? 1 : 0, true);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.IRQ_LINE, bytes), `KVM_IRQ_LINE (gsi ${gsi})`);
  }

  private newEventFd(flags = 0): number {
    const fd = libc.eventfd(0, libc.EFD_CLOEXEC | flags);
    if (fd < 0) throw new HypervisorError("eventfd", libc.errno());
    this.eventFds.push(fd);
    return fd;
  }

  registerIoEvent(options: IoEventOptions, reuse?: number): number {
    if (this.checkExtension(Cap.IOEVENTFD) <= 0) {
      throw new MissingCapabilityError("KVM_CAP_IOEVENTFD", "an I/O event (addIoEvent)", "Use a posted device write instead.");
    }
    if (reuse !== undefined && !this.eventFds.includes(reuse)) throw new RangeError(`eventfd ${reuse} was not made by this VM`);
    // Non-blocking, so a device can drain it without waiting (drainEventFd).
    const fd = reuse ?? this.newEventFd(libc.EFD_NONBLOCK);
    if (libc.ioctlBuffer(this.fd, Ioctl.IOEVENTFD, ioEventBytes(options, fd, 0)) < 0) {
      const errno = libc.errno();
      if (reuse === undefined) {
        // The eventfd was made for this call: it must not outlive the failure.
        this.eventFds.splice(this.eventFds.indexOf(fd), 1);
        libc.close(fd);
      }
      const hint = errno === EEXIST
        ? "An I/O event with the same address, size and value is already registered."
        : errno === ENOSPC
          ? "The VM has as many I/O events on this bus as KVM allows."
          : errno === EINVAL
            ? "KVM refused the address, size or value combination."
            : "";
      throw new HypervisorError(`KVM_IOEVENTFD (${options.space} 0x${options.address.toString(16)}, ${options.size} bytes)`, errno, hint);
    }
    return fd;
  }

  unregisterIoEvent(options: IoEventOptions, fd: number): void {
    this.check(
      libc.ioctlBuffer(this.fd, Ioctl.IOEVENTFD, ioEventBytes(options, fd, IOEVENTFD_FLAG_DEASSIGN)),
      `KVM_IOEVENTFD deassign (0x${options.address.toString(16)})`,
    );
  }

  /** Reads and clears an eventfd's counter without blocking; 0 when it was not signalled. */
  drainEventFd(fd: number): number {
    const counter = new BigUint64Array(1);
    const got = libc.read(fd, counter, 8);
    return got === 8 ? Number(counter[0]) : 0;
  }

  setPicVectorBases(master: number, slave: number): void {
    for (const [chip, base] of [[IRQCHIP_PIC_MASTER, master], [IRQCHIP_PIC_SLAVE, slave]]) {
      const bytes = new Uint8Array(KVM_IRQCHIP_SIZE);
      new DataView(bytes.buffer).setUint32(IrqChip.chip_id, chip, true);
      this.check(libc.ioctlBuffer(this.fd, Ioctl.GET_IRQCHIP, bytes), `KVM_GET_IRQCHIP (PIC ${chip})`);
      bytes[IrqChip.chip + PicState.irq_base] = base & 0xf8;
      this.check(libc.ioctlBuffer(this.fd, Ioctl.SET_IRQCHIP, bytes), `KVM_SET_IRQCHIP (PIC ${chip})`);
    }
  }

  signalMsi(address: bigint, data: number): boolean {
    if (this.checkExtension(Cap.SIGNAL_MSI) <= 0) throw new HypervisorError("KVM_SIGNAL_MSI", 95, "this host's KVM cannot inject MSIs");
    const bytes = new Uint8Array(KVM_MSI_SIZE);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, Number(address & 0xffff_ffffn), true);
    view.setUint32(4, Number((address >> 32n) & 0xffff_ffffn), true);
    view.setUint32(8, data >>> 0, true);
    // > 0 delivered, 0 coalesced with one pending; -1 with EPERM when the guest's message
    // names no vCPU: a guest choice, not a host failure.
    const result = libc.ioctlBuffer(this.fd, Ioctl.SIGNAL_MSI, bytes);
    if (result < 0 && libc.errno() === EPERM) return false;
    return this.check(result, "KVM_SIGNAL_MSI") > 0;
  }

  registerIrqFd(gsi: number): number {
    if (this.checkExtension(Cap.IRQFD) <= 0) {
      throw new MissingCapabilityError("KVM_CAP_IRQFD", "an interrupt eventfd (registerIrqFd)", "Raise the line from userspace instead.");
    }
    const fd = this.newEventFd();
    const bytes = new Uint8Array(32);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, fd, true);
    view.setUint32(4, gsi, true);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.IRQFD, bytes), `KVM_IRQFD (gsi ${gsi})`);
    return fd;
  }

  /** KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE (needs the in-kernel irqchip). */
  registerLevelIrqFd(gsi: number): LevelIrqFd | undefined {
    if (this.checkExtension(Cap.IRQFD) <= 0 || this.checkExtension(Cap.IRQFD_RESAMPLE) <= 0) return undefined;
    const trigger = this.newEventFd(libc.EFD_NONBLOCK);
    const resample = this.newEventFd(libc.EFD_NONBLOCK);
    const bytes = new Uint8Array(32);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, trigger, true);
    view.setUint32(4, gsi, true);
    view.setUint32(8, IRQFD_FLAG_RESAMPLE, true);
    view.setUint32(12, resample, true);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.IRQFD, bytes), `KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE (gsi ${gsi})`);
    return { trigger, resample };
  }

  enableUserspaceMsrs(): void {
    if (this.checkExtension(Cap.X86_USER_SPACE_MSR) <= 0) {
      throw new MissingCapabilityError(
        "KVM_CAP_X86_USER_SPACE_MSR", "MSR exits to userspace (userspaceMsrs: true)", "Run without userspaceMsrs (KVM then raises #GP for MSRs it does not know).",
      );
    }
    const bytes = new Uint8Array(104);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, Cap.X86_USER_SPACE_MSR, true);
    view.setBigUint64(8, BigInt(MSR_EXIT_INVAL | MSR_EXIT_UNKNOWN | MSR_EXIT_FILTER), true);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.ENABLE_CAP, bytes), "KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)");
  }

  createVcpu(index: number): VcpuDescriptor {
    const fd = this.check(libc.ioctlValue(this.fd, Ioctl.CREATE_VCPU, index), `KVM_CREATE_VCPU (${index})`);
    try {
      this.enforcePvFeatureCpuid(fd);
    } catch (error) {
      libc.close(fd);
      throw error;
    }
    // Mapped once, here: the worker uses this mapping (so a worker that dies leaves nothing
    // behind) and a kick sets immediate_exit in it. It is unmapped when the VM closes.
    const runPointer = libc.mmap(null, this.runSize, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
    if (libc.isMapFailed(runPointer)) {
      const errno = libc.errno();
      libc.close(fd);
      throw new HypervisorError(`mmap kvm_run (vCPU ${index})`, errno);
    }
    const run = new Uint8Array(libc.viewOf(runPointer, this.runSize));
    const kickTarget = new KickTarget();
    this.vcpus.set(index, { fd, run, runPointer, kickTarget });
    const attachment: KvmVcpuAttachment = {
      fd, runAddress: libc.addressOf(runPointer), runSize: this.runSize, kickTarget: kickTarget.buffer,
    };
    return { backend: "kvm", index, attachment };
  }

  /** KVM_GET_TSC_KHZ on the VM (the rate new vCPUs get; Linux 6.0+), and KVM's APIC bus rate. */
  timerFrequencies(): TimerFrequencies | undefined {
    const tscKHz = libc.ioctlValue(this.fd, Ioctl.GET_TSC_KHZ, 0);
    return tscKHz > 0 ? { tscKHz, apicKHz: KVM_APIC_BUS_KHZ } : undefined;
  }

  /**
   * Without this KVM honours every paravirtual MSR and hypercall whatever CPUID 0x40000001
   * offers; with it, withholding a feature (or hiding the signature) really withholds it.
   */
  private enforcePvFeatureCpuid(vcpuFd: number): void {
    if (this.checkExtension(Cap.ENFORCE_PV_FEATURE_CPUID) <= 0) return;
    const bytes = new Uint8Array(104);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, Cap.ENFORCE_PV_FEATURE_CPUID, true);
    view.setBigUint64(8, 1n, true);
    this.check(libc.ioctlBuffer(vcpuFd, Ioctl.ENABLE_CAP, bytes), "KVM_ENABLE_CAP(KVM_CAP_ENFORCE_PV_FEATURE_CPUID)");
  }

  kick(vcpu: number): void {
    const record = this.vcpus.get(vcpu);
    if (!record) return;
    // immediate_exit closes the race where the signal lands just before KVM_RUN, and
    // latches a kick made before the worker attached.
    Atomics.store(record.run, Run.immediate_exit, 1);
    record.kickTarget.signal();
  }

  registerCoalescedZone(space: "pio" | "mmio", address: number, size: number): boolean {
    const pageOffset = this.checkExtension(Cap.COALESCED_MMIO);
    if (pageOffset <= 0 || (space === "pio" && this.checkExtension(Cap.COALESCED_PIO) <= 0)) return false;
    if (pageOffset * 4096 + 4096 > this.runSize) return false;
    const bytes = new Uint8Array(COALESCED_ZONE_SIZE);
    const view = new DataView(bytes.buffer);
    view.setBigUint64(0, BigInt(address), true);
    view.setUint32(8, size, true);
    view.setUint32(12, space === "pio" ? 1 : 0, true);
    this.check(
      libc.ioctlBuffer(this.fd, Ioctl.REGISTER_COALESCED_MMIO, bytes),
      `KVM_REGISTER_COALESCED_MMIO (${space} 0x${address.toString(16)}, ${size} bytes)`,
    );
    this.coalescedPageOffset = pageOffset;
    return true;
  }

  drainCoalesced(consume: CoalescedConsumer): number {
    let ring = this.ring;
    if (ring === undefined) {
      if (this.coalescedPageOffset === 0) return 0;
      // The ring is one page per VM, visible through every vCPU's mapping.
      const record = this.vcpus.values().next().value as VcpuRecord | undefined;
      if (record === undefined) return 0;
      ring = this.ring = {
        words: new Uint32Array(record.run.buffer, this.coalescedPageOffset * 4096, 1024),
        bytes: new Uint8Array(record.run.buffer, this.coalescedPageOffset * 4096, 4096),
      };
    }
    const words = ring.words;
    const bytes = ring.bytes;
    const last = Atomics.load(words, CoalescedRing.last >> 2);
    let first = words[CoalescedRing.first >> 2];
    let drained = 0;
    while (first !== last) {
      if (first >= CoalescedRing.max) throw new Error(`coalesced ring index ${first} out of range`);
      const at = CoalescedRing.entries + first * CoalescedRing.entryBytes;
      const w = at >> 2;
      const address = words[w] + words[w + 1] * 2 ** 32;
      const size = Math.min(words[w + 2], 8);
      const space = words[w + 3] !== 0 ? 0 : 1;
      let low = 0;
      let high = 0;
      for (let b = 0; b < size; b++) {
        const byte = bytes[at + CoalescedRing.data + b];
        if (b < 4) low |= byte << (b * 8);
        else high |= byte << ((b - 4) * 8);
      }
      consume(space, address, size, low >>> 0, high >>> 0);
      first = (first + 1) % CoalescedRing.max;
      drained++;
    }
    if (drained > 0) Atomics.store(words, CoalescedRing.first >> 2, first);
    return drained;
  }

  close(): void {
    this.ring = undefined;
    this.coalescedPageOffset = 0;
    for (const record of this.vcpus.values()) {
      libc.munmap(record.runPointer, this.runSize);
      libc.close(record.fd);
    }
    this.vcpus.clear();
    for (const fd of this.eventFds) libc.close(fd);
    this.eventFds.length = 0;
    if (this.fd >= 0) libc.close(this.fd);
    this.fd = -1;
  }
}
