/** Boot-time x86-64 page tables for the loaders that enter long mode directly. */
import type { GuestMemory } from "../../memory/guest-memory.js";

const PAGE_PRESENT = 1n, PAGE_WRITABLE = 2n, PAGE_USER = 4n, PAGE_HUGE = 0x80n;
const IDENTITY_MAPPED_GIB = 4;
/** The PML4, its PDPT and one page directory per GiB, one page each, contiguous. */
export const IDENTITY_PAGE_TABLES_SIZE = 0x1000 * (2 + IDENTITY_MAPPED_GIB);

/**
 * Identity-maps the first 4 GiB with 2 MiB pages in the IDENTITY_PAGE_TABLES_SIZE bytes at
 * `pml4` (page-aligned); `user` makes them reachable from CPL3. Returns the CR3 value.
 */
export function writeIdentityPageTables(memory: GuestMemory, pml4: number, options: { user?: boolean } = {}): bigint {
  const flags = PAGE_PRESENT | PAGE_WRITABLE | (options.user ? PAGE_USER : 0n);
  const pdpt = pml4 + 0x1000;
  memory.fill(pml4, IDENTITY_PAGE_TABLES_SIZE, 0);
  memory.writeU64(pml4, BigInt(pdpt) | flags);
  for (let gib = 0; gib < IDENTITY_MAPPED_GIB; gib++) {
    const directory = pdpt + 0x1000 * (1 + gib);
    memory.writeU64(pdpt + gib * 8, BigInt(directory) | flags);
    for (let i = 0; i < 512; i++) {
      memory.writeU64(directory + i * 8, ((BigInt(gib) << 30n) + (BigInt(i) << 21n)) | flags | PAGE_HUGE);
    }
  }
  return BigInt(pml4);
}
