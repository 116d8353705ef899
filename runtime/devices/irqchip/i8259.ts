/**
 * A userspace 8259A PIC pair (master at ports 0x20-0x21, slave at 0xa0-0xa1 on master IRQ 2)
 * with the PIIX edge/level control registers (ELCR, ports 0x4d0-0x4d1): ICW1-ICW4, OCW1
 * (mask), OCW2 (EOI, specific EOI, rotation, priority), OCW3 (IRR/ISR read, poll, special
 * mask), auto-EOI and special fully nested mode. The master's INT output goes to the boot
 * vCPU, which acknowledges (`acknowledge`, the INTA cycle) when it can take the interrupt.
 */
import { type AccessSize, type Device, toUnsigned } from "../device.js";

export const PIC_MASTER_PORT = 0x20;
export const PIC_SLAVE_PORT = 0xa0;
export const PIC_PORT_LENGTH = 2;
export const ELCR_PORT = 0x4d0;
export const ELCR_PORT_LENGTH = 2;
const CASCADE_IRQ = 2;
const SPURIOUS_IRQ = 7;
/** IRQs 0, 1, 2 (master) and 8, 13 (slave) are edge-only on the PIIX. */
const ELCR_WRITABLE = [0xf8, 0xde] as const;

/** One 8259A. */
class Chip {
  irr = 0;
  isr = 0;
  imr = 0;
  /** Line levels, for edge detection. */
  lines = 0;
  elcr = 0;
  priorityAdd = 0;
  base = 0;
  readIsr = false;
  poll = false;
  specialMask = false;
  initStep = 0;
  needsIcw4 = false;
  single = false;
  autoEoi = false;
  rotateOnAutoEoi = false;
  specialFullyNested = false;

  constructor(readonly isMaster: boolean) {}

  setLine(irq: number, level: boolean): void {
    const bit = 1 << irq;
    if (this.elcr & bit) {
      this.irr = level ? this.irr | bit : this.irr & ~bit;
    } else if (level && !(this.lines & bit)) {
      this.irr |= bit;
    }
    this.lines = level ? this.lines | bit : this.lines & ~bit;
  }

  /** Highest-priority position (0 best) among the bits of `mask`, 8 when none. */
  private priority(mask: number): number {
    if (mask === 0) return 8;
    let priority = 0;
    while (!(mask & (1 << ((priority + this.priorityAdd) & 7)))) priority++;
    return priority;
  }

  /** The IRQ this chip would present now, or -1. */
  pending(): number {
    const request = this.priority(this.irr & ~this.imr);
    if (request === 8) return -1;
    let inService = this.isr;
    if (this.specialMask) inService &= ~this.imr;
    // Special fully nested: the slave may interrupt again while its cascade is in service.
    if (this.specialFullyNested && this.isMaster) inService &= ~(1 << CASCADE_IRQ);
    return request < this.priority(inService) ? (request + this.priorityAdd) & 7 : -1;
  }

  acknowledge(irq: number): void {
    const bit = 1 << irq;
    if (this.autoEoi) {
      if (this.rotateOnAutoEoi) this.priorityAdd = (irq + 1) & 7;
    } else {
      this.isr |= bit;
    }
    // A level-triggered request stays until its line drops.
    if (!(this.elcr & bit)) this.irr &= ~bit;
  }

  writeCommand(value: number): void {
    if (value & 0x10) {
      // ICW1: the chip restarts initialisation; edge detection and masks start afresh.
      this.lines = 0;
      this.irr &= this.elcr;
      this.imr = 0;
      this.isr = 0;
      this.priorityAdd = 0;
      this.readIsr = false;
      this.poll = false;
      this.specialMask = false;
      this.autoEoi = false;
      this.rotateOnAutoEoi = false;
      this.specialFullyNested = false;
      this.initStep = 1;
      this.needsIcw4 = (value & 0x01) !== 0;
      this.single = (value & 0x02) !== 0;
    } else if (value & 0x08) {
      // OCW3
      if (value & 0x04) this.poll = true;
      if (value & 0x02) this.readIsr = (value & 0x01) !== 0;
      if (value & 0x40) this.specialMask = (value & 0x20) !== 0;
    } else {
      this.writeOcw2(value);
    }
  }

  private writeOcw2(value: number): void {
    const command = value >> 5;
    switch (command) {
      case 0: // rotate in auto-EOI mode: clear
      case 4: // set
        this.rotateOnAutoEoi = command === 4;
        break;
      case 1: // non-specific EOI
      case 5: { // rotate on non-specific EOI
        const priority = this.priority(this.isr);
        if (priority === 8) break;
        const irq = (priority + this.priorityAdd) & 7;
        this.isr &= ~(1 << irq);
        if (command === 5) this.priorityAdd = (irq + 1) & 7;
        break;
      }
      case 3: // specific EOI
        this.isr &= ~(1 << (value & 7));
        break;
      case 6: // set priority: the named IRQ becomes the lowest
        this.priorityAdd = ((value & 7) + 1) & 7;
        break;
      case 7: // rotate on specific EOI
        this.isr &= ~(1 << (value & 7));
        this.priorityAdd = ((value & 7) + 1) & 7;
        break;
      default: // 2: no operation
    }
  }

  writeData(value: number): void {
    switch (this.initStep) {
      case 1: // ICW2: the vector base
        this.base = value & 0xf8;
        this.initStep = this.single ? (this.needsIcw4 ? 3 : 0) : 2;
        break;
      case 2: // ICW3: cascade wiring, fixed on a PC
        this.initStep = this.needsIcw4 ? 3 : 0;
        break;
      case 3: // ICW4
        this.specialFullyNested = (value & 0x10) !== 0;
        this.autoEoi = (value & 0x02) !== 0;
        this.initStep = 0;
        break;
      default: // OCW1
        this.imr = value;
    }
  }

  readCommand(): number {
    return this.readIsr ? this.isr : this.irr;
  }
}

export class I8259Pair {
  private readonly master = new Chip(true);
  private readonly slave = new Chip(false);
  /** The chips by ELCR port offset, built once: an access builds nothing. */
  private readonly elcrChips: readonly [Chip, Chip] = [this.master, this.slave];
  private output = false;
  /** The master and slave command/data ports, and the ELCR pair, as bus devices. */
  readonly masterPorts: Device;
  readonly slavePorts: Device;
  readonly elcrPorts: Device;

  /** `onOutput` follows the master's INT line (true: an interrupt waits for INTA). */
  constructor(private readonly onOutput: (level: boolean) => void) {
    this.masterPorts = this.ports("pic master", this.master);
    this.slavePorts = this.ports("pic slave", this.slave);
    this.elcrPorts = {
      name: "pic elcr",
      read: (offset: number) => (offset < 2 ? this.elcrChips[offset].elcr : 0),
      write: (offset: number, size: AccessSize, value: number) => {
        const n = toUnsigned(value, size);
        for (let i = 0; i < size && offset + i < 2; i++) {
          this.elcrChips[offset + i].elcr = (n >>> (i * 8)) & ELCR_WRITABLE[offset + i];
        }
        this.update();
      },
    };
  }

  /** The vector bases PC firmware leaves (ICW2 of each chip). */
  setVectorBases(master: number, slave: number): void {
    this.master.base = master & 0xf8;
    this.slave.base = slave & 0xf8;
  }

  /** ISA IRQ `irq` (0-15) to `level`. */
  setLine(irq: number, level: boolean): void {
    if (!Number.isInteger(irq) || irq < 0 || irq > 15) throw new RangeError(`PIC IRQ ${irq} does not exist (0-15)`);
    if (irq < 8) this.master.setLine(irq, level);
    else this.slave.setLine(irq - 8, level);
    this.update();
  }

  get interruptPending(): boolean {
    return this.output;
  }

  /** The INTA cycle: the vector of the highest-priority request, now in service (spurious IRQ 7 when none). */
  acknowledge(): number {
    let vector: number;
    const irq = this.master.pending();
    if (irq < 0) {
      vector = this.master.base + SPURIOUS_IRQ;
    } else {
      this.master.acknowledge(irq);
      if (irq === CASCADE_IRQ) {
        const slaveIrq = this.slave.pending();
        if (slaveIrq >= 0) this.slave.acknowledge(slaveIrq);
        vector = this.slave.base + (slaveIrq >= 0 ? slaveIrq : SPURIOUS_IRQ);
      } else {
        vector = this.master.base + irq;
      }
    }
    this.update();
    return vector;
  }

  private ports(name: string, chip: Chip): Device {
    return {
      name,
      read: (offset: number) => {
        if (offset === 1) return chip.imr;
        if (!chip.poll) return chip.readCommand();
        chip.poll = false;
        const irq = this.pollChip(chip);
        return irq < 0 ? 0 : 0x80 | irq;
      },
      write: (offset: number, size: AccessSize, value: number) => {
        const n = toUnsigned(value, size) & 0xff;
        if (offset === 0) chip.writeCommand(n);
        else if (offset === 1) chip.writeData(n);
        this.update();
      },
    };
  }

  /** A poll command's read: acknowledges like INTA, without a vector. */
  private pollChip(chip: Chip): number {
    const irq = chip.pending();
    if (irq >= 0) chip.acknowledge(irq);
    this.update();
    return irq;
  }

  private update(): void {
    // The slave's INT drives the master's IRQ 2, level-style.
    const slaveOut = this.slave.pending() >= 0;
    const bit = 1 << CASCADE_IRQ;
    if (slaveOut) this.master.irr |= bit;
    else this.master.irr &= ~bit;
    this.master.lines = slaveOut ? this.master.lines | bit : this.master.lines & ~bit;
    const output = this.master.pending() >= 0;
    if (output !== this.output) {
      this.output = output;
      this.onOutput(output);
    }
  }
}
