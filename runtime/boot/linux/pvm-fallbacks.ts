/**
 * What a Linux guest needs to run on a PVM host, where KVM has no hardware virtualization
 * and emulates all CPL0 code, but its emulator lacks some instructions: the guest dies with
 * a KVM internal error (emulation failure, with the instruction's bytes) the first time it
 * uses one. Each fallback here was seen needed with the Debian cloud kernel on such a host:
 *
 * - lock cmpxchg16b (SLUB's per-CPU freelists, right after "Memory:"): hidden from CPUID
 *   (leaf 1 ECX.CX16), so SLUB takes its locked path. PVM honours this bit.
 * - XRSTOR (FPU init), CLAC/STAC (SMAP) and POPCNT (hweight, patched in by alternatives):
 *   PVM reports XSAVE, SMAP and POPCNT whatever CPUID we set, so they are turned off on the
 *   kernel command line (`noxsave`, which also drops AVX; `clearcpuid=smap,popcnt`).
 * - LDMXCSR in kernel_fpu_begin(), reached by the kernel's SIMD users (blake2s for the RNG,
 *   crypto): their SSE extensions are cleared too (ssse3, sse4_1, sse4_2, aes, pclmulqdq,
 *   sha_ni), so they take their generic C paths.
 * - INT3 at CPL0 (the kernel's int3 self-test, text patching) and FWAIT (fpu__drop, when a
 *   task execs or exits): completed by the vCPU worker (Vm.completeUnemulatedKernelInstructions),
 *   counted in VmStats.kernelInstructionsCompleted.
 */
import type { CpuidEntry } from "../../hypervisor/x86/cpu-state.js";

const CPUID_LEAF1_ECX_CX16 = 1 << 13;

/** Kernel parameters for the features PVM forces on but cannot emulate. */
export const PVM_KERNEL_PARAMETERS = ["noxsave", "clearcpuid=smap,popcnt,ssse3,sse4_1,sse4_2,aes,pclmulqdq,sha_ni"] as const;

/** `entries` without CX16; `hidden` is ["cx16"] when it was offered. */
export function hidePvmUnemulatedCpuid(entries: CpuidEntry[]): { entries: CpuidEntry[]; hidden: string[] } {
  let hidden = false;
  const result = entries.map((entry) => {
    if (entry.function !== 0x1 || !(entry.ecx & CPUID_LEAF1_ECX_CX16)) return entry;
    hidden = true;
    return { ...entry, ecx: (entry.ecx & ~CPUID_LEAF1_ECX_CX16) >>> 0 };
  });
  return { entries: result, hidden: hidden ? ["cx16"] : [] };
}

/** `cmdline` with `parameters` added before any `--` (what follows it belongs to init). */
export function withKernelParameters(cmdline: string, parameters: readonly string[]): string {
  const words = cmdline.split(" ").filter((word) => word.length > 0);
  const separator = words.indexOf("--");
  const kernelWords = separator < 0 ? words : words.slice(0, separator);
  const missing = parameters.filter((parameter) => !kernelWords.includes(parameter));
  if (missing.length === 0) return cmdline;
  if (separator < 0) return [...words, ...missing].join(" ");
  return [...words.slice(0, separator), ...missing, ...words.slice(separator)].join(" ");
}
