/**
 * /dev/mshv: Linux as the root partition over Microsoft Hypervisor (drivers/hv/mshv_root,
 * Linux 6.15+). Opening it is all this host can do; see the README for what is verified.
 */
import {
  type Hypervisor, HypervisorError, type HypervisorInfo, HypervisorUnavailableError, type VmHandle,
} from "../hypervisor.js";
import type { CpuidEntry } from "../x86/cpu-state.js";
import * as libc from "../libc.js";
import { MshvPartition } from "./mshv-partition.js";

export const MSHV_DEVICE = "/dev/mshv";
const ENOENT = 2;
const EACCES = 13;
/** HV_MAXIMUM_PROCESSORS on x86-64 (include/hyperv/hvgdk_mini.h). */
const MAX_VPS = 2048;
/** MSHV maps regions by GPA range, without KVM's slot numbers; a generous bound for the VM's checks. */
const MAX_REGIONS = 4096;

export class MshvHypervisor implements Hypervisor {
  readonly info: HypervisorInfo = {
    name: "mshv", flavour: "mshv (Linux root partition over Microsoft Hypervisor)", maxVcpus: MAX_VPS, maxMemorySlots: MAX_REGIONS,
    // The partition's local APICs are always the hypervisor's, which is split mode's half; the
    // other half (asserting a userspace IOAPIC's MSIs, HVMSG_X64_APIC_EOI for level-triggered
    // vectors) is not written yet, so a VM here can only ask for no interrupt controllers.
    irqChipModes: ["none"],
  };

  private constructor(private fd: number) {}

  static open(): MshvHypervisor {
    const fd = libc.open(MSHV_DEVICE, libc.O_RDWR | libc.O_CLOEXEC);
    if (fd < 0) {
      const errno = libc.errno();
      if (errno === ENOENT) {
        throw new HypervisorUnavailableError(
          `Microsoft Hypervisor is not available on this host: ${MSHV_DEVICE} does not exist. The mshv backend needs ` +
            "Linux running as the root partition over Microsoft Hypervisor with the mshv_root driver (Linux 6.15+, " +
            "CONFIG_MSHV_ROOT). On a KVM host use backend \"kvm\" (the default).",
        );
      }
      if (errno === EACCES) throw new HypervisorError(`open ${MSHV_DEVICE}`, errno, "Only root may create partitions: run as root");
      throw new HypervisorError(`open ${MSHV_DEVICE}`, errno);
    }
    libc.installKickHandler();
    return new MshvHypervisor(fd);
  }

  /**
   * MSHV has no "supported CPUID" query: a guest sees the hypervisor's own CPUID unless the
   * VMM intercepts it. An empty table leaves every leaf to the hypervisor.
   */
  supportedCpuid(): CpuidEntry[] {
    return [];
  }

  createVm(): VmHandle {
    return MshvPartition.create(this.fd);
  }

  close(): void {
    if (this.fd >= 0) libc.close(this.fd);
    this.fd = -1;
  }
}
