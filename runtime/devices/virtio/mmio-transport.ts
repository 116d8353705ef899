/**
 * The virtio-mmio transport, version 2 (virtio 1.2 section 4.2): the register file a driver
 * programs, feature negotiation, device status and reset, split-queue setup, the device's
 * config space at 0x100, and the interrupt status a level-triggered line follows. It is a
 * bus Device on the main thread, or runs on the device's own worker (device-worker
 * placement), its register words in a SAB either way; the VirtioDevice behind it does the I/O.
 *
 * A driver that breaks the rules (a hostile ring, a bad queue layout, a malformed request)
 * sets DEVICE_NEEDS_RESET with a configuration-change interrupt, is logged once, and the
 * device does nothing more until it is reset. Nothing a guest writes makes this throw.
 */
import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { AccessSize, Device, HighWord, InterruptLine } from "../device.js";
import { toUnsigned } from "../device.js";
import { SplitVirtqueue } from "./virtqueue.js";
import { QueueWord, StatWord, VirtioMmio, VirtioMmioRegisters, type VirtioMmioStats, Word } from "./virtio-mmio-registers.js";
import {
  featureBit, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1,
  type FdWatcher, type VirtioDevice, type VirtioQueueContext,
} from "./virtio-device.js";

export { MAX_VIRTIO_QUEUES, VIRTIO_MMIO_LENGTH, VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VENDOR, VirtioMmio, type VirtioMmioStats } from "./virtio-mmio-registers.js";

/** Device status bits (virtio 1.2 section 2.1). */
export const VirtioStatus = {
  ACKNOWLEDGE: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, DEVICE_NEEDS_RESET: 64, FAILED: 128,
} as const;

/** InterruptStatus bits. */
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

const TRANSPORT_FEATURES = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_RING_INDIRECT_DESC) | featureBit(VIRTIO_F_RING_EVENT_IDX);

export interface VirtioMmioOptions {
  memory: GuestMemory;
  device: VirtioDevice;
  interrupt: InterruptLine;
  /** Where the once-per-reset fault report goes (default: console.warn). */
  log?: (message: string) => void;
  /** The register file to keep the state in (default: a new one); other threads may read it. */
  registers?: VirtioMmioRegisters;
  /**
   * Runs `serve` again later, for requests left after a device's per-call budget (default:
   * after the event loop's turn, with setImmediate). A thread with no event loop passes its own.
   */
  schedule?: (serve: () => void) => void;
  /**
   * The line is a resampling irqfd: the hypervisor deasserts it on the guest's EOI, and
   * InterruptACK may be applied by another thread. Then every interrupt asserts it (a no-op
   * while it is high) and nothing here deasserts it.
   */
  resampledLine?: boolean;
  /** The serving thread waits in poll(2) and watches host fds for the device (a device worker); see VirtioDeviceHost. */
  watchFd?: FdWatcher;
}

/**
 * The state machine of one transport. The register words live in a `VirtioMmioRegisters`
 * SAB; the rings, the device and the line stay with the one thread that runs this object
 * (the main thread, or the device's worker), which applies every state-changing write.
 */
export class VirtioMmioTransport implements Device {
  readonly name: string;
  readonly registers: VirtioMmioRegisters;
  /** The cause of the current DEVICE_NEEDS_RESET, if any. */
  fault: string | undefined;
  private readonly memory: GuestMemory;
  private readonly device: VirtioDevice;
  private readonly line: InterruptLine;
  private readonly log: (message: string) => void;
  private readonly schedule: (serve: () => void) => void;
  private readonly offered: bigint;
  private readonly rings: (SplitVirtqueue | undefined)[];
  /** Queues with a continuation of a budget-limited notify already scheduled. */
  private readonly rescheduled = new Set<number>();
  private driverFeatures = 0n;
  private lineLevel = false;
  private readonly resampledLine: boolean;
  private readonly context: VirtioQueueContext;

  constructor(options: VirtioMmioOptions) {
    this.memory = options.memory;
    this.device = options.device;
    this.line = options.interrupt;
    this.log = options.log ?? ((message) => console.warn(message));
    this.schedule = options.schedule ?? ((serve) => void setImmediate(serve));
    this.name = `virtio-mmio ${this.device.name}`;
    this.resampledLine = options.resampledLine ?? false;
    this.offered = (this.device.features & ~TRANSPORT_FEATURES) | TRANSPORT_FEATURES;
    this.registers = options.registers ?? VirtioMmioRegisters.allocate();
    this.registers.publish({ deviceId: this.device.deviceId, offered: this.offered, queueSizes: this.device.queueSizes, config: this.device.config });
    this.rings = this.device.queueSizes.map(() => undefined);
    const transport = this;
    this.context = {
      memory: this.memory,
      get features() { return transport.driverFeatures; },
      needsReset: (reason: string) => this.needsReset(reason),
    };
    this.device.attach?.({ wake: (index) => this.serveLater(index), watchFd: options.watchFd });
  }

  get stats(): VirtioMmioStats {
    return this.registers.stats;
  }

  /** The device status byte as the driver last saw it. */
  get deviceStatus(): number {
    return this.registers.get(Word.Status);
  }

  /** The features the driver and device agreed on (valid once FEATURES_OK is set). */
  get negotiatedFeatures(): bigint {
    return this.driverFeatures;
  }

  /** Tells the driver the config space changed (virtio 1.2 section 2.5.1). */
  configChanged(): void {
    this.registers.refreshConfig(this.device.config);
    this.registers.set(Word.ConfigGeneration, (this.registers.get(Word.ConfigGeneration) + 1) >>> 0);
    if (this.deviceStatus & VirtioStatus.DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  read(offset: number, size: AccessSize, wide: HighWord): number {
    // The device may have changed its config bytes since they were published.
    if (offset >= VirtioMmio.Config) this.registers.refreshConfig(this.device.config, offset - VirtioMmio.Config, size);
    return this.registers.read(offset, size, wide);
  }

  write(offset: number, size: AccessSize, value: number): void {
    const registers = this.registers;
    if (offset >= VirtioMmio.Config) {
      if (size > 4 || this.device.writeConfig === undefined) return;
      try {
        this.device.writeConfig(offset - VirtioMmio.Config, size, toUnsigned(value, size));
        registers.refreshConfig(this.device.config);
      } catch (error) {
        this.needsReset(`device ${this.device.name} failed on a config write at 0x${offset.toString(16)}: ${(error as Error).message}`);
      }
      return;
    }
    if (size !== 4 || offset % 4 !== 0) {
      registers.badAccess(size);
      return;
    }
    const v = toUnsigned(value, 4);
    switch (offset) {
      case VirtioMmio.DeviceFeaturesSel: registers.set(Word.DeviceFeaturesSel, v); return;
      case VirtioMmio.DriverFeaturesSel: registers.set(Word.DriverFeaturesSel, v); return;
      case VirtioMmio.DriverFeatures: this.setDriverFeatures(v); return;
      case VirtioMmio.QueueSel: registers.set(Word.QueueSel, v); return;
      case VirtioMmio.QueueNotify:
        registers.count(StatWord.notifyExits);
        this.notify(v);
        return;
      case VirtioMmio.InterruptACK: this.acknowledge(v); return;
      case VirtioMmio.Status: this.setStatus(v); return;
      case VirtioMmio.SHMSel: return;
    }
    // Queue registers: only for a queue that exists and is not live (section 4.2.2.3).
    const q = registers.get(Word.QueueSel);
    if (q >= this.rings.length) return;
    const ready = registers.queue(q, QueueWord.Ready) === 1;
    if (ready && offset !== VirtioMmio.QueueReady) return;
    switch (offset) {
      case VirtioMmio.QueueNum: registers.setQueue(q, QueueWord.Size, v); return;
      case VirtioMmio.QueueReady: this.setQueueReady(q, v === 1); return;
      case VirtioMmio.QueueDescLow: registers.setQueue(q, QueueWord.DescLow, v); return;
      case VirtioMmio.QueueDescHigh: registers.setQueue(q, QueueWord.DescHigh, v); return;
      case VirtioMmio.QueueDriverLow: registers.setQueue(q, QueueWord.AvailLow, v); return;
      case VirtioMmio.QueueDriverHigh: registers.setQueue(q, QueueWord.AvailHigh, v); return;
      case VirtioMmio.QueueDeviceLow: registers.setQueue(q, QueueWord.UsedLow, v); return;
      case VirtioMmio.QueueDeviceHigh: registers.setQueue(q, QueueWord.UsedHigh, v); return;
      default: registers.badAccess(size);
    }
  }

  /**
   * The driver notified queue `index` (`count` times) through an eventfd rather than a
   * register write: what a device worker calls when a QueueNotify ioeventfd fires.
   */
  notified(index: number, count = 1): void {
    this.registers.count(StatWord.notifications, count);
    this.serve(index);
  }

  /** The line was deasserted by the hypervisor on the guest's EOI: whether it must be asserted again. */
  get interruptPending(): boolean {
    return this.registers.get(Word.InterruptStatus) !== 0;
  }

  private setDriverFeatures(word: number): void {
    const sel = this.registers.get(Word.DriverFeaturesSel);
    if (this.deviceStatus & VirtioStatus.FEATURES_OK || sel > 1) return;
    const shift = BigInt(32 * sel);
    this.driverFeatures = (this.driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(word) << shift);
    this.registers.set(sel === 0 ? Word.DriverLow : Word.DriverHigh, word);
  }

  private setStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    const status = this.deviceStatus;
    const adding = value & ~status;
    if (adding & VirtioStatus.FEATURES_OK) {
      // Section 2.2.2: only features offered, and a version-2 transport needs VERSION_1.
      // Refusing means leaving FEATURES_OK clear for the driver to read back.
      const acceptable = (this.driverFeatures & ~this.offered) === 0n && (this.driverFeatures & featureBit(VIRTIO_F_VERSION_1)) !== 0n;
      if (!acceptable) value &= ~VirtioStatus.FEATURES_OK;
    }
    if (adding & VirtioStatus.DRIVER_OK && !(value & VirtioStatus.FEATURES_OK)) value &= ~VirtioStatus.DRIVER_OK;
    // The driver cannot clear bits (only a reset does) nor set DEVICE_NEEDS_RESET.
    this.registers.set(Word.Status, (status | value) & ~VirtioStatus.DEVICE_NEEDS_RESET | (status & VirtioStatus.DEVICE_NEEDS_RESET));
  }

  private reset(): void {
    const registers = this.registers;
    registers.count(StatWord.resets);
    this.device.reset();
    registers.set(Word.Status, 0);
    this.driverFeatures = 0n;
    for (const word of [Word.DriverLow, Word.DriverHigh, Word.DeviceFeaturesSel, Word.DriverFeaturesSel, Word.QueueSel]) registers.set(word, 0);
    this.fault = undefined;
    this.rings.forEach((_, q) => {
      for (const field of [QueueWord.Size, QueueWord.Ready, QueueWord.DescLow, QueueWord.DescHigh, QueueWord.AvailLow, QueueWord.AvailHigh, QueueWord.UsedLow, QueueWord.UsedHigh]) {
        registers.setQueue(q, field, 0);
      }
      this.rings[q] = undefined;
    });
    registers.set(Word.InterruptStatus, 0);
    this.updateLine();
  }

  private setQueueReady(q: number, ready: boolean): void {
    const registers = this.registers;
    // QueueReady = 1 again on a live queue must not restart its indices (and replay requests).
    if (ready && registers.queue(q, QueueWord.Ready) === 1) return;
    if (!ready) {
      registers.setQueue(q, QueueWord.Ready, 0);
      this.rings[q] = undefined;
      return;
    }
    const size = registers.queue(q, QueueWord.Size);
    const maxSize = registers.queue(q, QueueWord.MaxSize);
    if (size > maxSize) {
      this.needsReset(`queue ${q}: QueueNum ${size} exceeds QueueNumMax ${maxSize}`);
      return;
    }
    const ring = new SplitVirtqueue(this.memory, {
      size,
      descriptorTable: registers.queueAddress(q, QueueWord.DescLow),
      availRing: registers.queueAddress(q, QueueWord.AvailLow),
      usedRing: registers.queueAddress(q, QueueWord.UsedLow),
      eventIndex: (this.driverFeatures & featureBit(VIRTIO_F_RING_EVENT_IDX)) !== 0n,
      indirect: (this.driverFeatures & featureBit(VIRTIO_F_RING_INDIRECT_DESC)) !== 0n,
    }, q);
    if (ring.failure !== undefined) {
      this.needsReset(ring.failure.message);
      return;
    }
    registers.setQueue(q, QueueWord.Ready, 1);
    this.rings[q] = ring;
  }

  private notify(index: number): void {
    this.registers.count(StatWord.notifications);
    this.serve(index);
  }

  private serve(index: number): void {
    if ((this.deviceStatus & (VirtioStatus.DRIVER_OK | VirtioStatus.DEVICE_NEEDS_RESET)) !== VirtioStatus.DRIVER_OK) return;
    const ring = this.rings[index];
    if (ring === undefined) return;
    let leftForBudget: void | boolean;
    // As QEMU does (virtio_queue_set_notification): no kicks wanted while the queue is being
    // walked, since every entry offered meanwhile is taken without one.
    ring.setNotifications(false);
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
    if (this.rings[index] === ring) ring.setNotifications(true);
    if (ring.takeNotification()) this.raise(VIRTIO_MMIO_INT_VRING);
    // Work left after the device's budget, or offered after its last pop without a kick
    // (notifications were off): serve it later, letting other work in first.
    if (leftForBudget !== false && ring.hasPending()) this.serveLater(index, ring);
  }

  /** Serves queue `index` later (after other work), if it is still the same live ring. */
  private serveLater(index: number, ring = this.rings[index]): void {
    if (ring === undefined || this.rescheduled.has(index)) return;
    this.rescheduled.add(index);
    this.schedule(() => {
      this.rescheduled.delete(index);
      if (this.rings[index] === ring) this.serve(index);
    });
  }

  private needsReset(reason: string): void {
    const status = this.deviceStatus;
    if (status & VirtioStatus.DEVICE_NEEDS_RESET) return;
    this.registers.count(StatWord.faults);
    this.fault = reason;
    this.log(`${this.name}: ${reason}`);
    this.registers.set(Word.Status, status | VirtioStatus.DEVICE_NEEDS_RESET);
    this.rings.fill(undefined);
    // Section 2.1.2: a device that needs a reset tells a running driver by a config change.
    if (status & VirtioStatus.DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  private raise(bits: number): void {
    this.registers.count(StatWord.interrupts);
    this.registers.raiseInterrupt(bits);
    this.updateLine();
  }

  private acknowledge(bits: number): void {
    this.registers.acknowledgeInterrupt(bits);
    this.updateLine();
  }

  private updateLine(): void {
    if (this.resampledLine) {
      if (this.interruptPending) this.line.set(true);
      return;
    }
    const level = this.registers.get(Word.InterruptStatus) !== 0;
    if (level === this.lineLevel) return;
    this.lineLevel = level;
    this.line.set(level);
  }
}
