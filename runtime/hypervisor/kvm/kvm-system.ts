/** The /dev/kvm file descriptor: API check, capabilities, supported CPUID, VM creation. */
import { existsSync } from "node:fs";
import {
  type Hypervisor, HypervisorError, type HypervisorInfo, HypervisorUnavailableError, type IrqChipMode, type VmHandle,
} from "../hypervisor.js";
import type { CpuidEntry } from "../x86/cpu-state.js";
import { Cap, Ioctl, KVM_API_VERSION, MAX_CPUID_ENTRIES, REQUIRED_CAPS } from "./kvm-abi.js";
import { allocateCpuid, decodeCpuid } from "./kvm-structs.js";
import * as libc from "./libc.js";
import { KvmVm } from "./kvm-vm.js";

const DEVICE = "/dev/kvm";
const EACCES = 13;
const ENOENT = 2;

/** Detects which KVM module backs /dev/kvm; PVM has very different exit costs. */
function kvmFlavour(): string {
  if (existsSync("/sys/module/kvm_pvm")) return "kvm-pvm (no hardware virtualization)";
  if (existsSync("/sys/module/kvm_intel")) return "kvm-intel (VMX)";
  if (existsSync("/sys/module/kvm_amd")) return "kvm-amd (SVM)";
  return "kvm";
}

export class KvmHypervisor implements Hypervisor {
  readonly info: HypervisorInfo;
  private fd: number;

  private constructor(fd: number) {
    this.fd = fd;
    try {
      const version = libc.ioctlValue(fd, Ioctl.GET_API_VERSION, 0);
      if (version !== KVM_API_VERSION) {
        throw new HypervisorUnavailableError(
          `${DEVICE} speaks KVM API version ${version}; workervisor needs version ${KVM_API_VERSION}`,
        );
      }
      const missing = REQUIRED_CAPS.filter(([cap]) => this.checkExtension(cap) <= 0).map(([, name]) => name);
      if (missing.length > 0) {
        throw new HypervisorUnavailableError(`this host's KVM lacks required capabilities: ${missing.join(", ")}`);
      }
      this.info = {
        name: "kvm",
        flavour: kvmFlavour(),
        maxVcpus: this.checkExtension(Cap.MAX_VCPUS) || this.checkExtension(Cap.NR_VCPUS) || 4,
        maxMemorySlots: this.checkExtension(Cap.NR_MEMSLOTS) || 32,
        irqChipModes: this.irqChipModes(),
      };
    } catch (error) {
      libc.close(fd);
      throw error;
    }
  }

  static open(): KvmHypervisor {
    const fd = libc.open(DEVICE, libc.O_RDWR | libc.O_CLOEXEC);
    if (fd < 0) {
      const errno = libc.errno();
      if (errno === ENOENT) {
        throw new HypervisorUnavailableError(
          `KVM is not available on this host: ${DEVICE} does not exist. Enable hardware virtualization ` +
            `(VT-x/AMD-V) and load the kvm module, or run on a host that exposes KVM.`,
        );
      }
      if (errno === EACCES) {
        throw new HypervisorError(
          `open ${DEVICE}`,
          errno,
          `Your user may not use KVM: add it to the 'kvm' group (sudo usermod -aG kvm $USER, then log in again)`,
        );
      }
      throw new HypervisorError(`open ${DEVICE}`, errno);
    }
    libc.installKickHandler();
    return new KvmHypervisor(fd);
  }

  private irqChipModes(): IrqChipMode[] {
    const modes: IrqChipMode[] = [];
    if (this.checkExtension(Cap.IRQCHIP) > 0) modes.push("in-kernel");
    // Split mode delivers the userspace IOAPIC's interrupts as MSIs and learns its level-triggered vectors from MSI routes.
    if ([Cap.SPLIT_IRQCHIP, Cap.SIGNAL_MSI, Cap.IRQ_ROUTING].every((cap) => this.checkExtension(cap) > 0)) modes.push("split");
    modes.push("none");
    return modes;
  }

  checkExtension(cap: number): number {
    const value = libc.ioctlValue(this.fd, Ioctl.CHECK_EXTENSION, cap);
    return value < 0 ? 0 : value;
  }

  supportedCpuid(): CpuidEntry[] {
    const bytes = allocateCpuid(MAX_CPUID_ENTRIES);
    if (libc.ioctlBuffer(this.fd, Ioctl.GET_SUPPORTED_CPUID, bytes) < 0) {
      throw new HypervisorError("KVM_GET_SUPPORTED_CPUID", libc.errno());
    }
    return decodeCpuid(bytes);
  }

  createVm(): VmHandle {
    const vmFd = libc.ioctlValue(this.fd, Ioctl.CREATE_VM, 0);
    if (vmFd < 0) throw new HypervisorError("KVM_CREATE_VM", libc.errno());
    const runSize = libc.ioctlValue(this.fd, Ioctl.GET_VCPU_MMAP_SIZE, 0);
    if (runSize < 0) {
      const errno = libc.errno();
      libc.close(vmFd);
      throw new HypervisorError("KVM_GET_VCPU_MMAP_SIZE", errno);
    }
    return new KvmVm(vmFd, runSize, (cap) => this.checkExtension(cap));
  }

  close(): void {
    if (this.fd >= 0) libc.close(this.fd);
    this.fd = -1;
  }
}
