import { test } from "node:test";
import assert from "node:assert/strict";
import { FwCfg, FwCfgConfigError, FwCfgKey, FW_CFG_PORT, FW_CFG_PORT_LENGTH } from "../runtime/devices/fw-cfg.js";

const SELECTOR = 0;
const DATA = 1;

/** What a guest does: outw(key, 0x510) then `count` times inb(0x511). */
function readItem(dev: FwCfg, key: number, count: number): number[] {
  dev.write(SELECTOR, 2, key);
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(dev.read(DATA, 1));
  return out;
}

test("maps at the traditional port, two bytes wide", () => {
  assert.equal(FW_CFG_PORT, 0x510);
  assert.equal(FW_CFG_PORT_LENGTH, 2);
  assert.equal(FwCfgKey.SIGNATURE, 0x00);
  assert.equal(FwCfgKey.ID, 0x01);
  assert.equal(FwCfgKey.RAM_SIZE, 0x03);
  assert.equal(FwCfgKey.NB_CPUS, 0x05);
  assert.equal(FwCfgKey.MAX_CPUS, 0x0f);
});

test("the signature reads QEMU, then zeros past the end", () => {
  const dev = new FwCfg({ cpus: 1, ramSize: 0x1000_0000 });
  assert.deepEqual(readItem(dev, 0x00, 6), [0x51, 0x45, 0x4d, 0x55, 0, 0]);
});

test("the signature item is selected at reset", () => {
  const dev = new FwCfg({ cpus: 1, ramSize: 0 });
  assert.equal(dev.selector, 0);
  assert.deepEqual([1, 2, 3, 4].map(() => dev.read(DATA, 1)), [0x51, 0x45, 0x4d, 0x55]);
});

test("FW_CFG_ID reports the traditional interface only (u32 LE 1)", () => {
  const dev = new FwCfg({ cpus: 1, ramSize: 0 });
  assert.deepEqual(readItem(dev, 0x01, 5), [1, 0, 0, 0, 0]);
});

test("RAM size is a u64 little-endian", () => {
  const dev = new FwCfg({ cpus: 1, ramSize: 6 * 1024 ** 3 }); // 0x1_8000_0000
  assert.deepEqual(readItem(dev, 0x03, 9), [0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00, 0]);
});

test("CPU counts are u16 little-endian", () => {
  const dev = new FwCfg({ cpus: 0x0104, ramSize: 0 });
  assert.deepEqual(readItem(dev, 0x05, 3), [0x04, 0x01, 0]);
  assert.deepEqual(readItem(dev, 0x0f, 3), [0x04, 0x01, 0]);
});

test("selecting a key rewinds to its first byte, even the same key", () => {
  const dev = new FwCfg({ cpus: 4, ramSize: 0 });
  assert.deepEqual(readItem(dev, 0x00, 2), [0x51, 0x45]);
  assert.deepEqual(readItem(dev, 0x00, 2), [0x51, 0x45]);
  assert.deepEqual(readItem(dev, 0x05, 1), [0x04]);
  assert.deepEqual(readItem(dev, 0x00, 1), [0x51]);
});

test("an unknown key reads as zeros", () => {
  const dev = new FwCfg({ cpus: 4, ramSize: 0 });
  assert.deepEqual(readItem(dev, 0x1234, 4), [0, 0, 0, 0]);
  assert.equal(dev.selector, 0x1234);
});

test("setItem adds keys and copies the bytes", () => {
  const dev = new FwCfg({ cpus: 1, ramSize: 0 });
  const bytes = [0xde, 0xad, 0xbe, 0xef];
  dev.setItem(0x8000, bytes);
  bytes[0] = 0;
  assert.deepEqual(readItem(dev, 0x8000, 5), [0xde, 0xad, 0xbe, 0xef, 0]);
  dev.setItem(0x05, [0x02, 0x00]);
  assert.deepEqual(readItem(dev, 0x05, 2), [0x02, 0x00]);
});

test("replacing the selected item serves the new bytes", () => {
  const dev = new FwCfg({ cpus: 1, ramSize: 0 });
  dev.write(SELECTOR, 2, 0x30);
  assert.equal(dev.read(DATA, 1), 0);
  dev.setItem(0x30, [7, 8]);
  assert.equal(dev.read(DATA, 1), 7);
  assert.equal(dev.read(DATA, 1), 8);
  assert.equal(dev.read(DATA, 1), 0);
});

test("only 16-bit selector writes select; other accesses do nothing", () => {
  const dev = new FwCfg({ cpus: 3, ramSize: 0 });
  dev.write(SELECTOR, 2, 0x05);
  dev.write(SELECTOR, 1, 0x00); // byte write to the selector: ignored
  dev.write(DATA, 1, 0x99); // data writes: ignored
  assert.equal(dev.selector, 0x05);
  assert.equal(dev.read(SELECTOR, 2), 0); // selector is write-only
  assert.equal(dev.read(SELECTOR, 1), 0);
  assert.equal(dev.read(DATA, 1), 0x03); // position did not move
  assert.equal(dev.read(DATA, 1), 0x00);
});

test("the selector takes the low 16 bits of the value", () => {
  const dev = new FwCfg({ cpus: 9, ramSize: 0 });
  dev.write(SELECTOR, 2, 0xabcd_0005);
  assert.equal(dev.selector, 0x0005);
  assert.equal(dev.read(DATA, 1), 9);
});

test("bad options and keys are rejected", () => {
  assert.throws(() => new FwCfg({ cpus: 0, ramSize: 0 }), FwCfgConfigError);
  assert.throws(() => new FwCfg({ cpus: 0x10000, ramSize: 0 }), FwCfgConfigError);
  assert.throws(() => new FwCfg({ cpus: 1.5, ramSize: 0 }), FwCfgConfigError);
  assert.throws(() => new FwCfg({ cpus: 1, ramSize: -1 }), FwCfgConfigError);
  const dev = new FwCfg({ cpus: 1, ramSize: 0 });
  assert.throws(() => dev.setItem(0x10000, [1]), FwCfgConfigError);
  assert.throws(() => dev.setItem(-1, [1]), FwCfgConfigError);
});
