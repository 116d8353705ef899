/**
 * The device side of a split virtqueue (virtio 1.2 section 2.7) walked directly in guest
 * RAM: descriptor chains (with indirect tables) out of the available ring, completions into
 * the used ring, and VIRTIO_RING_F_EVENT_IDX notification suppression both ways.
 *
 * Every value in these rings is written by the guest, so the walker trusts none of them:
 * anything malformed makes the queue report a VirtqueueError naming the cause and refuse
 * further work until it is reset. Nothing here throws, and every access goes through the
 * bounds-checked GuestMemory.
 */
import { GuestMemory, GuestMemoryError, type MemoryRegion } from "../../../memory/guest-memory.js";

/** Descriptor flags (virtio 1.2 section 2.7.5). */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** avail.flags: the driver asks for no used-buffer notifications (without EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device asks for no available-buffer notifications (without EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** The largest split queue the spec allows (Queue Size is a 16-bit power of 2). */
export const MAX_QUEUE_SIZE = 32768;
export const DESCRIPTOR_SIZE = 16;
/**
 * The most entries an indirect table may have. The spec sets no limit beyond guest RAM;
 * this bounds the work one request can cost the host (Linux's largest is far below).
 */
export const MAX_INDIRECT_ENTRIES = 65536;
const U32_LIMIT = 2 ** 32;
/** A descriptor's 64-bit address is a safe JS integer when its high word is below 2^21. */
const SAFE_HIGH_WORD = 2 ** 21;

/** Why a queue stopped. Each names a rule of the spec the driver broke. */
export type VirtqueueFault =
  | "bad-layout" // ring addresses misaligned or not in guest RAM, or a bad queue size
  | "avail-index-jump" // avail.idx moved by more than the queue size
  | "head-out-of-range" // an available ring entry names a descriptor beyond the table
  | "next-out-of-range" // a descriptor's next names one beyond its table
  | "chain-too-long" // more descriptors than the table holds: a loop
  | "buffer-outside-ram" // a buffer not wholly inside one RAM region
  | "length-overflow" // a chain's readable or writable bytes exceed 2^32 - 1
  | "nested-indirect" // an indirect table inside an indirect table
  | "indirect-with-next" // an indirect descriptor that also chains on
  | "indirect-not-negotiated" // VIRTIO_RING_F_INDIRECT_DESC was not negotiated
  | "bad-indirect-table" // an indirect table of zero entries, a length not a multiple of 16, or too large
  | "readable-after-writable"; // a device-readable buffer after a device-writable one

export class VirtqueueError extends Error {
  override name = "VirtqueueError";
  constructor(
    readonly fault: VirtqueueFault,
    readonly queue: number,
    detail: string,
  ) {
    super(`virtqueue ${queue}: ${detail} (${fault}); the driver broke the virtio 1.2 ring rules, and the device needs a reset`);
  }
}

/** One guest buffer of a chain, as a live view into guest RAM. */
export interface BufferSegment {
  gpa: number;
  bytes: Uint8Array;
}

/** A request popped from the available ring. Return it with `pushUsed(chain.head, ...)`. */
export interface DescriptorChain {
  head: number;
  /** Device-readable buffers (driver to device), in chain order. */
  readable: BufferSegment[];
  /** Device-writable buffers (device to driver), in chain order. */
  writable: BufferSegment[];
  readableLength: number;
  writableLength: number;
}

export interface VirtqueueLayout {
  /** Queue Size: a power of 2 from 1 to 32768. */
  size: number;
  /** Guest-physical addresses of the descriptor table, driver (avail) and device (used) areas. */
  descriptorTable: number;
  availRing: number;
  usedRing: number;
  /** VIRTIO_RING_F_EVENT_IDX was negotiated. */
  eventIndex: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC was negotiated. */
  indirect: boolean;
}

/** The result of `pop()`: a request, nothing new, or the fault that stopped the queue. */
export type PopResult = DescriptorChain | VirtqueueError | undefined;

export class SplitVirtqueue {
  /** Set once the queue has stopped; it stays set until a new queue replaces this one. */
  failure: VirtqueueError | undefined;
  private lastAvailIndex = 0;
  private usedIndex = 0;
  /** used.idx when the driver was last notified, for EVENT_IDX. */
  private signalledUsedIndex = 0;
  private readonly availIndexWord: Uint16Array | undefined;
  private readonly usedIndexWord: Uint16Array | undefined;
  /** used.flags and, with EVENT_IDX, avail_event: how the device asks for (or spares) kicks. */
  private readonly usedFlagsWord: Uint16Array | undefined;
  private readonly availEventWord: Uint16Array | undefined;
  /** Whether the driver is asked to notify (`setNotifications`). */
  private notificationsEnabled = true;
  /** The region holding the descriptor table (checked whole at setup), read directly per descriptor. */
  private readonly tableRegion: MemoryRegion | undefined;
  /** The avail and used rings' regions and their offsets in them, for the per-request accesses. */
  private readonly availRegion: MemoryRegion | undefined;
  private readonly availOffset: number = 0;
  private readonly usedRegion: MemoryRegion | undefined;
  private readonly usedOffset: number = 0;

  /**
   * Never throws: a layout the driver got wrong leaves the queue failed with "bad-layout"
   * (check `failure`).
   */
  constructor(
    private readonly memory: GuestMemory,
    readonly layout: VirtqueueLayout,
    readonly index = 0,
  ) {
    const problem = layoutProblem(memory, layout);
    if (problem !== undefined) {
      this.failure = new VirtqueueError("bad-layout", index, problem);
      return;
    }
    // The two index words are what publishes a ring to the other side: read and write
    // them with Atomics so the entries they cover are ordered before them.
    this.availIndexWord = indexWord(memory, layout.availRing + 2);
    this.usedIndexWord = indexWord(memory, layout.usedRing + 2);
    this.usedFlagsWord = indexWord(memory, layout.usedRing);
    if (layout.eventIndex) this.availEventWord = indexWord(memory, layout.usedRing + 4 + 8 * layout.size);
    this.tableRegion = memory.regionFor(layout.descriptorTable, DESCRIPTOR_SIZE * layout.size);
    this.availRegion = memory.regionFor(layout.availRing, 4 + 2 * layout.size);
    this.availOffset = layout.availRing - this.availRegion.gpa;
    this.usedRegion = memory.regionFor(layout.usedRing, 4 + 8 * layout.size + (layout.eventIndex ? 2 : 0));
    this.usedOffset = layout.usedRing - this.usedRegion.gpa;
  }

  get size(): number {
    return this.layout.size;
  }

  /** The next available request, undefined when there is none, or the queue's fault. */
  pop(): PopResult {
    if (this.failure !== undefined) return this.failure;
    const { size } = this.layout;
    const availIndex = Atomics.load(this.availIndexWord!, 0);
    const pending = (availIndex - this.lastAvailIndex) & 0xffff;
    if (pending === 0) return undefined;
    if (pending > size) {
      return this.fail("avail-index-jump", `avail.idx is ${availIndex} but the device has taken ${this.lastAvailIndex}: ${pending} new entries in a ring of ${size}`);
    }
    const head = this.availRegion!.view.getUint16(this.availOffset + 4 + 2 * (this.lastAvailIndex % size), true);
    if (head >= size) return this.fail("head-out-of-range", `available entry ${this.lastAvailIndex} names descriptor ${head}, beyond the table of ${size}`);
    const chain = this.walk(head);
    if (chain instanceof VirtqueueError) return this.fail(chain);
    this.lastAvailIndex = (this.lastAvailIndex + 1) & 0xffff;
    if (this.layout.eventIndex && this.notificationsEnabled) this.writeAvailEvent(this.lastAvailIndex);
    return chain;
  }

  /** Hands a request back, `written` bytes filled in its writable buffers. */
  pushUsed(head: number, written: number): void {
    if (this.failure !== undefined) return;
    const element = this.usedOffset + 4 + 8 * (this.usedIndex % this.layout.size);
    const view = this.usedRegion!.view;
    view.setUint32(element, head, true);
    view.setUint32(element + 4, written >>> 0, true);
    this.usedIndex = (this.usedIndex + 1) & 0xffff;
    Atomics.store(this.usedIndexWord!, 0, this.usedIndex);
  }

  /**
   * Whether the driver wants a used-buffer notification for what was pushed since the last
   * one (virtio 1.2 section 2.7.10); call after a batch of `pushUsed`.
   */
  takeNotification(): boolean {
    if (this.failure !== undefined) return false;
    const { eventIndex, size, availRing } = this.layout;
    const previous = this.signalledUsedIndex;
    if (previous === this.usedIndex) return false;
    this.signalledUsedIndex = this.usedIndex;
    if (eventIndex) {
      const usedEvent = this.memory.readU16(availRing + 4 + 2 * size);
      return ((this.usedIndex - usedEvent - 1) & 0xffff) < ((this.usedIndex - previous) & 0xffff);
    }
    return (this.memory.readU16(availRing) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks the driver for (or spares it) available-buffer notifications (virtio 1.2 section
   * 2.7.10). With EVENT_IDX, enabling asks to be told of the next entry not taken, and while
   * disabled `pop()` leaves avail_event behind, so the driver stops kicking once past it.
   * The store is sequentially consistent: a `hasPending()` after enabling cannot be ordered
   * before it, so an entry the driver offered without a kick (it saw them disabled) is seen.
   */
  setNotifications(enabled: boolean): void {
    if (this.failure !== undefined) return;
    this.notificationsEnabled = enabled;
    if (this.layout.eventIndex) {
      if (enabled) this.writeAvailEvent(this.lastAvailIndex);
      return;
    }
    const flags = Atomics.load(this.usedFlagsWord!, 0);
    Atomics.store(this.usedFlagsWord!, 0, enabled ? flags & ~VIRTQ_USED_F_NO_NOTIFY : flags | VIRTQ_USED_F_NO_NOTIFY);
  }

  /** Whether the driver has made entries available that `pop()` has not taken. */
  hasPending(): boolean {
    return this.failure === undefined && Atomics.load(this.availIndexWord!, 0) !== this.lastAvailIndex;
  }

  private writeAvailEvent(value: number): void {
    Atomics.store(this.availEventWord!, 0, value);
  }

  private fail(fault: VirtqueueFault | VirtqueueError, detail = ""): VirtqueueError {
    this.failure = fault instanceof VirtqueueError ? fault : new VirtqueueError(fault, this.index, detail);
    return this.failure;
  }

  /** Follows the chain from `head`, through at most one indirect table. */
  private walk(head: number): DescriptorChain | VirtqueueError {
    const chain: DescriptorChain = { head, readable: [], writable: [], readableLength: 0, writableLength: 0 };
    // Descriptors are read straight from the table's region (no per-field lookups): the
    // ring's table was checked whole at setup, an indirect table when it is reached.
    let region = this.tableRegion!;
    let table = this.layout.descriptorTable - region.gpa;
    let tableSize = this.layout.size;
    let inIndirect = false;
    let index = head;
    let visited = 0;
    for (;;) {
      if (++visited > tableSize) {
        return this.error("chain-too-long", `the chain from descriptor ${head} has more than ${tableSize} descriptors${inIndirect ? " in its indirect table" : ""}: it loops`);
      }
      const at = table + DESCRIPTOR_SIZE * index;
      const view = region.view;
      const low = view.getUint32(at, true);
      const high = view.getUint32(at + 4, true);
      const length = view.getUint32(at + 8, true);
      const flags = view.getUint16(at + 12, true);
      const next = view.getUint16(at + 14, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.layout.indirect) return this.error("indirect-not-negotiated", `descriptor ${index} is indirect but VIRTIO_RING_F_INDIRECT_DESC was not negotiated`);
        if (inIndirect) return this.error("nested-indirect", `descriptor ${index} of an indirect table points to another indirect table`);
        if (flags & VIRTQ_DESC_F_NEXT) return this.error("indirect-with-next", `indirect descriptor ${index} also has VIRTQ_DESC_F_NEXT`);
        const entries = length / DESCRIPTOR_SIZE;
        if (length === 0 || !Number.isInteger(entries) || entries > MAX_INDIRECT_ENTRIES) {
          return this.error("bad-indirect-table", `indirect descriptor ${index} gives a table of ${length} bytes; expected a non-zero multiple of ${DESCRIPTOR_SIZE} up to ${MAX_INDIRECT_ENTRIES} entries`);
        }
        const tableRegion = this.bufferRegion(low, high, length, index);
        if (tableRegion instanceof VirtqueueError) return tableRegion;
        region = tableRegion!; // a table's length is not 0 (checked above), so it has a region
        table = high * U32_LIMIT + low - region.gpa;
        tableSize = entries;
        inIndirect = true;
        index = 0;
        visited = 0;
        continue;
      }
      const bufferRegion = this.bufferRegion(low, high, length, index);
      if (bufferRegion instanceof VirtqueueError) return bufferRegion;
      const start = high * U32_LIMIT + low;
      const offset = start - (bufferRegion?.gpa ?? 0);
      const segment = { gpa: start, bytes: bufferRegion === undefined ? new Uint8Array(0) : bufferRegion.bytes.subarray(offset, offset + length) };
      if (flags & VIRTQ_DESC_F_WRITE) {
        chain.writable.push(segment);
        chain.writableLength += length;
        if (chain.writableLength >= U32_LIMIT) return this.error("length-overflow", `the writable buffers of the chain from descriptor ${head} add up to ${chain.writableLength} bytes, more than 2^32 - 1`);
      } else {
        if (chain.writable.length > 0) return this.error("readable-after-writable", `descriptor ${index} is device-readable but follows a device-writable one`);
        chain.readable.push(segment);
        chain.readableLength += length;
        if (chain.readableLength >= U32_LIMIT) return this.error("length-overflow", `the readable buffers of the chain from descriptor ${head} add up to ${chain.readableLength} bytes, more than 2^32 - 1`);
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return chain;
      if (next >= tableSize) return this.error("next-out-of-range", `descriptor ${index} chains to ${next}, beyond its table of ${tableSize}`);
      index = next;
    }
  }

  /**
   * The RAM region holding all of the buffer at `high`:`low` (undefined for an empty buffer,
   * which may be anywhere), or the fault. Messages are built only on the way to a fault.
   */
  private bufferRegion(low: number, high: number, length: number, descriptor: number): MemoryRegion | undefined | VirtqueueError {
    const where = () => `descriptor ${descriptor}: buffer at 0x${((BigInt(high) << 32n) | BigInt(low)).toString(16)} (+${length} bytes)`;
    if (high >= SAFE_HIGH_WORD) return this.error("buffer-outside-ram", `${where()} is beyond any guest RAM`);
    if (length === 0) return undefined;
    const start = high * U32_LIMIT + low;
    const region = this.memory.findRegion(start, length);
    if (region !== undefined) return region;
    let reason = "not backed by guest RAM";
    try {
      this.memory.regionFor(start, length);
    } catch (error) {
      reason = error instanceof GuestMemoryError ? error.message : String(error);
    }
    return this.error("buffer-outside-ram", `${where()} is not wholly inside one RAM region (${reason})`);
  }

  private error(fault: VirtqueueFault, detail: string): VirtqueueError {
    return new VirtqueueError(fault, this.index, detail);
  }
}

/** What is wrong with a queue's size or ring placement, or undefined if nothing. */
function layoutProblem(memory: GuestMemory, layout: VirtqueueLayout): string | undefined {
  const { size, descriptorTable, availRing, usedRing, eventIndex } = layout;
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
    return `queue size ${size} is not a power of 2 from 1 to ${MAX_QUEUE_SIZE}`;
  }
  // virtio 1.2 section 2.7: alignments 16, 2 and 4; the event words exist either way in the layout.
  const areas: [string, number, number, number][] = [
    ["descriptor table", descriptorTable, DESCRIPTOR_SIZE * size, 16],
    ["driver area (avail ring)", availRing, 4 + 2 * size + (eventIndex ? 2 : 0), 2],
    ["device area (used ring)", usedRing, 4 + 8 * size + (eventIndex ? 2 : 0), 4],
  ];
  for (const [name, gpa, length, alignment] of areas) {
    if (!Number.isSafeInteger(gpa) || gpa % alignment !== 0) return `the ${name} at 0x${gpa.toString(16)} is not ${alignment}-byte aligned`;
    if (!memory.isBacked(gpa, length)) return `the ${name} at 0x${gpa.toString(16)} (+${length} bytes) is not wholly inside one RAM region`;
  }
  return undefined;
}

/** A one-element view of the 16-bit word at `gpa` (2-aligned, checked by the caller). */
function indexWord(memory: GuestMemory, gpa: number): Uint16Array {
  const region = memory.regionFor(gpa, 2);
  return new Uint16Array(region.buffer, region.offset + (gpa - region.gpa), 1);
}
