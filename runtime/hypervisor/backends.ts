/** Picks a backend by name; the one place that knows which backends exist. */
import type { Hypervisor, VcpuDescriptor, VcpuHandle } from "./hypervisor.js";
import { KvmHypervisor } from "./kvm/kvm-system.js";
import { KvmVcpu } from "./kvm/kvm-vcpu.js";
import { MshvHypervisor } from "./mshv/mshv-system.js";
import { MshvVp } from "./mshv/mshv-vp.js";

export type BackendName = "kvm" | "mshv";

export function openHypervisor(name: BackendName = "kvm"): Hypervisor {
  switch (name) {
    case "kvm":
      return KvmHypervisor.open();
    case "mshv":
      return MshvHypervisor.open();
    default:
      throw new Error(`unknown hypervisor backend '${name as string}'; available: kvm, mshv`);
  }
}

/** Inside a vCPU worker: attaches to a vCPU the main thread created. */
export function attachVcpu(descriptor: VcpuDescriptor): VcpuHandle {
  switch (descriptor.backend) {
    case "kvm":
      return new KvmVcpu(descriptor);
    case "mshv":
      return new MshvVp(descriptor);
    default:
      throw new Error(`unknown hypervisor backend '${descriptor.backend}'`);
  }
}
