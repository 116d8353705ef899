/**
 * The host bridge at 00:00.0 (an Intel 440FX as QEMU's `pc` machine has, 8086:1237) and
 * the two ways to reach configuration space through it:
 *
 * - mechanism #1 (PCI Local Bus Spec 3.0, 3.2.2.3.2) at ports 0xCF8-0xCFF: CONFIG_ADDRESS
 *   (bit 31 enable, 23:16 bus, 15:11 device, 10:8 function, 7:0 register) is claimed only
 *   by 32-bit accesses at 0xCF8; CONFIG_DATA at 0xCFC-0xCFF takes any width, the port's
 *   low two bits OR'd into the register number. A byte at 0xCF9 is not a config cycle: on
 *   PIIX/ICH it is the reset control register, served by the device given for it, if any.
 * - ECAM / MMCONFIG (PCI Express Base Spec, 7.2.2): a memory range where bus, device,
 *   function and register are address bits 27:20, 19:15, 14:12 and 11:0; announced to the
 *   guest in the ACPI MCFG table.
 */
import { allOnes, toUnsigned, type AccessSize, type Device, type HighWord } from "../devices/device.js";
import { PciConfigSpace } from "./config-space.js";
import type { PciBus } from "./pci-bus.js";
import type { PciDevice } from "./pci-device.js";

export const PCI_CONFIG_PORT = 0xcf8;
export const PCI_CONFIG_PORT_LENGTH = 8;
export const CONFIG_ADDRESS_ENABLE = 0x8000_0000;
/**
 * Reserved bits 30:24 read back as 0. Bits 1:0 are kept and OR'd into the register number,
 * as on QEMU's i440FX: kvm-unit-tests' accessors put a register's low bits there and then
 * read CONFIG_DATA at 0xCFC itself.
 */
const CONFIG_ADDRESS_WRITABLE = 0x80ff_ffff;
const CONFIG_DATA_OFFSET = 4;
/** 0xCF9, the PIIX reset control register, as an offset into the config ports. */
const RESET_CONTROL_OFFSET = 1;

/** One bus's worth of ECAM space; the whole range covers buses 0..255. */
export const ECAM_BYTES_PER_BUS = 1 << 20;
const ECAM_FUNCTION_SPACE = 4096;
/** Registers past the 256 bytes of conventional configuration space. */
const CONVENTIONAL_SPACE = 256;

export const I440FX_VENDOR_ID = 0x8086;
export const I440FX_DEVICE_ID = 0x1237;

/** The i440FX host bridge's own function: identity only, no BARs. */
export class I440fxHostBridge implements PciDevice {
  readonly name = "i440FX host bridge";
  readonly config = new PciConfigSpace({ vendorId: I440FX_VENDOR_ID, deviceId: I440FX_DEVICE_ID, classCode: 0x06_00_00, revision: 0x02 });
  barRead(): number {
    return 0xffff_ffff;
  }
  barWrite(): void {}
}

export class PciConfigPorts implements Device {
  readonly name = "pci config (0xcf8)";
  private address = 0;

  constructor(
    private readonly bus: PciBus,
    private readonly resetControl?: Device,
  ) {}

  get configAddress(): number {
    return this.address;
  }

  read(offset: number, size: AccessSize, wide: HighWord): number {
    if (offset === 0 && size === 4) return this.address;
    if (offset === RESET_CONTROL_OFFSET && size === 1 && this.resetControl !== undefined) return this.resetControl.read(0, 1, wide);
    if (offset < CONFIG_DATA_OFFSET || (this.address & CONFIG_ADDRESS_ENABLE) === 0) return allOnes(size, wide);
    const a = this.address;
    return this.bus.configRead((a >>> 16) & 0xff, (a >>> 11) & 0x1f, (a >>> 8) & 0x7, (a & 0xff) | (offset - CONFIG_DATA_OFFSET), size);
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset === 0 && size === 4) {
      this.address = (toUnsigned(value, 4) & CONFIG_ADDRESS_WRITABLE) >>> 0;
      return;
    }
    if (offset === RESET_CONTROL_OFFSET && size === 1) {
      this.resetControl?.write(0, 1, value, 0);
      return;
    }
    // Other narrow writes to 0xCF8-0xCFB are not config cycles.
    if (offset < CONFIG_DATA_OFFSET || (this.address & CONFIG_ADDRESS_ENABLE) === 0) return;
    const a = this.address;
    this.bus.configWrite((a >>> 16) & 0xff, (a >>> 11) & 0x1f, (a >>> 8) & 0x7, (a & 0xff) | (offset - CONFIG_DATA_OFFSET), size, value);
  }
}

export class PciEcam implements Device {
  readonly name = "pci ecam";

  constructor(private readonly bus: PciBus) {}

  read(offset: number, size: AccessSize, wide: HighWord): number {
    // An 8-byte access is two dword configuration cycles, as a PCIe root complex splits it.
    if (size === 8) {
      const low = this.read(offset, 4, wide);
      wide.high = this.read(offset + 4, 4, wide);
      return low;
    }
    const register = offset % ECAM_FUNCTION_SPACE;
    if (register + size > CONVENTIONAL_SPACE) return allOnes(size, wide);
    return this.bus.configRead(Math.floor(offset / ECAM_BYTES_PER_BUS), (offset >>> 15) & 0x1f, (offset >>> 12) & 0x7, register, size);
  }

  write(offset: number, size: AccessSize, value: number, high: number): void {
    if (size === 8) {
      this.write(offset, 4, value, 0);
      this.write(offset + 4, 4, high, 0);
      return;
    }
    const register = offset % ECAM_FUNCTION_SPACE;
    if (register + size > CONVENTIONAL_SPACE) return;
    this.bus.configWrite(Math.floor(offset / ECAM_BYTES_PER_BUS), (offset >>> 15) & 0x1f, (offset >>> 12) & 0x7, register, size, value);
  }
}
