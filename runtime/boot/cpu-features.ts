/**
 * CPUID feature controls: `+x2apic,-pcid,-invpcid`, with the feature names CPUID
 * documentation and QEMU's `-cpu` flags use. A feature is removed from (`-`) or required
 * in (`+`) what the hypervisor supports; one the host cannot give is refused, since the
 * guest would otherwise be told of hardware that is not there.
 */
import type { CpuidEntry } from "../hypervisor/x86/cpu-state.js";

type Register = "eax" | "ebx" | "ecx" | "edx";

interface FeatureBit {
  leaf: number;
  subleaf: number;
  register: Register;
  bit: number;
}

const bit = (leaf: number, register: Register, n: number, subleaf = 0): FeatureBit => ({ leaf, subleaf, register, bit: n });

/** Intel SDM vol. 2A table 3-8..3-10 and AMD APM vol. 3 appendix E; names as QEMU spells them. */
export const CPU_FEATURES: Readonly<Record<string, FeatureBit>> = {
  // Leaf 1, ECX
  "sse3": bit(1, "ecx", 0), "pclmulqdq": bit(1, "ecx", 1), "dtes64": bit(1, "ecx", 2), "monitor": bit(1, "ecx", 3),
  "ds-cpl": bit(1, "ecx", 4), "vmx": bit(1, "ecx", 5), "smx": bit(1, "ecx", 6), "est": bit(1, "ecx", 7),
  "tm2": bit(1, "ecx", 8), "ssse3": bit(1, "ecx", 9), "cid": bit(1, "ecx", 10), "fma": bit(1, "ecx", 12),
  "cx16": bit(1, "ecx", 13), "xtpr": bit(1, "ecx", 14), "pdcm": bit(1, "ecx", 15), "pcid": bit(1, "ecx", 17),
  "dca": bit(1, "ecx", 18), "sse4.1": bit(1, "ecx", 19), "sse4.2": bit(1, "ecx", 20), "x2apic": bit(1, "ecx", 21),
  "movbe": bit(1, "ecx", 22), "popcnt": bit(1, "ecx", 23), "tsc-deadline": bit(1, "ecx", 24), "aes": bit(1, "ecx", 25),
  "xsave": bit(1, "ecx", 26), "avx": bit(1, "ecx", 28), "f16c": bit(1, "ecx", 29), "rdrand": bit(1, "ecx", 30),
  "hypervisor": bit(1, "ecx", 31),
  // Leaf 1, EDX
  "fpu": bit(1, "edx", 0), "vme": bit(1, "edx", 1), "de": bit(1, "edx", 2), "pse": bit(1, "edx", 3),
  "tsc": bit(1, "edx", 4), "msr": bit(1, "edx", 5), "pae": bit(1, "edx", 6), "mce": bit(1, "edx", 7),
  "cx8": bit(1, "edx", 8), "apic": bit(1, "edx", 9), "sep": bit(1, "edx", 11), "mtrr": bit(1, "edx", 12),
  "pge": bit(1, "edx", 13), "mca": bit(1, "edx", 14), "cmov": bit(1, "edx", 15), "pat": bit(1, "edx", 16),
  "pse36": bit(1, "edx", 17), "clflush": bit(1, "edx", 19), "mmx": bit(1, "edx", 23), "fxsr": bit(1, "edx", 24),
  "sse": bit(1, "edx", 25), "sse2": bit(1, "edx", 26), "ss": bit(1, "edx", 27), "ht": bit(1, "edx", 28),
  // Leaf 7 subleaf 0, EBX
  "fsgsbase": bit(7, "ebx", 0), "tsc-adjust": bit(7, "ebx", 1), "bmi1": bit(7, "ebx", 3), "hle": bit(7, "ebx", 4),
  "avx2": bit(7, "ebx", 5), "smep": bit(7, "ebx", 7), "bmi2": bit(7, "ebx", 8), "erms": bit(7, "ebx", 9),
  "invpcid": bit(7, "ebx", 10), "rtm": bit(7, "ebx", 11), "mpx": bit(7, "ebx", 14), "avx512f": bit(7, "ebx", 16),
  "rdseed": bit(7, "ebx", 18), "adx": bit(7, "ebx", 19), "smap": bit(7, "ebx", 20), "clflushopt": bit(7, "ebx", 23),
  "clwb": bit(7, "ebx", 24), "sha-ni": bit(7, "ebx", 29),
  // Leaf 7 subleaf 0, ECX / EDX
  "umip": bit(7, "ecx", 2), "pku": bit(7, "ecx", 3), "la57": bit(7, "ecx", 16), "rdpid": bit(7, "ecx", 22),
  "spec-ctrl": bit(7, "edx", 26), "arch-capabilities": bit(7, "edx", 29),
  // Leaf 0x80000001, ECX / EDX
  "lahf-lm": bit(0x8000_0001, "ecx", 0), "svm": bit(0x8000_0001, "ecx", 2), "abm": bit(0x8000_0001, "ecx", 5),
  "sse4a": bit(0x8000_0001, "ecx", 6), "skinit": bit(0x8000_0001, "ecx", 12),
  "syscall": bit(0x8000_0001, "edx", 11), "nx": bit(0x8000_0001, "edx", 20), "pdpe1gb": bit(0x8000_0001, "edx", 26),
  "rdtscp": bit(0x8000_0001, "edx", 27), "lm": bit(0x8000_0001, "edx", 29),
};

/** QEMU accepts these spellings too. */
const ALIASES: Readonly<Record<string, string>> = {
  "tsc_deadline": "tsc-deadline", "sse4_1": "sse4.1", "sse4_2": "sse4.2", "lahf_lm": "lahf-lm",
  "tsc_adjust": "tsc-adjust", "pclmuldq": "pclmulqdq", "i64": "lm", "xd": "nx", "sha_ni": "sha-ni",
};

export interface CpuFeatureChange {
  name: string;
  enable: boolean;
}

export class CpuFeatureError extends Error {
  override name = "CpuFeatureError";
}

/** Parses `+a,-b,c=on,d=off` (QEMU's forms; a bare name means +). */
export function parseCpuFeatures(text: string): CpuFeatureChange[] {
  const changes: CpuFeatureChange[] = [];
  for (const raw of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    let name = raw;
    let enable = true;
    if (raw.startsWith("+") || raw.startsWith("-")) {
      enable = raw[0] === "+";
      name = raw.slice(1);
    } else if (raw.includes("=")) {
      const [key, value] = raw.split("=");
      if (!["on", "off", "true", "false"].includes(value)) {
        throw new CpuFeatureError(`CPU feature '${raw}': expected ${key}=on or ${key}=off`);
      }
      name = key;
      enable = value === "on" || value === "true";
    }
    name = ALIASES[name] ?? name;
    if (CPU_FEATURES[name] === undefined) {
      throw new CpuFeatureError(`unknown CPU feature '${name}' (known: ${Object.keys(CPU_FEATURES).sort().join(", ")})`);
    }
    changes.push({ name, enable });
  }
  return changes;
}

function entryFor(entries: CpuidEntry[], feature: FeatureBit): CpuidEntry | undefined {
  return entries.find((e) => e.function === feature.leaf && (e.index === feature.subleaf || (e.flags & 1) === 0));
}

/** Whether the supported CPUID offers `name`. */
export function hostHasFeature(supported: readonly CpuidEntry[], name: string): boolean {
  const feature = CPU_FEATURES[name];
  const entry = feature && entryFor(supported as CpuidEntry[], feature);
  return entry !== undefined && ((entry[feature.register] >>> feature.bit) & 1) === 1;
}

/** Applies `changes` to a copy of `supported`; refuses a `+feature` the host does not offer. */
export function applyCpuFeatures(supported: readonly CpuidEntry[], changes: readonly CpuFeatureChange[]): CpuidEntry[] {
  const entries = supported.map((e) => ({ ...e }));
  for (const { name, enable } of changes) {
    const feature = CPU_FEATURES[name];
    const entry = entryFor(entries, feature);
    if (enable) {
      if (!hostHasFeature(supported, name)) {
        throw new CpuFeatureError(
          `CPU feature '${name}' cannot be given: this host's hypervisor does not offer it ` +
            `(CPUID 0x${feature.leaf.toString(16)}.${feature.subleaf} ${feature.register.toUpperCase()}[${feature.bit}]); drop +${name}`,
        );
      }
      continue;
    }
    if (entry !== undefined) entry[feature.register] = (entry[feature.register] & ~(1 << feature.bit)) >>> 0;
  }
  return entries;
}
