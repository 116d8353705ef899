/**
 * An address-space map from ranges to devices: a sorted array searched by bisection,
 * inserts reject overlaps. One bus per space (port I/O, MMIO).
 */
import type { AccessSize, Device, HighWord } from "./devices/device.js";

export interface BusRange {
  base: number;
  length: number;
  device: Device;
  /** Writes wait for the device (the vCPU does not run on until they are handled). */
  sync: boolean;
}

export class BusOverlapError extends Error {
  override name = "BusOverlapError";
}

export class Bus {
  private readonly ranges: BusRange[] = [];

  constructor(readonly space: "pio" | "mmio" | "msr") {}

  insert(range: BusRange): void {
    const { base, length } = range;
    const limit = this.space === "pio" ? 0x10000 : this.space === "msr" ? 2 ** 32 : 2 ** 52;
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(length) || length <= 0 || base + length > limit) {
      throw new RangeError(`${this.space} range 0x${base.toString(16)} (+${length}) for '${range.device.name}' is outside the address space`);
    }
    const index = this.ranges.findIndex((r) => r.base >= base);
    const at = index < 0 ? this.ranges.length : index;
    const before = this.ranges[at - 1];
    const after = this.ranges[at];
    for (const other of [before, after]) {
      if (other && base < other.base + other.length && other.base < base + length) {
        throw new BusOverlapError(
          `${this.space} range [0x${base.toString(16)}, 0x${(base + length).toString(16)}) for '${range.device.name}' ` +
            `overlaps '${other.device.name}' at [0x${other.base.toString(16)}, 0x${(other.base + other.length).toString(16)})`,
        );
      }
    }
    this.ranges.splice(at, 0, range);
  }

  /** The range holding `address`, or undefined. */
  find(address: number): BusRange | undefined {
    const ranges = this.ranges;
    let low = 0;
    let high = ranges.length - 1;
    while (low <= high) {
      const mid = (low + high) >> 1;
      const range = ranges[mid];
      if (address < range.base) high = mid - 1;
      else if (address >= range.base + range.length) low = mid + 1;
      else return range;
    }
    return undefined;
  }

  all(): readonly BusRange[] {
    return this.ranges;
  }
}

/**
 * Accesses of any length from 1 to 8 bytes, carried to the devices faithfully. KVM reports
 * lengths 3, 5, 6 and 7 when an access crosses a page (it splits it there); a device only
 * takes 1, 2, 4 or 8 bytes, so such an access becomes naturally aligned pieces, each with
 * its own bytes, each looked up on the bus by its own address. Sizes 1, 2, 4 and 8 go to
 * the device whole, aligned or not.
 */
export class BusAccessor {
  /** The value of the last `read`: bits 0..31 and 32..63. */
  low = 0;
  high = 0;
  /** Pieces of the last access that no device claimed. */
  unclaimed = 0;
  /** The device of the piece being handled, for error messages. */
  device = "";
  /** Handed to every device read for the high word of an 8-byte value; reused. */
  private readonly wide: HighWord = { high: 0 };

  constructor(private readonly bus: Bus) {}

  read(address: number, size: number): void {
    this.unclaimed = 0;
    if (size === 1 || size === 2 || size === 4 || size === 8) {
      this.readWhole(address, size);
      return;
    }
    let low = 0;
    let high = 0;
    for (let offset = 0; offset < size; ) {
      const piece = pieceSize(address + offset, size - offset);
      this.readWhole(address + offset, piece);
      for (let b = 0; b < piece; b++) {
        const byte = b < 4 ? (this.low >>> (b * 8)) & 0xff : (this.high >>> ((b - 4) * 8)) & 0xff;
        const at = offset + b;
        if (at < 4) low |= byte << (at * 8);
        else high |= byte << ((at - 4) * 8);
      }
      offset += piece;
    }
    this.low = low >>> 0;
    this.high = high >>> 0;
  }

  write(address: number, size: number, low: number, high: number): void {
    this.unclaimed = 0;
    if (size === 1 || size === 2 || size === 4 || size === 8) {
      this.writeWhole(address, size, low, high);
      return;
    }
    for (let offset = 0; offset < size; ) {
      const piece = pieceSize(address + offset, size - offset);
      let value = 0;
      for (let b = piece - 1; b >= 0; b--) {
        const at = offset + b;
        value = value * 256 + (at < 4 ? (low >>> (at * 8)) & 0xff : (high >>> ((at - 4) * 8)) & 0xff);
      }
      this.writeWhole(address + offset, piece, value, 0);
      offset += piece;
    }
  }

  /**
   * String I/O (`rep insb` and wider): `count` reads of `size` bytes at one port into
   * `data`, looking the device up once. Returns false if no device claims the port.
   */
  readRepeated(address: number, size: AccessSize, count: number, data: Uint8Array): boolean {
    const range = this.bus.find(address);
    if (range === undefined) {
      data.fill(0xff, 0, count * size);
      return false;
    }
    this.device = range.device.name;
    const device = range.device;
    const offset = address - range.base;
    const wide = this.wide;
    for (let i = 0; i < count; i++) {
      wide.high = 0;
      const value = device.read(offset, size, wide);
      for (let b = 0; b < size; b++) data[i * size + b] = (value >>> (b * 8)) & 0xff;
    }
    return true;
  }

  /** `count` writes of `size` bytes from `data` to one port; false if no device claims it. */
  writeRepeated(address: number, size: AccessSize, count: number, data: Uint8Array): boolean {
    const range = this.bus.find(address);
    if (range === undefined) return false;
    this.device = range.device.name;
    const device = range.device;
    const offset = address - range.base;
    for (let i = 0; i < count; i++) {
      let value = 0;
      for (let b = size - 1; b >= 0; b--) value = value * 256 + data[i * size + b];
      device.write(offset, size, value, 0);
    }
    return true;
  }

  private readWhole(address: number, size: number): void {
    const range = this.bus.find(address);
    if (range === undefined) {
      this.unclaimed++;
      this.low = size >= 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
      this.high = size === 8 ? 0xffff_ffff : 0;
      return;
    }
    this.device = range.device.name;
    const wide = this.wide;
    wide.high = 0;
    this.low = range.device.read(address - range.base, size as AccessSize, wide) >>> 0;
    this.high = size === 8 ? wide.high >>> 0 : 0;
  }

  private writeWhole(address: number, size: number, low: number, high: number): void {
    const range = this.bus.find(address);
    if (range === undefined) {
      this.unclaimed++;
      return;
    }
    this.device = range.device.name;
    // Narrowed here, so the contract holds whatever the backend left above `size` bytes.
    const value = size >= 4 ? low >>> 0 : low & ((1 << (size * 8)) - 1);
    range.device.write(address - range.base, size as AccessSize, value, size === 8 ? high >>> 0 : 0);
  }
}

/** The largest of 4, 2, 1 that fits in `remaining` and to which `address` is aligned. */
function pieceSize(address: number, remaining: number): number {
  if (remaining >= 4 && address % 4 === 0) return 4;
  if (remaining >= 2 && address % 2 === 0) return 2;
  return 1;
}
