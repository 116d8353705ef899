/**
 * virtio-mmio with a guest of our own (guests/virtio-check.c, a polled virtio 1.2 driver):
 * under the PC machine it negotiates with our transport, reads entropy from virtio-rng,
 * reads, writes, flushes and reads back blocks of virtio-blk through a host file the test
 * then checks, zeroes and discards blocks of it (holes punched in the host file), and breaks a ring on purpose to see DEVICE_NEEDS_RESET and a working reset.
 * The same kernels run under QEMU -M microvm against QEMU's own devices, which checks the
 * driver (and through it our devices) against a third party.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { PcMachine, virtioOnWorker, type VirtioOnWorker } from "../runtime/pc-machine.js";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { destroyDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import { VirtioBlk, type VirtioBlkOptions, type VirtioBlkStats } from "../runtime/devices/virtio/virtio-blk.js";
import { VirtioStatus } from "../runtime/devices/virtio/mmio-transport.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { holeBlocks } from "./helpers/file-holes.js";
import {
  CHECK, DISCARD_ZERO_BLOCKS, discardPattern, fnv1a, GUEST_MEMORY_MIB, type GuestReport, imageFolder, openFiles, makeImage as makeImageIn, parseReport as parse, runVirtioCheck, WRITTEN as written,
} from "./helpers/virtio-guest.js";

after(() => destroyVcpuPool());
after(() => destroyDeviceWorkerPool());

const { dir, cleanup } = imageFolder();
after(cleanup);
const makeImage = (name: string, sectors?: number) => makeImageIn(dir, name, sectors);

async function runOurs(check: number, devices: (VirtioDevice | VirtioOnWorker)[], log: string[] = [], hostile = 0) {
  return runVirtioCheck({ CHECK: check, HOSTILE: hostile }, devices, log);
}

function assertEntropy(report: GuestReport): void {
  const samples = report.all("entropy");
  assert.equal(samples.length, 2, report.console);
  for (const sample of samples) {
    assert.match(sample, /^[0-9a-f]{64}$/);
    assert.ok(new Set(sample.match(/../g)).size > 8, `entropy ${sample} is nearly constant`);
  }
  assert.notEqual(samples[0], samples[1], "two reads gave the same bytes");
}

/**
 * Each device test runs with the device on the main thread and on a device worker of its
 * own; `served` and `blkStats` read the device's counters wherever it ran.
 */
type Placement = "main-thread" | "worker";
const PLACEMENTS: Placement[] = ["main-thread", "worker"];

function rngOn(placement: Placement): { entry: VirtioDevice | VirtioOnWorker; served: (machine: PcMachine) => number } {
  if (placement === "worker") {
    return { entry: virtioOnWorker("./virtio-rng.js", "VirtioRng"), served: (machine) => workerStats(machine).bytesServed as number };
  }
  const rng = new VirtioRng();
  return { entry: rng, served: () => rng.bytesServed };
}

function blkOn(placement: Placement, options: VirtioBlkOptions): { entry: VirtioDevice | VirtioOnWorker; stats: (machine: PcMachine) => VirtioBlkStats; closed: () => boolean } {
  if (placement === "worker") {
    return {
      entry: virtioOnWorker("./virtio-blk.js", "VirtioBlk", options),
      stats: (machine) => workerStats(machine).stats as VirtioBlkStats,
      closed: () => !openFiles().includes(options.path),
    };
  }
  const blk = new VirtioBlk(options);
  return { entry: blk, stats: () => ({ ...blk.stats }), closed: () => !blk.isOpen };
}

function workerStats(machine: PcMachine): Record<string, unknown> {
  const transport = machine.virtio[0];
  assert.ok("deviceStats" in transport && transport.deviceStats !== undefined, "the device worker reported its counters when it stopped");
  return transport.deviceStats;
}


for (const placement of PLACEMENTS) {
  test(`virtio-rng (${placement}): the guest negotiates, gets 32 bytes twice, not constant, with a used-buffer interrupt each time`, { timeout: 120_000 }, async () => {
    const rng = rngOn(placement);
    const { report, machine } = await runOurs(CHECK.entropy, [rng.entry]);
    assert.equal(report.status, 0, report.console);
    assertEntropy(report);
    assert.deepEqual(report.all("entropy-bytes"), ["32", "32"]);
    assert.equal(rng.served(machine), 64);
    assert.equal(report.values.get("interrupts"), "2", "InterruptStatus showed a used buffer after each request");
    const transport = machine.virtio[0];
    assert.equal(transport.stats.notifications, 2);
    assert.equal(transport.stats.notifyExits, placement === "worker" ? 0 : 2, "on a device worker QueueNotify is an ioeventfd: no exit");
    assert.equal(transport.stats.faults, 0);
    assert.equal(transport.deviceStatus, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK);
  });

  test(`virtio-blk (${placement}): GET_ID, read, write through an indirect table, FLUSH with fsync, read back; the host file holds the write`, { timeout: 120_000 }, async () => {
    const image = makeImage(`rw-${placement}.img`);
    const blk = blkOn(placement, { path: image.path, serial: "wv-serial-1" });
    const { report, machine } = await runOurs(CHECK.block, [blk.entry]);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("capacity"), "16");
    assert.equal(report.values.get("seg-max"), "254");
    assert.equal(report.values.get("blk-size"), "512");
    assert.equal(report.values.get("read-only"), "0");
    assert.equal(report.values.get("indirect"), "1");
    assert.equal(report.values.get("serial"), "wv-serial-1");
    assert.equal(report.values.get("sector0-fnv"), String(fnv1a(image.first)), "the guest read the host's first two sectors");
    assert.equal(report.values.get("write-status"), "0");
    assert.equal(report.values.get("flush-status"), "0");
    assert.equal(report.values.get("readback-matches"), "1");
    const file = readFileSync(image.path);
    assert.deepEqual(file.subarray(1024, 2048), written, "sectors 2-3 of the host file hold what the guest wrote");
    assert.deepEqual(file.subarray(0, 1024), image.first, "and nothing else changed");
    assert.ok(file.subarray(2048).every((b) => b === 0));
    assert.deepEqual(blk.stats(machine), { reads: 2, writes: 1, flushes: 1, discards: 0, writeZeroes: 0, failed: 0 });
    assert.equal(blk.closed(), true, "the machine closed the image when it stopped");
  });

  test(`virtio-blk read-only (${placement}): VIRTIO_BLK_F_RO is offered, the write fails with IOERR and the file is untouched`, { timeout: 120_000 }, async () => {
    const image = makeImage(`ro-${placement}.img`);
    const before = readFileSync(image.path);
    const blk = blkOn(placement, { path: image.path, readOnly: true });
    const { report, machine } = await runOurs(CHECK.block, [blk.entry]);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("read-only"), "1");
    assert.equal(report.values.get("write-status"), "1", "VIRTIO_BLK_S_IOERR");
    assert.equal(report.values.get("readback-matches"), "0");
    assert.deepEqual(readFileSync(image.path), before);
    assert.equal(blk.stats(machine).failed, 1);
  });
}

/** The zero-blocks bitmap CHECK=10 reports when blocks 1-2, 5, 8-9 and 12 read as zeroes. */
const ZERO_BLOCKS_BITS = String(DISCARD_ZERO_BLOCKS.reduce((bits, b) => bits | (1 << b), 0));
/** What the spec (and QEMU) answer the refused requests: UNSUPP for flags and segment counts, IOERR for ranges. */
const REFUSED = [["reserved-flag-status", "2"], ["discard-unmap-status", "2"], ["past-end-status", "1"], ["over-max-status", "1"], ["too-many-segments-status", "2"]];

/** The host file after CHECK=10: zeroes in the zeroed and discarded blocks, the guest's pattern elsewhere. */
function assertDiscardedImage(path: string): void {
  const file = readFileSync(path);
  const pattern = discardPattern();
  assert.equal(file.length, pattern.length, "the image keeps its size");
  for (let b = 0; b < 16; b++) {
    const got = file.subarray(b * 4096, (b + 1) * 4096);
    if (DISCARD_ZERO_BLOCKS.includes(b)) assert.ok(got.every((x) => x === 0), `block ${b} of the host file is zeroes`);
    else assert.deepEqual(got, pattern.subarray(b * 4096, (b + 1) * 4096), `block ${b} of the host file holds the guest's pattern`);
  }
}

/**
 * UNMAP and DISCARD (blocks 5, 8-9, 12) left holes in the host file, and nothing but zeroed
 * blocks is a hole. (ext4 reports a WRITE_ZEROES range, kept allocated as unwritten extents,
 * as a hole too, so blocks 1-2 may be either.)
 */
function assertPunched(path: string): void {
  const holes = holeBlocks(path);
  for (const b of [5, 8, 9, 12]) assert.ok(holes.includes(b), `block ${b} is a hole in the host file (holes: ${holes.join(", ")})`);
  for (const b of holes) assert.ok(DISCARD_ZERO_BLOCKS.includes(b), `block ${b} is a hole but was never zeroed`);
}

for (const placement of PLACEMENTS) {
  test(`virtio-blk DISCARD and WRITE_ZEROES (${placement}): refused requests change nothing, zeroed blocks read back as zeroes, discarded ones are holes in the host file`, { timeout: 120_000 }, async () => {
    const image = makeImage(`discard-${placement}.img`, 128);
    const blk = blkOn(placement, { path: image.path });
    const { report, machine } = await runOurs(CHECK.discard, [blk.entry]);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("discard"), "1");
    assert.equal(report.values.get("write-zeroes"), "1");
    assert.equal(report.values.get("max-discard-seg"), "16");
    assert.equal(report.values.get("write-zeroes-may-unmap"), "1");
    for (const [key, value] of REFUSED) assert.equal(report.values.get(key), value, key);
    for (const key of ["write-zeroes-status", "write-zeroes-unmap-status", "discard-status"]) assert.equal(report.values.get(key), "0", key);
    assert.equal(report.values.get("zero-blocks"), ZERO_BLOCKS_BITS, "the guest reads zeroes in exactly the zeroed and discarded blocks");
    assert.equal(report.values.get("pattern-kept"), "1", "and its pattern everywhere else");
    assertDiscardedImage(image.path);
    assertPunched(image.path);
    const stats = blk.stats(machine);
    assert.equal(stats.discards, 1);
    assert.equal(stats.writeZeroes, 2);
    assert.equal(stats.failed, REFUSED.length);
  });
}

/**
 * `qemu` is what QEMU 7.2's virtio-rng-device was seen to do: it flags loops and index jumps
 * with DEVICE_NEEDS_RESET, but completes the request whose buffer runs past the end of RAM
 * and never answers the nested indirect table (hostile-outcome "completed" and "none").
 * Ours flags all four.
 */
/**
 * Level-triggered (as virtio-mmio's line is), this PVM host runs the handler a second time
 * per request, finding InterruptStatus 0: inside the first run, after the ack and its
 * read-back, the local APIC's IRR still shows the vector pending and its ISR shows nothing
 * in service. Routed as an edge, IRR is clear and there is no second run. The cause is not
 * pinned down (PVM's interrupt injection is the suspect). So the level test counts the
 * interrupts that carried a used buffer; the edge test also checks there are no others.
 */
const LINES = [
  { level: 1, placement: "main-thread", interrupts: undefined, irqchip: "in-kernel" },
  { level: 0, placement: "main-thread", interrupts: undefined, irqchip: "in-kernel" },
  { level: 1, placement: "worker", interrupts: "irqfd", irqchip: "in-kernel" },
  { level: 0, placement: "worker", interrupts: "irqfd", irqchip: "in-kernel" },
  { level: 1, placement: "worker", interrupts: "main-thread", irqchip: "in-kernel" },
  // Split mode's userspace IOAPIC: the kernel's irqfds cannot reach it, so a worker's line is driven from the main thread.
  { level: 1, placement: "main-thread", interrupts: undefined, irqchip: "split" },
  { level: 0, placement: "main-thread", interrupts: undefined, irqchip: "split" },
  { level: 1, placement: "worker", interrupts: "main-thread", irqchip: "split" },
] as const;

for (const { level, placement, interrupts, irqchip } of LINES) {
  const how = (placement === "worker" ? `, device worker, ${interrupts === "irqfd" ? "resampling irqfd" : "line driven by the main thread"}` : "") +
    (irqchip === "split" ? ", split mode's userspace IOAPIC" : "");
  test(`virtio-rng's interrupt reaches the guest through the IOAPIC (${level ? "level" : "edge"}-triggered pin${how}): one per request, acknowledged`, { timeout: 120_000 }, async (t) => {
    const bytes: number[] = [];
    const rng = placement === "worker" ? virtioOnWorker("./virtio-rng.js", "VirtioRng", undefined, interrupts) : new VirtioRng();
    const machine = new PcMachine({
      kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: CHECK.interrupts, LEVEL: level })), console: (b) => bytes.push(b),
      virtio: [rng], memory: GUEST_MEMORY_MIB << 20, irqchip,
    });
    const result = await machine.run();
    const report = parse(result.status, Buffer.from(bytes).toString("latin1"));
    assert.deepEqual(result, { reason: "debug-exit", status: 0 }, report.console);
    assert.equal(report.values.get("used-interrupts"), "3", "each completion raised the line and the guest took the interrupt");
    t.diagnostic(`handler runs with InterruptStatus 0: ${report.values.get("other-interrupts")}`);
    // A resampling irqfd asserts again on every EOI that finds InterruptStatus set; the extra
    // EOIs of this PVM host (above) then make extra edges, so only a main-thread line is exact.
    if (!level && interrupts !== "irqfd") assert.equal(report.values.get("other-interrupts"), "0");
    assert.equal(new Set(report.all("entropy")).size, 3);
    const transport = machine.virtio[0];
    assert.equal(transport.stats.interrupts, 3);
    if (placement === "worker") {
      assert.equal(transport.stats.mainThreadLineChanges > 0, interrupts === "main-thread", "only the fallback asks the main thread to drive the line");
      assert.equal((transport as { interruptPath?: string }).interruptPath, interrupts);
    }
    assert.equal(rng instanceof VirtioRng ? rng.bytesServed : workerStats(machine).bytesServed, 96);
  });
}

const HOSTILE = [
  { kind: 1, what: "a descriptor loop", fault: "chain-too-long", qemu: "needs-reset" },
  { kind: 2, what: "a buffer across the end of RAM", fault: "buffer-outside-ram", qemu: undefined },
  { kind: 3, what: "avail.idx jumping by more than the queue size", fault: "avail-index-jump", qemu: "needs-reset" },
  { kind: 4, what: "an indirect table inside an indirect table", fault: "nested-indirect", qemu: undefined },
] as const;

for (const placement of PLACEMENTS) {
  for (const { kind, what, fault } of HOSTILE) {
    test(`hostile guest (${placement}), ${what}: virtio-rng goes to DEVICE_NEEDS_RESET with a config interrupt, logs ${fault} once, and works again after a reset`, { timeout: 120_000 }, async () => {
      const log: string[] = [];
      const rng = rngOn(placement);
      const { report, machine } = await runOurs(CHECK.hostile, [rng.entry], log, kind);
      assert.equal(report.status, 0, report.console);
      assert.equal(report.values.get("hostile-outcome"), "needs-reset");
      const status = Number(report.values.get("hostile-status"));
      assert.ok(status & VirtioStatus.DEVICE_NEEDS_RESET, `status after the hostile ring: ${status}`);
      assert.ok(Number(report.values.get("hostile-isr")) & 2, "a configuration-change interrupt told the driver");
      assert.equal(log.length, 1, `logged once: ${log.join(" | ")}`);
      assert.ok(log[0].includes(`(${fault})`), log[0]);
      assert.equal(report.values.get("reinit-status"), String(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK));
      assert.match(report.values.get("entropy") ?? "", /^[0-9a-f]{64}$/);
      assert.equal(rng.served(machine), 32, "only the request after the reset was served");
      assert.equal(machine.virtio[0].stats.faults, 1);
      assert.ok(machine.virtio[0].stats.resets >= 2);
    });
  }
}

test("a VM stopped in the middle of block I/O ends, and the machine closes the image", { timeout: 120_000 }, async () => {
  const image = makeImage("busy.img");
  const blk = new VirtioBlk({ path: image.path });
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: CHECK.endless })), console: (b) => bytes.push(b),
    virtio: [blk], memory: GUEST_MEMORY_MIB << 20,
  });
  let ended = false;
  const running = machine.run().finally(() => { ended = true; });
  while (blk.stats.reads < 20 && !ended) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(ended, false, `the guest stopped by itself: ${Buffer.from(bytes).toString("latin1")}`);
  assert.equal(blk.isOpen, true);
  const stopped = await machine.stop();
  assert.deepEqual(stopped, { reason: "stopped" });
  assert.deepEqual(await running, { reason: "stopped" });
  assert.equal(blk.isOpen, false, "the image was closed");
  assert.equal(machine.vm.state, "stopped");
  assert.equal(machine.virtio[0].stats.faults, 0);
  assert.match(Buffer.from(bytes).toString("latin1"), /^reading$/m);
});

// ---- the same kernels under QEMU -M microvm, against QEMU's virtio-mmio devices ----

const qemu = spawnSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" });
const noQemu = qemu.error || qemu.status !== 0 ? "qemu-system-x86_64 is not installed (Debian: apt-get install -y qemu-system-x86)" : false;

function runQemu(check: number, deviceArgs: string[], hostile = 0): GuestReport {
  const kernel = buildMultibootGuest("virtio-check", { CHECK: check, HOSTILE: hostile });
  const run = spawnSync("qemu-system-x86_64", [
    "-accel", "kvm", "-M", "microvm", "-m", String(GUEST_MEMORY_MIB), "-nodefaults", "-no-reboot", "-display", "none",
    "-serial", "stdio", "-monitor", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    // Version 2 (virtio 1.x) transports, as ours; QEMU's default is the legacy version 1.
    "-global", "virtio-mmio.force-legacy=false", ...deviceArgs, "-kernel", kernel,
  ], { encoding: "latin1", timeout: 60_000 });
  assert.ok(run.error === undefined, `QEMU did not run: ${run.error?.message}`);
  // isa-debug-exit ends QEMU with (status << 1) | 1.
  assert.equal(run.status! & 1, 1, `QEMU ended with ${run.status} (not by debug-exit): ${run.stderr}`);
  return parse(run.status! >> 1, run.stdout);
}

test("under QEMU microvm: the same entropy kernel works against QEMU's virtio-rng-device", { skip: noQemu, timeout: 120_000 }, () => {
  const report = runQemu(CHECK.entropy, ["-device", "virtio-rng-device"]);
  assert.equal(report.status, 0, report.console);
  assertEntropy(report);
});

test("under QEMU microvm: the same block kernel writes, flushes and reads back through QEMU's virtio-blk-device", { skip: noQemu, timeout: 120_000 }, () => {
  const image = makeImage("qemu.img");
  const report = runQemu(CHECK.block, [
    "-drive", `file=${image.path},format=raw,if=none,id=disk0`, "-device", "virtio-blk-device,drive=disk0,serial=wv-serial-1",
  ]);
  assert.equal(report.status, 0, report.console);
  for (const [key, value] of [["capacity", "16"], ["blk-size", "512"], ["serial", "wv-serial-1"], ["write-status", "0"], ["flush-status", "0"], ["readback-matches", "1"]]) {
    assert.equal(report.values.get(key), value, `${key} under QEMU`);
  }
  assert.equal(report.values.get("sector0-fnv"), String(fnv1a(image.first)));
  assert.deepEqual(readFileSync(image.path).subarray(1024, 2048), written);
});

test("under QEMU microvm: the same discard kernel against QEMU's virtio-blk-device (discard=unmap) gives the same answers and the same file", { skip: noQemu, timeout: 120_000 }, (t) => {
  const image = makeImage("qemu-discard.img", 128);
  const report = runQemu(CHECK.discard, [
    "-drive", `file=${image.path},format=raw,if=none,id=disk0,discard=unmap`, "-device", "virtio-blk-device,drive=disk0",
  ]);
  assert.equal(report.status, 0, report.console);
  t.diagnostic(`QEMU's limits: max-discard-sectors ${report.values.get("max-discard-sectors")}, max-discard-seg ${report.values.get("max-discard-seg")}, max-write-zeroes-seg ${report.values.get("max-write-zeroes-seg")}`);
  for (const [key, value] of REFUSED) assert.equal(report.values.get(key), value, `${key} under QEMU`);
  for (const key of ["write-zeroes-status", "write-zeroes-unmap-status", "discard-status"]) assert.equal(report.values.get(key), "0", `${key} under QEMU`);
  assert.equal(report.values.get("zero-blocks"), ZERO_BLOCKS_BITS);
  assert.equal(report.values.get("pattern-kept"), "1");
  assertDiscardedImage(image.path);
  t.diagnostic(`holes QEMU left in the host file (4 KiB blocks): ${holeBlocks(image.path).join(", ")}`);
  assertPunched(image.path);
});

for (const { kind, what, qemu: expected } of HOSTILE) {
  test(`under QEMU microvm: the hostile kernel with ${what}; QEMU's virtio-rng works again after a reset`, { skip: noQemu, timeout: 120_000 }, (t) => {
    const report = runQemu(CHECK.hostile, ["-device", "virtio-rng-device"], kind);
    assert.equal(report.status, 0, report.console);
    t.diagnostic(`QEMU's outcome: ${report.values.get("hostile-outcome")}`);
    if (expected === "needs-reset") {
      assert.equal(report.values.get("hostile-outcome"), "needs-reset");
      assert.ok(Number(report.values.get("hostile-isr")) & 2, "with a configuration-change interrupt, as ours");
    }
    assert.match(report.values.get("entropy") ?? "", /^[0-9a-f]{64}$/);
  });
}
