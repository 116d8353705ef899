/** The initramfs writer: what the kernel's unpacker (init/initramfs.c) reads back. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeCpioNewc, CpioError } from "../runtime/assets/cpio-newc.js";
import { readNewc } from "./cpio-reader.js";

test("cpio newc: files, directories, symlinks and device nodes read back with their modes and data", () => {
  const archive = writeCpioNewc([
    { kind: "directory", path: "dev" },
    { kind: "char-device", path: "dev/console", major: 5, minor: 1 },
    { kind: "file", path: "init", data: new TextEncoder().encode("#!/bin/sh\necho hi\n"), mode: 0o755 },
    { kind: "file", path: "odd", data: new Uint8Array([1, 2, 3]) },
    { kind: "symlink", path: "sh", target: "busybox" },
  ]);
  const entries = readNewc(archive);
  assert.deepEqual(entries.map((e) => e.name), ["dev", "dev/console", "init", "odd", "sh", "TRAILER!!!"]);
  assert.equal(entries[0].mode, 0o040755);
  assert.equal(entries[1].mode, 0o020600);
  assert.deepEqual([entries[1].rdevMajor, entries[1].rdevMinor], [5, 1]);
  assert.equal(entries[2].mode, 0o100755);
  assert.equal(entries[2].data.toString(), "#!/bin/sh\necho hi\n");
  assert.deepEqual([...entries[3].data], [1, 2, 3]);
  assert.equal(entries[4].mode, 0o120777);
  assert.equal(entries[4].data.toString(), "busybox");
});

test("cpio newc: absolute or escaping paths are refused", () => {
  assert.throws(() => writeCpioNewc([{ kind: "directory", path: "/etc" }]), CpioError);
  assert.throws(() => writeCpioNewc([{ kind: "directory", path: "a/../../etc" }]), /must be relative/);
});
