/** A cpio newc reader for tests, kept apart from the writer it checks. */
import assert from "node:assert/strict";

export interface ReadEntry { name: string; mode: number; rdevMajor: number; rdevMinor: number; data: Buffer }

/** Reads a newc archive the way the kernel does: 110-byte header, name and data 4-aligned. */
export function readNewc(archive: Uint8Array): ReadEntry[] {
  const bytes = Buffer.from(archive);
  const entries: ReadEntry[] = [];
  let at = 0;
  for (;;) {
    assert.equal(bytes.toString("latin1", at, at + 6), "070701", `magic at offset ${at}`);
    const field = (i: number) => parseInt(bytes.toString("latin1", at + 6 + i * 8, at + 14 + i * 8), 16);
    const nameSize = field(11);
    const fileSize = field(6);
    const name = bytes.toString("latin1", at + 110, at + 110 + nameSize - 1);
    assert.equal(bytes[at + 110 + nameSize - 1], 0, "name is NUL-terminated");
    const dataStart = (at + 110 + nameSize + 3) & ~3;
    entries.push({ name, mode: field(1), rdevMajor: field(9), rdevMinor: field(10), data: bytes.subarray(dataStart, dataStart + fileSize) });
    at = (dataStart + fileSize + 3) & ~3;
    if (name === "TRAILER!!!") break;
  }
  assert.equal(at, bytes.length, "nothing after the trailer");
  return entries;
}

