import type { GuestMemory } from "../../memory/guest-memory.js";
import type { AccessSize, Device } from "./device.js";
import { amlBytes } from "./acpi-aml.js";
import { type DsdtDescription, dsdtTerms } from "./acpi-dsdt.js";
import { checksumByte, putAscii } from "./firmware-bytes.js";
import { hostMonotonicClock, type MonotonicClock } from "../host-monotonic-clock.js";

export type { MonotonicClock } from "../host-monotonic-clock.js";

/*
 * ACPI 1.0 firmware tables and the ACPI power-management timer.
 *
 * Layout written by writeAcpiTables (section numbers are ACPI 1.0b / 6.x names):
 *
 *   rsdpAddress   RSDP  20 bytes, in the BIOS area where OSes scan for it (5.2.5.1)
 *   tables + 0    FACS  64 bytes, 64-byte aligned, no checksum (5.2.10)
 *   then          DSDT  the namespace of `dsdt` (acpi-dsdt.ts) as AML
 *   then          FADT  ("FACP") revision 3 (ACPI 2.0), 244 bytes (5.2.9), for RESET_REG
 *   then          MADT  ("APIC") (5.2.12)
 *   then          MCFG  (only with the `ecam` option) (PCI Firmware Spec 3.0, 4.1.2)
 *   then          RSDT  -> FADT, MADT[, MCFG]
 *
 * Every table after the FACS starts on a 16-byte boundary. All pointers are 32-bit, so
 * everything must lie below 4 GiB.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
// MCFG (PCI Firmware Spec 3.0, table 4-2): header, 8 reserved bytes, 16-byte allocations.
const MCFG_ALLOCATIONS = 44;
const MCFG_LENGTH = MCFG_ALLOCATIONS + 16;
const FOUR_GIB = 2 ** 32;

export const DEFAULT_RSDP_ADDRESS = 0xe0000;
/** PIIX4-style PM I/O block at 0x600, as QEMU lays it out. */
export const DEFAULT_PM1A_EVENT_PORT = 0x600;
export const DEFAULT_PM1A_CONTROL_PORT = 0x604;
export const DEFAULT_PM_TIMER_PORT = 0x608;
export const DEFAULT_SCI_IRQ = 9;

export const LOCAL_APIC_ADDRESS = 0xfee0_0000;
export const IO_APIC_ADDRESS = 0xfec0_0000;
/** KVM's in-kernel IOAPIC comes out of reset with ID 0; the MADT must agree with it. */
export const IO_APIC_ID = 0;

export const PM_TIMER_LENGTH = 4;
const PM1_EVENT_LENGTH = 4; // PM1_STS + PM1_EN, 2 bytes each (minimum 4)
const PM1_CONTROL_LENGTH = 2;

/** The BIOS read-only area that OSes scan on 16-byte boundaries for "RSD PTR ". */
const RSDP_SCAN_START = 0xe0000;
const RSDP_SCAN_END = 0x100000;

const OEM_ID = "WRKVSR";
const OEM_TABLE_ID = "WORKVISR";
const OEM_REVISION = 1;
const CREATOR_ID = "WKVS";
const CREATOR_REVISION = 1;

// Standard description header (5.2.6).
const HEADER_LENGTH = 36;
const H_SIGNATURE = 0;
const H_LENGTH = 4;
const H_REVISION = 8;
const H_CHECKSUM = 9;
const H_OEM_ID = 10;
const H_OEM_TABLE_ID = 16;
const H_OEM_REVISION = 24;
const H_CREATOR_ID = 28;
const H_CREATOR_REVISION = 32;

// RSDP, ACPI 1.0 form (revision 0): 20 bytes, checksum over all of them.
const RSDP_LENGTH = 20;
const RSDP_CHECKSUM = 8;
const RSDP_OEM_ID = 9;
const RSDP_REVISION = 15;
const RSDP_RSDT_ADDRESS = 16;

// FACS (ACPI 1.0): 64 bytes, must be 64-byte aligned.
const FACS_LENGTH = 64;
const FACS_ALIGNMENT = 64;

// FADT field offsets (ACPI 1.0b table 5-6, ACPI 2.0 table 5-9). Revision 3 is the first with
// RESET_REG; Linux's acpi_reboot() ignores the reset register below revision 2. The 64-bit
// X_ fields stay 0: an OS then takes the 32-bit ones (ACPI 2.0, 5.2.9).
const FADT_LENGTH = 244;
const FADT_REVISION = 3;
const FADT_FIRMWARE_CTRL = 36;
const FADT_DSDT = 40;
const FADT_INT_MODEL = 44;
const FADT_SCI_INT = 46;
const FADT_SMI_CMD = 48;
const FADT_PM1A_EVT_BLK = 56;
const FADT_PM1A_CNT_BLK = 64;
const FADT_PM_TMR_BLK = 76;
const FADT_GPE0_BLK = 80;
const FADT_PM1_EVT_LEN = 88;
const FADT_PM1_CNT_LEN = 89;
const FADT_PM_TMR_LEN = 91;
const FADT_P_LVL2_LAT = 96;
const FADT_P_LVL3_LAT = 98;
const FADT_CENTURY = 108;
const FADT_IAPC_BOOT_ARCH = 109;
const FADT_FLAGS = 112;
const FADT_RESET_REG = 116;
const FADT_RESET_VALUE = 128;

/** INT_MODEL 1: multiple APIC (the MADT describes the interrupt controllers). */
const INT_MODEL_APIC = 1;
/** Latencies above 100 / 1000 microseconds mean "C2 / C3 not supported". */
const C2_NOT_SUPPORTED = 101;
const C3_NOT_SUPPORTED = 1001;
/** CMOS index of the RTC century register (our cmos-rtc serves it). */
const RTC_CENTURY_INDEX = 0x32;
const FADT_F_WBINVD = 1 << 0;
const FADT_F_PROC_C1 = 1 << 2;
/** Set = no fixed-feature power / sleep button (we have neither). */
const FADT_F_PWR_BUTTON = 1 << 4;
const FADT_F_SLP_BUTTON = 1 << 5;
// TMR_VAL_EXT (bit 8) stays clear: the PM timer is 24 bits wide.
const FADT_FLAGS_VALUE = FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON;
/** RESET_REG_SUP: the reset register is there (ACPI 2.0 table 5-10). */
const FADT_F_RESET_REG_SUP = 1 << 10;
/**
 * IAPC_BOOT_ARCH LEGACY_DEVICES | 8042: what a revision 1 FADT leaves an OS to assume, kept
 * so that a revision 3 one does not tell Linux the PC has no legacy devices.
 */
const IAPC_LEGACY_DEVICES_AND_8042 = 0x0003;
/** Generic Address Structure (5.2.3.1): space ID, bit width, bit offset, access size, address. */
const GAS_SYSTEM_IO = 1;
const GAS_ACCESS_BYTE = 1;

// MADT (5.2.12).
const MADT_LOCAL_APIC_ADDRESS = 36;
const MADT_FLAGS = 40;
const MADT_ENTRIES = 44;
const MADT_PCAT_COMPAT = 1;
const MADT_TYPE_LOCAL_APIC = 0;
const MADT_LOCAL_APIC_LENGTH = 8;
const MADT_LOCAL_APIC_ENABLED = 1;
const MADT_TYPE_IO_APIC = 1;
const MADT_IO_APIC_LENGTH = 12;
const MADT_TYPE_INTERRUPT_OVERRIDE = 2;
const MADT_INTERRUPT_OVERRIDE_LENGTH = 10;
const MADT_BUS_ISA = 0;
/** MPS INTI flags: polarity and trigger "conform to the bus" (ISA: edge, active high). */
const MPS_INTI_CONFORMS = 0x0000;
/** MPS INTI flags: active high (bits 1:0 = 01), level triggered (bits 3:2 = 11). */
const MPS_INTI_ACTIVE_HIGH_LEVEL = 0x000d;

const TABLE_ALIGNMENT = 16;
/** xAPIC IDs are 8 bits and 0xff is the broadcast ID. */
const MAX_CPUS = 255;

/** Options the caller gave writeAcpiTables that cannot describe a valid machine. */
export class AcpiTableError extends Error {
  override name = "AcpiTableError";
}

export interface AcpiTableOptions {
  /** Number of vCPUs (1..255); CPU i gets APIC ID i and ACPI processor UID i. */
  cpus: number;
  /** Guest-physical address of the table area; 64-byte aligned, in RAM, below 4 GiB. */
  tablesAddress: number;
  /** Where the RSDP goes: 16-byte aligned, in 0xE0000-0xFFFFF. Default 0xE0000. */
  rsdpAddress?: number;
  /** I/O port of the PM timer (PM_TMR_BLK). Default 0x608. */
  pmTimerPort?: number;
  /** I/O port of PM1a_EVT_BLK (PM1_STS, PM1_EN). Default 0x600. */
  pm1aEventPort?: number;
  /** I/O port of PM1a_CNT_BLK. Default 0x604. */
  pm1aControlPort?: number;
  /** ISA IRQ of the SCI (also its GSI, identity-mapped). Default 9. */
  sciIrq?: number;
  /**
   * ISA IRQs that carry PCI INTx (level-triggered, shared): each gets an active-high level
   * interrupt source override in the MADT, as QEMU's PC machine gives IRQs 10 and 11.
   */
  pciIrqs?: number[];
  /** PCI ECAM (MMCONFIG) of segment 0 for buses 0..endBus, announced in an MCFG table. */
  ecam?: { base: number; endBus: number };
  /** The namespace the DSDT describes; without it the DSDT holds no AML. */
  dsdt?: DsdtDescription;
  /**
   * The FADT's reset register: an I/O port where writing `value` (a byte) resets the
   * machine, as PIIX/ICH's reset control register at 0xCF9 with 0x06. Without it
   * RESET_REG_SUP stays clear.
   */
  resetRegister?: { port: number; value: number };
}

/** Guest-physical addresses of everything writeAcpiTables wrote. */
export interface AcpiTableAddresses {
  rsdp: number;
  rsdt: number;
  fadt: number;
  facs: number;
  dsdt: number;
  madt: number;
  /** Present with the `ecam` option. */
  mcfg?: number;
  /** First byte after the table area (the RSDP is separate). */
  tablesEnd: number;
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

function checkPort(name: string, port: number, length: number): void {
  if (!Number.isInteger(port) || port <= 0 || port + length > 0x10000) {
    throw new AcpiTableError(
      `ACPI: ${name} must be an I/O port from 1 to ${hex(0x10000 - length)} (the block is ${length} bytes), got ${port}`,
    );
  }
}


function writeHeader(view: DataView, bytes: Uint8Array, at: number, signature: string, length: number, revision: number): void {
  putAscii(bytes, at + H_SIGNATURE, signature);
  view.setUint32(at + H_LENGTH, length, true);
  view.setUint8(at + H_REVISION, revision);
  putAscii(bytes, at + H_OEM_ID, OEM_ID);
  putAscii(bytes, at + H_OEM_TABLE_ID, OEM_TABLE_ID);
  view.setUint32(at + H_OEM_REVISION, OEM_REVISION, true);
  putAscii(bytes, at + H_CREATOR_ID, CREATOR_ID);
  view.setUint32(at + H_CREATOR_REVISION, CREATOR_REVISION, true);
}

/** Fills in the checksum of a table whose header (with its length) is already written. */
function sealTable(view: DataView, bytes: Uint8Array, at: number): void {
  const length = view.getUint32(at + H_LENGTH, true);
  bytes[at + H_CHECKSUM] = 0;
  bytes[at + H_CHECKSUM] = checksumByte(bytes, at, length);
}

function madtLength(cpus: number, extraOverrides = 0): number {
  return (
    MADT_ENTRIES +
    cpus * MADT_LOCAL_APIC_LENGTH +
    MADT_IO_APIC_LENGTH +
    (2 + extraOverrides) * MADT_INTERRUPT_OVERRIDE_LENGTH
  );
}

/**
 * Writes ACPI 1.0 tables describing `cpus` xAPIC processors, one IOAPIC, the PM timer and
 * the PM1a blocks into guest memory, and returns where each table went. Nothing is
 * written unless every table fits in RAM; only GuestMemory's bounds-checked writes are used.
 */
export function writeAcpiTables(memory: GuestMemory, options: AcpiTableOptions): AcpiTableAddresses {
  const {
    cpus,
    tablesAddress,
    rsdpAddress = DEFAULT_RSDP_ADDRESS,
    pmTimerPort = DEFAULT_PM_TIMER_PORT,
    pm1aEventPort = DEFAULT_PM1A_EVENT_PORT,
    pm1aControlPort = DEFAULT_PM1A_CONTROL_PORT,
    sciIrq = DEFAULT_SCI_IRQ,
  } = options;

  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
    throw new AcpiTableError(`ACPI: cpus must be a whole number from 1 to ${MAX_CPUS}, got ${cpus}`);
  }
  if (
    !Number.isInteger(rsdpAddress) ||
    rsdpAddress % 16 !== 0 ||
    rsdpAddress < RSDP_SCAN_START ||
    rsdpAddress + RSDP_LENGTH > RSDP_SCAN_END
  ) {
    throw new AcpiTableError(
      `ACPI: rsdpAddress must be 16-byte aligned within ${hex(RSDP_SCAN_START)}-${hex(RSDP_SCAN_END - 1)} ` +
        `(where operating systems scan for the RSDP), got ${rsdpAddress}`,
    );
  }
  if (!Number.isSafeInteger(tablesAddress) || tablesAddress < 0 || tablesAddress % FACS_ALIGNMENT !== 0) {
    throw new AcpiTableError(
      `ACPI: tablesAddress must be ${FACS_ALIGNMENT}-byte aligned (the FACS it starts with must be), got ${tablesAddress}`,
    );
  }
  if (!Number.isInteger(sciIrq) || sciIrq < 1 || sciIrq > 15 || sciIrq === 2) {
    throw new AcpiTableError(`ACPI: sciIrq must be an ISA IRQ from 1 to 15 other than 2 (the cascade), got ${sciIrq}`);
  }
  checkPort("pmTimerPort", pmTimerPort, PM_TIMER_LENGTH);
  checkPort("pm1aEventPort", pm1aEventPort, PM1_EVENT_LENGTH);
  checkPort("pm1aControlPort", pm1aControlPort, PM1_CONTROL_LENGTH);
  const blocks: [string, number, number][] = [
    ["pmTimerPort", pmTimerPort, PM_TIMER_LENGTH],
    ["pm1aEventPort", pm1aEventPort, PM1_EVENT_LENGTH],
    ["pm1aControlPort", pm1aControlPort, PM1_CONTROL_LENGTH],
  ];
  for (let i = 0; i < blocks.length; i++) {
    for (let j = i + 1; j < blocks.length; j++) {
      const [an, a, al] = blocks[i];
      const [bn, b, bl] = blocks[j];
      if (a < b + bl && b < a + al) {
        throw new AcpiTableError(`ACPI: I/O blocks overlap: ${an} ${hex(a)} (+${al}) and ${bn} ${hex(b)} (+${bl})`);
      }
    }
  }

  // Lay the table area out relative to tablesAddress.
  const facsOffset = 0;
  const dsdtOffset = alignUp(facsOffset + FACS_LENGTH, TABLE_ALIGNMENT);
  const aml = amlBytes(options.dsdt === undefined ? [] : dsdtTerms(options.dsdt));
  const dsdtLength = HEADER_LENGTH + aml.length;
  const fadtOffset = alignUp(dsdtOffset + dsdtLength, TABLE_ALIGNMENT);
  const madtOffset = alignUp(fadtOffset + FADT_LENGTH, TABLE_ALIGNMENT);
  const pciIrqs = options.pciIrqs ?? [];
  for (const irq of pciIrqs) {
    if (!Number.isInteger(irq) || irq < 1 || irq > 15 || irq === 2 || irq === sciIrq || pciIrqs.indexOf(irq) !== pciIrqs.lastIndexOf(irq)) {
      throw new AcpiTableError(`ACPI: pciIrqs must be distinct ISA IRQs 1..15 other than 2 and the SCI (${sciIrq}), got ${pciIrqs.join(", ")}`);
    }
  }
  const madtSize = madtLength(cpus, pciIrqs.length);
  const reset = options.resetRegister;
  if (reset !== undefined) {
    checkPort("resetRegister.port", reset.port, 1);
    if (!Number.isInteger(reset.value) || reset.value < 0 || reset.value > 0xff) {
      throw new AcpiTableError(`ACPI: resetRegister.value must be a byte (0..255), got ${reset.value}`);
    }
  }
  const ecam = options.ecam;
  if (ecam !== undefined) {
    const buses = ecam.endBus + 1;
    if (!Number.isInteger(ecam.endBus) || ecam.endBus < 0 || ecam.endBus > 255) {
      throw new AcpiTableError(`ACPI: ecam.endBus must be a bus number 0..255, got ${ecam.endBus}`);
    }
    if (!Number.isSafeInteger(ecam.base) || ecam.base % MiB !== 0 || ecam.base + buses * MiB > FOUR_GIB) {
      throw new AcpiTableError(`ACPI: ecam.base must be 1 MiB aligned with its ${buses} MiB below 4 GiB, got ${hex(ecam.base)}`);
    }
  }
  const mcfgOffset = alignUp(madtOffset + madtSize, TABLE_ALIGNMENT);
  const rsdtOffset = ecam === undefined ? mcfgOffset : alignUp(mcfgOffset + MCFG_LENGTH, TABLE_ALIGNMENT);
  const rsdtEntries = ecam === undefined ? 2 : 3;
  const rsdtSize = HEADER_LENGTH + rsdtEntries * 4;
  const areaSize = rsdtOffset + rsdtSize;
  const tablesEnd = tablesAddress + areaSize;

  if (tablesEnd > FOUR_GIB) {
    throw new AcpiTableError(
      `ACPI: the tables (${areaSize} bytes at ${hex(tablesAddress)}) must end below 4 GiB; ACPI 1.0 pointers are 32-bit`,
    );
  }
  if (tablesAddress < rsdpAddress + RSDP_LENGTH && rsdpAddress < tablesEnd) {
    throw new AcpiTableError(
      `ACPI: the tables [${hex(tablesAddress)}, ${hex(tablesEnd)}) overlap the RSDP at ${hex(rsdpAddress)}`,
    );
  }
  if (!memory.isBacked(tablesAddress, areaSize)) {
    throw new AcpiTableError(
      `ACPI: [${hex(tablesAddress)}, ${hex(tablesEnd)}) (${Math.ceil(areaSize / KiB)} KiB of tables) is not all guest RAM; ` +
        `choose a tablesAddress inside one RAM region`,
    );
  }
  if (!memory.isBacked(rsdpAddress, RSDP_LENGTH)) {
    throw new AcpiTableError(
      `ACPI: the RSDP at ${hex(rsdpAddress)} is not backed by guest RAM; map RAM over the BIOS area (0xE0000-0xFFFFF)`,
    );
  }

  const area = new Uint8Array(areaSize);
  const view = new DataView(area.buffer);

  // FACS: no checksum; the waking vector and global lock start out zero.
  putAscii(area, facsOffset, "FACS");
  view.setUint32(facsOffset + 4, FACS_LENGTH, true);

  // DSDT. Revision 1 means 32-bit AML integers.
  writeHeader(view, area, dsdtOffset, "DSDT", dsdtLength, 1);
  area.set(aml, dsdtOffset + HEADER_LENGTH);
  sealTable(view, area, dsdtOffset);

  // FADT. SMI_CMD = 0 says the machine has no legacy (non-ACPI) mode to switch out of;
  // GPE blocks, PM1b and PM2 are absent (address and length 0).
  writeHeader(view, area, fadtOffset, "FACP", FADT_LENGTH, FADT_REVISION);
  view.setUint32(fadtOffset + FADT_FIRMWARE_CTRL, tablesAddress + facsOffset, true);
  view.setUint32(fadtOffset + FADT_DSDT, tablesAddress + dsdtOffset, true);
  view.setUint8(fadtOffset + FADT_INT_MODEL, INT_MODEL_APIC);
  view.setUint16(fadtOffset + FADT_SCI_INT, sciIrq, true);
  view.setUint32(fadtOffset + FADT_SMI_CMD, 0, true);
  view.setUint32(fadtOffset + FADT_PM1A_EVT_BLK, pm1aEventPort, true);
  view.setUint32(fadtOffset + FADT_PM1A_CNT_BLK, pm1aControlPort, true);
  view.setUint32(fadtOffset + FADT_PM_TMR_BLK, pmTimerPort, true);
  view.setUint32(fadtOffset + FADT_GPE0_BLK, 0, true);
  view.setUint8(fadtOffset + FADT_PM1_EVT_LEN, PM1_EVENT_LENGTH);
  view.setUint8(fadtOffset + FADT_PM1_CNT_LEN, PM1_CONTROL_LENGTH);
  view.setUint8(fadtOffset + FADT_PM_TMR_LEN, PM_TIMER_LENGTH);
  view.setUint16(fadtOffset + FADT_P_LVL2_LAT, C2_NOT_SUPPORTED, true);
  view.setUint16(fadtOffset + FADT_P_LVL3_LAT, C3_NOT_SUPPORTED, true);
  view.setUint8(fadtOffset + FADT_CENTURY, RTC_CENTURY_INDEX);
  view.setUint16(fadtOffset + FADT_IAPC_BOOT_ARCH, IAPC_LEGACY_DEVICES_AND_8042, true);
  view.setUint32(fadtOffset + FADT_FLAGS, FADT_FLAGS_VALUE | (reset === undefined ? 0 : FADT_F_RESET_REG_SUP), true);
  if (reset !== undefined) {
    view.setUint8(fadtOffset + FADT_RESET_REG, GAS_SYSTEM_IO);
    view.setUint8(fadtOffset + FADT_RESET_REG + 1, 8); // bit width
    view.setUint8(fadtOffset + FADT_RESET_REG + 3, GAS_ACCESS_BYTE);
    view.setBigUint64(fadtOffset + FADT_RESET_REG + 4, BigInt(reset.port), true);
    view.setUint8(fadtOffset + FADT_RESET_VALUE, reset.value);
  }
  sealTable(view, area, fadtOffset);

  // MADT.
  writeHeader(view, area, madtOffset, "APIC", madtSize, 1);
  view.setUint32(madtOffset + MADT_LOCAL_APIC_ADDRESS, LOCAL_APIC_ADDRESS, true);
  view.setUint32(madtOffset + MADT_FLAGS, MADT_PCAT_COMPAT, true);
  let entry = madtOffset + MADT_ENTRIES;
  for (let cpu = 0; cpu < cpus; cpu++) {
    view.setUint8(entry, MADT_TYPE_LOCAL_APIC);
    view.setUint8(entry + 1, MADT_LOCAL_APIC_LENGTH);
    view.setUint8(entry + 2, cpu); // ACPI processor UID
    view.setUint8(entry + 3, cpu); // APIC ID
    view.setUint32(entry + 4, MADT_LOCAL_APIC_ENABLED, true);
    entry += MADT_LOCAL_APIC_LENGTH;
  }
  view.setUint8(entry, MADT_TYPE_IO_APIC);
  view.setUint8(entry + 1, MADT_IO_APIC_LENGTH);
  view.setUint8(entry + 2, IO_APIC_ID);
  view.setUint8(entry + 3, 0);
  view.setUint32(entry + 4, IO_APIC_ADDRESS, true);
  view.setUint32(entry + 8, 0, true); // GSI base
  entry += MADT_IO_APIC_LENGTH;
  // The PIT's IRQ 0 arrives on IOAPIC pin 2, as on every PC since the first IOAPIC boards.
  entry = writeInterruptOverride(view, entry, 0, 2, MPS_INTI_CONFORMS);
  // Without an override an OS programs the SCI as level/active-low (ACPI 5.2.9). We never
  // raise it, and an idle line sits low, so declare it active-high level as QEMU does for
  // its PIIX4: an IOAPIC that honours polarity then sees it idle, not asserted forever.
  entry = writeInterruptOverride(view, entry, sciIrq, sciIrq, MPS_INTI_ACTIVE_HIGH_LEVEL);
  // PCI INTx lines are level-triggered; our host bridge drives them active-high into the IOAPIC.
  for (const irq of pciIrqs) entry = writeInterruptOverride(view, entry, irq, irq, MPS_INTI_ACTIVE_HIGH_LEVEL);
  sealTable(view, area, madtOffset);

  // MCFG: one allocation, segment 0, buses 0..endBus.
  if (ecam !== undefined) {
    writeHeader(view, area, mcfgOffset, "MCFG", MCFG_LENGTH, 1);
    view.setBigUint64(mcfgOffset + MCFG_ALLOCATIONS, BigInt(ecam.base), true);
    view.setUint16(mcfgOffset + MCFG_ALLOCATIONS + 8, 0, true);
    view.setUint8(mcfgOffset + MCFG_ALLOCATIONS + 10, 0);
    view.setUint8(mcfgOffset + MCFG_ALLOCATIONS + 11, ecam.endBus);
    sealTable(view, area, mcfgOffset);
  }

  // RSDT.
  writeHeader(view, area, rsdtOffset, "RSDT", rsdtSize, 1);
  view.setUint32(rsdtOffset + HEADER_LENGTH, tablesAddress + fadtOffset, true);
  view.setUint32(rsdtOffset + HEADER_LENGTH + 4, tablesAddress + madtOffset, true);
  if (ecam !== undefined) view.setUint32(rsdtOffset + HEADER_LENGTH + 8, tablesAddress + mcfgOffset, true);
  sealTable(view, area, rsdtOffset);

  // RSDP (ACPI 1.0: revision 0, 20 bytes, one checksum).
  const rsdp = new Uint8Array(RSDP_LENGTH);
  const rsdpView = new DataView(rsdp.buffer);
  putAscii(rsdp, 0, "RSD PTR ");
  putAscii(rsdp, RSDP_OEM_ID, OEM_ID);
  rsdp[RSDP_REVISION] = 0;
  rsdpView.setUint32(RSDP_RSDT_ADDRESS, tablesAddress + rsdtOffset, true);
  rsdp[RSDP_CHECKSUM] = checksumByte(rsdp, 0, RSDP_LENGTH);

  memory.write(tablesAddress, area);
  memory.write(rsdpAddress, rsdp);

  return {
    rsdp: rsdpAddress,
    rsdt: tablesAddress + rsdtOffset,
    fadt: tablesAddress + fadtOffset,
    facs: tablesAddress + facsOffset,
    dsdt: tablesAddress + dsdtOffset,
    madt: tablesAddress + madtOffset,
    ...(ecam === undefined ? {} : { mcfg: tablesAddress + mcfgOffset }),
    tablesEnd,
  };
}

function writeInterruptOverride(view: DataView, at: number, source: number, gsi: number, flags: number): number {
  view.setUint8(at, MADT_TYPE_INTERRUPT_OVERRIDE);
  view.setUint8(at + 1, MADT_INTERRUPT_OVERRIDE_LENGTH);
  view.setUint8(at + 2, MADT_BUS_ISA);
  view.setUint8(at + 3, source);
  view.setUint32(at + 4, gsi, true);
  view.setUint16(at + 8, flags, true);
  return at + MADT_INTERRUPT_OVERRIDE_LENGTH;
}

/** The ACPI PM timer runs at the PC's 14.31818 MHz crystal divided by 4. */
export const PM_TIMER_FREQUENCY_HZ = 3_579_545;
const NANOSECONDS_PER_SECOND = 1_000_000_000;
const PM_TIMER_MASK = 0xff_ffff;

/**
 * The ACPI power-management timer (ACPI 4.8.2.1 / 4.8.3.3): a read-only, free-running
 * 24-bit counter at 3.579545 MHz on a 4-byte I/O block (PM_TMR_BLK). It counts from 0
 * at construction, derived from a monotonic host clock, so it never runs backwards and
 * keeps counting while vCPUs are paused. Byte and word reads see the corresponding
 * bytes of the 32-bit register, whose top byte is always 0 (TMR_VAL_EXT = 0).
 */
export class AcpiPmTimer implements Device {
  readonly name = "acpi-pm-timer";

  private readonly clock: MonotonicClock;
  private readonly startSeconds: number;
  private readonly startNanoseconds: number;

  /**
   * `origin` is the VM's shared time origin (from `AcpiPmTimer.createOrigin()`): every vCPU
   * worker's copy of the timer counts from it, so the counter never runs backwards from
   * one vCPU to the next. Without one the timer counts from its own creation.
   */
  constructor(clock: MonotonicClock = hostMonotonicClock(), origin?: SharedArrayBuffer) {
    this.clock = clock;
    if (origin !== undefined && origin.byteLength < 8) {
      throw new RangeError(`ACPI PM timer origin must be a SharedArrayBuffer of 8 bytes, got ${origin.byteLength}`);
    }
    const start = origin === undefined ? nanoseconds(clock) : Atomics.load(new BigInt64Array(origin, 0, 1), 0);
    const second = BigInt(NANOSECONDS_PER_SECOND);
    this.startSeconds = Number(start / second);
    this.startNanoseconds = Number(start % second);
  }

  /** A VM's time origin: the host's monotonic clock now, in nanoseconds, in a SAB every worker shares. */
  static createOrigin(clock: MonotonicClock = hostMonotonicClock()): SharedArrayBuffer {
    const origin = new SharedArrayBuffer(8);
    Atomics.store(new BigInt64Array(origin), 0, nanoseconds(clock));
    return origin;
  }

  /**
   * The current 24-bit counter value: floor(elapsed ns * 3579545 / 10^9) mod 2^24, in
   * doubles that stay exact integers. Whole seconds contribute 3579545 ticks each (exact
   * for 79 years); the fraction's product stays below 2^53, and its quotient, never within
   * 10^-9 of an integer it is not, floors exactly. `&` wraps any exact integer mod 2^32.
   */
  get counter(): number {
    const clock = this.clock;
    clock.sample();
    let seconds = clock.seconds - this.startSeconds;
    let fraction = clock.nanoseconds - this.startNanoseconds;
    if (fraction < 0) {
      fraction += NANOSECONDS_PER_SECOND;
      seconds -= 1;
    }
    const ticks = seconds * PM_TIMER_FREQUENCY_HZ + Math.floor((fraction * PM_TIMER_FREQUENCY_HZ) / NANOSECONDS_PER_SECOND);
    return ticks & PM_TIMER_MASK;
  }

  read(offset: number, size: AccessSize): number {
    const value = offset >= 0 && offset < PM_TIMER_LENGTH ? this.counter >>> (offset * 8) : 0;
    return size >= 4 ? value : value & ((1 << (size * 8)) - 1);
  }

  write(_offset: number, _size: AccessSize, _value: number): void {
    // The timer is read-only; writes are ignored.
  }
}

function nanoseconds(clock: MonotonicClock): bigint {
  clock.sample();
  return BigInt(clock.seconds) * BigInt(NANOSECONDS_PER_SECOND) + BigInt(clock.nanoseconds);
}
