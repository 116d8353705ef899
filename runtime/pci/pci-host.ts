/**
 * Puts a PCI bus on a VM the way a PC has one: the i440FX host bridge at 00:00.0, the PIIX3
 * ISA bridge (whose PIRQ routes steer INTx) at 00:01.0, config
 * mechanism #1 at 0xCF8, ECAM at PCI_ECAM_BASE, the bridge's I/O and memory windows on the
 * VM's buses, INTx on IOAPIC inputs and MSI through the hypervisor. Devices are plugged
 * before the VM starts; their BARs are then placed as firmware would place them.
 */
import type { Vm } from "../vm.js";
import type { Device } from "../devices/device.js";
import { PciCommand, PciRegister, PciStatus } from "./config-space.js";
import { ECAM_BYTES_PER_BUS, I440fxHostBridge, PCI_CONFIG_PORT, PCI_CONFIG_PORT_LENGTH, PciConfigPorts, PciEcam } from "./host-bridge.js";
import { PciBus, PIRQ_GSIS, type PciWindow } from "./pci-bus.js";
import { Piix3IsaBridge, PIIX3_SLOT } from "./piix3-isa-bridge.js";
import type { PciDevice, PciSlotServices } from "./pci-device.js";
import { MSI_CAPABILITY_ID, msiMessage } from "./msi.js";

/** Below the IOAPIC and LAPIC, above the 3 GiB of low RAM the PC machine maps at most. */
export const PCI_MEMORY_WINDOW: PciWindow = { base: 0xc000_0000, size: 0x2000_0000 };
export const PCI_ECAM_BASE = 0xe000_0000;
export const PCI_ECAM_BUSES = 256;
/** Where PC firmware (SeaBIOS) puts PCI I/O BARs, clear of every legacy port. */
export const PCI_IO_WINDOW: PciWindow = { base: 0xc000, size: 0x4000 };
/** 00:00.0 and 00:01.0 hold the host and ISA bridges: devices start at 2. */
export const FIRST_DEVICE_SLOT = 2;

function findCapability(device: PciDevice, id: number): number | undefined {
  const config = device.config;
  if ((config.u16(PciRegister.STATUS) & PciStatus.CAPABILITIES_LIST) === 0) return undefined;
  let at = config.u8(PciRegister.CAPABILITIES_POINTER) & 0xfc;
  // At most 48 dword-aligned capabilities fit after the header: a longer walk is a loop.
  for (let hops = 0; at !== 0 && hops < 48; hops++) {
    if (config.u8(at) === id) return at;
    at = config.u8(at + 1) & 0xfc;
  }
  return undefined;
}

export class PciHost {
  readonly bus: PciBus;
  private nextSlot = FIRST_DEVICE_SLOT;
  private unplaced = false;

  /** `resetControl` serves byte accesses to 0xCF9 (PIIX reset control), inside the config ports. */
  constructor(private readonly vm: Vm, options: { resetControl?: Device } = {}) {
    this.bus = new PciBus({
      ioWindow: PCI_IO_WINDOW,
      memoryWindow: PCI_MEMORY_WINDOW,
      services: (slot, device) => this.services(slot, device),
    });
    this.bus.plug(0, new I440fxHostBridge());
    const isaBridge = new Piix3IsaBridge(PIRQ_GSIS, () => this.applyIntxRoutes());
    this.bus.plug(PIIX3_SLOT, isaBridge);
    this.bus.routeIntxThrough(isaBridge.route);
    // Config cycles are sync: a BAR move or decode change takes effect before the guest's next access.
    vm.addDevice({ space: "pio", base: PCI_CONFIG_PORT, length: PCI_CONFIG_PORT_LENGTH, device: new PciConfigPorts(this.bus, options.resetControl), sync: true });
    vm.addDevice({ space: "mmio", base: PCI_ECAM_BASE, length: PCI_ECAM_BUSES * ECAM_BYTES_PER_BUS, device: new PciEcam(this.bus), sync: true });
    vm.addDevice({ space: "pio", base: PCI_IO_WINDOW.base, length: PCI_IO_WINDOW.size, device: this.bus.ioWindowDevice });
    vm.addDevice({ space: "mmio", base: PCI_MEMORY_WINDOW.base, length: PCI_MEMORY_WINDOW.size, device: this.bus.memoryWindowDevice });
  }

  /** Plugs `device` into the next free slot (or `slot`); returns the slot. */
  plug(device: PciDevice, slot = this.nextSlot): number {
    this.bus.plug(slot, device);
    if (slot >= this.nextSlot) this.nextSlot = slot + 1;
    this.unplaced = true;
    return slot;
  }

  /** Places every BAR and enables decoding, as firmware leaves a PC. Before the guest runs. */
  assignResources(): void {
    this.bus.assignResources();
    this.unplaced = false;
  }

  /** Whether a device was plugged since the last assignResources(). */
  get needsAssignment(): boolean {
    return this.unplaced;
  }

  /** The guest reprogrammed a PIRQ route: lines held up move with it. */
  private applyIntxRoutes(): void {
    for (const { gsi, asserted } of this.bus.reroutedIntx()) this.vm.interruptLine(gsi).set(asserted);
  }

  private services(slot: number, device: PciDevice): PciSlotServices {
    const vm = this.vm;
    return {
      setIntx: (level) => {
        device.config.setStatusBits(PciStatus.INTERRUPT, level);
        const line = this.bus.intxLevel(slot, level);
        if (line !== undefined) vm.interruptLine(line.gsi).set(line.asserted);
      },
      signalMsi: (vector = 0) => {
        // An MSI is a memory write by the device: without bus mastering it cannot be sent.
        if ((device.config.command & PciCommand.BUS_MASTER) === 0) return false;
        const at = findCapability(device, MSI_CAPABILITY_ID);
        const message = at === undefined ? undefined : msiMessage(device.config, at, vector);
        return message === undefined ? false : vm.signalMsi(message.address, message.data);
      },
      attachIoEvent: (options, fd) => vm.attachIoEvent(options, fd),
      detachIoEvent: (options, fd) => vm.detachIoEvent(options, fd),
      drainIoEvent: (fd) => vm.drainIoEvent(fd),
    };
  }
}
