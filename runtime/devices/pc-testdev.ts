/**
 * QEMU's `pc-testdev` (hw/misc/pc-testdev.c), the ISA test device kvm-unit-tests' runner
 * always adds. Its registers, as QEMU defines them:
 *
 *   port 0xe0, 4 bytes   a 32-bit data register; an access of n bytes at offset k reads or
 *                        writes bytes k..k+n-1 of it (string I/O works element by element)
 *   port 0xe4, 4 bytes   flush page: a 32-bit write of a guest-physical address makes the
 *                        host drop and re-create its mapping of that page
 *   port 0xe8, 4 bytes   the same data register as 0xe0, reached byte by byte
 *   port 0x2000, 24      IRQ lines: a byte written to 0x2000 + n sets ISA IRQ line n to
 *                        (byte != 0); wider writes act byte by byte; reads return 0
 *   mmio 0xff000000, 64 KiB  RAM-like: every access size reads back what was written
 *
 * The data register and the memory live in SharedArrayBuffers so the vCPU workers answer
 * them without a trip to the main thread (the emulator test makes thousands of such
 * accesses); the IRQ lines and the flush port need the VM, so they stay on the main thread.
 */
import { type AccessSize, type Device, type HighWord, type InterruptLine, toUnsigned } from "./device.js";

export const PC_TESTDEV_DATA_PORT = 0xe0;
export const PC_TESTDEV_FLUSH_PORT = 0xe4;
export const PC_TESTDEV_BYTE_DATA_PORT = 0xe8;
export const PC_TESTDEV_PORT_LENGTH = 4;
export const PC_TESTDEV_IRQ_PORT = 0x2000;
export const PC_TESTDEV_IRQ_LINES = 24;
export const PC_TESTDEV_IOMEM_BASE = 0xff00_0000;
export const PC_TESTDEV_IOMEM_LENGTH = 0x1_0000;

/** The 32-bit data register at ports 0xe0 and 0xe8 (one register, two windows). */
export class PcTestdevDataPort implements Device {
  readonly name = "pc-testdev data port";
  private readonly bytes: Uint8Array;

  constructor(shared: SharedArrayBuffer) {
    if (shared.byteLength < 4) throw new RangeError("pc-testdev data port needs a 4-byte SharedArrayBuffer");
    this.bytes = new Uint8Array(shared, 0, 4);
  }

  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(4);
  }

  read(offset: number, size: AccessSize): number {
    let value = 0;
    // Bytes past the register's end read as 0, as QEMU's shifted mask gives.
    for (let i = 0; i < size && offset + i < 4; i++) value |= this.bytes[offset + i] << (i * 8);
    return value >>> 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    const n = toUnsigned(value, size);
    for (let i = 0; i < size && offset + i < 4; i++) this.bytes[offset + i] = (n >>> (i * 8)) & 0xff;
  }
}

/** The 64 KiB RAM-like MMIO region at 0xff000000. */
export class PcTestdevIoMemory implements Device {
  readonly name = "pc-testdev iomem";
  private readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(shared: SharedArrayBuffer) {
    if (shared.byteLength < PC_TESTDEV_IOMEM_LENGTH) throw new RangeError(`pc-testdev iomem needs a ${PC_TESTDEV_IOMEM_LENGTH}-byte SharedArrayBuffer`);
    this.bytes = new Uint8Array(shared, 0, PC_TESTDEV_IOMEM_LENGTH);
    this.view = new DataView(shared, 0, PC_TESTDEV_IOMEM_LENGTH);
  }

  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(PC_TESTDEV_IOMEM_LENGTH);
  }

  read(offset: number, size: AccessSize, wide: HighWord): number {
    if (offset + size <= PC_TESTDEV_IOMEM_LENGTH) {
      if (size === 1) return this.bytes[offset];
      if (size === 2) return this.view.getUint16(offset, true);
      if (size === 8) wide.high = this.view.getUint32(offset + 4, true);
      return this.view.getUint32(offset, true);
    }
    // An access straddling the end: the bytes inside the region, zeros beyond.
    let low = 0;
    let high = 0;
    for (let i = 0; i < size && offset + i < PC_TESTDEV_IOMEM_LENGTH; i++) {
      const byte = this.bytes[offset + i];
      if (i < 4) low |= byte << (i * 8);
      else high |= byte << ((i - 4) * 8);
    }
    if (size === 8) wide.high = high >>> 0;
    return low >>> 0;
  }

  write(offset: number, size: AccessSize, value: number, high: number): void {
    if (offset + size <= PC_TESTDEV_IOMEM_LENGTH) {
      if (size === 1) this.bytes[offset] = value;
      else if (size === 2) this.view.setUint16(offset, value, true);
      else if (size === 4) this.view.setUint32(offset, value, true);
      else {
        this.view.setUint32(offset, value, true);
        this.view.setUint32(offset + 4, high, true);
      }
      return;
    }
    for (let i = 0; i < size && offset + i < PC_TESTDEV_IOMEM_LENGTH; i++) {
      this.bytes[offset + i] = i < 4 ? (value >>> (i * 8)) & 0xff : (high >>> ((i - 4) * 8)) & 0xff;
    }
  }
}

/** Ports 0x2000..0x2017: one byte per ISA IRQ line. */
export class PcTestdevIrqLines implements Device {
  readonly name = "pc-testdev irq lines";

  constructor(private readonly line: (irq: number) => InterruptLine) {}

  read(): number {
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    // The region takes byte accesses only, so QEMU splits a wider port write into bytes to
    // consecutive ports: `outl` of 1 to 0x200b raises line 11 and lowers lines 12-14
    // (realmode's "sti inhibit" test relies on it).
    const n = toUnsigned(value, size);
    for (let i = 0; i < size && offset + i < PC_TESTDEV_IRQ_LINES; i++) {
      this.line(offset + i).set(((n >>> (i * 8)) & 0xff) !== 0);
    }
  }
}

/** Port 0xe4: a 32-bit write names a guest page whose host mapping is dropped and restored. */
export class PcTestdevFlushPage implements Device {
  readonly name = "pc-testdev flush page";

  constructor(private readonly flush: (gpa: number) => void) {}

  read(): number {
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset !== 0 || size !== 4) return;
    this.flush((toUnsigned(value, 4) & ~0xfff) >>> 0);
  }
}
