/**
 * Every virtio-mmio slot of the PC machine filled: guests/virtio-census.c scans the window,
 * matches each transport with its `virtio_mmio.device=` entry and drives block and entropy
 * devices with completions taken by interrupt on the announced GSI, so a transport at the
 * wrong place or on the wrong line fails. The disks are host files read back afterwards.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PcMachine, VIRTIO_MMIO_FIRST_GSI, VIRTIO_MMIO_SLOTS, virtioOnWorker, type VirtioOnWorker } from "../runtime/pc-machine.js";
import { VmConfigError } from "../runtime/errors.js";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { destroyDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { VirtioBlk } from "../runtime/devices/virtio/virtio-blk.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import { VirtioConsole } from "../runtime/devices/virtio/virtio-console.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { GUEST_MEMORY_MIB, imageFolder, makeImage, parseReport } from "./helpers/virtio-guest.js";
import { censusPattern } from "./helpers/virtio-census.js";

after(() => destroyVcpuPool());
after(() => destroyDeviceWorkerPool());
const { dir, cleanup } = imageFolder();
after(cleanup);

const VIRTIO_ID = { block: 2, console: 3, entropy: 4 } as const;

test(`all ${VIRTIO_MMIO_SLOTS} virtio-mmio transports: each is found where the command line says, raises its own GSI and reaches its own device`, { timeout: 300_000 }, async () => {
  // Both placements and a device the census only lists: disks in slots 0-4 (1 and 3 on
  // device workers), entropy in 5 (main thread) and 6 (worker), a console in 7.
  const disks = [0, 1, 2, 3, 4].map((i) => makeImage(dir, `disk${i}.img`));
  const devices: (VirtioDevice | VirtioOnWorker)[] = disks.map((disk, i) =>
    i % 2 === 1 ? virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path: disk.path, serial: `disk-${i}` }) : new VirtioBlk({ path: disk.path, serial: `disk-${i}` }));
  devices.push(new VirtioRng(), virtioOnWorker("./virtio-rng.js", "VirtioRng"), new VirtioConsole());
  assert.equal(devices.length, VIRTIO_MMIO_SLOTS);
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest("virtio-census")), console: (b) => bytes.push(b), virtio: devices, memory: GUEST_MEMORY_MIB << 20,
  });
  const result = await machine.run();
  const report = parseReport(result.status, Buffer.from(bytes).toString("latin1"));
  assert.deepEqual(result, { reason: "debug-exit", status: 0 }, report.console);
  assert.equal(report.values.get("announced"), String(VIRTIO_MMIO_SLOTS));
  assert.equal(report.values.get("transports"), String(VIRTIO_MMIO_SLOTS));
  const ids = [...disks.map(() => VIRTIO_ID.block), VIRTIO_ID.entropy, VIRTIO_ID.entropy, VIRTIO_ID.console];
  assert.deepEqual(report.all("transport"), ids.map((id, slot) => `${slot},${id},${VIRTIO_MMIO_FIRST_GSI + slot}`));
  disks.forEach((disk, slot) => {
    assert.equal(report.values.get(`serial-${slot}`), `disk-${slot}`);
    assert.equal(report.values.get(`write-${slot}`), "0");
    assert.equal(report.values.get(`readback-${slot}`), "1");
    assert.equal(report.values.get(`interrupts-${slot}`), "3", `slot ${slot}: one interrupt per request on GSI ${VIRTIO_MMIO_FIRST_GSI + slot}`);
    const image = readFileSync(disk.path);
    assert.deepEqual(image.subarray(0, 1024), censusPattern(slot), `disk ${slot}'s file holds what the guest wrote to slot ${slot}`);
  });
  for (const slot of [5, 6]) {
    assert.match(report.values.get(`entropy-${slot}`) ?? "", /^[0-9a-f]{64}$/);
    assert.equal(report.values.get(`interrupts-${slot}`), "1");
  }
  assert.notEqual(report.values.get("entropy-5"), report.values.get("entropy-6"));
});

test(`a ${VIRTIO_MMIO_SLOTS + 1}th virtio device is refused, naming the limit, and the devices given are closed`, () => {
  const disk = makeImage(dir, "extra.img");
  const blk = new VirtioBlk({ path: disk.path });
  const devices = [blk, ...Array.from({ length: VIRTIO_MMIO_SLOTS }, () => new VirtioRng())];
  assert.throws(() => new PcMachine({ kernel: readFileSync(buildMultibootGuest("virtio-census")), console: () => {}, virtio: devices }),
    (error: Error) => error instanceof VmConfigError && error.message.includes(`${VIRTIO_MMIO_SLOTS} virtio-mmio slots`) && error.message.includes(`${VIRTIO_MMIO_SLOTS + 1} virtio devices`));
  assert.equal(blk.isOpen, false);
});
