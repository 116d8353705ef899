/** Where workervisor keeps what it downloads or derives (guest assets, decompressed kernels). */
import { fileURLToPath } from "node:url";
import { join } from "node:path";

/** `$WORKERVISOR_CACHE`, or `.cache/` at the project root (git-ignored). */
export function cacheDir(): string {
  const fromEnvironment = process.env.WORKERVISOR_CACHE;
  if (fromEnvironment) return fromEnvironment;
  // This file is dist/runtime/assets/cache-dir.js once built.
  return join(fileURLToPath(new URL("../../../", import.meta.url)), ".cache");
}
