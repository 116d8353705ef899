/**
 * The MSI capability (PCI Local Bus Spec 3.0, 6.8.1): message address and data the guest
 * programs, an enable bit, and optionally 64-bit addresses and per-vector masking.
 */
import type { PciConfigSpace } from "./config-space.js";

export const MSI_CAPABILITY_ID = 0x05;
const CONTROL = 2;
const CONTROL_ENABLE = 1 << 0;
const CONTROL_MULTIPLE_CAPABLE_SHIFT = 1;
const CONTROL_MULTIPLE_ENABLE_SHIFT = 4;
const CONTROL_64BIT = 1 << 7;
const CONTROL_MASKABLE = 1 << 8;
const ADDRESS_LOW = 4;

export interface MsiOptions {
  /** Vectors the function can use: 1, 2, 4, 8, 16 or 32. */
  vectors?: number;
  addresses64?: boolean;
  perVectorMasking?: boolean;
}

export interface MsiMessage {
  address: bigint;
  data: number;
}

/** Adds an MSI capability to `config`; returns its offset. */
export function addMsiCapability(config: PciConfigSpace, options: MsiOptions = {}): number {
  const vectors = options.vectors ?? 1;
  const log2 = Math.log2(vectors);
  if (!Number.isInteger(log2) || log2 < 0 || log2 > 5) throw new RangeError(`MSI vectors must be 1, 2, 4, 8, 16 or 32, got ${vectors}`);
  const wide = options.addresses64 ?? true;
  const maskable = options.perVectorMasking ?? false;
  const dataAt = wide ? 12 : 8;
  const length = dataAt + 2 + (maskable ? 10 : 2);
  const at = config.addCapability(MSI_CAPABILITY_ID, length, [
    [CONTROL, 2, CONTROL_ENABLE | (0x7 << CONTROL_MULTIPLE_ENABLE_SHIFT)],
    [ADDRESS_LOW, 4, 0xffff_fffc],
    ...(wide ? [[8, 4, 0xffff_ffff] as [number, number, number]] : []),
    [dataAt, 2, 0xffff],
    ...(maskable ? [[dataAt + 4, 4, (2 ** vectors - 1) >>> 0] as [number, number, number]] : []),
  ]);
  const control = (log2 << CONTROL_MULTIPLE_CAPABLE_SHIFT) | (wide ? CONTROL_64BIT : 0) | (maskable ? CONTROL_MASKABLE : 0);
  config.setU8(at + CONTROL, control & 0xff);
  config.setU8(at + CONTROL + 1, control >>> 8);
  return at;
}

/**
 * The message for `vector`, or undefined when MSI is disabled, the vector is beyond what
 * the guest enabled, or it is masked (then its pending bit is set, as the spec asks).
 */
export function msiMessage(config: PciConfigSpace, at: number, vector = 0): MsiMessage | undefined {
  const control = config.u16(at + CONTROL);
  if ((control & CONTROL_ENABLE) === 0) return undefined;
  const enabled = 1 << Math.min((control >> CONTROL_MULTIPLE_ENABLE_SHIFT) & 0x7, (control >> CONTROL_MULTIPLE_CAPABLE_SHIFT) & 0x7);
  if (!Number.isInteger(vector) || vector < 0 || vector >= enabled) return undefined;
  const wide = (control & CONTROL_64BIT) !== 0;
  const dataAt = wide ? 12 : 8;
  if ((control & CONTROL_MASKABLE) !== 0) {
    const mask = config.u32(at + dataAt + 4);
    if ((mask >>> vector) & 1) {
      config.setU32(at + dataAt + 8, config.u32(at + dataAt + 8) | (1 << vector));
      return undefined;
    }
  }
  const low = BigInt((config.u32(at + ADDRESS_LOW) & ~0x3) >>> 0);
  const high = wide ? BigInt(config.u32(at + 8)) : 0n;
  // With several vectors enabled, the function puts the vector number in the data's low bits.
  const data = (config.u16(at + dataAt) & ~(enabled - 1)) | vector;
  return { address: (high << 32n) | low, data };
}
