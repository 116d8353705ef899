/**
 * The command-line form of HypervisorCpuidOptions, e.g.
 *   signature=kvm,features=clocksource2+pv-eoi,max-leaf=0x40000010,tsc-khz=2000000,apic-khz=1000000
 *   none
 */
import { HypervisorCpuidError, KVM_PV_FEATURES, type HypervisorCpuidOptions, type KvmPvFeature } from "./hypervisor-cpuid.js";

const KEYS_HELP =
  "signature=, features=, max-leaf=, frequencies=host or tsc-khz= with apic-khz=, or just 'none' (see workervisor run --help)";

function wrap(words: string[], indent: string, width: number): string {
  const lines: string[] = [];
  let line = indent;
  for (const word of words) {
    if (line.length + word.length + 1 > width && line.trim() !== "") {
      lines.push(line);
      line = indent;
    }
    line += (line.trim() === "" ? "" : " ") + word;
  }
  lines.push(line);
  return lines.join("\n");
}

/** The option's help for `workervisor run --help`, indented to its column. */
export function hypervisorCpuidSpecUsage(indent: string): string {
  return [
    `${indent}SPEC is a comma-separated list of:`,
    `${indent}  signature=kvm|none|TEXT  KVM's KVMKVMKVM (default), none, or up to 12 characters`,
    `${indent}  features=NAME+NAME...    the KVM PV features offered (empty: none)`,
    `${indent}  max-leaf=0x400000NN      the highest hypervisor leaf`,
    `${indent}  tsc-khz=N,apic-khz=N     offer the 0x40000010 frequency leaf with these rates`,
    `${indent}  frequencies=host         ... with the rates the hypervisor reports`,
    `${indent}or just 'none': no hypervisor leaves and the hypervisor bit clear. Features:`,
    wrap(Object.keys(KVM_PV_FEATURES).map((name, i, all) => (i < all.length - 1 ? `${name},` : name)), `${indent}  `, 90),
  ].join("\n");
}

function wholeNumber(key: string, text: string): number {
  const value = /^0x[0-9a-f]+$/i.test(text) ? Number.parseInt(text, 16) : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value)) throw new HypervisorCpuidError(`${key}: '${text}' is not a whole number (decimal or 0x hex)`);
  return value;
}

function featureName(name: string): KvmPvFeature {
  if (!(name in KVM_PV_FEATURES)) {
    throw new HypervisorCpuidError(`unknown KVM paravirtual feature '${name}'; known: ${Object.keys(KVM_PV_FEATURES).join(", ")}`);
  }
  return name as KvmPvFeature;
}

export function parseHypervisorCpuidSpec(spec: string): HypervisorCpuidOptions {
  const options: HypervisorCpuidOptions = {};
  let tscKHz: number | undefined;
  let apicKHz: number | undefined;
  if (spec.trim() === "none") return { signature: "none" };
  for (const part of spec.split(",")) {
    const equals = part.indexOf("=");
    if (equals < 0) throw new HypervisorCpuidError(`'${part}' is not key=value; expected ${KEYS_HELP}`);
    const key = part.slice(0, equals).trim();
    const value = part.slice(equals + 1).trim();
    switch (key) {
      case "signature":
        options.signature = value;
        break;
      case "features":
        options.kvmFeatures = value === "" ? [] : value.split("+").map(featureName);
        break;
      case "max-leaf":
        options.maxLeaf = wholeNumber(key, value);
        break;
      case "frequencies":
        if (value !== "host") throw new HypervisorCpuidError(`frequencies: '${value}' is not 'host' (give tsc-khz= and apic-khz= for your own)`);
        options.frequencies = "host";
        break;
      case "tsc-khz":
        tscKHz = wholeNumber(key, value);
        break;
      case "apic-khz":
        apicKHz = wholeNumber(key, value);
        break;
      default:
        throw new HypervisorCpuidError(`unknown key '${key}'; expected ${KEYS_HELP}`);
    }
  }
  if ((tscKHz === undefined) !== (apicKHz === undefined)) {
    throw new HypervisorCpuidError("tsc-khz and apic-khz go together: the 0x40000010 leaf carries both");
  }
  if (tscKHz !== undefined && apicKHz !== undefined) {
    if (options.frequencies === "host") throw new HypervisorCpuidError("frequencies=host and tsc-khz/apic-khz contradict each other: give one");
    options.frequencies = { tscKHz, apicKHz };
  }
  return options;
}
