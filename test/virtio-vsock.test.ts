/**
 * virtio-vsock with a guest of our own (guests/virtio-vsock-check.c): Firecracker's host
 * contract over Unix sockets, one connection each way with the data checked on both sides,
 * the guest's small credit respected by the device, clean SHUTDOWN/RST closes; a packet
 * for no connection answered with RST; a VM stopped with connections open closes them.
 * No QEMU cross-check: QEMU's vhost-vsock-device needs /dev/vhost-vsock (absent on this
 * host's kernel) and its host side is AF_VSOCK, which Node cannot open.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { VirtioVsock } from "../runtime/devices/virtio/virtio-vsock.js";
import { UnixSocketVsockHost, VsockHostError } from "../runtime/devices/virtio/vsock-host.js";
import { guestMachine, runToReport } from "./helpers/guest-report.js";
import { A_BYTES, B_BYTES, hostConnect, patternA, patternB, xorServer } from "./helpers/vsock-peer.js";

after(() => destroyVcpuPool());
const dir = mkdtempSync(join(tmpdir(), "workervisor-vsock-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("virtio-vsock: a guest-initiated and a host-initiated connection (Firecracker's Unix sockets), data checked both ways, credit respected, clean closes", { timeout: 180_000 }, async () => {
  const udsPath = join(dir, "v.sock");
  const host = new UnixSocketVsockHost(udsPath);
  const vsock = new VirtioVsock({ guestCid: 42, host });
  const peer = xorServer(udsPath, 5000);
  const guest = guestMachine("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }, { virtio: [vsock] });
  await host.listening;
  const running = runToReport(guest);
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
  assert.ok(vsock.stats.creditStalls >= 3, `the guest's 1 KiB of credit made the device wait (${vsock.stats.creditStalls} times) for ${B_BYTES} bytes; the guest checks it never got more than its credit`);
  assert.equal(vsock.connectionCount, 0, "both connections closed cleanly");
  assert.equal(vsock.stats.connectionsOpened, 2);
  assert.equal(guest.machine.virtio[0].stats.faults, 0);
  assert.equal(existsSync(udsPath), false, "the machine closed the listening socket when it stopped");
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
  let bytes = 0;
  let closed = false;
  // A server that takes the guest's bytes and never answers: the guest waits in part A.
  const server = createServer((socket) => {
    socket.on("data", (chunk: Buffer) => { bytes += chunk.length; });
    socket.on("close", () => { closed = true; });
  }).listen(`${udsPath}_5000`);
  const guest = guestMachine("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }, { virtio: [vsock] });
  const running = guest.machine.run();
  try {
    while (bytes < A_BYTES) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(vsock.connectionCount, 1);
    assert.deepEqual(await guest.machine.stop(), { reason: "stopped" });
    assert.deepEqual(await running, { reason: "stopped" });
    for (let i = 0; i < 100 && !closed; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  } finally {
    server.close();
  }
  assert.equal(closed, true, "the host's end of the connection was closed");
  assert.equal(vsock.connectionCount, 0);
  assert.equal(existsSync(udsPath), false, "the listening socket is gone");
});
