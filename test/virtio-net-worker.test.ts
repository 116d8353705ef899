/**
 * virtio-net on the device-worker placement (guests/virtio-net-check.c): the same frame
 * exchange as virtio-net.test.ts with both NICs on device workers, and with one on a worker
 * and one on the main thread, through one NetSwitch whose ports the workers open from a
 * handle; no QueueNotify exit, and between two workers the frames never touch the main
 * thread. A VM stopped while it transmits lets go of its worker, its switch port and every
 * fd; a TAP opened by the worker from its name; clear errors for what cannot be opened.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { destroyDeviceWorkerPool, warmDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { NetSwitch } from "../runtime/devices/virtio/net-switch.js";
import { VirtioNet, type VirtioNetStats } from "../runtime/devices/virtio/virtio-net.js";
import { VirtioWorkerTransport } from "../runtime/devices/virtio/worker-placement.js";
import { DeviceWorkerError } from "../runtime/errors.js";
import { virtioOnWorker, type VirtioOnWorker } from "../runtime/pc-machine.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { dotted, tapSkip, tapSubnet } from "./helpers/tap-host.js";
import { guestMachine, runToReport } from "./helpers/guest-report.js";
import { openFiles } from "./helpers/virtio-guest.js";

after(() => destroyVcpuPool());
after(() => destroyDeviceWorkerPool());

const ROLE = { initiator: 0, responder: 1, endless: 2 } as const;
const COUNT = 8;
const MAC_A = "52:54:00:00:00:0a";
const MAC_B = "52:54:00:00:00:0b";

type Placement = "worker" | "main-thread";

function nic(net: NetSwitch, mac: string, placement: Placement): VirtioDevice | VirtioOnWorker {
  return placement === "worker" ? virtioOnWorker("./virtio-net.js", "VirtioNet", { switchPort: net.portHandle(), mac }) : new VirtioNet({ backend: net.port(), mac });
}

function netStats(device: VirtioDevice | VirtioOnWorker, transport: object): VirtioNetStats {
  if (device instanceof VirtioNet) return device.stats;
  assert.ok(transport instanceof VirtioWorkerTransport);
  return transport.deviceStats!.stats as VirtioNetStats;
}

for (const [a, b] of [["worker", "worker"], ["worker", "main-thread"], ["main-thread", "worker"]] as const) {
  test(`initiator on the ${a}, responder on the ${b}: frames cross the switch byte for byte, no QueueNotify exit on a worker`, { timeout: 180_000 }, async (t) => {
    const net = new NetSwitch();
    const devices = [nic(net, MAC_A, a), nic(net, MAC_B, b)];
    assert.equal(net.portCount, 2, "a handle's port exists from the moment it is made");
    const log: string[] = [];
    const initiator = guestMachine("virtio-net-check", { ROLE: ROLE.initiator, COUNT }, { virtio: [devices[0]], virtioLog: (m) => log.push(m) });
    const responder = guestMachine("virtio-net-check", { ROLE: ROLE.responder, COUNT }, { virtio: [devices[1]], virtioLog: (m) => log.push(m) });
    const [ra, rb] = await Promise.all([runToReport(initiator), runToReport(responder)]);
    assert.equal(ra.status, 0, ra.console);
    assert.equal(rb.status, 0, rb.console);
    assert.equal(ra.values.get("mac"), MAC_A, "the MAC came from the config space the worker published");
    assert.equal(rb.values.get("mac"), MAC_B);
    assert.equal(ra.values.get("link-up"), "1");
    assert.equal(ra.values.get("peer"), MAC_B);
    assert.equal(rb.values.get("peer"), MAC_A);
    assert.equal(ra.values.get("replies-checked"), String(COUNT));
    assert.equal(rb.values.get("frames-checked"), String(COUNT));
    assert.equal(ra.values.get("mismatches"), "0");
    assert.equal(rb.values.get("mismatches"), "0");
    assert.equal(ra.values.get("num-buffers-not-1"), "0");
    assert.deepEqual(log, []);
    const machines = [initiator.machine, responder.machine];
    const stats = machines.map((m, i) => netStats(devices[i], m.virtio[0]));
    t.diagnostic(`switch ${JSON.stringify(net.stats)}; a ${JSON.stringify(stats[0])}; b ${JSON.stringify(stats[1])}`);
    for (const [i, m] of machines.entries()) {
      const transport = m.virtio[0];
      assert.equal(transport.stats.faults, 0);
      assert.ok(stats[i].txFrames >= COUNT && stats[i].rxFrames >= COUNT, JSON.stringify(stats[i]));
      assert.equal(stats[i].txErrors, 0);
      if ([a, b][i] === "worker") {
        assert.ok(transport instanceof VirtioWorkerTransport);
        assert.equal(transport.stats.notifyExits, 0, "every QueueNotify ended in the kernel as an ioeventfd");
        assert.ok(transport.stats.notifications >= 2 * COUNT);
        assert.equal(transport.exitedThread, true, "the device worker exited with its VM");
      } else {
        assert.ok(transport.stats.notifyExits >= 2 * COUNT);
      }
    }
    assert.ok(net.stats.forwarded >= 2 * COUNT - 1, "after learning, frames went to one port only");
    assert.equal(net.stats.dropped, 0);
    assert.equal(net.portCount, 0, "each device closed its port when its machine stopped");
  });
}

test("a VM stopped while its NIC on a worker transmits: the worker exits, its switch port and every fd it opened are closed", { timeout: 120_000 }, async () => {
  await warmDeviceWorkerPool();
  const before = openFiles();
  const net = new NetSwitch();
  const observer = net.port();
  let frames = 0;
  let badFrames = 0;
  observer.attach({
    receive: (frame) => {
      frames++;
      // The endless sender broadcasts frames of role 2 from MAC_A: each must arrive whole.
      if (frame.length < 60 || frame[15] !== ROLE.endless || frame.subarray(6, 12).some((byte, i) => byte !== [0x52, 0x54, 0, 0, 0, 0x0a][i])) badFrames++;
    },
  });
  const guest = guestMachine("virtio-net-check", { ROLE: ROLE.endless }, { virtio: [virtioOnWorker("./virtio-net.js", "VirtioNet", { switchPort: net.portHandle(), mac: MAC_A })] });
  const transport = guest.machine.virtio[0];
  assert.ok(transport instanceof VirtioWorkerTransport);
  let ended = false;
  const running = guest.machine.run().finally(() => { ended = true; });
  while (frames < 20 && !ended) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(ended, false, `the guest stopped by itself: ${guest.output()}`);
  const during = openFiles().filter((f) => f === "anon_inode:[eventfd]").length;
  assert.ok(during > before.filter((f) => f === "anon_inode:[eventfd]").length, "the VM's eventfds (and the port's bell) are open");
  assert.equal(net.portCount, 2);
  assert.deepEqual(await guest.machine.stop(), { reason: "stopped" });
  assert.deepEqual(await running, { reason: "stopped" });
  assert.equal(transport.exitedThread, true, "the device worker exited");
  assert.equal(net.portCount, 1, "the worker's device closed its port");
  await new Promise((resolve) => setTimeout(resolve, 20));
  const settled = frames;
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(frames, settled, "nothing more came from the stopped VM");
  assert.equal(badFrames, 0, `${badFrames} of ${frames} frames were not the sender's, whole`);
  assert.ok(((transport.deviceStats?.stats as VirtioNetStats).txFrames) >= 20);
  observer.close();
  assert.deepEqual(openFiles().sort(), before.sort(), "every fd opened for the VM is closed: eventfds, irqfds, the port's bell, the VM's");
});

test("frames from a NIC on a worker to a port on another thread keep flowing while the main thread is blocked: they never touch it", { timeout: 120_000 }, async () => {
  const net = new NetSwitch();
  const counter = new Int32Array(new SharedArrayBuffer(4));
  // The receiving port, opened on a thread of its own, counts what arrives.
  const switchModule = new URL("../runtime/devices/virtio/net-switch.js", import.meta.url).href;
  const counting = new Worker(`
    const { workerData, parentPort } = await import("node:worker_threads");
    const { SwitchPort } = await import(${JSON.stringify(switchModule)});
    const port = SwitchPort.open(workerData.handle);
    port.attach({ receive: () => { Atomics.add(workerData.counter, 0, 1); } });
    parentPort.once("message", () => { port.close(); parentPort.close(); });
  `, { eval: true, workerData: { handle: net.portHandle(), counter }, type: "module" } as never);
  const guest = guestMachine("virtio-net-check", { ROLE: ROLE.endless }, { virtio: [virtioOnWorker("./virtio-net.js", "VirtioNet", { switchPort: net.portHandle(), mac: MAC_A })] });
  let ended = false;
  const running = guest.machine.run().finally(() => { ended = true; });
  try {
    while (Atomics.load(counter, 0) < 20 && !ended) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(ended, false, `the guest stopped by itself: ${guest.output()}`);
    const before = Atomics.load(counter, 0);
    // Blocks this (the main) thread: no event loop, no dispatcher, for 300 ms.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
    const during = Atomics.load(counter, 0) - before;
    assert.ok(during > 0, "frames went from the guest's NIC to the other thread's port while the main thread was blocked");
  } finally {
    await guest.machine.stop();
    await running;
    counting.postMessage("stop");
    await new Promise((resolve) => counting.once("exit", resolve));
  }
  assert.equal(net.portCount, 0);
});

for (const [what, options, cause] of [
  ["a switch port handle that is not one", { switchPort: { switch: 5, port: 0 }, mac: MAC_A }, /switch port handle is \{ switch: SharedArrayBuffer, port: number \}/],
  ["no host side", { mac: MAC_A }, /takes one host side, backend, switchPort or tap; got none/],
  ["a TAP name that cannot be one", { tap: "no spaces allowed", mac: MAC_A }, /TAP interface name 'no spaces allowed' must be 1 to 15/],
] as const) {
  test(`a NIC that cannot be built on its worker (${what}) fails run() before the guest starts, saying why`, { timeout: 60_000 }, async () => {
    const guest = guestMachine("virtio-net-check", { ROLE: ROLE.endless }, { virtio: [virtioOnWorker("./virtio-net.js", "VirtioNet", options)] });
    await assert.rejects(guest.machine.run(), (error: Error) => error instanceof DeviceWorkerError && cause.test(error.message));
    assert.equal(guest.machine.vm.state, "stopped");
    assert.equal(guest.output(), "", "the guest never ran");
  });
}

test("a NIC on a worker refused for a bad MAC closes the switch port its handle named, and says why", { timeout: 60_000 }, async () => {
  const net = new NetSwitch();
  const switchPort = net.portHandle();
  assert.equal(net.portCount, 1);
  const guest = guestMachine("virtio-net-check", { ROLE: ROLE.endless }, { virtio: [virtioOnWorker("./virtio-net.js", "VirtioNet", { switchPort, mac: "01:00:5e:00:00:01" })] });
  await assert.rejects(guest.machine.run(), (error: Error) => error instanceof DeviceWorkerError && /multicast address; a NIC needs a unicast one/.test(error.message));
  assert.equal(net.portCount, 0, "the port is free again");
});

test("a port handle opens one device's port once: a second device given it fails clearly", { timeout: 60_000 }, async () => {
  const net = new NetSwitch({ maxPorts: 2 });
  const handle = net.portHandle();
  const first = new VirtioNet({ switchPort: handle, mac: MAC_A });
  first.close();
  assert.throws(() => new VirtioNet({ switchPort: handle, mac: MAC_B }), /switch port 0 is not open/);
  net.portHandle();
  net.portHandle();
  assert.throws(() => net.portHandle(), /all its 2 ports open/);
});

// ---- a TAP the worker opens from its name ----

const tapName = `wvw${process.pid % 100000}`;
const subnet = tapSubnet(214);

test("virtio-net on a worker with a TAP it opened by name: the host kernel answers the guest's ARP request", { skip: tapSkip(tapName), timeout: 120_000 }, async () => {
  const hostIp = subnet + 1;
  const guestIp = subnet + 2;
  const guest = guestMachine("virtio-net-check", { ROLE: 4, HOST_IP: hostIp, GUEST_IP: guestIp }, { virtio: [virtioOnWorker("./virtio-net.js", "VirtioNet", { tap: tapName, mac: MAC_A })] });
  const transport = guest.machine.virtio[0] as VirtioWorkerTransport;
  // The worker makes the interface while the machine is set up; the host then gives it an address.
  await transport.ready;
  execFileSync("ip", ["addr", "add", `${dotted(hostIp)}/24`, "dev", tapName]);
  execFileSync("ip", ["link", "set", tapName, "up"]);
  const tapMac = readFileSync(`/sys/class/net/${tapName}/address`, "latin1").trim();
  const report = await runToReport(guest);
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("arp-reply-mac"), tapMac, "the host kernel answered from the TAP's MAC");
  assert.equal(report.values.get("arp-reply-ip"), String(hostIp));
  assert.equal(report.values.get("arp-reply-to-us"), "1");
  assert.equal(transport.stats.notifyExits, 0);
  assert.equal(existsSync(`/sys/class/net/${tapName}`), false, "the worker closed the TAP's fd when the VM stopped, which removed the interface");
});
