import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.js";
import {
  AcpiPmTimer,
  AcpiTableError,
  type MonotonicClock,
  PM_TIMER_FREQUENCY_HZ,
  writeAcpiTables,
} from "../runtime/devices/acpi.js";

const MiB = 1024 * 1024;
const TABLES = 0x8_0000;

function lowMemory(): GuestMemory {
  return GuestMemory.allocate([{ gpa: 0, size: 2 * MiB }]);
}

function ascii(memory: GuestMemory, gpa: number, length: number): string {
  return String.fromCharCode(...memory.read(gpa, length));
}

function byteSum(memory: GuestMemory, gpa: number, length: number): number {
  return memory.read(gpa, length).reduce((sum, b) => (sum + b) & 0xff, 0);
}

/** What an OS does: scan the BIOS area on 16-byte boundaries for the RSDP. */
function findRsdp(memory: GuestMemory): number {
  for (let gpa = 0xe0000; gpa < 0x100000; gpa += 16) {
    if (ascii(memory, gpa, 8) === "RSD PTR " && byteSum(memory, gpa, 20) === 0) return gpa;
  }
  return -1;
}

function checkHeader(memory: GuestMemory, gpa: number, signature: string, length: number, revision: number): void {
  assert.equal(ascii(memory, gpa, 4), signature);
  assert.equal(memory.readU32(gpa + 4), length);
  assert.equal(memory.readU8(gpa + 8), revision);
  assert.equal(byteSum(memory, gpa, length), 0, `${signature} checksum`);
  assert.equal(ascii(memory, gpa + 10, 6), "WRKVSR");
  assert.equal(ascii(memory, gpa + 16, 8), "WORKVISR");
  assert.equal(memory.readU32(gpa + 24), 1);
  assert.equal(ascii(memory, gpa + 28, 4), "WKVS");
  assert.equal(memory.readU32(gpa + 32), 1);
}

test("tables land where the returned addresses say", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 2, tablesAddress: TABLES });
  assert.deepEqual(at, {
    rsdp: 0xe0000,
    facs: 0x80000,
    dsdt: 0x80040,
    fadt: 0x80070,
    madt: 0x80170,
    rsdt: 0x801d0,
    tablesEnd: 0x801fc,
  });
});

test("the RSDP is ACPI 1.0, found by a BIOS-area scan, and checksums", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES });
  assert.equal(findRsdp(memory), 0xe0000);
  const rsdp = memory.read(0xe0000, 20);
  const expected = [
    ...Array.from("RSD PTR ", (c) => c.charCodeAt(0)),
    0, // checksum, patched below
    ...Array.from("WRKVSR", (c) => c.charCodeAt(0)),
    0, // revision 0 = ACPI 1.0
    at.rsdt & 0xff, (at.rsdt >> 8) & 0xff, (at.rsdt >> 16) & 0xff, at.rsdt >>> 24,
  ];
  expected[8] = (0x100 - expected.reduce((s, b) => (s + b) & 0xff, 0)) & 0xff;
  assert.deepEqual(Array.from(rsdp), expected);
});

test("an RSDP placed elsewhere in the BIOS area is found there", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES, rsdpAddress: 0xf5a30 });
  assert.equal(at.rsdp, 0xf5a30);
  assert.equal(findRsdp(memory), 0xf5a30);
});

test("the RSDT lists the FADT and the MADT", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES });
  const rsdt = memory.readU32(findRsdp(memory) + 16);
  assert.equal(rsdt, at.rsdt);
  checkHeader(memory, rsdt, "RSDT", 44, 1);
  assert.equal(memory.readU32(rsdt + 36), at.fadt);
  assert.equal(memory.readU32(rsdt + 40), at.madt);
});

test("the FADT describes the PM blocks, SCI, FACS and DSDT", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES });
  const f = at.fadt;
  checkHeader(memory, f, "FACP", 244, 3);
  assert.equal(memory.readU32(f + 36), at.facs); // FIRMWARE_CTRL
  assert.equal(memory.readU32(f + 40), at.dsdt); // DSDT
  assert.equal(memory.readU8(f + 44), 1); // INT_MODEL: APIC
  assert.equal(memory.readU16(f + 46), 9); // SCI_INT
  assert.equal(memory.readU32(f + 48), 0); // SMI_CMD: no legacy mode
  assert.equal(memory.readU8(f + 52), 0); // ACPI_ENABLE
  assert.equal(memory.readU8(f + 53), 0); // ACPI_DISABLE
  assert.equal(memory.readU32(f + 56), 0x600); // PM1a_EVT_BLK
  assert.equal(memory.readU32(f + 60), 0); // PM1b_EVT_BLK
  assert.equal(memory.readU32(f + 64), 0x604); // PM1a_CNT_BLK
  assert.equal(memory.readU32(f + 68), 0); // PM1b_CNT_BLK
  assert.equal(memory.readU32(f + 72), 0); // PM2_CNT_BLK
  assert.equal(memory.readU32(f + 76), 0x608); // PM_TMR_BLK
  assert.equal(memory.readU32(f + 80), 0); // GPE0_BLK
  assert.equal(memory.readU32(f + 84), 0); // GPE1_BLK
  assert.equal(memory.readU8(f + 88), 4); // PM1_EVT_LEN
  assert.equal(memory.readU8(f + 89), 2); // PM1_CNT_LEN
  assert.equal(memory.readU8(f + 90), 0); // PM2_CNT_LEN
  assert.equal(memory.readU8(f + 91), 4); // PM_TMR_LEN
  assert.equal(memory.readU8(f + 92), 0); // GPE0_BLK_LEN
  assert.equal(memory.readU16(f + 96), 101); // P_LVL2_LAT: no C2
  assert.equal(memory.readU16(f + 98), 1001); // P_LVL3_LAT: no C3
  assert.equal(memory.readU8(f + 108), 0x32); // CENTURY
  assert.equal(memory.readU16(f + 109), 0x3); // IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042
  assert.equal(memory.readU32(f + 112), 0x35); // WBINVD | PROC_C1 | PWR_BUTTON | SLP_BUTTON; 24-bit timer
  assert.deepEqual(Array.from(memory.read(f + 116, 244 - 116)), new Array(244 - 116).fill(0)); // no RESET_REG, X_ fields 0
});

test("a reset register reaches the FADT as an I/O GAS with RESET_VALUE and RESET_REG_SUP", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES, resetRegister: { port: 0xcf9, value: 0x06 } });
  const f = at.fadt;
  checkHeader(memory, f, "FACP", 244, 3);
  assert.equal(memory.readU32(f + 112), 0x35 | (1 << 10));
  // space 1 (system I/O), 8 bits wide at bit 0, byte access, address 0xcf9; then RESET_VALUE
  assert.deepEqual(Array.from(memory.read(f + 116, 13)), [1, 8, 0, 1, 0xf9, 0x0c, 0, 0, 0, 0, 0, 0, 0x06]);
  assert.throws(() => writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES, resetRegister: { port: 0xcf9, value: 0x106 } }), /must be a byte/);
  assert.throws(() => writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES, resetRegister: { port: 0x10000, value: 6 } }), AcpiTableError);
});

test("custom ports and SCI reach the FADT and MADT", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, {
    cpus: 1,
    tablesAddress: TABLES,
    pmTimerPort: 0xb008,
    pm1aEventPort: 0xb000,
    pm1aControlPort: 0xb004,
    sciIrq: 10,
  });
  assert.equal(memory.readU32(at.fadt + 56), 0xb000);
  assert.equal(memory.readU32(at.fadt + 64), 0xb004);
  assert.equal(memory.readU32(at.fadt + 76), 0xb008);
  assert.equal(memory.readU16(at.fadt + 46), 10);
  assert.equal(byteSum(memory, at.fadt, 116), 0);
  const sciOverride = at.madt + 44 + 8 + 12 + 10;
  assert.deepEqual(Array.from(memory.read(sciOverride, 10)), [2, 10, 0, 10, 10, 0, 0, 0, 0x0d, 0x00]);
});

test("the DSDT is a bare header and the FACS is 64 bytes, 64-aligned", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES });
  checkHeader(memory, at.dsdt, "DSDT", 36, 1);
  assert.equal(at.facs % 64, 0);
  assert.equal(ascii(memory, at.facs, 4), "FACS");
  assert.equal(memory.readU32(at.facs + 4), 64);
  assert.deepEqual(Array.from(memory.read(at.facs + 8, 56)), new Array(56).fill(0));
});

test("the MADT has one enabled local APIC per CPU, the IOAPIC and the overrides", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 3, tablesAddress: TABLES });
  const m = at.madt;
  const length = 44 + 3 * 8 + 12 + 2 * 10;
  checkHeader(memory, m, "APIC", length, 1);
  assert.equal(memory.readU32(m + 36), 0xfee0_0000);
  assert.equal(memory.readU32(m + 40), 1); // PCAT_COMPAT
  assert.deepEqual(Array.from(memory.read(m + 44, length - 44)), [
    // Processor Local APIC: type, length, UID, APIC ID, flags (enabled)
    0, 8, 0, 0, 1, 0, 0, 0,
    0, 8, 1, 1, 1, 0, 0, 0,
    0, 8, 2, 2, 1, 0, 0, 0,
    // I/O APIC: type, length, id 0, reserved, address 0xFEC00000, GSI base 0
    1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0,
    // Interrupt source override: ISA IRQ 0 -> GSI 2, conforming
    2, 10, 0, 0, 2, 0, 0, 0, 0x00, 0x00,
    // Interrupt source override: SCI (IRQ 9) -> GSI 9, active high, level
    2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0x00,
  ]);
});

test("255 CPUs fit, with APIC IDs 0..254", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 255, tablesAddress: TABLES });
  const length = memory.readU32(at.madt + 4);
  assert.equal(length, 44 + 255 * 8 + 12 + 20);
  assert.equal(byteSum(memory, at.madt, length), 0);
  assert.deepEqual(Array.from(memory.read(at.madt + 44 + 254 * 8, 8)), [0, 8, 254, 254, 1, 0, 0, 0]);
  assert.equal(at.rsdt % 16, 0);
  checkHeader(memory, at.rsdt, "RSDT", 44, 1);
});

test("bad options are refused and nothing is written", () => {
  const cases: Array<Parameters<typeof writeAcpiTables>[1]> = [
    { cpus: 0, tablesAddress: TABLES },
    { cpus: 256, tablesAddress: TABLES },
    { cpus: 1, tablesAddress: TABLES + 16 }, // FACS must be 64-byte aligned
    { cpus: 1, tablesAddress: TABLES, rsdpAddress: 0xe0008 }, // not 16-byte aligned
    { cpus: 1, tablesAddress: TABLES, rsdpAddress: 0xd0000 }, // below the BIOS area
    { cpus: 1, tablesAddress: TABLES, rsdpAddress: 0xffff0 }, // runs past 1 MiB
    { cpus: 1, tablesAddress: 0xe0000 }, // overlaps the RSDP
    { cpus: 1, tablesAddress: 2 * MiB - 64 }, // runs out of RAM
    { cpus: 1, tablesAddress: 64 * MiB }, // not RAM at all
    { cpus: 1, tablesAddress: TABLES, sciIrq: 2 },
    { cpus: 1, tablesAddress: TABLES, sciIrq: 16 },
    { cpus: 1, tablesAddress: TABLES, pmTimerPort: 0x10000 },
    { cpus: 1, tablesAddress: TABLES, pmTimerPort: 0x602 }, // overlaps PM1a_EVT_BLK
  ];
  for (const options of cases) {
    const memory = lowMemory();
    assert.throws(() => writeAcpiTables(memory, options), AcpiTableError, JSON.stringify(options));
    assert.equal(findRsdp(memory), -1);
    assert.equal(byteSum(memory, TABLES, 0x1000), 0);
  }
});

test("the RSDP must be RAM-backed", () => {
  const memory = GuestMemory.allocate([{ gpa: 0, size: 0xa0000 }]);
  assert.throws(() => writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES }), AcpiTableError);
});

/** A clock the test sets: `ns` nanoseconds. */
class SetClock implements MonotonicClock {
  seconds = 0;
  nanoseconds = 0;
  constructor(public ns = 0n) {}
  sample(): void {
    this.seconds = Number(this.ns / 1_000_000_000n);
    this.nanoseconds = Number(this.ns % 1_000_000_000n);
  }
}

test("PM timer: 3.579545 MHz from a monotonic clock, starting at 0", () => {
  const clock = new SetClock(5_000_000_000n);
  const timer = new AcpiPmTimer(clock);
  assert.equal(PM_TIMER_FREQUENCY_HZ, 3_579_545);
  assert.equal(timer.read(0, 4), 0);
  clock.ns += 1000n; // 1 µs = 3.58 ticks
  assert.equal(timer.read(0, 4), 3);
  clock.ns += 999_000n; // 1 ms in all
  assert.equal(timer.read(0, 4), 3579);
  clock.ns = 5_000_000_000n + 1_000_000_000n; // 1 s
  assert.equal(timer.read(0, 4), 3_579_545); // 0x369E99
  assert.equal(timer.counter, 0x369e99);
});

test("PM timer: narrow reads see the bytes of the register", () => {
  const clock = new SetClock(0n);
  const timer = new AcpiPmTimer(clock);
  clock.ns = 1_000_000_000n; // counter 0x369E99
  assert.equal(timer.read(0, 1), 0x99);
  assert.equal(timer.read(0, 2), 0x9e99);
  assert.equal(timer.read(1, 1), 0x9e);
  assert.equal(timer.read(2, 1), 0x36);
  assert.equal(timer.read(3, 1), 0x00);
  assert.equal(timer.read(2, 2), 0x0036);
});

test("PM timer: wraps at 24 bits", () => {
  const clock = new SetClock(0n);
  const timer = new AcpiPmTimer(clock);
  clock.ns = 5_000_000_000n; // 17_897_725 ticks
  assert.equal(timer.read(0, 4), 17_897_725 - 0x100_0000);
  // 2^24 ticks are reached at 16777216 / 3579545 s = 4_686_968_874.54 ns.
  clock.ns = 4_686_968_874n;
  assert.equal(timer.read(0, 4), 0xff_ffff);
  clock.ns = 4_686_968_875n;
  assert.equal(timer.read(0, 4), 0);
});

test("PM timer: exact at every elapsed time, as floor(ns * 3579545 / 10^9) mod 2^24 in integers", () => {
  // Origins on and off a second boundary (the nanoseconds borrow), elapsed times from 0 to
  // 200 days (beyond 2^53 ns), and the instants just before and at each tick of 1 s.
  const origins = [0n, 999_999_999n, 123_456_789_012n];
  const elapsed = [0n, 1n, 279n, 280n, 999_999_999n, 1_000_000_000n, 4_686_968_874n, 4_686_968_875n, 2n ** 53n + 12_345n, 17_280_000_000_000_000n];
  let x = 0x2545_f491n;
  for (let i = 0; i < 200; i++) {
    x = (x * 6364136223846793005n + 1442695040888963407n) & (2n ** 64n - 1n);
    elapsed.push(x % (200n * 86_400n * 1_000_000_000n));
  }
  for (let tick = 1n; tick < 3_579_545n; tick += 65_537n) {
    const first = (tick * 1_000_000_000n + 3_579_544n) / 3_579_545n; // the first nanosecond of `tick`
    elapsed.push(first - 1n, first);
  }
  for (const origin of origins) {
    const clock = new SetClock(origin);
    const timer = new AcpiPmTimer(clock);
    for (const e of elapsed) {
      clock.ns = origin + e;
      const expected = Number(((e * 3_579_545n) / 1_000_000_000n) & 0xff_ffffn);
      assert.equal(timer.counter, expected, `origin ${origin} ns, ${e} ns later`);
    }
  }
});

test("PM timer: writes are ignored", () => {
  const clock = new SetClock(0n);
  const timer = new AcpiPmTimer(clock);
  clock.ns = 1_000_000_000n;
  timer.write(0, 4, 0);
  timer.write(0, 1, 0xff);
  assert.equal(timer.read(0, 4), 3_579_545);
});

test("PM timer: the host clock drives it forward", async () => {
  const timer = new AcpiPmTimer();
  const before = process.hrtime.bigint();
  const first = timer.read(0, 4);
  const afterFirst = process.hrtime.bigint();
  await new Promise((resolve) => setTimeout(resolve, 20));
  const beforeSecond = process.hrtime.bigint();
  const second = timer.read(0, 4);
  const after = process.hrtime.bigint();
  // Bracketed by the same clock, so a loaded machine that stretches the wait cannot fail it:
  // the ticks between the reads lie between those of the inner and the outer interval (one
  // tick of rounding each way), modulo the 24-bit wrap every 4.7 s.
  const ticks = (ns: bigint) => (Number(ns) * PM_TIMER_FREQUENCY_HZ) / 1e9;
  const least = Math.floor(ticks(beforeSecond - afterFirst)) - 1;
  const most = Math.ceil(ticks(after - before)) + 1;
  let advanced = (second - first) & 0xff_ffff;
  while (advanced < least) advanced += 0x100_0000;
  assert.ok(advanced <= most, `advanced ${advanced} ticks, expected ${least}..${most}`);
});

test("with ecam, an MCFG table announces segment 0's ECAM base and bus range, listed in the RSDT", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES, ecam: { base: 0xe000_0000, endBus: 255 } });
  assert.ok(at.mcfg !== undefined);
  checkHeader(memory, at.mcfg, "MCFG", 60, 1);
  assert.equal(memory.readU64(at.mcfg + 44), 0xe000_0000n);
  assert.equal(memory.readU16(at.mcfg + 52), 0); // segment
  assert.equal(memory.readU8(at.mcfg + 54), 0); // start bus
  assert.equal(memory.readU8(at.mcfg + 55), 255); // end bus
  const rsdtLength = memory.readU32(at.rsdt + 4);
  const entries = Array.from({ length: (rsdtLength - 36) / 4 }, (_, i) => memory.readU32(at.rsdt + 36 + i * 4));
  assert.deepEqual(entries, [at.fadt, at.madt, at.mcfg]);
  assert.equal(findRsdp(memory), at.rsdp);
});

test("an ECAM range that is misaligned or crosses 4 GiB is refused with the reason", () => {
  assert.throws(() => writeAcpiTables(lowMemory(), { cpus: 1, tablesAddress: TABLES, ecam: { base: 0xe000_1000, endBus: 0 } }), /1 MiB aligned/);
  assert.throws(() => writeAcpiTables(lowMemory(), { cpus: 1, tablesAddress: TABLES, ecam: { base: 0xf800_0000, endBus: 255 } }), /below 4 GiB/);
  assert.throws(() => writeAcpiTables(lowMemory(), { cpus: 1, tablesAddress: TABLES, ecam: { base: 0xe000_0000, endBus: 256 } }), /endBus/);
});

test("pciIrqs get active-high level overrides after the SCI's, as QEMU's PC gives IRQs 10 and 11", () => {
  const memory = lowMemory();
  const at = writeAcpiTables(memory, { cpus: 1, tablesAddress: TABLES, pciIrqs: [10, 11] });
  const length = 44 + 8 + 12 + 4 * 10;
  checkHeader(memory, at.madt, "APIC", length, 1);
  assert.deepEqual(Array.from(memory.read(at.madt + length - 20, 20)), [
    2, 10, 0, 10, 10, 0, 0, 0, 0x0d, 0x00,
    2, 10, 0, 11, 11, 0, 0, 0, 0x0d, 0x00,
  ]);
  assert.throws(() => writeAcpiTables(lowMemory(), { cpus: 1, tablesAddress: TABLES, pciIrqs: [9] }), /other than 2 and the SCI/);
  assert.throws(() => writeAcpiTables(lowMemory(), { cpus: 1, tablesAddress: TABLES, pciIrqs: [10, 10] }), /distinct/);
});
