/**
 * Decodes the instruction of an MSHV memory intercept, for the MOV family only: /dev/mshv
 * reports the faulting GPA and up to 16 instruction bytes, not the access width, the data or
 * the register, so the VMM must decode (KVM does this in the kernel).
 *
 * Covered (64-bit and 32-bit code, legacy/REX/operand-size prefixes, every ModRM/SIB/disp
 * form): 88/89 (store register), 8A/8B (load register), C6/C7 /0 (store immediate),
 * A0-A3 (moffs forms), 0F B6/B7 (MOVZX) and 0F BE/BF (MOVSX). Anything else (string moves,
 * read-modify-write ALU forms, 16-bit code or addressing) is refused with a clear reason; the
 * general x86 MMIO decoder of issue 12 part 3 is meant to replace this file.
 */

export interface MmioMove {
  /** Instruction length in bytes (RIP advances by this). */
  length: number;
  /** Bytes accessed at the GPA: 1, 2, 4 or 8. */
  size: number;
  write: boolean;
  /** Store: source register number (x86 encoding, 0 = rax), or -1 for an immediate. */
  register: number;
  /** AH, CH, DH or BH: bits 8-15 of `register` (0-3). */
  highByte: boolean;
  /** Store of an immediate (already sign-extended to `size` bytes). */
  immediate: bigint;
  /** Load: MOVSX (sign-extend to the destination width) rather than zero-extend. */
  signExtend: boolean;
  /**
   * Load: bytes of the destination register written. 4 clears bits 32-63 (x86-64 rule for
   * 32-bit destinations); 1 and 2 leave the rest of the register as it was.
   */
  destinationSize: number;
}

export class MmioDecodeError extends Error {
  override name = "MmioDecodeError";
}

const PREFIX_OPERAND_SIZE = 0x66;
const PREFIX_ADDRESS_SIZE = 0x67;
const LEGACY_PREFIXES = new Set([0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xf0]);

function hex(bytes: Uint8Array, length: number): string {
  return Array.from(bytes.subarray(0, length), (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** Bytes taken by ModRM, SIB and displacement (32/64-bit addressing), from the ModRM byte on. */
function modrmLength(bytes: Uint8Array, at: number, available: number): number {
  if (at >= available) throw new MmioDecodeError("instruction bytes end before the ModRM byte");
  const modrm = bytes[at];
  const mod = modrm >> 6;
  const rm = modrm & 7;
  if (mod === 3) throw new MmioDecodeError("ModRM names a register, not memory: this cannot be an MMIO access");
  let length = 1;
  let base = rm;
  if (rm === 4) {
    if (at + 1 >= available) throw new MmioDecodeError("instruction bytes end before the SIB byte");
    base = bytes[at + 1] & 7;
    length++;
  }
  if (mod === 1) length += 1;
  else if (mod === 2) length += 4;
  else if (rm === 5 || (rm === 4 && base === 5)) length += 4; // disp32 (RIP-relative without SIB)
  return length;
}

function readImmediate(bytes: Uint8Array, at: number, size: number, available: number): bigint {
  if (at + size > available) throw new MmioDecodeError("instruction bytes end inside the immediate");
  let value = 0n;
  for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[at + i]);
  return value;
}

/**
 * Decodes `bytes[0..available)` as executed in a code segment that is 64-bit (`long`) or
 * 32-bit (`defaultBig`); 16-bit code is refused.
 */
export function decodeMmioMove(bytes: Uint8Array, available: number, mode: { long: boolean; defaultBig: boolean }): MmioMove {
  if (!mode.long && !mode.defaultBig) throw new MmioDecodeError("16-bit code: its ModRM addressing is not decoded");
  const limit = Math.min(available, bytes.length, 15);
  let at = 0;
  let operandSize16 = false;
  let addressSize = false;
  let rex = 0;
  for (; at < limit; at++) {
    const b = bytes[at];
    if (b === PREFIX_OPERAND_SIZE) operandSize16 = true;
    else if (b === PREFIX_ADDRESS_SIZE) addressSize = true;
    else if (LEGACY_PREFIXES.has(b)) continue;
    else if (b === 0xf2 || b === 0xf3) throw new MmioDecodeError(`REP prefixes are not decoded (bytes ${hex(bytes, limit)})`);
    else break;
  }
  if (mode.long && at < limit && (bytes[at] & 0xf0) === 0x40) rex = bytes[at++];
  if (at >= limit) throw new MmioDecodeError(`no opcode in the instruction bytes (${hex(bytes, limit)})`);
  const rexW = (rex & 8) !== 0;
  const rexR = (rex & 4) !== 0 ? 8 : 0;
  const wide = rexW ? 8 : operandSize16 ? 2 : 4;
  const regOf = (modrm: number) => ((modrm >> 3) & 7) | rexR;
  const byteRegister = (modrm: number) => {
    const reg = regOf(modrm);
    // Without REX, byte registers 4-7 are AH, CH, DH, BH: the high bytes of rax..rbx.
    return rex === 0 && reg >= 4 && reg < 8 ? { register: reg - 4, highByte: true } : { register: reg, highByte: false };
  };
  const opcode = bytes[at++];
  // In 32-bit code 0x67 selects 16-bit addressing (ModRM without SIB, disp16): not decoded.
  const modrmAddressing16 = !mode.long && addressSize && (opcode & 0xfc) !== 0xa0;
  if (modrmAddressing16) throw new MmioDecodeError(`16-bit addressing (0x67 in 32-bit code) is not decoded (bytes ${hex(bytes, limit)})`);
  const base = { immediate: 0n, signExtend: false, destinationSize: 0, highByte: false };

  switch (opcode) {
    case 0x88:
    case 0x8a: {
      const modrm = bytes[at];
      const length = at + modrmLength(bytes, at, limit);
      const { register, highByte } = byteRegister(modrm);
      return { ...base, length, size: 1, write: opcode === 0x88, register, highByte, destinationSize: 1 };
    }
    case 0x89:
    case 0x8b: {
      const modrm = bytes[at];
      const length = at + modrmLength(bytes, at, limit);
      const load = opcode === 0x8b;
      return { ...base, length, size: wide, write: !load, register: regOf(modrm), destinationSize: wide };
    }
    case 0xc6:
    case 0xc7: {
      const modrm = bytes[at];
      if (((modrm >> 3) & 7) !== 0) throw new MmioDecodeError(`opcode ${opcode.toString(16)} /${(modrm >> 3) & 7} is not a MOV`);
      const immediateAt = at + modrmLength(bytes, at, limit);
      const size = opcode === 0xc6 ? 1 : wide;
      const immediateSize = size === 8 ? 4 : size;
      let immediate = readImmediate(bytes, immediateAt, immediateSize, limit);
      if (size === 8 && immediate & 0x8000_0000n) immediate |= 0xffff_ffff_0000_0000n; // imm32 sign-extends
      return { ...base, length: immediateAt + immediateSize, size, write: true, register: -1, immediate };
    }
    case 0xa0:
    case 0xa1:
    case 0xa2:
    case 0xa3: {
      const offsetSize = mode.long ? (addressSize ? 4 : 8) : addressSize ? 2 : 4;
      if (at + offsetSize > limit) throw new MmioDecodeError("instruction bytes end inside the moffs address");
      const size = opcode & 1 ? wide : 1;
      const load = opcode < 0xa2;
      return { ...base, length: at + offsetSize, size, write: !load, register: 0, destinationSize: size };
    }
    case 0x0f: {
      const second = bytes[at++];
      if (second !== 0xb6 && second !== 0xb7 && second !== 0xbe && second !== 0xbf) break;
      const modrm = bytes[at];
      const length = at + modrmLength(bytes, at, limit);
      const size = second & 1 ? 2 : 1;
      return { ...base, length, size, write: false, register: regOf(modrm), signExtend: second >= 0xbe, destinationSize: wide };
    }
  }
  throw new MmioDecodeError(`instruction ${hex(bytes, limit)} is not a MOV form this decoder handles`);
}
