/**
 * Linear to guest-physical translation by walking the guest's own page tables in guest RAM,
 * for a backend whose hypervisor reports linear addresses it must resolve itself (MSHV's
 * string I/O). Paging off (the address is physical) and 4-level long-mode paging (4 KiB,
 * 2 MiB and 1 GiB pages) are walked; 32-bit, PAE-without-long-mode and 5-level paging are
 * refused. Checked against KVM by test/page-walk.test.ts. No permission checks: the guest
 * executed the instruction, so the hypervisor already checked them.
 */
import { type GuestMemory, GuestMemoryError } from "../../../memory/guest-memory.js";

export interface PagingRegisters {
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

/** The walk cannot resolve the address: not present, tables outside RAM, or a paging mode not walked. */
export class PageWalkError extends Error {
  override name = "PageWalkError";
}

const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const CR4_LA57 = 1n << 12n;
const EFER_LMA = 1n << 10n;
const PRESENT = 1n;
const PAGE_SIZE_BIT = 1n << 7n;
/** Physical address bits 12..51 of an entry (bits 52..63 are flags, NX included). */
const FRAME = 0x000f_ffff_ffff_f000n;
const LEVELS = [
  { name: "PML4", shift: 39n, large: false },
  { name: "PDPT", shift: 30n, large: true },
  { name: "page directory", shift: 21n, large: true },
  { name: "page table", shift: 12n, large: false },
] as const;

function hex(value: bigint): string {
  return `0x${value.toString(16)}`;
}

/** The guest-physical address of `linear` under `paging`. Throws PageWalkError when it has none. */
export function linearToPhysical(memory: GuestMemory, paging: PagingRegisters, linear: bigint): number {
  if ((paging.cr0 & CR0_PG) === 0n) return Number(linear & 0xffff_ffffn);
  if ((paging.efer & EFER_LMA) === 0n || (paging.cr4 & CR4_PAE) === 0n) {
    throw new PageWalkError(`linear ${hex(linear)}: 32-bit and PAE paging outside long mode are not walked`);
  }
  if (paging.cr4 & CR4_LA57) throw new PageWalkError(`linear ${hex(linear)}: 5-level paging is not walked`);
  let table = paging.cr3 & FRAME;
  for (const level of LEVELS) {
    const at = table + ((linear >> level.shift) & 0x1ffn) * 8n;
    let entry: bigint;
    try {
      entry = memory.readU64(Number(at));
    } catch (error) {
      if (!(error instanceof GuestMemoryError)) throw error;
      throw new PageWalkError(`linear ${hex(linear)}: the ${level.name} entry at ${hex(at)} is not in guest RAM`);
    }
    if ((entry & PRESENT) === 0n) throw new PageWalkError(`linear ${hex(linear)}: not present in the ${level.name}`);
    const offsetBits = (1n << level.shift) - 1n;
    if (level.shift === 12n || (level.large && entry & PAGE_SIZE_BIT)) {
      return Number(((entry & FRAME) & ~offsetBits) | (linear & offsetBits));
    }
    table = entry & FRAME;
  }
  throw new Error("unreachable: the page-table level always ends the walk");
}
