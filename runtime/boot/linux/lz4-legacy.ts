/**
 * LZ4 "legacy" frames, the form `lz4 -l` writes and Linux uses for LZ4-compressed kernels
 * (lib/decompress_unlz4.c): a 4-byte magic, then blocks each preceded by its compressed
 * size, each block decompressing to at most 8 MiB. The block format is LZ4's
 * (lz4_Block_format.md): sequences of literals and back-references.
 * Written here rather than taken from npm: the block decoder is short, the legacy framing is
 * not what the npm packages parse, and this one decodes the Debian cloud kernel in well under
 * a second.
 */

export const LZ4_LEGACY_MAGIC = 0x184c2102;
const LEGACY_BLOCK_SIZE = 8 << 20;
const MIN_MATCH = 4;

export class Lz4FormatError extends Error {
  override name = "Lz4FormatError";
}

/** Decodes one block from `input[start, end)` into `output` at `outAt`; returns the new output position. */
function decodeBlock(input: Uint8Array, start: number, end: number, output: Uint8Array, outAt: number): number {
  let at = start;
  let out = outAt;
  const corrupt = (why: string) => new Lz4FormatError(`lz4: corrupt block at input offset ${start}: ${why}`);
  while (at < end) {
    const token = input[at++];
    let literals = token >>> 4;
    if (literals === 15) {
      let byte;
      do {
        if (at >= end) throw corrupt("literal length runs past the block");
        byte = input[at++];
        literals += byte;
      } while (byte === 255);
    }
    if (at + literals > end) throw corrupt("literals run past the block");
    if (out + literals > output.length) throw corrupt("output larger than expected");
    output.set(input.subarray(at, at + literals), out);
    at += literals;
    out += literals;
    if (at === end) break; // the last sequence has literals only
    if (at + 2 > end) throw corrupt("match offset cut off");
    const offset = input[at] | (input[at + 1] << 8);
    at += 2;
    if (offset === 0 || offset > out) throw corrupt(`match offset ${offset} points before the output`);
    let length = token & 15;
    if (length === 15) {
      let byte;
      do {
        if (at >= end) throw corrupt("match length runs past the block");
        byte = input[at++];
        length += byte;
      } while (byte === 255);
    }
    length += MIN_MATCH;
    if (out + length > output.length) throw corrupt("output larger than expected");
    let from = out - offset;
    if (offset >= length) {
      output.copyWithin(out, from, from + length);
      out += length;
    } else {
      // Overlapping: the match repeats bytes it is itself producing.
      const stop = out + length;
      while (out < stop) output[out++] = output[from++];
    }
  }
  return out;
}

/**
 * Decompresses a legacy frame whose decompressed size is known (Linux appends it to the
 * payload). Bytes after the last block that do not form another block are ignored, as the
 * kernel's own decompressor ignores the appended size.
 */
export function decompressLz4Legacy(input: Uint8Array, outputSize: number): Uint8Array {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  if (input.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC) {
    throw new Lz4FormatError("lz4: no legacy-frame magic 0x184c2102 at the start of the data");
  }
  const output = new Uint8Array(outputSize);
  let at = 4;
  let out = 0;
  while (out < outputSize) {
    if (at + 4 > input.length) {
      throw new Lz4FormatError(`lz4: data ends after ${out} of ${outputSize} decompressed bytes (truncated?)`);
    }
    const blockSize = view.getUint32(at, true);
    at += 4;
    if (blockSize === LZ4_LEGACY_MAGIC) continue; // concatenated frames
    if (blockSize > input.length - at) {
      throw new Lz4FormatError(`lz4: a block of ${blockSize} bytes at offset ${at - 4} runs past the end of the ${input.length}-byte data (truncated?)`);
    }
    const before = out;
    out = decodeBlock(input, at, at + blockSize, output, out);
    if (out - before > LEGACY_BLOCK_SIZE) throw new Lz4FormatError(`lz4: a block decompressed to more than 8 MiB`);
    at += blockSize;
  }
  return output;
}
