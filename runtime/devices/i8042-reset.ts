/**
 * The part of the PC keyboard controller (i8042) that ends a VM: its command port 0x64,
 * where the command 0xFE pulses the CPU reset line, the way Linux's reboot=kbd (tried after
 * ACPI's reset register) and most firmware reset the machine. Reads report an idle
 * controller (no data, input buffer empty) so a writer waiting for room never stalls.
 * No PNP0303 device is described in ACPI, so Linux's i8042 driver does not probe further.
 */
import { toUnsigned, type AccessSize, type Device } from "./device.js";

export const I8042_COMMAND_PORT = 0x64;
const PULSE_RESET = 0xfe;

export class I8042Reset implements Device {
  readonly name = "i8042-reset";
  constructor(private readonly onReset: () => void) {}

  read(_offset: number, size: AccessSize): number {
    return 0;
  }

  write(_offset: number, size: AccessSize, value: number): void {
    if ((toUnsigned(value, size) & 0xff) === PULSE_RESET) this.onReset();
  }
}
