/**
 * virtio-net with guests of our own (guests/virtio-net-check.c): two PC machines in one
 * process joined by the in-process switch exchange frames with known patterns, each side
 * checking the other's byte for byte; a device reset in the middle; a hostile transmit
 * header; a VM stopped while it transmits. The same kernels under two QEMU microvms joined
 * by `-netdev socket` check the driver against QEMU's virtio-net-device, and a TAP interface
 * (when the host allows one) puts the host kernel on the other end.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { TapBackend, TapError } from "../runtime/devices/virtio/net-tap.js";
import { NetSwitch } from "../runtime/devices/virtio/net-switch.js";
import { VirtioNet } from "../runtime/devices/virtio/virtio-net.js";
import { dotted, tapSkip, tapSubnet } from "./helpers/tap-host.js";
import { guestMachine, noQemu, runQemuGuest, runToReport } from "./helpers/guest-report.js";

after(() => destroyVcpuPool());

const ROLE = { initiator: 0, responder: 1, endless: 2, malformed: 3 } as const;
const COUNT = 8;
const MAC_A = "52:54:00:00:00:0a";
const MAC_B = "52:54:00:00:00:0b";

async function exchange(reset: number) {
  const net = new NetSwitch();
  const a = new VirtioNet({ backend: net.port(), mac: MAC_A });
  const b = new VirtioNet({ backend: net.port(), mac: MAC_B });
  const log: string[] = [];
  const initiator = guestMachine("virtio-net-check", { ROLE: ROLE.initiator, COUNT, RESET: reset }, { virtio: [a], virtioLog: (m) => log.push(m) });
  const responder = guestMachine("virtio-net-check", { ROLE: ROLE.responder, COUNT }, { virtio: [b], virtioLog: (m) => log.push(m) });
  const [ra, rb] = await Promise.all([runToReport(initiator), runToReport(responder)]);
  return { net, a, b, ra, rb, log, machines: [initiator.machine, responder.machine] };
}

test("two guests on the in-process switch exchange frames, each checking the other's byte for byte", { timeout: 180_000 }, async (t) => {
  const { net, a, b, ra, rb, log, machines } = await exchange(0);
  assert.equal(ra.status, 0, ra.console);
  assert.equal(rb.status, 0, rb.console);
  assert.equal(ra.values.get("mac"), MAC_A, "the MAC came from the config space");
  assert.equal(rb.values.get("mac"), MAC_B);
  assert.equal(ra.values.get("link-up"), "1");
  assert.equal(ra.values.get("peer"), MAC_B, "the replies came from the responder's MAC");
  assert.equal(rb.values.get("peer"), MAC_A);
  assert.equal(ra.values.get("replies-checked"), String(COUNT));
  assert.equal(rb.values.get("frames-checked"), String(COUNT));
  assert.equal(ra.values.get("mismatches"), "0");
  assert.equal(rb.values.get("mismatches"), "0");
  assert.equal(ra.values.get("num-buffers-not-1"), "0", "num_buffers is 1 in every received header");
  assert.equal(rb.values.get("num-buffers-not-1"), "0");
  t.diagnostic(`initiator resent ${ra.values.get("retransmits")}; switch ${JSON.stringify(net.stats)}; a ${JSON.stringify(a.stats)}; b ${JSON.stringify(b.stats)}`);
  assert.ok(a.stats.txFrames >= COUNT && b.stats.txFrames >= COUNT);
  assert.ok(a.stats.rxFrames >= COUNT && b.stats.rxFrames >= COUNT);
  assert.equal(a.stats.txErrors + b.stats.txErrors, 0);
  assert.ok(net.stats.forwarded >= 2 * COUNT - 1, "after learning, frames went to one port only");
  assert.deepEqual(log, []);
  for (const m of machines) assert.equal(m.virtio[0].stats.faults, 0);
  assert.equal(net.portCount, 0, "stopping the machines closed both switch ports");
});

test("virtio-net reset and re-initialisation in the middle of the exchange: the guest carries on where it was", { timeout: 180_000 }, async () => {
  const { ra, rb, a, machines } = await exchange(1);
  assert.equal(ra.status, 0, ra.console);
  assert.equal(rb.status, 0, rb.console);
  assert.equal(ra.values.get("reinitialised-at"), String(COUNT / 2));
  assert.equal(ra.values.get("replies-checked"), String(COUNT));
  assert.equal(rb.values.get("frames-checked"), String(COUNT));
  assert.ok(machines[0].virtio[0].stats.resets >= 2, "the driver reset the device twice (boot and half way)");
  assert.equal(a.backlogLength, 0);
});

test("virtio-net hostile transmit: NEEDS_CSUM without the feature is dropped and completed, a chain shorter than the header needs a reset", { timeout: 120_000 }, async () => {
  const net = new NetSwitch();
  const observer = net.port();
  const seen: Uint8Array[] = [];
  observer.attach({ receive: (frame) => seen.push(frame) });
  const nic = new VirtioNet({ backend: net.port(), mac: MAC_A });
  const log: string[] = [];
  const guest = guestMachine("virtio-net-check", { ROLE: ROLE.malformed }, { virtio: [nic], virtioLog: (m) => log.push(m) });
  const report = await runToReport(guest);
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("csum-request-used"), "1", "the request came back (used length 0)");
  assert.equal(report.values.get("short-header-needs-reset"), "1");
  assert.equal(report.values.get("sent-after-reset"), "1");
  assert.equal(nic.stats.txErrors, 1);
  assert.equal(nic.stats.txFrames, 1, "only the frame after the reset went out");
  assert.equal(log.length, 1, log.join(" | "));
  assert.match(log[0], /less than the 12-byte virtio_net_hdr/);
  assert.equal(seen.length, 1, "the switch carried the one good frame");
  assert.equal(seen[0][15], ROLE.malformed);
  observer.close();
});

test("a VM stopped while it transmits ends, and its switch port is closed", { timeout: 120_000 }, async () => {
  const net = new NetSwitch();
  const observer = net.port();
  let frames = 0;
  observer.attach({ receive: () => { frames++; } });
  const nic = new VirtioNet({ backend: net.port(), mac: MAC_A });
  // Receive buffers with no frame for them must not keep the transport serving the queue.
  let rxServes = 0;
  const processQueue = nic.processQueue.bind(nic);
  nic.processQueue = (index, queue, context) => {
    if (index === 0) rxServes++;
    return processQueue(index, queue, context);
  };
  const guest = guestMachine("virtio-net-check", { ROLE: ROLE.endless }, { virtio: [nic] });
  let ended = false;
  const running = guest.machine.run().finally(() => { ended = true; });
  while (frames < 20 && !ended) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(ended, false, `the guest stopped by itself: ${guest.output()}`);
  assert.ok(rxServes <= 2, `the idle receive queue was served ${rxServes} times (once per notify, not in a loop)`);
  assert.equal(net.portCount, 2);
  assert.deepEqual(await guest.machine.stop(), { reason: "stopped" });
  assert.deepEqual(await running, { reason: "stopped" });
  assert.equal(net.portCount, 1, "the machine closed the NIC's port");
  // Frames sent before the stop may still be in the observer's ring: they land first.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const after = frames;
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(frames, after, "nothing more came from the stopped VM");
  observer.close();
});

test("frames for a guest that gives no more buffers wait in a bounded backlog, then are dropped and counted", { timeout: 120_000 }, async () => {
  const net = new NetSwitch();
  const observer = net.port();
  let seen = 0;
  observer.attach({ receive: () => { seen++; } });
  const BACKLOG = 8;
  const nic = new VirtioNet({ backend: net.port(), mac: MAC_A, rxBacklog: BACKLOG });
  // The endless sender posted its 4 receive buffers once and never takes a frame.
  const guest = guestMachine("virtio-net-check", { ROLE: ROLE.endless }, { virtio: [nic] });
  const running = guest.machine.run();
  while (seen < 5) await new Promise((resolve) => setTimeout(resolve, 5));
  const frame = new Uint8Array(60);
  frame.set([0x52, 0x54, 0, 0, 0, 0x0a, 0x52, 0x54, 0, 0, 0, 0x0c, 0x88, 0xb5]);
  const SENT = 100;
  for (let i = 0; i < SENT; i++) observer.transmit(frame);
  await new Promise((resolve) => setTimeout(resolve, 50));
  // All arrived at once: BACKLOG were queued, the rest dropped; then the guest's four buffers took four.
  assert.equal(nic.stats.rxFrames, 4, "the four buffers the guest gave were filled");
  assert.equal(nic.backlogLength, BACKLOG - 4);
  assert.equal(nic.stats.rxDropped, SENT - BACKLOG);
  observer.transmit(frame);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(nic.backlogLength, BACKLOG - 3, "room again for one");
  await guest.machine.stop();
  await running;
  assert.equal(nic.stats.rxDropped, SENT + 1 - 4, "the frames still waiting at the stop count as dropped too");
  observer.close();
});

// ---- the same kernels under QEMU -M microvm, against QEMU's virtio-net-device ----

/**
 * QEMU 7.2 leaves num_buffers 0 in received headers when MRG_RXBUF is not negotiated; the
 * spec (5.1.6.3) says 1, and ours gives 1 (checked above). So here it is only reported.
 */
test("under QEMU microvm: the same kernels exchange and check frames through QEMU's virtio-net-device, two QEMUs joined by -netdev socket", { skip: noQemu, timeout: 180_000 }, async (t) => {
  const port = 20000 + (process.pid % 20000);
  const listener = runQemuGuest("virtio-net-check", { ROLE: ROLE.responder, COUNT }, [
    "-netdev", `socket,id=n0,listen=127.0.0.1:${port}`, "-device", `virtio-net-device,netdev=n0,mac=${MAC_B}`,
  ]);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const connector = runQemuGuest("virtio-net-check", { ROLE: ROLE.initiator, COUNT }, [
    "-netdev", `socket,id=n0,connect=127.0.0.1:${port}`, "-device", `virtio-net-device,netdev=n0,mac=${MAC_A}`,
  ]);
  const [ra, rb] = await Promise.all([connector, listener]);
  assert.equal(ra.status, 0, ra.console);
  assert.equal(rb.status, 0, rb.console);
  assert.equal(ra.values.get("mac"), MAC_A);
  assert.equal(ra.values.get("link-up"), "1");
  assert.equal(ra.values.get("peer"), MAC_B);
  assert.equal(ra.values.get("replies-checked"), String(COUNT));
  assert.equal(rb.values.get("frames-checked"), String(COUNT));
  t.diagnostic(`QEMU: received headers with num_buffers != 1: ${ra.values.get("num-buffers-not-1")} and ${rb.values.get("num-buffers-not-1")}`);
});

// ---- a host TAP interface: the host kernel as the guest's peer ----

const tapName = `wvt${process.pid % 100000}`;
const subnet = tapSubnet(213);

test("virtio-net on a TAP interface: the guest's ARP request reaches the host kernel, which answers it and learns the guest's MAC", { skip: tapSkip(tapName), timeout: 120_000 }, async () => {
  const tap = new TapBackend(tapName);
  const nic = new VirtioNet({ backend: tap, mac: MAC_A });
  const hostIp = subnet + 1;
  const guestIp = subnet + 2;
  try {
    execFileSync("ip", ["addr", "add", `${dotted(hostIp)}/24`, "dev", tapName]);
    execFileSync("ip", ["link", "set", tapName, "up"]);
    const tapMac = readFileSync(`/sys/class/net/${tapName}/address`, "latin1").trim();
    const guest = guestMachine("virtio-net-check", { ROLE: 4, HOST_IP: hostIp, GUEST_IP: guestIp }, { virtio: [nic] });
    const report = await runToReport(guest);
    assert.equal(report.status, 0, report.console);
    assert.equal(report.values.get("arp-reply-mac"), tapMac, "the host kernel answered from the TAP's MAC");
    assert.equal(report.values.get("arp-reply-ip"), String(hostIp));
    assert.equal(report.values.get("arp-reply-to-us"), "1");
    const neighbours = readFileSync("/proc/net/arp", "latin1");
    assert.match(neighbours, new RegExp(`^${dotted(guestIp).replaceAll(".", "\\.")}\\s+0x1\\s+0x\\d+\\s+${MAC_A}\\s+\\S+\\s+${tapName}$`, "m"), `the kernel learnt the guest's MAC:\n${neighbours}`);
    assert.ok(tap.stats.framesOut >= 1 && tap.stats.framesIn >= 1, JSON.stringify(tap.stats));
  } finally {
    nic.close();
  }
  // The fd closes once the pending poll(2) has woken (on the pool thread): soon, not at once.
  for (let i = 0; i < 200 && existsSync(`/sys/class/net/${tapName}`); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(existsSync(`/sys/class/net/${tapName}`), false, "closing the TAP's fd removed the interface");
});

test("TAP errors name the cause: a bad interface name, an interface another fd holds", { skip: tapSkip(tapName) }, async () => {
  assert.throws(() => new TapBackend("no spaces allowed"), (error: Error) => error instanceof TapError && /must be 1 to 15/.test(error.message));
  const first = new TapBackend(`${tapName}b`);
  try {
    assert.throws(() => new TapBackend(`${tapName}b`), (error: Error) => error instanceof TapError && /in use by another process/.test(error.message));
  } finally {
    first.close();
  }
});
