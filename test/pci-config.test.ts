import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CONFIG_ADDRESS_ENABLE,
  PCI_CONFIG_PORT,
  PCI_CONFIG_PORT_LENGTH,
  PciConfigNoDevice,
} from "../runtime/devices/pci-config.js";

const ADDRESS = 0; // 0xCF8
const DATA = 4; // 0xCFC

test("maps at 0xCF8, eight ports", () => {
  assert.equal(PCI_CONFIG_PORT, 0xcf8);
  assert.equal(PCI_CONFIG_PORT_LENGTH, 8);
  assert.equal(CONFIG_ADDRESS_ENABLE, 0x8000_0000);
});

test("CONFIG_ADDRESS starts at 0 and reads back what the guest wrote", () => {
  const dev = new PciConfigNoDevice();
  assert.equal(dev.read(ADDRESS, 4), 0);
  // The mechanism #1 probe an OS does: write the enable bit, expect it back.
  dev.write(ADDRESS, 4, 0x8000_0000);
  assert.equal(dev.read(ADDRESS, 4), 0x8000_0000);
  // Bus 1, device 1, function 2, register 0x3C.
  dev.write(ADDRESS, 4, 0x8001_0a3c);
  assert.equal(dev.read(ADDRESS, 4), 0x8001_0a3c);
  assert.equal(dev.configAddress, 0x8001_0a3c);
  dev.write(ADDRESS, 4, 0x0000_0800);
  assert.equal(dev.read(ADDRESS, 4), 0x0000_0800);
});

test("reserved bits 30:24 and fixed bits 1:0 read back as 0", () => {
  const dev = new PciConfigNoDevice();
  dev.write(ADDRESS, 4, 0xffff_ffff);
  assert.equal(dev.read(ADDRESS, 4), 0x80ff_fffc);
  dev.write(ADDRESS, 4, 0x7f00_0003);
  assert.equal(dev.read(ADDRESS, 4), 0);
});

test("bigint values are accepted", () => {
  const dev = new PciConfigNoDevice();
  dev.write(ADDRESS, 4, 0x8000_0010n);
  assert.equal(dev.read(ADDRESS, 4), 0x8000_0010);
});

test("scanning bus 0 finds no function: every vendor ID is 0xFFFF", () => {
  const dev = new PciConfigNoDevice();
  for (let device = 0; device < 32; device++) {
    for (let fn = 0; fn < 8; fn++) {
      dev.write(ADDRESS, 4, (0x8000_0000 | (device << 11) | (fn << 8)) >>> 0);
      assert.equal(dev.read(DATA, 4), 0xffff_ffff);
      assert.equal(dev.read(DATA, 2), 0xffff);
    }
  }
});

test("CONFIG_DATA reads all-ones at every offset and width, enabled or not", () => {
  const dev = new PciConfigNoDevice();
  for (const enable of [0, 0x8000_0000]) {
    dev.write(ADDRESS, 4, enable);
    for (let offset = 4; offset < 8; offset++) assert.equal(dev.read(offset, 1), 0xff);
    assert.equal(dev.read(4, 2), 0xffff);
    assert.equal(dev.read(6, 2), 0xffff);
    assert.equal(dev.read(4, 4), 0xffff_ffff);
  }
});

test("CONFIG_DATA writes go nowhere", () => {
  const dev = new PciConfigNoDevice();
  dev.write(ADDRESS, 4, 0x8000_0004);
  dev.write(DATA, 4, 0x0000_0007);
  dev.write(DATA, 2, 0x1234);
  dev.write(7, 1, 0x56);
  assert.equal(dev.read(DATA, 4), 0xffff_ffff);
  assert.equal(dev.read(ADDRESS, 4), 0x8000_0004);
});

test("narrow accesses to 0xCF8-0xCFB are not CONFIG_ADDRESS", () => {
  const dev = new PciConfigNoDevice();
  dev.write(ADDRESS, 4, 0x8000_0000);
  dev.write(ADDRESS, 1, 0x00);
  dev.write(1, 1, 0x06); // 0xCF9 reset control: ignored
  dev.write(3, 1, 0x01); // 0xCFB: mechanism #2 probe, ignored
  dev.write(ADDRESS, 2, 0x0000);
  assert.equal(dev.read(ADDRESS, 4), 0x8000_0000);
  assert.equal(dev.read(ADDRESS, 1), 0xff);
  assert.equal(dev.read(1, 1), 0xff);
  assert.equal(dev.read(ADDRESS, 2), 0xffff);
  assert.equal(dev.read(2, 2), 0xffff);
});
