/**
 * Builds a C guest from `guests/` with the host's C compiler, freestanding, entered at
 * `_start` in the guest kit (`guests/kit/kit.h`): either a flat 64-bit program linked at
 * the flat loader's entry (0x10000) for `vm.loadProgram`, or a Multiboot v1 kernel (ELF32
 * at 1 MiB) for the PC machine and `workervisor run`, in 32-bit protected mode or, with
 * `{ longMode: true }` or `{ cpl: 3 }`, switching itself to long mode (guests/kit/long-mode.h)
 * and running main at that CPL. Builds are cached for the test run.
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

export type GuestTarget = "flat64" | "multiboot32" | "multiboot64";

/** How a Multiboot kernel runs main: 32-bit protected mode (the default), or long mode at CPL0 or CPL3. */
export interface MultibootBuild {
  longMode?: boolean;
  /** 3 runs main at CPL3, in long mode (PVM runs CPL3 natively; 32-bit CPL3 cannot be entered there). */
  cpl?: 0 | 3;
}

/** The flat image of `guests/<name>.c`. */
export function buildFlatGuest(name: string, defines: Record<string, number> = {}): Uint8Array {
  return buildGuest(name, "flat64", defines);
}

/** The file of `guests/<name>.c` built as a Multiboot kernel, in a folder kept for the run. */
export function buildMultibootGuest(name: string, defines: Record<string, number> = {}, build: MultibootBuild = {}): string {
  const cpl = build.cpl ?? 0;
  const target: GuestTarget = build.longMode === true || cpl === 3 ? "multiboot64" : "multiboot32";
  if (build.longMode === false && cpl === 3) throw new RangeError("a CPL3 guest-kit kernel runs in long mode: drop longMode: false");
  const all = target === "multiboot64" ? { ...defines, KIT_LONG_MODE: 1, KIT_CPL: cpl } : defines;
  const path = join(keptDir(), `${name}-${target}-${Object.entries(all).map(([k, v]) => `${k}${v}`).join("-")}.elf`);
  writeFileSync(path, buildGuest(name, target, all));
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
    const longMode = target === "multiboot64";
    const kit = (file: string) => join(GUESTS, "kit", file);
    try {
      execFileSync("cc", [
        ...CFLAGS, ...(target === "multiboot32" ? ["-m32"] : []), ...defineFlags, `-I${kit("")}`,
        `-T${kit(flat ? "flat.ld" : "multiboot.ld")}`, "-Wl,--no-warn-rwx-segments",
        "-o", elf, join(GUESTS, `${name}.c`), ...(longMode ? [kit("long-mode.c"), kit("long-mode-entry.S")] : []),
      ], { stdio: ["ignore", "pipe", "pipe"] });
      // Multiboot v1 loaders (QEMU's, ours) take ELF32: the 64-bit kernel goes in an ELF32
      // container, its addresses (all below 4 GiB) unchanged.
      if (flat) execFileSync("objcopy", ["-O", "binary", elf, bin], { stdio: ["ignore", "pipe", "pipe"] });
      if (longMode) execFileSync("objcopy", ["-O", "elf32-i386", elf, bin], { stdio: ["ignore", "pipe", "pipe"] });
    } catch (error) {
      const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
      throw new Error(`building guest ${name}.c failed (needs cc, 32-bit libgcc for multiboot, objcopy): ${stderr || (error as Error).message}`);
    }
    const image = new Uint8Array(readFileSync(target === "multiboot32" ? elf : bin));
    cache.set(key, image);
    return image;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
