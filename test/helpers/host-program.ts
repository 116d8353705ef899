/**
 * Builds a host C program (a layout check, not a guest) with the host's cc, cached in a
 * temporary directory by the content of its sources, so a test run rebuilds only what changed.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The project root (tests run from dist/test/helpers/). */
export const PROJECT_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const OUTPUT = join(tmpdir(), "workervisor-host-programs");

/** Builds `sources` with `-I` for each of `includes`; returns the executable's path. */
export function buildHostProgram(name: string, sources: string[], includes: string[] = []): string {
  const flags = ["-O0", "-Wall", "-Werror", ...includes.map((dir) => `-I${dir}`)];
  const hash = createHash("sha256");
  for (const source of sources) hash.update(readFileSync(source));
  for (const dir of includes) hash.update(dir);
  const output = join(OUTPUT, `${name}-${hash.digest("hex").slice(0, 16)}`);
  if (existsSync(output)) return output;
  mkdirSync(OUTPUT, { recursive: true });
  const run = spawnSync("cc", [...flags, "-o", output, ...sources], { encoding: "utf8" });
  if (run.error) throw new Error(`cannot run the host's cc to build ${name}: ${run.error.message}. Install gcc (apt-get install gcc libc6-dev).`);
  if (run.status !== 0) throw new Error(`cc failed to build ${name} (status ${run.status}):\n${run.stderr}`);
  return output;
}
