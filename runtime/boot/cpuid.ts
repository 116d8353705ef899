/** The CPUID a vCPU is given: what the hypervisor supports, with per-vCPU identity. */
import type { CpuidEntry } from "../hypervisor/x86/cpu-state.js";

/** Copies `supported`, setting the APIC ID of vCPU `index` in leaves 0x1, 0xB and 0x1F. */
export function cpuidForVcpu(supported: readonly CpuidEntry[], index: number): CpuidEntry[] {
  return supported.map((entry) => {
    const copy = { ...entry };
    if (copy.function === 0x1) {
      copy.ebx = ((copy.ebx & 0x00ff_ffff) | ((index & 0xff) << 24)) >>> 0;
    } else if (copy.function === 0xb || copy.function === 0x1f) {
      copy.edx = index >>> 0; // x2APIC ID
    }
    return copy;
  });
}
