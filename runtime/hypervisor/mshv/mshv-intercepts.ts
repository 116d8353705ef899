/**
 * Turns the 256-byte hv_message MSHV_RUN_VP returns into the neutral Exit, and completes
 * it the way Microsoft's hypervisor requires: nothing is emulated for the VMM, so the
 * backend itself advances RIP past port I/O, MSR and CPUID instructions, decodes the
 * instruction of a GPA intercept with the shared x86 emulator (../x86/mmio-emulator.ts,
 * one access per exit: a read-modify-write becomes a read exit, then a write exit), and
 * writes results into the guest's registers. Register reads and writes go through the VP
 * register page (hv_vp_register_page, mapped from the VP fd), whose dirty bits make the
 * hypervisor load what we changed on the next MSHV_RUN_VP.
 *
 * Every value in a message is treated as untrusted: sizes, counts and types are checked,
 * and a message that does not fit becomes an internal-error exit naming what was wrong.
 */
import type { GuestMemory } from "../../../memory/guest-memory.js";
import { type Exit, ExitKind } from "../hypervisor.js";
import type { CpuidEntry } from "../x86/cpu-state.js";
import {
  InterceptAccess, IoAccessInfo, MessageType, Offset, RegisterClass, SegmentAttribute, Size,
} from "./mshv-abi.js";
import {
  type CodeSize, isStringInstruction, type MmioAccess, SteppedMmioInstruction, type X86State, X86DecodeError,
} from "../x86/mmio-emulator.js";
import { linearToPhysical, PageWalkError, type PagingRegisters } from "../x86/page-walk.js";

const PAYLOAD = Offset.hv_message.payload;
const HEADER = Offset.hv_x64_intercept_message_header;
const IO = Offset.hv_x64_io_port_intercept_message;
const MEMORY = Offset.hv_x64_memory_intercept_message;
const MSR = Offset.hv_x64_msr_intercept_message;
const CPUID = Offset.hv_x64_cpuid_intercept_message;
const EXCEPTION = Offset.hv_x64_exception_intercept_message;
const PAGE = Offset.hv_vp_register_page;
const MAX_PAYLOAD = Size.hv_message - Size.hv_message_header;
const KVM_CPUID_FLAG_SIGNIFICANT_INDEX = 1;
const RAX = 0;
const RCX = 1;
const RDX = 2;
const RBX = 3;
const RSI = 6;
const RDI = 7;
const MASK64 = 0xffff_ffff_ffff_ffffn;

/** The VP register page (hv_vp_register_page): general registers, RIP, RFLAGS, dirty bits. */
export class RegisterPage {
  constructor(readonly view: DataView) {
    if (view.byteLength < Size.hv_vp_register_page) {
      throw new RangeError(`a VP register page has ${Size.hv_vp_register_page} bytes, got ${view.byteLength}`);
    }
  }

  /** General register by x86 encoding number (0 rax, 1 rcx, ... 15 r15). */
  gpr(register: number): bigint {
    return this.view.getBigUint64(PAGE.rax + 8 * register, true);
  }

  setGpr(register: number, value: bigint): void {
    this.view.setBigUint64(PAGE.rax + 8 * register, value & MASK64, true);
    this.markDirty(RegisterClass.GENERAL);
  }

  get rip(): bigint {
    return this.view.getBigUint64(PAGE.rip, true);
  }

  set rip(value: bigint) {
    this.view.setBigUint64(PAGE.rip, value & MASK64, true);
    this.markDirty(RegisterClass.IP);
  }

  get rflags(): bigint {
    return this.view.getBigUint64(PAGE.rflags, true);
  }

  set rflags(value: bigint) {
    this.view.setBigUint64(PAGE.rflags, value & MASK64, true);
    this.markDirty(RegisterClass.FLAGS);
  }

  /** CR0, CR3, CR4 and EFER: what a page walk needs. */
  paging(): PagingRegisters {
    const v = this.view;
    return {
      cr0: v.getBigUint64(PAGE.cr0, true), cr3: v.getBigUint64(PAGE.cr3, true), cr4: v.getBigUint64(PAGE.cr4, true),
      efer: v.getBigUint64(PAGE.efer, true),
    };
  }

  get dirty(): number {
    return this.view.getUint32(PAGE.dirty, true);
  }

  private markDirty(registerClass: number): void {
    this.view.setUint32(PAGE.dirty, this.dirty | (1 << registerClass), true);
  }
}

/**
 * What `run()` decoded: an exit for the VMM, a CPUID the backend answers itself, or an
 * intercept the backend has already completed (a REP string I/O with a zero count).
 */
export const Decoded = { EXIT: 0, CPUID: 1, HANDLED: 2 } as const;
export type Decoded = (typeof Decoded)[keyof typeof Decoded];

/** How the current exit completes. Preallocated per vCPU and reused. */
export const Completion = { NONE: 0, ADVANCE: 1, IO_IN: 2, MMIO: 3, MSR_READ: 4, CPUID: 5, STRING_IO: 6 } as const;

export interface PendingCompletion {
  action: number;
  /** RIP after the intercepted instruction. */
  nextRip: bigint;
  /** io-in: access width. */
  size: number;
  /** GPA intercept: the instruction, emulated an access at a time. */
  mmio: SteppedMmioInstruction;
  /** GPA intercept: the intercepted GPA, and the address (in the instruction's terms) of its first access. */
  gpa: number;
  firstAddress: bigint;
  /** GPA intercept: the exit being completed is a read (its answer goes to the emulator). */
  mmioRead: boolean;
  /** GPA intercept: the instruction's next access, for `run()` to return without entering the guest. */
  followUp: MmioAccess | undefined;
  /** GPA intercept: why the instruction cannot go on (becomes an internal-error exit). */
  followUpError: string;
  /** String I/O: the guest RAM the elements of this exit come from or go to (`stringData()`). */
  stringData: Uint8Array | undefined;
  /** String I/O: elements this exit moves, whether REP counts them in RCX, the address-size mask, RSI or RDI. */
  stringElements: number;
  stringRep: boolean;
  stringAddressMask: bigint;
  stringRegister: number;
  /** CPUID intercept: leaf, subleaf and the hypervisor's default answer (EAX, EBX, ECX, EDX). */
  leaf: number;
  subleaf: number;
  defaults: [number, number, number, number];
}

export function newPendingCompletion(): PendingCompletion {
  return {
    action: Completion.NONE, nextRip: 0n, size: 0, mmio: new SteppedMmioInstruction(), gpa: 0, firstAddress: 0n,
    mmioRead: false, followUp: undefined, followUpError: "", stringData: undefined, stringElements: 0, stringRep: false,
    stringAddressMask: 0n, stringRegister: 0, leaf: 0, subleaf: 0, defaults: [0, 0, 0, 0],
  };
}

function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

function fatal(exit: Exit, kind: ExitKind, detail: string): Decoded {
  exit.kind = kind;
  exit.address = 0;
  exit.size = 0;
  exit.count = 0;
  exit.data = 0;
  exit.dataHigh = 0;
  exit.detail = detail;
  return Decoded.EXIT;
}

function setData(exit: Exit, value: bigint, size: number): void {
  const masked = size === 8 ? value & MASK64 : value & ((1n << BigInt(8 * size)) - 1n);
  exit.data = Number(masked & 0xffff_ffffn);
  exit.dataHigh = Number(masked >> 32n);
}

/**
 * Decodes the hv_message in one fixed buffer (the vCPU's MSHV_RUN_VP buffer) into the
 * neutral exit, reading guest registers from the VP register page where the message does
 * not carry them. One per vCPU: nothing is allocated per message, except by the x86
 * emulator for a GPA intercept (its registers are BigInts).
 */
export class InterceptDecoder {
  private readonly instructionBytes: Uint8Array;

  /** `memory` is guest RAM, for string I/O (without it string I/O is refused). */
  constructor(
    private readonly message: DataView,
    private readonly registers: RegisterPage,
    private readonly memory?: GuestMemory,
  ) {
    if (message.byteLength < Size.hv_message) throw new RangeError(`an hv_message has ${Size.hv_message} bytes, got ${message.byteLength}`);
    this.instructionBytes = new Uint8Array(message.buffer, message.byteOffset + PAYLOAD + MEMORY.instruction_bytes, 16);
  }

  private u8(offset: number): number {
    return this.message.getUint8(PAYLOAD + offset);
  }

  private u16(offset: number): number {
    return this.message.getUint16(PAYLOAD + offset, true);
  }

  private u32(offset: number): number {
    return this.message.getUint32(PAYLOAD + offset, true);
  }

  private u64(offset: number): bigint {
    return this.message.getBigUint64(PAYLOAD + offset, true);
  }

  private rip(): bigint {
    return this.u64(HEADER.rip);
  }

  private instructionLength(): number {
    return this.u8(HEADER.instruction_length) & 0xf;
  }

  private access(): number {
    return this.u8(HEADER.intercept_access_type);
  }

  /** False (and `exit` made an internal error) when the payload is too short or too long for its type. */
  private fits(exit: Exit, bytes: number, name: string): boolean {
    const payloadSize = this.message.getUint8(Offset.hv_message_header.payload_size);
    if (payloadSize >= bytes && payloadSize <= MAX_PAYLOAD) return true;
    fatal(exit, ExitKind.InternalError, `malformed ${name}: payload_size ${payloadSize}, expected ${bytes} to ${MAX_PAYLOAD}`);
    return false;
  }

  /**
   * INS/OUTS: the elements up to the end of the page the string is in (or all of them),
   * through the guest's page tables to guest RAM, whose bytes `stringData()` then is.
   * Completion steps RSI or RDI (and RCX with REP) and leaves RIP on the instruction while
   * elements remain, so the guest executes it again for the rest, as KVM does.
   */
  private decodeStringIo(exit: Exit, pending: PendingCompletion, port: number, size: number, write: boolean, rep: boolean): Decoded {
    const where = `string I/O on port ${hex(port)} at rip ${hex(this.rip())}`;
    if (this.memory === undefined) return fatal(exit, ExitKind.InternalError, `${where}: no guest memory to move it through`);
    const count = Math.min(this.u8(IO.instruction_byte_count), 16);
    for (let at = 0; at < count; at++) {
      const b = this.u8(IO.instruction_bytes + at);
      if (b === 0x67 || b === 0x26 || b === 0x2e || b === 0x36 || b === 0x3e || b === 0x64 || b === 0x65) {
        return fatal(exit, ExitKind.InternalError, `${where}: address-size and segment prefixes on string I/O are not handled yet`);
      }
      if (b !== 0x66 && b !== 0xf2 && b !== 0xf3) break;
    }
    if (this.u64(HEADER.rflags) & 0x400n) return fatal(exit, ExitKind.InternalError, `${where}: string I/O with RFLAGS.DF set is not handled yet`);
    const attributes = this.u16(HEADER.cs_segment + Offset.hv_x64_segment_register.attributes);
    const long = (attributes & SegmentAttribute.LONG) !== 0;
    const addressMask = long ? MASK64 : attributes & SegmentAttribute.DEFAULT_BIG ? 0xffff_ffffn : 0xffffn;
    const registers = this.registers;
    const remaining = rep ? Number(registers.gpr(RCX) & addressMask) : 1;
    pending.nextRip = this.rip() + BigInt(this.instructionLength());
    if (remaining === 0) {
      registers.rip = pending.nextRip;
      return Decoded.HANDLED;
    }
    // OUTS reads DS:RSI, INS writes ES:RDI; 64-bit code has no segment bases for them.
    const register = write ? RSI : RDI;
    const segmentBase = long ? 0n : this.u64((write ? IO.ds_segment : IO.es_segment) + Offset.hv_x64_segment_register.base);
    const linear = (segmentBase + (registers.gpr(register) & addressMask)) & (long ? MASK64 : 0xffff_ffffn);
    const toPageEnd = Math.floor((0x1000 - Number(linear & 0xfffn)) / size);
    if (toPageEnd === 0) return fatal(exit, ExitKind.InternalError, `${where}: an element at ${hex(linear)} crosses a page, which is not handled yet`);
    const elements = Math.min(remaining, toPageEnd);
    let gpa: number;
    try {
      gpa = linearToPhysical(this.memory, registers.paging(), linear);
    } catch (error) {
      if (!(error instanceof PageWalkError)) throw error;
      return fatal(exit, ExitKind.InternalError, `${where}: ${error.message}`);
    }
    if (!this.memory.isBacked(gpa, elements * size)) {
      return fatal(exit, ExitKind.InternalError, `${where}: guest-physical ${hex(gpa)} (+${elements * size} bytes) is not RAM`);
    }
    const data = this.memory.slice(gpa, elements * size);
    exit.kind = write ? ExitKind.IoOut : ExitKind.IoIn;
    exit.address = port;
    exit.size = size;
    exit.count = elements;
    exit.dataHigh = 0;
    // One element travels as a plain access (as KVM reports it): its value in `data`, an
    // io-in's answer through completeRead.
    exit.data = write && elements === 1 ? littleEndian(data) : 0;
    pending.action = Completion.STRING_IO;
    pending.stringData = data;
    pending.stringElements = elements;
    pending.stringRep = rep;
    pending.stringAddressMask = addressMask;
    pending.stringRegister = register;
    pending.size = size;
    return Decoded.EXIT;
  }

  decode(exit: Exit, pending: PendingCompletion): Decoded {
    pending.action = Completion.NONE;
    pending.followUp = undefined;
    pending.stringData = undefined;
    exit.count = 1;
    exit.detail = "";
    const type = this.message.getUint32(Offset.hv_message_header.message_type, true);
    const registers = this.registers;
    switch (type) {
      case MessageType.X64_IO_PORT_INTERCEPT: {
        if (!this.fits(exit, Size.hv_x64_io_port_intercept_message, "I/O port intercept")) return Decoded.EXIT;
        const info = this.u8(IO.access_info);
        const size = info & IoAccessInfo.SIZE_MASK;
        const port = this.u16(IO.port_number);
        if (size !== 1 && size !== 2 && size !== 4) return fatal(exit, ExitKind.InternalError, `I/O port intercept with access size ${size}`);
        if (this.instructionLength() === 0) return fatal(exit, ExitKind.InternalError, `I/O port intercept at ${hex(this.rip())} without an instruction length`);
        const write = this.access() === InterceptAccess.WRITE;
        if (info & IoAccessInfo.STRING_OP) return this.decodeStringIo(exit, pending, port, size, write, (info & IoAccessInfo.REP_PREFIX) !== 0);
        exit.kind = write ? ExitKind.IoOut : ExitKind.IoIn;
        exit.address = port;
        exit.size = size;
        if (write) setData(exit, this.u64(IO.rax), size);
        else exit.data = exit.dataHigh = 0;
        pending.action = write ? Completion.ADVANCE : Completion.IO_IN;
        pending.size = size;
        pending.nextRip = this.rip() + BigInt(this.instructionLength());
        return Decoded.EXIT;
      }
      case MessageType.UNMAPPED_GPA:
      case MessageType.GPA_INTERCEPT: {
        if (!this.fits(exit, Size.hv_x64_memory_intercept_message, "memory intercept")) return Decoded.EXIT;
        const gpa = this.u64(MEMORY.guest_physical_address);
        if (this.access() === InterceptAccess.EXECUTE) {
          return fatal(exit, ExitKind.InternalError, `the guest executes from GPA ${hex(gpa)}, which is not RAM (rip ${hex(this.rip())})`);
        }
        const count = Math.min(this.u8(MEMORY.instruction_byte_count), 16);
        const attributes = this.u16(HEADER.cs_segment + Offset.hv_x64_segment_register.attributes);
        const codeSize: CodeSize = attributes & SegmentAttribute.LONG ? 64 : attributes & SegmentAttribute.DEFAULT_BIG ? 32 : 16;
        const code = this.instructionBytes.subarray(0, count);
        const where = `MMIO access to ${hex(gpa)} at rip ${hex(this.rip())}`;
        const state: X86State = { gpr: [], rip: this.rip(), rflags: this.u64(HEADER.rflags) };
        for (let r = 0; r < 16; r++) state.gpr.push(registers.gpr(r));
        let access: MmioAccess | undefined;
        try {
          if (isStringInstruction(code, codeSize)) {
            return fatal(exit, ExitKind.InternalError,
              `${where}: a string move (MOVS, STOS, LODS) touches memory by linear address, and the mshv backend does not walk guest page tables yet`);
          }
          pending.mmio.begin(code, state, codeSize);
          access = pending.mmio.next();
        } catch (error) {
          if (!(error instanceof X86DecodeError)) throw error;
          return fatal(exit, ExitKind.InternalError, `${where}: ${error.message} (bytes ${hexBytes(code)})`);
        }
        if (access === undefined) return fatal(exit, ExitKind.InternalError, `${where}: the instruction (bytes ${hexBytes(code)}) makes no memory access`);
        if (this.access() === InterceptAccess.READ && access.write) {
          return fatal(exit, ExitKind.InternalError, `${where}: the hypervisor reports a read, the instruction (bytes ${hexBytes(code)}) stores first`);
        }
        pending.action = Completion.MMIO;
        pending.gpa = Number(gpa);
        pending.firstAddress = access.address;
        setMmioExit(exit, pending, access);
        return Decoded.EXIT;
      }
      case MessageType.X64_MSR_INTERCEPT: {
        if (!this.fits(exit, Size.hv_x64_msr_intercept_message, "MSR intercept")) return Decoded.EXIT;
        const write = this.access() === InterceptAccess.WRITE;
        exit.kind = write ? ExitKind.MsrWrite : ExitKind.MsrRead;
        exit.address = this.u32(MSR.msr_number);
        exit.size = 8;
        exit.data = write ? Number(this.u64(MSR.rax) & 0xffff_ffffn) : 0;
        exit.dataHigh = write ? Number(this.u64(MSR.rdx) & 0xffff_ffffn) : 0;
        pending.action = write ? Completion.ADVANCE : Completion.MSR_READ;
        pending.nextRip = this.rip() + BigInt(this.instructionLength() || 2); // RDMSR and WRMSR are 2 bytes
        return Decoded.EXIT;
      }
      case MessageType.X64_CPUID_INTERCEPT: {
        if (!this.fits(exit, Size.hv_x64_cpuid_intercept_message, "CPUID intercept")) return Decoded.EXIT;
        pending.action = Completion.CPUID;
        pending.leaf = Number(this.u64(CPUID.rax) & 0xffff_ffffn);
        pending.subleaf = Number(this.u64(CPUID.rcx) & 0xffff_ffffn);
        pending.defaults = [
          Number(this.u64(CPUID.default_result_rax) & 0xffff_ffffn), Number(this.u64(CPUID.default_result_rbx) & 0xffff_ffffn),
          Number(this.u64(CPUID.default_result_rcx) & 0xffff_ffffn), Number(this.u64(CPUID.default_result_rdx) & 0xffff_ffffn),
        ];
        pending.nextRip = this.rip() + BigInt(this.instructionLength() || 2); // CPUID is 2 bytes
        return Decoded.CPUID;
      }
      case MessageType.X64_HALT:
        if (!this.fits(exit, Size.hv_x64_halt_message, "halt message")) return Decoded.EXIT;
        fatal(exit, ExitKind.Hlt, "");
        return Decoded.EXIT;
      case MessageType.UNRECOVERABLE_EXCEPTION:
        if (!this.fits(exit, Size.hv_x64_unrecoverable_exception_message, "unrecoverable exception message")) return Decoded.EXIT;
        return fatal(exit, ExitKind.Shutdown, `unrecoverable exception (triple fault) at rip ${hex(this.rip())}`);
      case MessageType.X64_EXCEPTION_INTERCEPT: {
        if (!this.fits(exit, Size.hv_x64_exception_intercept_message, "exception intercept")) return Decoded.EXIT;
        const vector = this.u16(EXCEPTION.exception_vector);
        if (vector === 1 || vector === 3) return fatal(exit, ExitKind.Debug, `debug exception ${vector} at rip ${hex(this.rip())}`);
        return fatal(exit, ExitKind.InternalError,
          `intercepted exception ${vector} (error code ${hex(this.u32(EXCEPTION.error_code))}) at rip ${hex(this.rip())}`);
      }
      case MessageType.INVALID_VP_REGISTER_VALUE:
        return fatal(exit, ExitKind.FailEntry, "the hypervisor refused the VP's register state (HVMSG_INVALID_VP_REGISTER_VALUE)");
      case MessageType.UNSUPPORTED_FEATURE:
        return fatal(exit, ExitKind.InternalError, "the guest used a feature the hypervisor does not support (HVMSG_UNSUPPORTED_FEATURE)");
      default:
        return fatal(exit, ExitKind.Unknown, `hv_message type ${hex(type)}`);
    }
  }
}

function littleEndian(bytes: Uint8Array): number {
  let value = 0;
  for (let i = bytes.length - 1; i >= 0; i--) value = value * 256 + bytes[i];
  return value;
}

function hexBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** The exit for one access of a GPA intercept's instruction: every access is at the intercepted GPA. */
function setMmioExit(exit: Exit, pending: PendingCompletion, access: MmioAccess): void {
  exit.kind = access.write ? ExitKind.MmioWrite : ExitKind.MmioRead;
  exit.address = pending.gpa;
  exit.size = access.size;
  exit.count = 1;
  exit.detail = "";
  if (access.write) setData(exit, access.value, access.size);
  else exit.data = exit.dataHigh = 0;
  pending.mmioRead = !access.write;
}

/**
 * After a GPA intercept's access completed: the instruction's next access, as the exit
 * `run()` returns without entering the guest. False when there is none.
 */
export function takeFollowUp(exit: Exit, pending: PendingCompletion): boolean {
  if (pending.action !== Completion.MMIO) return false;
  if (pending.followUpError !== "") {
    fatal(exit, ExitKind.InternalError, pending.followUpError);
    pending.followUpError = "";
    pending.action = Completion.NONE;
    return true;
  }
  const access = pending.followUp;
  if (access === undefined) return false;
  pending.followUp = undefined;
  setMmioExit(exit, pending, access);
  return true;
}

/** Feeds the completed access to the emulator; stages the next access, or writes the registers back when done. */
function completeMmio(pending: PendingCompletion, registers: RegisterPage, value: bigint): void {
  const mmio = pending.mmio;
  if (pending.mmioRead) mmio.answer(value);
  const next = mmio.next();
  if (next !== undefined) {
    // Only the intercepted GPA is known: an access elsewhere would need the guest's page tables.
    if (next.address !== pending.firstAddress) {
      pending.followUpError = `MMIO access to ${hex(pending.gpa)}: the instruction goes on to address ${hex(next.address)}, ` +
        "which the mshv backend cannot translate without walking guest page tables";
    } else {
      pending.followUp = next;
    }
    return;
  }
  const after = mmio.state;
  for (let r = 0; r < 16; r++) if (after.gpr[r] !== registers.gpr(r)) registers.setGpr(r, after.gpr[r]);
  if (after.rflags !== registers.rflags) registers.rflags = after.rflags;
  registers.rip = after.rip;
  pending.action = Completion.NONE;
}

/**
 * Completes the pending exit in the guest's registers. `low`/`high` answer a read (io-in,
 * mmio-read, msr-read) and are ignored otherwise. Leaves nothing pending, except when a GPA
 * intercept's instruction has another access to make (`takeFollowUp`).
 */
export function completeIntercept(pending: PendingCompletion, registers: RegisterPage, low: number, high: number): void {
  const value = (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
  switch (pending.action) {
    case Completion.NONE:
      return;
    case Completion.IO_IN: {
      // IN to EAX zero-extends to RAX like any 32-bit write; AL and AX merge.
      const mask = (1n << BigInt(8 * pending.size)) - 1n;
      registers.setGpr(RAX, pending.size === 4 ? value & mask : (registers.gpr(RAX) & ~mask) | (value & mask));
      break;
    }
    case Completion.MMIO:
      completeMmio(pending, registers, value);
      return;
    case Completion.STRING_IO: {
      // Registers step at the address size: 32 bits zero-extend, 16 bits keep bits 16..63.
      const m = pending.stringAddressMask;
      const data = pending.stringData!;
      if (pending.stringRegister === RDI && pending.stringElements === 1) {
        for (let i = 0; i < data.length; i++) data[i] = Number((value >> BigInt(8 * i)) & 0xffn); // completeRead's answer
      }
      const assign = (r: number, v: bigint) => registers.setGpr(r, m === 0xffffn ? (registers.gpr(r) & ~m) | (v & m) : v & m);
      assign(pending.stringRegister, registers.gpr(pending.stringRegister) + BigInt(pending.stringElements * pending.size));
      pending.stringData = undefined;
      if (pending.stringRep) {
        const left = ((registers.gpr(RCX) & m) - BigInt(pending.stringElements)) & m;
        assign(RCX, left);
        if (left !== 0n) {
          pending.action = Completion.NONE; // RIP stays: the guest executes the instruction again for the rest
          return;
        }
      }
      break;
    }
    case Completion.MSR_READ:
      registers.setGpr(RAX, value & 0xffff_ffffn);
      registers.setGpr(RDX, value >> 32n);
      break;
  }
  registers.rip = pending.nextRip;
  pending.action = Completion.NONE;
}

/** Answers a CPUID intercept from `table` (or the hypervisor's defaults) and advances RIP. */
export function answerCpuid(pending: PendingCompletion, table: readonly CpuidEntry[], registers: RegisterPage): void {
  const entry = table.find((e) => e.function === pending.leaf && ((e.flags & KVM_CPUID_FLAG_SIGNIFICANT_INDEX) === 0 || e.index === pending.subleaf));
  const [eax, ebx, ecx, edx] = entry ? [entry.eax, entry.ebx, entry.ecx, entry.edx] : pending.defaults;
  registers.setGpr(RAX, BigInt(eax >>> 0));
  registers.setGpr(RBX, BigInt(ebx >>> 0));
  registers.setGpr(RCX, BigInt(ecx >>> 0));
  registers.setGpr(RDX, BigInt(edx >>> 0));
  registers.rip = pending.nextRip;
  pending.action = Completion.NONE;
}
