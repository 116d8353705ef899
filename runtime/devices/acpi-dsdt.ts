/**
 * The DSDT's AML for a PC: the PCI root bridge with its bus range, windows and INTx routing,
 * legacy serial ports, one virtio-mmio device per transport, the motherboard's reserved
 * ranges, and the sleep-state packages. Linux binds these by ID: PNP0A03
 * (drivers/acpi/pci_root.c), PNP0501 (8250_pnp), LNRO0005 (drivers/virtio/virtio_mmio.c's
 * ACPI match); PNP0C02 ranges are where it looks for the MCFG's ECAM being reserved
 * (arch/x86/pci/mmconfig-shared.c), without which it will not use ECAM.
 */
import {
  type Aml,
  aPackage,
  device,
  dwordMemory,
  eisaId,
  extendedInterrupt,
  integer,
  ioPort,
  irqNoFlags,
  memory32Fixed,
  name,
  resourceTemplate,
  scope,
  string,
  wordBusNumber,
  wordIo,
} from "./acpi-aml.js";

export interface PciRootDescription {
  /** The last bus number behind the bridge (buses 0..lastBus). */
  lastBus: number;
  /** The I/O and 32-bit memory ranges the bridge forwards to PCI. */
  ioWindow: { base: number; size: number };
  memoryWindow: { base: number; size: number };
  /** The GSI `slot`'s INTx `pin` (1 = INTA#) is wired to. */
  intxGsi: (slot: number, pin: number) => number;
}

export interface DsdtDescription {
  pciRoot?: PciRootDescription;
  /** 16550 UARTs, COM1 first: 8 ports at `port`, ISA IRQ `irq`. */
  serialPorts?: { port: number; irq: number }[];
  /** virtio-mmio transports, in slot order (the _UID is the index). */
  virtioMmio?: { base: number; length: number; gsi: number }[];
  /** Memory ranges the motherboard itself decodes (a PNP0C02 device's _CRS), e.g. the ECAM. */
  reservedMemory?: { base: number; length: number }[];
  /** SLP_TYP values for PM1a/PM1b_CNT: every state listed gets its \_Sx_ package. */
  sleepTypes?: { s3?: number; s5?: number };
}

/** CONFIG_ADDRESS/CONFIG_DATA at 0xCF8: the bridge consumes them itself (not forwarded). */
const PCI_CONFIG_PORTS = 0xcf8;
const PCI_CONFIG_PORTS_LENGTH = 8;
const PCI_SLOTS = 32;
const INTX_PINS = 4;
/** A _PRT address matching every function of a slot: device in bits 31:16, function 0xFFFF. */
const ALL_FUNCTIONS = 0xffff;

function pciRoot(root: PciRootDescription): Aml {
  const routes: Aml[] = [];
  for (let slot = 0; slot < PCI_SLOTS; slot++) {
    for (let pin = 0; pin < INTX_PINS; pin++) {
      // Source 0 with an index: the pin is wired straight to that GSI (ACPI 6.2.13).
      routes.push(aPackage([integer(slot * 0x10000 + ALL_FUNCTIONS), integer(pin), integer(0), integer(root.intxGsi(slot, pin + 1))]));
    }
  }
  const { ioWindow: io, memoryWindow: mem } = root;
  return device("PCI0", [
    name("_HID", eisaId("PNP0A03")),
    name("_UID", integer(0)),
    name("_BBN", integer(0)),
    name("_CRS", resourceTemplate([
      wordBusNumber({ min: 0, max: root.lastBus }),
      ioPort(PCI_CONFIG_PORTS, PCI_CONFIG_PORTS, 1, PCI_CONFIG_PORTS_LENGTH),
      wordIo({ min: io.base, max: io.base + io.size - 1 }),
      dwordMemory({ min: mem.base, max: mem.base + mem.size - 1 }),
    ])),
    name("_PRT", aPackage(routes)),
  ]);
}

function serialPort(index: number, port: { port: number; irq: number }): Aml {
  return device(`COM${index + 1}`, [
    name("_HID", eisaId("PNP0501")),
    name("_UID", integer(index + 1)),
    name("_CRS", resourceTemplate([ioPort(port.port, port.port, 0, 8), irqNoFlags([port.irq])])),
  ]);
}

function virtioMmio(index: number, transport: { base: number; length: number; gsi: number }): Aml {
  // Level-triggered, active-high: the transport holds its line while InterruptStatus is
  // non-zero, and GSIs above 15 have no ISA polarity convention to fall back on.
  return device(`VR${index.toString(16).toUpperCase().padStart(2, "0")}`, [
    name("_HID", string("LNRO0005")),
    name("_UID", integer(index)),
    name("_CRS", resourceTemplate([
      memory32Fixed(transport.base, transport.length),
      extendedInterrupt({ level: true, activeLow: false, shared: false }, [transport.gsi]),
    ])),
  ]);
}

/** A \_Sx_ package: SLP_TYPa, SLP_TYPb (the same value: there is no PM1b), two reserved. */
function sleepState(state: string, type: number): Aml {
  return name(`\\${state}`, aPackage([integer(type), integer(type), integer(0), integer(0)]));
}

/** The term list of a DSDT describing `description`. */
export function dsdtTerms(description: DsdtDescription): Aml[] {
  const bus: Aml[] = [];
  if (description.pciRoot !== undefined) bus.push(pciRoot(description.pciRoot));
  (description.serialPorts ?? []).forEach((port, i) => bus.push(serialPort(i, port)));
  (description.virtioMmio ?? []).forEach((transport, i) => bus.push(virtioMmio(i, transport)));
  const reserved = description.reservedMemory ?? [];
  if (reserved.length > 0) {
    bus.push(device("MRES", [
      name("_HID", eisaId("PNP0C02")),
      name("_UID", integer(0)),
      name("_CRS", resourceTemplate(reserved.map((range) => memory32Fixed(range.base, range.length)))),
    ]));
  }
  const terms: Aml[] = bus.length > 0 ? [scope("\\_SB", bus)] : [];
  const { s3, s5 } = description.sleepTypes ?? {};
  if (s3 !== undefined) terms.push(sleepState("_S3", s3));
  if (s5 !== undefined) terms.push(sleepState("_S5", s5));
  return terms;
}
