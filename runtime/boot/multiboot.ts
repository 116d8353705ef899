import { PAGE_SIZE, type GuestMemory } from "../../memory/guest-memory.js";
import { pcMemoryMap } from "./pc-memory-map.js";

/**
 * Multiboot v1 kernel loader (Multiboot Specification 0.6.96): identifies the kernel
 * image, loads it into guest RAM and builds the Multiboot information structure, leaving
 * the vCPU to be started in 32-bit protected mode at `entry` with EAX/EBX as returned.
 *
 * Supported: ELF32 x86 kernels with a multiboot header, and "a.out kludge" kernels (header
 * flag bit 16: the header's own address fields say where the file goes, whatever its
 * container). Recognised and rejected with a message that names them: ELF64 without the
 * kludge, ELF for another machine, Linux bzImage, Multiboot2-only images.
 */

/** The value the boot loader leaves in EAX (spec 3.2). */
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
/** The first word of the kernel's multiboot header (spec 3.1.1). */
export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
/** The header must lie, 4-byte aligned, within this many bytes of the file start. */
export const MULTIBOOT_SEARCH_LIMIT = 8192;

const MULTIBOOT2_HEADER_MAGIC = 0xe85250d6;
const MULTIBOOT2_SEARCH_LIMIT = 32768;

/** Multiboot header layout (spec 3.1.2). */
const MB_HEADER = {
  magic: 0,
  flags: 4,
  checksum: 8,
  header_addr: 12,
  load_addr: 16,
  load_end_addr: 20,
  bss_end_addr: 24,
  entry_addr: 28,
  sizeWithAddress: 32,
} as const;

/** Multiboot header flag bits (spec 3.1.2). Bits 0-15 are requirements, 16-31 optional. */
const HEADER_FLAG = {
  pageAlignModules: 1 << 0,
  memoryInfo: 1 << 1,
  videoMode: 1 << 2,
  requiredMask: 0xffff,
  addressFields: 1 << 16,
} as const;
/** Required bits this loader satisfies; video (bit 2) is satisfied by leaving text mode. */
const UNDERSTOOD_REQUIRED = HEADER_FLAG.pageAlignModules | HEADER_FLAG.memoryInfo | HEADER_FLAG.videoMode;

/** Multiboot information structure layout (spec 3.3), through the VBE fields. */
const MB_INFO = {
  flags: 0,
  mem_lower: 4,
  mem_upper: 8,
  boot_device: 12,
  cmdline: 16,
  mods_count: 20,
  mods_addr: 24,
  syms: 28,
  mmap_length: 44,
  mmap_addr: 48,
  drives_length: 52,
  drives_addr: 56,
  config_table: 60,
  boot_loader_name: 64,
  apm_table: 68,
  size: 88,
} as const;

/** Bits of MB_INFO.flags saying which fields are valid. */
const INFO_FLAG = {
  memory: 1 << 0,
  cmdline: 1 << 2,
  mods: 1 << 3,
  mmap: 1 << 6,
  bootLoaderName: 1 << 9,
} as const;

/** One entry of the module list (spec 3.3). */
const MB_MODULE = { mod_start: 0, mod_end: 4, string: 8, reserved: 12, size: 16 } as const;

/** One memory map entry; `size` counts the bytes after itself (spec 3.3). */
const MB_MMAP = { size: 0, base_addr: 4, length: 12, type: 20, entrySize: 24 } as const;
const LOW_MEMORY_KB = 640;
const HIGH_MEMORY = 0x100000;

const BOOT_LOADER_NAME = "workervisor";

/** ELF identification and header fields (System V gABI), ELF32 layout. */
const ELF = {
  magic: [0x7f, 0x45, 0x4c, 0x46],
  ei_class: 4,
  ei_data: 5,
  classElf32: 1,
  classElf64: 2,
  dataLittleEndian: 1,
  e_machine: 18,
  e_entry: 24,
  e_phoff: 28,
  e_phentsize: 42,
  e_phnum: 44,
  headerSize32: 52,
  headerSize64: 64,
  machine386: 3,
  machineX86_64: 62,
} as const;

/** ELF32 program header. */
const PHDR = {
  p_type: 0,
  p_offset: 4,
  p_vaddr: 8,
  p_paddr: 12,
  p_filesz: 16,
  p_memsz: 20,
  size: 32,
  typeLoad: 1,
} as const;

/** Linux x86 boot protocol: "HdrS" at 0x202, boot sector signature at 0x1fe. */
const BZIMAGE_HEADER_OFFSET = 0x202;
const BZIMAGE_HEADER_MAGIC = 0x53726448;

const FOUR_GIB = 2 ** 32;

/** The kernel file cannot be loaded: unknown or unsupported format, or malformed. */
export class KernelFormatError extends Error {
  override name = "KernelFormatError";
  readonly fileName: string | undefined;
  readonly detail: string;

  constructor(detail: string, fileName?: string) {
    super(fileName === undefined ? detail : `${fileName}: ${detail}`);
    this.fileName = fileName;
    this.detail = detail;
  }
}

/** The parsed multiboot header of a kernel image. */
export interface MultibootHeader {
  /** File offset of the magic word. */
  offset: number;
  flags: number;
  /** Present when flags bit 16 is set. */
  address?: {
    header_addr: number;
    load_addr: number;
    load_end_addr: number;
    bss_end_addr: number;
    entry_addr: number;
  };
}

export type KernelFormat =
  | { format: "multiboot-elf32"; header: MultibootHeader }
  | { format: "multiboot-aout-kludge"; header: MultibootHeader & { address: NonNullable<MultibootHeader["address"]> } }
  | {
      /** What the file was recognised as; `raw` means no container format was found. */
      format: "elf32" | "elf64" | "elf" | "bzimage" | "multiboot2" | "raw";
      /** Why it cannot be loaded. */
      reason: string;
    };

export interface MultibootModule {
  /** The module's string (its command line); QEMU uses the file name. */
  name: string;
  data: Uint8Array;
}

export interface MultibootOptions {
  /** Used only in error messages. */
  fileName?: string;
  /** The whole command line, as the guest will see it (conventionally `${file} ${append}`). */
  cmdline?: string;
  modules?: readonly MultibootModule[];
}

export interface MultibootEntry {
  /** Guest-physical address to start executing at, in 32-bit protected mode. */
  entry: number;
  /** MULTIBOOT_BOOTLOADER_MAGIC. */
  eax: number;
  /** Guest-physical address of the Multiboot information structure. */
  ebx: number;
  /** First free byte after the kernel, the information structure and the modules. */
  kernelEnd: number;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

function u32(image: Uint8Array, offset: number): number {
  return (image[offset] | (image[offset + 1] << 8) | (image[offset + 2] << 16) | (image[offset + 3] << 24)) >>> 0;
}

function u16(image: Uint8Array, offset: number): number {
  return image[offset] | (image[offset + 1] << 8);
}

const alignUp = (n: number, align: number): number => Math.ceil(n / align) * align;

type HeaderSearch =
  | { kind: "found"; header: MultibootHeader }
  | { kind: "bad-checksum"; offset: number; sum: number }
  | { kind: "cut-off"; offset: number }
  | { kind: "none" };

/** Finds the first 4-byte-aligned multiboot header with a valid checksum (spec 3.1.1). */
function findMultibootHeader(image: Uint8Array): HeaderSearch {
  let firstBad: HeaderSearch = { kind: "none" };
  const limit = Math.min(MULTIBOOT_SEARCH_LIMIT, image.length) - 12;
  for (let offset = 0; offset <= limit; offset += 4) {
    if (u32(image, offset) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = u32(image, offset + MB_HEADER.flags);
    const sum = (MULTIBOOT_HEADER_MAGIC + flags + u32(image, offset + MB_HEADER.checksum)) >>> 0;
    if (sum !== 0) {
      // The magic word may occur by chance; only complain if no valid header follows.
      if (firstBad.kind === "none") firstBad = { kind: "bad-checksum", offset, sum };
      continue;
    }
    if ((flags & HEADER_FLAG.addressFields) === 0) return { kind: "found", header: { offset, flags } };
    if (offset + MB_HEADER.sizeWithAddress > image.length) return { kind: "cut-off", offset };
    return {
      kind: "found",
      header: {
        offset,
        flags,
        address: {
          header_addr: u32(image, offset + MB_HEADER.header_addr),
          load_addr: u32(image, offset + MB_HEADER.load_addr),
          load_end_addr: u32(image, offset + MB_HEADER.load_end_addr),
          bss_end_addr: u32(image, offset + MB_HEADER.bss_end_addr),
          entry_addr: u32(image, offset + MB_HEADER.entry_addr),
        },
      },
    };
  }
  return firstBad;
}

function hasMultiboot2Header(image: Uint8Array): boolean {
  const limit = Math.min(MULTIBOOT2_SEARCH_LIMIT, image.length) - 16;
  for (let offset = 0; offset <= limit; offset += 8) {
    if (u32(image, offset) !== MULTIBOOT2_HEADER_MAGIC) continue;
    const sum = u32(image, offset) + u32(image, offset + 4) + u32(image, offset + 8) + u32(image, offset + 12);
    if (sum % FOUR_GIB === 0) return true;
  }
  return false;
}

function isBzImage(image: Uint8Array): boolean {
  return image.length >= BZIMAGE_HEADER_OFFSET + 4 && u32(image, BZIMAGE_HEADER_OFFSET) === BZIMAGE_HEADER_MAGIC;
}

function machineName(machine: number): string {
  if (machine === ELF.machineX86_64) return "x86-64";
  if (machine === ELF.machine386) return "x86";
  return `e_machine ${machine}`;
}

/** Identifies a kernel image. Never throws; unloadable formats carry a `reason`. */
export function detectKernelFormat(image: Uint8Array): KernelFormat {
  const search = findMultibootHeader(image);
  const isElf = image.length >= 4 && ELF.magic.every((b, i) => image[i] === b);

  if (search.kind === "found" && search.header.address !== undefined) {
    // Spec 3.1.3: with bit 16 the header's addresses are used instead of the executable's.
    return { format: "multiboot-aout-kludge", header: { ...search.header, address: search.header.address } };
  }
  const badHeader =
    search.kind === "bad-checksum"
      ? `multiboot header checksum wrong at file offset ${hex(search.offset)} ` +
        `(magic + flags + checksum = ${hex(search.sum)}, must be 0)`
      : search.kind === "cut-off"
        ? `multiboot header at file offset ${hex(search.offset)} is cut off by the end of the file (truncated?)`
        : undefined;

  if (isElf) {
    const elfClass = image.length > ELF.ei_class ? image[ELF.ei_class] : 0;
    if (elfClass !== ELF.classElf32 && elfClass !== ELF.classElf64) {
      return { format: "elf", reason: `ELF file of unknown class ${elfClass} (expected ELF32)` };
    }
    const format = elfClass === ELF.classElf32 ? "elf32" : "elf64";
    const headerSize = elfClass === ELF.classElf32 ? ELF.headerSize32 : ELF.headerSize64;
    if (image.length < headerSize) {
      return {
        format,
        reason: `ELF header truncated: the file has ${image.length} bytes, an ${format.toUpperCase()} header needs ${headerSize}`,
      };
    }
    if (badHeader !== undefined) return { format, reason: badHeader };
    if (search.kind !== "found") {
      if (hasMultiboot2Header(image)) {
        return { format: "multiboot2", reason: "Multiboot2 kernel: only Multiboot v1 kernels are supported" };
      }
      return {
        format,
        reason:
          `${format.toUpperCase()} file without a multiboot header in the first ${MULTIBOOT_SEARCH_LIMIT} bytes: ` +
          "only Multiboot v1 kernels are supported",
      };
    }
    if (elfClass === ELF.classElf64) {
      return {
        format,
        reason:
          "ELF64 multiboot kernels are not supported: Multiboot v1 loads ELF32 files " +
          "(or set the header's address fields, flag bit 16)",
      };
    }
    if (image[ELF.ei_data] !== ELF.dataLittleEndian) {
      return { format, reason: "big-endian ELF32 file: an x86 kernel must be little-endian" };
    }
    const machine = u16(image, ELF.e_machine);
    if (machine !== ELF.machine386) {
      return { format, reason: `ELF32 file for ${machineName(machine)}, not x86 (EM_386)` };
    }
    return { format: "multiboot-elf32", header: search.header };
  }

  if (search.kind === "found") {
    return {
      format: "raw",
      reason:
        `not an ELF file, and its multiboot header (file offset ${hex(search.header.offset)}) ` +
        "has no address fields (flag bit 16): nothing says where to load it",
    };
  }
  if (badHeader !== undefined) return { format: "raw", reason: badHeader };
  if (isBzImage(image)) {
    return { format: "bzimage", reason: "bzImage found: Linux boot protocol not supported by this loader" };
  }
  if (hasMultiboot2Header(image)) {
    return { format: "multiboot2", reason: "Multiboot2 kernel: only Multiboot v1 kernels are supported" };
  }
  return {
    format: "raw",
    reason: `not an ELF file and no multiboot header in the first ${MULTIBOOT_SEARCH_LIMIT} bytes`,
  };
}

/** A piece of the image to place at `gpa`: `fileSize` bytes from the file, then zeroes. */
interface Segment {
  label: string;
  gpa: number;
  fileOffset: number;
  fileSize: number;
  memSize: number;
}

interface LoadPlan {
  segments: Segment[];
  entry: number;
}

function planElf32(image: Uint8Array, fail: (detail: string) => KernelFormatError): LoadPlan {
  const phoff = u32(image, ELF.e_phoff);
  const phentsize = u16(image, ELF.e_phentsize);
  const phnum = u16(image, ELF.e_phnum);
  const entry = u32(image, ELF.e_entry);
  if (phnum === 0) throw fail("ELF32 file has no program headers");
  if (phentsize < PHDR.size) throw fail(`ELF32 program header size ${phentsize} is smaller than ${PHDR.size}`);
  if (phoff + phnum * phentsize > image.length) {
    throw fail(
      `ELF32 program headers [${hex(phoff)}, ${hex(phoff + phnum * phentsize)}) run past the end of the ` +
        `file (${image.length} bytes): the file is truncated`,
    );
  }

  const segments: Segment[] = [];
  let physicalEntry: number | undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (u32(image, ph + PHDR.p_type) !== PHDR.typeLoad) continue;
    const fileOffset = u32(image, ph + PHDR.p_offset);
    const vaddr = u32(image, ph + PHDR.p_vaddr);
    const gpa = u32(image, ph + PHDR.p_paddr);
    const fileSize = u32(image, ph + PHDR.p_filesz);
    const memSize = u32(image, ph + PHDR.p_memsz);
    const label = `segment ${i}`;
    if (fileSize > memSize) {
      throw fail(`${label}: file size ${fileSize} exceeds its memory size ${memSize}`);
    }
    if (fileOffset + fileSize > image.length) {
      throw fail(
        `${label}: file bytes [${hex(fileOffset)}, ${hex(fileOffset + fileSize)}) run past the end of the ` +
          `file (${image.length} bytes): the file is truncated`,
      );
    }
    if (memSize === 0) continue;
    // The entry point is a virtual address; boot starts with paging off, so translate it.
    if (physicalEntry === undefined && entry >= vaddr && entry < vaddr + memSize) {
      physicalEntry = entry - vaddr + gpa;
    }
    segments.push({ label, gpa, fileOffset, fileSize, memSize });
  }
  if (segments.length === 0) throw fail("ELF32 file has no loadable (PT_LOAD) segments");
  if (physicalEntry === undefined) throw fail(`entry point ${hex(entry)} is not inside any loadable segment`);
  return { segments, entry: physicalEntry };
}

function planAoutKludge(
  image: Uint8Array,
  header: MultibootHeader & { address: NonNullable<MultibootHeader["address"]> },
  fail: (detail: string) => KernelFormatError,
): LoadPlan {
  const { header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr } = header.address;
  if (load_addr > header_addr) {
    throw fail(`multiboot load_addr ${hex(load_addr)} is above header_addr ${hex(header_addr)}`);
  }
  // Spec 3.1.3: the header's file offset and header_addr pin the file to memory.
  const fileOffset = header.offset - (header_addr - load_addr);
  if (fileOffset < 0) {
    throw fail(
      `multiboot load_addr ${hex(load_addr)} would start ${-fileOffset} bytes before the beginning of the file`,
    );
  }
  const loadEnd = load_end_addr === 0 ? load_addr + (image.length - fileOffset) : load_end_addr;
  if (loadEnd < load_addr) {
    throw fail(`multiboot load_end_addr ${hex(loadEnd)} is below load_addr ${hex(load_addr)}`);
  }
  const fileSize = loadEnd - load_addr;
  if (fileOffset + fileSize > image.length) {
    throw fail(
      `multiboot load range [${hex(load_addr)}, ${hex(loadEnd)}) needs file bytes up to ${hex(fileOffset + fileSize)}, ` +
        `but the file has ${image.length} bytes: the file is truncated`,
    );
  }
  const bssEnd = bss_end_addr === 0 ? loadEnd : bss_end_addr;
  if (bssEnd < loadEnd) {
    throw fail(`multiboot bss_end_addr ${hex(bssEnd)} is below load_end_addr ${hex(loadEnd)}`);
  }
  if (entry_addr < load_addr || entry_addr >= bssEnd) {
    throw fail(`multiboot entry_addr ${hex(entry_addr)} is outside the loaded image [${hex(load_addr)}, ${hex(bssEnd)})`);
  }
  return {
    segments: [{ label: "image", gpa: load_addr, fileOffset, fileSize, memSize: bssEnd - load_addr }],
    entry: entry_addr,
  };
}

function sortedRegions(memory: GuestMemory): { gpa: number; end: number }[] {
  return memory.regions.map((r) => ({ gpa: r.gpa, end: r.gpa + r.size })).sort((a, b) => a.gpa - b.gpa);
}

function describeRam(memory: GuestMemory): string {
  return `guest RAM is ${sortedRegions(memory)
    .map((r) => `[${hex(r.gpa)}, ${hex(r.end)})`)
    .join(", ")}`;
}

/** Bytes of RAM from `gpa` up to the first address not backed (across adjacent regions). */
function contiguousFrom(memory: GuestMemory, gpa: number): number {
  let end = gpa;
  for (const r of sortedRegions(memory)) {
    if (r.gpa <= end && r.end > end) end = r.end;
  }
  return end - gpa;
}

function cString(text: string, what: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  if (bytes.includes(0)) throw new TypeError(`multiboot ${what} must not contain a NUL character`);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * Loads a Multiboot v1 kernel and its modules into guest RAM and builds the Multiboot
 * information structure above the kernel. Everything is validated before the first byte
 * is written, so a failed load leaves guest memory untouched.
 *
 * Header flags: bit 0 (page-aligned modules) and bit 1 (memory information) are always
 * satisfied; bit 2 (video mode) is ignored, the guest stays in text mode; any other
 * required bit (3-15) is refused.
 */
export function loadMultiboot(memory: GuestMemory, image: Uint8Array, options: MultibootOptions = {}): MultibootEntry {
  const fail = (detail: string): KernelFormatError => new KernelFormatError(detail, options.fileName);

  const detected = detectKernelFormat(image);
  if (!("header" in detected)) throw fail(detected.reason);
  const { header } = detected;

  const unknownRequired = header.flags & HEADER_FLAG.requiredMask & ~UNDERSTOOD_REQUIRED;
  if (unknownRequired !== 0) {
    const bits = [...Array(16).keys()].filter((bit) => unknownRequired & (1 << bit));
    throw fail(
      `multiboot header requires features this loader does not provide (flag bit${bits.length > 1 ? "s" : ""} ` +
        `${bits.join(", ")}); only bits 0-2 are understood`,
    );
  }

  const plan = detected.format === "multiboot-elf32" ? planElf32(image, fail) : planAoutKludge(image, detected.header, fail);

  for (const s of plan.segments) {
    if (!memory.isBacked(s.gpa, s.memSize)) {
      throw fail(`${s.label} at ${hex(s.gpa)} (+${s.memSize} bytes) lies outside guest RAM (${describeRam(memory)})`);
    }
  }

  // Lay out the boot information above the highest loaded byte, where the kernel's own
  // image and bss cannot overwrite it.
  const kernelTop = Math.max(...plan.segments.map((s) => s.gpa + s.memSize));
  const base = alignUp(kernelTop, PAGE_SIZE);
  let cursor = base;
  const take = (size: number, align: number): number => {
    cursor = alignUp(cursor, align);
    const at = cursor;
    cursor += size;
    return at;
  };

  const modules = options.modules ?? [];
  const mmap = pcMemoryMap(memory);
  const cmdline = cString(options.cmdline ?? "", "command line");
  const loaderName = cString(BOOT_LOADER_NAME, "boot loader name");
  const moduleStrings = modules.map((m, i) => cString(m.name, `module ${i} name`));

  const infoAt = take(MB_INFO.size, 8);
  const modsAt = take(modules.length * MB_MODULE.size, 8);
  const mmapAt = take(mmap.length * MB_MMAP.entrySize, 8);
  const cmdlineAt = take(cmdline.length, 1);
  const loaderNameAt = take(loaderName.length, 1);
  const moduleStringAt = moduleStrings.map((s) => take(s.length, 1));
  // Always page-aligned, which satisfies header flag bit 0 whether or not it is set.
  const moduleAt = modules.map((m) => take(m.data.length, PAGE_SIZE));
  const end = cursor;

  if (end > FOUR_GIB || !memory.isBacked(base, end - base)) {
    throw fail(
      `no room in guest RAM for the multiboot information, command line and modules: they need ` +
        `[${hex(base)}, ${hex(end)}) above the kernel, but ${describeRam(memory)} ` +
        "(and it must lie below 4 GiB); give the VM more memory",
    );
  }

  for (const s of plan.segments) {
    memory.write(s.gpa, image.subarray(s.fileOffset, s.fileOffset + s.fileSize));
    memory.fill(s.gpa + s.fileSize, s.memSize - s.fileSize, 0);
  }

  memory.fill(base, end - base, 0);
  modules.forEach((m, i) => {
    memory.write(moduleAt[i], m.data);
    memory.write(moduleStringAt[i], moduleStrings[i]);
    const entry = modsAt + i * MB_MODULE.size;
    memory.writeU32(entry + MB_MODULE.mod_start, moduleAt[i]);
    memory.writeU32(entry + MB_MODULE.mod_end, moduleAt[i] + m.data.length);
    memory.writeU32(entry + MB_MODULE.string, moduleStringAt[i]);
    memory.writeU32(entry + MB_MODULE.reserved, 0);
  });
  mmap.forEach((e, i) => {
    const at = mmapAt + i * MB_MMAP.entrySize;
    memory.writeU32(at + MB_MMAP.size, MB_MMAP.entrySize - 4);
    memory.writeU64(at + MB_MMAP.base_addr, BigInt(e.address));
    memory.writeU64(at + MB_MMAP.length, BigInt(e.size));
    memory.writeU32(at + MB_MMAP.type, e.type);
  });
  memory.write(cmdlineAt, cmdline);
  memory.write(loaderNameAt, loaderName);

  const memLower = Math.min(LOW_MEMORY_KB, Math.floor(contiguousFrom(memory, 0) / 1024));
  const memUpper = Math.min(0xffff_ffff, Math.floor(contiguousFrom(memory, HIGH_MEMORY) / 1024));
  memory.writeU32(
    infoAt + MB_INFO.flags,
    INFO_FLAG.memory | INFO_FLAG.cmdline | INFO_FLAG.mods | INFO_FLAG.mmap | INFO_FLAG.bootLoaderName,
  );
  memory.writeU32(infoAt + MB_INFO.mem_lower, memLower);
  memory.writeU32(infoAt + MB_INFO.mem_upper, memUpper);
  memory.writeU32(infoAt + MB_INFO.cmdline, cmdlineAt);
  memory.writeU32(infoAt + MB_INFO.mods_count, modules.length);
  memory.writeU32(infoAt + MB_INFO.mods_addr, modsAt);
  memory.writeU32(infoAt + MB_INFO.mmap_length, mmap.length * MB_MMAP.entrySize);
  memory.writeU32(infoAt + MB_INFO.mmap_addr, mmapAt);
  memory.writeU32(infoAt + MB_INFO.boot_loader_name, loaderNameAt);

  return { entry: plan.entry, eax: MULTIBOOT_BOOTLOADER_MAGIC, ebx: infoAt, kernelEnd: end };
}
