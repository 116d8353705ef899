/**
 * Writes cpio archives in the "newc" format the kernel unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte ASCII header of
 * hex fields per entry, name and data each padded to 4 bytes, closed by "TRAILER!!!".
 * Written here because the archive must hold device nodes (/dev/console) that an
 * unprivileged `cpio` run on the host could not create.
 */

export type CpioEntry =
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "directory"; path: string; mode?: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "char-device"; path: string; major: number; minor: number; mode?: number };

export class CpioError extends Error {
  override name = "CpioError";
}

const MAGIC = "070701";
const HEADER_LENGTH = 110;
const TRAILER = "TRAILER!!!";
const S_IFREG = 0o100000, S_IFDIR = 0o040000, S_IFLNK = 0o120000, S_IFCHR = 0o020000;

function hex8(value: number): string {
  return (value >>> 0).toString(16).padStart(8, "0");
}

function padTo4(length: number): number {
  return (4 - (length % 4)) % 4;
}

function checkPath(path: string): void {
  if (path.length === 0 || path.startsWith("/") || path.split("/").includes("..") || path.includes("\0")) {
    throw new CpioError(`cpio: entry path '${path}' must be relative (no leading '/', no '..', no NUL), e.g. 'bin/sh'`);
  }
}

/** Serialises `entries` in order; parents must come before their children, as the kernel creates them in order. */
export function writeCpioNewc(entries: readonly CpioEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  let inode = 1;
  const push = (name: string, mode: number, data: Uint8Array, rdev: { major: number; minor: number }, nlink: number) => {
    const nameBytes = encoder.encode(`${name}\0`);
    const fields = [
      inode++, mode, 0, 0, nlink, 0, data.length, 0, 0, rdev.major, rdev.minor, nameBytes.length, 0,
    ];
    const header = MAGIC + fields.map(hex8).join("");
    parts.push(encoder.encode(header), nameBytes, new Uint8Array(padTo4(HEADER_LENGTH + nameBytes.length)));
    parts.push(data, new Uint8Array(padTo4(data.length)));
  };
  const noDevice = { major: 0, minor: 0 };
  for (const entry of entries) {
    checkPath(entry.path);
    switch (entry.kind) {
      case "file":
        push(entry.path, S_IFREG | (entry.mode ?? 0o644), entry.data, noDevice, 1);
        break;
      case "directory":
        push(entry.path, S_IFDIR | (entry.mode ?? 0o755), new Uint8Array(0), noDevice, 2);
        break;
      case "symlink":
        push(entry.path, S_IFLNK | 0o777, encoder.encode(entry.target), noDevice, 1);
        break;
      case "char-device":
        push(entry.path, S_IFCHR | (entry.mode ?? 0o600), new Uint8Array(0), { major: entry.major, minor: entry.minor }, 1);
        break;
    }
  }
  push(TRAILER, 0, new Uint8Array(0), noDevice, 1);
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
