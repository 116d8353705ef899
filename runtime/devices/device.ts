/**
 * The one contract every device implements. Offsets are relative to the start of the
 * range the device was mapped at on the bus.
 *
 * Values travel as 32-bit words in plain numbers, so no access allocates (a bigint would,
 * on every 8-byte access):
 * - `write(offset, size, value, high)`: `value` holds bits 0..31, unsigned, already narrowed
 *   to `size` bytes; `high` holds bits 32..63 of an 8-byte access (MMIO only) and is 0 for
 *   every other size. A device without 8-byte registers can leave `high` out.
 * - `read(offset, size, wide)` returns bits 0..31 (the bus takes them as unsigned, so a
 *   result of `x | 0` is fine). For an 8-byte read the device also sets `wide.high` to bits
 *   32..63; the caller owns `wide`, reuses it and sets `high` to 0 before every call, so a
 *   device that ignores size 8 answers with a zero high word. A device without 8-byte
 *   registers can leave `wide` out.
 * A device that keeps a 64-bit register as a bigint converts at its edge with `joinWords`
 * and `splitWords` (these allocate; fine for rare accesses, not for a doorbell).
 */
export type AccessSize = 1 | 2 | 4 | 8;

/** Where an 8-byte read leaves bits 32..63 (see `Device.read`). */
export interface HighWord {
  high: number;
}

export interface Device {
  readonly name: string;
  read(offset: number, size: AccessSize, wide: HighWord): number;
  write(offset: number, size: AccessSize, value: number, high: number): void;
}

/** A level-triggered interrupt line into the VM's interrupt controller. */
export interface InterruptLine {
  set(level: boolean): void;
}

/**
 * All-ones for an access of `size` bytes, what an unclaimed bus returns: the low word,
 * and for size 8 the high word too, through `wide` (pass it wherever size 8 can occur).
 */
export function allOnes(size: AccessSize, wide?: HighWord): number {
  if (size === 8 && wide !== undefined) wide.high = 0xffff_ffff;
  return size >= 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
}

/** Narrows a written word to `size` bytes, unsigned; size 8 keeps the whole low word. */
export function toUnsigned(value: number, size: AccessSize): number {
  return size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1);
}

/** The 64-bit value of an 8-byte write (`value`, `high`) as a bigint. Allocates. */
export function joinWords(low: number, high: number): bigint {
  return (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
}

/** Answers an 8-byte read with a 64-bit bigint: sets `wide.high`, returns the low word. */
export function splitWords(value: bigint, wide: HighWord): number {
  wide.high = Number((value >> 32n) & 0xffff_ffffn);
  return Number(value & 0xffff_ffffn);
}
