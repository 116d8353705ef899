/**
 * The bzImage real-mode setup header (Documentation/arch/x86/boot.rst, "The Real-Mode
 * Kernel Header"), read and checked before anything is loaded. Offsets are file offsets,
 * which are also the offsets in the zero page where the header is copied.
 */

export const SetupHeaderOffset = {
  setup_sects: 0x1f1,
  boot_flag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  min_alignment: 0x235,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  payload_offset: 0x248,
  payload_length: 0x24c,
  pref_address: 0x258,
  init_size: 0x260,
} as const;

const HDRS = 0x53726448; // "HdrS"
const BOOT_FLAG = 0xaa55;
/** 2.06 brought cmdline_size; 2.10 pref_address and init_size; 2.12 xloadflags. */
const MIN_PROTOCOL = 0x20c;
const LOADFLAGS_LOADED_HIGH = 0x01;
const XLF_KERNEL_64 = 0x01;
const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;
/** The header ends at 0x202 + the byte at 0x201 (the jump's displacement). */
const HEADER_END_BASE = 0x202;
/** Old kernels leave setup_sects 0, meaning 4 (boot.rst). */
const DEFAULT_SETUP_SECTS = 4;

export class BzImageError extends Error {
  override name = "BzImageError";
}

export interface SetupHeader {
  /** Protocol version, e.g. 0x20f for 2.15. */
  version: number;
  loadflags: number;
  xloadflags: number;
  /** Bytes of the real-mode part (boot sector and setup), where the protected-mode kernel starts in the file. */
  setupBytes: number;
  /** File bytes [0x1f1, headerEnd) are the header, copied verbatim into the zero page. */
  headerEnd: number;
  code32Start: number;
  initrdAddrMax: number;
  kernelAlignment: number;
  relocatable: boolean;
  cmdlineSize: number;
  payloadOffset: number;
  payloadLength: number;
  prefAddress: number;
  initSize: number;
  canLoadAbove4G: boolean;
}

export function hasSetupHeader(image: Uint8Array): boolean {
  return image.length >= SetupHeaderOffset.header + 4 &&
    new DataView(image.buffer, image.byteOffset, image.byteLength).getUint32(SetupHeaderOffset.header, true) === HDRS;
}

const hex = (value: number) => `0x${value.toString(16)}`;

/** Reads and validates the setup header; every refusal names the field and what was wanted. */
export function parseSetupHeader(image: Uint8Array, fileName = "kernel"): SetupHeader {
  const fail = (detail: string) => new BzImageError(`${fileName}: ${detail}`);
  if (image.length < 0x270) throw fail(`${image.length} bytes is too short for a bzImage setup header (truncated?)`);
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const u8 = (at: number) => view.getUint8(at);
  const u16 = (at: number) => view.getUint16(at, true);
  const u32 = (at: number) => view.getUint32(at, true);
  const O = SetupHeaderOffset;
  if (u32(O.header) !== HDRS) throw fail(`no "HdrS" signature at offset ${hex(O.header)} (header field); not a Linux bzImage`);
  if (u16(O.boot_flag) !== BOOT_FLAG) throw fail(`boot_flag is ${hex(u16(O.boot_flag))}, expected 0xaa55`);
  const version = u16(O.version);
  if (version < MIN_PROTOCOL) {
    throw fail(`boot protocol version ${version >> 8}.${version & 0xff} is older than 2.12 (version field); a kernel from 3.8 or later is needed`);
  }
  const loadflags = u8(O.loadflags);
  if (!(loadflags & LOADFLAGS_LOADED_HIGH)) throw fail(`loadflags ${hex(loadflags)} lacks LOADED_HIGH (bit 0): a zImage loaded at 0x10000 is not supported`);
  const xloadflags = u16(O.xloadflags);
  if (!(xloadflags & XLF_KERNEL_64)) throw fail(`xloadflags ${hex(xloadflags)} lacks XLF_KERNEL_64 (bit 0): a 32-bit-only kernel; a 64-bit x86-64 kernel is needed`);
  const kernelAlignment = u32(O.kernel_alignment);
  if (kernelAlignment === 0 || (kernelAlignment & (kernelAlignment - 1)) !== 0) {
    throw fail(`kernel_alignment ${hex(kernelAlignment)} is not a power of two`);
  }
  const setupSects = u8(O.setup_sects) || DEFAULT_SETUP_SECTS;
  const setupBytes = (setupSects + 1) * 512;
  const headerEnd = HEADER_END_BASE + u8(O.jump + 1);
  if (headerEnd < O.init_size + 4) throw fail(`header length ${headerEnd - O.setup_sects} bytes (from the jump at 0x200) is shorter than protocol ${hex(version)} defines`);
  const payloadOffset = u32(O.payload_offset);
  const payloadLength = u32(O.payload_length);
  const protectedModeBytes = image.length - setupBytes;
  if (protectedModeBytes <= 0 || payloadOffset + payloadLength > protectedModeBytes) {
    throw fail(
      `the file is ${image.length} bytes but setup_sects (${setupSects}) and payload_offset/payload_length ` +
        `(${hex(payloadOffset)}/${hex(payloadLength)}) need ${setupBytes + payloadOffset + payloadLength}; the file is truncated`,
    );
  }
  const initSize = u32(O.init_size);
  if (initSize < protectedModeBytes) throw fail(`init_size ${hex(initSize)} is smaller than the ${protectedModeBytes}-byte protected-mode kernel`);
  return {
    version,
    loadflags,
    xloadflags,
    setupBytes,
    headerEnd,
    code32Start: u32(O.code32_start),
    initrdAddrMax: u32(O.initrd_addr_max),
    kernelAlignment,
    relocatable: u8(O.relocatable_kernel) !== 0,
    cmdlineSize: u32(O.cmdline_size),
    payloadOffset,
    payloadLength,
    prefAddress: Number(view.getBigUint64(O.pref_address, true)),
    initSize,
    canLoadAbove4G: (xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G) !== 0,
  };
}

/** The compressed vmlinux inside the bzImage. */
export function payloadOf(image: Uint8Array, header: SetupHeader): Uint8Array {
  const start = header.setupBytes + header.payloadOffset;
  return image.subarray(start, start + header.payloadLength);
}
