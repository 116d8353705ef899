/**
 * An .xz stream as Linux's build writes it (scripts/xz_wrap.sh: the x86 BCJ filter, then
 * LZMA2, CRC32 checks), decoded synchronously and bounded before any output is made.
 *
 * npm's xz decoders either lack the BCJ filters Linux uses (xz-decompress's wasm build and
 * @napi-rs/lzma 1.4 both reject filter 0x04, measured on Debian's kernel) or need Node 22
 * (@napi-rs/lzma 1.5), so the container (the .xz file format, sections 2-5) and the x86 BCJ
 * filter are decoded here and only the LZMA2 data goes to @napi-rs/lzma.
 *
 * Order of work: the Stream Footer locates the Index, whose records give every block's size
 * and uncompressed size, so the total is known (and refused if unexpected) first; each
 * block's LZMA2 chunk headers must add up to its record before the decoder sees it.
 */
import { createRequire } from "node:module";
import { crc32 } from "node:zlib";

// A CommonJS native addon (prebuilt per platform).
const { lzma2 } = createRequire(import.meta.url)("@napi-rs/lzma") as { lzma2: { decompressSync(input: Uint8Array): Uint8Array } };

const HEADER_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const HEADER_LENGTH = 12;
const FOOTER_LENGTH = 12;
const FILTER_X86_BCJ = 0x04;
const FILTER_LZMA2 = 0x21;
const CHECK_NONE = 0;
const CHECK_CRC32 = 1;
/** Check field sizes by check type (section 3.4): 0, 4, 8 or 32 bytes in four groups of three. */
function checkSize(type: number): number {
  return type === 0 ? 0 : 4 << Math.floor((type - 1) / 3);
}

export class XzStreamError extends Error {
  override name = "XzStreamError";
}

class Reader {
  constructor(private readonly bytes: Uint8Array, public offset: number, private readonly end: number) {}
  byte(): number {
    if (this.offset >= this.end) throw new XzStreamError("a header ends early");
    return this.bytes[this.offset++];
  }
  /** A multibyte integer: 7 bits per byte, least significant first, at most 9 bytes. */
  varint(): number {
    let value = 0;
    for (let i = 0; i < 9; i++) {
      const byte = this.byte();
      value += (byte & 0x7f) * 2 ** (7 * i);
      if ((byte & 0x80) === 0) {
        if (!Number.isSafeInteger(value)) throw new XzStreamError("a size beyond 2^53");
        return value;
      }
    }
    throw new XzStreamError("a number longer than 9 bytes");
  }
}

interface IndexRecord {
  unpaddedSize: number;
  uncompressedSize: number;
}

function readIndex(stream: Uint8Array): IndexRecord[] {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const footer = stream.length - FOOTER_LENGTH;
  if (stream[footer + 10] !== 0x59 || stream[footer + 11] !== 0x5a) throw new XzStreamError("no stream footer at the end (truncated?)");
  const indexLength = (view.getUint32(footer + 4, true) + 1) * 4;
  const index = footer - indexLength;
  if (index < HEADER_LENGTH || stream[index] !== 0) throw new XzStreamError(`the footer's index size ${indexLength} does not point at an index`);
  const reader = new Reader(stream, index + 1, footer);
  const count = reader.varint();
  const records: IndexRecord[] = [];
  for (let i = 0; i < count; i++) records.push({ unpaddedSize: reader.varint(), uncompressedSize: reader.varint() });
  return records;
}

/** The sum of the blocks' uncompressed sizes, from the index alone. */
export function xzDeclaredSize(stream: Uint8Array): number {
  if (stream.length < HEADER_LENGTH + FOOTER_LENGTH) throw new XzStreamError(`${stream.length} bytes cannot hold a stream header and footer`);
  const total = readIndex(stream).reduce((sum, record) => sum + record.uncompressedSize, 0);
  if (!Number.isSafeInteger(total)) throw new XzStreamError("the index's sizes add up beyond 2^53");
  return total;
}

/** Decodes the single .xz stream `stream` (no trailing bytes) into `expectedSize` bytes. */
export function decodeXzStream(stream: Uint8Array, expectedSize: number): Uint8Array {
  if (!HEADER_MAGIC.every((byte, i) => stream[i] === byte)) throw new XzStreamError("no xz stream header");
  const checkType = stream[7] & 0x0f;
  const declared = xzDeclaredSize(stream);
  if (declared !== expectedSize) throw new XzStreamError(`the index declares ${declared} bytes, ${expectedSize} were expected`);
  const out = new Uint8Array(expectedSize);
  let outAt = 0;
  let at = HEADER_LENGTH;
  for (const record of readIndex(stream)) {
    const headerLength = (stream[at] + 1) * 4;
    if (stream[at] === 0) throw new XzStreamError("an index indicator where a block was expected");
    const filters = readBlockFilters(stream, at, headerLength);
    const dataLength = record.unpaddedSize - headerLength - checkSize(checkType);
    if (dataLength <= 0 || at + headerLength + dataLength > stream.length - FOOTER_LENGTH) {
      throw new XzStreamError(`a block of ${record.unpaddedSize} bytes does not fit the stream`);
    }
    const data = stream.subarray(at + headerLength, at + headerLength + dataLength);
    const chunked = lzma2UncompressedSize(data);
    if (chunked !== record.uncompressedSize) {
      throw new XzStreamError(`a block's LZMA2 chunks add up to ${chunked} bytes, the index says ${record.uncompressedSize}`);
    }
    let block: Uint8Array;
    try {
      block = lzma2.decompressSync(data);
    } catch (error) {
      throw new XzStreamError(`LZMA2 data does not decode: ${(error as Error).message}`);
    }
    if (block.length !== record.uncompressedSize) {
      throw new XzStreamError(`a block decodes to ${block.length} bytes, the index says ${record.uncompressedSize}`);
    }
    if (filters.bcjX86) x86BcjDecode(block, filters.bcjStart);
    const checkAt = at + headerLength + alignUp4(dataLength);
    if (checkType === CHECK_CRC32) {
      const stored = new DataView(stream.buffer, stream.byteOffset + checkAt, 4).getUint32(0, true);
      if (crc32(block) !== stored) throw new XzStreamError("a block's CRC32 does not match its data (corrupt?)");
    } else if (checkType !== CHECK_NONE) {
      // CRC64 and SHA-256 are not verified; Linux's build writes CRC32.
    }
    out.set(block, outAt);
    outAt += block.length;
    at = checkAt + checkSize(checkType);
  }
  return out;
}

/**
 * What LZMA2 data decodes to, from its chunk headers alone (each states its unpacked size),
 * so the decoder is never run on data that would produce more than the index declared.
 */
export function lzma2UncompressedSize(data: Uint8Array): number {
  let total = 0;
  let at = 0;
  for (;;) {
    if (at >= data.length) throw new XzStreamError("LZMA2 data ends without its end marker (truncated?)");
    const control = data[at];
    if (control === 0x00) return total;
    if (control === 0x01 || control === 0x02) {
      if (at + 3 > data.length) throw new XzStreamError("an LZMA2 chunk header is truncated");
      const size = ((data[at + 1] << 8) | data[at + 2]) + 1;
      total += size;
      at += 3 + size;
    } else if (control >= 0x80) {
      if (at + 5 > data.length) throw new XzStreamError("an LZMA2 chunk header is truncated");
      total += ((control & 0x1f) << 16) + ((data[at + 1] << 8) | data[at + 2]) + 1;
      const packed = ((data[at + 3] << 8) | data[at + 4]) + 1;
      at += (control >= 0xc0 ? 6 : 5) + packed;
    } else {
      throw new XzStreamError(`LZMA2 chunk control byte 0x${control.toString(16)} is invalid`);
    }
  }
}

function alignUp4(value: number): number {
  return Math.ceil(value / 4) * 4;
}

/** The block's filter chain: optional x86 BCJ, then LZMA2; anything else is refused by name. */
function readBlockFilters(stream: Uint8Array, at: number, headerLength: number): { bcjX86: boolean; bcjStart: number } {
  const end = at + headerLength - 4; // the header's own CRC32 follows
  if (end > stream.length) throw new XzStreamError("a block header runs past the stream");
  const reader = new Reader(stream, at + 1, end);
  const flags = reader.byte();
  if (flags & 0x3c) throw new XzStreamError("a block header with reserved flags set");
  if (flags & 0x40) reader.varint(); // compressed size (the index has it too)
  if (flags & 0x80) reader.varint(); // uncompressed size
  const count = (flags & 0x03) + 1;
  let bcjX86 = false;
  let bcjStart = 0;
  for (let i = 0; i < count; i++) {
    const id = reader.varint();
    const propertiesLength = reader.varint();
    const last = i === count - 1;
    if (id === FILTER_X86_BCJ && !last) {
      if (propertiesLength === 4) bcjStart = reader.byte() | (reader.byte() << 8) | (reader.byte() << 16) | (reader.byte() << 24);
      else if (propertiesLength !== 0) throw new XzStreamError(`x86 BCJ filter properties of ${propertiesLength} bytes`);
      bcjX86 = true;
    } else if (id === FILTER_LZMA2 && last) {
      if (propertiesLength !== 1) throw new XzStreamError(`LZMA2 filter properties of ${propertiesLength} bytes`);
      reader.byte(); // dictionary size: the decoder does not need it up front
    } else {
      throw new XzStreamError(`filter chain has filter 0x${id.toString(16)} at position ${i + 1} of ${count}; only [x86 BCJ,] LZMA2 is supported (what Linux's build writes)`);
    }
  }
  return { bcjX86, bcjStart: bcjStart >>> 0 };
}

/**
 * Undoes the x86 BCJ filter in place: the encoder turned the 32-bit relative targets of
 * CALL (E8) and JMP (E9) into absolute ones where the target's top byte is 00 or FF, so
 * they compress better; decoding subtracts each instruction's position again. A 3-bit mask
 * remembers E8/E9 bytes seen in the last three positions, because an opcode byte inside the
 * previous candidate's operand must be judged the way the encoder judged it.
 */
export function x86BcjDecode(buffer: Uint8Array, startOffset = 0): void {
  const allowedAfter = [true, true, true, false, true, false, false, false];
  const operandByteForMask = [0, 1, 2, 2, 3, 3, 3, 3];
  const isSignByte = (byte: number) => byte === 0x00 || byte === 0xff;
  let mask = 0;
  let last = -5;
  for (let i = 0; i + 4 < buffer.length; i++) {
    if ((buffer[i] & 0xfe) !== 0xe8) continue;
    const gap = i - last;
    if (gap > 3) {
      mask = 0;
    } else {
      mask = (mask << (gap - 1)) & 7;
      if (mask !== 0 && (!allowedAfter[mask] || isSignByte(buffer[i + 4 - operandByteForMask[mask]]))) {
        last = i;
        mask = (mask << 1) | 1;
        continue;
      }
    }
    last = i;
    if (!isSignByte(buffer[i + 4])) {
      mask = (mask << 1) | 1;
      continue;
    }
    let source = (buffer[i + 1] | (buffer[i + 2] << 8) | (buffer[i + 3] << 16) | (buffer[i + 4] << 24)) >>> 0;
    let target: number;
    for (;;) {
      target = (source - (startOffset + i + 5)) >>> 0;
      if (mask === 0) break;
      const shift = operandByteForMask[mask] * 8;
      if (!isSignByte((target >>> (24 - shift)) & 0xff)) break;
      source = (target ^ (2 ** (32 - shift) - 1)) >>> 0;
    }
    // Sign-extend from bit 24: the filter only ever rewrote targets within ±16 MiB.
    target = target & 0x0100_0000 ? (target | 0xfe00_0000) >>> 0 : target & 0x01ff_ffff;
    buffer[i + 1] = target & 0xff;
    buffer[i + 2] = (target >>> 8) & 0xff;
    buffer[i + 3] = (target >>> 16) & 0xff;
    buffer[i + 4] = target >>> 24;
    i += 4;
  }
}
