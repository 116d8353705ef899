/**
 * The PCI bus: configuration mechanism #1 and ECAM through the i440FX host bridge, type-0
 * headers, BAR sizing and placement, decode enables, capabilities, MSI messages, INTx
 * routing, the PIIX3's PIRQ routes; a real guest that moves pci-testdev's I/O BAR and uses it
 * where it put it, and one that lists bus 0 under workervisor and under QEMU's pc machine.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Vm } from "../runtime/vm.js";
import { PcMachine } from "../runtime/pc-machine.js";
import { PciConfigSpace, PciCommand, PciRegister } from "../runtime/pci/config-space.js";
import { CONFIG_ADDRESS_ENABLE, I440FX_DEVICE_ID, I440FX_VENDOR_ID, PciConfigPorts, PciEcam } from "../runtime/pci/host-bridge.js";
import { intxGsi, PciBus, PIRQ_GSIS } from "../runtime/pci/pci-bus.js";
import { ISA_BRIDGE_CLASS, Piix3IsaBridge, PIIX3_DEVICE_ID, PIIX3_SLOT, PIIX3_VENDOR_ID, PIRQ_ROUTE_CONTROL } from "../runtime/pci/piix3-isa-bridge.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import type { PciDevice, PciSlotServices } from "../runtime/pci/pci-device.js";
import { PciHost, PCI_IO_WINDOW, PCI_MEMORY_WINDOW } from "../runtime/pci/pci-host.js";
import { PciTestdev, PCI_TESTDEV_DEVICE_ID, PCI_TESTDEV_VENDOR_ID } from "../runtime/pci/pci-testdev.js";
import { I440fxHostBridge } from "../runtime/pci/host-bridge.js";
import { addMsiCapability, msiMessage } from "../runtime/pci/msi.js";
import { DEBUG_EXIT, imm16, imm32 } from "../runtime/guests/guest-bytes.js";
import type { HighWord } from "../runtime/devices/device.js";

/** Where 8-byte reads leave their high word (unused by the narrower reads here). */
const WIDE: HighWord = { high: 0 };
const ADDRESS = 0; // 0xCF8
const DATA = 4; // 0xCFC

/** A bus with no hypervisor behind it: the INTx lines it would drive are recorded. */
function recordingBus(): { bus: PciBus; intx: [number, boolean][] } {
  const intx: [number, boolean][] = [];
  const services = (slot: number): PciSlotServices => ({
    setIntx: (level) => {
      const line = bus.intxLevel(slot, level);
      if (line !== undefined) intx.push([line.gsi, line.asserted]);
    },
    signalMsi: () => false,
    attachIoEvent: () => -1,
    detachIoEvent: () => {},
    drainIoEvent: () => 0,
  });
  const bus = new PciBus({ ioWindow: PCI_IO_WINDOW, memoryWindow: PCI_MEMORY_WINDOW, services });
  return { bus, intx };
}

function busWithTestdev(): { bus: PciBus; ports: PciConfigPorts; ecam: PciEcam; testdev: PciTestdev; intx: [number, boolean][] } {
  const { bus, intx } = recordingBus();
  bus.plug(0, new I440fxHostBridge());
  const testdev = new PciTestdev();
  bus.plug(2, testdev);
  return { bus, ports: new PciConfigPorts(bus), ecam: new PciEcam(bus), testdev, intx };
}

function configAddress(slot: number, register: number, bus = 0, fn = 0): number {
  return (CONFIG_ADDRESS_ENABLE | (bus << 16) | (slot << 11) | (fn << 8) | register) >>> 0;
}

function readConfig(ports: PciConfigPorts, slot: number, register: number, size: 1 | 2 | 4 = 4): number {
  ports.write(ADDRESS, 4, configAddress(slot, register & 0xfc));
  return ports.read(DATA + (register & 3), size, WIDE);
}

function writeConfig(ports: PciConfigPorts, slot: number, register: number, value: number, size: 1 | 2 | 4 = 4): void {
  ports.write(ADDRESS, 4, configAddress(slot, register & 0xfc));
  ports.write(DATA + (register & 3), size, value);
}

test("CONFIG_ADDRESS reads back with reserved bits 30:24 clear; the low bits select the register as on QEMU", () => {
  const { ports } = busWithTestdev();
  assert.equal(ports.read(ADDRESS, 4, WIDE), 0);
  ports.write(ADDRESS, 4, 0xffff_ffff);
  assert.equal(ports.read(ADDRESS, 4, WIDE), 0x80ff_ffff);
  // kvm-unit-tests reads the device ID this way: register 2 in CONFIG_ADDRESS, inw(0xCFC).
  ports.write(ADDRESS, 4, configAddress(0, 2));
  assert.equal(ports.read(DATA, 2, WIDE), I440FX_DEVICE_ID);
});

test("the host bridge is an i440FX at 00:00.0; pci-testdev 1b36:0005 at 00:02.0; empty slots answer all-ones", () => {
  const { ports } = busWithTestdev();
  assert.equal(readConfig(ports, 0, 0), ((I440FX_DEVICE_ID << 16) | I440FX_VENDOR_ID) >>> 0);
  assert.equal(readConfig(ports, 0, 0x08) >>> 8, 0x06_00_00); // class: host bridge
  assert.equal(readConfig(ports, 2, 0), ((PCI_TESTDEV_DEVICE_ID << 16) | PCI_TESTDEV_VENDOR_ID) >>> 0);
  assert.equal(readConfig(ports, 2, PciRegister.INTERRUPT_PIN, 1), 0); // QEMU gives it no pin
  for (const slot of [1, 3, 31]) assert.equal(readConfig(ports, slot, 0), 0xffff_ffff);
  ports.write(ADDRESS, 4, configAddress(2, 0, 0, 1)); // function 1
  assert.equal(ports.read(DATA, 4, WIDE), 0xffff_ffff);
  ports.write(ADDRESS, 4, configAddress(0, 0, 1)); // bus 1
  assert.equal(ports.read(DATA, 2, WIDE), 0xffff);
  // Without the enable bit there is no config cycle.
  ports.write(ADDRESS, 4, 0);
  assert.equal(ports.read(DATA, 4, WIDE), 0xffff_ffff);
});

test("ECAM reaches the same registers: bus, device, function in address bits 27:20, 19:15, 14:12", () => {
  const { ports, ecam } = busWithTestdev();
  assert.equal(ecam.read(0, 2, WIDE), I440FX_VENDOR_ID);
  assert.equal(ecam.read((2 << 15) + 2, 2, WIDE), PCI_TESTDEV_DEVICE_ID);
  assert.equal(ecam.read((2 << 15) + 0x100, 4, WIDE), 0xffff_ffff); // no extended space on a conventional function
  assert.equal(ecam.read((1 << 20) + 0, 4, WIDE), 0xffff_ffff); // bus 1
  ecam.write((2 << 15) + PciRegister.INTERRUPT_LINE, 1, 0x5a, 0);
  assert.equal(readConfig(ports, 2, PciRegister.INTERRUPT_LINE, 1), 0x5a);
});

test("BAR sizing: all-ones reads back the size mask and the type bits; read-only registers stay", () => {
  const { ports } = busWithTestdev();
  const memoryBar = PciRegister.BAR0;
  const ioBar = PciRegister.BAR0 + 4;
  writeConfig(ports, 2, memoryBar, 0xffff_ffff);
  assert.equal(readConfig(ports, 2, memoryBar), 0xffff_f000); // 4 KiB, 32-bit, not prefetchable
  writeConfig(ports, 2, ioBar, 0xffff_ffff);
  assert.equal(readConfig(ports, 2, ioBar), 0xffff_ff01); // 256 bytes of I/O
  writeConfig(ports, 2, PciRegister.BAR0 + 8, 0xffff_ffff);
  assert.equal(readConfig(ports, 2, PciRegister.BAR0 + 8), 0); // unimplemented BAR
  writeConfig(ports, 2, PciRegister.VENDOR_ID, 0);
  assert.equal(readConfig(ports, 2, 0, 2), PCI_TESTDEV_VENDOR_ID);
});

test("firmware placement, then decode follows the command register and the guest's BAR writes", () => {
  const { bus, ports } = busWithTestdev();
  bus.assignResources();
  assert.equal(readConfig(ports, 2, PciRegister.BAR0), PCI_MEMORY_WINDOW.base);
  assert.equal(readConfig(ports, 2, PciRegister.BAR0 + 4), PCI_IO_WINDOW.base | 1);
  assert.equal(readConfig(ports, 2, PciRegister.COMMAND, 2) & 3, PciCommand.IO_SPACE | PciCommand.MEMORY_SPACE);
  const io = bus.ioWindowDevice;
  const memory = bus.memoryWindowDevice;
  // Start I/O test 0 through the I/O BAR; its header is readable through either BAR.
  io.write(0, 1, 0, 0);
  assert.equal(io.read(1, 1, WIDE), 1); // width
  assert.equal(memory.read(4, 4, WIDE), 128 + 3); // offset of portio-no-eventfd
  // Move the I/O BAR to 0xd000: the old address no longer decodes.
  writeConfig(ports, 2, PciRegister.BAR0 + 4, 0xd000);
  assert.equal(io.read(1, 1, WIDE), 0xff);
  assert.equal(io.read(0xd000 - PCI_IO_WINDOW.base + 1, 1, WIDE), 1);
  // Memory decode off: the memory BAR stops answering, the I/O one does not.
  writeConfig(ports, 2, PciRegister.COMMAND, PciCommand.IO_SPACE, 2);
  assert.equal(memory.read(1, 1, WIDE), 0xff);
  assert.equal(io.read(0xd000 - PCI_IO_WINDOW.base + 1, 1, WIDE), 1);
  // A BAR outside the bridge's window decodes nowhere.
  writeConfig(ports, 2, PciRegister.BAR0 + 4, 0x1000);
  assert.equal(io.read(0xd000 - PCI_IO_WINDOW.base + 1, 1, WIDE), 0xff);
});

test("pci-testdev counts matching byte writes at its test offset, and only those", () => {
  const { bus, testdev } = busWithTestdev();
  bus.assignResources();
  const memory = bus.memoryWindowDevice;
  memory.write(0, 1, 0, 0); // mmio-no-eventfd: offset 2048, data 0xFA
  assert.equal(memory.read(8, 1, WIDE), 0xfa);
  const name = Array.from({ length: 16 }, (_, i) => memory.read(16 + i, 1, WIDE));
  assert.equal(String.fromCharCode(...name.slice(0, name.indexOf(0))), "mmio-no-eventfd");
  memory.write(2048, 1, 0xfa, 0);
  memory.write(2048, 1, 0x11, 0); // wrong data
  memory.write(2049, 1, 0xfa, 0); // wrong offset
  memory.write(2048, 4, 0xfa, 0); // split into bytes: only the first one is at the offset
  assert.equal(testdev.count, 2);
  assert.equal(memory.read(12, 4, WIDE), 2);
  memory.write(0, 1, 7, 0); // no such test: stopped
  assert.equal(memory.read(12, 4, WIDE), 0);
});

test("capability list and MSI: the guest's address and data make the message; disabled or masked sends none", () => {
  const config = new PciConfigSpace({ vendorId: 0x1234, deviceId: 0x5678, classCode: 0xff0000 });
  const at = addMsiCapability(config, { vectors: 4, addresses64: true, perVectorMasking: true });
  assert.equal(config.u16(PciRegister.STATUS) & 0x10, 0x10);
  assert.equal(config.u8(PciRegister.CAPABILITIES_POINTER), at);
  assert.equal(config.u8(at), 0x05);
  assert.equal(config.u8(at + 1), 0); // end of list
  assert.equal(msiMessage(config, at), undefined); // not enabled
  config.write(at + 4, 4, 0xfee0_1000);
  config.write(at + 8, 4, 0);
  config.write(at + 12, 2, 0x4041);
  config.write(at + 2, 2, 0x0021); // enable, 4 vectors (multiple message enable = 2)
  assert.deepEqual(msiMessage(config, at, 0), { address: 0xfee0_1000n, data: 0x4040 });
  assert.deepEqual(msiMessage(config, at, 3), { address: 0xfee0_1000n, data: 0x4043 });
  assert.equal(msiMessage(config, at, 4), undefined);
  config.write(at + 16, 4, 0b0100); // mask vector 2
  assert.equal(msiMessage(config, at, 2), undefined);
  assert.equal(config.u32(at + 20) & 0b0100, 0b0100); // its pending bit
  // Only enable and multiple-message-enable are the guest's: 64-bit (bit 7), per-vector
  // masking (bit 8) and "4 vectors capable" (bits 3:1 = 2) stay.
  config.write(at + 2, 2, 0xffff);
  assert.equal(config.u16(at + 2), 0x100 | 0x80 | 0x70 | (2 << 1) | 1);
  config.write(at + 2, 2, 0);
  assert.equal(config.u16(at + 2), 0x100 | 0x80 | (2 << 1));
});

test("INTx: pins rotate by slot onto PIRQA-D (IRQ 10, 10, 11, 11); a shared line stays up while any holds it", () => {
  assert.deepEqual([1, 2, 3, 4].map((pin) => intxGsi(1, pin)), [10, 10, 11, 11]);
  assert.deepEqual([1, 2, 3, 4].map((pin) => intxGsi(2, pin)), [10, 11, 11, 10]);
  const { bus } = busWithTestdev();
  assert.deepEqual(bus.intxLevel(2, true), { gsi: 10, asserted: true });
  assert.deepEqual(bus.intxLevel(6, true), { gsi: 10, asserted: true }); // slot 6 pin A shares PIRQB... same GSI 10
  assert.deepEqual(bus.intxLevel(2, false), { gsi: 10, asserted: true });
  assert.deepEqual(bus.intxLevel(6, false), { gsi: 10, asserted: false });
});

/**
 * 64-bit guest: moves pci-testdev's I/O BAR to 0xd000 through 0xCF8/0xCFC, starts the
 * I/O no-eventfd test there, writes its data byte three times, and exits with the count
 * (plus 0x100 when the old address still answered).
 */
function moveBarProgram(): number[] {
  return [
    0xb8, ...imm32(configAddress(2, PciRegister.BAR0 + 4)), // mov eax, CONFIG_ADDRESS(00:02.0, BAR1)
    0x66, 0xba, ...imm16(0xcf8),                      // mov dx, 0xcf8
    0xef,                                             // out dx, eax
    0xb8, ...imm32(0xd001),                           // mov eax, 0xd001
    0x66, 0xba, ...imm16(0xcfc),                      // mov dx, 0xcfc
    0xef,                                             // out dx, eax
    0x66, 0xba, ...imm16(0xd000),                     // mov dx, 0xd000
    0x30, 0xc0,                                       // xor al, al
    0xee,                                             // out dx, al        ; start I/O test 0
    0x66, 0xba, ...imm16(0xd000 + 131),               // mov dx, 0xd083    ; its offset
    0xb0, 0xfa,                                       // mov al, 0xfa
    0xee,                                             // out dx, al
    0xee,                                             // out dx, al
    0xee,                                             // out dx, al
    0x66, 0xba, ...imm16(0xd00c),                     // mov dx, 0xd00c    ; count
    0xed,                                             // in eax, dx
    0x89, 0xc3,                                       // mov ebx, eax
    0x66, 0xba, ...imm16(PCI_IO_WINDOW.base + 1),     // mov dx, old BAR + 1 (width)
    0xec,                                             // in al, dx
    0x3c, 0x01,                                       // cmp al, 1
    0x75, 0x06,                                       // jne +6
    0x81, 0xc3, ...imm32(0x100),                      // add ebx, 0x100
    0x89, 0xd8,                                       // mov eax, ebx
    0xe7, DEBUG_EXIT,                                 // out 0xf4, eax
    0xf4,                                             // hlt
  ];
}

test("a guest moves pci-testdev's I/O BAR and its writes reach the device at the new address only", async () => {
  const vm = Vm.create({ memory: 2 << 20 });
  vm.addDebugExit();
  const host = new PciHost(vm);
  const testdev = new PciTestdev();
  host.plug(testdev);
  host.assignResources();
  vm.loadProgram({ code: moveBarProgram(), mode: "long64" });
  const result = await vm.run();
  assert.deepEqual(result, { reason: "debug-exit", status: 3 });
  assert.equal(testdev.count, 3);
});

/** A function with only an MSI capability, to drive the slot's MSI path. */
class MsiFunction implements PciDevice {
  readonly name = "msi function";
  readonly config = new PciConfigSpace({ vendorId: 0x1234, deviceId: 0x0001, classCode: 0xff0000 });
  readonly msiAt = addMsiCapability(this.config, { vectors: 1, addresses64: false });
  slot: PciSlotServices | undefined;
  barRead(): number {
    return 0;
  }
  barWrite(): void {}
  plugged(slot: PciSlotServices): void {
    this.slot = slot;
  }
}

/** A function with an interrupt pin and nothing else, to drive the slot's INTx. */
class PinnedFunction implements PciDevice {
  readonly name = "pinned function";
  readonly config: PciConfigSpace;
  slot: PciSlotServices | undefined;
  constructor(pin: number) {
    this.config = new PciConfigSpace({ vendorId: 0x1234, deviceId: 0x0002, classCode: 0xff0000, interruptPin: pin });
  }
  barRead(): number {
    return 0;
  }
  barWrite(): void {}
  plugged(slot: PciSlotServices): void {
    this.slot = slot;
  }
}

test("MSI reaches KVM: the message the guest programmed is delivered to an enabled LAPIC, and not when MSI is off", async () => {
  const vm = Vm.create({ memory: 2 << 20, irqchip: true });
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  vm.addDevice({ space: "pio", base: 0x500, length: 1, sync: true, device: { name: "ready", read: () => 0, write: () => ready() } });
  const host = new PciHost(vm);
  const fn = new MsiFunction();
  const slot = host.plug(fn);
  host.assignResources();
  vm.loadProgram({
    code: [
      0xfa,                                   // cli
      0xb8, ...imm32(0xfee0_00f0),            // mov eax, LAPIC spurious-vector register
      0xc7, 0x00, ...imm32(0x1ff),            // mov dword [rax], 0x1ff   ; software-enable the LAPIC
      0x66, 0xba, ...imm16(0x500),            // mov dx, 0x500
      0xee,                                   // out dx, al               ; ready
      0xeb, 0xfe,                             // jmp $
    ],
    mode: "long64",
  });
  vm.start();
  try {
    await isReady;
    const ports = new PciConfigPorts(host.bus);
    writeConfig(ports, slot, fn.msiAt + 4, 0xfee0_0000); // destination APIC 0
    writeConfig(ports, slot, fn.msiAt + 8, 0x40, 2); // vector 0x40, fixed
    assert.equal(fn.slot!.signalMsi(), false); // not enabled yet
    writeConfig(ports, slot, fn.msiAt + 2, 1, 2);
    assert.equal(fn.slot!.signalMsi(), false); // enabled, but the function may not master the bus
    writeConfig(ports, slot, 0x04, 0x4, 2); // COMMAND: bus master
    assert.equal(fn.slot!.signalMsi(), true);
    writeConfig(ports, slot, fn.msiAt + 4, 0xfee0_5000); // APIC 5 does not exist
    assert.equal(fn.slot!.signalMsi(), false);
  } finally {
    await vm.stop();
  }
});

test("a function plugged into a PcMachine after construction gets its BARs placed before the guest runs", async (t) => {
  const kernel = fileURLToPath(new URL("../../../shared/kvm-unit-tests/dummy.flat", import.meta.url));
  if (!existsSync(kernel)) return t.skip(`no ${kernel}`);
  const machine = new PcMachine({ kernel: readFileSync(kernel), console: () => {} });
  const testdev = new PciTestdev();
  assert.equal(machine.pci.plug(testdev), 2);
  assert.equal(testdev.config.barAddress(0), 0);
  assert.deepEqual(await machine.run(), { reason: "debug-exit", status: 0 });
  assert.equal(testdev.config.barAddress(0), PCI_MEMORY_WINDOW.base);
  assert.equal(testdev.config.barAddress(1), PCI_IO_WINDOW.base);
});

test("pci-testdev without runtime ioeventfds counts the eventfd tests' writes itself", () => {
  const bus = new PciBus({
    ioWindow: PCI_IO_WINDOW, memoryWindow: PCI_MEMORY_WINDOW,
    services: () => ({
      setIntx: () => {}, signalMsi: () => false, drainIoEvent: () => 0, detachIoEvent: () => {},
      attachIoEvent: () => { throw new Error("no ioeventfds on this backend"); },
    }),
  });
  const testdev = new PciTestdev();
  bus.plug(2, testdev);
  bus.assignResources();
  const io = bus.ioWindowDevice;
  io.write(0, 1, 1, 0); // portio-wildcard-eventfd: offset 128 + 4, any data
  assert.equal(io.read(4, 4, WIDE), 132);
  for (let i = 0; i < 16; i++) io.write(132, 1, i, 0);
  assert.equal(io.read(12, 4, WIDE), 16);
});

test("PIIX3 at 00:01.0: 8086:7000, ISA bridge class; PIRQRC[A:D] start at firmware's IRQs and steer INTx when the guest reprograms them", () => {
  const { bus, intx: lines } = recordingBus();
  const bridge = new Piix3IsaBridge(PIRQ_GSIS, () => lines.push(...bus.reroutedIntx().map(({ gsi, asserted }): [number, boolean] => [gsi, asserted])));
  bus.plug(PIIX3_SLOT, bridge);
  bus.routeIntxThrough(bridge.route);
  const pinned = new PinnedFunction(1);
  bus.plug(3, pinned); // INTA# of slot 3 drives PIRQC
  bus.assignResources();
  const ports = new PciConfigPorts(bus);
  assert.equal(readConfig(ports, 1, 0x00), (PIIX3_DEVICE_ID << 16) | PIIX3_VENDOR_ID);
  assert.equal(readConfig(ports, 1, 0x08) >>> 8, ISA_BRIDGE_CLASS);
  assert.equal(readConfig(ports, 1, PciRegister.HEADER_TYPE, 1), 0x80);
  assert.equal(readConfig(ports, 1, PIRQ_ROUTE_CONTROL), 0x0b0b_0a0a);
  assert.equal(readConfig(ports, 3, PciRegister.INTERRUPT_LINE, 1), 11);

  pinned.slot!.setIntx(true);
  assert.deepEqual(lines.splice(0), [[11, true]]);
  writeConfig(ports, 1, PIRQ_ROUTE_CONTROL + 2, 0xf5, 1); // PIRQC to IRQ 5; bits 6:4 are reserved
  assert.equal(readConfig(ports, 1, PIRQ_ROUTE_CONTROL + 2, 1), 0x85);
  assert.deepEqual(lines.splice(0), [[11, false]], "bit 7 set: PIRQC is routed nowhere, so IRQ 11 drops");
  writeConfig(ports, 1, PIRQ_ROUTE_CONTROL + 2, 0x05, 1);
  assert.deepEqual(lines.splice(0), [[5, true]], "the held line comes up on IRQ 5");
  pinned.slot!.setIntx(false);
  assert.deepEqual(lines.splice(0), [[5, false]]);
  writeConfig(ports, 1, PIRQ_ROUTE_CONTROL + 2, 0x08, 1); // IRQ 8 (the RTC's) is reserved
  pinned.slot!.setIntx(true);
  assert.deepEqual(lines.splice(0), [], "a reserved IRQ routes nowhere");
  writeConfig(ports, 1, PIRQ_ROUTE_CONTROL, 0x0b0b_0b0a, 4);
  assert.deepEqual(lines.splice(0), [[11, true]]);
  assert.throws(() => new Piix3IsaBridge([10, 10, 11, 13], () => {}), /PIRQ routes must be 4 IRQs/);
});

const qemuVersion = spawnSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" });
const noQemu = qemuVersion.error || qemuVersion.status !== 0 ? "qemu-system-x86_64 is not installed (Debian: apt-get install -y qemu-system-x86)" : false;
const PCI_LISTING = [
  "pci 00 8086:1237 class 060000 rev 02 header 00",
  "pci 01 8086:7000 class 060100 rev 00 header 80",
  "pci 02 1b36:0005 class 00ff00 rev 00 header 00",
  "pirq 0b0b0a0a",
  "pirqb-written-05 05",
  "pirqb-written-80 80",
  "done",
];

test("a guest lists bus 0 as on QEMU's pc machine: host bridge, PIIX3 with firmware's PIRQ routes, pci-testdev", async () => {
  const bytes: number[] = [];
  const machine = new PcMachine({ kernel: readFileSync(buildMultibootGuest("pci-listing")), testDevices: true, console: (b) => bytes.push(b) });
  assert.deepEqual(await machine.run(), { reason: "debug-exit", status: 0 });
  assert.deepEqual(Buffer.from(bytes).toString("latin1").trim().split("\n"), PCI_LISTING);
});

test("under QEMU's pc machine (i440FX, SeaBIOS, -nodefaults, pci-testdev): the same guest lists the same bus", { skip: noQemu, timeout: 120_000 }, () => {
  const run = spawnSync("qemu-system-x86_64", [
    "-accel", "kvm", "-M", "pc", "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio", "-monitor", "none",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device", "pci-testdev", "-kernel", buildMultibootGuest("pci-listing"),
  ], { encoding: "latin1", timeout: 100_000 });
  assert.ok(run.error === undefined, `QEMU did not run: ${run.error?.message}`);
  assert.equal(run.status, 1, `QEMU ended with ${run.status} (debug-exit 0 is 1): ${run.stderr}`);
  assert.deepEqual(run.stdout.trim().split("\n"), PCI_LISTING);
});
