/**
 * The small interface a PCI function implements to plug into the bus. The bus owns config
 * cycles, BAR decoding and interrupt routing; the device sees accesses to its BARs at an
 * offset, and is told where its BARs decode (for ioeventfds placed at absolute addresses).
 */
import type { AccessSize, HighWord } from "../devices/device.js";
import type { IoEventOptions } from "../hypervisor/hypervisor.js";
import type { PciConfigSpace } from "./config-space.js";

/** Where a BAR decodes now; undefined entries are BARs that decode nowhere. */
export interface BarPlacement {
  space: "pio" | "mmio";
  address: number;
  size: number;
}

/** What the bus gives a device when it is plugged in. */
export interface PciSlotServices {
  /** Drives the function's INTx pin (level); routed to its IOAPIC input. */
  setIntx(level: boolean): void;
  /** Sends the message the function's MSI capability holds; false when MSI is off or masked. */
  signalMsi(vector?: number): boolean;
  /** Eventfds signalled by the hypervisor on guest writes, without an exit. */
  attachIoEvent(options: IoEventOptions, fd?: number): number;
  detachIoEvent(options: IoEventOptions, fd: number): void;
  drainIoEvent(fd: number): number;
}

export interface PciDevice {
  readonly name: string;
  readonly config: PciConfigSpace;
  /** A BAR access, in the words of `Device.read` and `Device.write`. */
  barRead(bar: number, offset: number, size: AccessSize, wide: HighWord): number;
  barWrite(bar: number, offset: number, size: AccessSize, value: number, high: number): void;
  plugged?(slot: PciSlotServices): void;
  /** After any guest write to the function's configuration space (registers of its own). */
  configWritten?(register: number, size: AccessSize): void;
  /** After the guest moved a BAR or changed decode enables. */
  barsChanged?(placements: readonly (BarPlacement | undefined)[]): void;
}
