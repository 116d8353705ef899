import { test } from "node:test";
import assert from "node:assert/strict";
import { CMOS_PORT, CMOS_PORT_LENGTH, CmosRtc, CmosRtcConfigError } from "../runtime/devices/cmos-rtc.js";

const INDEX = 0; // port 0x70
const DATA = 1; // port 0x71
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** What a guest does: outb(reg, 0x70); inb(0x71). */
function rtcIn(rtc: CmosRtc, reg: number): number {
  rtc.write(INDEX, 1, reg);
  return rtc.read(DATA, 1);
}

function rtcOut(rtc: CmosRtc, reg: number, value: number): void {
  rtc.write(INDEX, 1, reg);
  rtc.write(DATA, 1, value);
}

/** A settable clock for the tests. */
function clockAt(iso: string): { now: () => Date; set(iso: string): void } {
  let current = new Date(iso);
  return { now: () => new Date(current.getTime()), set: (next) => (current = new Date(next)) };
}

const TIME_REGISTERS = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32];

test("maps at 0x70, two ports", () => {
  assert.equal(CMOS_PORT, 0x70);
  assert.equal(CMOS_PORT_LENGTH, 2);
});

test("default mode is BCD, 24-hour, with the host's UTC time", () => {
  // Saturday 9 March 2024, 23:59:58 UTC.
  const rtc = new CmosRtc({ now: clockAt("2024-03-09T23:59:58.500Z").now });
  assert.equal(rtcIn(rtc, 0x0b), 0x02);
  assert.deepEqual(
    TIME_REGISTERS.map((r) => rtcIn(rtc, r)),
    [0x58, 0x59, 0x23, 0x07, 0x09, 0x03, 0x24, 0x20],
  );
});

test("the time is read at read time", () => {
  const clock = clockAt("1999-12-31T23:59:59.500Z");
  const rtc = new CmosRtc({ now: clock.now });
  assert.deepEqual(TIME_REGISTERS.map((r) => rtcIn(rtc, r)), [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19]);
  clock.set("2000-01-01T00:00:00.500Z"); // a Saturday
  assert.deepEqual(TIME_REGISTERS.map((r) => rtcIn(rtc, r)), [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]);
});

test("day of week counts 1 = Sunday", () => {
  const clock = clockAt("2024-03-10T12:00:00.500Z"); // Sunday
  const rtc = new CmosRtc({ now: clock.now });
  assert.equal(rtcIn(rtc, 0x06), 0x01);
  clock.set("2024-03-11T12:00:00.500Z"); // Monday
  assert.equal(rtcIn(rtc, 0x06), 0x02);
});

test("register B bit 2 selects binary", () => {
  const rtc = new CmosRtc({ now: clockAt("2024-03-09T23:59:58.500Z").now });
  rtcOut(rtc, 0x0b, 0x06);
  assert.equal(rtcIn(rtc, 0x0b), 0x06);
  assert.deepEqual(TIME_REGISTERS.map((r) => rtcIn(rtc, r)), [58, 59, 23, 7, 9, 3, 24, 20]);
});

test("register B bit 1 clear selects 12-hour mode with bit 7 = PM", () => {
  const clock = clockAt("2024-03-09T23:15:00.500Z");
  const rtc = new CmosRtc({ now: clock.now });
  rtcOut(rtc, 0x0b, 0x00); // BCD, 12-hour
  assert.equal(rtcIn(rtc, 0x04), 0x91); // 11 PM
  clock.set("2024-03-09T00:15:00.500Z");
  assert.equal(rtcIn(rtc, 0x04), 0x12); // 12 AM
  clock.set("2024-03-09T12:15:00.500Z");
  assert.equal(rtcIn(rtc, 0x04), 0x92); // 12 PM
  clock.set("2024-03-09T09:15:00.500Z");
  assert.equal(rtcIn(rtc, 0x04), 0x09); // 9 AM
  rtcOut(rtc, 0x0b, 0x04); // binary, 12-hour
  clock.set("2024-03-09T23:15:00.500Z");
  assert.equal(rtcIn(rtc, 0x04), 0x8b); // 11 | PM
});

test("register A: divider 0x26 by default, UIP around each second boundary", () => {
  const clock = clockAt("2024-03-09T10:00:00.500Z");
  const rtc = new CmosRtc({ now: clock.now });
  assert.equal(rtcIn(rtc, 0x0a), 0x26);
  clock.set("2024-03-09T10:00:00.998Z");
  assert.equal(rtcIn(rtc, 0x0a), 0x26);
  clock.set("2024-03-09T10:00:00.999Z");
  assert.equal(rtcIn(rtc, 0x0a), 0xa6);
  clock.set("2024-03-09T10:00:01.000Z");
  assert.equal(rtcIn(rtc, 0x0a), 0xa6);
  clock.set("2024-03-09T10:00:01.001Z");
  assert.equal(rtcIn(rtc, 0x0a), 0xa6);
  clock.set("2024-03-09T10:00:01.002Z");
  assert.equal(rtcIn(rtc, 0x0a), 0x26);
});

test("no UIP while SET is on or the divider is held in reset", () => {
  const clock = clockAt("2024-03-09T10:00:01.000Z");
  const rtc = new CmosRtc({ now: clock.now });
  rtcOut(rtc, 0x0b, 0x82);
  assert.equal(rtcIn(rtc, 0x0a), 0x26);
  rtcOut(rtc, 0x0b, 0x02);
  assert.equal(rtcIn(rtc, 0x0a), 0xa6);
  rtcOut(rtc, 0x0a, 0x70);
  assert.equal(rtcIn(rtc, 0x0a), 0x70);
});

test("register A's UIP bit cannot be written", () => {
  const rtc = new CmosRtc({ now: clockAt("2024-03-09T10:00:00.500Z").now });
  rtcOut(rtc, 0x0a, 0xff);
  assert.equal(rtcIn(rtc, 0x0a), 0x7f);
});

test("setting SET clears UIE", () => {
  const rtc = new CmosRtc({ now: clockAt("2024-03-09T10:00:00.500Z").now });
  rtcOut(rtc, 0x0b, 0x12);
  assert.equal(rtcIn(rtc, 0x0b), 0x12);
  rtcOut(rtc, 0x0b, 0x92);
  assert.equal(rtcIn(rtc, 0x0b), 0x82);
});

test("register C reads 0 and register D reads 0x80; both ignore writes", () => {
  const rtc = new CmosRtc({ now: clockAt("2024-03-09T10:00:00.500Z").now });
  assert.equal(rtcIn(rtc, 0x0c), 0x00);
  assert.equal(rtcIn(rtc, 0x0d), 0x80);
  rtcOut(rtc, 0x0c, 0xff);
  rtcOut(rtc, 0x0d, 0x00);
  assert.equal(rtcIn(rtc, 0x0c), 0x00);
  assert.equal(rtcIn(rtc, 0x0d), 0x80);
});

test("time register writes are ignored; the clock follows the host", () => {
  const rtc = new CmosRtc({ now: clockAt("2024-03-09T10:20:30.500Z").now });
  rtcOut(rtc, 0x00, 0x11);
  rtcOut(rtc, 0x09, 0x77);
  rtcOut(rtc, 0x32, 0x19);
  assert.equal(rtcIn(rtc, 0x00), 0x30);
  assert.equal(rtcIn(rtc, 0x09), 0x24);
  assert.equal(rtcIn(rtc, 0x32), 0x20);
});

test("alarm registers and CMOS RAM hold what is written", () => {
  const rtc = new CmosRtc();
  for (const reg of [0x01, 0x03, 0x05]) {
    rtcOut(rtc, reg, 0xc0);
    assert.equal(rtcIn(rtc, reg), 0xc0);
  }
  rtcOut(rtc, 0x0f, 0x0a);
  rtcOut(rtc, 0x40, 0x5a);
  rtcOut(rtc, 0x7f, 0xa5);
  assert.equal(rtcIn(rtc, 0x0f), 0x0a);
  assert.equal(rtcIn(rtc, 0x40), 0x5a);
  assert.equal(rtcIn(rtc, 0x7f), 0xa5);
});

test("index bit 7 masks NMI and is not part of the index", () => {
  const rtc = new CmosRtc();
  assert.equal(rtc.nmiMasked, false);
  rtc.write(INDEX, 1, 0x80 | 0x0d);
  assert.equal(rtc.nmiMasked, true);
  assert.equal(rtc.read(DATA, 1), 0x80);
  rtc.write(INDEX, 1, 0x0d);
  assert.equal(rtc.nmiMasked, false);
});

test("the index port is write-only", () => {
  const rtc = new CmosRtc();
  rtc.write(INDEX, 1, 0x0d);
  assert.equal(rtc.read(INDEX, 1), 0xff);
});

test("a 16-bit access splits into the index and data ports", () => {
  const rtc = new CmosRtc();
  rtc.write(INDEX, 2, 0x5a40); // index 0x40, then data 0x5a
  assert.equal(rtcIn(rtc, 0x40), 0x5a);
  assert.equal(rtc.read(INDEX, 2), 0x5aff);
});

test("without ramSize the memory-size bytes are 0", () => {
  const rtc = new CmosRtc();
  for (const reg of [0x15, 0x16, 0x17, 0x18, 0x2e, 0x2f, 0x30, 0x31, 0x34, 0x35, 0x5b, 0x5c, 0x5d]) {
    assert.equal(rtcIn(rtc, reg), 0, `register 0x${reg.toString(16)}`);
  }
});

test("256 MiB: base, extended, above-16M sizes and the AT checksum", () => {
  const rtc = new CmosRtc({ ramSize: 256 * MiB });
  assert.deepEqual([0x15, 0x16].map((r) => rtcIn(rtc, r)), [0x80, 0x02]); // 640 KiB
  assert.deepEqual([0x17, 0x18].map((r) => rtcIn(rtc, r)), [0xff, 0xff]); // capped
  assert.deepEqual([0x30, 0x31].map((r) => rtcIn(rtc, r)), [0xff, 0xff]);
  assert.deepEqual([0x34, 0x35].map((r) => rtcIn(rtc, r)), [0x00, 0x0f]); // 240 MiB / 64 KiB = 0x0F00
  assert.deepEqual([0x5b, 0x5c, 0x5d].map((r) => rtcIn(rtc, r)), [0, 0, 0]);
  assert.deepEqual([0x2e, 0x2f].map((r) => rtcIn(rtc, r)), [0x02, 0x80]); // 0x80+0x02+0xff+0xff
});

test("32 MiB: extended memory in KiB below the cap", () => {
  const rtc = new CmosRtc({ ramSize: 32 * MiB });
  assert.deepEqual([0x17, 0x18].map((r) => rtcIn(rtc, r)), [0x00, 0x7c]); // 31744 KiB
  assert.deepEqual([0x30, 0x31].map((r) => rtcIn(rtc, r)), [0x00, 0x7c]);
  assert.deepEqual([0x34, 0x35].map((r) => rtcIn(rtc, r)), [0x00, 0x01]); // 16 MiB / 64 KiB
});

test("12 MiB: nothing above 16 MiB", () => {
  const rtc = new CmosRtc({ ramSize: 12 * MiB });
  assert.deepEqual([0x17, 0x18].map((r) => rtcIn(rtc, r)), [0x00, 0x2c]); // 11264 KiB
  assert.deepEqual([0x34, 0x35].map((r) => rtcIn(rtc, r)), [0x00, 0x00]);
});

test("RAM above 4 GiB goes to 0x5B-0x5D in 64 KiB units", () => {
  const split = new CmosRtc({ ramSize: 6 * GiB, ramBelow4GiB: 3 * GiB });
  assert.deepEqual([0x34, 0x35].map((r) => rtcIn(split, r)), [0x00, 0xbf]); // 3056 MiB / 64 KiB
  assert.deepEqual([0x5b, 0x5c, 0x5d].map((r) => rtcIn(split, r)), [0x00, 0xc0, 0x00]); // 3 GiB / 64 KiB
  const full = new CmosRtc({ ramSize: 6 * GiB });
  assert.deepEqual([0x34, 0x35].map((r) => rtcIn(full, r)), [0x00, 0xff]);
  assert.deepEqual([0x5b, 0x5c, 0x5d].map((r) => rtcIn(full, r)), [0x00, 0x80, 0x00]); // 2 GiB / 64 KiB
});

test("bad memory options are refused", () => {
  assert.throws(() => new CmosRtc({ ramSize: -1 }), CmosRtcConfigError);
  assert.throws(() => new CmosRtc({ ramSize: 1.5 }), CmosRtcConfigError);
  assert.throws(() => new CmosRtc({ ramSize: GiB, ramBelow4GiB: 2 * GiB }), CmosRtcConfigError);
  assert.throws(() => new CmosRtc({ ramSize: 8 * GiB, ramBelow4GiB: 5 * GiB }), CmosRtcConfigError);
});

test("with the real clock the century and year match the host", () => {
  const rtc = new CmosRtc();
  const bcd = (v: number) => ((Math.floor(v / 10) % 10) << 4) | (v % 10);
  // Read between two looks at the host clock, so a New Year's midnight in between cannot fail it.
  const before = new Date().getUTCFullYear();
  const [century, year] = [rtcIn(rtc, 0x32), rtcIn(rtc, 0x09)];
  const after = new Date().getUTCFullYear();
  const seen = (y: number) => [bcd(Math.floor(y / 100)), bcd(y % 100)];
  assert.ok([before, after].some((y) => seen(y)[0] === century && seen(y)[1] === year), `RTC says ${[century, year].map((b) => b.toString(16).padStart(2, "0")).join("")}, host ${before}..${after}`);
});

test("the alarm (the S3 wake source) goes off at the next update matching its registers, with AIE set", () => {
  const clock = clockAt("2024-03-09T12:00:10.250Z");
  const rtc = new CmosRtc({ now: clock.now });
  rtcOut(rtc, 0x01, 0xc0);
  rtcOut(rtc, 0x03, 0xc0);
  rtcOut(rtc, 0x05, 0xc0);
  assert.equal(rtc.millisecondsToAlarm(), undefined, "AIE clear: no alarm");
  rtcOut(rtc, 0x0b, rtcIn(rtc, 0x0b) | 0x20);
  assert.equal(rtc.millisecondsToAlarm(), 750, "every field don't-care: the next second");
  rtcOut(rtc, 0x01, 0x30); // BCD 30 seconds
  assert.equal(rtc.millisecondsToAlarm(), 19_750);
  rtcOut(rtc, 0x05, 0x13); // and 13 h (BCD): 13:00:30 (any minute, so the first is :00)
  assert.equal(rtc.millisecondsToAlarm(), 3_600_000 - 10_250 + 30_000);
  rtcOut(rtc, 0x0b, 0x02 | 0x04 | 0x20); // binary mode: 0x13 is now 19 h and 0x30 48 s
  assert.equal(rtc.millisecondsToAlarm(), 7 * 3_600_000 - 10_250 + 48_000);
  rtcOut(rtc, 0x01, 0x7f); // 127 seconds: no clock shows it
  assert.equal(rtc.millisecondsToAlarm(), undefined);
  rtcOut(rtc, 0x01, 0xc0);
  rtcOut(rtc, 0x0b, 0x80 | 0x20); // SET: the clock is stopped
  assert.equal(rtc.millisecondsToAlarm(), undefined);
});
