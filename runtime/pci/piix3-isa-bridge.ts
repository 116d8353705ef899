/**
 * The PIIX3 PCI-to-ISA bridge at 00:01.0 (Intel 82371SB function 0, 8086:7000), as QEMU's
 * i440FX `pc` machine has it. Of its registers only the PIRQ route controls are modelled
 * (PIRQRC[A:D] at 0x60-0x63, 82371SB datasheet 2.2.9): each steers one PCI interrupt line
 * to an IRQ, or (bit 7) to none. Firmware has programmed them before the OS runs; the OS
 * may reprogram them (Linux's PIRQ router, an ACPI link device's _SRS), and INTx follows.
 * As on QEMU's board, the IRQ a PIRQ is steered to is also its IOAPIC input (GSI).
 */
import type { AccessSize } from "../devices/device.js";
import { PciConfigError, PciConfigSpace } from "./config-space.js";
import type { PirqRouter } from "./pci-bus.js";
import type { PciDevice } from "./pci-device.js";

export const PIIX3_VENDOR_ID = 0x8086;
export const PIIX3_DEVICE_ID = 0x7000;
export const PIIX3_SLOT = 1;
/** Bridge device, PCI-to-ISA bridge. */
export const ISA_BRIDGE_CLASS = 0x06_01_00;
/** PIRQRCA; B, C and D follow. */
export const PIRQ_ROUTE_CONTROL = 0x60;
export const PIRQ_COUNT = 4;
/** IRQROUTEEN: set = this PIRQ is routed nowhere (the reset value is 0x80). */
export const PIRQ_ROUTING_DISABLED = 0x80;
const PIRQ_IRQ_MASK = 0x0f;
/** IRQs a PIRQ may reach; 0-2, 8 and 13 are reserved (timer, keyboard, cascade, RTC, FPU). */
const ROUTABLE_IRQS: ReadonlySet<number> = new Set([3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15]);
/** Header type bit 7: the PIIX3 is a multi-function device (IDE, USB follow on a real one). */
const MULTI_FUNCTION = 0x80;

export class Piix3IsaBridge implements PciDevice {
  readonly name = "PIIX3 PCI-to-ISA bridge";
  readonly config = new PciConfigSpace({ vendorId: PIIX3_VENDOR_ID, deviceId: PIIX3_DEVICE_ID, classCode: ISA_BRIDGE_CLASS, headerType: MULTI_FUNCTION });

  /**
   * `firmwareRoutes`: the IRQ each of PIRQA-D is steered to at hand-over; `routesChanged`:
   * called after the guest wrote a route register.
   */
  constructor(firmwareRoutes: readonly number[], private readonly routesChanged: () => void) {
    if (firmwareRoutes.length !== PIRQ_COUNT || firmwareRoutes.some((irq) => !ROUTABLE_IRQS.has(irq))) {
      throw new PciConfigError(`PIRQ routes must be ${PIRQ_COUNT} IRQs from ${[...ROUTABLE_IRQS].join(", ")}, got ${firmwareRoutes.join(", ")}`);
    }
    firmwareRoutes.forEach((irq, pirq) => this.config.setU8(PIRQ_ROUTE_CONTROL + pirq, irq));
    // Bits 6:4 are reserved and read 0.
    this.config.setWritable(PIRQ_ROUTE_CONTROL, PIRQ_COUNT, 0x8f8f_8f8f);
  }

  /** The IRQ (and GSI) PIRQ `pirq` (0 = A) is steered to now, or undefined when it is not routed. */
  readonly route: PirqRouter = (pirq) => {
    if (!Number.isInteger(pirq) || pirq < 0 || pirq >= PIRQ_COUNT) return undefined;
    const control = this.config.u8(PIRQ_ROUTE_CONTROL + pirq);
    const irq = control & PIRQ_IRQ_MASK;
    return (control & PIRQ_ROUTING_DISABLED) === 0 && ROUTABLE_IRQS.has(irq) ? irq : undefined;
  };

  configWritten(register: number, size: AccessSize): void {
    if (register < PIRQ_ROUTE_CONTROL + PIRQ_COUNT && register + size > PIRQ_ROUTE_CONTROL) this.routesChanged();
  }

  barRead(): number {
    return 0xffff_ffff;
  }
  barWrite(): void {}
}
