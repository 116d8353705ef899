/**
 * One PCI function's configuration space (PCI Local Bus Spec 3.0, chapter 6): 256 bytes of
 * registers with a per-byte mask of the bits software may write, the type-0 header, BARs
 * that answer the sizing protocol, and a capability list.
 */
import { toUnsigned, type AccessSize } from "../devices/device.js";

/** Type-0 header register offsets (spec 6.1). */
export const PciRegister = {
  VENDOR_ID: 0x00, DEVICE_ID: 0x02, COMMAND: 0x04, STATUS: 0x06, REVISION_ID: 0x08, CLASS_CODE: 0x09,
  CACHE_LINE_SIZE: 0x0c, LATENCY_TIMER: 0x0d, HEADER_TYPE: 0x0e, BAR0: 0x10, SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e, EXPANSION_ROM: 0x30, CAPABILITIES_POINTER: 0x34, INTERRUPT_LINE: 0x3c, INTERRUPT_PIN: 0x3d,
} as const;

export const PciCommand = { IO_SPACE: 1 << 0, MEMORY_SPACE: 1 << 1, BUS_MASTER: 1 << 2, INTX_DISABLE: 1 << 10 } as const;
export const PciStatus = { INTERRUPT: 1 << 3, CAPABILITIES_LIST: 1 << 4 } as const;

export const PCI_CONFIG_SPACE_SIZE = 256;
export const PCI_BAR_COUNT = 6;
/** Capabilities live after the header, dword-aligned (spec 6.7). */
const CAPABILITIES_START = 0x40;

const BAR_IO = 0x1;
const BAR_MEMORY_64 = 0x4;
const BAR_PREFETCHABLE = 0x8;

export interface BarSpec {
  kind: "io" | "memory32" | "memory64";
  /** Bytes decoded: a power of two, at least 4 for I/O and 16 for memory (spec 6.2.5.1). */
  size: number;
  prefetchable?: boolean;
}

export interface PciIdentity {
  vendorId: number;
  deviceId: number;
  /** Base class, subclass and programming interface as one 24-bit number (0x060000 = host bridge). */
  classCode: number;
  revision?: number;
  subsystemVendorId?: number;
  subsystemId?: number;
  /** INTA#..INTD# as 1..4; 0 (default) for a function with no interrupt pin. */
  interruptPin?: number;
  /** Header type byte; bit 7 marks a multi-function device. */
  headerType?: number;
}

export class PciConfigError extends Error {
  override name = "PciConfigError";
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

export class PciConfigSpace {
  readonly bytes = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly view = new DataView(this.bytes.buffer);
  /** Bits software may change, byte by byte. */
  private readonly writable = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Bits a write of 1 clears (status error bits). */
  private readonly clearOnWrite = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  readonly bars: (BarSpec | undefined)[] = new Array(PCI_BAR_COUNT).fill(undefined);
  private lastCapability = 0;
  private nextCapability = CAPABILITIES_START;

  constructor(identity: PciIdentity) {
    const pin = identity.interruptPin ?? 0;
    if (!Number.isInteger(pin) || pin < 0 || pin > 4) throw new PciConfigError(`interruptPin must be 0 (none) or 1..4 (INTA#..INTD#), got ${pin}`);
    this.view.setUint16(PciRegister.VENDOR_ID, identity.vendorId, true);
    this.view.setUint16(PciRegister.DEVICE_ID, identity.deviceId, true);
    this.bytes[PciRegister.REVISION_ID] = identity.revision ?? 0;
    this.bytes[PciRegister.CLASS_CODE] = identity.classCode & 0xff;
    this.view.setUint16(PciRegister.CLASS_CODE + 1, (identity.classCode >>> 8) & 0xffff, true);
    this.bytes[PciRegister.HEADER_TYPE] = identity.headerType ?? 0;
    this.view.setUint16(PciRegister.SUBSYSTEM_VENDOR_ID, identity.subsystemVendorId ?? 0, true);
    this.view.setUint16(PciRegister.SUBSYSTEM_ID, identity.subsystemId ?? 0, true);
    this.bytes[PciRegister.INTERRUPT_PIN] = pin;
    // Command: I/O, memory, bus master and INTx disable are ours to implement.
    this.setWritable(PciRegister.COMMAND, 2, PciCommand.IO_SPACE | PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER | PciCommand.INTX_DISABLE);
    this.setWritable(PciRegister.CACHE_LINE_SIZE, 1, 0xff);
    this.setWritable(PciRegister.LATENCY_TIMER, 1, 0xff);
    // The interrupt line is a scratch byte for firmware and the OS (spec 6.2.4).
    this.setWritable(PciRegister.INTERRUPT_LINE, 1, 0xff);
    // Status bits 15:11 (parity, aborts) are write-1-to-clear; we never set them, but a guest may write them.
    this.clearOnWrite[PciRegister.STATUS + 1] = 0xf9;
  }

  /** Declares BAR `index`; a 64-bit BAR also takes index + 1. */
  defineBar(index: number, spec: BarSpec): void {
    const width = spec.kind === "memory64" ? 2 : 1;
    if (!Number.isInteger(index) || index < 0 || index + width > PCI_BAR_COUNT) {
      throw new PciConfigError(`BAR ${index} (${spec.kind}) does not fit in the ${PCI_BAR_COUNT} BAR registers`);
    }
    if (this.bars[index] !== undefined || (width === 2 && this.bars[index + 1] !== undefined)) {
      throw new PciConfigError(`BAR ${index} is already defined`);
    }
    const minimum = spec.kind === "io" ? 4 : 16;
    const maximum = spec.kind === "io" ? 256 : spec.kind === "memory32" ? 2 ** 31 : 2 ** 52;
    if (!isPowerOfTwo(spec.size) || spec.size < minimum || spec.size > maximum) {
      throw new PciConfigError(`BAR ${index}: size must be a power of two from ${minimum} to ${maximum} bytes for ${spec.kind}, got ${spec.size}`);
    }
    this.bars[index] = spec;
    const at = PciRegister.BAR0 + index * 4;
    const typeBits = spec.kind === "io" ? BAR_IO : (spec.kind === "memory64" ? BAR_MEMORY_64 : 0) | (spec.prefetchable ? BAR_PREFETCHABLE : 0);
    this.view.setUint32(at, typeBits, true);
    // The address bits below the size are hard-wired to 0: that is what sizing reads back.
    const lowMask = spec.size >= 2 ** 32 ? 0 : (~(spec.size - 1) >>> 0) & (spec.kind === "io" ? ~0x3 : ~0xf);
    this.setWritable(at, 4, lowMask >>> 0);
    if (width === 2) {
      const highMask = spec.size > 2 ** 32 ? (~(spec.size / 2 ** 32 - 1) >>> 0) : 0xffff_ffff;
      this.setWritable(at + 4, 4, highMask);
    }
  }

  /**
   * Appends a capability of `length` bytes (including its ID and next-pointer bytes) to the
   * list; returns its offset. `writable` lists [offset within the capability, bytes, mask].
   */
  addCapability(id: number, length: number, writable: [number, number, number][] = []): number {
    const at = this.nextCapability;
    const size = Math.ceil(length / 4) * 4;
    if (length < 2 || at + size > PCI_CONFIG_SPACE_SIZE) {
      throw new PciConfigError(`capability 0x${id.toString(16)} (${length} bytes) does not fit in configuration space`);
    }
    this.bytes[at] = id;
    this.bytes[at + 1] = 0;
    if (this.lastCapability === 0) this.bytes[PciRegister.CAPABILITIES_POINTER] = at;
    else this.bytes[this.lastCapability + 1] = at;
    this.lastCapability = at;
    this.nextCapability = at + size;
    this.view.setUint16(PciRegister.STATUS, this.view.getUint16(PciRegister.STATUS, true) | PciStatus.CAPABILITIES_LIST, true);
    for (const [offset, bytes, mask] of writable) this.setWritable(at + offset, bytes, mask);
    return at;
  }

  /** Lets the guest change `mask`'s bits of `bytes` registers from `at` (a function's own registers). */
  setWritable(at: number, bytes: number, mask: number): void {
    if (!Number.isInteger(at) || at < 0 || at + bytes > PCI_CONFIG_SPACE_SIZE) throw new PciConfigError(`register 0x${at.toString(16)} (${bytes} bytes) is outside configuration space`);
    for (let i = 0; i < bytes; i++) this.writable[at + i] = (mask >>> (i * 8)) & 0xff;
  }

  get command(): number {
    return this.view.getUint16(PciRegister.COMMAND, true);
  }

  setStatusBits(bits: number, on: boolean): void {
    const status = this.view.getUint16(PciRegister.STATUS, true);
    this.view.setUint16(PciRegister.STATUS, on ? status | bits : status & ~bits, true);
  }

  u8(offset: number): number {
    return this.bytes[offset];
  }
  u16(offset: number): number {
    return this.view.getUint16(offset, true);
  }
  u32(offset: number): number {
    return this.view.getUint32(offset, true);
  }

  /** Firmware-side write that ignores the guest's write masks (BAR placement at boot). */
  setU32(offset: number, value: number): void {
    this.view.setUint32(offset, value >>> 0, true);
  }
  setU8(offset: number, value: number): void {
    this.bytes[offset] = value & 0xff;
  }

  /** The address BAR `index` is programmed with (a 64-bit BAR's both halves), or undefined. */
  barAddress(index: number): number | undefined {
    const spec = this.bars[index];
    if (spec === undefined) return undefined;
    const low = this.u32(PciRegister.BAR0 + index * 4) & (spec.kind === "io" ? ~0x3 : ~0xf);
    const high = spec.kind === "memory64" ? this.u32(PciRegister.BAR0 + index * 4 + 4) : 0;
    return (low >>> 0) + high * 2 ** 32;
  }

  read(offset: number, size: AccessSize): number {
    if (offset < 0 || offset + size > PCI_CONFIG_SPACE_SIZE) return size === 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
    if (size === 1) return this.bytes[offset];
    if (size === 2) return this.view.getUint16(offset, true);
    return this.view.getUint32(offset, true);
  }

  /** A guest write: only writable bits change. Returns true when it touched COMMAND or a BAR. */
  write(offset: number, size: AccessSize, value: number): boolean {
    if (offset < 0 || offset + size > PCI_CONFIG_SPACE_SIZE) return false;
    const n = toUnsigned(value, size);
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      const byte = (n >>> (i * 8)) & 0xff;
      const mask = this.writable[at];
      this.bytes[at] = ((this.bytes[at] & ~mask) | (byte & mask)) & ~(byte & this.clearOnWrite[at]);
    }
    const end = offset + size;
    const touchesCommand = offset < PciRegister.COMMAND + 2 && end > PciRegister.COMMAND;
    const touchesBars = offset < PciRegister.BAR0 + PCI_BAR_COUNT * 4 && end > PciRegister.BAR0;
    return touchesCommand || touchesBars;
  }
}
