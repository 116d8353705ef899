/** What the report says about the machine: CPU, kernel, whether it is itself a VM, KVM flavour. */
import { readFileSync } from "node:fs";
import { cpus, release, version } from "node:os";
import koffi from "koffi";
import { openHypervisor } from "../runtime/hypervisor/backends.js";

export interface MachineInfo {
  cpu: string;
  cores: number;
  kernel: string;
  /** True when this host is itself a virtual machine (CPUID hypervisor bit): KVM runs nested. */
  nested: boolean;
  node: string;
  koffi: string;
  /** Which KVM backs /dev/kvm; PVM has very different exit costs at CPL0 and CPL3. */
  kvm_flavour: string;
  cc: string | null;
  qemu: string | null;
}

function cpuinfo(): string {
  try {
    return readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return "";
  }
}

export function machineInfo(cc: string | null, qemu: string | null): MachineInfo {
  const info = cpuinfo();
  const model = /^model name\s*:\s*(.*)$/m.exec(info)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown";
  const flags = /^flags\s*:\s*(.*)$/m.exec(info)?.[1]?.split(/\s+/) ?? [];
  let flavour: string;
  try {
    const hypervisor = openHypervisor();
    flavour = hypervisor.info.flavour;
    hypervisor.close();
  } catch (error) {
    flavour = `unavailable: ${(error as Error).message}`;
  }
  return {
    cpu: model,
    cores: cpus().length,
    kernel: `${release()} ${version()}`,
    nested: flags.includes("hypervisor"),
    node: process.version,
    koffi: String((koffi as unknown as { version?: string }).version ?? "unknown"),
    kvm_flavour: flavour,
    cc,
    qemu,
  };
}
