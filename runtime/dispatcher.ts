/**
 * The main-thread device dispatcher: one Atomics.waitAsync on the VM's doorbell, then a
 * batch drain of every vCPU's exit channel, routing each exit to the bus and completing
 * synchronous ones. Spins briefly after activity, yields to the event loop every
 * millisecond under load, parks when idle.
 */
import { ExitKind, exitKindName } from "./hypervisor/hypervisor.js";
import { type ChannelRecord, Doorbell, type ExitChannel } from "../memory/exit-channel.js";
import { allOnes, type AccessSize } from "./devices/device.js";
import type { Bus } from "./bus.js";

export interface DispatcherStats {
  /** Exits handled on the main thread (posted and sync). */
  handled: number;
  posted: number;
  sync: number;
  /** Reads no device claimed (answered with all-ones) and writes dropped. */
  unclaimedReads: number;
  unclaimedWrites: number;
  /** Times the dispatcher parked on the doorbell. */
  parks: number;
}

export interface DispatcherOptions {
  /** How long to keep polling after the last synchronous exit before parking, in µs. */
  spinMicros: number;
  /** Longest stretch of draining before yielding to the event loop, in milliseconds. */
  yieldAfterMs: number;
  /**
   * How long a parked dispatcher leaves posted writes in the rings before draining them
   * (ms). Workers wake it earlier when a ring is half full or they wait for an answer.
   */
  postedFlushMs: number;
}

export const DEFAULT_DISPATCHER_OPTIONS: DispatcherOptions = { spinMicros: 50, yieldAfterMs: 1, postedFlushMs: 1 };

export class DeviceError extends Error {
  override name = "DeviceError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

const TWO_POW_32 = 2 ** 32;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class Dispatcher {
  readonly stats: DispatcherStats = { handled: 0, posted: 0, sync: 0, unclaimedReads: 0, unclaimedWrites: 0, parks: 0 };
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly record: ChannelRecord = { kind: 0, size: 0, address: 0, data: 0, dataHigh: 0, count: 0 };
  private readonly consumePosted = (record: ChannelRecord): void => this.handleWrite(record, record.data, record.dataHigh);
  private answerLow = 0;
  private answerHigh = 0;

  constructor(
    private readonly channels: readonly ExitChannel[],
    private readonly doorbell: Int32Array,
    private readonly buses: { pio: Bus; mmio: Bus; msr: Bus },
    private readonly onDeviceError: (error: DeviceError) => void,
    private readonly options: DispatcherOptions = DEFAULT_DISPATCHER_OPTIONS,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stops the loop after a final drain; resolves when it has ended. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    Atomics.notify(this.doorbell, Doorbell.SEQUENCE);
    await this.loop;
  }

  /** Drains every channel once; returns how many sync requests it answered. */
  drainAll(): number {
    let requests = 0;
    for (let i = 0; i < this.channels.length; i++) {
      const channel = this.channels[i];
      // Posted records first: they precede any sync request of the same vCPU.
      channel.drainPosted(this.consumePosted, this.record);
      if (channel.hasRequest()) {
        channel.drainPosted(this.consumePosted, this.record);
        this.handleRequest(channel);
        requests++;
      }
    }
    return requests;
  }

  /**
   * Spins while vCPUs wait for answers (a parked dispatcher costs them a wake-up each), and
   * parks otherwise: posted writes are then drained in batches, on the flush timer or when a
   * ring is half full, so a stream of them does not cost a main-thread core.
   */
  private async run(): Promise<void> {
    const { spinMicros, yieldAfterMs, postedFlushMs } = this.options;
    const doorbell = this.doorbell;
    let sliceStart = performance.now();
    let lastRequest = -Infinity;
    while (this.running) {
      const sequence = Atomics.load(doorbell, Doorbell.SEQUENCE);
      const requests = this.drainAll();
      const now = performance.now();
      if (requests > 0) lastRequest = now;
      if (now - sliceStart >= yieldAfterMs) {
        await yieldToEventLoop();
        sliceStart = performance.now();
        continue;
      }
      if ((now - lastRequest) * 1000 < spinMicros) continue;
      Atomics.store(doorbell, Doorbell.MAIN_PARKED, 1);
      if (Atomics.load(doorbell, Doorbell.SEQUENCE) === sequence && this.running && !this.anyRequest()) {
        this.stats.parks++;
        const wait = Atomics.waitAsync(doorbell, Doorbell.SEQUENCE, sequence, postedFlushMs);
        if (wait.async) await wait.value;
      }
      Atomics.store(doorbell, Doorbell.MAIN_PARKED, 0);
      sliceStart = performance.now();
    }
    this.drainAll();
  }

  private anyRequest(): boolean {
    for (let i = 0; i < this.channels.length; i++) if (this.channels[i].hasRequest()) return true;
    return false;
  }

  private busFor(kind: number): Bus {
    if (kind === ExitKind.IoIn || kind === ExitKind.IoOut) return this.buses.pio;
    if (kind === ExitKind.MmioRead || kind === ExitKind.MmioWrite) return this.buses.mmio;
    return this.buses.msr;
  }

  private handleWrite(record: ChannelRecord, low: number, high: number): void {
    this.stats.handled++;
    this.stats.posted++;
    this.write(record.kind, record.address, record.size, low, high);
  }

  private write(kind: number, address: number, size: number, low: number, high: number): void {
    const range = this.busFor(kind).find(address);
    if (range === undefined) {
      this.stats.unclaimedWrites++;
      return;
    }
    const value = size === 8 ? BigInt(low) | (BigInt(high) << 32n) : low;
    try {
      range.device.write(address - range.base, size as AccessSize, value);
    } catch (error) {
      this.fail(range.device.name, kind, address, error);
    }
  }

  /** Reads into answerLow/answerHigh. */
  private read(kind: number, address: number, size: number): void {
    const range = this.busFor(kind).find(address);
    let value: number | bigint;
    if (range === undefined) {
      this.stats.unclaimedReads++;
      value = allOnes(size as AccessSize);
    } else {
      try {
        value = range.device.read(address - range.base, size as AccessSize);
      } catch (error) {
        this.fail(range.device.name, kind, address, error);
        value = allOnes(size as AccessSize);
      }
    }
    if (typeof value === "bigint") {
      this.answerLow = Number(value & 0xffff_ffffn);
      this.answerHigh = Number((value >> 32n) & 0xffff_ffffn);
    } else {
      this.answerLow = value >>> 0;
      this.answerHigh = Math.floor(value / TWO_POW_32) >>> 0;
    }
  }

  private handleRequest(channel: ExitChannel): void {
    const record = this.record;
    channel.readRequest(record);
    this.stats.handled++;
    this.stats.sync++;
    const { kind, address, size, count } = record;
    const isRead = kind === ExitKind.IoIn || kind === ExitKind.MmioRead || kind === ExitKind.MsrRead;
    const failuresBefore = this.failures;
    if (count > 1) {
      this.handleStringIo(channel, kind, address, size, count);
      channel.complete(0, 0, this.failures !== failuresBefore);
    } else if (isRead) {
      this.read(kind, address, size);
      channel.complete(this.answerLow, this.answerHigh, this.failures !== failuresBefore);
    } else {
      this.write(kind, address, size, record.data, record.dataHigh);
      channel.complete(0, 0, this.failures !== failuresBefore);
    }
  }

  /** `rep insb/outsb` and wider: one device access per element, data in the mailbox. */
  private handleStringIo(channel: ExitChannel, kind: number, address: number, size: number, count: number): void {
    const data = new DataView(channel.syncData.buffer, channel.syncData.byteOffset, channel.syncData.byteLength);
    const elements = Math.min(count, Math.floor(data.byteLength / size));
    for (let i = 0; i < elements; i++) {
      const at = i * size;
      if (kind === ExitKind.IoIn) {
        this.read(kind, address, size);
        if (size === 1) data.setUint8(at, this.answerLow);
        else if (size === 2) data.setUint16(at, this.answerLow, true);
        else data.setUint32(at, this.answerLow, true);
      } else {
        const value = size === 1 ? data.getUint8(at) : size === 2 ? data.getUint16(at, true) : data.getUint32(at, true);
        this.write(kind, address, size, value, 0);
      }
    }
  }

  private failures = 0;

  private fail(deviceName: string, kind: number, address: number, error: unknown): void {
    this.failures++;
    const reason = error instanceof Error ? error.message : String(error);
    this.onDeviceError(
      new DeviceError(
        `device '${deviceName}' threw on ${exitKindName(kind)} at 0x${address.toString(16)}: ${reason}`,
        { cause: error },
      ),
    );
  }
}
