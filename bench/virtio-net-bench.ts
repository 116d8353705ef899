/**
 * The network part of `workervisor bench virtio`: frames per second and MB/s between two
 * guests (guests/virtio-net-check.c, ROLE 5 sends COUNT frames of SIZE bytes with DEPTH in
 * flight, ROLE 6 receives and counts them), under workervisor with both NICs on one
 * NetSwitch (devices on the main thread, or on device workers) and under two QEMU -M microvm
 * joined by `-netdev socket` (TCP, listen/connect), same kernels. The receiver prints "go" at
 * the first frame and its count at the END frame: the time between those lines on its
 * console is what is measured, for both VMMs alike. Our switch drops what a receiver has no
 * room for (counted); QEMU's socket netdev holds the sender back instead, so the rate is of
 * frames received. Rounds run every peer once per workload, the order alternating.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { PcMachine, virtioOnWorker, type VirtioOnWorker } from "../runtime/pc-machine.js";
import { NetSwitch } from "../runtime/devices/virtio/net-switch.js";
import { VirtioNet } from "../runtime/devices/virtio/virtio-net.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { buildMultibootGuest } from "../test/helpers/flat-guest.js";
import { qemuArgs } from "../test/helpers/guest-report.js";
import { type Column, fitNumber, tableLine, tableWidth, wrapText } from "./fixed-width.js";
import { median, ratioSpread } from "./paired-ratios.js";
import { consoleStopwatch } from "./console-stopwatch.js";
import type { GuestCpl } from "./virtio-bench.js";

const GUEST_MEMORY_MIB = 64;
const GUARD_MS = 120_000;
const MAC_SENDER = "52:54:00:00:01:0a";
const MAC_RECEIVER = "52:54:00:00:01:0b";
const ROLE_SENDER = 5;
const ROLE_RECEIVER = 6;
/** Frames in flight at the sender and receive buffers at the receiver; VQ_SIZE holds twice DEPTH. */
const DEPTH = 32;
const VQ_SIZE = 64;

export interface NetWorkload {
  name: string;
  /** Bytes of each Ethernet frame (no FCS). */
  size: number;
  frames: number;
  /** Where the guests' drivers run: 3 (the long-mode kit, native on PVM) or 0 (the 32-bit kit). */
  cpl?: GuestCpl;
}

export function netWorkloads(quick: boolean, cpls: readonly GuestCpl[] = [3]): NetWorkload[] {
  const n = (count: number) => Math.max(50, Math.round(count * (quick ? 0.2 : 1)));
  return cpls.flatMap((cpl) => [
    { name: `net 64 B, CPL${cpl}`, size: 64, frames: n(cpl === 3 ? 20000 : 4000), cpl },
    { name: `net 1500 B, CPL${cpl}`, size: 1500, frames: n(cpl === 3 ? 10000 : 2000), cpl },
  ]);
}

export type NetPeerName = "main thread" | "device worker" | "QEMU microvm";
export const NET_PEERS: readonly NetPeerName[] = ["main thread", "device worker", "QEMU microvm"];

export interface NetMeasurement {
  seconds: number;
  /** Frames the receiver counted. */
  received: number;
  /** Frames received per second. */
  rate: number;
  /** Main-thread CPU per frame received (ours only). */
  mainCpuMicrosPerFrame?: number;
}

/** The path of the kernel playing `role` in `workload`. */
function kernelFor(workload: NetWorkload, role: number): string {
  return buildMultibootGuest("virtio-net-check", { ROLE: role, COUNT: workload.frames, SIZE: workload.size, DEPTH, VQ_SIZE, RX_BUFS: DEPTH }, { cpl: workload.cpl ?? 0 });
}

/** The receiver's console: "go", then "received=<n>". */
function receiverClock() {
  const stopwatch = consoleStopwatch(/^received=/);
  return {
    push: stopwatch.push,
    result(what: string): NetMeasurement {
      const seconds = stopwatch.seconds(what);
      const received = Number(stopwatch.endLine!.slice("received=".length));
      if (!(received > 0)) throw new Error(`${what}: the receiver reported ${stopwatch.endLine}`);
      return { seconds, received, rate: received / seconds, mainCpuMicrosPerFrame: stopwatch.mainCpuNs / 1000 / received };
    },
  };
}

async function runOurs(workload: NetWorkload, placement: "main-thread" | "worker"): Promise<NetMeasurement> {
  const net = new NetSwitch();
  const nic = (mac: string): VirtioDevice | VirtioOnWorker => placement === "worker"
    ? virtioOnWorker("./virtio-net.js", "VirtioNet", { switchPort: net.portHandle(), mac })
    : new VirtioNet({ backend: net.port(), mac });
  const clock = receiverClock();
  const senderConsole: number[] = [];
  const receiver = new PcMachine({ kernel: readFileSync(kernelFor(workload, ROLE_RECEIVER)), console: clock.push, virtio: [nic(MAC_RECEIVER)], memory: GUEST_MEMORY_MIB << 20 });
  const sender = new PcMachine({ kernel: readFileSync(kernelFor(workload, ROLE_SENDER)), console: (b) => senderConsole.push(b), virtio: [nic(MAC_SENDER)], memory: GUEST_MEMORY_MIB << 20 });
  const guard = setTimeout(() => void Promise.all([sender.stop(), receiver.stop()]), GUARD_MS);
  let results;
  try {
    results = await Promise.all([receiver.run(), sender.run()]);
  } finally {
    clearTimeout(guard);
  }
  const what = `${workload.name} (${placement})`;
  for (const [i, result] of results.entries()) {
    if (result.reason !== "debug-exit" || result.status !== 0) {
      throw new Error(`${what}: the ${i === 0 ? "receiver" : "sender"} ended by ${result.reason} ${result.status ?? ""} (sender: ${Buffer.from(senderConsole).toString("latin1")})`);
    }
  }
  return clock.result(what);
}

function runQemuGuest(args: string[], onByte: (byte: number) => void, what: string): Promise<void> {
  const qemu = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  qemu.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  qemu.stdout.on("data", (chunk: Buffer) => chunk.forEach(onByte));
  return new Promise((resolve, reject) => {
    const guard = setTimeout(() => qemu.kill("SIGKILL"), GUARD_MS);
    qemu.on("error", reject);
    qemu.on("exit", (code) => {
      clearTimeout(guard);
      // isa-debug-exit ends QEMU with (status << 1) | 1: 1 is status 0.
      if (code === 1) resolve();
      else reject(new Error(`${what} under QEMU ended with ${code}: ${stderr.trim()}`));
    });
  });
}

let nextQemuPort = 20000 + ((process.pid * 7) % 20000);

async function runQemu(workload: NetWorkload): Promise<NetMeasurement> {
  const port = nextQemuPort++;
  const clock = receiverClock();
  const netdev = (how: string, mac: string) => ["-netdev", `socket,id=n0,${how}=127.0.0.1:${port}`, "-device", `virtio-net-device,netdev=n0,mac=${mac}`];
  const receiver = runQemuGuest(qemuArgs(kernelFor(workload, ROLE_RECEIVER), netdev("listen", MAC_RECEIVER)), clock.push, `${workload.name} receiver`);
  // The listener must be up before the connector starts (QEMU does not retry a connect).
  await new Promise((resolve) => setTimeout(resolve, 500));
  const sender = runQemuGuest(qemuArgs(kernelFor(workload, ROLE_SENDER), netdev("connect", MAC_SENDER)), () => {}, `${workload.name} sender`);
  await Promise.all([receiver, sender]);
  const measured = clock.result(`${workload.name} (QEMU)`);
  return { seconds: measured.seconds, received: measured.received, rate: measured.rate };
}

/** One peer's run of one workload. */
export function runNetPeer(workload: NetWorkload, peer: NetPeerName): Promise<NetMeasurement> {
  if (peer === "QEMU microvm") return runQemu(workload);
  return runOurs(workload, peer === "main thread" ? "main-thread" : "worker");
}

/** Runs `rounds` rounds of every workload on every peer, alternating the peers' order. */
export async function runNetBench(list: readonly NetWorkload[], rounds: number, withQemu: boolean, log: (line: string) => void): Promise<Map<string, Map<NetPeerName, NetMeasurement[]>>> {
  const results = new Map<string, Map<NetPeerName, NetMeasurement[]>>();
  const peers = NET_PEERS.filter((p) => withQemu || p !== "QEMU microvm");
  for (let round = 0; round < rounds; round++) {
    for (const workload of list) {
      const byPeer = results.get(workload.name) ?? new Map(peers.map((p) => [p, [] as NetMeasurement[]]));
      results.set(workload.name, byPeer);
      const order = round % 2 === 1 ? [...peers].reverse() : peers;
      for (const peer of order) {
        const measured = await runNetPeer(workload, peer);
        byPeer.get(peer)!.push(measured);
        log(`round ${round + 1}, ${workload.name}, ${peer}: ${measured.received}/${workload.frames} frames, ${Math.round(measured.rate)} frames/s`);
      }
    }
  }
  return results;
}

const COLUMNS: Column[] = [
  { title: "workload", width: 17, left: true },
  { title: "peer", width: 13, left: true },
  { title: "frames/s", width: 8 },
  { title: "MB/s", width: 7 },
  { title: "vs QEMU", width: 7 },
  { title: "spread", width: 10 },
  { title: "received", width: 8 },
  { title: "main µs/frame", width: 13 },
];

export function formatNetTable(results: Map<string, Map<NetPeerName, NetMeasurement[]>>, workloads: readonly NetWorkload[], rounds: number): string {
  const lines = [tableLine(COLUMNS, COLUMNS.map((c) => c.title)), "-".repeat(tableWidth(COLUMNS))];
  for (const workload of workloads) {
    const peers = results.get(workload.name);
    if (peers === undefined) continue;
    const qemu = peers.get("QEMU microvm");
    for (const [peer, runs] of peers) {
      if (runs.length === 0) continue;
      const rate = median(runs.map((r) => r.rate));
      const pairs = qemu === undefined || peer === "QEMU microvm" ? null
        : ratioSpread(runs.slice(0, qemu.length).map((r, i) => r.rate / qemu[i].rate));
      const cpu = runs.map((r) => r.mainCpuMicrosPerFrame).filter((v): v is number => v !== undefined);
      lines.push(tableLine(COLUMNS, [
        workload.name, peer, fitNumber(rate, 8, 0), fitNumber((rate * workload.size) / 1e6, 7, 3),
        pairs === null ? "-" : fitNumber(pairs.median, 7, 2),
        pairs === null ? "-" : `${fitNumber(pairs.min, 4, 2)}..${fitNumber(pairs.max, 4, 2)}`,
        `${fitNumber((100 * median(runs.map((r) => r.received))) / workload.frames, 7, 1)}%`,
        cpu.length === 0 ? "-" : fitNumber(median(cpu), 13, 1),
      ]));
    }
  }
  lines.push(...wrapText(
    `Two guests, one sending ${DEPTH} frames in flight, one receiving, their drivers at CPL3 (long-mode kit) or CPL0 (32-bit kit). Ours: both NICs on one in-process switch, devices on the main thread or on device workers; QEMU: two microvms joined by -netdev socket (TCP). ` +
      `Medians of ${rounds} rounds. frames/s and MB/s: frames the receiver counted, per second between its first frame and END. vs QEMU: ours/QEMU frames/s, median of per-round ratios, spread min..max. ` +
      "received: frames counted of those sent (our switch drops what a receiver has no room for; QEMU's socket holds the sender back). main µs/frame: main-thread CPU per frame (ours only).",
  ));
  return lines.join("\n") + "\n";
}

/** What `workervisor bench virtio` prints after its block and entropy table. */
export async function netBenchSection(rounds: number, quick: boolean, withQemu: boolean, log: (line: string) => void, cpls: readonly GuestCpl[] = [3]): Promise<string> {
  const list = netWorkloads(quick, cpls);
  return formatNetTable(await runNetBench(list, rounds, withQemu, log), list, rounds);
}
