/**
 * Small Linux-shaped kernels for loader tests: an ELF64 "vmlinux" whose few instructions
 * report what the 64-bit boot protocol handed them, and bzImages wrapping it (payload gzip,
 * lz4 legacy or none), with the setup-header fields a test may want to break.
 */
import { gzipSync } from "node:zlib";
import { execFileSync } from "node:child_process";

export const PROBE_LOAD_ADDRESS = 0x100_0000;

/**
 * Prints the command line (cmd_line_ptr) and the initrd (ramdisk_image, NUL-terminated) on
 * COM1, then writes e820_entries to the debug-exit port: all read through RSI, the zero page.
 */
export const ZERO_PAGE_PROBE = Uint8Array.from([
  0x8b, 0xbe, 0x28, 0x02, 0x00, 0x00, // mov edi, [rsi+0x228]  cmd_line_ptr
  0xe8, 0x14, 0x00, 0x00, 0x00, //       call print
  0x8b, 0xbe, 0x18, 0x02, 0x00, 0x00, // mov edi, [rsi+0x218]  ramdisk_image
  0xe8, 0x09, 0x00, 0x00, 0x00, //       call print
  0x8a, 0x86, 0xe8, 0x01, 0x00, 0x00, // mov al, [rsi+0x1e8]   e820_entries
  0xe6, 0xf4, //                         out 0xf4, al
  0xf4, //                               hlt
  // print: bytes at [rdi] up to a NUL, to port 0x3f8
  0x8a, 0x07, //                         mov al, [rdi]
  0x84, 0xc0, //                         test al, al
  0x74, 0x0a, //                         jz .ret
  0x66, 0xba, 0xf8, 0x03, //             mov dx, 0x3f8
  0xee, //                               out dx, al
  0x48, 0xff, 0xc7, //                   inc rdi
  0xeb, 0xf0, //                         jmp print
  0xc3, //                               .ret: ret
]);

const CODE_OFFSET = 0x1000;

/** An ELF64 x86-64 executable with one PT_LOAD of `code` at `address`, entered there. */
export function probeVmlinux(code: Uint8Array = ZERO_PAGE_PROBE, address = PROBE_LOAD_ADDRESS, elfClass = 2): Uint8Array {
  const file = new Uint8Array(CODE_OFFSET + code.length);
  const view = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, elfClass, 1, 1]);
  view.setUint16(16, 2, true); // ET_EXEC
  view.setUint16(18, 62, true); // EM_X86_64
  view.setUint32(20, 1, true);
  view.setBigUint64(24, BigInt(address), true); // e_entry
  view.setBigUint64(32, 64n, true); // e_phoff
  view.setUint16(52, 64, true);
  view.setUint16(54, 56, true);
  view.setUint16(56, 1, true); // e_phnum
  view.setUint16(58, 64, true);
  const ph = 64;
  view.setUint32(ph, 1, true); // PT_LOAD
  view.setUint32(ph + 4, 5, true); // R+X
  view.setBigUint64(ph + 8, BigInt(CODE_OFFSET), true);
  view.setBigUint64(ph + 16, 0xffff_ffff_8100_0000n, true);
  view.setBigUint64(ph + 24, BigInt(address), true);
  view.setBigUint64(ph + 32, BigInt(code.length), true);
  view.setBigUint64(ph + 40, BigInt(code.length + 0x1000), true); // a page of bss
  file.set(code, CODE_OFFSET);
  return file;
}

/** LZ4 legacy frame of `data` as one literals-only block per 8 MiB (valid LZ4, no matches). */
export function lz4LegacyLiterals(data: Uint8Array): Uint8Array {
  const parts: number[] = [0x02, 0x21, 0x4c, 0x18];
  for (let at = 0; at < data.length; at += 8 << 20) {
    const chunk = data.subarray(at, Math.min(data.length, at + (8 << 20)));
    const block: number[] = [];
    if (chunk.length >= 15) {
      block.push(0xf0);
      let rest = chunk.length - 15;
      while (rest >= 255) { block.push(255); rest -= 255; }
      block.push(rest);
    } else {
      block.push(chunk.length << 4);
    }
    block.push(...chunk);
    parts.push(block.length & 0xff, (block.length >> 8) & 0xff, (block.length >> 16) & 0xff, block.length >>> 24, ...block);
  }
  return Uint8Array.from(parts);
}

export type PayloadKind = "gzip" | "lz4" | "xz" | "zstd" | "elf";

/**
 * `data` compressed as Linux's build compresses a kernel (scripts/xz_wrap.sh for x86: the
 * x86 BCJ filter, LZMA2, CRC32; `zstd -22 --ultra`), by the host's own xz and zstd, with
 * the decompressed size appended as size_append does.
 */
export function kernelCompressed(kind: "xz" | "zstd", data: Uint8Array): Uint8Array {
  const args = kind === "xz" ? ["--format=xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c"] : ["-22", "--ultra", "-q", "-c"];
  const stream = execFileSync(kind, args, { input: data, maxBuffer: 1 << 30 });
  return withAppendedSize(stream, data.length);
}

export function withAppendedSize(stream: Uint8Array, size: number): Uint8Array {
  const payload = new Uint8Array(stream.length + 4);
  payload.set(stream);
  new DataView(payload.buffer).setUint32(stream.length, size, true);
  return payload;
}

export interface BzImageFields {
  version?: number;
  loadflags?: number;
  xloadflags?: number;
  initSize?: number;
  cmdlineSize?: number;
  kernelAlignment?: number;
}

const SETUP_SECTS = 1;

/**
 * A bzImage: one setup sector, then a protected-mode part that starts with `entryCode` at
 * +0x200 (the 64-bit entry, for in-guest decompression) and holds the payload after it.
 */
export function probeBzImage(payloadKind: PayloadKind, fields: BzImageFields = {}, entryCode: Uint8Array = ZERO_PAGE_PROBE): Uint8Array {
  const vmlinux = probeVmlinux();
  let payload: Uint8Array;
  if (payloadKind === "gzip") payload = gzipSync(vmlinux);
  else if (payloadKind === "elf") payload = vmlinux;
  else if (payloadKind === "lz4") payload = withAppendedSize(lz4LegacyLiterals(vmlinux), vmlinux.length);
  else payload = kernelCompressed(payloadKind, vmlinux);
  const setupBytes = (SETUP_SECTS + 1) * 512;
  const payloadOffset = 0x1000;
  const protectedMode = new Uint8Array(payloadOffset + payload.length);
  protectedMode.set(entryCode, 0x200);
  protectedMode.set(payload, payloadOffset);
  const image = new Uint8Array(setupBytes + protectedMode.length);
  image.set(protectedMode, setupBytes);
  const view = new DataView(image.buffer);
  image[0x1f1] = SETUP_SECTS;
  view.setUint16(0x1fe, 0xaa55, true);
  image[0x200] = 0xeb; // jmp over the header, whose end it gives
  image[0x201] = 0x268 - 0x202;
  view.setUint32(0x202, 0x53726448, true);
  view.setUint16(0x206, fields.version ?? 0x20f, true);
  image[0x211] = fields.loadflags ?? 0x01;
  view.setUint32(0x214, 0x100000, true);
  view.setUint32(0x22c, 0x7fff_ffff, true);
  view.setUint32(0x230, fields.kernelAlignment ?? 0x20_0000, true);
  image[0x234] = 1;
  view.setUint16(0x236, fields.xloadflags ?? 0x03, true);
  view.setUint32(0x238, fields.cmdlineSize ?? 2047, true);
  view.setUint32(0x248, payloadOffset, true);
  view.setUint32(0x24c, payload.length, true);
  view.setBigUint64(0x258, BigInt(PROBE_LOAD_ADDRESS), true);
  view.setUint32(0x260, fields.initSize ?? 0x10_0000, true);
  return image;
}
