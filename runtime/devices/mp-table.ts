/**
 * The Intel MultiProcessor Specification 1.4 tables, for kernels that find CPUs and
 * interrupt routing through them rather than ACPI: the MP floating pointer structure
 * (4.1) in the BIOS ROM area, where OSes scan for "_MP_" on 16-byte boundaries, and right
 * after it the configuration table (4.2): one processor entry per vCPU, the ISA and PCI
 * buses, the IOAPIC, an I/O interrupt entry per ISA IRQ (IRQ 0 on pin 2) and per PCI
 * slot's INTA-D, and the local APIC's LINT0 (ExtINT) and LINT1 (NMI).
 */
import type { GuestMemory } from "../../memory/guest-memory.js";
import { checksumByte, putAscii } from "./firmware-bytes.js";

export class MpTableError extends Error {
  override name = "MpTableError";
}

export interface MpTableOptions {
  /** Where the floating pointer goes: 16-byte aligned, in 0xF0000-0xFFFFF; the table follows it. */
  address: number;
  /** vCPUs; CPU i has local APIC ID i, CPU 0 is the bootstrap processor. */
  cpus: number;
  localApicAddress: number;
  ioApicId: number;
  ioApicAddress: number;
  /** ISA IRQs that are level-triggered, active-high (the SCI, IRQs carrying PCI INTx). */
  levelIsaIrqs: number[];
  /** The IOAPIC input INTx `pin` (1 = INTA#) of PCI bus 0's `slot` reaches. */
  pciIntxGsi: (slot: number, pin: number) => number;
}

const BIOS_ROM_START = 0xf0000;
const BIOS_ROM_END = 0x100000;
const FLOATING_POINTER_LENGTH = 16;
const SPEC_REVISION_1_4 = 4;
const HEADER_LENGTH = 44;
const PROCESSOR_ENTRY_LENGTH = 20;
const SHORT_ENTRY_LENGTH = 8;

const ENTRY_PROCESSOR = 0;
const ENTRY_BUS = 1;
const ENTRY_IO_APIC = 2;
const ENTRY_IO_INTERRUPT = 3;
const ENTRY_LOCAL_INTERRUPT = 4;

const CPU_ENABLED = 1 << 0;
const CPU_BOOTSTRAP = 1 << 1;
/** Local APIC version of an integrated (xAPIC) local APIC, as KVM's reports. */
const LOCAL_APIC_VERSION = 0x14;
/** An 82093AA-style IOAPIC version (KVM's in-kernel IOAPIC reports 0x11). */
const IO_APIC_VERSION = 0x11;
const IO_APIC_ENABLED = 1;
/** CPU signature: family 6; feature flags: FPU (bit 0) and on-chip APIC (bit 9). */
const CPU_SIGNATURE = 0x600;
const CPU_FEATURES = (1 << 0) | (1 << 9);

const INTERRUPT_INT = 0;
const INTERRUPT_NMI = 1;
const INTERRUPT_EXTINT = 3;
/** Polarity and trigger that conform to the bus (ISA: edge, active-high). */
const CONFORMS = 0x0;
/** Active-high (bits 1:0 = 01), level-triggered (bits 3:2 = 11). */
const ACTIVE_HIGH_LEVEL = 0xd;
const ALL_LOCAL_APICS = 0xff;

const PCI_BUS_ID = 0;
const ISA_BUS_ID = 1;
const PCI_SLOTS = 32;
const ISA_IRQS = 16;
const ISA_CASCADE_IRQ = 2;
const MAX_CPUS = 255;


/** Writes the MP floating pointer and configuration table; returns the table's address. */
export function writeMpTable(memory: GuestMemory, options: MpTableOptions): { floatingPointer: number; table: number; end: number } {
  const { address, cpus } = options;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
    throw new MpTableError(`MP table: cpus must be a whole number from 1 to ${MAX_CPUS}, got ${cpus}`);
  }
  const ioInterrupts = ISA_IRQS - 1 + PCI_SLOTS * 4;
  const tableLength = HEADER_LENGTH + cpus * PROCESSOR_ENTRY_LENGTH + (2 + 1 + ioInterrupts + 2) * SHORT_ENTRY_LENGTH;
  const total = FLOATING_POINTER_LENGTH + tableLength;
  if (!Number.isInteger(address) || address % 16 !== 0 || address < BIOS_ROM_START || address + total > BIOS_ROM_END) {
    throw new MpTableError(
      `MP table: address must be 16-byte aligned with its ${total} bytes inside the BIOS ROM area 0xf0000-0xfffff (where OSes scan), got ${address}`,
    );
  }
  if (!memory.isBacked(address, total)) throw new MpTableError(`MP table: [0x${address.toString(16)}, +${total}) is not guest RAM`);
  const table = address + FLOATING_POINTER_LENGTH;

  const area = new Uint8Array(total);
  const view = new DataView(area.buffer);
  // Floating pointer (MPS 4.1): feature byte 1 = 0 (a configuration table is present),
  // byte 2 bit 7 (IMCRP) clear: virtual wire mode, no IMCR to switch.
  putAscii(area, 0, "_MP_");
  view.setUint32(4, table, true);
  area[8] = 1; // length in 16-byte units
  area[9] = SPEC_REVISION_1_4;
  area[10] = checksumByte(area, 0, FLOATING_POINTER_LENGTH);

  const t = FLOATING_POINTER_LENGTH;
  putAscii(area, t, "PCMP");
  view.setUint16(t + 4, tableLength, true);
  area[t + 6] = SPEC_REVISION_1_4;
  putAscii(area, t + 8, "WRKVSR  ");
  putAscii(area, t + 16, "WORKVISOR   ");
  let entries = 0;
  view.setUint32(t + 36, options.localApicAddress, true);
  let at = t + HEADER_LENGTH;

  for (let cpu = 0; cpu < cpus; cpu++, entries++) {
    area.set([ENTRY_PROCESSOR, cpu, LOCAL_APIC_VERSION, CPU_ENABLED | (cpu === 0 ? CPU_BOOTSTRAP : 0)], at);
    view.setUint32(at + 4, CPU_SIGNATURE, true);
    view.setUint32(at + 8, CPU_FEATURES, true);
    at += PROCESSOR_ENTRY_LENGTH;
  }
  for (const [id, type] of [[PCI_BUS_ID, "PCI   "], [ISA_BUS_ID, "ISA   "]] as const) {
    area.set([ENTRY_BUS, id], at);
    putAscii(area, at + 2, type);
    at += SHORT_ENTRY_LENGTH;
    entries++;
  }
  area.set([ENTRY_IO_APIC, options.ioApicId, IO_APIC_VERSION, IO_APIC_ENABLED], at);
  view.setUint32(at + 4, options.ioApicAddress, true);
  at += SHORT_ENTRY_LENGTH;
  entries++;

  const interrupt = (entryType: number, kind: number, flags: number, bus: number, busIrq: number, destination: number, pin: number): void => {
    area.set([entryType, kind], at);
    view.setUint16(at + 2, flags, true);
    area.set([bus, busIrq, destination, pin], at + 4);
    at += SHORT_ENTRY_LENGTH;
    entries++;
  };
  for (let irq = 0; irq < ISA_IRQS; irq++) {
    if (irq === ISA_CASCADE_IRQ) continue;
    const flags = options.levelIsaIrqs.includes(irq) ? ACTIVE_HIGH_LEVEL : CONFORMS;
    // The PIT's IRQ 0 arrives on pin 2, as the MADT's interrupt source override says.
    interrupt(ENTRY_IO_INTERRUPT, INTERRUPT_INT, flags, ISA_BUS_ID, irq, options.ioApicId, irq === 0 ? 2 : irq);
  }
  for (let slot = 0; slot < PCI_SLOTS; slot++) {
    for (let pin = 0; pin < 4; pin++) {
      const gsi = options.pciIntxGsi(slot, pin + 1);
      // A PCI source IRQ is the slot in bits 6:2 and the pin (0 = INTA#) in bits 1:0 (MPS D.3).
      interrupt(ENTRY_IO_INTERRUPT, INTERRUPT_INT, ACTIVE_HIGH_LEVEL, PCI_BUS_ID, (slot << 2) | pin, options.ioApicId, gsi);
    }
  }
  // LINT0 is the 8259's ExtINT, LINT1 the NMI, on every local APIC (virtual wire mode).
  interrupt(ENTRY_LOCAL_INTERRUPT, INTERRUPT_EXTINT, CONFORMS, ISA_BUS_ID, 0, ALL_LOCAL_APICS, 0);
  interrupt(ENTRY_LOCAL_INTERRUPT, INTERRUPT_NMI, CONFORMS, ISA_BUS_ID, 0, ALL_LOCAL_APICS, 1);

  view.setUint16(t + 34, entries, true);
  area[t + 7] = checksumByte(area, t, tableLength);
  memory.write(address, area);
  return { floatingPointer: address, table, end: address + total };
}
