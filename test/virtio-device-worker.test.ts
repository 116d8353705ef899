/**
 * The device-worker placement of virtio (issue 11's data path) with guests/virtio-check.c:
 * QueueNotify costs no userspace exit and no main-thread work, a VM stopped in the middle
 * of I/O lets go of the worker, its eventfds and the image, and a device worker that fails
 * stops its VM with an error that names it. (The device tests of both placements are in
 * virtio-guest.test.ts.)
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PcMachine, virtioOnWorker, type VirtioOnWorker } from "../runtime/pc-machine.js";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { destroyDeviceWorkerPool, warmDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { VirtioBlk } from "../runtime/devices/virtio/virtio-blk.js";
import { VirtioWorkerTransport } from "../runtime/devices/virtio/worker-placement.js";
import { DeviceWorkerError } from "../runtime/errors.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { CHECK, GUEST_MEMORY_MIB, imageFolder, makeImage, openFiles, runVirtioCheck } from "./helpers/virtio-guest.js";

after(() => destroyVcpuPool());
after(() => destroyDeviceWorkerPool());
const { dir, cleanup } = imageFolder();
after(cleanup);

const REQUESTS = 100;

/** The pool's threads (and their event loops' fds) outlive a VM: count fds with one warm. */
async function openFilesWithWarmPool(): Promise<string[]> {
  await warmDeviceWorkerPool();
  return openFiles();
}

for (const placement of ["main-thread", "worker"] as const) {
  test(`QD1 4 KiB reads (${placement}): ${placement === "worker" ? "no QueueNotify exits and less than one main-thread exit per request" : "each QueueNotify is an exit handled on the main thread"}`, { timeout: 120_000 }, async (t) => {
    const image = makeImage(dir, `qd1-${placement}.img`, 2048);
    const device: VirtioDevice | VirtioOnWorker = placement === "worker"
      ? virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path: image.path })
      : new VirtioBlk({ path: image.path });
    const { report, machine } = await runVirtioCheck({ CHECK: CHECK.timedReads, COUNT: REQUESTS }, [device]);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("reads"), String(REQUESTS));
    const transport = machine.virtio[0];
    const vm = machine.vm.stats;
    const mainThreadExits = vm.posted + vm.sync;
    t.diagnostic(`exits ${vm.exits} (${(vm.exits / REQUESTS).toFixed(2)}/request), main-thread exits ${mainThreadExits}, in-worker ${vm.inWorker}`);
    assert.equal(transport.stats.notifications, REQUESTS);
    if (placement === "worker") {
      assert.equal(transport.stats.notifyExits, 0, "every QueueNotify ended in the kernel as an ioeventfd");
      // The serial report and init still reach the main thread; the requests do not.
      assert.ok(mainThreadExits < REQUESTS, `${mainThreadExits} main-thread exits for ${REQUESTS} requests`);
      assert.equal(transport.stats.mainThreadLineChanges, 0);
      // The guest waits for each completion before its next request, so each is a wake-up.
      assert.ok(transport.stats.workerWakes >= REQUESTS, `${transport.stats.workerWakes} device-worker wake-ups for ${REQUESTS} requests`);
    } else {
      assert.equal(transport.stats.workerWakes, 0, "no device worker on the main thread's placement");
      assert.equal(transport.stats.notifyExits, REQUESTS);
      // QueueNotify (posted), InterruptStatus (sync) and InterruptACK (posted), per request.
      assert.ok(mainThreadExits >= 3 * REQUESTS, `${mainThreadExits} main-thread exits for ${REQUESTS} requests`);
    }
  });
}

test("QD32 4 KiB reads from a CPL3 driver on a device worker: every read served once, wake-ups and kicks per batch, not per request", { timeout: 120_000 }, async (t) => {
  const count = 640;
  const image = makeImage(dir, "qd32.img", 2048);
  const { report, machine } = await runVirtioCheck({ CHECK: CHECK.deepReads, COUNT: count, DEPTH: 32, VQ_SIZE: 128 },
    [virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path: image.path })], [], { cpl: 3 });
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("reads"), String(count));
  const batches = Number(report.values.get("batches"));
  const spared = Number(report.values.get("kicks-spared"));
  const stats = machine.virtio[0].stats;
  t.diagnostic(`batches ${batches} (${(count / batches).toFixed(1)} requests each), kicks ${stats.notifications}, kicks the device had said it did not need ${spared}, worker wake-ups ${stats.workerWakes}, interrupts ${stats.interrupts}`);
  assert.equal((machine.virtio[0] as VirtioWorkerTransport).deviceStats?.stats !== undefined, true);
  assert.equal(((machine.virtio[0] as VirtioWorkerTransport).deviceStats!.stats as { reads: number }).reads, count, "each read served once");
  // The first notification and one per refill the guest made: each batch of completions is one refill.
  assert.equal(stats.notifications, batches + 1);
  assert.ok(batches >= count / 32 - 1 && batches <= count, `${batches} refills for ${count} requests 32 deep`);
  assert.ok(spared <= batches);
  // Besides the kicks, the driver's ~20 register writes at initialisation each wake the worker.
  assert.ok(stats.workerWakes < count / 4, `${stats.workerWakes} wake-ups for ${count} requests: the worker sleeps only when the ring is empty`);
  assert.equal(stats.notifyExits, 0);
  assert.equal(stats.faults, 0);
});

test("a VM stopped in the middle of block I/O on a device worker: the worker exits, its eventfds and the image are closed", { timeout: 120_000 }, async () => {
  const image = makeImage(dir, "busy.img");
  const before = await openFilesWithWarmPool();
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: CHECK.endless })), console: (b) => bytes.push(b),
    virtio: [virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path: image.path })], memory: GUEST_MEMORY_MIB << 20,
  });
  const transport = machine.virtio[0];
  assert.ok(transport instanceof VirtioWorkerTransport);
  let ended = false;
  const running = machine.run().finally(() => { ended = true; });
  while (transport.stats.notifications < 20 && !ended) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(ended, false, `the guest stopped by itself: ${Buffer.from(bytes).toString("latin1")}`);
  const during = openFiles();
  assert.ok(during.includes(image.path), "the worker has the image open");
  assert.ok(during.filter((f) => f === "anon_inode:[eventfd]").length > before.filter((f) => f === "anon_inode:[eventfd]").length);
  assert.deepEqual(await machine.stop(), { reason: "stopped" });
  assert.deepEqual(await running, { reason: "stopped" });
  assert.equal(transport.exitedThread, true, "the device worker exited");
  assert.equal(machine.vm.state, "stopped");
  assert.equal(transport.stats.faults, 0);
  assert.ok(((transport.deviceStats?.stats as { reads: number }).reads) >= 20);
  assert.deepEqual(openFiles().sort(), before.sort(), "every fd opened for the VM is closed: eventfds, irqfds, the image, the VM's");
});

test("a device worker that throws stops its VM with a DeviceWorkerError naming the device and the cause, and leaves no fd behind", { timeout: 120_000 }, async () => {
  const before = await openFilesWithWarmPool();
  const device = virtioOnWorker(new URL("./helpers/failing-virtio-device.js", import.meta.url), "ResetFailingRng");
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: CHECK.entropy })), console: () => {},
    virtio: [device], memory: GUEST_MEMORY_MIB << 20,
  });
  await assert.rejects(machine.run(), (error: Error) => {
    assert.ok(error instanceof DeviceWorkerError, `${error.name}: ${error.message}`);
    assert.match(error.message, /ResetFailingRng.*reset failed on purpose/);
    return true;
  });
  assert.equal(machine.vm.state, "stopped");
  assert.equal((machine.virtio[0] as VirtioWorkerTransport).exitedThread, true);
  assert.deepEqual(openFiles().sort(), before.sort());
});

for (const [what, device, cause] of [
  ["an image that does not exist", virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path: "/nonexistent/disk.img" }), /cannot open the block image \/nonexistent\/disk\.img/],
  ["a module with no such export", virtioOnWorker("./virtio-blk.js", "NoSuchDevice"), /has no export 'NoSuchDevice'/],
] as const) {
  test(`a device that cannot be built on its worker (${what}) fails run() before the guest starts, saying why`, { timeout: 60_000 }, async () => {
    const before = await openFilesWithWarmPool();
    const machine = new PcMachine({
      kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: CHECK.block })), console: () => {}, virtio: [device], memory: GUEST_MEMORY_MIB << 20,
    });
    await assert.rejects(machine.run(), (error: Error) => error instanceof DeviceWorkerError && cause.test(error.message));
    assert.equal(machine.vm.state, "stopped");
    assert.deepEqual(openFiles().sort(), before.sort());
  });
}

test("a machine stopped before it ever ran lets its device worker go, with the image and every fd", { timeout: 60_000 }, async () => {
  const image = makeImage(dir, "never-run.img");
  const before = await openFilesWithWarmPool();
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: CHECK.block })), console: () => {},
    virtio: [virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path: image.path })], memory: GUEST_MEMORY_MIB << 20,
  });
  const transport = machine.virtio[0] as VirtioWorkerTransport;
  await transport.ready;
  assert.ok(openFiles().includes(image.path), "the worker built the device");
  assert.deepEqual(await machine.stop(), { reason: "stopped" });
  assert.equal(transport.exitedThread, true);
  assert.deepEqual(openFiles().sort(), before.sort());
});
