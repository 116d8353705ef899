import { allOnes, toUnsigned, type AccessSize, type Device } from "./device.js";

/**
 * PCI configuration mechanism #1 (PCI Local Bus Spec 3.0, 3.2.2.3.2) for a machine with
 * no PCI devices at all. The bus maps it at port 0xCF8, length 8:
 *
 *   offset 0..3 (0xCF8)  CONFIG_ADDRESS, claimed only by 32-bit accesses
 *   offset 4..7 (0xCFC)  CONFIG_DATA, any width
 *
 * CONFIG_ADDRESS is stored and read back, so an OS's "is mechanism #1 there?" probe
 * (write 0x80000000, read it back) succeeds; every config read then returns all-ones,
 * which is how a bus with nothing on it answers (vendor ID 0xFFFF = no function), and
 * config writes go nowhere.
 */

export const PCI_CONFIG_PORT = 0xcf8;
export const PCI_CONFIG_PORT_LENGTH = 8;

const CONFIG_ADDRESS_OFFSET = 0;

/**
 * Bit 31 enable, 23:16 bus, 15:11 device, 10:8 function, 7:2 register. Bits 30:24 are
 * reserved and bits 1:0 are fixed; the spec says both read back as 0.
 */
const CONFIG_ADDRESS_WRITABLE = 0x80ff_fffc;
export const CONFIG_ADDRESS_ENABLE = 0x8000_0000;

export class PciConfigNoDevice implements Device {
  readonly name = "pci-config";

  private address = 0;

  /** The current CONFIG_ADDRESS value (as the guest reads it back). */
  get configAddress(): number {
    return this.address;
  }

  read(offset: number, size: AccessSize): number | bigint {
    if (offset === CONFIG_ADDRESS_OFFSET && size === 4) return this.address;
    // CONFIG_DATA: no device answers on any bus/device/function. Narrow accesses to
    // 0xCF8-0xCFB are ordinary I/O cycles on a PC, not CONFIG_ADDRESS, and nothing else
    // claims them here either.
    return allOnes(size);
  }

  write(offset: number, size: AccessSize, value: number | bigint): void {
    if (offset === CONFIG_ADDRESS_OFFSET && size === 4) {
      this.address = (toUnsigned(value, 4) & CONFIG_ADDRESS_WRITABLE) >>> 0;
    }
    // CONFIG_DATA writes have no target. Byte writes to 0xCF9 (the PIIX/ICH reset
    // control register) also land here and are ignored: this device offers no reset.
  }
}
