/**
 * Decodes and emulates the x86 instructions that touch MMIO: what a backend whose
 * hypervisor reports only "guest touched GPA X" (Microsoft's /dev/mshv memory intercept) must
 * do itself, and a fallback where KVM's own emulator gives up. KVM, which decodes these in the
 * kernel, is the oracle: test/mmio-emulator.test.ts runs generated instructions on KVM, in
 * 64-bit long mode, 32-bit protected mode and 16-bit real mode, and checks that this module
 * predicts the same accesses and the same registers afterwards.
 *
 * Covered, with legacy (66, 67, F0, F2, F3, segment) and REX prefixes and every ModRM/SIB/
 * displacement form including RIP-relative, in 64-bit, 32-bit and 16-bit code (the code
 * segment's default size: operand and address sizes follow it and the 66/67 prefixes; no
 * REX outside 64-bit code; 16-bit ModRM addressing with 67 in 32-bit code or by default in
 * 16-bit code):
 *   MOV 88/89/8A/8B, C6/C7 /0, A0-A3 (moffs); MOVZX 0F B6/B7; MOVSX 0F BE/BF; MOVSXD 63;
 *   ALU 00-3B (ADD OR ADC SBB AND SUB XOR CMP, both directions), 80/81/83 group 1;
 *   TEST 84/85, F6/F7 /0; NOT/NEG F6/F7 /2 /3; INC/DEC FE/FF /0 /1; XCHG 86/87;
 *   MOVS A4/A5, STOS AA/AB, LODS AC/AD, with REP.
 * Addresses are offsets in their segment: segment bases are not applied (flat code has
 * none; a caller that knows the GPA of the access, as MSHV's intercept does, maps them).
 *
 * Two ways in: `emulateMmioInstruction` runs the whole instruction against a memory that
 * answers at once; `SteppedMmioInstruction` hands out one access at a time (decode →
 * access → complete with the read value), for a backend whose exits carry one access each.
 */

/** The code segment's default operand and address size, in bits (CS.L, CS.D, CR0.PE). */
export type CodeSize = 16 | 32 | 64;

export class X86DecodeError extends Error {
  override name = "X86DecodeError";
}

/** General registers in encoding order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15). */
export interface X86State {
  gpr: bigint[];
  rip: bigint;
  rflags: bigint;
}

/** The memory an instruction touches: MMIO or RAM, the caller decides by address. */
export interface X86Memory {
  read(address: bigint, size: number): bigint;
  write(address: bigint, size: number, value: bigint): void;
}

const M64 = (1n << 64n) - 1n;
const FLAG = { CF: 1n, PF: 4n, AF: 0x10n, ZF: 0x40n, SF: 0x80n, DF: 0x400n, OF: 0x800n } as const;
const ARITH_FLAGS = FLAG.CF | FLAG.PF | FLAG.AF | FLAG.ZF | FLAG.SF | FLAG.OF;

function mask(size: number): bigint {
  return (1n << BigInt(size * 8)) - 1n;
}

function signExtend(value: bigint, size: number): bigint {
  const bits = BigInt(size * 8);
  const sign = 1n << (bits - 1n);
  return ((value & mask(size)) ^ sign) - sign;
}

function parity(value: bigint): bigint {
  let v = Number(value & 0xffn);
  v ^= v >> 4;
  v ^= v >> 2;
  v ^= v >> 1;
  return (v & 1) === 0 ? FLAG.PF : 0n;
}

/** ZF, SF and PF of `result` (already masked to `size`). */
function resultFlags(result: bigint, size: number): bigint {
  let flags = parity(result);
  if (result === 0n) flags |= FLAG.ZF;
  if ((result >> BigInt(size * 8 - 1)) & 1n) flags |= FLAG.SF;
  return flags;
}

interface Decoded {
  opcode: number;
  /** 0x0f-prefixed opcode. */
  twoByte: boolean;
  operandSize: number;
  addressSize: number;
  rex: number;
  rep: boolean;
  modrm?: { mod: number; reg: number; rm: number };
  /** Effective address of the memory operand (after the whole instruction is decoded). */
  address: bigint;
  immediate: bigint;
  length: number;
}

const SEGMENT_PREFIXES = new Set([0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65]);
const MAX_LENGTH = 15;

/** Byte operations: their opcode's low bit clear (in the ranges that follow that rule). */
function isByteOpcode(opcode: number, twoByte: boolean): boolean {
  if (twoByte) return false;
  if (opcode < 0x40) return (opcode & 1) === 0;
  return [0x80, 0x84, 0x86, 0x88, 0x8a, 0xa0, 0xa2, 0xa4, 0xaa, 0xac, 0xc6, 0xf6, 0xfe].includes(opcode);
}

function hasModrm(opcode: number, twoByte: boolean): boolean {
  if (twoByte) return [0xb6, 0xb7, 0xbe, 0xbf].includes(opcode);
  if (opcode < 0x40) return (opcode & 7) < 4;
  return opcode === 0x63 || (opcode >= 0x80 && opcode <= 0x8b) || opcode === 0xc6 || opcode === 0xc7 ||
    opcode === 0xf6 || opcode === 0xf7 || opcode === 0xfe || opcode === 0xff;
}

/** Immediate bytes after ModRM/SIB/displacement. */
function immediateSize(d: Decoded): number {
  const { opcode, twoByte, operandSize } = d;
  if (twoByte) return 0;
  if (opcode === 0x80 || opcode === 0x83 || opcode === 0xc6) return 1;
  if (opcode === 0x81 || opcode === 0xc7) return Math.min(operandSize, 4);
  if ((opcode === 0xf6 || opcode === 0xf7) && d.modrm!.reg === 0) return opcode === 0xf6 ? 1 : Math.min(operandSize, 4);
  if (opcode >= 0xa0 && opcode <= 0xa3) return d.addressSize;
  return 0;
}

/** 16-bit ModRM addressing: the base and index registers of r/m 0-7 (-1: none). */
const ADDRESS16 = [[3, 6], [3, 7], [5, 6], [5, 7], [6, -1], [7, -1], [5, -1], [3, -1]] as const;

function decode(code: Uint8Array, state: X86State, codeSize: CodeSize): Decoded {
  let at = 0;
  const long = codeSize === 64;
  let operandSize = codeSize === 16 ? 2 : 4;
  let addressSize = codeSize / 8;
  let rex = 0;
  let rep = false;
  const byte = () => {
    if (at >= code.length || at >= MAX_LENGTH) throw new X86DecodeError(`instruction runs past ${Math.min(code.length, MAX_LENGTH)} bytes`);
    return code[at++];
  };
  let b = byte();
  for (;;) {
    if (b === 0x66) operandSize = codeSize === 16 ? 4 : 2;
    else if (b === 0x67) addressSize = codeSize === 32 ? 2 : 4;
    else if (b === 0xf3 || b === 0xf2) rep = true;
    else if (b === 0xf0 || SEGMENT_PREFIXES.has(b)) {
      // LOCK changes nothing seen from one vCPU; segment bases are zero in a flat guest.
    } else break;
    b = byte();
    rex = 0;
  }
  // Outside 64-bit code 40-4F are INC/DEC of a register, never an MMIO access.
  if (long && (b & 0xf0) === 0x40) {
    rex = b;
    b = byte();
  }
  if (rex & 8) operandSize = 8;
  let twoByte = false;
  if (b === 0x0f) {
    twoByte = true;
    b = byte();
  }
  const d: Decoded = { opcode: b, twoByte, operandSize, addressSize, rex, rep, address: 0n, immediate: 0n, length: 0 };
  if (!twoByte && !hasModrm(b, false) && !((b >= 0xa0 && b <= 0xa5) || (b >= 0xaa && b <= 0xad))) {
    throw new X86DecodeError(`opcode 0x${b.toString(16)} is not an MMIO instruction this emulator knows`);
  }
  if (!long && !twoByte && b === 0x63) throw new X86DecodeError("opcode 0x63 is ARPL outside 64-bit code, not an MMIO instruction this emulator knows");
  if (twoByte && !hasModrm(b, true)) throw new X86DecodeError(`opcode 0x0f 0x${b.toString(16)} is not an MMIO instruction this emulator knows`);
  if (isByteOpcode(b, twoByte)) d.operandSize = 1;
  let ripRelative = false;
  let displacement = 0n;
  let base = 0n;
  if (hasModrm(b, twoByte)) {
    const m = byte();
    const mod = m >> 6;
    const reg = ((m >> 3) & 7) | ((rex & 4) << 1);
    const rm = m & 7;
    if (mod === 3) throw new X86DecodeError("a register operand, not memory: no MMIO access");
    d.modrm = { mod, reg, rm: rm | ((rex & 1) << 3) };
    const addr = (n: number) => state.gpr[n] & mask(addressSize);
    if (addressSize === 2) {
      const [baseReg, indexReg] = ADDRESS16[rm];
      if (mod === 0 && rm === 6) {
        displacement = readLe(code, at, 2);
        at += 2;
      } else {
        base = addr(baseReg) + (indexReg < 0 ? 0n : addr(indexReg));
      }
      if (mod === 1) {
        displacement = signExtend(readLe(code, at, 1), 1);
        at += 1;
      } else if (mod === 2) {
        displacement = readLe(code, at, 2);
        at += 2;
      }
    } else if (rm === 4) {
      const sib = byte();
      const scale = 1n << BigInt(sib >> 6);
      const index = ((sib >> 3) & 7) | ((rex & 2) << 2);
      const baseReg = (sib & 7) | ((rex & 1) << 3);
      if (index !== 4) base += addr(index) * scale;
      if ((sib & 7) === 5 && mod === 0) {
        displacement = signExtend(readLe(code, at, 4), 4);
        at += 4;
      } else {
        base += addr(baseReg);
      }
    } else if (rm === 5 && mod === 0) {
      // RIP-relative in 64-bit code; an absolute disp32 in 32-bit code.
      ripRelative = long;
      displacement = signExtend(readLe(code, at, 4), 4);
      at += 4;
    } else {
      base += addr(d.modrm.rm);
    }
    if (addressSize === 2) {
      // 16-bit displacements were read with the table above.
    } else if (mod === 1) {
      displacement = signExtend(readLe(code, at, 1), 1);
      at += 1;
    } else if (mod === 2) {
      displacement = signExtend(readLe(code, at, 4), 4);
      at += 4;
    }
  }
  const immBytes = immediateSize(d);
  if (at + immBytes > Math.min(code.length, MAX_LENGTH)) throw new X86DecodeError("instruction runs past its bytes in its immediate");
  if (immBytes > 0) d.immediate = readLe(code, at, immBytes);
  at += immBytes;
  d.length = at;
  if (b >= 0xa0 && b <= 0xa3 && !twoByte) d.address = d.immediate;
  else if (ripRelative) d.address = state.rip + BigInt(at) + displacement;
  else d.address = base + displacement;
  d.address &= mask(addressSize);
  return d;
}

function readLe(code: Uint8Array, at: number, size: number): bigint {
  if (at + size > code.length) throw new X86DecodeError("instruction runs past its bytes");
  let value = 0n;
  for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(code[at + i]);
  return value;
}

/** A register operand of `size` bytes: AH..BH for 4..7 without REX, as the encoding says. */
function getRegister(state: X86State, n: number, size: number, rex: number): bigint {
  if (size === 1 && rex === 0 && n >= 4 && n < 8) return (state.gpr[n - 4] >> 8n) & 0xffn;
  return state.gpr[n] & mask(size);
}

function setRegister(state: X86State, n: number, size: number, rex: number, value: bigint): void {
  if (size === 1 && rex === 0 && n >= 4 && n < 8) {
    state.gpr[n - 4] = (state.gpr[n - 4] & ~0xff00n) | ((value & 0xffn) << 8n);
  } else if (size === 4) {
    state.gpr[n] = value & 0xffff_ffffn; // a 32-bit destination clears bits 32..63
  } else if (size === 8) {
    state.gpr[n] = value & M64;
  } else {
    state.gpr[n] = (state.gpr[n] & ~mask(size)) | (value & mask(size));
  }
}

/** ADD OR ADC SBB AND SUB XOR CMP by their group-1 index; sets the arithmetic flags. */
function alu(op: number, a: bigint, b: bigint, size: number, state: X86State): bigint {
  const m = mask(size);
  const carry = state.rflags & FLAG.CF ? 1n : 0n;
  const signBit = BigInt(size * 8 - 1);
  let result: bigint;
  let flags = 0n;
  switch (op) {
    case 0:
    case 2: {
      const c = op === 2 ? carry : 0n;
      const full = a + b + c;
      result = full & m;
      if (full > m) flags |= FLAG.CF;
      if ((((a ^ result) & (b ^ result)) >> signBit) & 1n) flags |= FLAG.OF;
      if ((a ^ b ^ result) & 0x10n) flags |= FLAG.AF;
      break;
    }
    case 3:
    case 5:
    case 7: {
      const c = op === 3 ? carry : 0n;
      result = (a - b - c) & m;
      if (a < b + c) flags |= FLAG.CF;
      if ((((a ^ b) & (a ^ result)) >> signBit) & 1n) flags |= FLAG.OF;
      if ((a ^ b ^ result) & 0x10n) flags |= FLAG.AF;
      break;
    }
    case 1:
      result = (a | b) & m;
      break;
    case 4:
      result = a & b & m;
      break;
    default:
      result = (a ^ b) & m;
  }
  state.rflags = (state.rflags & ~ARITH_FLAGS) | flags | resultFlags(result, size);
  return result;
}

function incDec(value: bigint, size: number, decrement: boolean, state: X86State): bigint {
  const m = mask(size);
  const result = (decrement ? value - 1n : value + 1n) & m;
  const signBit = BigInt(size * 8 - 1);
  let flags = state.rflags & FLAG.CF; // INC and DEC leave CF alone
  const one = 1n;
  if (decrement ? (((value ^ one) & (value ^ result)) >> signBit) & 1n : (((value ^ result) & (one ^ result)) >> signBit) & 1n) {
    flags |= FLAG.OF;
  }
  if ((value ^ one ^ result) & 0x10n) flags |= FLAG.AF;
  state.rflags = (state.rflags & ~ARITH_FLAGS) | flags | resultFlags(result, size);
  return result;
}

/**
 * Emulates the instruction at the start of `code` (at most 15 bytes are read) against
 * `memory`, updating `state` (registers, flags, RIP) as the CPU would. Throws X86DecodeError
 * for an instruction outside the covered set, before touching memory or state.
 */
export function emulateMmioInstruction(code: Uint8Array, state: X86State, memory: X86Memory, codeSize: CodeSize = 64): void {
  const d = decode(code, state, codeSize);
  const size = d.operandSize;
  const { opcode, rex } = d;
  const reg = d.modrm?.reg ?? 0;
  // Outside 64-bit code EIP is 32 bits (KVM's emulator keeps 16-bit code's EIP at 32 bits too).
  const nextRip = (state.rip + BigInt(d.length)) & (codeSize === 64 ? M64 : 0xffff_ffffn);
  if (d.twoByte) {
    // MOVZX / MOVSX: a byte or word from memory into a wider register.
    const from = opcode & 1 ? 2 : 1;
    const value = memory.read(d.address, from);
    const extended = opcode >= 0xbe ? signExtend(value, from) : value;
    setRegister(state, reg, size === 1 ? 4 : size, rex, extended & mask(size === 1 ? 4 : size));
  } else if (opcode < 0x40) {
    const op = opcode >> 3;
    const toMemory = (opcode & 2) === 0;
    const memoryValue = memory.read(d.address, size);
    const registerValue = getRegister(state, reg, size, rex);
    const result = toMemory ? alu(op, memoryValue, registerValue, size, state) : alu(op, registerValue, memoryValue, size, state);
    if (op !== 7) {
      if (toMemory) memory.write(d.address, size, result);
      else setRegister(state, reg, size, rex, result);
    }
  } else {
    switch (opcode) {
      case 0x63: {
        const value = memory.read(d.address, size === 2 ? 2 : 4);
        setRegister(state, reg, size, rex, size === 8 ? signExtend(value, 4) & M64 : value);
        break;
      }
      case 0x80:
      case 0x81:
      case 0x83: {
        const immSize = opcode === 0x81 ? Math.min(size, 4) : 1;
        const imm = signExtend(d.immediate, immSize) & mask(size);
        const result = alu(reg & 7, memory.read(d.address, size), imm, size, state);
        if ((reg & 7) !== 7) memory.write(d.address, size, result);
        break;
      }
      case 0x84:
      case 0x85:
        alu(4, memory.read(d.address, size), getRegister(state, reg, size, rex), size, state);
        break;
      case 0x86:
      case 0x87: {
        const value = memory.read(d.address, size);
        memory.write(d.address, size, getRegister(state, reg, size, rex));
        setRegister(state, reg, size, rex, value);
        break;
      }
      case 0x88:
      case 0x89:
        memory.write(d.address, size, getRegister(state, reg, size, rex));
        break;
      case 0x8a:
      case 0x8b:
        setRegister(state, reg, size, rex, memory.read(d.address, size));
        break;
      case 0xa0:
      case 0xa1:
        setRegister(state, 0, size, rex, memory.read(d.address, size));
        break;
      case 0xa2:
      case 0xa3:
        memory.write(d.address, size, getRegister(state, 0, size, rex));
        break;
      case 0xa4:
      case 0xa5:
      case 0xaa:
      case 0xab:
      case 0xac:
      case 0xad:
        if (!stringOperation(d, state, memory)) return; // more to do: RIP stays, the guest re-executes it
        break;
      case 0xc6:
      case 0xc7:
        if ((reg & 7) !== 0) throw new X86DecodeError(`C6/C7 /${reg & 7} is not MOV`);
        memory.write(d.address, size, signExtend(d.immediate, Math.min(size, 4)) & mask(size));
        break;
      case 0xf6:
      case 0xf7: {
        const sub = reg & 7;
        if (sub === 0) {
          alu(4, memory.read(d.address, size), signExtend(d.immediate, Math.min(size, 4)) & mask(size), size, state);
        } else if (sub === 2) {
          memory.write(d.address, size, ~memory.read(d.address, size) & mask(size));
        } else if (sub === 3) {
          const value = memory.read(d.address, size);
          const result = alu(5, 0n, value, size, state);
          state.rflags = value === 0n ? state.rflags & ~FLAG.CF : state.rflags | FLAG.CF;
          memory.write(d.address, size, result);
        } else {
          throw new X86DecodeError(`F6/F7 /${sub} (multiply or divide) is not emulated`);
        }
        break;
      }
      case 0xfe:
      case 0xff: {
        const sub = reg & 7;
        if (sub > 1) throw new X86DecodeError(`${opcode === 0xfe ? "FE" : "FF"} /${sub} is not INC or DEC`);
        memory.write(d.address, size, incDec(memory.read(d.address, size), size, sub === 1, state));
        break;
      }
      default:
        throw new X86DecodeError(`opcode 0x${opcode.toString(16)} is not an MMIO instruction this emulator knows`);
    }
  }
  state.rip = nextRip;
}

const RCX = 1;
const RSI = 6;
const RDI = 7;

/** Elements one call handles at most: a guest-chosen RCX must not hold the host thread. */
const MAX_STRING_ELEMENTS = 1024;

/**
 * MOVS, STOS, LODS: one element, or RCX of them with REP; RSI/RDI step by DF. Returns false
 * when RCX is not yet zero after MAX_STRING_ELEMENTS: the instruction is then left for the
 * guest to execute again, as the CPU does when it takes an interrupt inside a REP.
 */
function stringOperation(d: Decoded, state: X86State, memory: X86Memory): boolean {
  const size = d.operandSize;
  const addressMask = mask(d.addressSize);
  const step = (state.rflags & FLAG.DF ? -1n : 1n) * BigInt(size);
  // ESI/EDI/ECX are written at the address size: 32 bits clear bits 32..63 (as any 32-bit
  // register write), 16 bits leave bits 16..63 alone.
  const assign = (n: number, value: bigint) => {
    state.gpr[n] = d.addressSize === 2 ? (state.gpr[n] & ~0xffffn) | (value & 0xffffn) : value & addressMask;
  };
  const advance = (n: number) => assign(n, state.gpr[n] + step);
  let count = d.rep ? state.gpr[RCX] & addressMask : 1n;
  for (let done = 0; count > 0n; done++) {
    if (done === MAX_STRING_ELEMENTS) return false;
    const source = state.gpr[RSI] & addressMask;
    const destination = state.gpr[RDI] & addressMask;
    switch (d.opcode) {
      case 0xa4:
      case 0xa5:
        memory.write(destination, size, memory.read(source, size));
        advance(RSI);
        advance(RDI);
        break;
      case 0xaa:
      case 0xab:
        memory.write(destination, size, state.gpr[0] & mask(size));
        advance(RDI);
        break;
      default:
        setRegister(state, 0, size, d.rex, memory.read(source, size));
        advance(RSI);
    }
    count--;
    if (d.rep) assign(RCX, count);
  }
  return true;
}

/** Whether the instruction is a string operation (MOVS, STOS, LODS): its accesses walk memory. */
export function isStringInstruction(code: Uint8Array, codeSize: CodeSize): boolean {
  const d = decode(code, { gpr: new Array<bigint>(16).fill(0n), rip: 0n, rflags: 0n }, codeSize);
  return !d.twoByte && ((d.opcode >= 0xa4 && d.opcode <= 0xa5) || (d.opcode >= 0xaa && d.opcode <= 0xad));
}

/** One access an instruction makes: `value` is what a write stores (a read's is the answer). */
export interface MmioAccess {
  address: bigint;
  size: number;
  write: boolean;
  value: bigint;
}

/** Thrown through the emulator to stop it at the first access not yet performed. */
const STOP = Symbol("access not yet performed");

/**
 * One instruction emulated an access at a time (decode → access → complete with the read
 * value), for a backend that turns each access into an exit and learns a read's value only
 * later (MSHV). `next()` returns the access the instruction makes next: a write, which the
 * caller performs before calling `next()` again, or a read, which it answers with `answer()`.
 * When `next()` returns undefined the instruction has finished and `state` holds the
 * registers, flags and RIP after it. Each step replays the instruction from the start with
 * the accesses known so far (an MMIO instruction makes one or two, a string one more), so
 * the emulation stays the one `emulateMmioInstruction` does. One per vCPU, reused.
 */
export class SteppedMmioInstruction {
  private code: Uint8Array = new Uint8Array(0);
  private codeSize: CodeSize = 64;
  private start: X86State = { gpr: [], rip: 0n, rflags: 0n };
  private readonly performed: MmioAccess[] = [];
  private awaitingAnswer = false;
  private cursor = 0;
  private stoppedAt: MmioAccess | undefined;
  /** Registers after the instruction, once `next()` has returned undefined. */
  state: X86State = { gpr: [], rip: 0n, rflags: 0n };

  private readonly replay: X86Memory = {
    read: (address, size) => {
      const known = this.performed[this.cursor++];
      if (known !== undefined) return this.check(known, address, size, false).value;
      this.stoppedAt = { address, size, write: false, value: 0n };
      throw STOP;
    },
    write: (address, size, value) => {
      const known = this.performed[this.cursor++];
      if (known !== undefined) {
        this.check(known, address, size, true);
        return;
      }
      this.stoppedAt = { address, size, write: true, value: value & mask(size) };
      throw STOP;
    },
  };

  /** Takes the instruction at the start of `code`, executed with `state` in code of `codeSize`. */
  begin(code: Uint8Array, state: X86State, codeSize: CodeSize): void {
    this.code = code;
    this.codeSize = codeSize;
    this.start = { gpr: [...state.gpr], rip: state.rip, rflags: state.rflags };
    this.performed.length = 0;
    this.awaitingAnswer = false;
  }

  /** The next access, or undefined when the instruction is done. Throws X86DecodeError for one outside the covered set. */
  next(): MmioAccess | undefined {
    if (this.awaitingAnswer) throw new Error("SteppedMmioInstruction: next() before the read was answered");
    const state: X86State = { gpr: [...this.start.gpr], rip: this.start.rip, rflags: this.start.rflags };
    this.cursor = 0;
    this.stoppedAt = undefined;
    try {
      emulateMmioInstruction(this.code, state, this.replay, this.codeSize);
    } catch (error) {
      if (error !== STOP) throw error;
      const access = this.stoppedAt!;
      if (access.write) this.performed.push(access);
      else this.awaitingAnswer = true;
      return access;
    }
    this.state = state;
    return undefined;
  }

  /** The value the read `next()` returned was answered with. */
  answer(value: bigint): void {
    if (!this.awaitingAnswer) throw new Error("SteppedMmioInstruction: answer() without a read to answer");
    const read = this.stoppedAt!;
    this.performed.push({ ...read, value: value & mask(read.size) });
    this.awaitingAnswer = false;
  }

  /** The accesses performed so far, oldest first. */
  get accesses(): readonly MmioAccess[] {
    return this.performed;
  }

  private check(known: MmioAccess, address: bigint, size: number, write: boolean): MmioAccess {
    // Replaying from the same registers with the same answers repeats the same accesses;
    // anything else is an emulator bug, not a guest's doing.
    if (known.address !== address || known.size !== size || known.write !== write) {
      throw new Error(`SteppedMmioInstruction: replay diverged at access ${this.cursor - 1}`);
    }
    return known;
  }
}
