/**
 * Guest assets for the Linux tests and benchmark: Debian's cloud kernel and an initramfs
 * built around Debian's static busybox and the kernel's own virtio modules. Packages come
 * through `apt-get download` (nothing is installed on the host) and are unpacked with
 * `dpkg-deb -x` into the cache; a manifest records the result so a second call is free.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cacheDir } from "./cache-dir.js";
import { writeCpioNewc, type CpioEntry } from "./cpio-newc.js";
import { initScript } from "./init-script.js";
import { parseElf64 } from "../boot/linux/elf64.js";

export const KERNEL_PACKAGE = "linux-image-cloud-amd64";
/** Debian's generic kernel: its bzImage payload is xz (the cloud kernel's is lz4); only /boot is kept. */
export const GENERIC_KERNEL_PACKAGE = "linux-image-amd64";
export const BUSYBOX_PACKAGE = "busybox-static";
/** Loaded by /init in dependency order; virtio-mmio is how Debian's kernels find our devices. */
const WANTED_MODULES = ["virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng"];
const MANIFEST = "manifest.json";

export interface GuestAssets {
  /** The distribution bzImage, as shipped in /boot. */
  kernel: string;
  /** Debian's generic bzImage (xz payload), for the decompression path the cloud kernel does not take. */
  genericKernel: string;
  initrd: string;
  kernelVersion: string;
  /** The modules /init loads, in order. */
  modules: string[];
}

export class GuestAssetsError extends Error {
  override name = "GuestAssetsError";
}

const COMMAND_TIMEOUT_MS = 10 * 60_000;

function run(command: string, args: string[], cwd: string): string {
  try {
    // A stalled mirror must not hang the caller (CI) for ever.
    return execFileSync(command, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: COMMAND_TIMEOUT_MS });
  } catch (error) {
    const failure = error as { code?: string; stderr?: string };
    if (failure.code === "ENOENT") {
      throw new GuestAssetsError(`guest assets: '${command}' is not installed; they come from Debian packages, so a Debian host (apt-get, dpkg-deb, and Debian's archive in its apt sources) is needed`);
    }
    throw new GuestAssetsError(`guest assets: '${command} ${args.join(" ")}' failed: ${String(failure.stderr ?? error).trim()}`);
  }
}

/** The concrete kernel package a metapackage points at (e.g. linux-image-6.1.0-50-cloud-amd64). */
function kernelPackageName(metapackage: string, cwd: string): string {
  const depends = run("apt-cache", ["depends", metapackage], cwd);
  const match = /Depends:\s*(linux-image-\S+)/.exec(depends);
  if (!match) {
    throw new GuestAssetsError(`guest assets: apt knows no '${metapackage}'; run 'apt-get update' with Debian's main archive in the sources`);
  }
  return match[1];
}

/** `depends=` from a module's .modinfo section. */
function moduleDependencies(file: string): string[] {
  const data = readFileSync(file);
  const modinfo = parseElf64(data, `module ${file}`).sections().find((section) => section.name === ".modinfo");
  if (!modinfo) return [];
  const text = data.subarray(modinfo.fileOffset, modinfo.fileOffset + modinfo.size).toString("latin1");
  const line = text.split("\0").find((entry) => entry.startsWith("depends="));
  return line ? line.slice("depends=".length).split(",").filter((name) => name.length > 0) : [];
}

function findModules(root: string): Map<string, string> {
  const byName = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".ko")) byName.set(entry.name.slice(0, -3).replaceAll("-", "_"), path);
    }
  };
  walk(root);
  return byName;
}

/** `wanted` and what they need, dependencies first. Built-in modules have no file and are skipped. */
function moduleLoadOrder(available: Map<string, string>, wanted: string[]): string[] {
  const order: string[] = [];
  const visit = (name: string, path: string[]) => {
    const key = name.replaceAll("-", "_");
    if (order.includes(key) || !available.has(key)) return;
    if (path.includes(key)) throw new GuestAssetsError(`guest assets: module dependency cycle ${[...path, key].join(" -> ")}`);
    for (const dependency of moduleDependencies(available.get(key)!)) visit(dependency, [...path, key]);
    order.push(key);
  };
  for (const name of wanted) visit(name, []);
  return order;
}

function buildInitramfs(root: string, order: string[], available: Map<string, string>): Uint8Array {
  const entries: CpioEntry[] = [
    ...["bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"].map((path) => ({ kind: "directory" as const, path })),
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    { kind: "char-device", path: "dev/console", major: 5, minor: 1 },
    { kind: "file", path: "bin/busybox", data: readFileSync(join(root, "bin/busybox")), mode: 0o755 },
    { kind: "symlink", path: "bin/sh", target: "busybox" },
    { kind: "file", path: "init", data: new TextEncoder().encode(initScript()), mode: 0o755 },
    { kind: "file", path: "etc/modules.order", data: new TextEncoder().encode(order.map((name) => `${name}\n`).join("")) },
    ...order.map((name) => ({ kind: "file" as const, path: `lib/modules/${name}.ko`, data: readFileSync(available.get(name)!) })),
  ];
  return writeCpioNewc(entries);
}

function readManifest(dir: string): GuestAssets | undefined {
  try {
    const manifest = JSON.parse(readFileSync(join(dir, MANIFEST), "utf8")) as GuestAssets;
    const files = [manifest.kernel, manifest.genericKernel, manifest.initrd];
    return files.every((file) => typeof file === "string" && existsSync(file)) ? manifest : undefined;
  } catch {
    return undefined;
  }
}

/** The cached assets, fetching and building them first if needed. `log` hears each step. */
export function ensureGuestAssets(options: { dir?: string; log?: (line: string) => void } = {}): GuestAssets {
  const dir = options.dir ?? join(cacheDir(), "guest-assets");
  const log = options.log ?? (() => {});
  const cached = readManifest(dir);
  if (cached) return cached;

  const debs = join(dir, "debs");
  const root = join(dir, "root");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(debs, { recursive: true });
  const kernelPackage = kernelPackageName(KERNEL_PACKAGE, debs);
  const genericPackage = kernelPackageName(GENERIC_KERNEL_PACKAGE, debs);
  log(`apt-get download ${kernelPackage} ${BUSYBOX_PACKAGE} ${genericPackage}`);
  run("apt-get", ["download", kernelPackage, BUSYBOX_PACKAGE, genericPackage], debs);
  const genericDeb = readdirSync(debs).find((name) => name.startsWith(`${genericPackage}_`));
  if (!genericDeb) throw new GuestAssetsError(`guest assets: apt-get download left no ${genericPackage}_*.deb`);
  const genericRoot = join(dir, "generic");
  mkdirSync(genericRoot);
  // Its modules are 400 MB unpacked and not needed: only /boot leaves the archive.
  log(`dpkg-deb --fsys-tarfile ${genericDeb} | tar -x ./boot`);
  run("sh", ["-c", 'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" ./boot', "sh", join(debs, genericDeb), genericRoot], debs);
  rmSync(join(debs, genericDeb));
  const genericVmlinuz = readdirSync(join(genericRoot, "boot")).find((name) => name.startsWith("vmlinuz-"));
  if (!genericVmlinuz) throw new GuestAssetsError(`guest assets: ${genericPackage} has no /boot/vmlinuz-*`);
  for (const deb of readdirSync(debs).filter((name) => name.endsWith(".deb"))) {
    log(`dpkg-deb -x ${deb}`);
    run("dpkg-deb", ["-x", join(debs, deb), root], debs);
  }
  const vmlinuz = readdirSync(join(root, "boot")).find((name) => name.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new GuestAssetsError(`guest assets: ${kernelPackage} has no /boot/vmlinuz-*`);
  const kernelVersion = vmlinuz.slice("vmlinuz-".length);
  const modulesRoot = join(root, "lib/modules", kernelVersion);
  const available = findModules(modulesRoot);
  const order = moduleLoadOrder(available, WANTED_MODULES);
  log(`initramfs: busybox, /init, modules ${order.join(" ")}`);
  const assets: GuestAssets = {
    kernel: join(dir, "bzImage"),
    genericKernel: join(dir, "bzImage-generic"),
    initrd: join(dir, "initramfs.cpio"),
    kernelVersion,
    modules: order,
  };
  copyFileSync(join(root, "boot", vmlinuz), assets.kernel);
  copyFileSync(join(genericRoot, "boot", genericVmlinuz), assets.genericKernel);
  writeFileSync(assets.initrd, buildInitramfs(root, order, available));
  writeFileSync(join(dir, MANIFEST), `${JSON.stringify(assets, null, 2)}\n`);
  // Only the kernel and the initramfs are kept.
  rmSync(debs, { recursive: true, force: true });
  rmSync(root, { recursive: true, force: true });
  rmSync(genericRoot, { recursive: true, force: true });
  return assets;
}

/** `workervisor guest-fetch`: prints where the assets are. */
export function guestFetchCommand(): number {
  try {
    const assets = ensureGuestAssets({ log: (line) => process.stderr.write(`guest-fetch: ${line}\n`) });
    process.stdout.write(`kernel ${assets.kernel}\ngeneric-kernel ${assets.genericKernel}\ninitrd ${assets.initrd}\nversion ${assets.kernelVersion}\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`workervisor guest-fetch: ${(error as Error).message}\n`);
    return 2;
  }
}
