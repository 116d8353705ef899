/**
 * Debian's cloud kernel all the way to our initramfs's /init: the marker, the virtio modules
 * loaded, `nproc` equal to the vCPUs we gave, the command from the kernel command line run,
 * a command typed on the console answered, and poweroff (ACPI S5) ending the VM.
 *
 * This needs a host whose KVM runs kernel code on hardware. On a PVM host, even with the
 * fallbacks, the kernel is still in its initcalls after 20 minutes of emulated kernel code,
 * so these tests are skipped there unless WORKERVISOR_PVM_FULL_BOOT=1 asks for the long run.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { cacheDir } from "../runtime/assets/cache-dir.js";
import { INIT_MARKER, INIT_STARTED_LINE } from "../runtime/assets/init-script.js";
import { bootDebianKernel, guestAssetsOrSkip, ON_PVM, PVM_SKIP_REASON, typeOnConsole } from "./linux-guest.js";

after(() => destroyVcpuPool());

const FULL_BOOT_ON_PVM = process.env.WORKERVISOR_PVM_FULL_BOOT === "1";
const skip = ON_PVM && !FULL_BOOT_ON_PVM ? `${PVM_SKIP_REASON}; set WORKERVISOR_PVM_FULL_BOOT=1 to try anyway` : false;
/** Seconds on hardware; on PVM, with the fallbacks, well over 20 minutes. */
const GUARD_MS = ON_PVM ? 80 * 60_000 : 5 * 60_000;
const kernelCache = join(cacheDir(), "kernels");
const CONSOLE = "console=ttyS0 panic=-1 quiet";

for (const cpus of [1, 2]) {
  test(`Debian cloud kernel, ${cpus} vCPU${cpus > 1 ? "s" : ""}: /init runs, loads virtio, counts ${cpus} CPU${cpus > 1 ? "s" : ""}, runs our command and powers off`, { skip, timeout: 2 * GUARD_MS }, async (t) => {
    const assets = guestAssetsOrSkip(t);
    if (!assets) return;
    const { machine, console, result } = bootDebianKernel(assets, {
      cpus, cmdline: `${CONSOLE} -- echo command-output-$((6*7))`, kernelCacheDir: kernelCache,
    });
    try {
      await console.waitFor(new RegExp(`^${INIT_STARTED_LINE}$`), GUARD_MS);
      const nproc = await console.waitFor(new RegExp(`^${INIT_MARKER} nproc=`), GUARD_MS);
      assert.equal(nproc, `${INIT_MARKER} nproc=${cpus}`);
      await console.waitFor(/^command-output-42$/, GUARD_MS);
      await console.waitFor(new RegExp(`^${INIT_MARKER} command exited 0$`), GUARD_MS);
      assert.deepEqual(await result, { reason: "poweroff" }, "poweroff: ACPI S5 through PM1_CNT");
      assert.equal(console.indexOf(new RegExp(`${INIT_MARKER} insmod .* failed`)), -1, "every virtio module loaded");
    } finally {
      await machine.stop();
    }
  });
}

test("Debian cloud kernel: a command typed on the console runs in /init's shell and its output comes back", { skip, timeout: 2 * GUARD_MS }, async (t) => {
  const assets = guestAssetsOrSkip(t);
  if (!assets) return;
  const { machine, console, result } = bootDebianKernel(assets, { cpus: 1, cmdline: CONSOLE, kernelCacheDir: kernelCache });
  try {
    await console.waitFor(new RegExp(`^${INIT_MARKER} nproc=1$`), GUARD_MS);
    await typeOnConsole(machine, "echo typed-$((6*7))\n");
    await console.waitFor(/^typed-42$/, GUARD_MS);
    await typeOnConsole(machine, "exit\n");
    await console.waitFor(new RegExp(`^${INIT_MARKER} powering off$`), GUARD_MS);
    assert.deepEqual(await result, { reason: "debug-exit", status: 0 });
  } finally {
    await machine.stop();
  }
});

test("Debian cloud kernel: `reboot -f` ends the VM through the i8042 reset line", { skip, timeout: 2 * GUARD_MS }, async (t) => {
  const assets = guestAssetsOrSkip(t);
  if (!assets) return;
  const { machine, console, result } = bootDebianKernel(assets, { cpus: 1, cmdline: `${CONSOLE} -- reboot -f`, kernelCacheDir: kernelCache });
  try {
    await console.waitFor(new RegExp(`^${INIT_MARKER} nproc=1$`), GUARD_MS);
    assert.deepEqual(await result, { reason: "reset", detail: "i8042 reset (0xfe to port 0x64)" });
  } finally {
    await machine.stop();
  }
});
