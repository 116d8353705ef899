/** Picks a backend by name; the one place that knows which backends exist. */
import type { Hypervisor, VcpuDescriptor, VcpuHandle } from "./hypervisor.js";
import { KvmHypervisor } from "./kvm/kvm-system.js";
import { KvmVcpu } from "./kvm/kvm-vcpu.js";

export type BackendName = "kvm";

export function openHypervisor(name: BackendName = "kvm"): Hypervisor {
  switch (name) {
    case "kvm":
      return KvmHypervisor.open();
    default:
      throw new Error(`unknown hypervisor backend '${name as string}'; available: kvm`);
  }
}

/** Inside a vCPU worker: attaches to a vCPU the main thread created. */
export function attachVcpu(descriptor: VcpuDescriptor): VcpuHandle {
  switch (descriptor.backend) {
    case "kvm":
      return new KvmVcpu(descriptor);
    default:
      throw new Error(`unknown hypervisor backend '${descriptor.backend}'`);
  }
}
