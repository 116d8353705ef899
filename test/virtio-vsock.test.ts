/**
 * virtio-vsock with a guest of our own (guests/virtio-vsock-check.c): Firecracker's host
 * contract over Unix sockets, one connection each way with the data checked on both sides,
 * the guest's small credit respected by the device, clean SHUTDOWN/RST closes; a packet
 * for no connection answered with RST; a VM stopped with connections open closes them; the
 * same with the device on a device worker that opens its Unix sockets itself.
 * No QEMU cross-check: QEMU's vhost-vsock-device needs /dev/vhost-vsock (absent on this
 * host's kernel) and its host side is AF_VSOCK, which Node cannot open.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { destroyVcpuPool, warmVcpuPool } from "../runtime/vcpu-pool.js";
import { VirtioVsock, type VirtioVsockStats } from "../runtime/devices/virtio/virtio-vsock.js";
import { VirtioWorkerTransport } from "../runtime/devices/virtio/worker-placement.js";
import { DeviceWorkerError } from "../runtime/errors.js";
import { type VirtioOnWorker, virtioOnWorker } from "../runtime/pc-machine.js";
import { destroyDeviceWorkerPool, warmDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { openFiles } from "./helpers/virtio-guest.js";
import { UnixSocketVsockHost, VsockHostError } from "../runtime/devices/virtio/vsock-host.js";
import { guestMachine, runToReport } from "./helpers/guest-report.js";
import { A_BYTES, B_BYTES, hostConnect, patternA, patternB, xorServer } from "./helpers/vsock-peer.js";

after(() => destroyVcpuPool());
after(() => destroyDeviceWorkerPool());
const dir = mkdtempSync(join(tmpdir(), "workervisor-vsock-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Waits until the device's thread listens at `udsPath` (a worker opens it while the machine starts). */
async function listeningAt(udsPath: string): Promise<void> {
  for (let i = 0; i < 500 && !existsSync(udsPath); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(existsSync(udsPath), `nothing listens at ${udsPath}`);
}

for (const placement of ["main-thread", "worker"] as const) {
  test(`virtio-vsock (${placement}): a guest-initiated and a host-initiated connection (Firecracker's Unix sockets), data checked both ways, credit respected, clean closes`, { timeout: 180_000 }, async () => {
    const udsPath = join(dir, `${placement}.sock`);
    // On a worker the device listens on the path itself.
    const host = placement === "main-thread" ? new UnixSocketVsockHost(udsPath) : undefined;
    const vsock = host === undefined ? virtioOnWorker("./virtio-vsock.js", "VirtioVsock", { guestCid: 42, udsPath }) : new VirtioVsock({ guestCid: 42, host });
    const peer = xorServer(udsPath, 5000);
    const guest = guestMachine("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }, { virtio: [vsock] });
    const running = runToReport(guest);
    await (host?.listening ?? listeningAt(udsPath));
    while (!guest.output().includes("part-a=ok")) {
      if (/failed/.test(guest.output())) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const sent = patternB(B_BYTES);
    const [hostSide, report] = await Promise.all([hostConnect(udsPath, 6000, sent), running]);
    peer.server.close();
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("guest-cid"), "42");
    assert.deepEqual(peer.got(), patternA(A_BYTES), "the host's server got the guest's bytes in order");
    assert.equal(report.values.get("a-received"), String(A_BYTES), "and the guest checked the answer");
    assert.match(hostSide.okLine, /^OK \d+$/);
    assert.equal(hostSide.okLine, `OK ${report.values.get("b-host-port")}`, "OK names the host port the guest saw");
    assert.equal(report.values.get("b-received"), String(B_BYTES));
    assert.deepEqual(hostSide.received, sent, "the guest's echo came back whole before the close");
    const transport = guest.machine.virtio[0];
    const stats = vsock instanceof VirtioVsock ? vsock.stats : (transport as VirtioWorkerTransport).deviceStats!.stats as VirtioVsockStats;
    assert.ok(stats.creditStalls >= 3, `the guest's 1 KiB of credit made the device wait (${stats.creditStalls} times) for ${B_BYTES} bytes; the guest checks it never got more than its credit`);
    if (vsock instanceof VirtioVsock) assert.equal(vsock.connectionCount, 0, "both connections closed cleanly");
    else assert.equal(transport.stats.notifyExits, 0, "every QueueNotify ended in the kernel");
    assert.equal(stats.connectionsOpened, 2);
    assert.equal(transport.stats.faults, 0);
    assert.equal(existsSync(udsPath), false, "the machine (or its device worker) closed the listening socket when it stopped");
  });
}

/**
 * Runs the vsock guest against a host server that takes its bytes and never answers (the
 * guest waits in part A), stops the VM there, and says whether the host's end was closed.
 */
async function stopInPartA(udsPath: string, device: VirtioVsock | VirtioOnWorker, whileConnected?: () => void) {
  let bytes = 0;
  let closed = false;
  const server = createServer((socket) => {
    socket.on("data", (chunk: Buffer) => { bytes += chunk.length; });
    socket.on("close", () => { closed = true; });
  }).listen(`${udsPath}_5000`);
  const guest = guestMachine("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }, { virtio: [device] });
  const running = guest.machine.run();
  try {
    while (bytes < A_BYTES) await new Promise((resolve) => setTimeout(resolve, 10));
    whileConnected?.();
    assert.deepEqual(await guest.machine.stop(), { reason: "stopped" });
    assert.deepEqual(await running, { reason: "stopped" });
    for (let i = 0; i < 100 && !closed; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  } finally {
    server.close();
  }
  return { closed, machine: guest.machine };
}

test("a VM stopped with a vsock connection open on a device worker: the worker exits, closes the host's end and the listening socket, and every fd", { timeout: 120_000 }, async () => {
  await warmDeviceWorkerPool();
  await warmVcpuPool();
  const before = openFiles();
  const udsPath = join(dir, "wstop.sock");
  const { closed, machine } = await stopInPartA(udsPath, virtioOnWorker("./virtio-vsock.js", "VirtioVsock", { guestCid: 8, udsPath }));
  assert.equal(closed, true, "the host's end of the connection was closed");
  assert.equal((machine.virtio[0] as VirtioWorkerTransport).exitedThread, true);
  assert.equal(existsSync(udsPath), false, "the listening socket is gone");
  // libuv keeps one fd on /dev/null per event loop from its first stream on (its EMFILE
  // reserve): a pool thread that never had a socket before keeps it for its life, not per VM.
  const vmFiles = (list: string[]) => list.filter((f) => f !== "/dev/null").sort();
  assert.deepEqual(vmFiles(openFiles()), vmFiles(before), "every fd opened for the VM is closed: eventfds, irqfds, the sockets");
});

test("a vsock device on a worker whose uds path is taken fails run() before the guest starts, saying why", { timeout: 60_000 }, async () => {
  const udsPath = join(dir, "taken.sock");
  const server = createServer().listen(udsPath);
  try {
    const guest = guestMachine("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }, { virtio: [virtioOnWorker("./virtio-vsock.js", "VirtioVsock", { guestCid: 9, udsPath })] });
    await assert.rejects(guest.machine.run(), (error: Error) => error instanceof DeviceWorkerError && /vsock socket path .*taken\.sock already exists/.test(error.message));
    assert.equal(guest.output(), "");
  } finally {
    server.close();
  }
});

test("a vsock device on a worker that cannot listen on its uds path (no such directory) fails run() before the guest starts, saying why", { timeout: 60_000 }, async () => {
  const udsPath = join(dir, "no-such-directory", "v.sock");
  const guest = guestMachine("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }, { virtio: [virtioOnWorker("./virtio-vsock.js", "VirtioVsock", { guestCid: 9, udsPath })] });
  await assert.rejects(guest.machine.run(), (error: Error) => error instanceof DeviceWorkerError && /cannot listen for vsock connections on .*no-such-directory/.test(error.message));
  assert.equal(guest.output(), "");
});

test("vsock host: a stale socket path is refused with a clear error", () => {
  const udsPath = join(dir, "stale.sock");
  const server = createServer().listen(udsPath);
  try {
    assert.throws(() => new UnixSocketVsockHost(udsPath), (error: Error) => error instanceof VsockHostError && /already exists/.test(error.message));
  } finally {
    server.close();
  }
});

test("a VM stopped with a vsock connection open ends, closes the host's end of it and the listening socket", { timeout: 120_000 }, async () => {
  const udsPath = join(dir, "stop.sock");
  const host = new UnixSocketVsockHost(udsPath);
  const vsock = new VirtioVsock({ guestCid: 7, host });
  const { closed } = await stopInPartA(udsPath, vsock, () => assert.equal(vsock.connectionCount, 1));
  assert.equal(closed, true, "the host's end of the connection was closed");
  assert.equal(vsock.connectionCount, 0);
  assert.equal(existsSync(udsPath), false, "the listening socket is gone");
});

test("vsock devices on device workers leave libuv's pool (4 threads, the whole process's) to the rest of the process: file reads still complete", { timeout: 120_000 }, async () => {
  // Each such device waits for its eventfds on a pool thread; as many devices as pool
  // threads, each holding one for the VM's life, would leave none for fs.promises.
  // Servers that take the guests' bytes and never answer: each guest waits in part A.
  const servers = [0, 1, 2, 3].map((i) => createServer(() => {}).listen(`${join(dir, `pool${i}.sock`)}_5000`));
  const guests = [0, 1, 2, 3].map((i) => {
    const udsPath = join(dir, `pool${i}.sock`);
    return guestMachine("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }, { virtio: [virtioOnWorker("./virtio-vsock.js", "VirtioVsock", { guestCid: 10 + i, udsPath })] });
  });
  const runs = guests.map((guest) => guest.machine.run());
  try {
    await Promise.all(guests.map((guest) => (guest.machine.virtio[0] as VirtioWorkerTransport).ready));
    await new Promise((resolve) => setTimeout(resolve, 200));
    let timer: NodeJS.Timeout | undefined;
    const read = await Promise.race([
      readFile(new URL(import.meta.url)).then(() => "read"),
      new Promise((resolve) => { timer = setTimeout(() => resolve("no pool thread came free in 20 s"), 20_000); }),
    ]);
    clearTimeout(timer);
    assert.equal(read, "read");
  } finally {
    for (const guest of guests) await guest.machine.stop();
    for (const server of servers) server.close();
    for (const [i, run] of runs.entries()) assert.deepEqual(await run, { reason: "stopped" }, guests[i].output());
  }
});
