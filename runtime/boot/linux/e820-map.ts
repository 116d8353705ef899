/**
 * The e820 map a PC machine reports: its RAM regions, less the legacy holes a PC keeps
 * below 1 MiB (the EBDA page below 640 KiB, VGA and option ROMs, and the BIOS area where
 * our RSDP and ACPI tables live, reserved so the kernel keeps them).
 */
import type { GuestMemory } from "../../../memory/guest-memory.js";
import { E820Type, type E820Entry } from "./zero-page.js";

const EBDA_START = 0x9fc00;
const BIOS_AREA_START = 0xe0000;
const ONE_MIB = 0x100000;

export function pcE820Map(memory: GuestMemory): E820Entry[] {
  const map: E820Entry[] = [];
  for (const region of memory.regions) {
    const end = region.gpa + region.size;
    if (region.gpa === 0 && end > ONE_MIB) {
      map.push({ address: 0, size: EBDA_START, type: E820Type.RAM });
      map.push({ address: EBDA_START, size: 0xa0000 - EBDA_START, type: E820Type.RESERVED });
      map.push({ address: BIOS_AREA_START, size: ONE_MIB - BIOS_AREA_START, type: E820Type.RESERVED });
      map.push({ address: ONE_MIB, size: end - ONE_MIB, type: E820Type.RAM });
    } else {
      map.push({ address: region.gpa, size: region.size, type: E820Type.RAM });
    }
  }
  return map;
}

/** The kernel's own rendering of an entry ("BIOS-e820: [mem 0x...-0x...] usable"), for comparing logs. */
export function e820LogLine(entry: E820Entry): string {
  const hex16 = (value: number) => `0x${value.toString(16).padStart(16, "0")}`;
  const name = { 1: "usable", 2: "reserved", 3: "ACPI data", 4: "ACPI NVS" }[entry.type] ?? `type ${entry.type}`;
  return `BIOS-e820: [mem ${hex16(entry.address)}-${hex16(entry.address + entry.size - 1)}] ${name}`;
}
