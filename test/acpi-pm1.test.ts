import { test } from "node:test";
import assert from "node:assert/strict";
import { AcpiPm1Registers } from "../runtime/devices/acpi-pm1.js";

test("PM1 control reads SCI_EN set: the platform is always in ACPI mode", () => {
  const pm1 = new AcpiPm1Registers(() => assert.fail("no sleep expected"));
  assert.equal(pm1.read(4, 2), 0x0001);
  pm1.write(4, 2, 0x0000);
  assert.equal(pm1.read(4, 2), 0x0001);
});

test("PM1 enable is stored; status bits are write-one-to-clear", () => {
  const pm1 = new AcpiPm1Registers(() => {});
  pm1.write(2, 2, 0x0121);
  assert.equal(pm1.read(2, 2), 0x0121);
  assert.equal(pm1.read(0, 4), 0x0121_0000);
  pm1.write(0, 2, 0xffff);
  assert.equal(pm1.read(0, 2), 0);
});

test("writing SLP_EN requests the sleep type the guest chose", () => {
  const requested: number[] = [];
  const pm1 = new AcpiPm1Registers((type) => requested.push(type));
  pm1.write(4, 2, (5 << 10) | (1 << 13));
  assert.deepEqual(requested, [5]);
  assert.equal(pm1.read(4, 2), (5 << 10) | 1, "SLP_EN reads back as 0");
});

test("unknown offsets read all-ones", () => {
  const pm1 = new AcpiPm1Registers(() => {});
  assert.equal(pm1.read(6, 1), 0xff);
});

test("waking sets WAK_STS and the wake source's status bit, which the guest clears by writing 1s", () => {
  const pm1 = new AcpiPm1Registers(() => {});
  pm1.write(2, 2, 1 << 10); // RTC_EN
  assert.equal(pm1.enabledEvents, 1 << 10);
  pm1.wake(1 << 10);
  assert.equal(pm1.read(0, 2), 0x8400);
  pm1.write(0, 2, 0x8000);
  assert.equal(pm1.read(0, 2), 0x0400);
  pm1.write(0, 2, 0x0400);
  assert.equal(pm1.read(0, 2), 0);
});
