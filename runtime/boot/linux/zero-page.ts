/**
 * The zero page (struct boot_params, Documentation/arch/x86/zero-page.rst): what a 64-bit
 * Linux entry finds through RSI: the setup header, the e820 map, where the command line and
 * initrd are, and where the ACPI RSDP is.
 */
import type { GuestMemory } from "../../../memory/guest-memory.js";
import { SetupHeaderOffset } from "./setup-header.js";

export const ZeroPageOffset = {
  acpi_rsdp_addr: 0x070,
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  sentinel: 0x1ef,
  e820_table: 0x2d0,
} as const;

export const ZERO_PAGE_SIZE = 0x1000;
const E820_ENTRY_SIZE = 20;
/** E820_MAX_ENTRIES_ZEROPAGE. */
export const E820_MAX_ENTRIES = 128;
/** "undefined" in boot.rst's type_of_loader table: a loader without an assigned ID. */
const LOADER_TYPE_UNDEFINED = 0xff;

import type { MemoryMapEntry as E820Entry } from "../pc-memory-map.js";
export { MemoryType as E820Type, type MemoryMapEntry as E820Entry } from "../pc-memory-map.js";

export interface ZeroPageContents {
  /** File bytes [0x1f1, headerEnd) of a bzImage, or a header made up for an ELF vmlinux. */
  setupHeader: Uint8Array;
  e820: readonly E820Entry[];
  cmdlineAddress: number;
  initrd?: { address: number; size: number };
  rsdpAddress: number;
}

const SETUP_DATA_OFFSET = 0x250;

/** Writes the zero page at `address`; the page is cleared first, so the sentinel reads 0. */
export function writeZeroPage(memory: GuestMemory, address: number, contents: ZeroPageContents): void {
  if (contents.e820.length > E820_MAX_ENTRIES) throw new RangeError(`zero page: ${contents.e820.length} e820 entries, at most ${E820_MAX_ENTRIES} fit`);
  const page = new Uint8Array(ZERO_PAGE_SIZE);
  const view = new DataView(page.buffer);
  page.set(contents.setupHeader, SetupHeaderOffset.setup_sects);
  const O = ZeroPageOffset;
  const H = SetupHeaderOffset;
  view.setUint8(H.type_of_loader, LOADER_TYPE_UNDEFINED);
  // setup_data (boot.rst: 0x250/8) is a pointer the kernel follows: the file's value means
  // nothing here, and this loader passes no setup_data list.
  view.setBigUint64(SETUP_DATA_OFFSET, 0n, true);
  view.setUint32(H.cmd_line_ptr, contents.cmdlineAddress % 2 ** 32, true);
  view.setUint32(O.ext_cmd_line_ptr, Math.floor(contents.cmdlineAddress / 2 ** 32), true);
  if (contents.initrd) {
    view.setUint32(H.ramdisk_image, contents.initrd.address % 2 ** 32, true);
    view.setUint32(O.ext_ramdisk_image, Math.floor(contents.initrd.address / 2 ** 32), true);
    view.setUint32(H.ramdisk_size, contents.initrd.size % 2 ** 32, true);
    view.setUint32(O.ext_ramdisk_size, Math.floor(contents.initrd.size / 2 ** 32), true);
  }
  view.setBigUint64(O.acpi_rsdp_addr, BigInt(contents.rsdpAddress), true);
  view.setUint8(O.e820_entries, contents.e820.length);
  contents.e820.forEach((entry, i) => {
    const at = O.e820_table + i * E820_ENTRY_SIZE;
    view.setBigUint64(at, BigInt(entry.address), true);
    view.setBigUint64(at + 8, BigInt(entry.size), true);
    view.setUint32(at + 16, entry.type, true);
  });
  memory.write(address, page);
}
