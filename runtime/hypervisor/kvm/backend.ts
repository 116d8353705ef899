/** The KVM backend's entry point: all the registry (../backends.ts) sees of this folder. */
import type { Backend } from "../hypervisor.js";
import { KvmHypervisor } from "./kvm-system.js";
import { KvmVcpu } from "./kvm-vcpu.js";

export const kvmBackend: Backend = {
  name: "kvm",
  open: () => KvmHypervisor.open(),
  attachVcpu: (descriptor) => new KvmVcpu(descriptor),
};
