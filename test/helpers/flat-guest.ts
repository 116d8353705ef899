/**
 * Builds a C guest from `guests/` with the host's C compiler, freestanding, entered at
 * `_start` in the guest kit (`guests/kit/kit.h`): either a flat 64-bit program linked at
 * the flat loader's entry (0x10000) for `vm.loadProgram`, or a Multiboot v1 kernel (ELF32
 * at 1 MiB) for the PC machine and `workervisor run`. Builds are cached for the test run.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

// dist/test/helpers/ is three levels below the project root.
const GUESTS = fileURLToPath(new URL("../../../guests/", import.meta.url));
const cache = new Map<string, Uint8Array>();

const CFLAGS = [
  "-std=gnu11", "-O2", "-ffreestanding", "-fno-pic", "-fno-pie", "-no-pie", "-nostdlib", "-static",
  "-mno-red-zone", "-mgeneral-regs-only", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
  "-fcf-protection=none", "-Wall", "-Werror",
];

export type GuestTarget = "flat64" | "multiboot32";

/** The flat image of `guests/<name>.c`. */
export function buildFlatGuest(name: string, defines: Record<string, number> = {}): Uint8Array {
  return buildGuest(name, "flat64", defines);
}

/** The file of `guests/<name>.c` built as a Multiboot kernel, in a folder kept for the run. */
export function buildMultibootGuest(name: string, defines: Record<string, number> = {}): string {
  const path = join(keptDir(), `${name}-${Object.values(defines).join("-")}.elf`);
  writeFileSync(path, buildGuest(name, "multiboot32", defines));
  return path;
}

let kept: string | undefined;
function keptDir(): string {
  kept ??= mkdtempSync(join(tmpdir(), "workervisor-kernels-"));
  return kept;
}
process.on("exit", () => {
  if (kept) rmSync(kept, { recursive: true, force: true });
});

function buildGuest(name: string, target: GuestTarget, defines: Record<string, number>): Uint8Array {
  const key = `${name} ${target} ${JSON.stringify(defines)}`;
  const cached = cache.get(key);
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), "workervisor-guest-"));
  try {
    const elf = join(dir, `${name}.elf`);
    const bin = join(dir, `${name}.bin`);
    const defineFlags = Object.entries(defines).map(([k, v]) => `-D${k}=${v}`);
    const flat = target === "flat64";
    try {
      execFileSync("cc", [
        ...CFLAGS, ...(flat ? [] : ["-m32"]), ...defineFlags, `-I${join(GUESTS, "kit")}`,
        `-T${join(GUESTS, "kit", flat ? "flat.ld" : "multiboot.ld")}`, "-Wl,--no-warn-rwx-segments",
        "-o", elf, join(GUESTS, `${name}.c`),
      ], { stdio: ["ignore", "pipe", "pipe"] });
      if (flat) execFileSync("objcopy", ["-O", "binary", elf, bin], { stdio: ["ignore", "pipe", "pipe"] });
    } catch (error) {
      const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
      throw new Error(`building guest ${name}.c failed (needs cc, 32-bit libgcc for multiboot, objcopy): ${stderr || (error as Error).message}`);
    }
    const image = new Uint8Array(readFileSync(flat ? bin : elf));
    cache.set(key, image);
    return image;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
