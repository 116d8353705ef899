/**
 * What a reset x86 CPU (and firmware) has that KVM does not set when it creates a vCPU
 * (Intel SDM vol. 3, 10.1.1 and 11.12.4): fast strings on, the power-on PAT, MXCSR 0x1f80.
 * Every vCPU starts from this; a loader's CpuState adds to it.
 */
import type { CpuState, FpuControl, MsrEntry } from "../hypervisor/x86/cpu-state.js";

export const MSR_IA32_MISC_ENABLE = 0x1a0;
export const MSR_IA32_PAT = 0x277;

const RESET_MSRS: readonly MsrEntry[] = [
  { index: MSR_IA32_MISC_ENABLE, value: 1n }, // fast strings
  { index: MSR_IA32_PAT, value: 0x0007_0406_0007_0406n },
];
export const RESET_FPU: FpuControl = { fcw: 0x37f, mxcsr: 0x1f80 };

export function withResetState(state: CpuState): CpuState {
  const overridden = new Set((state.msrs ?? []).map((m) => m.index));
  return {
    ...state,
    msrs: [...RESET_MSRS.filter((m) => !overridden.has(m.index)), ...(state.msrs ?? [])],
    fpu: state.fpu ?? RESET_FPU,
  };
}
