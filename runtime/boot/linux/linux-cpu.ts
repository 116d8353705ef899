/**
 * The CPU state of Linux's 64-bit boot protocol entry (boot.rst, "64-bit Boot Protocol"):
 * long mode with paging on, the kernel, zero page and command line identity-mapped, a GDT
 * with flat __BOOT_CS (0x10) and __BOOT_DS (0x18), interrupts off, RSI = the zero page.
 */
import type { CpuState } from "../../hypervisor/x86/cpu-state.js";
import type { GuestMemory } from "../../../memory/guest-memory.js";
import { flatSegment, gdtEntry } from "../x86-segments.js";

/** Low-memory layout of what the loader writes besides the kernel (all in the first e820 RAM range). */
export const LinuxBootLayout = {
  GDT: 0x500,
  ZERO_PAGE: 0x7000,
  /** Top of a small boot stack; startup_64 switches to its own at once. */
  STACK_TOP: 0x8ff0,
  PML4: 0x9000,
  PDPT: 0xa000,
  /** Four page directories of 2 MiB pages: the first 4 GiB. */
  PAGE_DIRECTORIES: 0xb000,
  CMDLINE: 0x20000,
  CMDLINE_MAX: 0x10000,
} as const;

const BOOT_CS = 0x10;
const BOOT_DS = 0x18;
const CR0_PE = 1n, CR0_ET = 0x10n, CR0_NE = 0x20n, CR0_PG = 0x8000_0000n;
const CR4_PAE = 0x20n;
const EFER_LME = 0x100n, EFER_LMA = 0x400n;
const PAGE_PRESENT = 1n, PAGE_WRITABLE = 2n, PAGE_HUGE = 0x80n;
const IDENTITY_MAPPED_GIB = 4;

function writeIdentityPageTables(memory: GuestMemory): void {
  const L = LinuxBootLayout;
  const flags = PAGE_PRESENT | PAGE_WRITABLE;
  memory.fill(L.PML4, 0x1000 * (2 + IDENTITY_MAPPED_GIB), 0);
  memory.writeU64(L.PML4, BigInt(L.PDPT) | flags);
  for (let gib = 0; gib < IDENTITY_MAPPED_GIB; gib++) {
    const directory = L.PAGE_DIRECTORIES + gib * 0x1000;
    memory.writeU64(L.PDPT + gib * 8, BigInt(directory) | flags);
    for (let i = 0; i < 512; i++) {
      memory.writeU64(directory + i * 8, (BigInt(gib) << 30n) + (BigInt(i) << 21n) | flags | PAGE_HUGE);
    }
  }
}

/** Writes the boot GDT and page tables; returns the boot vCPU's state for entering at `entry`. */
export function linux64EntryState(memory: GuestMemory, entry: number): CpuState {
  const L = LinuxBootLayout;
  const code = flatSegment(BOOT_CS, true, { long: true });
  const data = flatSegment(BOOT_DS, false);
  memory.fill(L.GDT, BOOT_DS + 8, 0);
  memory.writeU64(L.GDT + BOOT_CS, gdtEntry(code));
  memory.writeU64(L.GDT + BOOT_DS, gdtEntry(data));
  writeIdentityPageTables(memory);
  return {
    registers: {
      rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: BigInt(L.ZERO_PAGE), rdi: 0n, rbp: 0n,
      rsp: BigInt(L.STACK_TOP), rip: BigInt(entry), rflags: 2n,
    },
    specialRegisters: {
      cs: code, ds: data, es: data, fs: data, gs: data, ss: data,
      gdt: { base: BigInt(L.GDT), limit: BOOT_DS + 8 - 1 },
      idt: { base: 0n, limit: 0 },
      cr0: CR0_PE | CR0_ET | CR0_NE | CR0_PG,
      cr3: BigInt(L.PML4),
      cr4: CR4_PAE,
      efer: EFER_LME | EFER_LMA,
    },
  };
}
