/**
 * The PC machine's DSDT, read back from guest memory the way an OS finds it (RSDP, RSDT,
 * FADT) and disassembled by ACPICA's iasl: it must disassemble cleanly and describe the
 * PCI root bridge, its INTx routing, COM1, the virtio-mmio transports and S5 as the machine
 * actually wires them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { PcMachine, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOTS } from "../runtime/pc-machine.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import { PCI_IO_WINDOW, PCI_MEMORY_WINDOW } from "../runtime/pci/pci-host.js";
import { intxGsi } from "../runtime/pci/pci-bus.js";
import { probeVmlinux } from "./linux-images.js";
import { disassembleAml, iaslMissing } from "./helpers/iasl.js";

const skip = iaslMissing;

async function machineDsdt(virtioDevices: number): Promise<string> {
  const machine = new PcMachine({
    kernel: probeVmlinux(Uint8Array.from([0xf4])), memory: 64 << 20, pvmFallbacks: false, console: () => {},
    virtio: Array.from({ length: virtioDevices }, () => new VirtioRng()),
  });
  try {
    const memory = machine.vm.memory;
    let rsdp = 0xe0000;
    while (String.fromCharCode(...memory.read(rsdp, 8)) !== "RSD PTR ") rsdp += 16;
    const rsdt = memory.readU32(rsdp + 16);
    const fadt = memory.readU32(rsdt + 36);
    const dsdt = memory.readU32(fadt + 40);
    const table = memory.read(dsdt, memory.readU32(dsdt + 4));
    const { status, output, asl } = disassembleAml(table);
    assert.equal(status, 0, output);
    assert.doesNotMatch(output, /error|warning/i);
    return asl;
  } finally {
    await machine.stop();
  }
}

/** The text of `Device (name) { ... }` in a disassembly (up to the next device at its depth). */
function deviceBody(asl: string, device: string): string {
  const start = asl.indexOf(`Device (${device})`);
  assert.notEqual(start, -1, `no Device (${device}) in\n${asl}`);
  const next = asl.indexOf("\n        Device (", start + 1);
  return asl.slice(start, next === -1 ? undefined : next);
}

function asInteger(token: string): number {
  return token === "Zero" ? 0 : token === "One" ? 1 : Number(token);
}

test("the DSDT disassembles cleanly and routes every slot's INTA-D to the GSI the PCI bus raises", { skip }, async () => {
  const asl = await machineDsdt(0);
  const pci = deviceBody(asl, "PCI0");
  assert.match(pci, /Name \(_HID, EisaId \("PNP0A03"\)/);
  assert.match(pci, /Name \(_BBN, Zero\)/);
  assert.match(pci, /WordBusNumber \(ResourceProducer, MinFixed, MaxFixed, PosDecode,\s+0x0000,[^\n]*\n\s+0x0000,[^\n]*\n\s+0x00FF,/);
  const hex = (v: number, digits: number) => `0x${v.toString(16).toUpperCase().padStart(digits, "0")}`;
  assert.match(pci, new RegExp(`WordIO \\(ResourceProducer[^\\n]*\\n[^\\n]*\\n\\s+${hex(PCI_IO_WINDOW.base, 4)},[^\\n]*\\n\\s+${hex(PCI_IO_WINDOW.base + PCI_IO_WINDOW.size - 1, 4)},`));
  assert.match(pci, new RegExp(`DWordMemory \\(ResourceProducer[^\\n]*\\n[^\\n]*\\n\\s+${hex(PCI_MEMORY_WINDOW.base, 8)},[^\\n]*\\n\\s+${hex(PCI_MEMORY_WINDOW.base + PCI_MEMORY_WINDOW.size - 1, 8)},`));
  const routes = [...pci.matchAll(/Package \(0x04\)\s*\{\s*(\w+),\s*(\w+),\s*(\w+),\s*(\w+)\s*\}/g)].map((m) => m.slice(1).map(asInteger));
  assert.equal(routes.length, 32 * 4);
  for (const [address, pin, source, gsi] of routes) {
    const slot = address >>> 16;
    assert.equal(address & 0xffff, 0xffff, "a route covers every function of its slot");
    assert.equal(source, 0, "routed straight to a GSI");
    assert.equal(gsi, intxGsi(slot, pin + 1), `slot ${slot} INT${"ABCD"[pin]}`);
  }
  assert.deepEqual(new Set(routes.map(([a, p]) => `${a >>> 16}/${p}`)).size, 128, "each slot and pin once");
  const com1 = deviceBody(asl, "COM1");
  assert.match(com1, /EisaId \("PNP0501"\)/);
  assert.match(com1, /IO \(Decode16,\s+0x03F8,[^\n]*\n\s+0x03F8,[^\n]*\n\s+0x00,[^\n]*\n\s+0x08,/);
  assert.match(com1, /IRQNoFlags \(\)\s+\{4\}/);
  const reserved = deviceBody(asl, "MRES");
  assert.match(reserved, /EisaId \("PNP0C02"\)/);
  assert.match(reserved, /Memory32Fixed \(ReadWrite,\s+0xE0000000,[^\n]*\n\s+0x10000000,/, "the MCFG's ECAM is a motherboard resource");
  assert.match(asl, /Name \(\\_S5, Package \(0x04\)[^{]*\{\s*Zero,\s*Zero,\s*Zero,\s*Zero\s*\}/);
  assert.match(asl, /Name \(\\_S3, Package \(0x04\)[^{]*\{\s*One,\s*One,\s*Zero,\s*Zero\s*\}/);
  assert.doesNotMatch(asl, /LNRO0005/, "no virtio devices, no LNRO0005");
});

test("one LNRO0005 device per virtio-mmio transport, every slot filled: its window and its level, active-high GSI", { skip }, async () => {
  const asl = await machineDsdt(VIRTIO_MMIO_SLOTS);
  for (let i = 0; i < VIRTIO_MMIO_SLOTS; i++) {
    const body = deviceBody(asl, `VR0${i}`);
    assert.match(body, /Name \(_HID, "LNRO0005"\)/);
    const uid = i === 0 ? "Zero" : i === 1 ? "One" : `0x0${i}`;
    assert.match(body, new RegExp(`Name \\(_UID, ${uid}\\)`));
    const base = `0x${(VIRTIO_MMIO_BASE + 0x200 * i).toString(16).toUpperCase()}`;
    assert.match(body, new RegExp(`Memory32Fixed \\(ReadWrite,\\s+${base},[^\\n]*\\n\\s+0x00000200,`));
    // QEMU microvm's lines with ACPI: GSI 16 + slot.
    const gsi = `0x${(16 + i).toString(16).toUpperCase().padStart(8, "0")}`;
    assert.match(body, new RegExp(`Interrupt \\(ResourceConsumer, Level, ActiveHigh, Exclusive, ,, \\)\\s*\\{\\s*${gsi},`));
  }
  assert.equal(asl.match(/LNRO0005/g)?.length, VIRTIO_MMIO_SLOTS);
});
