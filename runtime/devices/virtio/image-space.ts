/**
 * Deallocating and zeroing byte ranges of a raw image file, for virtio-blk's DISCARD and
 * WRITE_ZEROES: fallocate(2) PUNCH_HOLE (the range reads as zeroes and its blocks go back to
 * the host filesystem) and ZERO_RANGE (zeroes, blocks kept), with plain zero writes where
 * the filesystem has no ZERO_RANGE. Every call's errno is checked; a failure throws an
 * `ImageSpaceError` naming the call, the range and the errno.
 */
import { writeSync } from "node:fs";
import { errnoName } from "../../hypervisor/errno.js";
import { errno, fallocate, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE } from "../../hypervisor/libc.js";

const EINTR = 4;
const EOPNOTSUPP = 95;
const ENOSYS = 38;
/** The probe's length: one page, so any filesystem's block granularity is covered. */
const PROBE_BYTES = 4096;
const ZERO_CHUNK = new Uint8Array(64 << 10);

export class ImageSpaceError extends Error {
  override name = "ImageSpaceError";
}

export class ImageSpace {
  /** Whether PUNCH_HOLE works on this file (probed once, without touching its data). */
  readonly canPunchHoles: boolean;
  /** Cleared the first time ZERO_RANGE turns out to be unsupported: zero writes from then on. */
  private zeroRange = true;

  /** `fd` is an image opened for writing, `size` its length in bytes. */
  constructor(
    private readonly fd: number,
    size: number,
  ) {
    // A hole punched at or past the end of the file changes nothing (KEEP_SIZE), but the
    // filesystem still says whether it supports punching: EOPNOTSUPP if not.
    this.canPunchHoles = this.call(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, size, PROBE_BYTES, "probe") === 0;
  }

  /** Deallocates [offset, offset + length): it reads back as zeroes. Needs `canPunchHoles`. */
  punch(offset: number, length: number): void {
    const result = this.call(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length, "punch");
    if (result !== 0) throw this.error("PUNCH_HOLE", offset, length, result);
  }

  /** Makes [offset, offset + length) read as zeroes, keeping its blocks allocated. */
  zero(offset: number, length: number): void {
    if (this.zeroRange) {
      const result = this.call(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length, "zero");
      if (result === 0) return;
      if (result !== EOPNOTSUPP) throw this.error("ZERO_RANGE", offset, length, result);
      this.zeroRange = false;
    }
    for (let done = 0; done < length;) {
      const n = writeSync(this.fd, ZERO_CHUNK, 0, Math.min(ZERO_CHUNK.length, length - done), offset + done);
      if (n <= 0) throw new ImageSpaceError(`short write of zeroes at byte ${offset + done} of the image`);
      done += n;
    }
  }

  /** fallocate, retried on EINTR: 0, or the errno (EOPNOTSUPP for an unsupported mode, also from a probe). */
  private call(mode: number, offset: number, length: number, what: "probe" | "punch" | "zero"): number {
    for (;;) {
      if (fallocate(this.fd, mode, offset, length) === 0) return 0;
      const code = errno();
      if (code === EINTR) continue;
      if (code === ENOSYS || (what === "probe" && code !== 0)) return EOPNOTSUPP;
      return code;
    }
  }

  private error(mode: string, offset: number, length: number, code: number): ImageSpaceError {
    return new ImageSpaceError(`fallocate(${mode}) of ${length} bytes at byte ${offset} of the image failed: ${errnoName(code)}`);
  }
}
