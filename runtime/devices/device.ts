/**
 * The one contract every device implements. Offsets are relative to the start of the
 * range the device was mapped at on the bus. Sizes 1, 2 and 4 carry a `number`
 * (unsigned); size 8 (MMIO only) carries a `bigint`.
 */
export type AccessSize = 1 | 2 | 4 | 8;

export interface Device {
  readonly name: string;
  read(offset: number, size: AccessSize): number | bigint;
  write(offset: number, size: AccessSize, value: number | bigint): void;
}

/** A level-triggered interrupt line into the VM's interrupt controller. */
export interface InterruptLine {
  set(level: boolean): void;
}

/** All-ones for an access of `size` bytes: what an unclaimed bus returns. */
export function allOnes(size: AccessSize): number | bigint {
  return size === 8 ? 0xffff_ffff_ffff_ffffn : size === 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
}

/** Narrows a value to `size` bytes as an unsigned number (sizes 1, 2, 4). */
export function toUnsigned(value: number | bigint, size: AccessSize): number {
  const n = typeof value === "bigint" ? Number(value & 0xffff_ffffn) : value;
  return size === 4 ? n >>> 0 : n & ((1 << (size * 8)) - 1);
}
