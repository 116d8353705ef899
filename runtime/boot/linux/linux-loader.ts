/**
 * Loads a Linux x86-64 kernel for the 64-bit boot protocol: a bzImage, whose payload is by
 * default decompressed here on the host and loaded as the vmlinux ELF it is, or entered at
 * its own decompressor (code32_start + 0x200) on request; or an ELF vmlinux directly.
 * Then the initrd, command line and zero page, and the boot vCPU's state.
 */
import type { CpuState } from "../../hypervisor/x86/cpu-state.js";
import type { GuestMemory } from "../../../memory/guest-memory.js";
import { EM_X86_64, isElf, parseElf64, ElfFormatError } from "./elf64.js";
import { hasSetupHeader, parseSetupHeader, payloadOf, BzImageError, SetupHeaderOffset, type SetupHeader } from "./setup-header.js";
import { hostCanDecompress, payloadFormat, type PayloadFormat } from "./payload.js";
import { decompressedKernel } from "./kernel-cache.js";
import { writeZeroPage, type E820Entry } from "./zero-page.js";
import { pcE820Map } from "./e820-map.js";
import { linux64EntryState, LinuxBootLayout } from "./linux-cpu.js";
import { detectKernelFormat } from "../multiboot.js";

export type LinuxKernelFormat = "bzImage" | "vmlinux";
export type Decompression = "host" | "guest";

export class LinuxLoadError extends Error {
  override name = "LinuxLoadError";
}

export interface LinuxBootOptions {
  kernel: Uint8Array;
  fileName?: string;
  initrd?: Uint8Array;
  cmdline?: string;
  /** Where the machine put the ACPI RSDP, passed as acpi_rsdp_addr. */
  rsdpAddress: number;
  /** bzImage only: "host" (default) decompresses the payload here; "guest" runs the kernel's decompressor. */
  decompression?: Decompression;
  /** Folder for decompressed kernels; undefined disables the cache. */
  cacheDir?: string;
}

export interface LinuxBoot {
  cpuState: CpuState;
  format: LinuxKernelFormat;
  /** How the kernel was entered: the vmlinux's entry (decompressed here) or the bzImage's decompressor. */
  entryPath: "vmlinux" | "bzImage decompressor";
  payloadFormat?: PayloadFormat;
  decompressedFromCache: boolean;
  e820: E820Entry[];
  /** acpi_rsdp_addr as written to the zero page. */
  rsdpAddress: number;
  cmdline: string;
  kernelRange: { start: number; end: number };
  initrd?: { address: number; size: number };
  /** Things the caller may want to tell the user (a fallback taken, a cache not written). */
  notes: string[];
}

/** The kernel's 64-bit entry in the protected-mode image, 0x200 past its start (boot.rst). */
const ENTRY_64_OFFSET = 0x200;
const PAGE = 0x1000;
const LOW_MEMORY_END = 0x10_0000;
/** A vmlinux has no setup header; these are what Linux's own x86-64 defaults are. */
const VMLINUX_CMDLINE_SIZE = 2047;
const VMLINUX_INITRD_ADDR_MAX = 0x7fff_ffff;

const hex = (value: number) => `0x${value.toString(16)}`;
const alignUp = (value: number, align: number) => Math.ceil(value / align) * align;
const alignDown = (value: number, align: number) => Math.floor(value / align) * align;

export function isBzImage(image: Uint8Array): boolean {
  return hasSetupHeader(image);
}

/** An x86-64 ELF (with no multiboot header: the caller checks that first). */
export function isElf64Kernel(image: Uint8Array): boolean {
  return isElf(image) && image.length > 20 && image[4] === 2 && (image[18] | (image[19] << 8)) === EM_X86_64;
}

function lowRamEnd(memory: GuestMemory): number {
  const low = memory.regions.find((region) => region.gpa === 0);
  if (!low) throw new LinuxLoadError("Linux needs guest RAM starting at address 0");
  return low.gpa + low.size;
}

function ramDescription(memory: GuestMemory): string {
  return memory.regions.map((r) => `[${hex(r.gpa)}, ${hex(r.gpa + r.size)})`).join(" ");
}

/** Loads the vmlinux's PT_LOAD segments at their physical addresses; returns its entry and extent. */
function loadVmlinux(memory: GuestMemory, vmlinux: Uint8Array, what: string): { entry: number; start: number; end: number } {
  let elf;
  try {
    elf = parseElf64(vmlinux, what);
  } catch (error) {
    if (error instanceof ElfFormatError) throw new LinuxLoadError(error.message, { cause: error });
    throw error;
  }
  if (elf.machine !== EM_X86_64) throw new LinuxLoadError(`${what}: e_machine ${elf.machine} is not x86-64 (62)`);
  if (elf.loadSegments.length === 0) throw new LinuxLoadError(`${what}: no PT_LOAD segments`);
  const start = Math.min(...elf.loadSegments.map((s) => s.physicalAddress));
  const end = Math.max(...elf.loadSegments.map((s) => s.physicalAddress + s.memorySize));
  for (const segment of elf.loadSegments) {
    if (!memory.isBacked(segment.physicalAddress, segment.memorySize)) {
      throw new LinuxLoadError(
        `${what}: a segment at ${hex(segment.physicalAddress)} (+${segment.memorySize} bytes) is outside guest RAM ${ramDescription(memory)}; give the VM more memory`,
      );
    }
  }
  for (const segment of elf.loadSegments) {
    memory.write(segment.physicalAddress, vmlinux.subarray(segment.fileOffset, segment.fileOffset + segment.fileSize));
    memory.fill(segment.physicalAddress + segment.fileSize, segment.memorySize - segment.fileSize, 0);
  }
  // The vmlinux's e_entry is startup_64's physical address (arch/x86/kernel/vmlinux.lds.S).
  if (elf.entry < start || elf.entry >= end) throw new LinuxLoadError(`${what}: entry ${hex(elf.entry)} is outside its segments [${hex(start)}, ${hex(end)})`);
  return { entry: elf.entry, start, end };
}

/** A minimal setup header for an ELF vmlinux, which carries none. */
function syntheticSetupHeader(): Uint8Array {
  const H = SetupHeaderOffset;
  const bytes = new Uint8Array(H.init_size + 4 - H.setup_sects);
  const view = new DataView(bytes.buffer);
  const at = (offset: number) => offset - H.setup_sects;
  view.setUint16(at(H.boot_flag), 0xaa55, true);
  view.setUint32(at(H.header), 0x53726448, true);
  view.setUint16(at(H.version), 0x20f, true);
  view.setUint32(at(H.initrd_addr_max), VMLINUX_INITRD_ADDR_MAX, true);
  view.setUint32(at(H.cmdline_size), VMLINUX_CMDLINE_SIZE, true);
  return bytes;
}

export function loadLinux(memory: GuestMemory, options: LinuxBootOptions): LinuxBoot {
  const name = options.fileName ?? "kernel";
  const image = options.kernel;
  const notes: string[] = [];
  const ramTop = lowRamEnd(memory);
  let header: SetupHeader | undefined;
  let setupHeaderBytes: Uint8Array;
  let entry: number;
  let kernelRange: { start: number; end: number };
  let entryPath: LinuxBoot["entryPath"];
  let format: LinuxKernelFormat;
  let compression: PayloadFormat | undefined;
  let fromCache = false;

  if (isBzImage(image)) {
    format = "bzImage";
    try {
      header = parseSetupHeader(image, name);
    } catch (error) {
      if (error instanceof BzImageError) throw new LinuxLoadError(error.message, { cause: error });
      throw error;
    }
    setupHeaderBytes = image.subarray(SetupHeaderOffset.setup_sects, header.headerEnd);
    const payload = payloadOf(image, header);
    compression = payloadFormat(payload);
    let decompression = options.decompression ?? "host";
    if (decompression === "host" && (compression === undefined || !hostCanDecompress(compression))) {
      notes.push(`${name}: the payload is ${compression ?? "of unknown format"}, which this host cannot decompress; using the kernel's own decompressor`);
      decompression = "guest";
    }
    // The decompressor wants the whole init_size area from an aligned start (boot.rst: pref_address).
    const loadAddress = header.relocatable ? alignUp(Math.max(header.prefAddress, 0x100000), header.kernelAlignment) : header.code32Start;
    const initEnd = loadAddress + header.initSize;
    if (initEnd > ramTop) {
      throw new LinuxLoadError(
        `${name}: the kernel needs RAM up to ${hex(initEnd)} (pref_address ${hex(loadAddress)} + init_size ${hex(header.initSize)}) but low RAM ends at ${hex(ramTop)}; give the VM more memory`,
      );
    }
    if (decompression === "host") {
      let decompressed;
      try {
        decompressed = decompressedKernel(payload, options.cacheDir);
      } catch (error) {
        throw new LinuxLoadError(`${name}: ${(error as Error).message}`, { cause: error });
      }
      fromCache = decompressed.cached;
      if (decompressed.cacheWriteError) notes.push(`kernel cache not written (${decompressed.cacheWriteError})`);
      const loaded = loadVmlinux(memory, decompressed.vmlinux, `${name} (decompressed payload)`);
      entry = loaded.entry;
      kernelRange = { start: Math.min(loaded.start, loadAddress), end: Math.max(loaded.end, initEnd) };
      entryPath = "vmlinux";
    } else {
      memory.write(loadAddress, image.subarray(header.setupBytes));
      entry = loadAddress + ENTRY_64_OFFSET;
      kernelRange = { start: loadAddress, end: initEnd };
      entryPath = "bzImage decompressor";
    }
  } else if (isElf64Kernel(image)) {
    format = "vmlinux";
    setupHeaderBytes = syntheticSetupHeader();
    const loaded = loadVmlinux(memory, image, name);
    entry = loaded.entry;
    kernelRange = { start: loaded.start, end: loaded.end };
    entryPath = "vmlinux";
  } else if (isElf(image)) {
    throw new LinuxLoadError(`${name}: an ELF file but not a 64-bit x86-64 one (EI_CLASS ${image[4]}); a 64-bit x86-64 kernel is needed`);
  } else {
    throw new LinuxLoadError(`${name}: neither a bzImage (no "HdrS" at offset 0x202) nor an ELF vmlinux (no \\x7fELF magic); is it a Linux kernel?`);
  }

  // Below 1 MiB sit the loader's own structures (GDT, zero page, page tables, command line)
  // and the ACPI tables: a kernel placed there would be overwritten, or overwrite them.
  if (kernelRange.start < LOW_MEMORY_END) {
    throw new LinuxLoadError(`${name}: the kernel loads at ${hex(kernelRange.start)}, below 1 MiB, where the boot structures live; a kernel must load at 1 MiB or above`);
  }

  const cmdline = options.cmdline ?? "";
  const cmdlineBytes = new TextEncoder().encode(cmdline);
  const cmdlineLimit = Math.min(header?.cmdlineSize ?? VMLINUX_CMDLINE_SIZE, LinuxBootLayout.CMDLINE_MAX - 1);
  if (cmdlineBytes.includes(0)) throw new LinuxLoadError("the kernel command line contains a NUL byte");
  if (cmdlineBytes.length > cmdlineLimit) {
    throw new LinuxLoadError(`the kernel command line is ${cmdlineBytes.length} bytes; this kernel takes at most ${cmdlineLimit} (cmdline_size)`);
  }
  memory.write(LinuxBootLayout.CMDLINE, cmdlineBytes);
  memory.writeU8(LinuxBootLayout.CMDLINE + cmdlineBytes.length, 0);

  let initrd: LinuxBoot["initrd"];
  if (options.initrd !== undefined) {
    const size = options.initrd.length;
    if (size === 0) throw new LinuxLoadError("the initrd is empty");
    const ceiling = Math.min(ramTop, (header?.initrdAddrMax ?? VMLINUX_INITRD_ADDR_MAX) + 1);
    const floor = alignUp(kernelRange.end, PAGE);
    const address = alignDown(ceiling - size, PAGE);
    if (address < floor) {
      throw new LinuxLoadError(
        `the initrd (${size} bytes) does not fit between the kernel's end ${hex(floor)} and ${hex(ceiling)} ` +
          `(the end of low RAM or initrd_addr_max); give the VM more memory or use a smaller initrd`,
      );
    }
    memory.write(address, options.initrd);
    initrd = { address, size };
  }

  const e820 = pcE820Map(memory);
  writeZeroPage(memory, LinuxBootLayout.ZERO_PAGE, {
    setupHeader: setupHeaderBytes,
    e820,
    cmdlineAddress: LinuxBootLayout.CMDLINE,
    initrd,
    rsdpAddress: options.rsdpAddress,
  });
  return {
    cpuState: linux64EntryState(memory, entry),
    format,
    entryPath,
    payloadFormat: compression,
    decompressedFromCache: fromCache,
    e820,
    rsdpAddress: options.rsdpAddress,
    cmdline,
    kernelRange,
    initrd,
    notes,
  };
}

/** A bzImage, or an x86-64 ELF without a multiboot header (those stay multiboot kernels). */
export function isLinuxKernel(image: Uint8Array): boolean {
  if (isBzImage(image)) return true;
  return isElf64Kernel(image) && !("header" in detectKernelFormat(image));
}
