/**
 * The PC's interrupt controllers in userspace, for split mode (the local APICs stay in the
 * hypervisor): the IOAPIC, the 8259A pair and, unless left out, the 8254 PIT, wired as a
 * PC wires them. ISA IRQ n reaches PIC input n and IOAPIC pin n, except IRQ 0 (the PIT's),
 * which reaches IOAPIC pin 2 as the MADT's interrupt source override says; GSIs 16-23 reach
 * the IOAPIC alone.
 */
import type { IoapicPinRoute } from "../../hypervisor/hypervisor.js";
import type { Device } from "../device.js";
import { Ioapic, IOAPIC_BASE, IOAPIC_LENGTH, IOAPIC_PINS } from "./ioapic.js";
import { ELCR_PORT, ELCR_PORT_LENGTH, I8259Pair, PIC_MASTER_PORT, PIC_PORT_LENGTH, PIC_SLAVE_PORT } from "./i8259.js";
import { I8254, PIT_PORT, PIT_PORT_LENGTH, SPEAKER_PORT } from "./i8254.js";

const ISA_IRQS = 16;
/** How long a level interrupt may await its EOI before the vCPUs are nudged, and the longest wait between nudges. */
const EOI_OVERDUE_MS = 20;
const EOI_OVERDUE_MAX_MS = 1000;
const PIT_IRQ = 0;
const PIT_IOAPIC_PIN = 2;

export interface SplitIrqChipOptions {
  /** Sends an MSI to the local APICs. */
  deliverMsi(address: bigint, data: number): void;
  /** The IOAPIC's level-triggered pins as MSIs, for the hypervisor's EOI reports. */
  routeLevelPins(routes: readonly IoapicPinRoute[]): void;
  /** The PIC's INT output, wired to the boot vCPU's LINT0. */
  onPicOutput(level: boolean): void;
  /** Whether the machine has a PIT (QEMU's `-machine pit=off` is false). */
  pit: boolean;
  /**
   * A level interrupt has awaited its EOI for a while: make halted vCPUs enter the guest
   * once, so a report the hypervisor left pending while they halted is sent (PVM does).
   */
  onEoiOverdue?(): void;
}

export interface IrqChipDevice {
  space: "pio" | "mmio";
  base: number;
  length: number;
  device: Device;
}

export class SplitIrqChip {
  readonly ioapic: Ioapic;
  readonly pic: I8259Pair;
  readonly pit: I8254 | undefined;
  private eoiWatch: NodeJS.Timeout | undefined;
  private closed = false;
  /** Times `onEoiOverdue` was called. */
  eoiNudges = 0;

  constructor(private readonly options: SplitIrqChipOptions) {
    this.ioapic = new Ioapic({
      deliver: options.deliverMsi, routeLevelPins: options.routeLevelPins, onLevelSent: () => this.watchEoi(EOI_OVERDUE_MS),
    });
    this.pic = new I8259Pair(options.onPicOutput);
    this.pit = options.pit ? new I8254({ irq0: (level) => this.setLine(PIT_IRQ, level) }) : undefined;
  }

  /** Drives GSI `gsi` (an ISA IRQ below 16, or an IOAPIC-only line 16-23). */
  setLine(gsi: number, level: boolean): void {
    if (!Number.isInteger(gsi) || gsi < 0 || gsi >= IOAPIC_PINS) throw new RangeError(`interrupt line ${gsi} does not exist (GSIs 0-${IOAPIC_PINS - 1})`);
    if (gsi < ISA_IRQS) this.pic.setLine(gsi, level);
    this.ioapic.setLine(gsi === PIT_IRQ ? PIT_IOAPIC_PIN : gsi, level);
  }

  /** The bus ranges the controllers answer. */
  devices(): IrqChipDevice[] {
    const devices: IrqChipDevice[] = [
      { space: "mmio", base: IOAPIC_BASE, length: IOAPIC_LENGTH, device: this.ioapic },
      { space: "pio", base: PIC_MASTER_PORT, length: PIC_PORT_LENGTH, device: this.pic.masterPorts },
      { space: "pio", base: PIC_SLAVE_PORT, length: PIC_PORT_LENGTH, device: this.pic.slavePorts },
      { space: "pio", base: ELCR_PORT, length: ELCR_PORT_LENGTH, device: this.pic.elcrPorts },
    ];
    if (this.pit !== undefined) {
      devices.push(
        { space: "pio", base: PIT_PORT, length: PIT_PORT_LENGTH, device: this.pit.ports },
        { space: "pio", base: SPEAKER_PORT, length: 1, device: this.pit.speakerPort },
      );
    }
    return devices;
  }

  /** While a level interrupt awaits its EOI, nudges at growing intervals; costs nothing otherwise. */
  private watchEoi(delayMs: number): void {
    if (this.options.onEoiOverdue === undefined || this.eoiWatch !== undefined || this.closed) return;
    this.eoiWatch = setTimeout(() => {
      this.eoiWatch = undefined;
      if (this.closed || !this.ioapic.awaitingEoi) return;
      this.eoiNudges++;
      this.options.onEoiOverdue!();
      this.watchEoi(Math.min(EOI_OVERDUE_MAX_MS, delayMs * 2));
    }, delayMs);
    this.eoiWatch.unref();
  }

  close(): void {
    this.closed = true;
    if (this.eoiWatch !== undefined) clearTimeout(this.eoiWatch);
    this.eoiWatch = undefined;
    this.pit?.close();
  }
}
