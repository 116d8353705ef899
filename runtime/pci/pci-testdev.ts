/**
 * QEMU's `pci-testdev` (hw/misc/pci-testdev.c, 1b36:0005), which kvm-unit-tests' runner
 * always adds. Its registers, as QEMU defines them:
 *
 *   BAR 0: 4 KiB memory, BAR 1: 256 bytes I/O; no interrupt pin; class "other" (0xff00).
 *   Both BARs show the header of the current test, byte by byte (QEMU's accesses are
 *   split into bytes):
 *     0 test (u8)  1 width (u8)  4 offset (u32)  8 data (u8)  12 count (u32)  16 name (NUL-terminated)
 *   Writing n to byte 0 of BAR 0 (BAR 1) starts memory (I/O) test n: 0 no-eventfd,
 *   1 wildcard-eventfd, 2 datamatch-eventfd; any other n stops the current test. A test's
 *   `offset` is 2048 + index (memory) or 128 + index (I/O), index = type * 3 + n; a byte
 *   write there (of `data`, 0xFA, when the test matches data) counts in `count`, unless
 *   an eventfd takes it in the hypervisor first, as tests 1 and 2 arrange (then `count`
 *   stays 0, which kvm-unit-tests accepts). Reading the header drains that eventfd.
 */
import type { AccessSize } from "../devices/device.js";
import type { IoEventOptions } from "../hypervisor/hypervisor.js";
import { PciConfigSpace } from "./config-space.js";
import type { BarPlacement, PciDevice, PciSlotServices } from "./pci-device.js";

export const PCI_TESTDEV_VENDOR_ID = 0x1b36;
export const PCI_TESTDEV_DEVICE_ID = 0x0005;
export const PCI_TESTDEV_MEMORY_BAR = 0;
export const PCI_TESTDEV_IO_BAR = 1;
const MEMORY_TEST_SIZE = 2048;
const IO_TEST_SIZE = 128;
const DATA_MATCH = 0xfa;
const NO_MATCH = 0xce;
const TEST_NAMES = ["no-eventfd", "wildcard-eventfd", "datamatch-eventfd"] as const;
const TYPE_NAMES = ["mmio", "portio"] as const;

const Header = { test: 0, width: 1, offset: 4, data: 8, count: 12, name: 16 } as const;

interface IoTest {
  header: Uint8Array;
  view: DataView;
  bar: number;
  offset: number;
  matchData: boolean;
  data: number;
  usesEventFd: boolean;
  eventFd?: number;
  /** Where its eventfd is attached now. */
  attached?: IoEventOptions;
}

export class PciTestdev implements PciDevice {
  readonly name = "pci-testdev";
  // QEMU gives it class_id PCI_CLASS_OTHERS (0x00ff): base class 0x00, subclass 0xff.
  readonly config = new PciConfigSpace({ vendorId: PCI_TESTDEV_VENDOR_ID, deviceId: PCI_TESTDEV_DEVICE_ID, classCode: 0x00_ff_00 });
  private readonly tests: IoTest[] = [];
  private current = -1;
  private slot: PciSlotServices | undefined;
  private placements: readonly (BarPlacement | undefined)[] = [];

  constructor() {
    this.config.defineBar(PCI_TESTDEV_MEMORY_BAR, { kind: "memory32", size: MEMORY_TEST_SIZE * 2 });
    this.config.defineBar(PCI_TESTDEV_IO_BAR, { kind: "io", size: IO_TEST_SIZE * 2 });
    for (let index = 0; index < TYPE_NAMES.length * TEST_NAMES.length; index++) {
      const kind = Math.floor(index / TEST_NAMES.length);
      const which = TEST_NAMES[index % TEST_NAMES.length];
      const name = `${TYPE_NAMES[kind]}-${which}`;
      const header = new Uint8Array(Header.name + name.length + 1);
      const view = new DataView(header.buffer);
      const matchData = which !== "wildcard-eventfd";
      const offset = (kind === 0 ? MEMORY_TEST_SIZE : IO_TEST_SIZE) + index;
      header[Header.test] = index;
      header[Header.width] = 1;
      view.setUint32(Header.offset, offset, true);
      header[Header.data] = matchData ? DATA_MATCH : NO_MATCH;
      for (let i = 0; i < name.length; i++) header[Header.name + i] = name.charCodeAt(i);
      this.tests.push({
        header, view, bar: kind === 0 ? PCI_TESTDEV_MEMORY_BAR : PCI_TESTDEV_IO_BAR, offset, matchData,
        data: header[Header.data], usesEventFd: which !== "no-eventfd",
      });
    }
  }

  /** The running test's count register (writes that reached the device). */
  get count(): number {
    return this.current < 0 ? 0 : this.tests[this.current].view.getUint32(Header.count, true);
  }

  plugged(slot: PciSlotServices): void {
    this.slot = slot;
  }

  barsChanged(placements: readonly (BarPlacement | undefined)[]): void {
    this.placements = placements;
    if (this.current >= 0) this.placeEventFd(this.tests[this.current]);
  }

  barRead(_bar: number, offset: number, size: AccessSize): number {
    let value = 0;
    for (let i = 0; i < Math.min(size, 4); i++) value |= this.readByte(offset + i) << (i * 8);
    return value >>> 0;
  }

  barWrite(bar: number, offset: number, size: AccessSize, value: number, high: number): void {
    for (let i = 0; i < size; i++) this.writeByte(bar, offset + i, (i < 4 ? value >>> (i * 8) : high >>> ((i - 4) * 8)) & 0xff);
  }

  private readByte(offset: number): number {
    if (this.current < 0) return 0;
    const test = this.tests[this.current];
    // QEMU leaves the terminating NUL out of reach too (addr + size >= bufsize reads 0).
    if (offset + 1 >= test.header.length) return 0;
    if (test.eventFd !== undefined && test.attached !== undefined) this.slot?.drainIoEvent(test.eventFd);
    return test.header[offset];
  }

  private writeByte(bar: number, offset: number, byte: number): void {
    if (offset === Header.test) {
      this.stop();
      if (byte >= TEST_NAMES.length) return;
      const index = (bar === PCI_TESTDEV_MEMORY_BAR ? 0 : 1) * TEST_NAMES.length + byte;
      const test = this.tests[index];
      test.view.setUint32(Header.count, 0, true);
      this.current = index;
      if (test.usesEventFd) {
        if (test.eventFd !== undefined) this.slot?.drainIoEvent(test.eventFd);
        this.placeEventFd(test);
      }
      return;
    }
    if (this.current < 0) return;
    const test = this.tests[this.current];
    if (offset !== test.offset || bar !== test.bar) return;
    if (test.matchData && byte !== test.data) return;
    test.view.setUint32(Header.count, (test.view.getUint32(Header.count, true) + 1) >>> 0, true);
  }

  private stop(): void {
    if (this.current < 0) return;
    this.detachEventFd(this.tests[this.current]);
    this.current = -1;
  }

  /** Attaches the test's eventfd where its register decodes now (nowhere: detached). */
  private placeEventFd(test: IoTest): void {
    if (!test.usesEventFd || this.slot === undefined) return;
    this.detachEventFd(test);
    const placement = this.placements[test.bar];
    if (placement === undefined) return;
    const options: IoEventOptions = {
      space: placement.space, address: placement.address + test.offset, size: 1,
      ...(test.matchData ? { value: test.data } : {}),
    };
    try {
      test.eventFd = this.slot.attachIoEvent(options, test.eventFd);
      test.attached = options;
    } catch {
      // A backend without runtime ioeventfds: the writes reach barWrite and are counted,
      // which kvm-unit-tests accepts as well (count 16 instead of 0).
      test.attached = undefined;
    }
  }

  private detachEventFd(test: IoTest): void {
    if (test.attached === undefined || test.eventFd === undefined) return;
    this.slot?.detachIoEvent(test.attached, test.eventFd);
    test.attached = undefined;
  }
}

