import type { AccessSize, Device } from "./device.js";

/**
 * The PC's MC146818 real-time clock and its 128 bytes of CMOS RAM, at ports 0x70
 * (index; bit 7 masks NMI) and 0x71 (data). The bus maps it at 0x70, length 2.
 *
 * The clock always shows the host's current UTC time, read when the guest reads a time
 * register; the guest cannot set it (time-register writes are ignored). Register B
 * chooses the encoding (BCD or binary, 24- or 12-hour) as the datasheet specifies.
 *
 * Interrupts are not implemented: no periodic, alarm or update-ended interrupt is ever
 * raised, so register C (the interrupt flags) always reads 0. The enable bits in
 * register B and the alarm registers are storage, and tell when the alarm would go off
 * (millisecondsToAlarm), which is what wakes a PC from ACPI S3.
 */

export const CMOS_PORT = 0x70;
export const CMOS_PORT_LENGTH = 2;

const INDEX_OFFSET = 0;
const DATA_OFFSET = 1;
const INDEX_MASK = 0x7f;
const NMI_DISABLE = 0x80;

/** Register indices (MC146818 datasheet; century per the PC/ACPI convention). */
export const RtcRegister = {
  SECONDS: 0x00,
  SECONDS_ALARM: 0x01,
  MINUTES: 0x02,
  MINUTES_ALARM: 0x03,
  HOURS: 0x04,
  HOURS_ALARM: 0x05,
  DAY_OF_WEEK: 0x06,
  DAY_OF_MONTH: 0x07,
  MONTH: 0x08,
  YEAR: 0x09,
  A: 0x0a,
  B: 0x0b,
  C: 0x0c,
  D: 0x0d,
  CENTURY: 0x32,
} as const;

/** Register A: update in progress (read-only). */
export const REG_A_UIP = 0x80;
/** Register A: divider bits 6:4; 010 = 32.768 kHz time base, the only one that keeps time on a PC. */
const REG_A_DIVIDER_MASK = 0x70;
const REG_A_DIVIDER_RUNNING = 0x20;
/** 32.768 kHz time base, 1024 Hz periodic rate: what PC firmware leaves in register A. */
const REG_A_DEFAULT = 0x26;

export const REG_B_SET = 0x80;
export const REG_B_AIE = 0x20;
export const REG_B_UIE = 0x10;
export const REG_B_DM_BINARY = 0x04;
export const REG_B_24_HOUR = 0x02;
const REG_B_DEFAULT = REG_B_24_HOUR;

/** Register D: valid RAM and time (the battery is fine). */
const REG_D_VRT = 0x80;

const HOUR_PM = 0x80;
/** An alarm register with its two top bits set matches every value (datasheet: "don't care"). */
const ALARM_DONT_CARE = 0xc0;
const SECONDS_PER_DAY = 24 * 60 * 60;

/*
 * Memory-size bytes that PC firmware fills in and boot loaders read:
 *   0x15/0x16  base memory in KiB (at most 640)            IBM AT
 *   0x17/0x18  memory above 1 MiB in KiB (capped at 0xFFFF)  IBM AT
 *   0x30/0x31  same, as found by POST                       IBM AT
 *   0x34/0x35  memory above 16 MiB in 64 KiB units          Bochs/QEMU/SeaBIOS
 *   0x5B-0x5D  memory above 4 GiB in 64 KiB units           QEMU/SeaBIOS
 * Bytes 0x10-0x2D are covered by the AT checksum at 0x2E (high) / 0x2F (low).
 */
const CMOS_BASE_MEMORY = 0x15;
const CMOS_EXTENDED_MEMORY = 0x17;
const CMOS_ACTUAL_EXTENDED_MEMORY = 0x30;
const CMOS_MEMORY_ABOVE_16M = 0x34;
const CMOS_MEMORY_ABOVE_4G = 0x5b;
const CMOS_CHECKSUM = 0x2e;
const CHECKSUM_FIRST = 0x10;
const CHECKSUM_LAST = 0x2d;

const KiB = 1024;
const MiB = 1024 * KiB;
const FOUR_GIB = 4 * 1024 * MiB;

/**
 * The update cycle (datasheet: UIP rises 244 µs before it, the update itself takes up
 * to 1984 µs) in whole milliseconds of the host clock around each second boundary.
 */
const UIP_BEFORE_SECOND_MS = 1;
const UIP_AFTER_SECOND_MS = 2;

/** Bad options given to CmosRtc by the caller. */
export class CmosRtcConfigError extends Error {
  override name = "CmosRtcConfigError";
}

export interface CmosRtcOptions {
  /** Total guest RAM in bytes; fills in the memory-size bytes of CMOS. */
  ramSize?: number;
  /** How much of ramSize lies below 4 GiB (the rest is above). Default: min(ramSize, 4 GiB). */
  ramBelow4GiB?: number;
  /** Wall clock, for tests. Default: the host's current time. */
  now?: () => Date;
}

function toBcd(value: number): number {
  return ((Math.floor(value / 10) % 10) << 4) | (value % 10);
}

function checkBytes(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new CmosRtcConfigError(`CMOS: ${name} must be a non-negative whole number of bytes, got ${value}`);
  }
}

export class CmosRtc implements Device {
  readonly name = "cmos-rtc";

  /** CMOS RAM; the time registers, A's UIP bit, C and D are computed on read instead. */
  private readonly ram = new Uint8Array(128);
  private readonly now: () => Date;
  private index = 0;
  private nmiDisabled = false;

  constructor(options: CmosRtcOptions = {}) {
    this.now = options.now ?? (() => new Date());
    this.ram[RtcRegister.A] = REG_A_DEFAULT;
    this.ram[RtcRegister.B] = REG_B_DEFAULT;
    if (options.ramSize !== undefined) this.setMemorySize(options.ramSize, options.ramBelow4GiB);
  }

  /** Whether the guest last wrote the index port with bit 7 set (NMI disabled). No NMI source exists yet. */
  get nmiMasked(): boolean {
    return this.nmiDisabled;
  }

  /**
   * With the alarm interrupt enabled (register B AIE) and the clock running, how long until
   * the next update whose seconds, minutes and hours match the alarm registers (each
   * matching anything when "don't care"), in milliseconds; otherwise undefined. An alarm
   * that cannot match within a day (a value no clock shows) never goes off.
   */
  millisecondsToAlarm(): number | undefined {
    if ((this.ram[RtcRegister.B] & REG_B_AIE) === 0 || (this.ram[RtcRegister.B] & REG_B_SET) !== 0) return undefined;
    if ((this.ram[RtcRegister.A] & REG_A_DIVIDER_MASK) !== REG_A_DIVIDER_RUNNING) return undefined;
    const now = this.now().getTime();
    const matches = (alarm: number, value: number) => (alarm & ALARM_DONT_CARE) === ALARM_DONT_CARE || alarm === value;
    const nextSecond = Math.floor(now / 1000) * 1000 + 1000;
    for (let s = 0; s < SECONDS_PER_DAY; s++) {
      const at = new Date(nextSecond + s * 1000);
      if (
        matches(this.ram[RtcRegister.SECONDS_ALARM], this.encode(at.getUTCSeconds())) &&
        matches(this.ram[RtcRegister.MINUTES_ALARM], this.encode(at.getUTCMinutes())) &&
        matches(this.ram[RtcRegister.HOURS_ALARM], this.encodeHours(at.getUTCHours()))
      ) {
        return at.getTime() - now;
      }
    }
    return undefined;
  }

  read(offset: number, size: AccessSize): number {
    // A wide access is split into byte cycles on consecutive ports, as on the ISA bus.
    let value = 0;
    const bytes = size === 8 ? 4 : size;
    for (let i = 0; i < bytes; i++) value |= this.readByte(offset + i) << (i * 8);
    return value >>> 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    const bytes = size === 8 ? 4 : size;
    for (let i = 0; i < bytes; i++) this.writeByte(offset + i, (value >>> (i * 8)) & 0xff);
  }

  private readByte(offset: number): number {
    // The index port is write-only on a PC; the data lines float high.
    if (offset !== DATA_OFFSET) return 0xff;
    return this.readRegister(this.index);
  }

  private writeByte(offset: number, value: number): void {
    if (offset === INDEX_OFFSET) {
      this.index = value & INDEX_MASK;
      this.nmiDisabled = (value & NMI_DISABLE) !== 0;
    } else if (offset === DATA_OFFSET) {
      this.writeRegister(this.index, value);
    }
  }

  private readRegister(index: number): number {
    switch (index) {
      case RtcRegister.SECONDS:
        return this.encode(this.now().getUTCSeconds());
      case RtcRegister.MINUTES:
        return this.encode(this.now().getUTCMinutes());
      case RtcRegister.HOURS:
        return this.encodeHours(this.now().getUTCHours());
      case RtcRegister.DAY_OF_WEEK:
        return this.encode(this.now().getUTCDay() + 1); // 1 = Sunday
      case RtcRegister.DAY_OF_MONTH:
        return this.encode(this.now().getUTCDate());
      case RtcRegister.MONTH:
        return this.encode(this.now().getUTCMonth() + 1);
      case RtcRegister.YEAR:
        return this.encode(this.now().getUTCFullYear() % 100);
      case RtcRegister.CENTURY:
        return this.encode(Math.floor(this.now().getUTCFullYear() / 100) % 100);
      case RtcRegister.A:
        return (this.ram[RtcRegister.A] & ~REG_A_UIP) | (this.updateInProgress() ? REG_A_UIP : 0);
      case RtcRegister.C:
        return 0; // no interrupt sources are implemented, so no flag is ever set
      case RtcRegister.D:
        return REG_D_VRT;
      default:
        return this.ram[index];
    }
  }

  private writeRegister(index: number, value: number): void {
    switch (index) {
      case RtcRegister.SECONDS:
      case RtcRegister.MINUTES:
      case RtcRegister.HOURS:
      case RtcRegister.DAY_OF_WEEK:
      case RtcRegister.DAY_OF_MONTH:
      case RtcRegister.MONTH:
      case RtcRegister.YEAR:
      case RtcRegister.CENTURY:
        // The clock follows the host; a guest setting the time (hwclock, NTP sync) is ignored.
        return;
      case RtcRegister.A:
        this.ram[index] = value & ~REG_A_UIP; // UIP is read-only
        return;
      case RtcRegister.B:
        // Datasheet: setting SET aborts updates and clears UIE.
        this.ram[index] = value & REG_B_SET ? value & ~REG_B_UIE : value;
        return;
      case RtcRegister.C:
      case RtcRegister.D:
        return; // read-only
      default:
        this.ram[index] = value;
    }
  }

  /**
   * UIP is high for about 2.2 ms around each second boundary while the clock runs
   * (divider 010, SET clear). Guests wait for it to fall before reading the time, and
   * some (kvm-unit-tests' s3) wait for it to rise first, so it must not read 0 forever.
   */
  private updateInProgress(): boolean {
    if ((this.ram[RtcRegister.A] & REG_A_DIVIDER_MASK) !== REG_A_DIVIDER_RUNNING) return false;
    if (this.ram[RtcRegister.B] & REG_B_SET) return false;
    const ms = this.now().getUTCMilliseconds();
    return ms >= 1000 - UIP_BEFORE_SECOND_MS || ms < UIP_AFTER_SECOND_MS;
  }

  private encode(value: number): number {
    return this.ram[RtcRegister.B] & REG_B_DM_BINARY ? value : toBcd(value);
  }

  private encodeHours(hours: number): number {
    if (this.ram[RtcRegister.B] & REG_B_24_HOUR) return this.encode(hours);
    const twelve = hours % 12 === 0 ? 12 : hours % 12;
    return this.encode(twelve) | (hours >= 12 ? HOUR_PM : 0);
  }

  private setMemorySize(ramSize: number, ramBelow4GiB = Math.min(ramSize, FOUR_GIB)): void {
    checkBytes("ramSize", ramSize);
    checkBytes("ramBelow4GiB", ramBelow4GiB);
    if (ramBelow4GiB > ramSize || ramBelow4GiB > FOUR_GIB) {
      throw new CmosRtcConfigError(
        `CMOS: ramBelow4GiB (${ramBelow4GiB}) must be at most ramSize (${ramSize}) and at most 4 GiB`,
      );
    }
    const baseKiB = Math.min(640, Math.floor(ramBelow4GiB / KiB));
    const extendedKiB = Math.min(0xffff, Math.max(0, Math.floor((ramBelow4GiB - MiB) / KiB)));
    const above16M = Math.min(0xffff, Math.max(0, Math.floor((ramBelow4GiB - 16 * MiB) / (64 * KiB))));
    const above4G = Math.min(0xff_ffff, Math.floor((ramSize - ramBelow4GiB) / (64 * KiB)));

    this.setLittleEndian(CMOS_BASE_MEMORY, baseKiB, 2);
    this.setLittleEndian(CMOS_EXTENDED_MEMORY, extendedKiB, 2);
    this.setLittleEndian(CMOS_ACTUAL_EXTENDED_MEMORY, extendedKiB, 2);
    this.setLittleEndian(CMOS_MEMORY_ABOVE_16M, above16M, 2);
    this.setLittleEndian(CMOS_MEMORY_ABOVE_4G, above4G, 3);

    let sum = 0;
    for (let i = CHECKSUM_FIRST; i <= CHECKSUM_LAST; i++) sum += this.ram[i];
    this.ram[CMOS_CHECKSUM] = (sum >>> 8) & 0xff;
    this.ram[CMOS_CHECKSUM + 1] = sum & 0xff;
  }

  private setLittleEndian(index: number, value: number, bytes: number): void {
    for (let i = 0; i < bytes; i++) this.ram[index + i] = Math.floor(value / 2 ** (8 * i)) & 0xff;
  }
}
