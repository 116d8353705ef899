/**
 * The ACPI PM1a event and control registers (ACPI 4.8.3): PM1_STS (write 1 to clear),
 * PM1_EN, and PM1_CNT with SCI_EN set, since there is no SMI_CMD to switch modes. A write
 * of SLP_EN requests a sleep state, which the machine carries out (pc-machine.ts); on waking
 * it sets WAK_STS and the wake source's status bit (`wake`).
 */
import { type AccessSize, type Device, toUnsigned } from "./device.js";

/** Event block (4 bytes: STS, EN) followed by the control block (2 bytes), as one range. */
export const PM1_REGISTERS_LENGTH = 6;
const SCI_EN = 1 << 0;
const SLP_EN = 1 << 13;
/** PM1_STS / PM1_EN bit 10: the RTC alarm (as a wake source); PM1_STS bit 15: woken. */
export const PM1_RTC = 1 << 10;
const WAK_STS = 1 << 15;
/** SLP_TYP values of the sleep states, as QEMU's PIIX4 PM numbers them (the DSDT's \_Sx_). */
export const SLEEP_TYPE_S5 = 0;
export const SLEEP_TYPE_S3 = 1;

export class AcpiPm1Registers implements Device {
  readonly name = "acpi-pm1";
  private status = 0;
  private enable = 0;
  private control = SCI_EN;

  constructor(private readonly onSleep: (sleepType: number) => void) {}

  /** PM1_EN: the events the guest enabled (e.g. PM1_RTC as a wake source). */
  get enabledEvents(): number {
    return this.enable;
  }

  /** The machine woke from a sleep state because of `sources` (PM1_STS bits): WAK_STS and those are set. */
  wake(sources: number): void {
    this.status |= WAK_STS | (sources & 0xffff);
  }

  private register(offset: number): "status" | "enable" | "control" | undefined {
    if (offset === 0) return "status";
    if (offset === 2) return "enable";
    if (offset === 4) return "control";
    return undefined;
  }

  read(offset: number, size: AccessSize): number {
    const name = this.register(offset & ~1);
    const word = name === undefined ? 0xffff : this[name];
    const value = (offset & 1) === 0 ? word | ((size > 2 ? this.read(offset + 2, 2) : 0) << 16) : word >> 8;
    return toUnsigned(value, size);
  }

  write(offset: number, size: AccessSize, value: number): void {
    const v = toUnsigned(value, size);
    const name = this.register(offset);
    if (name === "status") this.status &= ~(v & 0xffff);
    else if (name === "enable") this.enable = v & 0xffff;
    else if (name === "control") {
      this.control = (v & ~SLP_EN & 0xffff) | SCI_EN;
      if (v & SLP_EN) this.onSleep((v >> 10) & 7);
    }
    if (size === 4 && offset < 4) this.write(offset + 2, 2, v >>> 16);
  }
}
