/**
 * PCI bus 0 behind the host bridge: functions by device number, configuration cycles,
 * BAR decoding through the bridge's windows, firmware-style resource assignment at boot,
 * and INTx routing onto PIRQA-D and from there, through the ISA bridge's routes, to GSIs.
 *
 * The bridge forwards only what falls inside its windows (one for I/O, one for 32-bit
 * memory), as the ACPI description of a PC says; a BAR the guest places elsewhere decodes
 * nowhere. The windows are ordinary devices on the VM's buses, so BARs can move while the
 * VM runs: a config write that changes a BAR or the command register rebuilds the maps.
 */
import { Bus } from "../bus.js";
import { allOnes, type AccessSize, type Device, type HighWord } from "../devices/device.js";
import { PCI_BAR_COUNT, PciCommand, PciConfigError, PciRegister } from "./config-space.js";
import type { BarPlacement, PciDevice, PciSlotServices } from "./pci-device.js";

export const PCI_DEVICES_PER_BUS = 32;

export interface PciWindow {
  base: number;
  size: number;
}

export interface PciBusOptions {
  ioWindow: PciWindow;
  memoryWindow: PciWindow;
  /** Builds the services a device in `slot` gets (interrupts, MSI, ioevents). */
  services: (slot: number, device: PciDevice) => PciSlotServices;
}

/** What a decoded BAR maps to in a window's lookup. */
class BarTarget implements Device {
  constructor(
    readonly device: PciDevice,
    readonly bar: number,
  ) {}
  get name(): string {
    return `${this.device.name} BAR ${this.bar}`;
  }
  read(offset: number, size: AccessSize, wide: HighWord): number {
    return this.device.barRead(this.bar, offset, size, wide);
  }
  write(offset: number, size: AccessSize, value: number, high: number): void {
    this.device.barWrite(this.bar, offset, size, value, high);
  }
}

/** One bridge window as a device on the VM's bus: forwards to whichever BAR decodes there. */
class WindowDevice implements Device {
  map: Bus;
  constructor(
    readonly name: string,
    private readonly window: PciWindow,
    space: "pio" | "mmio",
  ) {
    this.map = new Bus(space);
  }
  read(offset: number, size: AccessSize, wide: HighWord): number {
    const address = this.window.base + offset;
    const range = this.map.find(address);
    return range === undefined ? allOnes(size, wide) : range.device.read(address - range.base, size, wide);
  }
  write(offset: number, size: AccessSize, value: number, high: number): void {
    const address = this.window.base + offset;
    const range = this.map.find(address);
    if (range !== undefined) range.device.write(address - range.base, size, value, high);
  }
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

export class PciBus {
  private readonly slots: (PciDevice | undefined)[] = new Array(PCI_DEVICES_PER_BUS).fill(undefined);
  private readonly placements = new Map<PciDevice, (BarPlacement | undefined)[]>();
  /** Slots holding their INTx asserted (and not disabled by their command register). */
  private readonly intxHolders = new Set<number>();
  /** The level last given for each GSI a PIRQ reached. */
  private readonly gsiLevels = new Map<number, boolean>();
  private pirqRouter: PirqRouter = FIRMWARE_ROUTES;
  readonly ioWindowDevice: WindowDevice;
  readonly memoryWindowDevice: WindowDevice;

  constructor(private readonly options: PciBusOptions) {
    this.ioWindowDevice = new WindowDevice("pci i/o window", options.ioWindow, "pio");
    this.memoryWindowDevice = new WindowDevice("pci memory window", options.memoryWindow, "mmio");
  }

  get ioWindow(): PciWindow {
    return this.options.ioWindow;
  }
  get memoryWindow(): PciWindow {
    return this.options.memoryWindow;
  }

  /** Plugs `device` in as function 0 of `slot` (0..31). */
  plug(slot: number, device: PciDevice): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= PCI_DEVICES_PER_BUS) {
      throw new PciConfigError(`PCI slot must be 0..${PCI_DEVICES_PER_BUS - 1}, got ${slot}`);
    }
    const occupant = this.slots[slot];
    if (occupant !== undefined) throw new PciConfigError(`PCI slot ${slot} already holds '${occupant.name}'; choose another for '${device.name}'`);
    this.slots[slot] = device;
    device.plugged?.(this.options.services(slot, device));
  }

  device(slot: number): PciDevice | undefined {
    return this.slots[slot];
  }

  /** A configuration read of bus 0; absent functions answer all-ones. */
  configRead(bus: number, slot: number, fn: number, register: number, size: AccessSize): number {
    const device = bus === 0 && fn === 0 ? this.slots[slot] : undefined;
    if (device === undefined) return allOnes(size);
    return device.config.read(register, size);
  }

  configWrite(bus: number, slot: number, fn: number, register: number, size: AccessSize, value: number): void {
    const device = bus === 0 && fn === 0 ? this.slots[slot] : undefined;
    if (device === undefined) return;
    if (device.config.write(register, size, value)) this.remap();
    device.configWritten?.(register, size);
  }

  /**
   * Places every BAR the way PC firmware does before it hands over: each space's BARs
   * largest first, naturally aligned, from the bottom of the window; I/O and memory decode
   * enabled; the interrupt line register set to the GSI the pin is routed to.
   */
  assignResources(): void {
    const wanted: { device: PciDevice; bar: number; size: number; io: boolean }[] = [];
    for (const device of this.slots) {
      if (device === undefined) continue;
      device.config.bars.forEach((spec, bar) => {
        if (spec !== undefined) wanted.push({ device, bar, size: spec.size, io: spec.kind === "io" });
      });
    }
    wanted.sort((a, b) => b.size - a.size);
    const next = { io: this.options.ioWindow.base, memory: this.options.memoryWindow.base };
    for (const item of wanted) {
      const window = item.io ? this.options.ioWindow : this.options.memoryWindow;
      const at = alignUp(item.io ? next.io : next.memory, item.size);
      if (at + item.size > window.base + window.size) {
        throw new PciConfigError(`no room for ${item.device.name} BAR ${item.bar} (${item.size} bytes) in the PCI ${item.io ? "I/O" : "memory"} window`);
      }
      if (item.io) next.io = at + item.size;
      else next.memory = at + item.size;
      const register = PciRegister.BAR0 + item.bar * 4;
      const config = item.device.config;
      config.setU32(register, (config.u32(register) & (item.io ? 0x3 : 0xf)) | at);
      if (config.bars[item.bar]?.kind === "memory64") config.setU32(register + 4, 0);
    }
    this.slots.forEach((device, slot) => {
      if (device === undefined) return;
      const config = device.config;
      const hasIo = config.bars.some((b) => b?.kind === "io");
      const hasMemory = config.bars.some((b) => b !== undefined && b.kind !== "io");
      const command = config.command | (hasIo ? PciCommand.IO_SPACE : 0) | (hasMemory ? PciCommand.MEMORY_SPACE : 0);
      config.setU8(PciRegister.COMMAND, command & 0xff);
      const pin = config.u8(PciRegister.INTERRUPT_PIN);
      // 0xff: "unknown or not connected" (PCI Local Bus Spec 6.2.4).
      if (pin !== 0) config.setU8(PciRegister.INTERRUPT_LINE, this.intxRoute(slot) ?? 0xff);
    });
    this.remap();
  }

  /** Rebuilds both windows' maps from every function's BARs and command register. */
  remap(): void {
    const io = new Bus("pio");
    const memory = new Bus("mmio");
    for (const device of this.slots) {
      if (device === undefined) continue;
      const config = device.config;
      const placements: (BarPlacement | undefined)[] = new Array(PCI_BAR_COUNT).fill(undefined);
      for (let bar = 0; bar < PCI_BAR_COUNT; bar++) {
        const spec = config.bars[bar];
        if (spec === undefined) continue;
        const isIo = spec.kind === "io";
        if ((config.command & (isIo ? PciCommand.IO_SPACE : PciCommand.MEMORY_SPACE)) === 0) continue;
        const address = config.barAddress(bar);
        const window = isIo ? this.options.ioWindow : this.options.memoryWindow;
        if (address === undefined || address < window.base || address + spec.size > window.base + window.size) continue;
        try {
          (isIo ? io : memory).insert({ base: address, length: spec.size, device: new BarTarget(device, bar), sync: false });
          placements[bar] = { space: isIo ? "pio" : "mmio", address, size: spec.size };
        } catch {
          // Two BARs programmed over each other: the first one claims the range, as no
          // decode order is defined for it on real hardware either.
        }
      }
      const before = this.placements.get(device);
      this.placements.set(device, placements);
      const changed = before === undefined || placements.some((p, i) => p?.address !== before[i]?.address || p?.space !== before[i]?.space);
      if (changed) device.barsChanged?.(placements);
    }
    this.ioWindowDevice.map = io;
    this.memoryWindowDevice.map = memory;
  }

  /** Steers PIRQA-D from now on (the ISA bridge's route registers); until then, firmware's fixed routes. */
  routeIntxThrough(router: PirqRouter): void {
    this.pirqRouter = router;
  }

  /** The GSI `slot`'s INTx pin reaches through the PIRQ routes now; undefined when its PIRQ is not routed. */
  intxRoute(slot: number): number | undefined {
    const pin = this.slots[slot]?.config.u8(PciRegister.INTERRUPT_PIN) ?? 0;
    return this.pirqRouter(pirqOf(slot, pin === 0 ? 1 : pin));
  }

  /** Tracks INTx for `slot`; returns the routed GSI and whether it should now be asserted (undefined: not routed). */
  intxLevel(slot: number, level: boolean): { gsi: number; asserted: boolean } | undefined {
    const device = this.slots[slot];
    const disabled = device !== undefined && (device.config.command & PciCommand.INTX_DISABLE) !== 0;
    if (level && !disabled) this.intxHolders.add(slot);
    else this.intxHolders.delete(slot);
    const gsi = this.intxRoute(slot);
    if (gsi === undefined) return undefined;
    const asserted = this.gsiHeld(gsi);
    this.gsiLevels.set(gsi, asserted);
    return { gsi, asserted };
  }

  /** After the PIRQ routes changed: each GSI whose level they changed, with its new level. */
  reroutedIntx(): { gsi: number; asserted: boolean }[] {
    const gsis = new Set(this.gsiLevels.keys());
    for (const slot of this.intxHolders) {
      const gsi = this.intxRoute(slot);
      if (gsi !== undefined) gsis.add(gsi);
    }
    const changes: { gsi: number; asserted: boolean }[] = [];
    for (const gsi of gsis) {
      const asserted = this.gsiHeld(gsi);
      if (asserted === (this.gsiLevels.get(gsi) ?? false)) continue;
      this.gsiLevels.set(gsi, asserted);
      changes.push({ gsi, asserted });
    }
    return changes;
  }

  /** A level line shared by several functions stays up while any of them holds it. */
  private gsiHeld(gsi: number): boolean {
    for (const slot of this.intxHolders) if (this.intxRoute(slot) === gsi) return true;
    return false;
  }
}

/**
 * The GSI INTx of `slot`'s `pin` (1 = INTA#) reaches, as on QEMU's i440FX/PIIX3: the pin is
 * rotated by the slot onto PIRQA-D (PCI-to-PCI Bridge Spec's swizzle, slot 1 unrotated), and
 * firmware routes PIRQA-D to IRQs 10, 10, 11, 11 (SeaBIOS's choice, which the PIIX3's route
 * registers start with).
 */
export const PIRQ_GSIS = [10, 10, 11, 11] as const;

/** PIRQA-D (0..3) to a GSI, or undefined when that PIRQ is not routed. */
export type PirqRouter = (pirq: number) => number | undefined;
const FIRMWARE_ROUTES: PirqRouter = (pirq) => PIRQ_GSIS[pirq];

/** Which of PIRQA-D (0..3) `slot`'s `pin` (1 = INTA#) drives. */
export function pirqOf(slot: number, pin: number): number {
  return (pin - 1 + slot - 1) & 3;
}

export function intxGsi(slot: number, pin: number): number {
  return PIRQ_GSIS[pirqOf(slot, pin)];
}
