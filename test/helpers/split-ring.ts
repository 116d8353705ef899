/**
 * The driver side of a split virtqueue, written from JS into guest RAM: what a test uses to
 * hand the device walker well-formed and hostile rings alike.
 */
import { GuestMemory } from "../../memory/guest-memory.js";
import { DESCRIPTOR_SIZE, type VirtqueueLayout } from "../../runtime/devices/virtio/virtqueue.js";

export interface Descriptor {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

export class DriverRing {
  availIndex = 0;

  constructor(
    readonly memory: GuestMemory,
    readonly layout: VirtqueueLayout,
  ) {}

  /** Places the three areas one after another at `base` (page-aligned). */
  static at(memory: GuestMemory, base: number, size: number, features: { eventIndex?: boolean; indirect?: boolean } = {}): DriverRing {
    const descriptorTable = base;
    const availRing = descriptorTable + DESCRIPTOR_SIZE * size;
    const usedRing = (availRing + 6 + 2 * size + 3) & ~3;
    return new DriverRing(memory, {
      size, descriptorTable, availRing, usedRing,
      eventIndex: features.eventIndex ?? false, indirect: features.indirect ?? false,
    });
  }

  writeDescriptor(index: number, d: Descriptor, table = this.layout.descriptorTable): void {
    const at = table + DESCRIPTOR_SIZE * index;
    this.memory.writeU64(at, BigInt(d.addr));
    this.memory.writeU32(at + 8, d.len);
    this.memory.writeU16(at + 12, d.flags);
    this.memory.writeU16(at + 14, d.next);
  }

  /** Puts `head` in the next available slot and publishes it. */
  offer(head: number): void {
    const { availRing, size } = this.layout;
    this.memory.writeU16(availRing + 4 + 2 * (this.availIndex % size), head);
    this.availIndex = (this.availIndex + 1) & 0xffff;
    this.memory.writeU16(availRing + 2, this.availIndex);
  }

  setAvailIndex(value: number): void {
    this.availIndex = value & 0xffff;
    this.memory.writeU16(this.layout.availRing + 2, this.availIndex);
  }

  setUsedEvent(value: number): void {
    this.memory.writeU16(this.layout.availRing + 4 + 2 * this.layout.size, value);
  }

  usedIndex(): number {
    return this.memory.readU16(this.layout.usedRing + 2);
  }

  usedElement(slot: number): { id: number; len: number } {
    const at = this.layout.usedRing + 4 + 8 * (slot % this.layout.size);
    return { id: this.memory.readU32(at), len: this.memory.readU32(at + 4) };
  }

  availEvent(): number {
    return this.memory.readU16(this.layout.usedRing + 4 + 8 * this.layout.size);
  }
}
