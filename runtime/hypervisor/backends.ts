/**
 * Picks a backend by name; the one place that knows which backends exist. It imports each
 * backend's entry point (`<backend>/backend.ts`) and nothing else of theirs.
 */
import type { Backend, Hypervisor, VcpuDescriptor, VcpuHandle, VcpuRunContext } from "./hypervisor.js";
import { kvmBackend } from "./kvm/backend.js";
import { mshvBackend } from "./mshv/backend.js";

export type BackendName = "kvm" | "mshv";

const BACKENDS: ReadonlyMap<string, Backend> = new Map([kvmBackend, mshvBackend].map((backend) => [backend.name, backend]));

function backendNamed(name: string): Backend {
  const backend = BACKENDS.get(name);
  if (backend === undefined) {
    throw new Error(`unknown hypervisor backend '${name}'; available: ${[...BACKENDS.keys()].join(", ")}`);
  }
  return backend;
}

export function openHypervisor(name: BackendName = "kvm"): Hypervisor {
  return backendNamed(name).open();
}

/** Inside a vCPU worker: attaches to a vCPU the main thread created. */
export function attachVcpu(descriptor: VcpuDescriptor, context: VcpuRunContext): VcpuHandle {
  return backendNamed(descriptor.backend).attachVcpu(descriptor, context);
}
