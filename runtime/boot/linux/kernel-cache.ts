/**
 * Decompressed kernels, kept by the SHA-256 of the compressed payload, so the second boot
 * of the same bzImage reads the vmlinux instead of decompressing it again.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decompressPayload } from "./payload.js";

export interface DecompressedKernel {
  vmlinux: Uint8Array;
  /** True when it came from the cache. */
  cached: boolean;
  /** Where it is (or would have been) cached; undefined without a cache folder. */
  path?: string;
  /** Why the result could not be written to the cache, if it could not. */
  cacheWriteError?: string;
}

/** Decompresses `payload`, through `dir` (e.g. `.cache/kernels`) when one is given. */
export function decompressedKernel(payload: Uint8Array, dir: string | undefined): DecompressedKernel {
  if (dir === undefined) return { vmlinux: decompressPayload(payload), cached: false };
  const path = join(dir, `${createHash("sha256").update(payload).digest("hex")}.vmlinux`);
  try {
    return { vmlinux: readFileSync(path), cached: true, path };
  } catch {
    // Not cached yet (or unreadable): decompress and try to keep the result.
  }
  const vmlinux = decompressPayload(payload);
  try {
    mkdirSync(dir, { recursive: true });
    // Written under a temporary name and renamed, so a concurrent boot never reads half a file.
    const partial = `${path}.${process.pid}.partial`;
    writeFileSync(partial, vmlinux);
    renameSync(partial, path);
    return { vmlinux, cached: false, path };
  } catch (error) {
    return { vmlinux, cached: false, path, cacheWriteError: (error as Error).message };
  }
}
