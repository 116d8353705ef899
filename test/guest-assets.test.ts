/** The Linux guest assets: Debian's kernel as shipped, and our initramfs around busybox and the kernel's virtio modules. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { readNewc } from "./cpio-reader.js";
import { guestAssetsOrSkip } from "./linux-guest.js";
import { INIT_STARTED_LINE } from "../runtime/assets/init-script.js";
import { isBzImage } from "../runtime/boot/linux/linux-loader.js";

test("guest assets: a bzImage, and an initramfs with /init, /dev/console, busybox and the virtio modules in dependency order", (t) => {
  const assets = guestAssetsOrSkip(t);
  if (!assets) return;
  assert.ok(isBzImage(readFileSync(assets.kernel)), "the kernel has a bzImage setup header");
  const entries = new Map(readNewc(readFileSync(assets.initrd)).map((entry) => [entry.name, entry]));
  const init = entries.get("init");
  assert.ok(init && (init.mode & 0o111) !== 0, "/init is executable");
  assert.match(init.data.toString(), new RegExp(INIT_STARTED_LINE));
  const console = entries.get("dev/console");
  assert.deepEqual([console?.mode, console?.rdevMajor, console?.rdevMinor], [0o020600, 5, 1]);
  assert.equal(entries.get("bin/busybox")?.data.subarray(0, 4).toString("latin1"), "\x7fELF");
  const order = entries.get("etc/modules.order")!.data.toString().trim().split("\n");
  assert.deepEqual(order, assets.modules);
  for (const name of order) assert.ok(entries.has(`lib/modules/${name}.ko`), `${name}.ko is in the initramfs`);
  for (const [module, dependency] of [["virtio_mmio", "virtio"], ["virtio_mmio", "virtio_ring"], ["virtio_blk", "virtio"]]) {
    assert.ok(order.indexOf(dependency) >= 0 && order.indexOf(dependency) < order.indexOf(module), `${dependency} loads before ${module}`);
  }
});
