/**
 * The reset control register of Intel's PIIX3/PIIX4 and ICH south bridges at I/O port 0xCF9,
 * the register PC firmware names as the ACPI reset register (FADT RESET_REG, value 0x06).
 * Bit 2 (RST_CPU) set resets the machine; bit 1 (SYS_RST: hard rather than soft reset) is
 * the only other bit kept, and reads back. There is no warm/cold distinction here: either
 * way the VM ends with reason "reset", as with the i8042's reset line.
 *
 * The port sits inside the PCI configuration ports 0xCF8-0xCFF; the host bridge's
 * PciConfigPorts hands it the byte accesses at 0xCF9 (host-bridge.ts).
 */
import { toUnsigned, type AccessSize, type Device } from "./device.js";

export const RESET_CONTROL_PORT = 0xcf9;
/** SYS_RST | RST_CPU: what PC firmware puts in the FADT's RESET_VALUE. */
export const RESET_CONTROL_RESET_VALUE = 0x06;
const SYS_RST = 1 << 1;
const RST_CPU = 1 << 2;

export class ResetControl implements Device {
  readonly name = "reset control (0xcf9)";
  private value = 0;
  constructor(private readonly onReset: () => void) {}

  read(_offset: number, size: AccessSize): number {
    return this.value;
  }

  write(_offset: number, size: AccessSize, value: number): void {
    const v = toUnsigned(value, size) & 0xff;
    if (v & RST_CPU) this.onReset();
    else this.value = v & SYS_RST;
  }
}
