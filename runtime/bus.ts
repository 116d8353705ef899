/**
 * An address-space map from ranges to devices: a sorted array searched by bisection,
 * inserts reject overlaps. One bus per space (port I/O, MMIO).
 */
import type { Device } from "./devices/device.js";

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
