import { freemem, totalmem } from "node:os";
import { hostAddressOf } from "./host-address.js";
import { cycleHostPageProtection } from "./host-pages.js";

export const PAGE_SIZE = 4096;

/** A guest-physical address range that is not (wholly) backed by RAM. */
export class GuestMemoryError extends Error {
  constructor(
    readonly gpa: number,
    readonly length: number,
    detail: string,
  ) {
    super(`guest memory access at 0x${gpa.toString(16)} (+${length} bytes): ${detail}`);
    this.name = "GuestMemoryError";
  }
}

/** Bad memory layout given by the caller (sizes, alignment, overlaps). */
export class MemoryLayoutError extends Error {
  override name = "MemoryLayoutError";
}

export interface RegionSpec {
  /** Guest-physical start, page-aligned. */
  gpa: number;
  /** Size in bytes, a non-zero multiple of the page size. */
  size: number;
}

/**
 * The transferable description of one RAM region: the SAB (with a page of slack) and
 * where its page-aligned interior starts. Every thread builds its views from this.
 */
export interface SharedRegion {
  gpa: number;
  size: number;
  buffer: SharedArrayBuffer;
  offset: number;
}

export interface MemoryRegion extends SharedRegion {
  /** Bytes of the region (the page-aligned interior of the SAB). */
  bytes: Uint8Array;
  view: DataView;
  /** Host virtual address of `bytes[0]`; what the hypervisor is given. */
  hostAddress: bigint;
}

const MAX_GPA = 2 ** 52;
const GiB = 1024 ** 3;

/** The host could not give the memory asked for. */
export class GuestMemoryAllocationError extends Error {
  override name = "GuestMemoryAllocationError";
}

function sizeText(bytes: number): string {
  return bytes >= GiB ? `${(bytes / GiB).toFixed(bytes % GiB === 0 ? 0 : 1)} GiB` : `${Math.ceil(bytes / 1024 ** 2)} MiB`;
}

function allocateShared(spec: RegionSpec, regions: number): SharedArrayBuffer {
  try {
    return new SharedArrayBuffer(spec.size + PAGE_SIZE);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    const where = regions > 1 ? ` (the region at 0x${spec.gpa.toString(16)})` : "";
    throw new GuestMemoryAllocationError(
      `cannot allocate ${sizeText(spec.size)} of guest RAM${where}: the host has ${sizeText(totalmem())} of memory ` +
        `(${sizeText(freemem())} free) and refused the allocation. Ask for less guest memory.`,
      { cause: error },
    );
  }
}

function checkSpec(spec: RegionSpec, index: number): void {
  const where = `memory region ${index} (gpa 0x${spec.gpa.toString(16)}, size ${spec.size})`;
  if (!Number.isSafeInteger(spec.size) || spec.size <= 0) {
    throw new MemoryLayoutError(`${where}: size must be a positive whole number of bytes`);
  }
  if (spec.size % PAGE_SIZE !== 0) {
    throw new MemoryLayoutError(`${where}: size must be a multiple of ${PAGE_SIZE} bytes`);
  }
  if (!Number.isSafeInteger(spec.gpa) || spec.gpa < 0 || spec.gpa % PAGE_SIZE !== 0) {
    throw new MemoryLayoutError(`${where}: guest-physical address must be page-aligned`);
  }
  if (spec.gpa + spec.size > MAX_GPA) {
    throw new MemoryLayoutError(`${where}: ends beyond the 52-bit guest-physical space`);
  }
}

/**
 * Guest RAM: one SharedArrayBuffer per region, shared zero-copy by the main thread and
 * every vCPU worker. All device access goes through the bounds-checked accessors.
 */
export class GuestMemory {
  readonly regions: readonly MemoryRegion[];

  private constructor(regions: MemoryRegion[]) {
    this.regions = regions;
  }

  /** Allocates the regions. Rejects bad sizes, misalignment and overlaps. */
  static allocate(specs: readonly RegionSpec[]): GuestMemory {
    if (specs.length === 0) throw new MemoryLayoutError("at least one memory region is required");
    specs.forEach(checkSpec);
    const sorted = [...specs].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1];
      if (prev.gpa + prev.size > sorted[i].gpa) {
        throw new MemoryLayoutError(
          `memory regions overlap: [0x${prev.gpa.toString(16)}, 0x${(prev.gpa + prev.size).toString(16)}) ` +
            `and [0x${sorted[i].gpa.toString(16)}, 0x${(sorted[i].gpa + sorted[i].size).toString(16)})`,
        );
      }
    }
    return GuestMemory.fromShared(
      sorted.map((spec) => {
        // One page of slack so the page-aligned interior always fits.
        const buffer = allocateShared(spec, sorted.length);
        const misalignment = Number(hostAddressOf(buffer) % BigInt(PAGE_SIZE));
        const offset = misalignment === 0 ? 0 : PAGE_SIZE - misalignment;
        return { gpa: spec.gpa, size: spec.size, buffer, offset };
      }),
    );
  }

  /** Rebuilds the views in another thread from `toShared()`. */
  static fromShared(shared: readonly SharedRegion[]): GuestMemory {
    return new GuestMemory(
      shared.map((r) => ({
        ...r,
        bytes: new Uint8Array(r.buffer, r.offset, r.size),
        view: new DataView(r.buffer, r.offset, r.size),
        hostAddress: hostAddressOf(r.buffer) + BigInt(r.offset),
      })),
    );
  }

  toShared(): SharedRegion[] {
    return this.regions.map(({ gpa, size, buffer, offset }) => ({ gpa, size, buffer, offset }));
  }

  get totalSize(): number {
    return this.regions.reduce((sum, r) => sum + r.size, 0);
  }

  /** The region holding all of [gpa, gpa + length), or a GuestMemoryError. */
  regionFor(gpa: number, length: number): MemoryRegion {
    if (!Number.isSafeInteger(gpa) || gpa < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new GuestMemoryError(gpa, length, "address and length must be non-negative integers");
    }
    for (const region of this.regions) {
      if (gpa >= region.gpa && gpa < region.gpa + region.size) {
        if (gpa + length > region.gpa + region.size) {
          throw new GuestMemoryError(gpa, length, "runs past the end of its RAM region");
        }
        return region;
      }
    }
    throw new GuestMemoryError(gpa, length, "not backed by guest RAM");
  }

  /**
   * The region holding all of [gpa, gpa + length) for a non-negative integer `gpa` and
   * `length`, or undefined: regionFor without building an error, for walks done per request.
   */
  findRegion(gpa: number, length: number): MemoryRegion | undefined {
    const regions = this.regions;
    for (let i = 0; i < regions.length; i++) {
      const region = regions[i];
      if (gpa >= region.gpa && gpa + length <= region.gpa + region.size) return region;
    }
    return undefined;
  }

  /** A live view of [gpa, gpa + length); writes through it reach the guest. */
  slice(gpa: number, length: number): Uint8Array {
    const region = this.regionFor(gpa, length);
    return region.bytes.subarray(gpa - region.gpa, gpa - region.gpa + length);
  }

  isBacked(gpa: number, length: number): boolean {
    try {
      this.regionFor(gpa, length);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Drops and restores the host mapping of the RAM page holding `gpa`, so the hypervisor
   * must map it in again (pc-testdev's flush port). Addresses outside RAM are ignored, as
   * QEMU ignores them; returns whether a page was cycled.
   */
  remapPage(gpa: number): boolean {
    const page = gpa - (gpa % PAGE_SIZE);
    if (!this.isBacked(page, PAGE_SIZE)) return false;
    const region = this.regionFor(page, PAGE_SIZE);
    return cycleHostPageProtection(region.hostAddress + BigInt(page - region.gpa), PAGE_SIZE);
  }

  read(gpa: number, length: number): Uint8Array {
    return this.slice(gpa, length).slice();
  }

  write(gpa: number, data: ArrayLike<number>): void {
    this.slice(gpa, data.length).set(data);
  }

  fill(gpa: number, length: number, value = 0): void {
    this.slice(gpa, length).fill(value);
  }

  readU8(gpa: number): number {
    const r = this.regionFor(gpa, 1);
    return r.bytes[gpa - r.gpa];
  }
  readU16(gpa: number): number {
    const r = this.regionFor(gpa, 2);
    return r.view.getUint16(gpa - r.gpa, true);
  }
  readU32(gpa: number): number {
    const r = this.regionFor(gpa, 4);
    return r.view.getUint32(gpa - r.gpa, true);
  }
  readU64(gpa: number): bigint {
    const r = this.regionFor(gpa, 8);
    return r.view.getBigUint64(gpa - r.gpa, true);
  }
  writeU8(gpa: number, value: number): void {
    const r = this.regionFor(gpa, 1);
    r.bytes[gpa - r.gpa] = value;
  }
  writeU16(gpa: number, value: number): void {
    const r = this.regionFor(gpa, 2);
    r.view.setUint16(gpa - r.gpa, value, true);
  }
  writeU32(gpa: number, value: number): void {
    const r = this.regionFor(gpa, 4);
    r.view.setUint32(gpa - r.gpa, value >>> 0, true);
  }
  writeU64(gpa: number, value: bigint): void {
    const r = this.regionFor(gpa, 8);
    r.view.setBigUint64(gpa - r.gpa, value, true);
  }
}
