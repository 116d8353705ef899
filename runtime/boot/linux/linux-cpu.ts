/**
 * The CPU state of Linux's 64-bit boot protocol entry (boot.rst, "64-bit Boot Protocol"):
 * long mode with paging on, the kernel, zero page and command line identity-mapped, a GDT
 * with flat __BOOT_CS (0x10) and __BOOT_DS (0x18), interrupts off, RSI = the zero page.
 */
import type { CpuState } from "../../hypervisor/x86/cpu-state.js";
import type { GuestMemory } from "../../../memory/guest-memory.js";
import { flatSegment, gdtEntry } from "../x86-segments.js";
import { writeIdentityPageTables } from "../x86-paging.js";

/** Low-memory layout of what the loader writes besides the kernel (all in the first e820 RAM range). */
export const LinuxBootLayout = {
  GDT: 0x500,
  ZERO_PAGE: 0x7000,
  /** Top of a small boot stack; startup_64 switches to its own at once. */
  STACK_TOP: 0x8ff0,
  /** Then its PDPT and four page directories of 2 MiB pages: the first 4 GiB (x86-paging.ts). */
  PML4: 0x9000,
  CMDLINE: 0x20000,
  CMDLINE_MAX: 0x10000,
} as const;

const BOOT_CS = 0x10;
const BOOT_DS = 0x18;
const CR0_PE = 1n, CR0_ET = 0x10n, CR0_NE = 0x20n, CR0_PG = 0x8000_0000n;
const CR4_PAE = 0x20n;
const EFER_LME = 0x100n, EFER_LMA = 0x400n;

/** Writes the boot GDT and page tables; returns the boot vCPU's state for entering at `entry`. */
export function linux64EntryState(memory: GuestMemory, entry: number): CpuState {
  const L = LinuxBootLayout;
  const code = flatSegment(BOOT_CS, true, { long: true });
  const data = flatSegment(BOOT_DS, false);
  memory.fill(L.GDT, BOOT_DS + 8, 0);
  memory.writeU64(L.GDT + BOOT_CS, gdtEntry(code));
  memory.writeU64(L.GDT + BOOT_DS, gdtEntry(data));
  writeIdentityPageTables(memory, L.PML4);
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
