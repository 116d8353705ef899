/**
 * virtio-console with a guest of our own (guests/virtio-console-check.c, an echoing
 * driver): the host writes through a Readable, reads through a Writable, and checks the
 * echo byte for byte; with a slow Writable and more input than the device holds, both
 * directions are flow-controlled and nothing is lost; a device reset in the middle keeps
 * the host's input. Each also with the device on a device worker, its streams held on the
 * main thread by a ConsoleChannel. The same kernel under QEMU microvm echoes through QEMU's
 * virtio-serial-device and virtconsole.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createConnection } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { VirtioConsole, type VirtioConsoleStats } from "../runtime/devices/virtio/virtio-console.js";
import { ConsoleChannel } from "../runtime/devices/virtio/console-channel.js";
import { VirtioWorkerTransport } from "../runtime/devices/virtio/worker-placement.js";
import { PcMachine, virtioOnWorker } from "../runtime/pc-machine.js";
import { destroyDeviceWorkerPool, warmDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { openFiles } from "./helpers/virtio-guest.js";
import { guestMachine, noQemu, runQemuGuest, runToReport } from "./helpers/guest-report.js";

after(() => destroyVcpuPool());
after(() => destroyDeviceWorkerPool());
const dir = mkdtempSync(join(tmpdir(), "workervisor-console-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const READY = "console: ready\n";
const DONE = "console: done\n";

function pattern(length: number, seed: number): Buffer {
  return Buffer.from(Array.from({ length }, (_, i) => (i * 31 + seed + (i >> 8)) & 0xff));
}

function fnv1a(bytes: Uint8Array): number {
  let h = 2166136261;
  for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h;
}

/** A Writable that keeps everything, calling back after `delayMs` per chunk. */
function collector(highWaterMark: number, delayMs: number): { stream: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    highWaterMark,
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      if (delayMs > 0) setTimeout(callback, delayMs);
      else callback();
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
}

type Placement = "main-thread" | "worker";

/** The device on the main thread with the streams, or on a worker with a ConsoleChannel holding them. */
function consoleDevice(placement: Placement, streams: { input: PassThrough; output: Writable }, options: { highWater?: number; ringBytes?: number } = {}) {
  if (placement === "main-thread") {
    const device = new VirtioConsole({ ...streams, inputHighWater: options.highWater });
    return { device, stats: () => device.stats, channel: undefined };
  }
  const channel = new ConsoleChannel({ ...streams, ringBytes: options.ringBytes });
  const device = virtioOnWorker("./virtio-console.js", "VirtioConsole", { channel: channel.handle, inputHighWater: options.highWater });
  let machine: PcMachine | undefined;
  return {
    device, channel,
    bind: (m: PcMachine) => { machine = m; },
    stats: () => ((machine!.virtio[0] as VirtioWorkerTransport).deviceStats!.stats as VirtioConsoleStats),
  };
}

async function echo(options: { bytes: number; reset?: number; highWater?: number; outputHighWater?: number; delayMs?: number; placement?: Placement; ringBytes?: number }) {
  const input = new PassThrough();
  const output = collector(options.outputHighWater ?? 16 * 1024, options.delayMs ?? 0);
  const sent = pattern(options.bytes, 5);
  const made = consoleDevice(options.placement ?? "main-thread", { input, output: output.stream }, options);
  const guest = guestMachine("virtio-console-check", { ECHO_BYTES: options.bytes, RESET: options.reset ?? 0 }, { virtio: [made.device] });
  made.bind?.(guest.machine);
  let waitForEcho: NodeJS.Timeout | undefined;
  if (options.reset) {
    // Half, then the rest once the guest says (on COM1) it has re-initialised: input that
    // reaches its buffers before the reset is discarded with them, as the spec says.
    const half = options.bytes / 2;
    input.write(sent.subarray(0, half));
    waitForEcho = setInterval(() => {
      if (!guest.output().includes("reinitialised-after=")) return;
      clearInterval(waitForEcho);
      input.end(sent.subarray(half));
    }, 5);
  } else {
    // All the input at once, before the guest is even up: the device holds what it may, the
    // PassThrough the rest, paused.
    input.end(sent);
  }
  const report = await runToReport(guest).finally(() => clearInterval(waitForEcho));
  // On a worker the last output may still be in the channel's ring: the channel ends once it is all out.
  while (made.channel?.open) await new Promise((resolve) => setTimeout(resolve, 5));
  await new Promise<void>((resolve) => output.stream.end(resolve));
  return { report, sent, got: output.bytes(), console: { stats: made.stats() }, machine: guest.machine };
}

for (const placement of ["main-thread", "worker"] as const) {
test(`virtio-console (${placement}): the guest echoes what the host writes, byte for byte, and says ready and done around it`, { timeout: 120_000 }, async () => {
  const { report, sent, got, console, machine } = await echo({ bytes: 4096, placement });
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("echoed"), "4096");
  assert.equal(report.values.get("fnv"), String(fnv1a(sent)), "the guest got the host's bytes in order");
  assert.equal(report.values.get("emerg-write"), "1");
  assert.deepEqual(got, Buffer.concat([Buffer.from(READY), sent, Buffer.from(DONE), Buffer.from("!")]));
  assert.equal(console.stats.bytesIn, 4096);
  assert.equal(machine.virtio[0].stats.faults, 0);
});

test(`virtio-console flow control (${placement}): input larger than the device holds pauses the Readable, a slow Writable leaves the guest's output in its ring; nothing is lost`, { timeout: 180_000 }, async (t) => {
  // On a worker, small rings: the channel's flow control is what holds each side back.
  const { report, sent, got, console, machine } = await echo({ bytes: 16 * 1024, highWater: 1024, outputHighWater: 256, delayMs: 1, placement, ringBytes: 1024 });
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("fnv"), String(fnv1a(sent)));
  assert.deepEqual(got, Buffer.concat([Buffer.from(READY), sent, Buffer.from(DONE), Buffer.from("!")]));
  t.diagnostic(`stats ${JSON.stringify(console.stats)}`);
  assert.ok(console.stats.inputPauses > 0, "the input stream was paused");
  assert.ok(console.stats.outputStalls > 0, "the output stream pushed back");
  if (placement === "worker") assert.equal(machine.virtio[0].stats.notifyExits, 0);
});

test(`virtio-console reset and re-initialisation half way (${placement}): the echo carries on, byte for byte`, { timeout: 120_000 }, async () => {
  const { report, sent, got, machine } = await echo({ bytes: 4096, reset: 1, placement });
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("reinitialised-after"), "2048");
  assert.equal(report.values.get("fnv"), String(fnv1a(sent)));
  assert.deepEqual(got, Buffer.concat([Buffer.from(READY), sent, Buffer.from(DONE), Buffer.from("!")]));
  assert.ok(machine.virtio[0].stats.resets >= 2);
});
}

test("a VM stopped in the middle of console I/O ends, and the device lets go of both streams", { timeout: 120_000 }, async () => {
  const input = new PassThrough();
  const output = collector(1024, 0);
  const console = new VirtioConsole({ input, output: output.stream });
  const guest = guestMachine("virtio-console-check", { ECHO_BYTES: 1 << 30, RESET: 0 }, { virtio: [console] });
  const running = guest.machine.run();
  const feed = setInterval(() => input.write(pattern(512, 1)), 2);
  try {
    while (console.stats.bytesIn < 4096) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(input.listenerCount("data"), 1);
    assert.deepEqual(await guest.machine.stop(), { reason: "stopped" });
    assert.deepEqual(await running, { reason: "stopped" });
  } finally {
    clearInterval(feed);
  }
  assert.equal(input.listenerCount("data"), 0, "the input stream is no longer read");
  assert.equal(output.stream.listenerCount("drain"), 0);
  const before = console.stats.bytesIn;
  input.write(pattern(512, 2));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(console.stats.bytesIn, before);
});

test("a VM stopped in the middle of console I/O on a device worker: the worker exits, its eventfds close, and the channel lets go of both streams", { timeout: 120_000 }, async () => {
  await warmDeviceWorkerPool();
  const before = openFiles();
  const input = new PassThrough();
  const output = collector(1024, 0);
  const made = consoleDevice("worker", { input, output: output.stream });
  const guest = guestMachine("virtio-console-check", { ECHO_BYTES: 1 << 30, RESET: 0 }, { virtio: [made.device] });
  made.bind?.(guest.machine);
  const transport = guest.machine.virtio[0] as VirtioWorkerTransport;
  const running = guest.machine.run();
  const feed = setInterval(() => input.write(pattern(512, 1)), 2);
  try {
    while (output.bytes().length < 4096) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(input.listenerCount("data"), 1);
    assert.deepEqual(await guest.machine.stop(), { reason: "stopped" });
    assert.deepEqual(await running, { reason: "stopped" });
  } finally {
    clearInterval(feed);
  }
  assert.equal(transport.exitedThread, true);
  for (let i = 0; i < 100 && made.channel!.open; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(made.channel!.open, false, "the device closed the channel, and its main end let go");
  assert.equal(input.listenerCount("data"), 0, "the input stream is no longer read");
  assert.equal(output.stream.listenerCount("drain"), 0);
  assert.ok(made.stats().bytesIn >= 4096);
  assert.deepEqual(openFiles().sort(), before.sort(), "every fd opened for the VM is closed: eventfds, irqfds, the channel's bells");
});

test("a console channel handle serves one device: a second one built from it after the first closed fails clearly", () => {
  const channel = new ConsoleChannel();
  new VirtioConsole({ channel: channel.handle }).close();
  assert.throws(() => new VirtioConsole({ channel: channel.handle }), /console channel is closed/);
  assert.throws(() => new VirtioConsole({ channel: { shared: 1, ringBytes: 2 } as never }), /console channel handle is \{ shared: SharedArrayBuffer/);
});

test("under QEMU microvm: the same echo kernel through QEMU's virtio-serial-device and virtconsole", { skip: noQemu, timeout: 120_000 }, async () => {
  const socket = join(dir, "console.sock");
  const sent = pattern(4096, 9);
  const running = runQemuGuest("virtio-console-check", { ECHO_BYTES: 4096, RESET: 0 }, [
    "-chardev", `socket,id=c0,path=${socket},server=on,wait=off`, "-device", "virtio-serial-device", "-device", "virtconsole,chardev=c0",
  ]);
  const chunks: Buffer[] = [];
  let connection;
  for (let tries = 0; ; tries++) {
    try {
      connection = await new Promise<import("node:net").Socket>((resolve, reject) => {
        const c = createConnection(socket, () => resolve(c)).on("error", reject);
      });
      break;
    } catch (error) {
      if (tries > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  connection.on("data", (chunk: Buffer) => chunks.push(chunk));
  connection.write(sent);
  const report = await running;
  connection.destroy();
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("fnv"), String(fnv1a(sent)));
  const got = Buffer.concat(chunks);
  // QEMU's chardev drops what the guest writes before the test's socket connects, which may
  // be the ready line; the echo comes only after the test writes, so it is all there.
  const echo = Buffer.concat([sent, Buffer.from(DONE)]);
  assert.ok(got.indexOf(echo) >= 0 && got.subarray(0, got.indexOf(echo)).every((b, i) => b === READY.charCodeAt(i)), `QEMU gave back ${got.length} bytes, not [ready line] + the echo + done`);
});
