/**
 * The hypervisor CPUID range (0x40000000-0x400000ff) a guest is shown, built from what the
 * host supports and what the caller asks for.
 *
 * Three interfaces live there, and a guest may use any mix of them (the 2008 LKML thread on
 * CPUID 0x40000000 settled on this: one leaf per meaning, no shared ABI across hypervisors):
 * - 0x40000000: the signature (EBX, ECX, EDX) and the highest hypervisor leaf (EAX);
 * - 0x40000001: KVM's paravirtual feature bits; a guest reads them only after it saw
 *   "KVMKVMKVM\0\0\0", so they are offered only under that signature;
 * - 0x40000010: TSC and local APIC timer frequencies in kHz (EAX, EBX), the timing leaf
 *   VMware introduced and other hypervisors copied; meaningful under any signature.
 * With the signature hidden the whole range is removed and CPUID.1:ECX bit 31 ("hypervisor
 * present") is cleared, so the guest sees bare hardware.
 */
import type { TimerFrequencies } from "../hypervisor/hypervisor.js";
import type { CpuidEntry } from "../hypervisor/x86/cpu-state.js";

export const HYPERVISOR_BASE_LEAF = 0x4000_0000;
export const KVM_FEATURES_LEAF = 0x4000_0001;
export const TIMING_LEAF = 0x4000_0010;
const LAST_HYPERVISOR_LEAF = 0x4000_00ff;
const HYPERVISOR_PRESENT_BIT = 1 << 31; // CPUID.1:ECX
export const KVM_SIGNATURE = "KVMKVMKVM\0\0\0";

/** KVM_FEATURE_* bit numbers of CPUID 0x40000001 EAX (arch/x86/include/uapi/asm/kvm_para.h). */
export const KVM_PV_FEATURES = {
  "clocksource": 0,
  "nop-io-delay": 1,
  "mmu-op": 2,
  "clocksource2": 3,
  "async-pf": 4,
  "steal-time": 5,
  "pv-eoi": 6,
  "pv-unhalt": 7,
  "pv-tlb-flush": 9,
  "async-pf-vmexit": 10,
  "pv-send-ipi": 11,
  "poll-control": 12,
  "pv-sched-yield": 13,
  "async-pf-int": 14,
  "msi-ext-dest-id": 15,
  "hc-map-gpa-range": 16,
  "migration-control": 17,
  "clocksource-stable": 24,
} as const;
export type KvmPvFeature = keyof typeof KVM_PV_FEATURES;

export interface HypervisorCpuidOptions {
  /**
   * "kvm" (default): KVM's "KVMKVMKVM\0\0\0"; "none": no hypervisor leaves at all and the
   * hypervisor-present bit cleared; any other string of 1 to 12 ASCII characters: your own
   * signature, NUL-padded to 12 bytes.
   */
  signature?: string;
  /**
   * KVM paravirtual features to offer in 0x40000001 (default: every one the host's KVM
   * supports). Only with the "kvm" signature; an empty list offers the leaf with no bits.
   */
  kvmFeatures?: readonly KvmPvFeature[];
  /** EAX of 0x40000000 (default: the highest leaf offered). Leaves above it are dropped. */
  maxLeaf?: number;
  /**
   * Offer 0x40000010 with these frequencies (kHz), or with the ones the hypervisor reports
   * ("host": KVM's TSC rate and its 1 GHz APIC bus). Absent: no timing leaf.
   */
  frequencies?: TimerFrequencies | "host";
}

export class HypervisorCpuidError extends Error {
  override name = "HypervisorCpuidError";
}

function signatureWords(signature: string): [number, number, number] {
  const text = signature === "kvm" ? KVM_SIGNATURE : signature;
  if (text.length === 0 || text.length > 12 || !/^[\x00-\x7f]*$/.test(text)) {
    throw new HypervisorCpuidError(
      `hypervisor CPUID signature '${signature}' must be "kvm", "none" or 1 to 12 ASCII characters`,
    );
  }
  const bytes = new Uint8Array(12);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const view = new DataView(bytes.buffer);
  return [view.getUint32(0, true), view.getUint32(4, true), view.getUint32(8, true)];
}

function kvmFeatureBits(requested: readonly KvmPvFeature[] | undefined, supported: number): number {
  if (requested === undefined) return supported;
  if (!Array.isArray(requested)) throw new HypervisorCpuidError("kvmFeatures must be an array of feature names");
  let bits = 0;
  for (const name of requested as readonly string[]) {
    const bit = (KVM_PV_FEATURES as Record<string, number>)[name];
    if (bit === undefined) {
      throw new HypervisorCpuidError(
        `unknown KVM paravirtual feature '${String(name)}'; known: ${Object.keys(KVM_PV_FEATURES).join(", ")}`,
      );
    }
    if ((supported & (1 << bit)) === 0) {
      throw new HypervisorCpuidError(`this host's KVM does not offer the paravirtual feature '${name}' (CPUID 0x40000001 bit ${bit})`);
    }
    bits |= 1 << bit;
  }
  return bits >>> 0;
}

function checkFrequency(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 0xffff_ffff) {
    throw new HypervisorCpuidError(`${what} must be a whole number of kHz from 1 to 4294967295, got ${value}`);
  }
  return value;
}

/**
 * Replaces the hypervisor range of `supported` with the one `options` describe. The
 * result is the table every vCPU starts from (before per-vCPU APIC IDs are set).
 */
export function withHypervisorLeaves(
  supported: readonly CpuidEntry[],
  options: HypervisorCpuidOptions = {},
  hostFrequencies: () => TimerFrequencies | undefined = () => undefined,
): CpuidEntry[] {
  if (options === null || typeof options !== "object") throw new HypervisorCpuidError("hypervisorCpuid must be an object");
  const isHypervisorLeaf = (e: CpuidEntry) => e.function >= HYPERVISOR_BASE_LEAF && e.function <= LAST_HYPERVISOR_LEAF;
  const base = supported.filter((e) => !isHypervisorLeaf(e)).map((e) => ({ ...e }));
  const signature = options.signature ?? "kvm";

  if (signature === "none") {
    if (options.kvmFeatures !== undefined || options.frequencies !== undefined || options.maxLeaf !== undefined) {
      throw new HypervisorCpuidError(
        'a hidden hypervisor (signature "none") offers no hypervisor leaves: drop kvmFeatures, frequencies and maxLeaf',
      );
    }
    for (const entry of base) if (entry.function === 1) entry.ecx = (entry.ecx & ~HYPERVISOR_PRESENT_BIT) >>> 0;
    return base;
  }

  const [ebx, ecx, edx] = signatureWords(signature);
  const leaves: CpuidEntry[] = [];
  const leaf = (fn: number, eax: number, b = 0, c = 0, d = 0): CpuidEntry =>
    ({ function: fn, index: 0, flags: 0, eax: eax >>> 0, ebx: b >>> 0, ecx: c >>> 0, edx: d >>> 0 });

  if (signature === "kvm") {
    const hostKvm = supported.find((e) => e.function === KVM_FEATURES_LEAF);
    if (hostKvm === undefined && options.kvmFeatures !== undefined && options.kvmFeatures.length > 0) {
      throw new HypervisorCpuidError("this host's KVM reports no paravirtual features (no CPUID 0x40000001)");
    }
    const bits = kvmFeatureBits(options.kvmFeatures, hostKvm?.eax ?? 0);
    // EDX carries KVM's hints (KVM_HINTS_REALTIME); only pass the host's on when the caller took the defaults.
    leaves.push(leaf(KVM_FEATURES_LEAF, bits, 0, 0, options.kvmFeatures === undefined ? hostKvm?.edx ?? 0 : 0));
  } else if (options.kvmFeatures !== undefined) {
    throw new HypervisorCpuidError(
      `KVM paravirtual features are read by guests only under KVM's signature; with signature '${signature}' drop kvmFeatures`,
    );
  }
  if (options.frequencies !== undefined) {
    const frequencies = options.frequencies === "host" ? hostFrequencies() : options.frequencies;
    if (frequencies === undefined) {
      throw new HypervisorCpuidError(
        'frequencies "host": this hypervisor does not report its TSC and APIC timer rates; give { tscKHz, apicKHz } instead',
      );
    }
    if (typeof frequencies !== "object" || frequencies === null) {
      throw new HypervisorCpuidError(`frequencies must be "host" or { tscKHz, apicKHz }, got ${String(frequencies)}`);
    }
    const { tscKHz, apicKHz } = frequencies;
    leaves.push(leaf(TIMING_LEAF, checkFrequency(tscKHz, "frequencies.tscKHz"), checkFrequency(apicKHz, "frequencies.apicKHz")));
  }

  const highestOffered = Math.max(HYPERVISOR_BASE_LEAF, ...leaves.map((e) => e.function));
  const maxLeaf = options.maxLeaf ?? highestOffered;
  if (!Number.isInteger(maxLeaf) || maxLeaf < HYPERVISOR_BASE_LEAF || maxLeaf > LAST_HYPERVISOR_LEAF) {
    throw new HypervisorCpuidError(`maxLeaf must be from 0x40000000 to 0x400000ff, got ${String(maxLeaf)}`);
  }
  if (options.frequencies !== undefined && maxLeaf < TIMING_LEAF) {
    throw new HypervisorCpuidError(
      `maxLeaf 0x${maxLeaf.toString(16)} hides the frequency leaf 0x40000010: raise maxLeaf or drop frequencies`,
    );
  }
  return [...base, leaf(HYPERVISOR_BASE_LEAF, maxLeaf, ebx, ecx, edx), ...leaves.filter((e) => e.function <= maxLeaf)];
}
