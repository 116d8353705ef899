/** The e820 map of a PC machine: the firmware memory map every boot path shares. */
import type { E820Entry } from "./zero-page.js";

export { pcMemoryMap as pcE820Map } from "../pc-memory-map.js";

/** The kernel's own rendering of an entry ("BIOS-e820: [mem 0x...-0x...] usable"), for comparing logs. */
export function e820LogLine(entry: E820Entry): string {
  const hex16 = (value: number) => `0x${value.toString(16).padStart(16, "0")}`;
  const name = { 1: "usable", 2: "reserved", 3: "ACPI data", 4: "ACPI NVS" }[entry.type] ?? `type ${entry.type}`;
  return `BIOS-e820: [mem ${hex16(entry.address)}-${hex16(entry.address + entry.size - 1)}] ${name}`;
}
