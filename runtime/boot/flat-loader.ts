/**
 * Loads a small guest program (raw machine code) and puts the vCPU straight into the
 * mode it was written for: 64-bit long mode at CPL0 or CPL3, or 16-bit real mode.
 *
 * Fixed layout in low guest RAM (all below the default entry at 0x10000):
 *   0x0500 GDT   0x1000 PML4   0x2000 PDPT   0x3000-0x6fff four page directories
 *   0x7000 TSS with its I/O permission bitmap   stack grows down from the entry point
 */
import type { CpuState, Segment, SpecialRegisters } from "../hypervisor/x86/cpu-state.js";
import type { GuestMemory } from "../../memory/guest-memory.js";
import { flatSegment, gdtEntry, realModeSegment, tssDescriptor } from "./x86-segments.js";
import { writeIdentityPageTables } from "./x86-paging.js";

export type GuestMode = "long64" | "user64" | "real16";

export interface FlatProgram {
  code: Uint8Array | number[];
  /** Guest-physical load address and entry point. */
  entry?: number;
  /** `long64`: CPL0, `user64`: CPL3, `real16`: real mode. Default `long64`. */
  mode?: GuestMode;
  /** CPL3 only: ports the TSS I/O bitmap allows (default: all of them). */
  userPorts?: readonly number[];
  /** Initial general registers, e.g. a loop count in RCX. */
  registers?: { rax?: bigint; rbx?: bigint; rcx?: bigint; rdx?: bigint; rsi?: bigint; rdi?: bigint };
}

export const DEFAULT_ENTRY = 0x10000;
const GDT = 0x500;
/** Followed by its PDPT and four page directories (x86-paging.ts). */
const PML4 = 0x1000;
const TSS = 0x7000;
const TSS_SIZE = 104;
const IO_BITMAP_BYTES = 65536 / 8;
/** The bitmap ends with one all-ones byte (Intel SDM vol. 1, 19.5.2). */
const TSS_LIMIT = TSS_SIZE + IO_BITMAP_BYTES;

const Selector = { KERNEL_CODE: 0x08, KERNEL_DATA: 0x10, USER_DATA: 0x18 | 3, USER_CODE: 0x20 | 3, TSS: 0x28 } as const;

const CR0_PE = 1n, CR0_MP = 2n, CR0_ET = 0x10n, CR0_NE = 0x20n, CR0_WP = 0x10000n, CR0_PG = 0x8000_0000n;
const CR4_PAE = 0x20n, CR4_OSFXSR = 0x200n, CR4_OSXMMEXCPT = 0x400n;
const EFER_SCE = 1n, EFER_LME = 0x100n, EFER_LMA = 0x400n;

function writeGdt(memory: GuestMemory, segments: Segment[]): void {
  memory.writeU64(GDT, 0n);
  segments.forEach((segment, i) => memory.writeU64(GDT + (i + 1) * 8, gdtEntry(segment)));
  const [low, high] = tssDescriptor(TSS, TSS_LIMIT);
  memory.writeU64(GDT + Selector.TSS, low);
  memory.writeU64(GDT + Selector.TSS + 8, high);
}

/** A 64-bit TSS whose I/O bitmap lets CPL3 code use `ports` (PVM ignores RFLAGS.IOPL). */
function writeTss(memory: GuestMemory, ports: readonly number[] | undefined, stackTop: number): void {
  memory.fill(TSS, TSS_LIMIT + 1, 0);
  memory.writeU64(TSS + 4, BigInt(stackTop)); // RSP0, for interrupts taken at CPL3
  memory.writeU16(TSS + 0x66, TSS_SIZE); // I/O map base
  if (ports !== undefined) {
    memory.fill(TSS + TSS_SIZE, IO_BITMAP_BYTES, 0xff);
    for (const port of ports) {
      const at = TSS + TSS_SIZE + (port >> 3);
      memory.writeU8(at, memory.readU8(at) & ~(1 << (port & 7)));
    }
  }
  memory.writeU8(TSS + TSS_LIMIT, 0xff);
}

function longModeRegisters(user: boolean): Partial<SpecialRegisters> {
  const dpl = user ? 3 : 0;
  const code = flatSegment(user ? Selector.USER_CODE : Selector.KERNEL_CODE, true, { long: true, dpl });
  const data = flatSegment(user ? Selector.USER_DATA : Selector.KERNEL_DATA, false, { dpl });
  const tr: Segment = {
    base: BigInt(TSS), limit: TSS_LIMIT, selector: Selector.TSS, type: 0xb, present: 1, dpl: 0,
    db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0,
  };
  return {
    cs: code, ds: data, es: data, fs: data, gs: data, ss: data, tr,
    gdt: { base: BigInt(GDT), limit: Selector.TSS + 16 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
    cr3: BigInt(PML4),
    cr4: CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
    efer: EFER_SCE | EFER_LME | EFER_LMA,
  };
}

export class GuestProgramError extends Error {
  override name = "GuestProgramError";
}

/** Writes `program` and the structures its mode needs; returns the vCPU's initial state. */
export function loadFlatProgram(memory: GuestMemory, program: FlatProgram): CpuState {
  const entry = program.entry ?? DEFAULT_ENTRY;
  const mode = program.mode ?? "long64";
  const code = Uint8Array.from(program.code);
  if (code.length === 0) throw new GuestProgramError("guest program is empty");
  if (!memory.isBacked(entry, code.length)) {
    throw new GuestProgramError(
      `guest program (${code.length} bytes at 0x${entry.toString(16)}) does not fit in guest RAM`,
    );
  }
  const registers = {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n,
    ...program.registers,
    rip: BigInt(entry),
    rsp: BigInt(entry),
    rflags: 2n,
  };
  if (mode === "real16") {
    if (entry > 0xffff) throw new GuestProgramError(`a real-mode entry must be below 64 KiB, got 0x${entry.toString(16)}`);
    memory.write(entry, code);
    const cs = realModeSegment(0, true);
    const ds = realModeSegment(0, false);
    return { registers, specialRegisters: { cs, ds, es: ds, ss: ds, fs: ds, gs: ds } };
  }
  if (entry < 0x10000 || !memory.isBacked(0, 0x10000)) {
    throw new GuestProgramError("a 64-bit guest program needs RAM at 0-64 KiB for its tables and an entry at or above 0x10000");
  }
  const user = mode === "user64";
  // User-accessible in every mode: kernel-mode guests of the kit may drop to CPL3 themselves.
  writeIdentityPageTables(memory, PML4, { user: true });
  const kernel = [flatSegment(Selector.KERNEL_CODE, true, { long: true }), flatSegment(Selector.KERNEL_DATA, false)];
  const userSegments = [
    flatSegment(Selector.USER_DATA, false, { dpl: 3 }),
    flatSegment(Selector.USER_CODE, true, { long: true, dpl: 3 }),
  ];
  writeGdt(memory, [...kernel, ...userSegments]);
  writeTss(memory, user ? program.userPorts : undefined, entry - 0x800);
  memory.write(entry, code);
  return { registers, specialRegisters: longModeRegisters(user) };
}
