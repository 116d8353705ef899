/**
 * A userspace I/O APIC (Intel 82093AA) for split interrupt controllers: IOREGSEL at offset
 * 0x00 selects a register that IOWIN at 0x10 reads and writes; ID (0x00), version (0x01:
 * 24 redirection entries), arbitration (0x02) and the redirection table (0x10 + 2n low,
 * 0x11 + 2n high). Version 0x11 is KVM's own IOAPIC's; 0x20 (QEMU's default, and the
 * default here) adds the EOI register at 0x40 for directed EOIs, which KVM's local APICs
 * offer guests in split mode (LVR bit 24, the IOAPIC not being KVM's). A pin's interrupt leaves as the
 * MSI its entry describes (destination, destination mode, vector, delivery mode, trigger);
 * a level-triggered one sets remote IRR until an EOI of its vector, after which a line
 * still asserted interrupts again. Line polarity is not applied, as in KVM's and QEMU's.
 */
import type { IoapicPinRoute } from "../../hypervisor/hypervisor.js";
import { type AccessSize, type Device, toUnsigned } from "../device.js";

export const IOAPIC_BASE = 0xfec0_0000;
/** The register window: IOREGSEL, IOWIN and the reserved rest of the 82093AA's 256 bytes. */
export const IOAPIC_LENGTH = 0x100;
export const IOAPIC_PINS = 24;
const IOREGSEL = 0x00;
const IOWIN = 0x10;
/** Version 0x20: a write of a vector here is an EOI for it (a directed EOI). */
const EOI_REGISTER = 0x40;
const REG_ID = 0x00;
const REG_VERSION = 0x01;
const REG_ARBITRATION = 0x02;
const REG_TABLE = 0x10;
export type IoapicVersion = 0x11 | 0x20;

// Redirection entry, low dword (82093AA datasheet 3.2.4).
const VECTOR_MASK = 0xff;
const DELIVERY_MODE_SHIFT = 8;
const DEST_MODE_LOGICAL = 1 << 11;
const DELIVERY_STATUS = 1 << 12;
const REMOTE_IRR = 1 << 14;
const TRIGGER_LEVEL = 1 << 15;
const MASKED = 1 << 16;
/** Bits the guest can write: all but delivery status and remote IRR, and the reserved 17-31. */
const WRITABLE_LOW = 0x0001_afff;
const DEST_SHIFT = 24; // in the high dword

// MSI address and data (Intel SDM vol. 3, 11.11).
const MSI_ADDRESS_BASE = 0xfee0_0000n;
const MSI_DEST_SHIFT = 12n;
const MSI_DEST_MODE_LOGICAL = 1n << 2n;
const MSI_DATA_LEVEL_ASSERT = 1 << 14;
const MSI_DATA_TRIGGER_LEVEL = 1 << 15;

export interface IoapicOptions {
  /** Sends one MSI (the guest may have named no vCPU: then nothing happens). */
  deliver(address: bigint, data: number): void;
  /** Tells the hypervisor the level-triggered pins' messages (for their EOI exits). */
  routeLevelPins(routes: readonly IoapicPinRoute[]): void;
  /** The IOAPIC ID out of reset; it must agree with the MADT. */
  id?: number;
  /** 0x11 (82093AA, as KVM's own IOAPIC) or 0x20 (with the EOI register; default, as QEMU's). */
  version?: IoapicVersion;
  /** Called when a level-triggered interrupt is sent: its EOI is now awaited. */
  onLevelSent?(): void;
}

export class Ioapic implements Device {
  readonly name = "ioapic";
  private select = 0;
  private id: number;
  private readonly version: IoapicVersion;
  private readonly low = new Uint32Array(IOAPIC_PINS).fill(MASKED);
  private readonly high = new Uint32Array(IOAPIC_PINS);
  /** Pins whose input line is asserted (bit n: pin n). */
  private lines = 0;
  private routesKey = "";
  /** Interrupts sent, per pin: for tests and debugging. */
  readonly delivered = new Uint32Array(IOAPIC_PINS);

  constructor(private readonly options: IoapicOptions) {
    this.id = (options.id ?? 0) & 0xf;
    this.version = options.version ?? 0x20;
    if (this.version !== 0x11 && this.version !== 0x20) throw new RangeError(`IOAPIC version must be 0x11 or 0x20, got ${String(options.version)}`);
  }

  read(offset: number, size: AccessSize): number {
    if (offset === IOREGSEL) return this.select;
    if (offset === IOWIN && size === 4) return this.readRegister(this.select);
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    const n = toUnsigned(value, size);
    if (offset === IOREGSEL) this.select = n & 0xff;
    else if (offset === IOWIN && size === 4) this.writeRegister(this.select, n);
    else if (offset === EOI_REGISTER && this.version === 0x20) this.endOfInterrupt(n & VECTOR_MASK);
  }

  /** Drives input pin `pin` (an interrupt line) to `level`. */
  setLine(pin: number, level: boolean): void {
    if (!Number.isInteger(pin) || pin < 0 || pin >= IOAPIC_PINS) throw new RangeError(`IOAPIC pin ${pin} does not exist (0-${IOAPIC_PINS - 1})`);
    const bit = 1 << pin;
    const was = (this.lines & bit) !== 0;
    this.lines = level ? this.lines | bit : this.lines & ~bit;
    if (!level) return;
    const low = this.low[pin];
    if (low & TRIGGER_LEVEL) this.serviceLevel(pin);
    else if (!was && !(low & MASKED)) this.send(pin);
  }

  /** Whether a level-triggered interrupt is still awaiting its EOI. */
  get awaitingEoi(): boolean {
    for (let pin = 0; pin < IOAPIC_PINS; pin++) if (this.low[pin] & REMOTE_IRR) return true;
    return false;
  }

  /** An EOI of `vector` from any local APIC: ends remote IRR of the level pins using it. */
  endOfInterrupt(vector: number): void {
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const low = this.low[pin];
      if ((low & VECTOR_MASK) !== vector || !(low & REMOTE_IRR)) continue;
      this.low[pin] = low & ~REMOTE_IRR;
      this.serviceLevel(pin);
    }
  }

  private readRegister(register: number): number {
    if (register === REG_ID || register === REG_ARBITRATION) return (this.id << 24) >>> 0;
    if (register === REG_VERSION) return ((IOAPIC_PINS - 1) << 16) | this.version;
    const entry = register - REG_TABLE;
    if (entry < 0 || entry >= IOAPIC_PINS * 2) return 0;
    const pin = entry >> 1;
    return (entry & 1) === 0 ? this.low[pin] : this.high[pin];
  }

  private writeRegister(register: number, value: number): void {
    if (register === REG_ID) {
      this.id = (value >>> 24) & 0xf;
      return;
    }
    const entry = register - REG_TABLE;
    if (entry < 0 || entry >= IOAPIC_PINS * 2) return; // version, arbitration and the rest are read-only
    const pin = entry >> 1;
    if ((entry & 1) === 1) {
      this.high[pin] = value & (0xff << DEST_SHIFT);
    } else {
      let low = (this.low[pin] & REMOTE_IRR) | (value & WRITABLE_LOW);
      // Remote IRR has no meaning for an edge-triggered pin: switching to edge ends it.
      if (!(low & TRIGGER_LEVEL)) low &= ~REMOTE_IRR;
      this.low[pin] = low >>> 0;
    }
    this.updateRoutes();
    // An unmasked level pin with its line still asserted interrupts now.
    if (this.low[pin] & TRIGGER_LEVEL) this.serviceLevel(pin);
  }

  private serviceLevel(pin: number): void {
    const low = this.low[pin];
    if (!(this.lines & (1 << pin)) || low & (MASKED | REMOTE_IRR)) return;
    this.low[pin] = (low | REMOTE_IRR) >>> 0;
    this.send(pin);
    this.options.onLevelSent?.();
  }

  private send(pin: number): void {
    const { address, data } = this.message(pin);
    this.delivered[pin]++;
    // Delivery is immediate, so delivery status never shows "send pending".
    this.low[pin] &= ~DELIVERY_STATUS;
    this.options.deliver(address, data);
  }

  private message(pin: number): { address: bigint; data: number } {
    const low = this.low[pin];
    const destination = BigInt(this.high[pin] >>> DEST_SHIFT);
    const address = MSI_ADDRESS_BASE | (destination << MSI_DEST_SHIFT) | (low & DEST_MODE_LOGICAL ? MSI_DEST_MODE_LOGICAL : 0n);
    const level = (low & TRIGGER_LEVEL) !== 0;
    const data = (low & VECTOR_MASK) | (((low >>> DELIVERY_MODE_SHIFT) & 0x7) << DELIVERY_MODE_SHIFT) |
      (level ? MSI_DATA_TRIGGER_LEVEL | MSI_DATA_LEVEL_ASSERT : MSI_DATA_LEVEL_ASSERT);
    return { address, data };
  }

  /**
   * The hypervisor reports EOIs only of vectors it knows to be level-triggered IOAPIC ones:
   * every level pin is routed, masked ones too, so an interrupt in service when its pin is
   * masked still gets its EOI reported.
   */
  private updateRoutes(): void {
    const routes: IoapicPinRoute[] = [];
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      if (this.low[pin] & TRIGGER_LEVEL) routes.push({ pin, ...this.message(pin) });
    }
    const key = routes.map((r) => `${r.pin}:${r.address}:${r.data}`).join(",");
    if (key === this.routesKey) return;
    this.routesKey = key;
    this.options.routeLevelPins(routes);
  }
}
