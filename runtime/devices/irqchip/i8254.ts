/**
 * A userspace 8254 PIT: three counters at ports 0x40-0x42 counting at 1.193182 MHz, the
 * control word at 0x43 (counter latch, read-back, LSB/MSB/word access, modes 0-5 with 0, 2
 * and 3 as software uses them), and port 0x61's gate and OUT of counter 2 (what Linux and
 * kvm-unit-tests calibrate with). Counter 0's OUT drives IRQ 0 from a host timer; ticks the
 * timer could not keep up with are dropped (QEMU's lost_tick_policy=discard).
 * Counts are derived from the host's monotonic clock, so reading them costs no timer.
 */
import { type AccessSize, type Device, toUnsigned } from "../device.js";

export const PIT_PORT = 0x40;
export const PIT_PORT_LENGTH = 4;
export const SPEAKER_PORT = 0x61;
export const PIT_FREQUENCY_HZ = 1_193_182;
/** The host timer's floor: faster periodic rates raise one tick per millisecond. */
const MIN_TIMER_MS = 1;
/** Port 0x61 bit 4 toggles every refresh cycle (15.085 µs on a PC). */
const REFRESH_NS = 15_085;

const RW_LATCH = 0;
const RW_LSB = 1;
const RW_MSB = 2;
const RW_WORD = 3;

type Clock = () => bigint;

class Counter {
  mode = 0;
  access = RW_WORD;
  bcd = false;
  /** The programmed count (1..0x10000). */
  count = 0x10000;
  /** When counting started, host ns. */
  loadedAt = 0n;
  gate = false;
  nullCount = true;
  latchedCount: number | undefined;
  latchedBytes = 0;
  latchedStatus: number | undefined;
  readHigh = false;
  writeHigh = false;
  writeLow = 0;

  constructor(private readonly clock: Clock) {}

  ticks(): number {
    return Number(((this.clock() - this.loadedAt) * BigInt(PIT_FREQUENCY_HZ)) / 1_000_000_000n);
  }

  value(): number {
    const d = this.ticks();
    switch (this.mode) {
      case 0: case 1: case 4: case 5:
        return (this.count - d) & 0xffff;
      case 3:
        // Mode 3 decrements by two per clock (half periods of the square wave).
        return (this.count - ((2 * d) % this.count)) & 0xffff;
      default:
        return (this.count - (d % this.count)) & 0xffff;
    }
  }

  out(): boolean {
    const d = this.ticks();
    switch (this.mode) {
      case 0: return d >= this.count;
      case 1: return d < this.count;
      case 2: return d % this.count !== 0 || d === 0;
      case 3: return d % this.count < (this.count + 1) >> 1;
      default: return d !== this.count; // 4, 5: one clock low at terminal count
    }
  }

  status(): number {
    return ((this.out() ? 1 : 0) << 7) | ((this.nullCount ? 1 : 0) << 6) | (this.access << 4) | (this.mode << 1) | (this.bcd ? 1 : 0);
  }

  latch(): void {
    if (this.latchedCount !== undefined) return; // a second latch before the read changes nothing
    this.latchedCount = this.value();
    this.latchedBytes = this.access === RW_WORD ? 2 : 1;
  }

  program(control: number): void {
    this.access = (control >> 4) & 3;
    const mode = (control >> 1) & 7;
    this.mode = mode > 5 ? mode - 4 : mode; // 6 and 7 are aliases of 2 and 3
    this.bcd = (control & 1) !== 0;
    this.readHigh = false;
    this.writeHigh = false;
    this.latchedCount = undefined;
    this.nullCount = true;
  }

  load(value: number): void {
    this.count = value === 0 ? 0x10000 : value;
    this.loadedAt = this.clock();
    this.nullCount = false;
  }

  /** Returns true when a full count was loaded. */
  writeByte(byte: number): boolean {
    switch (this.access) {
      case RW_LSB: this.load(byte); return true;
      case RW_MSB: this.load(byte << 8); return true;
      default:
        if (!this.writeHigh) {
          this.writeLow = byte;
          this.writeHigh = true;
          return false;
        }
        this.writeHigh = false;
        this.load(this.writeLow | (byte << 8));
        return true;
    }
  }

  readByte(): number {
    if (this.latchedStatus !== undefined) {
      const status = this.latchedStatus;
      this.latchedStatus = undefined;
      return status;
    }
    if (this.latchedCount !== undefined) {
      const count = this.latchedCount;
      if (this.access === RW_MSB) {
        this.latchedCount = undefined;
        return count >> 8;
      }
      if (this.access === RW_WORD && this.latchedBytes === 2) {
        this.latchedBytes = 1;
        return count & 0xff;
      }
      this.latchedCount = undefined;
      return this.access === RW_WORD ? count >> 8 : count & 0xff;
    }
    const count = this.value();
    if (this.access === RW_LSB) return count & 0xff;
    if (this.access === RW_MSB) return count >> 8;
    this.readHigh = !this.readHigh;
    return this.readHigh ? count & 0xff : count >> 8;
  }

  setGate(level: boolean): void {
    // Modes 1, 2, 3 and 5 (re)start counting on a rising gate; 0 and 4 count regardless (as QEMU models them).
    if (level && !this.gate && this.mode !== 0 && this.mode !== 4) this.loadedAt = this.clock();
    this.gate = level;
  }
}

export interface PitOptions {
  /** IRQ 0's line (the machine wires it to PIC IRQ 0 and IOAPIC pin 2). */
  irq0(level: boolean): void;
  /** Host monotonic nanoseconds (tests may pass their own). */
  clock?: Clock;
}

export class I8254 {
  private readonly clock: Clock;
  private readonly counters: Counter[];
  private speakerData = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** IRQ 0 ticks raised; for tests and debugging. */
  ticks = 0;
  readonly ports: Device;
  readonly speakerPort: Device;

  constructor(private readonly options: PitOptions) {
    this.clock = options.clock ?? process.hrtime.bigint;
    this.counters = [new Counter(this.clock), new Counter(this.clock), new Counter(this.clock)];
    // Counters 0 and 1 have their gates tied high on a PC; counter 2's is port 0x61 bit 0.
    this.counters[0].gate = true;
    this.counters[1].gate = true;
    this.ports = {
      name: "pit",
      read: (offset: number) => (offset < 3 ? this.counters[offset].readByte() : 0xff),
      write: (offset: number, size: AccessSize, value: number) => this.write(offset, toUnsigned(value, size) & 0xff),
    };
    this.speakerPort = {
      name: "pc speaker gate (port 0x61)",
      read: () => {
        const channel2 = this.counters[2];
        const refresh = Number((this.clock() / BigInt(REFRESH_NS)) & 1n);
        return (channel2.gate ? 1 : 0) | ((this.speakerData ? 1 : 0) << 1) | (refresh << 4) | ((channel2.out() ? 1 : 0) << 5);
      },
      write: (_offset: number, _size: AccessSize, value: number) => {
        const n = toUnsigned(value, 1);
        this.counters[2].setGate((n & 1) !== 0);
        this.speakerData = (n & 2) !== 0;
      },
    };
  }

  private write(offset: number, byte: number): void {
    if (offset < 3) {
      if (this.counters[offset].writeByte(byte) && offset === 0) this.schedule();
      return;
    }
    if (offset !== 3) return;
    const select = byte >> 6;
    if (select === 3) {
      // Read-back: bit 5 clear latches counts, bit 4 clear latches status, bits 1-3 pick counters.
      for (let i = 0; i < 3; i++) {
        if (!(byte & (2 << i))) continue;
        const counter = this.counters[i];
        if (!(byte & 0x10) && counter.latchedStatus === undefined) counter.latchedStatus = counter.status();
        if (!(byte & 0x20)) counter.latch();
      }
      return;
    }
    const counter = this.counters[select];
    if (((byte >> 4) & 3) === RW_LATCH) {
      counter.latch();
      return;
    }
    counter.program(byte);
    if (select === 0) {
      // A new mode stops counter 0 until its count is written; mode 0's OUT starts low.
      this.stopTimer();
      this.options.irq0(false);
    }
  }

  /** Counter 0's OUT as IRQ 0: a rising edge per period (modes 2, 3) or once at terminal count (mode 0). */
  private schedule(): void {
    this.stopTimer();
    if (this.closed) return;
    const counter = this.counters[0];
    const periodMs = (counter.count * 1000) / PIT_FREQUENCY_HZ;
    if (counter.mode === 2 || counter.mode === 3) {
      this.options.irq0(false);
      this.timer = setInterval(() => this.tick(true), Math.max(MIN_TIMER_MS, periodMs));
      this.timer.unref();
    } else if (counter.mode === 0) {
      this.options.irq0(false);
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.tick(false);
      }, Math.max(MIN_TIMER_MS, periodMs));
      this.timer.unref();
    }
  }

  private tick(pulse: boolean): void {
    if (this.closed) return;
    this.ticks++;
    this.options.irq0(true);
    if (pulse) this.options.irq0(false);
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Stops counter 0's timer for good (the VM stopped). */
  close(): void {
    this.closed = true;
    this.stopTimer();
  }
}
