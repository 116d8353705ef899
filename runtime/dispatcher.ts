/**
 * The main-thread device dispatcher: one Atomics.waitAsync on the VM's doorbell, then a
 * batch drain of every vCPU's exit channel, routing each exit to the bus and completing
 * synchronous ones. After a sync exit it keeps polling for a while (a window that adapts
 * like the workers' spin budget), yields to the event loop every millisecond under load,
 * and parks when idle: a parked dispatcher is woken by a sync request or by a ring that
 * goes from empty to non-empty, never by a timer, so an idle VM costs the main thread
 * nothing.
 */
import { ExitKind, exitKindName } from "./hypervisor/hypervisor.js";
import { Answer, type ChannelRecord, Doorbell, type ExitChannel } from "../memory/exit-channel.js";
import { type Bus, BusAccessor } from "./bus.js";
import type { AccessSize } from "./devices/device.js";
import { CoreYielder } from "../memory/thread-yield.js";
import { hostMonotonicClock } from "./host-monotonic-clock.js";

export interface DispatcherStats {
  /** Exits handled on the main thread (posted and sync). */
  handled: number;
  posted: number;
  sync: number;
  /** Reads no device claimed (answered with all-ones, or #GP for MSRs) and writes dropped. */
  unclaimedReads: number;
  unclaimedWrites: number;
  /** Times the dispatcher parked on the doorbell (each park ends in one main-thread wake-up). */
  parks: number;
  /** The adaptive polling window after a sync exit, µs, when last adapted. */
  spinWindowMicros: number;
  /** Writes the hypervisor queued (coalesced) and this dispatcher delivered. */
  coalesced: number;
  /** Times the polling loop yielded the core (contended hosts), and yields that lost a slice. */
  yields: number;
  slicesLost: number;
  /** Times polling found it had lost its core (the host is contended: polling yields for a while). */
  stalls: number;
  /** Contended spells ended early because yields gave the core to nobody. */
  calmings: number;
}

export interface DispatcherOptions {
  /** Longest polling window after the last synchronous exit before parking, in µs. */
  spinMicros: number;
  /** Longest stretch of draining before yielding to the event loop, in milliseconds. */
  yieldAfterMs: number;
  /**
   * When a parked dispatcher is woken by posted writes alone, how long it lets more gather
   * before draining them (ms); a sync request or a half-full ring ends the wait early.
   */
  postedBatchMs: number;
  /**
   * Threads that may spin at once (vCPUs plus this one) and the host's cores: when they
   * outnumber the cores, the window stays short, since polling then takes the time slice
   * a vCPU needs to make progress.
   */
  spinners?: number;
  cores?: number;
  /**
   * Park the main thread itself (Atomics.wait) between requests within a slice, rather than
   * polling: default on when the spinners outnumber the cores.
   */
  blockingParks?: boolean;
  /** Yield the core while polling on a contended host (see thread-yield.ts): on unless false. */
  yieldCore?: boolean;
}

export const DEFAULT_DISPATCHER_OPTIONS: DispatcherOptions = { spinMicros: 200, yieldAfterMs: 1, postedBatchMs: 1 };

/** A park shorter than this means a longer window would have caught the next request. */
const SHORT_PARK_MICROS = 300;
const MIN_SPIN_MICROS = 2;
/**
 * A look at the clock this long (ms) after the last one, when looks come every few tens of
 * µs while polling, means the thread lost its core meanwhile: the host is contended.
 */
const STALL_MS = 0.5;
/**
 * On a host that looked contended one yield in TIMED_YIELD_EVERY (a power of two) is timed;
 * one that took PRODUCTIVE_YIELD_NS or more ran another thread. IDLE_TIMED_YIELDS_TO_CALM
 * timed yields in a row that ran nobody end the contended spell.
 */
const TIMED_YIELD_EVERY = 8;
const PRODUCTIVE_YIELD_NS = 3000;
const IDLE_TIMED_YIELDS_TO_CALM = 16;
/** Slices the dispatcher keeps yielding its core after a stall. */
const CONTENDED_SLICES = 100;
/** Drains that answered a request between two looks at the clock, at most. */
const REQUEST_DRAINS_PER_LOOK = 16;
/** Drains between two looks at the clock when the last ones measured no time passing. */
const MAX_DRAINS_PER_LOOK = 1024;

/**
 * When the polling loop looks at the clock: each performance.now() allocates (32 bytes),
 * and a drain of empty rings takes 20-50 ns, so even a look every 32 drains came to a look
 * per 1-2 µs of polling, kilobytes per exit on a loaded host. Instead the loop looks after
 * as many drains as fit, at the rate it last measured, in the time it asks for (`lookIn`),
 * and at least every REQUEST_DRAINS_PER_LOOK drains that answered a request (those take
 * longer than idle ones).
 */
class PollClock {
  /** performance.now() at the last look. */
  now = performance.now();
  private drains = 0;
  private requestDrains = 0;
  private due = 1;
  private drainMicros = 0;
  /** Set when a look finds the thread was off its core since the last one (see STALL_MS). */
  stalled = false;

  /** Counts a drain; true when it is time to look (`now` is then fresh). */
  tick(answeredRequest: boolean): boolean {
    if (answeredRequest) this.requestDrains++;
    if (++this.drains < this.due && this.requestDrains < REQUEST_DRAINS_PER_LOOK) return false;
    const now = performance.now();
    if (now - this.now > STALL_MS) this.stalled = true;
    this.drainMicros = ((now - this.now) * 1000) / this.drains;
    this.now = now;
    this.drains = 0;
    this.requestDrains = 0;
    this.due = 1;
    return true;
  }

  /** Looks again after about `micros` of drains. */
  lookIn(micros: number): void {
    const drains = this.drainMicros > 0 ? Math.floor(micros / this.drainMicros) : MAX_DRAINS_PER_LOOK;
    this.due = Math.max(1, Math.min(MAX_DRAINS_PER_LOOK, drains));
  }

  /** Starts counting afresh (after the loop waited): the next drain looks. */
  restart(): void {
    this.now = performance.now();
    this.drains = 0;
    this.requestDrains = 0;
    this.due = 1;
  }
}

/** Split mode's userspace interrupt controllers, as the workers' EOI and INTA records reach them. */
export interface InterruptControllerEvents {
  /** An ioapic-eoi exit: a local APIC ended a level-triggered interrupt of `vector`. */
  endOfInterrupt(vector: number): void;
  /** The boot vCPU's INTA cycle: the PIC's vector to inject. */
  acknowledge(): number;
}

export class DeviceError extends Error {
  override name = "DeviceError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function isReadKind(kind: number): boolean {
  return kind === ExitKind.IoIn || kind === ExitKind.MmioRead || kind === ExitKind.MsrRead;
}

export class Dispatcher {
  readonly stats: DispatcherStats = {
    handled: 0, posted: 0, sync: 0, unclaimedReads: 0, unclaimedWrites: 0, parks: 0, spinWindowMicros: 0, coalesced: 0, yields: 0, slicesLost: 0, stalls: 0, calmings: 0,
  };
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly record: ChannelRecord = { kind: 0, size: 0, address: 0, data: 0, dataHigh: 0, count: 0 };
  private readonly consumePosted = (record: ChannelRecord): void => this.handleWrite(record);
  private readonly pio: BusAccessor;
  private readonly mmio: BusAccessor;
  private readonly msr: BusAccessor;
  private readonly maxSpinMicros: number;
  /** Whether the dispatcher parks the main thread itself between requests (see serveSlice). */
  private readonly blockingParks: boolean;
  /**
   * On a contended host polling yields the core after every drain, so a vCPU thread
   * that shares it runs without waiting for this one's slice to end. Contended: the threads
   * outnumber the cores, or polling lost its core in one of the last CONTENDED_SLICES slices
   * (on a quiet host a yield would only slow polling down: ~0.5 µs, where a drain takes
   * 20-50 ns). Off for the rest of a slice once a yield lost one, and for a number of
   * slices after (the yielder's "waits"). A stall also raises Doorbell.CONTENDED for as
   * long: the workers then spin only their minimum before they yield.
   */
  private readonly yielder: CoreYielder | undefined;
  private readonly oversubscribed: boolean;
  private contendedSlices = 0;
  private yieldInSlice = false;
  /** Timed yields in a row that came back at once (see judgeYield). */
  private idleYields = 0;
  private readonly monotonic = hostMonotonicClock();
  private spinWindow: number;
  /**
   * When the last sync request was answered (performance.now()), as of the first look at
   * the clock after it: a poll overstays its window by the time between two looks, a
   * quarter of the window at most.
   */
  private lastRequest = -Infinity;
  private readonly clock = new PollClock();
  /** The doorbell sequence read before the drain that found the VM idle. */
  private parkSequence = 0;
  private failures = 0;
  /** Runs before the rings are drained (e.g. the kernel's coalesced-write ring). */
  private beforeDrain: (() => number) | undefined;
  private interruptControllers: InterruptControllerEvents | undefined;

  constructor(
    private readonly channels: readonly ExitChannel[],
    private readonly doorbell: Int32Array,
    buses: { pio: Bus; mmio: Bus; msr: Bus },
    private readonly onDeviceError: (error: DeviceError) => void,
    private readonly options: DispatcherOptions = DEFAULT_DISPATCHER_OPTIONS,
  ) {
    this.pio = new BusAccessor(buses.pio);
    this.mmio = new BusAccessor(buses.mmio);
    this.msr = new BusAccessor(buses.msr);
    const oversubscribed = (options.spinners ?? 1) > (options.cores ?? Infinity);
    this.maxSpinMicros = oversubscribed ? Math.min(options.spinMicros, 20) : options.spinMicros;
    this.spinWindow = this.maxSpinMicros;
    this.blockingParks = options.blockingParks ?? oversubscribed;
    this.yielder = options.yieldCore === false ? undefined : new CoreYielder();
    this.oversubscribed = oversubscribed;
    this.stats.spinWindowMicros = this.spinWindow;
  }

  /** A drain to run before every batch and every sync request: the kernel's coalesced writes. */
  setBeforeDrain(drain: () => number): void {
    this.beforeDrain = drain;
  }

  /** Where ioapic-eoi and interrupt-acknowledge records go (split interrupt controllers). */
  setInterruptControllers(events: InterruptControllerEvents): void {
    this.interruptControllers = events;
  }

  /** Delivers the coalesced writes now; returns how many. */
  drainCoalesced(): number {
    return this.beforeDrain?.() ?? 0;
  }

  /** Hands one coalesced write to its device (space 0 = pio, 1 = mmio). */
  readonly consumeCoalesced = (space: number, address: number, size: number, low: number, high: number): void => {
    this.stats.handled++;
    this.stats.coalesced++;
    this.write(space === 0 ? ExitKind.IoOut : ExitKind.MmioWrite, address, size, low, high);
  };

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stops the loop after a final drain; resolves when it has ended. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    Atomics.add(this.doorbell, Doorbell.SEQUENCE, 1);
    Atomics.notify(this.doorbell, Doorbell.SEQUENCE);
    await this.loop;
  }

  /** Drains every channel once; returns how many sync requests it answered. */
  drainAll(): number {
    this.beforeDrain?.();
    let requests = 0;
    for (let i = 0; i < this.channels.length; i++) {
      const channel = this.channels[i];
      // Posted records first: they precede any sync request of the same vCPU.
      channel.drainPosted(this.consumePosted, this.record);
      if (channel.hasRequest()) {
        channel.drainPosted(this.consumePosted, this.record);
        // Any vCPU's coalesced writes happened before this request was made.
        this.beforeDrain?.();
        this.handleRequest(channel);
        requests++;
      }
    }
    return requests;
  }

  /**
   * Serves the VM in slices of the main thread (`yieldAfterMs`), yielding to the event loop
   * between them; parks asynchronously once the VM has gone idle for the rest of a slice.
   */
  private async run(): Promise<void> {
    const doorbell = this.doorbell;
    while (this.running) {
      if (!this.serveSlice()) {
        await yieldToEventLoop();
        continue;
      }
      const sequence = this.parkSequence;
      // Raise the flag, then look once more: a producer that published before seeing the
      // flag is caught here, one that publishes after it rings the doorbell.
      Atomics.store(doorbell, Doorbell.MAIN_PARKED, 1);
      if (Atomics.load(doorbell, Doorbell.SEQUENCE) === sequence && this.running && !this.anyWork()) {
        this.stats.parks++;
        const parkedAt = performance.now();
        const wait = Atomics.waitAsync(doorbell, Doorbell.SEQUENCE, sequence);
        if (wait.async) await wait.value;
        if (this.running && this.options.postedBatchMs > 0 && !this.anyRequest()) {
          // Woken by a ring turning non-empty: let a batch gather, still parked, so a stream
          // of posted writes costs a wake-up per batch rather than per write.
          const batch = Atomics.waitAsync(doorbell, Doorbell.SEQUENCE, Atomics.load(doorbell, Doorbell.SEQUENCE), this.options.postedBatchMs);
          if (batch.async) await batch.value;
        }
        this.adaptWindow((performance.now() - parkedAt) * 1000);
      }
      Atomics.store(doorbell, Doorbell.MAIN_PARKED, 0);
    }
    this.drainAll();
  }

  /**
   * One slice: polls while sync requests come (a parked dispatcher costs each request a
   * wake-up); when they stop for the polling window, parks the thread itself on the
   * doorbell (Atomics.wait) for what is left of the slice. A blocking park is a futex wake
   * away from the next request; an asynchronous one is an event-loop turn away (tens to
   * hundreds of µs), and the slice holds the event loop off for no longer than polling
   * through it would. Returns false when the event loop is due its turn, true when the VM
   * stayed idle to the end of the slice (`parkSequence` is then the doorbell before the
   * last drain).
   */
  private serveSlice(): boolean {
    const doorbell = this.doorbell;
    const clock = this.clock;
    clock.restart();
    const sliceEnd = clock.now + this.options.yieldAfterMs;
    this.yieldInSlice = this.mayYieldInSlice();
    for (;;) {
      if (!this.pollUntilIdle(sliceEnd)) return false;
      if (!this.blockingParks) return true;
      const leftMs = sliceEnd - performance.now();
      if (leftMs <= 0) return false;
      const sequence = this.parkSequence;
      let woken = true;
      Atomics.store(doorbell, Doorbell.MAIN_PARKED, 1);
      if (Atomics.load(doorbell, Doorbell.SEQUENCE) === sequence && this.running && !this.anyWork()) {
        const parkedAt = performance.now();
        woken = Atomics.wait(doorbell, Doorbell.SEQUENCE, sequence, leftMs) !== "timed-out";
        if (woken) this.stats.parks++;
        this.adaptWindow((performance.now() - parkedAt) * 1000);
      }
      Atomics.store(doorbell, Doorbell.MAIN_PARKED, 0);
      if (!woken) return true;
      clock.restart();
    }
  }

  /**
   * Drains and polls until `sliceEnd` (false) or until no sync request came for the polling
   * window (true: park; `parkSequence` is the doorbell before the last drain).
   * A plain function, not part of the async loop (an async function keeps its locals in a
   * heap frame), and sparing with the clock (see PollClock): each `performance.now()`
   * returns a boxed double. Polling used to allocate about 250 MB/s that way, a scavenge
   * every 13 ms, each one a stall of the exits waiting on this thread.
   */
  private pollUntilIdle(sliceEnd: number): boolean {
    const doorbell = this.doorbell;
    const clock = this.clock;
    let requestSinceLook = false;
    while (this.running) {
      const sequence = Atomics.load(doorbell, Doorbell.SEQUENCE);
      const requests = this.drainAll();
      if (requests > 0) requestSinceLook = true;
      // Contended: after every drain, the vCPU just answered (or about to ask) may need this core.
      if (this.yieldInSlice) this.yieldCore();
      if (!clock.tick(requests > 0)) continue;
      if (clock.stalled) this.noteStall();
      const now = clock.now;
      if (requestSinceLook) {
        this.lastRequest = now;
        requestSinceLook = false;
      }
      if (now >= sliceEnd) return false;
      const windowLeftMicros = this.spinWindow - (now - this.lastRequest) * 1000;
      if (windowLeftMicros > 0) {
        clock.lookIn(Math.min(windowLeftMicros, this.spinWindow / 4, (sliceEnd - now) * 1000));
        continue;
      }
      this.parkSequence = sequence;
      return true;
    }
    return false;
  }

  /** At a slice's start: counts down a contended spell, and says whether this slice yields. */
  private mayYieldInSlice(): boolean {
    const contended = this.contendedSlices > 0;
    if (contended && --this.contendedSlices === 0) Atomics.store(this.doorbell, Doorbell.CONTENDED, 0);
    if (this.yielder === undefined || !(contended || this.oversubscribed)) return false;
    return this.yielder.mayYield();
  }

  private noteStall(): void {
    this.clock.stalled = false;
    this.stats.stalls++;
    if (!this.yieldInSlice) this.yieldInSlice = this.yielder?.mayYield() ?? false;
    if (this.contendedSlices === 0) Atomics.store(this.doorbell, Doorbell.CONTENDED, 1);
    this.contendedSlices = CONTENDED_SLICES;
  }

  private yieldCore(): void {
    const yielder = this.yielder!;
    const timed = !this.oversubscribed && (yielder.yields & (TIMED_YIELD_EVERY - 1)) === 0;
    let startNs = 0;
    if (timed) {
      this.monotonic.sample();
      startNs = this.monotonic.nanoseconds;
    }
    if (!yielder.yieldOnce()) this.yieldInSlice = false;
    else if (timed) this.judgeYield(startNs);
    this.stats.yields = yielder.yields;
    this.stats.slicesLost = yielder.slicesLost;
  }

  /**
   * A yield that came back at once gave the core to nobody: the stall that made the host
   * look contended was passing noise, not a thread sharing this core. After a run of such
   * yields the dispatcher (and its workers) stop treating the host as contended.
   */
  private judgeYield(startNs: number): void {
    this.monotonic.sample();
    let tookNs = this.monotonic.nanoseconds - startNs;
    if (tookNs < 0) tookNs += 1e9;
    if (tookNs >= PRODUCTIVE_YIELD_NS) {
      this.idleYields = 0;
      return;
    }
    if (++this.idleYields < IDLE_TIMED_YIELDS_TO_CALM) return;
    this.idleYields = 0;
    this.stats.calmings++;
    this.contendedSlices = 0;
    this.yieldInSlice = false;
    Atomics.store(this.doorbell, Doorbell.CONTENDED, 0);
  }

  private adaptWindow(parkMicros: number): void {
    this.spinWindow = parkMicros <= SHORT_PARK_MICROS
      ? Math.min(this.maxSpinMicros, this.spinWindow * 2)
      : Math.max(MIN_SPIN_MICROS, this.spinWindow / 2);
    this.stats.spinWindowMicros = this.spinWindow;
  }

  private anyRequest(): boolean {
    for (let i = 0; i < this.channels.length; i++) if (this.channels[i].hasRequest()) return true;
    return false;
  }

  private anyWork(): boolean {
    for (let i = 0; i < this.channels.length; i++) {
      if (this.channels[i].hasRequest() || this.channels[i].hasPosted()) return true;
    }
    return false;
  }

  private accessorFor(kind: number): BusAccessor {
    if (kind === ExitKind.IoIn || kind === ExitKind.IoOut) return this.pio;
    if (kind === ExitKind.MmioRead || kind === ExitKind.MmioWrite) return this.mmio;
    return this.msr;
  }

  private handleWrite(record: ChannelRecord): void {
    this.stats.handled++;
    this.stats.posted++;
    if (record.kind === ExitKind.IoapicEoi) this.endOfInterrupt(record.data);
    else this.write(record.kind, record.address, record.size, record.data, record.dataHigh);
  }

  private endOfInterrupt(vector: number): void {
    try {
      this.interruptControllers?.endOfInterrupt(vector);
    } catch (error) {
      this.fail("ioapic", ExitKind.IoapicEoi, vector, error);
    }
  }

  private acknowledgeInterrupt(channel: ExitChannel, failuresBefore: number): void {
    let vector = 0;
    try {
      if (this.interruptControllers === undefined) throw new Error("an INTA cycle, but the VM has no userspace PIC");
      vector = this.interruptControllers.acknowledge();
    } catch (error) {
      this.fail("pic", ExitKind.InterruptAcknowledge, 0, error);
    }
    channel.complete(vector, 0, this.answerSince(failuresBefore));
  }

  /** Returns false if no device claimed (some of) the access. */
  private write(kind: number, address: number, size: number, low: number, high: number): boolean {
    const accessor = this.accessorFor(kind);
    try {
      accessor.write(address, size, low, high);
    } catch (error) {
      this.fail(accessor.device, kind, address, error);
      return true;
    }
    if (accessor.unclaimed === 0) return true;
    this.stats.unclaimedWrites++;
    return false;
  }

  /** Reads into the accessor's low/high (all-ones where unclaimed); false if unclaimed. */
  private read(accessor: BusAccessor, kind: number, address: number, size: number): boolean {
    try {
      accessor.read(address, size);
    } catch (error) {
      this.fail(accessor.device, kind, address, error);
      accessor.low = 0xffff_ffff;
      accessor.high = size === 8 ? 0xffff_ffff : 0;
      return true;
    }
    if (accessor.unclaimed === 0) return true;
    this.stats.unclaimedReads++;
    return false;
  }

  /** OK, or STOPPED if a device failed while this request was handled (the VM is ending). */
  private answerSince(failuresBefore: number): number {
    return this.failures !== failuresBefore ? Answer.STOPPED : Answer.OK;
  }

  private handleRequest(channel: ExitChannel): void {
    const record = this.record;
    channel.readRequest(record);
    this.stats.handled++;
    this.stats.sync++;
    const { kind, address, size, count } = record;
    const failuresBefore = this.failures;
    if (count > 1) {
      this.handleStringIo(channel, kind, address, size, count);
      channel.complete(0, 0, this.answerSince(failuresBefore));
    } else if (kind === ExitKind.InterruptAcknowledge) {
      this.acknowledgeInterrupt(channel, failuresBefore);
    } else if (isReadKind(kind)) {
      const accessor = this.accessorFor(kind);
      const claimed = this.read(accessor, kind, address, size);
      // An MSR nobody implements faults, as on hardware (rdmsr_safe-style probing relies on it).
      channel.complete(accessor.low, accessor.high, !claimed && kind === ExitKind.MsrRead ? Answer.FAULT : this.answerSince(failuresBefore));
    } else {
      const claimed = this.write(kind, address, size, record.data, record.dataHigh);
      channel.complete(0, 0, !claimed && kind === ExitKind.MsrWrite ? Answer.FAULT : this.answerSince(failuresBefore));
    }
  }

  /** `rep insb/outsb` and wider: one device access per element, data in the mailbox. */
  private handleStringIo(channel: ExitChannel, kind: number, address: number, size: number, count: number): void {
    const data = channel.syncData;
    const elements = Math.min(count, Math.floor(data.byteLength / size));
    const accessor = this.pio;
    try {
      const claimed = kind === ExitKind.IoIn
        ? accessor.readRepeated(address, size as AccessSize, elements, data)
        : accessor.writeRepeated(address, size as AccessSize, elements, data);
      if (!claimed) {
        if (kind === ExitKind.IoIn) this.stats.unclaimedReads++;
        else this.stats.unclaimedWrites++;
      }
    } catch (error) {
      this.fail(accessor.device, kind, address, error);
    }
  }

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
