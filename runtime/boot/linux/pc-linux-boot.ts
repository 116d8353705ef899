/**
 * Puts a Linux kernel on a PC machine's VM: the loader, then on a PVM host the fallbacks
 * that keep the kernel away from what PVM cannot emulate (./pvm-fallbacks.ts).
 */
import type { Vm } from "../../vm.js";
import { loadLinux, type Decompression, type LinuxBoot } from "./linux-loader.js";
import { hidePvmUnemulatedCpuid, PVM_KERNEL_PARAMETERS, withKernelParameters } from "./pvm-fallbacks.js";

export interface PcLinuxOptions {
  kernel: Uint8Array;
  fileName: string;
  initrd?: Uint8Array;
  cmdline?: string;
  rsdpAddress: number;
  decompression?: Decompression;
  kernelCacheDir?: string;
  /** Default true; only acts on a PVM host. */
  pvmFallbacks?: boolean;
}

export interface PvmFallbacks {
  hiddenCpuid: string[];
  kernelParameters: string[];
}

export function bootLinuxOnPc(vm: Vm, options: PcLinuxOptions): { linux: LinuxBoot; pvmFallbacks: PvmFallbacks | undefined } {
  const pvm = (options.pvmFallbacks ?? true) && vm.hypervisorFlavour.startsWith("kvm-pvm");
  const linux = loadLinux(vm.memory, {
    kernel: options.kernel, fileName: options.fileName, initrd: options.initrd,
    cmdline: pvm ? withKernelParameters(options.cmdline ?? "", PVM_KERNEL_PARAMETERS) : options.cmdline,
    rsdpAddress: options.rsdpAddress, decompression: options.decompression, cacheDir: options.kernelCacheDir,
  });
  vm.setCpuState(0, linux.cpuState);
  if (!pvm) return { linux, pvmFallbacks: undefined };
  const hiddenCpuid = new Set<string>();
  vm.editCpuid((entries) => {
    const { entries: edited, hidden } = hidePvmUnemulatedCpuid(entries);
    hidden.forEach((feature) => hiddenCpuid.add(feature));
    return edited;
  });
  vm.completeUnemulatedKernelInstructions();
  return { linux, pvmFallbacks: { hiddenCpuid: [...hiddenCpuid], kernelParameters: [...PVM_KERNEL_PARAMETERS] } };
}
