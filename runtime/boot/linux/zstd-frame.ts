/**
 * A zstd payload decoded with fzstd, bounded: the frame header's declared sizes (RFC 8878,
 * section 3.1.1.1) are checked against the size Linux appended before anything is
 * allocated, and the streamed output is counted so a frame that keeps producing past that
 * size is stopped there rather than truncated or grown without limit.
 */
import { Decompress } from "fzstd";

const MAGIC = 0xfd2fb528;
/** Linux's `zstd -22 --ultra` uses a 128 MiB window; refuse windows far beyond any kernel's. */
const MAX_WINDOW = 1 << 30;

export class ZstdFrameError extends Error {
  override name = "ZstdFrameError";
}

/** Window size and (if declared) content size of the first frame. */
export function zstdFrameSizes(frame: Uint8Array): { window: number; content?: number } {
  if (frame.length < 6) throw new ZstdFrameError(`${frame.length} bytes cannot hold a frame header`);
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.getUint32(0, true) !== MAGIC) throw new ZstdFrameError("no zstd frame magic");
  const descriptor = frame[4];
  const singleSegment = (descriptor & 0x20) !== 0;
  const contentSizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6];
  const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3];
  let at = 5;
  let window = 0;
  if (!singleSegment) {
    const exponent = frame[at] >> 3;
    const base = 2 ** (10 + exponent);
    window = base + (base / 8) * (frame[at] & 7);
    at++;
  }
  at += dictionaryIdBytes;
  if (at + contentSizeBytes > frame.length) throw new ZstdFrameError("the frame header is truncated");
  let content: number | undefined;
  if (contentSizeBytes === 1) content = frame[at];
  else if (contentSizeBytes === 2) content = view.getUint16(at, true) + 256;
  else if (contentSizeBytes === 4) content = view.getUint32(at, true);
  else if (contentSizeBytes === 8) content = view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
  if (singleSegment) window = content!;
  return { window, content };
}

/** Decodes `stream` (zstd frames, nothing after them) into exactly `expectedSize` bytes. */
export function decodeZstd(stream: Uint8Array, expectedSize: number): Uint8Array {
  const { window, content } = zstdFrameSizes(stream);
  if (content !== undefined && content !== expectedSize) throw new ZstdFrameError(`the frame declares ${content} bytes, ${expectedSize} were expected`);
  if (window > MAX_WINDOW) throw new ZstdFrameError(`the frame asks for a ${window}-byte window (more than ${MAX_WINDOW})`);
  const out = new Uint8Array(expectedSize);
  let length = 0;
  const decoder = new Decompress((chunk) => {
    if (length + chunk.length > expectedSize) throw new ZstdFrameError(`the data decodes to more than ${expectedSize} bytes`);
    out.set(chunk, length);
    length += chunk.length;
  });
  try {
    decoder.push(stream, true);
  } catch (error) {
    if (error instanceof ZstdFrameError) throw error;
    throw new ZstdFrameError(`the data does not decode: ${(error as Error).message} (truncated or corrupt?)`);
  }
  if (length !== expectedSize) throw new ZstdFrameError(`the data decodes to ${length} bytes, ${expectedSize} were expected`);
  return out;
}
