/**
 * The memory map a PC's firmware reports, one copy for every boot path (Linux's e820 table
 * in the zero page, the Multiboot mmap): the guest's RAM regions less the legacy holes
 * below 1 MiB: the EBDA page under 640 KiB, the VGA/option-ROM window (not RAM, not
 * listed) and the BIOS area from 0xE0000, where the machine's RSDP, ACPI tables and MP
 * table live, reserved so the guest keeps them. Types are the BIOS e820 ones, which
 * Multiboot's mmap uses too.
 */
import type { GuestMemory } from "../../memory/guest-memory.js";

export const MemoryType = { RAM: 1, RESERVED: 2, ACPI: 3, NVS: 4 } as const;

export interface MemoryMapEntry {
  address: number;
  size: number;
  type: number;
}

export const EBDA_START = 0x9fc00;
const VGA_START = 0xa0000;
export const BIOS_AREA_START = 0xe0000;
const ONE_MIB = 0x100000;

/** Entries in address order. */
export function pcMemoryMap(memory: GuestMemory): MemoryMapEntry[] {
  const map: MemoryMapEntry[] = [];
  const add = (address: number, end: number, type: number) => {
    if (end > address) map.push({ address, size: end - address, type });
  };
  const regions = [...memory.regions].sort((a, b) => a.gpa - b.gpa);
  for (const { gpa, size } of regions) {
    const end = gpa + size;
    add(gpa, Math.min(end, EBDA_START), MemoryType.RAM);
    add(Math.max(gpa, EBDA_START), Math.min(end, VGA_START), MemoryType.RESERVED);
    add(Math.max(gpa, BIOS_AREA_START), Math.min(end, ONE_MIB), MemoryType.RESERVED);
    add(Math.max(gpa, ONE_MIB), end, MemoryType.RAM);
  }
  return map;
}
