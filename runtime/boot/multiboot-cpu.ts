/**
 * The CPU state a Multiboot v1 kernel is entered with (Multiboot spec 3.2): 32-bit
 * protected mode, flat 4 GiB code and data segments, paging off, EAX = magic, EBX = info.
 */
import type { CpuState } from "../hypervisor/x86/cpu-state.js";
import type { GuestMemory } from "../../memory/guest-memory.js";
import type { MultibootEntry } from "./multiboot.js";
import { flatSegment, gdtEntry } from "./x86-segments.js";

/** A scratch GDT in low memory; the kernel must load its own before reloading a segment. */
const GDT_ADDRESS = 0x500;
const CODE_SELECTOR = 0x08;
const DATA_SELECTOR = 0x10;
const CR0_PE = 0x1n;
const CR0_ET = 0x10n;

export function multibootCpuState(memory: GuestMemory, entry: MultibootEntry): CpuState {
  const code = flatSegment(CODE_SELECTOR, true);
  const data = flatSegment(DATA_SELECTOR, false);
  memory.writeU64(GDT_ADDRESS, 0n);
  memory.writeU64(GDT_ADDRESS + CODE_SELECTOR, gdtEntry(code));
  memory.writeU64(GDT_ADDRESS + DATA_SELECTOR, gdtEntry(data));
  return {
    registers: {
      rax: BigInt(entry.eax), rbx: BigInt(entry.ebx), rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
      rip: BigInt(entry.entry), rflags: 2n,
    },
    specialRegisters: {
      cs: code, ds: data, es: data, fs: data, gs: data, ss: data,
      gdt: { base: BigInt(GDT_ADDRESS), limit: 3 * 8 - 1 },
      idt: { base: 0n, limit: 0 },
      cr0: CR0_PE | CR0_ET, cr3: 0n, cr4: 0n, efer: 0n,
    },
  };
}

/** Application processors keep the reset state and wait for INIT/SIPI. */
export function applicationProcessorState(): CpuState {
  return { waitForStartup: true };
}
