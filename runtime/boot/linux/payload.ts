/**
 * A bzImage's payload (setup header `payload_offset`/`payload_length`) is the vmlinux ELF,
 * compressed. The format is told by its magic bytes, as the kernel's own decompressors tell
 * it (lib/decompress.c); Linux's build appends the decompressed size as a 32-bit
 * little-endian word to every format but gzip (scripts/Makefile.lib, size_append).
 *
 * On the host: gzip (node:zlib), lz4 (Debian's cloud kernel; ./lz4-legacy.ts), xz (Debian's
 * generic kernel; ./xz-stream.ts) and zstd (./zstd-frame.ts over fzstd, pure JS). Every format's output is bounded before it is produced: by the size
 * Linux appended, which the xz index and the zstd output buffer must agree with. bzip2,
 * lzma and lzo payloads fall back to the kernel's own decompressor.
 */
import { gunzipSync } from "node:zlib";
import { decompressLz4Legacy } from "./lz4-legacy.js";
import { decodeXzStream } from "./xz-stream.js";
import { decodeZstd } from "./zstd-frame.js";

export type PayloadFormat = "gzip" | "bzip2" | "lzma" | "xz" | "lzo" | "lz4" | "zstd" | "uncompressed-elf";

const MAGICS: [PayloadFormat, number[]][] = [
  ["gzip", [0x1f, 0x8b]],
  ["bzip2", [0x42, 0x5a, 0x68]],
  ["lzma", [0x5d, 0x00, 0x00]],
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["lzo", [0x89, 0x4c, 0x5a]],
  ["lz4", [0x02, 0x21, 0x4c, 0x18]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
  ["uncompressed-elf", [0x7f, 0x45, 0x4c, 0x46]],
];

/** The largest vmlinux we accept: far above any distribution kernel, far below a sane guest. */
const MAX_DECOMPRESSED = 1 << 30;

export class PayloadError extends Error {
  override name = "PayloadError";
}

export function payloadFormat(payload: Uint8Array): PayloadFormat | undefined {
  return MAGICS.find(([, magic]) => magic.every((byte, i) => payload[i] === byte))?.[0];
}

/** Formats this host can decompress itself. */
export function hostCanDecompress(format: PayloadFormat): boolean {
  return format === "gzip" || format === "lz4" || format === "xz" || format === "zstd" || format === "uncompressed-elf";
}

function appendedSize(payload: Uint8Array): number {
  if (payload.length < 8) throw new PayloadError(`bzImage payload of ${payload.length} bytes is too short (truncated?)`);
  const size = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(payload.length - 4, true);
  if (size === 0 || size > MAX_DECOMPRESSED) {
    throw new PayloadError(`bzImage payload's appended decompressed size ${size} is not plausible (1 byte to 1 GiB); is the file truncated?`);
  }
  return size;
}

/** The vmlinux ELF inside `payload`. */
export function decompressPayload(payload: Uint8Array): Uint8Array {
  const format = payloadFormat(payload);
  switch (format) {
    case "uncompressed-elf":
      return payload;
    case "gzip":
      try {
        return gunzipSync(payload, { maxOutputLength: MAX_DECOMPRESSED });
      } catch (error) {
        throw new PayloadError(`bzImage gzip payload does not decompress: ${(error as Error).message} (truncated or corrupt?)`);
      }
    case "lz4":
      try {
        return decompressLz4Legacy(payload, appendedSize(payload));
      } catch (error) {
        throw new PayloadError(`bzImage lz4 payload does not decompress: ${(error as Error).message}`);
      }
    case "xz":
      return decompressXz(payload);
    case "zstd":
      try {
        return decodeZstd(payload.subarray(0, payload.length - 4), appendedSize(payload));
      } catch (error) {
        throw new PayloadError(`bzImage zstd payload does not decompress: ${(error as Error).message}`);
      }
    case undefined:
      throw new PayloadError(
        `bzImage payload starts with ${Buffer.from(payload.subarray(0, 6)).toString("hex")}, the magic of no format Linux compresses its kernel with`,
      );
    default:
      throw new PayloadError(`bzImage payload is ${format}, which this host cannot decompress (gzip, lz4, xz and zstd only); boot it with in-guest decompression`);
  }
}

function decompressXz(payload: Uint8Array): Uint8Array {
  const size = appendedSize(payload);
  try {
    // The stream is followed by the appended size word (Linux's builds add no stream padding).
    return decodeXzStream(payload.subarray(0, payload.length - 4), size);
  } catch (error) {
    throw new PayloadError(`bzImage xz payload does not decompress: ${(error as Error).message}`);
  }
}
