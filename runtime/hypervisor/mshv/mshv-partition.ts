/**
 * An MSHV partition fd: guest memory mappings, VPs (each with its register page mapped
 * here, as KVM's run page is), eventfds, kicks. The local APICs live in the hypervisor;
 * there is no in-kernel PIC, IOAPIC or PIT, so interrupt lines need the split
 * interrupt-controller mode, which this backend does not offer yet (info.irqChipModes).
 */
import type { GuestMemory, RegionSpec } from "../../../memory/guest-memory.js";
import {
  HypervisorError, type IoEventOptions, MissingCapabilityError, type VcpuDescriptor, type VmHandle,
} from "../hypervisor.js";
import { KickTarget } from "../kick-target.js";
import * as libc from "../libc.js";
import { mapSharedGuestMemory } from "../shared-guest-memory.js";
import {
  HV_PAGE_SIZE, INTERCEPT_ACCESS_MASK_EXECUTE, INTERCEPT_TYPE_X64_CPUID, IoEventFlag, Ioctl,
  MemoryFlag, Offset, PartitionFlag, Size, VP_MMAP_OFFSET_REGISTERS,
} from "./mshv-abi.js";
import { HvCaller } from "./mshv-hvcall.js";

const NO_IRQCHIP = "an in-kernel PIC, IOAPIC and PIT";
const NO_IRQCHIP_HINT =
  "MSHV keeps the local APICs in the hypervisor and nothing else, so it needs split mode (userspace IOAPIC, PIC and PIT); " +
  "this backend cannot yet assert their interrupts or report EOIs, so it offers irqchip \"none\" only.";

interface VpRecord {
  fd: number;
  registerPage: unknown;
  kickTarget: KickTarget;
}

/** What an MSHV vCPU descriptor carries: read only by MshvVp, in the worker. */
export interface MshvVpAttachment {
  fd: number;
  /** The VP register page (hv_vp_register_page), mapped once by the partition. */
  registerPageAddress: bigint;
  registerPageSize: number;
  /** The word the worker publishes its thread id in (KickTarget). */
  kickTarget: SharedArrayBuffer;
}

interface Region {
  gpa: number;
  size: number;
  hostAddress: bigint;
}

// ---- ioctl arguments, laid out as include/uapi/linux/mshv.h declares them ----

/** struct mshv_create_partition: local APICs (xAPIC and x2APIC) in the hypervisor, no isolation. */
export function encodeCreatePartition(): Uint8Array {
  const bytes = new Uint8Array(Size.mshv_create_partition);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(Offset.mshv_create_partition.pt_flags, PartitionFlag.LAPIC | PartitionFlag.X2APIC, true);
  view.setBigUint64(Offset.mshv_create_partition.pt_isolation, 0n, true);
  return bytes;
}

/** struct mshv_user_mem_region: RAM the guest may read, write and execute, or its unmapping. */
export function encodeMemoryRegion(gpa: number, size: number, hostAddress: bigint, unmap: boolean): Uint8Array {
  const bytes = new Uint8Array(Size.mshv_user_mem_region);
  const view = new DataView(bytes.buffer);
  const at = Offset.mshv_user_mem_region;
  view.setBigUint64(at.size, BigInt(size), true);
  view.setBigUint64(at.guest_pfn, BigInt(gpa / HV_PAGE_SIZE), true);
  view.setBigUint64(at.userspace_addr, hostAddress, true);
  view.setUint8(at.flags, unmap ? MemoryFlag.UNMAP : MemoryFlag.WRITABLE | MemoryFlag.EXECUTABLE);
  return bytes;
}

/** struct mshv_user_ioeventfd */
export function encodeIoEvent(options: IoEventOptions, fd: number): Uint8Array {
  const bytes = new Uint8Array(Size.mshv_user_ioeventfd);
  const view = new DataView(bytes.buffer);
  const at = Offset.mshv_user_ioeventfd;
  view.setBigUint64(at.datamatch, BigInt(options.value ?? 0), true);
  view.setBigUint64(at.addr, BigInt(options.address), true);
  view.setUint32(at.len, options.size, true);
  view.setInt32(at.fd, fd, true);
  let flags = options.space === "pio" ? IoEventFlag.PIO : 0;
  if (options.value !== undefined) flags |= IoEventFlag.DATAMATCH;
  view.setUint32(at.flags, flags, true);
  return bytes;
}

/** struct mshv_user_irqfd, without a resample fd. */
export function encodeIrqFd(fd: number, gsi: number): Uint8Array {
  const bytes = new Uint8Array(Size.mshv_user_irqfd);
  const view = new DataView(bytes.buffer);
  view.setInt32(Offset.mshv_user_irqfd.fd, fd, true);
  view.setInt32(Offset.mshv_user_irqfd.resamplefd, -1, true);
  view.setUint32(Offset.mshv_user_irqfd.gsi, gsi, true);
  return bytes;
}

/** struct mshv_create_vp */
export function encodeCreateVp(index: number): Uint8Array {
  const bytes = new Uint8Array(Size.mshv_create_vp);
  new DataView(bytes.buffer).setUint32(Offset.mshv_create_vp.vp_index, index, true);
  return bytes;
}

export class MshvPartition implements VmHandle {
  private readonly vps = new Map<number, VpRecord>();
  private readonly regions = new Map<number, Region>();
  private readonly eventFds: number[] = [];

  private constructor(private fd: number) {}

  static create(mshvFd: number): MshvPartition {
    const fd = libc.ioctlBuffer(mshvFd, Ioctl.CREATE_PARTITION, encodeCreatePartition());
    if (fd < 0) throw new HypervisorError("MSHV_CREATE_PARTITION", libc.errno());
    const partition = new MshvPartition(fd);
    try {
      partition.check(libc.ioctlValue(fd, Ioctl.INITIALIZE_PARTITION, 0), "MSHV_INITIALIZE_PARTITION");
      partition.interceptCpuid();
    } catch (error) {
      partition.close();
      throw error;
    }
    return partition;
  }

  private check(result: number, operation: string): number {
    if (result < 0) throw new HypervisorError(operation, libc.errno());
    return result;
  }

  /** CPUID exits to the VP's thread, which answers from the vCPU's table (mshv-intercepts.ts). */
  private interceptCpuid(): void {
    const caller = new HvCaller(this.fd, 0);
    try {
      caller.installIntercept(INTERCEPT_ACCESS_MASK_EXECUTE, INTERCEPT_TYPE_X64_CPUID, 0n, "CPUID");
    } finally {
      caller.close();
    }
  }

  /** The hypervisor pins and maps what it is given, like KVM: SAB-backed regions. */
  createGuestMemory(regions: readonly RegionSpec[]): GuestMemory {
    return mapSharedGuestMemory(regions, (slot, gpa, size, hostAddress) => this.setMemoryRegion(slot, gpa, size, hostAddress));
  }

  setMemoryRegion(slot: number, gpa: number, size: number, hostAddress: bigint): void {
    const region = size === 0 ? this.regions.get(slot) : { gpa, size, hostAddress };
    if (region === undefined) return;
    if (region.gpa % HV_PAGE_SIZE !== 0 || region.size % HV_PAGE_SIZE !== 0 || region.hostAddress % BigInt(HV_PAGE_SIZE) !== 0n) {
      throw new HypervisorError("MSHV_SET_GUEST_MEMORY", 22, `gpa, size and host address must be ${HV_PAGE_SIZE}-byte aligned`);
    }
    const bytes = encodeMemoryRegion(region.gpa, region.size, region.hostAddress, size === 0);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.SET_GUEST_MEMORY, bytes), `MSHV_SET_GUEST_MEMORY (gpa 0x${region.gpa.toString(16)}, ${region.size} bytes)`);
    if (size === 0) this.regions.delete(slot);
    else this.regions.set(slot, region);
  }

  createIrqChip(mode: "in-kernel" | "split"): void {
    throw new MissingCapabilityError(NO_IRQCHIP, `interrupt controllers in mode "${mode}"`, NO_IRQCHIP_HINT);
  }

  irqLine(gsi: number): void {
    throw new MissingCapabilityError(NO_IRQCHIP, `raising interrupt line ${gsi}`, NO_IRQCHIP_HINT);
  }

  private newEventFd(): number {
    const fd = libc.eventfd(0, libc.EFD_CLOEXEC);
    if (fd < 0) throw new HypervisorError("eventfd", libc.errno());
    this.eventFds.push(fd);
    return fd;
  }

  registerIoEvent(options: IoEventOptions): number {
    const fd = this.newEventFd();
    const bytes = encodeIoEvent(options, fd);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.IOEVENTFD, bytes), `MSHV_IOEVENTFD (0x${options.address.toString(16)})`);
    return fd;
  }

  /** The GSI must be routed to an MSI (MSHV_SET_MSI_ROUTING) before the eventfd delivers anything. */
  registerIrqFd(gsi: number): number {
    const fd = this.newEventFd();
    const bytes = encodeIrqFd(fd, gsi);
    this.check(libc.ioctlBuffer(this.fd, Ioctl.IRQFD, bytes), `MSHV_IRQFD (gsi ${gsi})`);
    return fd;
  }

  enableUserspaceMsrs(): void {
    throw new MissingCapabilityError("MSR intercepts (HV_INTERCEPT_TYPE_X64_MSR_INDEX)", "MSR exits to userspace (userspaceMsrs: true)",
      "The mshv backend does not install MSR intercepts yet; run without userspaceMsrs.");
  }

  createVcpu(index: number): VcpuDescriptor {
    const bytes = encodeCreateVp(index);
    const fd = this.check(libc.ioctlBuffer(this.fd, Ioctl.CREATE_VP, bytes), `MSHV_CREATE_VP (${index})`);
    // Mapped once, here, like KVM's run page: the worker uses it and it dies with the VM.
    const registerPage = libc.mmap(null, HV_PAGE_SIZE, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, VP_MMAP_OFFSET_REGISTERS * HV_PAGE_SIZE);
    if (libc.isMapFailed(registerPage)) {
      const errno = libc.errno();
      libc.close(fd);
      throw new HypervisorError(`mmap VP register page (VP ${index})`, errno, "the hypervisor may not offer VP register pages");
    }
    const kickTarget = new KickTarget();
    this.vps.set(index, { fd, registerPage, kickTarget });
    const attachment: MshvVpAttachment = {
      fd, registerPageAddress: libc.addressOf(registerPage), registerPageSize: HV_PAGE_SIZE, kickTarget: kickTarget.buffer,
    };
    return { backend: "mshv", index, attachment };
  }

  /** MSHV has no coalesced-write queue: such writes exit and are posted as usual. */
  registerCoalescedZone(): boolean {
    return false;
  }

  drainCoalesced(): number {
    return 0;
  }

  /**
   * MSHV_RUN_VP returns EINTR on a signal; there is no immediate_exit to latch a kick, so one
   * that lands before the ioctl is lost and the VM repeats kicks until the worker is out.
   */
  kick(vcpu: number): void {
    this.vps.get(vcpu)?.kickTarget.signal();
  }

  close(): void {
    for (const vp of this.vps.values()) {
      libc.munmap(vp.registerPage, HV_PAGE_SIZE);
      libc.close(vp.fd);
    }
    this.vps.clear();
    for (const fd of this.eventFds) libc.close(fd);
    this.eventFds.length = 0;
    if (this.fd >= 0) libc.close(this.fd);
    this.fd = -1;
  }
}
