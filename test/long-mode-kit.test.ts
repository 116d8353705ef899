/**
 * The guest kit's long-mode variant (guests/kit/long-mode.h): a Multiboot kernel that
 * switches itself to 64-bit mode and runs main at CPL3, where PVM runs guest code natively.
 * guests/user-mode-check.c reports its CPL, port I/O, MMIO, a local APIC timer interrupt
 * taken at CPL3 (handled at CPL0 on the TSS's RSP0 stack, back with IRETQ), a call into
 * CPL0 and the #GP of a port outside the TSS I/O bitmap, under workervisor and under QEMU
 * (microvm and pc) alike; built at CPL0 the same program shows what differs. The virtio
 * driver of guests/virtio-check.c runs at CPL3 too, interrupt-driven checks included.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { destroyDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { virtioOnWorker } from "../runtime/pc-machine.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import { VirtioBlk } from "../runtime/devices/virtio/virtio-blk.js";
import { guestMachine, noQemu, runQemuGuest, runToReport, type GuestReport } from "./helpers/guest-report.js";
import { CHECK, fnv1a, imageFolder, makeImage, runVirtioCheck, WRITTEN } from "./helpers/virtio-guest.js";
import { readFileSync } from "node:fs";

after(() => destroyVcpuPool());
after(() => destroyDeviceWorkerPool());
const { dir, cleanup } = imageFolder();
after(cleanup);

const AT_CPL3 = { cpl: 3 } as const;
const AT_CPL0 = { longMode: true, cpl: 0 } as const;

/** What user-mode-check says at CPL3 on any of the VMMs. */
function assertUserMode(report: GuestReport): void {
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("cpl"), "3", "main runs at CPL3 (CS & 3 read in the guest)");
  assert.equal(report.values.get("scratch"), "90", "a port write and read at CPL3 (COM1's scratch register)");
  assert.equal(report.values.get("ioapic-redirection-entries"), "24", "MMIO at CPL3: the IOAPIC's version register");
  assert.equal(report.values.get("lapic-version-nonzero"), "1");
  assert.equal(report.values.get("timer-interrupts"), "1");
  assert.equal(report.values.get("interrupted-cpl"), "3", "the timer interrupt arrived while the guest was at CPL3");
  assert.equal(report.values.get("handler-cpl"), "0", "and its handler ran at CPL0");
  assert.equal(report.values.get("kernel-call-cpl"), "0", "the kit's system call runs its function at CPL0");
  assert.equal(report.values.get("allowed-port-fault"), "-1", "a port in the I/O bitmap raises nothing");
  assert.equal(report.values.get("forbidden-port-fault"), "13", "a port outside the I/O bitmap raises #GP");
  assert.equal(report.values.get("forbidden-port-error"), "0");
  assert.equal(report.values.get("cpl-after"), "3", "IRETQ brought the guest back to CPL3 each time");
}

test("long-mode kit at CPL3 under workervisor: port I/O, MMIO, a timer interrupt from CPL3, a call into CPL0, #GP for a port outside the I/O bitmap", { timeout: 120_000 }, async () => {
  assertUserMode(await runToReport(guestMachine("user-mode-check", {}, {}, AT_CPL3)));
});

test("long-mode kit at CPL3 with split mode's userspace IOAPIC: the same report", { timeout: 120_000 }, async () => {
  assertUserMode(await runToReport(guestMachine("user-mode-check", {}, { irqchip: "split" }, AT_CPL3)));
});

test("the same program built at CPL0 in long mode: CPL 0 everywhere, and the I/O bitmap does not apply", { timeout: 120_000 }, async () => {
  const report = await runToReport(guestMachine("user-mode-check", {}, {}, AT_CPL0));
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("cpl"), "0");
  assert.equal(report.values.get("interrupted-cpl"), "0");
  assert.equal(report.values.get("forbidden-port-fault"), "-1", "at CPL0 (CPL <= IOPL) the bitmap is not consulted");
  assert.equal(report.values.get("scratch"), "90");
});

for (const machine of ["microvm", "pc"]) {
  test(`long-mode kit at CPL3 under QEMU -M ${machine}: the same kernel gives the same report`, { skip: noQemu, timeout: 120_000 }, async () => {
    assertUserMode(await runQemuGuest("user-mode-check", {}, [], { build: AT_CPL3, machine }));
  });
}

test("virtio-check at CPL3: entropy from virtio-rng, and virtio-blk read, write, flush and read back, on a device worker", { timeout: 120_000 }, async () => {
  const rng = await runVirtioCheck({ CHECK: CHECK.entropy }, [virtioOnWorker("./virtio-rng.js", "VirtioRng")], [], AT_CPL3);
  assert.equal(rng.report.status, 0, rng.report.console);
  assert.equal(rng.report.values.get("cpl"), "3");
  assert.deepEqual(rng.report.all("entropy-bytes"), ["32", "32"]);
  const image = makeImage(dir, "cpl3.img");
  const blk = new VirtioBlk({ path: image.path, serial: "cpl3" });
  const { report } = await runVirtioCheck({ CHECK: CHECK.block }, [blk], [], AT_CPL3);
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("cpl"), "3");
  assert.equal(report.values.get("serial"), "cpl3");
  assert.equal(report.values.get("sector0-fnv"), String(fnv1a(image.first)));
  assert.equal(report.values.get("readback-matches"), "1");
  assert.deepEqual(readFileSync(image.path).subarray(1024, 2048), WRITTEN);
});

for (const level of [1, 0]) {
  test(`virtio-check at CPL3, interrupt-driven (${level ? "level" : "edge"}-triggered IOAPIC pin): each completion reaches the CPL0 handler from CPL3`, { timeout: 120_000 }, async () => {
    const rng = new VirtioRng();
    const { report, machine } = await runVirtioCheck({ CHECK: CHECK.interrupts, LEVEL: level }, [rng], [], AT_CPL3);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("cpl"), "3");
    assert.equal(report.values.get("used-interrupts"), "3");
    assert.equal(new Set(report.all("entropy")).size, 3);
    assert.equal(machine.virtio[0].stats.interrupts, 3);
    assert.equal(rng.bytesServed, 96);
  });
}

test("virtio-check at CPL3, hostile driver: each of the four broken rings puts virtio-rng in DEVICE_NEEDS_RESET, and a reset makes it work again", { timeout: 120_000 }, async () => {
  for (const hostile of [1, 2, 3, 4]) {
    const log: string[] = [];
    const { report } = await runVirtioCheck({ CHECK: CHECK.hostile, HOSTILE: hostile }, [new VirtioRng()], log, AT_CPL3);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("cpl"), "3");
    assert.equal(report.values.get("hostile-outcome"), "needs-reset", `HOSTILE=${hostile}: ${log.join(" | ")}`);
    assert.equal(log.length, 1, log.join(" | "));
    assert.match(report.values.get("entropy") ?? "", /^[0-9a-f]{64}$/);
  }
});

/*
 * QEMU microvm puts its virtio-mmio lines on a second IOAPIC, which the kit does not route;
 * with ioapic2=off they are pins 16-23 of the first, the top transport (QEMU fills slots
 * from the top, the kit takes the first it finds) on pin 23.
 */
const QEMU_VIRTIO_GSI = 23;

test("virtio-check at CPL3 under QEMU microvm: the interrupt-driven check and the block check against QEMU's devices", { skip: noQemu, timeout: 180_000 }, async () => {
  const interrupts = await runQemuGuest("virtio-check", { CHECK: CHECK.interrupts, LEVEL: 1, VIRTIO_GSI: QEMU_VIRTIO_GSI }, ["-device", "virtio-rng-device"], {
    build: AT_CPL3, machine: "microvm,ioapic2=off",
  });
  assert.equal(interrupts.status, 0, interrupts.console);
  assert.equal(interrupts.values.get("cpl"), "3");
  assert.equal(interrupts.values.get("used-interrupts"), "3");
  const image = makeImage(dir, "cpl3-qemu.img");
  const block = await runQemuGuest("virtio-check", { CHECK: CHECK.block }, [
    "-drive", `file=${image.path},format=raw,if=none,id=disk0`, "-device", "virtio-blk-device,drive=disk0,serial=cpl3-qemu",
  ], { build: AT_CPL3 });
  assert.equal(block.status, 0, block.console);
  assert.equal(block.values.get("cpl"), "3");
  assert.equal(block.values.get("serial"), "cpl3-qemu");
  assert.equal(block.values.get("readback-matches"), "1");
  assert.deepEqual(readFileSync(image.path).subarray(1024, 2048), WRITTEN);
});
