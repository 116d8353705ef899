/**
 * The virtio-mmio transport, version 2 (virtio 1.2 section 4.2): the register file a driver
 * programs, feature negotiation, device status and reset, split-queue setup, the device's
 * config space at 0x100, and the interrupt status a level-triggered line follows. It is a
 * plain bus Device (here on the main thread); the VirtioDevice behind it does the I/O.
 *
 * A driver that breaks the rules (a hostile ring, a bad queue layout, a malformed request)
 * sets DEVICE_NEEDS_RESET with a configuration-change interrupt, is logged once, and the
 * device does nothing more until it is reset. Nothing a guest writes makes this throw.
 */
import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { AccessSize, Device, InterruptLine } from "../device.js";
import { toUnsigned } from "../device.js";
import { SplitVirtqueue } from "./virtqueue.js";
import {
  featureBit, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1,
  type VirtioDevice, type VirtioQueueContext,
} from "./virtio-device.js";

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

/** Device status bits (virtio 1.2 section 2.1). */
export const VirtioStatus = {
  ACKNOWLEDGE: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, DEVICE_NEEDS_RESET: 64, FAILED: 128,
} as const;

/** InterruptStatus bits. */
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

const TRANSPORT_FEATURES = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_RING_INDIRECT_DESC) | featureBit(VIRTIO_F_RING_EVENT_IDX);

interface QueueRegisters {
  readonly maxSize: number;
  size: number;
  ready: boolean;
  descriptorTable: number;
  availRing: number;
  usedRing: number;
  ring: SplitVirtqueue | undefined;
}

export interface VirtioMmioOptions {
  memory: GuestMemory;
  device: VirtioDevice;
  interrupt: InterruptLine;
  /** Where the once-per-reset fault report goes (default: console.warn). */
  log?: (message: string) => void;
}

/** Counters a test or the bench reads. */
export interface VirtioMmioStats {
  notifications: number;
  interrupts: number;
  resets: number;
  /** Times the device went to DEVICE_NEEDS_RESET. */
  faults: number;
  /** Register accesses that were not 32-bit and aligned, or to no register. */
  badAccesses: number;
}

export class VirtioMmioTransport implements Device {
  readonly name: string;
  readonly stats: VirtioMmioStats = { notifications: 0, interrupts: 0, resets: 0, faults: 0, badAccesses: 0 };
  /** The cause of the current DEVICE_NEEDS_RESET, if any. */
  fault: string | undefined;
  private readonly memory: GuestMemory;
  private readonly device: VirtioDevice;
  private readonly line: InterruptLine;
  private readonly log: (message: string) => void;
  private readonly offered: bigint;
  private readonly queues: QueueRegisters[];
  /** Queues with a continuation of a budget-limited notify already scheduled. */
  private readonly rescheduled = new Set<number>();
  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private interruptStatus = 0;
  private lineLevel = false;
  private configGeneration = 0;
  private readonly context: VirtioQueueContext;

  constructor(options: VirtioMmioOptions) {
    this.memory = options.memory;
    this.device = options.device;
    this.line = options.interrupt;
    this.log = options.log ?? ((message) => console.warn(message));
    this.name = `virtio-mmio ${this.device.name}`;
    this.offered = (this.device.features & ~TRANSPORT_FEATURES) | TRANSPORT_FEATURES;
    this.queues = this.device.queueSizes.map((maxSize) => ({
      maxSize, size: 0, ready: false, descriptorTable: 0, availRing: 0, usedRing: 0, ring: undefined,
    }));
    const transport = this;
    this.context = {
      memory: this.memory,
      get features() { return transport.driverFeatures; },
      needsReset: (reason: string) => this.needsReset(reason),
    };
    this.device.attach?.({ wake: (index) => this.schedule(index) });
  }

  /** The device status byte as the driver last saw it. */
  get deviceStatus(): number {
    return this.status;
  }

  /** The features the driver and device agreed on (valid once FEATURES_OK is set). */
  get negotiatedFeatures(): bigint {
    return this.driverFeatures;
  }

  /** Tells the driver the config space changed (virtio 1.2 section 2.5.1). */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.status & VirtioStatus.DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  read(offset: number, size: AccessSize): number | bigint {
    if (offset >= VirtioMmio.Config) return this.readConfig(offset - VirtioMmio.Config, size);
    if (size !== 4 || offset % 4 !== 0) return this.badAccess(size);
    const queue = this.queues[this.queueSel];
    switch (offset) {
      case VirtioMmio.MagicValue: return VIRTIO_MMIO_MAGIC;
      case VirtioMmio.Version: return 2;
      case VirtioMmio.DeviceID: return this.device.deviceId;
      case VirtioMmio.VendorID: return VIRTIO_MMIO_VENDOR;
      case VirtioMmio.DeviceFeatures:
        return this.deviceFeaturesSel > 1 ? 0 : Number((this.offered >> BigInt(32 * this.deviceFeaturesSel)) & 0xffff_ffffn);
      case VirtioMmio.QueueNumMax: return queue?.maxSize ?? 0;
      case VirtioMmio.QueueReady: return queue?.ready ? 1 : 0;
      case VirtioMmio.InterruptStatus: return this.interruptStatus;
      case VirtioMmio.Status: return this.status;
      case VirtioMmio.ConfigGeneration: return this.configGeneration;
      // No shared memory regions: a length of all-ones says so (section 4.2.2).
      case VirtioMmio.SHMLenLow: case VirtioMmio.SHMLenHigh:
      case VirtioMmio.SHMBaseLow: case VirtioMmio.SHMBaseHigh: return 0xffff_ffff;
      default: return this.badAccess(size);
    }
  }

  write(offset: number, size: AccessSize, value: number | bigint): void {
    if (offset >= VirtioMmio.Config) {
      if (size > 4 || this.device.writeConfig === undefined) return;
      try {
        this.device.writeConfig(offset - VirtioMmio.Config, size, toUnsigned(value, size));
      } catch (error) {
        this.needsReset(`device ${this.device.name} failed on a config write at 0x${offset.toString(16)}: ${(error as Error).message}`);
      }
      return;
    }
    if (size !== 4 || offset % 4 !== 0) {
      this.badAccess(size);
      return;
    }
    const v = toUnsigned(value, 4);
    const queue = this.queues[this.queueSel];
    switch (offset) {
      case VirtioMmio.DeviceFeaturesSel: this.deviceFeaturesSel = v; return;
      case VirtioMmio.DriverFeaturesSel: this.driverFeaturesSel = v; return;
      case VirtioMmio.DriverFeatures: this.setDriverFeatures(v); return;
      case VirtioMmio.QueueSel: this.queueSel = v; return;
      case VirtioMmio.QueueNotify: this.notify(v); return;
      case VirtioMmio.InterruptACK: this.acknowledge(v); return;
      case VirtioMmio.Status: this.setStatus(v); return;
      case VirtioMmio.SHMSel: return;
    }
    // Queue registers: only for a queue that exists and is not live (section 4.2.2.3).
    if (queue === undefined || (queue.ready && offset !== VirtioMmio.QueueReady)) return;
    switch (offset) {
      case VirtioMmio.QueueNum: queue.size = v; return;
      case VirtioMmio.QueueReady: this.setQueueReady(queue, v === 1); return;
      case VirtioMmio.QueueDescLow: queue.descriptorTable = low(queue.descriptorTable, v); return;
      case VirtioMmio.QueueDescHigh: queue.descriptorTable = high(queue.descriptorTable, v); return;
      case VirtioMmio.QueueDriverLow: queue.availRing = low(queue.availRing, v); return;
      case VirtioMmio.QueueDriverHigh: queue.availRing = high(queue.availRing, v); return;
      case VirtioMmio.QueueDeviceLow: queue.usedRing = low(queue.usedRing, v); return;
      case VirtioMmio.QueueDeviceHigh: queue.usedRing = high(queue.usedRing, v); return;
      default: this.badAccess(size);
    }
  }

  private readConfig(offset: number, size: AccessSize): number | bigint {
    const config = this.device.config;
    if (offset + size > config.length) return size === 8 ? 0n : 0;
    let value = 0n;
    for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(config[offset + i]);
    return size === 8 ? value : Number(value);
  }

  private badAccess(size: AccessSize): number | bigint {
    this.stats.badAccesses++;
    return size === 8 ? 0n : 0;
  }

  private setDriverFeatures(word: number): void {
    if (this.status & VirtioStatus.FEATURES_OK || this.driverFeaturesSel > 1) return;
    const shift = BigInt(32 * this.driverFeaturesSel);
    this.driverFeatures = (this.driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(word) << shift);
  }

  private setStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    const adding = value & ~this.status;
    if (adding & VirtioStatus.FEATURES_OK) {
      // Section 2.2.2: only features offered, and a version-2 transport needs VERSION_1.
      // Refusing means leaving FEATURES_OK clear for the driver to read back.
      const acceptable = (this.driverFeatures & ~this.offered) === 0n && (this.driverFeatures & featureBit(VIRTIO_F_VERSION_1)) !== 0n;
      if (!acceptable) value &= ~VirtioStatus.FEATURES_OK;
    }
    if (adding & VirtioStatus.DRIVER_OK && !(value & VirtioStatus.FEATURES_OK)) value &= ~VirtioStatus.DRIVER_OK;
    // The driver cannot clear bits (only a reset does) nor set DEVICE_NEEDS_RESET.
    this.status = (this.status | value) & ~VirtioStatus.DEVICE_NEEDS_RESET | (this.status & VirtioStatus.DEVICE_NEEDS_RESET);
  }

  private reset(): void {
    this.stats.resets++;
    this.device.reset();
    this.status = 0;
    this.driverFeatures = 0n;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    this.fault = undefined;
    for (const queue of this.queues) {
      queue.size = 0;
      queue.ready = false;
      queue.descriptorTable = queue.availRing = queue.usedRing = 0;
      queue.ring = undefined;
    }
    this.interruptStatus = 0;
    this.updateLine();
  }

  private setQueueReady(queue: QueueRegisters, ready: boolean): void {
    // QueueReady = 1 again on a live queue must not restart its indices (and replay requests).
    if (ready && queue.ready) return;
    if (!ready) {
      queue.ready = false;
      queue.ring = undefined;
      return;
    }
    if (queue.size > queue.maxSize) {
      this.needsReset(`queue ${this.queueSel}: QueueNum ${queue.size} exceeds QueueNumMax ${queue.maxSize}`);
      return;
    }
    const ring = new SplitVirtqueue(this.memory, {
      size: queue.size,
      descriptorTable: queue.descriptorTable,
      availRing: queue.availRing,
      usedRing: queue.usedRing,
      eventIndex: (this.driverFeatures & featureBit(VIRTIO_F_RING_EVENT_IDX)) !== 0n,
      indirect: (this.driverFeatures & featureBit(VIRTIO_F_RING_INDIRECT_DESC)) !== 0n,
    }, this.queueSel);
    if (ring.failure !== undefined) {
      this.needsReset(ring.failure.message);
      return;
    }
    queue.ready = true;
    queue.ring = ring;
  }

  private notify(index: number): void {
    this.stats.notifications++;
    this.serve(index);
  }

  private serve(index: number): void {
    if ((this.status & (VirtioStatus.DRIVER_OK | VirtioStatus.DEVICE_NEEDS_RESET)) !== VirtioStatus.DRIVER_OK) return;
    const ring = this.queues[index]?.ring;
    if (ring === undefined) return;
    let leftForBudget: void | boolean;
    try {
      leftForBudget = this.device.processQueue(index, ring, this.context);
    } catch (error) {
      // A device bug, not the guest's: still contained to this device.
      this.needsReset(`device ${this.device.name} failed on queue ${index}: ${(error as Error).message}`);
      return;
    }
    if (ring.failure !== undefined) {
      this.needsReset(ring.failure.message);
      return;
    }
    if (ring.takeNotification()) this.raise(VIRTIO_MMIO_INT_VRING);
    // Work left after the device's budget: serve it after the event loop has had its turn.
    if (leftForBudget !== false && ring.hasPending()) this.schedule(index, ring);
  }

  /** Serves queue `index` after the event loop's turn, if it is still the same live ring. */
  private schedule(index: number, ring = this.queues[index]?.ring): void {
    if (ring === undefined || this.rescheduled.has(index)) return;
    this.rescheduled.add(index);
    setImmediate(() => {
      this.rescheduled.delete(index);
      if (this.queues[index]?.ring === ring) this.serve(index);
    });
  }

  private needsReset(reason: string): void {
    if (this.status & VirtioStatus.DEVICE_NEEDS_RESET) return;
    this.stats.faults++;
    this.fault = reason;
    this.log(`${this.name}: ${reason}`);
    this.status |= VirtioStatus.DEVICE_NEEDS_RESET;
    for (const queue of this.queues) queue.ring = undefined;
    // Section 2.1.2: a device that needs a reset tells a running driver by a config change.
    if (this.status & VirtioStatus.DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  private raise(bits: number): void {
    this.stats.interrupts++;
    this.interruptStatus |= bits;
    this.updateLine();
  }

  private acknowledge(bits: number): void {
    this.interruptStatus &= ~bits;
    this.updateLine();
  }

  private updateLine(): void {
    const level = this.interruptStatus !== 0;
    if (level === this.lineLevel) return;
    this.lineLevel = level;
    this.line.set(level);
  }
}

function low(current: number, word: number): number {
  return Math.floor(current / 2 ** 32) * 2 ** 32 + word;
}

function high(current: number, word: number): number {
  return word * 2 ** 32 + (current % 2 ** 32);
}
