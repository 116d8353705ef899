/**
 * virtio-mmio with a guest of our own (guests/virtio-check.c, a polled virtio 1.2 driver):
 * under the PC machine it negotiates with our transport, reads entropy from virtio-rng,
 * reads, writes, flushes and reads back blocks of virtio-blk through a host file the test
 * then checks, and breaks a ring on purpose to see DEVICE_NEEDS_RESET and a working reset.
 * The same kernels run under QEMU -M microvm against QEMU's own devices, which checks the
 * driver (and through it our devices) against a third party.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PcMachine } from "../runtime/pc-machine.js";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import { VirtioBlk } from "../runtime/devices/virtio/virtio-blk.js";
import { VirtioStatus } from "../runtime/devices/virtio/mmio-transport.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";

after(() => destroyVcpuPool());

const CHECK = { entropy: 1, block: 2, hostile: 3, endless: 4, interrupts: 6 } as const;
const dir = mkdtempSync(join(tmpdir(), "workervisor-virtio-"));
after(() => rmSync(dir, { recursive: true, force: true }));

interface GuestReport {
  status: number | undefined;
  console: string;
  values: Map<string, string>;
  all: (key: string) => string[];
}

function parse(status: number | undefined, console: string): GuestReport {
  const pairs = [...console.matchAll(/^([a-z0-9-]+)=(.*)$/gm)].map((m) => [m[1], m[2]] as const);
  return { status, console, values: new Map(pairs), all: (key) => pairs.filter(([k]) => k === key).map(([, v]) => v) };
}

/** The guest's RAM under both VMMs: guests/virtio-check.c puts a hostile buffer across its end. */
const GUEST_MEMORY_MIB = 64;

async function runOurs(check: number, devices: VirtioDevice[], log: string[] = [], hostile = 0): Promise<{ report: GuestReport; machine: PcMachine }> {
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: check, HOSTILE: hostile })), console: (b) => bytes.push(b), virtio: devices,
    memory: GUEST_MEMORY_MIB << 20,
    virtioLog: (message) => log.push(message),
  });
  const result = await machine.run();
  assert.equal(result.reason, "debug-exit", `the guest ended by ${result.reason}: ${Buffer.from(bytes).toString("latin1")}`);
  return { report: parse(result.status, Buffer.from(bytes).toString("latin1")), machine };
}

/** A raw image whose first 1 KiB is a pattern and the rest zeros. */
function makeImage(name: string, sectors = 16): { path: string; first: Buffer } {
  const image = Buffer.alloc(sectors * 512);
  for (let i = 0; i < 1024; i++) image[i] = (i * 13) & 0xff;
  const path = join(dir, name);
  writeFileSync(path, image);
  return { path, first: image.subarray(0, 1024) };
}

function fnv1a(bytes: Uint8Array): number {
  let h = 2166136261;
  for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h;
}

const written = Buffer.from(Array.from({ length: 1024 }, (_, i) => (i * 7 + 3) & 0xff));

function assertEntropy(report: GuestReport): void {
  const samples = report.all("entropy");
  assert.equal(samples.length, 2, report.console);
  for (const sample of samples) {
    assert.match(sample, /^[0-9a-f]{64}$/);
    assert.ok(new Set(sample.match(/../g)).size > 8, `entropy ${sample} is nearly constant`);
  }
  assert.notEqual(samples[0], samples[1], "two reads gave the same bytes");
}

test("virtio-rng: the guest negotiates, gets 32 bytes twice, not constant, with a used-buffer interrupt each time", { timeout: 120_000 }, async () => {
  const rng = new VirtioRng();
  const { report, machine } = await runOurs(CHECK.entropy, [rng]);
  assert.equal(report.status, 0, report.console);
  assertEntropy(report);
  assert.deepEqual(report.all("entropy-bytes"), ["32", "32"]);
  assert.equal(rng.bytesServed, 64);
  assert.equal(report.values.get("interrupts"), "2", "InterruptStatus showed a used buffer after each request");
  const transport = machine.virtio[0];
  assert.equal(transport.stats.notifications, 2);
  assert.equal(transport.stats.faults, 0);
  assert.equal(transport.deviceStatus, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK);
});

test("virtio-blk: GET_ID, read, write through an indirect table, FLUSH with fsync, read back; the host file holds the write", { timeout: 120_000 }, async () => {
  const image = makeImage("rw.img");
  const blk = new VirtioBlk({ path: image.path, serial: "wv-serial-1" });
  const { report } = await runOurs(CHECK.block, [blk]);
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
  assert.deepEqual(blk.stats, { reads: 2, writes: 1, flushes: 1, failed: 0 });
  assert.equal(blk.isOpen, false, "the machine closed the image when it stopped");
});

test("virtio-blk read-only: VIRTIO_BLK_F_RO is offered, the write fails with IOERR and the file is untouched", { timeout: 120_000 }, async () => {
  const image = makeImage("ro.img");
  const before = readFileSync(image.path);
  const blk = new VirtioBlk({ path: image.path, readOnly: true });
  const { report } = await runOurs(CHECK.block, [blk]);
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("read-only"), "1");
  assert.equal(report.values.get("write-status"), "1", "VIRTIO_BLK_S_IOERR");
  assert.equal(report.values.get("readback-matches"), "0");
  assert.deepEqual(readFileSync(image.path), before);
  assert.equal(blk.stats.failed, 1);
});

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
for (const level of [1, 0]) {
  test(`virtio-rng's interrupt reaches the guest through the IOAPIC (${level ? "level" : "edge"}-triggered pin): one per request, acknowledged`, { timeout: 120_000 }, async (t) => {
    const bytes: number[] = [];
    const rng = new VirtioRng();
    const machine = new PcMachine({
      kernel: readFileSync(buildMultibootGuest("virtio-check", { CHECK: CHECK.interrupts, LEVEL: level })), console: (b) => bytes.push(b),
      virtio: [rng], memory: GUEST_MEMORY_MIB << 20,
    });
    const result = await machine.run();
    const report = parse(result.status, Buffer.from(bytes).toString("latin1"));
    assert.deepEqual(result, { reason: "debug-exit", status: 0 }, report.console);
    assert.equal(report.values.get("used-interrupts"), "3", "each completion raised the line and the guest took the interrupt");
    t.diagnostic(`handler runs with InterruptStatus 0: ${report.values.get("other-interrupts")}`);
    if (!level) assert.equal(report.values.get("other-interrupts"), "0");
    assert.equal(new Set(report.all("entropy")).size, 3);
    assert.equal(machine.virtio[0].stats.interrupts, 3);
    assert.equal(rng.bytesServed, 96);
  });
}

const HOSTILE = [
  { kind: 1, what: "a descriptor loop", fault: "chain-too-long", qemu: "needs-reset" },
  { kind: 2, what: "a buffer across the end of RAM", fault: "buffer-outside-ram", qemu: undefined },
  { kind: 3, what: "avail.idx jumping by more than the queue size", fault: "avail-index-jump", qemu: "needs-reset" },
  { kind: 4, what: "an indirect table inside an indirect table", fault: "nested-indirect", qemu: undefined },
] as const;

for (const { kind, what, fault } of HOSTILE) {
  test(`hostile guest, ${what}: virtio-rng goes to DEVICE_NEEDS_RESET with a config interrupt, logs ${fault} once, and works again after a reset`, { timeout: 120_000 }, async () => {
    const log: string[] = [];
    const rng = new VirtioRng();
    const { report, machine } = await runOurs(CHECK.hostile, [rng], log, kind);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("hostile-outcome"), "needs-reset");
    const status = Number(report.values.get("hostile-status"));
    assert.ok(status & VirtioStatus.DEVICE_NEEDS_RESET, `status after the hostile ring: ${status}`);
    assert.ok(Number(report.values.get("hostile-isr")) & 2, "a configuration-change interrupt told the driver");
    assert.equal(log.length, 1, `logged once: ${log.join(" | ")}`);
    assert.ok(log[0].includes(`(${fault})`), log[0]);
    assert.equal(report.values.get("reinit-status"), String(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK));
    assert.match(report.values.get("entropy") ?? "", /^[0-9a-f]{64}$/);
    assert.equal(rng.bytesServed, 32, "only the request after the reset was served");
    assert.equal(machine.virtio[0].stats.faults, 1);
    assert.ok(machine.virtio[0].stats.resets >= 2);
  });
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
