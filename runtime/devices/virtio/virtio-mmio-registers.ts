/**
 * The virtio-mmio register file (virtio 1.2 section 4.2.2) as words in a SharedArrayBuffer,
 * so any thread can answer the driver's reads: the transport's state machine writes it (on
 * the main thread or on a device worker) and every vCPU worker reads it without a trip to
 * either. The transport's counters live here too, so the main thread sees a device
 * worker's. Reads never change state, which is what makes answering them anywhere safe.
 */
import type { AccessSize, HighWord } from "../device.js";

/** One transport's window on the MMIO bus. */
export const VIRTIO_MMIO_LENGTH = 0x200;
export const VIRTIO_MMIO_MAGIC = 0x74726976; // "virt"
/** Our vendor ID, "WKVR" little-endian; drivers do not match on it. */
export const VIRTIO_MMIO_VENDOR = 0x52564b57;

/** Register offsets (virtio 1.2 section 4.2.2). */
export const VirtioMmio = {
  MagicValue: 0x000, Version: 0x004, DeviceID: 0x008, VendorID: 0x00c,
  DeviceFeatures: 0x010, DeviceFeaturesSel: 0x014, DriverFeatures: 0x020, DriverFeaturesSel: 0x024,
  QueueSel: 0x030, QueueNumMax: 0x034, QueueNum: 0x038, QueueReady: 0x044, QueueNotify: 0x050,
  InterruptStatus: 0x060, InterruptACK: 0x064, Status: 0x070,
  QueueDescLow: 0x080, QueueDescHigh: 0x084, QueueDriverLow: 0x090, QueueDriverHigh: 0x094,
  QueueDeviceLow: 0x0a0, QueueDeviceHigh: 0x0a4, SHMSel: 0x0ac, SHMLenLow: 0x0b0, SHMLenHigh: 0x0b4,
  SHMBaseLow: 0x0b8, SHMBaseHigh: 0x0bc, ConfigGeneration: 0x0fc, Config: 0x100,
} as const;

/** The most queues a transport carries (virtio-console with many ports needs dozens). */
export const MAX_VIRTIO_QUEUES = 64;
/** The config space the window has room for (0x100 to the end of the window). */
export const MAX_VIRTIO_CONFIG = VIRTIO_MMIO_LENGTH - VirtioMmio.Config;

/** Word indices of the transport's state. */
export const Word = {
  Status: 0, DeviceFeaturesSel: 1, DriverFeaturesSel: 2, QueueSel: 3, InterruptStatus: 4, ConfigGeneration: 5,
  DeviceId: 6, OfferedLow: 7, OfferedHigh: 8, DriverLow: 9, DriverHigh: 10, QueueCount: 11, ConfigLength: 12,
  /**
   * 1 when a thread other than the state machine's may apply InterruptACK itself (the line
   * is a resampling irqfd, which the hypervisor lowers on EOI, so no line change is owed).
   */
  AckInPlace: 13,
} as const;

/** Word indices of the counters (`VirtioMmioStats`). */
export const StatWord = {
  notifications: 16, interrupts: 17, resets: 18, faults: 19, badAccesses: 20,
  /** QueueNotify writes that reached a thread as an exit (not through an eventfd). */
  notifyExits: 21,
  /** Interrupt line changes made from the main thread (no resampling irqfd on this host). */
  mainThreadLineChanges: 22,
  /** Returns of a device worker's poll(2): its wake-ups, per request a measure of batching. */
  workerWakes: 23,
} as const;

/** Words 24-31: the write mailbox of a transport placed on a device worker (virtio-write-mailbox.ts). */
const MAILBOX_BASE = 24;
const MAILBOX_LENGTH = 8;

/** Per-queue words, at QUEUE_BASE + QUEUE_STRIDE * queue. */
export const QueueWord = { MaxSize: 0, Size: 1, Ready: 2, DescLow: 3, DescHigh: 4, AvailLow: 5, AvailHigh: 6, UsedLow: 7, UsedHigh: 8 } as const;
const QUEUE_BASE = 32;
const QUEUE_STRIDE = 16;
const WORDS = QUEUE_BASE + QUEUE_STRIDE * MAX_VIRTIO_QUEUES;
const CONFIG_OFFSET = WORDS * 4;
const BYTES = CONFIG_OFFSET + MAX_VIRTIO_CONFIG;

export type VirtioMmioStats = { readonly [K in keyof typeof StatWord]: number };

/** The identity a transport publishes for its device. */
export interface VirtioMmioIdentity {
  deviceId: number;
  /** Every feature bit offered, the transport's included. */
  offered: bigint;
  queueSizes: readonly number[];
  config: Uint8Array;
}

export class VirtioMmioRegisters {
  readonly words: Int32Array;
  readonly config: Uint8Array;

  /** A zeroed register file in a new SharedArrayBuffer. */
  static allocate(): VirtioMmioRegisters {
    return new VirtioMmioRegisters(new SharedArrayBuffer(BYTES));
  }

  constructor(readonly shared: SharedArrayBuffer) {
    if (!(shared instanceof SharedArrayBuffer) || shared.byteLength !== BYTES) {
      throw new TypeError(`a virtio-mmio register file is a SharedArrayBuffer of ${BYTES} bytes`);
    }
    this.words = new Int32Array(shared, 0, WORDS);
    this.config = new Uint8Array(shared, CONFIG_OFFSET, MAX_VIRTIO_CONFIG);
  }

  /** The words of the write mailbox (used only by the device-worker placement). */
  mailboxWords(): Int32Array {
    return new Int32Array(this.shared, MAILBOX_BASE * 4, MAILBOX_LENGTH);
  }

  /** Publishes the device's identity; refuses what the window cannot describe. */
  publish(identity: VirtioMmioIdentity): void {
    const { deviceId, offered, queueSizes, config } = identity;
    if (queueSizes.length > MAX_VIRTIO_QUEUES) throw new RangeError(`a virtio-mmio transport carries at most ${MAX_VIRTIO_QUEUES} queues, the device has ${queueSizes.length}`);
    if (config.length > MAX_VIRTIO_CONFIG) throw new RangeError(`a virtio-mmio config space is at most ${MAX_VIRTIO_CONFIG} bytes, the device has ${config.length}`);
    this.set(Word.DeviceId, deviceId);
    this.set(Word.OfferedLow, Number(offered & 0xffff_ffffn));
    this.set(Word.OfferedHigh, Number((offered >> 32n) & 0xffff_ffffn));
    this.set(Word.QueueCount, queueSizes.length);
    queueSizes.forEach((size, q) => this.setQueue(q, QueueWord.MaxSize, size));
    this.set(Word.ConfigLength, config.length);
    this.refreshConfig(config);
  }

  /** Copies the device's config bytes in (they may have changed since the last copy). */
  refreshConfig(config: Uint8Array, offset = 0, length = config.length): void {
    const end = Math.min(offset + length, config.length, MAX_VIRTIO_CONFIG);
    for (let i = offset; i < end; i++) Atomics.store(this.config, i, config[i]);
  }

  get(word: number): number {
    return Atomics.load(this.words, word) >>> 0;
  }

  set(word: number, value: number): void {
    Atomics.store(this.words, word, value | 0);
  }

  queue(q: number, field: number): number {
    return Atomics.load(this.words, QUEUE_BASE + QUEUE_STRIDE * q + field) >>> 0;
  }

  setQueue(q: number, field: number, value: number): void {
    Atomics.store(this.words, QUEUE_BASE + QUEUE_STRIDE * q + field, value | 0);
  }

  /** A queue's 64-bit address register (low and high words) as a number. */
  queueAddress(q: number, lowField: number): number {
    return this.queue(q, lowField + 1) * 2 ** 32 + this.queue(q, lowField);
  }

  count(stat: number, by = 1): void {
    Atomics.add(this.words, stat, by);
  }

  get queueCount(): number {
    return this.get(Word.QueueCount);
  }

  get stats(): VirtioMmioStats {
    const out: Record<string, number> = {};
    for (const [name, word] of Object.entries(StatWord)) out[name] = this.get(word);
    return out as VirtioMmioStats;
  }

  /** ORs bits into InterruptStatus; returns the new value. */
  raiseInterrupt(bits: number): number {
    return (Atomics.or(this.words, Word.InterruptStatus, bits) | bits) >>> 0;
  }

  /** Clears InterruptStatus bits; returns the new value. */
  acknowledgeInterrupt(bits: number): number {
    return (Atomics.and(this.words, Word.InterruptStatus, ~bits) & ~bits) >>> 0;
  }

  /**
   * The driver's read at `offset`, answered from the words alone (the one copy of the
   * register decoding, on whichever thread takes the access). A misaligned or sub-word read
   * of a register, or one of no register, reads 0 and is counted.
   */
  read(offset: number, size: AccessSize, wide: HighWord): number {
    if (offset >= VirtioMmio.Config) return this.readConfig(offset - VirtioMmio.Config, size, wide);
    if (size !== 4 || offset % 4 !== 0) return this.badAccess(size);
    const q = this.get(Word.QueueSel);
    const queue = q < this.queueCount;
    switch (offset) {
      case VirtioMmio.MagicValue: return VIRTIO_MMIO_MAGIC;
      case VirtioMmio.Version: return 2;
      case VirtioMmio.DeviceID: return this.get(Word.DeviceId);
      case VirtioMmio.VendorID: return VIRTIO_MMIO_VENDOR;
      case VirtioMmio.DeviceFeatures: {
        const sel = this.get(Word.DeviceFeaturesSel);
        return sel > 1 ? 0 : this.get(sel === 0 ? Word.OfferedLow : Word.OfferedHigh);
      }
      case VirtioMmio.QueueNumMax: return queue ? this.queue(q, QueueWord.MaxSize) : 0;
      case VirtioMmio.QueueReady: return queue ? this.queue(q, QueueWord.Ready) : 0;
      case VirtioMmio.InterruptStatus: return this.get(Word.InterruptStatus);
      case VirtioMmio.Status: return this.get(Word.Status);
      case VirtioMmio.ConfigGeneration: return this.get(Word.ConfigGeneration);
      // No shared memory regions: a length of all-ones says so (section 4.2.2).
      case VirtioMmio.SHMLenLow: case VirtioMmio.SHMLenHigh:
      case VirtioMmio.SHMBaseLow: case VirtioMmio.SHMBaseHigh: return 0xffff_ffff;
      default: return this.badAccess(size);
    }
  }

  badAccess(size: AccessSize): number {
    this.count(StatWord.badAccesses);
    return 0;
  }

  private readConfig(offset: number, size: AccessSize, wide: HighWord): number {
    if (offset + size > this.get(Word.ConfigLength)) return 0;
    let low = 0;
    let high = 0;
    for (let i = 0; i < size; i++) {
      const byte = Atomics.load(this.config, offset + i);
      if (i < 4) low |= byte << (i * 8);
      else high |= byte << ((i - 4) * 8);
    }
    if (size === 8) wide.high = high >>> 0;
    return low >>> 0;
  }
}
