/**
 * Copies between a descriptor chain's guest buffers (live views into guest RAM) and host
 * bytes. The chain's segments were bounds-checked by the walker; these only never run past
 * either side.
 */
import type { BufferSegment } from "./virtqueue.js";

/**
 * Copies the bytes of the segments, from byte `skip` of them on, into `into`; returns how
 * many were copied (fewer than `into.length` when the segments end first).
 */
export function gather(segments: readonly BufferSegment[], into: Uint8Array, skip = 0): number {
  let copied = 0;
  for (const { bytes } of segments) {
    if (copied === into.length) break;
    if (skip >= bytes.length) {
      skip -= bytes.length;
      continue;
    }
    const count = Math.min(bytes.length - skip, into.length - copied);
    into.set(bytes.subarray(skip, skip + count), copied);
    copied += count;
    skip = 0;
  }
  return copied;
}

/** Copies `from` into the segments from their byte `skip` on; returns how many bytes fitted. */
export function scatter(segments: readonly BufferSegment[], from: Uint8Array, skip = 0): number {
  let copied = 0;
  for (const { bytes } of segments) {
    if (copied === from.length) break;
    if (skip >= bytes.length) {
      skip -= bytes.length;
      continue;
    }
    const count = Math.min(bytes.length - skip, from.length - copied);
    bytes.set(from.subarray(copied, copied + count), skip);
    copied += count;
    skip = 0;
  }
  return copied;
}
