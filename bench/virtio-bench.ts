/**
 * `workervisor bench virtio`: virtio-blk and virtio-rng throughput from the same guest-kit
 * kernel (guests/virtio-check.c) under workervisor, with the device on the main thread and
 * on a device worker, and under QEMU -M microvm with KVM and the same image. Workloads: 4 KiB
 * random reads at queue depth 1 and 32, sequential 64 KiB reads, 64 KiB entropy requests.
 * Each round runs every peer once per workload, the order alternating between rounds, so a
 * drift of this shared machine hits all of them; ratios are medians over rounds with their
 * min..max. The guest prints "go" when its device is ready and a count when done: the time
 * between those lines is what is measured, the same way for both VMMs.
 * Per request, ours also reports userspace exits, QueueNotify exits, main-thread CPU
 * (CLOCK_THREAD_CPUTIME_ID of the main thread: process.cpuUsage() would count every thread)
 * and, on a device worker, that worker's CPU.
 * The guest's driver runs at CPL3 (the long-mode kit, which PVM runs natively) or at CPL0
 * (the 32-bit kit, which PVM emulates), or both, each row saying which.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PcMachine, virtioOnWorker, type VirtioOnWorker } from "../runtime/pc-machine.js";
import { VirtioBlk } from "../runtime/devices/virtio/virtio-blk.js";
import { VirtioRng } from "../runtime/devices/virtio/virtio-rng.js";
import type { VirtioDevice } from "../runtime/devices/virtio/virtio-device.js";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { destroyDeviceWorkerPool } from "../runtime/device-worker-pool.js";
import { buildMultibootGuest } from "../test/helpers/flat-guest.js";
import { type Column, fitNumber, tableLine, tableWidth, wrapText } from "./fixed-width.js";
import { median, ratioSpread } from "./paired-ratios.js";
import { consoleStopwatch } from "./console-stopwatch.js";
import { netBenchSection } from "./virtio-net-bench.js";

const USAGE = `usage: workervisor bench virtio [--runs N] [--quick] [--no-qemu] [--cpl 3|0|both]

virtio-blk IOPS (4 KiB random reads, QD1 and QD32), MB/s (sequential 64 KiB reads) and
virtio-rng MB/s, from the same guest kernel under workervisor (device on the main thread
and on a device worker) and under QEMU -M microvm (if installed). --runs rounds (default 3),
each running every peer once per workload, alternating the order; --quick: fewer requests.
--cpl: the guest's driver at CPL3 (default: the long-mode kit; PVM runs CPL3 natively), at
CPL0 (the 32-bit kit, emulated on PVM), or both.
Then virtio-net frames/s and MB/s between two guests (64 B and 1500 B frames): see
bench/virtio-net-bench.ts.
`;

const GUEST_MEMORY_MIB = 64;
const IMAGE_BYTES = 64 << 20;
const GUARD_MS = 120_000;

export interface Workload {
  name: string;
  device: "blk" | "rng";
  defines: Record<string, number>;
  requests: number;
  /** Bytes moved per request (MB/s), or undefined for an IOPS figure. */
  bytesPerRequest?: number;
}

function workloads(quick: boolean): Workload[] {
  const scale = quick ? 0.2 : 1;
  const n = (count: number) => Math.max(20, Math.round(count * scale));
  return [
    { name: "blk 4K rand QD1", device: "blk", defines: { CHECK: 5, COUNT: n(1000) }, requests: n(1000) },
    { name: "blk 4K rand QD32", device: "blk", defines: { CHECK: 7, COUNT: n(4000), DEPTH: 32, VQ_SIZE: 128 }, requests: n(4000) },
    { name: "blk 64K seq QD1", device: "blk", defines: { CHECK: 8, COUNT: n(600) }, requests: n(600), bytesPerRequest: 65536 },
    { name: "rng 64K QD1", device: "rng", defines: { CHECK: 9, COUNT: n(600) }, requests: n(600), bytesPerRequest: 65536 },
  ];
}

export type PeerName = "main thread" | "device worker" | "QEMU microvm";
export type GuestCpl = 0 | 3;

/** The results of one workload at one CPL. */
export function rowKey(workload: Workload, cpl: GuestCpl): string {
  return `${workload.name} at CPL${cpl}`;
}

export interface Measurement {
  seconds: number;
  /** Requests per second. */
  rate: number;
  exitsPerRequest?: number;
  notifyExitsPerRequest?: number;
  mainCpuMicrosPerRequest?: number;
  /** The device worker's thread CPU per request (device-worker placement only). */
  deviceCpuMicrosPerRequest?: number;
}

async function runOurs(workload: Workload, placement: "main-thread" | "worker", kernel: Uint8Array, image: string): Promise<Measurement> {
  const clock = consoleStopwatch(/^(reads|entropy-bytes)=/);
  let device: VirtioDevice | VirtioOnWorker;
  if (placement === "worker") {
    device = workload.device === "blk" ? virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path: image }) : virtioOnWorker("./virtio-rng.js", "VirtioRng");
  } else {
    device = workload.device === "blk" ? new VirtioBlk({ path: image }) : new VirtioRng();
  }
  const machine = new PcMachine({ kernel, console: clock.push, virtio: [device], memory: GUEST_MEMORY_MIB << 20 });
  const guard = setTimeout(() => void machine.stop(), GUARD_MS);
  let result;
  try {
    result = await machine.run();
  } finally {
    clearTimeout(guard);
  }
  if (result.reason !== "debug-exit" || result.status !== 0) throw new Error(`${workload.name} (${placement}): the guest ended by ${result.reason} ${result.status ?? ""}`);
  const seconds = clock.seconds(`${workload.name} (${placement})`);
  const stats = machine.vm.stats;
  const transport = machine.virtio[0];
  const workerCpuNs = "deviceStats" in transport ? transport.deviceStats?.workerCpuNs : undefined;
  return {
    seconds,
    rate: workload.requests / seconds,
    exitsPerRequest: stats.exits / workload.requests,
    notifyExitsPerRequest: machine.virtio[0].stats.notifyExits / workload.requests,
    mainCpuMicrosPerRequest: clock.mainCpuNs / 1000 / workload.requests,
    deviceCpuMicrosPerRequest: typeof workerCpuNs === "number" ? workerCpuNs / 1000 / workload.requests : undefined,
  };
}

function runQemu(workload: Workload, kernelPath: string, image: string): Promise<Measurement> {
  const clock = consoleStopwatch(/^(reads|entropy-bytes)=/);
  const device = workload.device === "blk"
    ? ["-drive", `file=${image},format=raw,if=none,id=disk0`, "-device", "virtio-blk-device,drive=disk0"]
    : ["-device", "virtio-rng-device"];
  const qemu = spawn("qemu-system-x86_64", [
    "-accel", "kvm", "-M", "microvm", "-m", String(GUEST_MEMORY_MIB), "-nodefaults", "-no-reboot", "-display", "none",
    "-serial", "stdio", "-monitor", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    "-global", "virtio-mmio.force-legacy=false", ...device, "-kernel", kernelPath,
  ], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  qemu.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  qemu.stdout.on("data", (chunk: Buffer) => chunk.forEach(clock.push));
  return new Promise((resolve, reject) => {
    const guard = setTimeout(() => qemu.kill("SIGKILL"), GUARD_MS);
    qemu.on("error", reject);
    qemu.on("exit", (code) => {
      clearTimeout(guard);
      // isa-debug-exit ends QEMU with (status << 1) | 1.
      if (code !== 1) {
        reject(new Error(`${workload.name} under QEMU ended with ${code}: ${stderr.trim()}`));
        return;
      }
      try {
        const seconds = clock.seconds(`${workload.name} (QEMU)`);
        resolve({ seconds, rate: workload.requests / seconds });
      } catch (error) {
        reject(error);
      }
    });
  });
}

const COLUMNS: Column[] = [
  { title: "workload", width: 16, left: true },
  { title: "peer", width: 13, left: true },
  { title: "cpl", width: 3 },
  { title: "rate", width: 7 },
  { title: "unit", width: 4, left: true },
  { title: "ms/req", width: 6 },
  { title: "vs QEMU", width: 7 },
  { title: "spread", width: 10 },
  { title: "exits", width: 5 },
  { title: "ntfy", width: 5 },
  { title: "main µs", width: 7 },
  { title: "dev µs", width: 6 },
];

export function formatVirtioTable(results: Map<string, Map<PeerName, Measurement[]>>, workloadList: Workload[], rounds: number, cpls: readonly GuestCpl[] = [3]): string {
  const lines = [tableLine(COLUMNS, COLUMNS.map((c) => c.title)), "-".repeat(tableWidth(COLUMNS))];
  for (const workload of workloadList) for (const cpl of cpls) {
    const peers = results.get(rowKey(workload, cpl))!;
    const qemu = peers.get("QEMU microvm");
    for (const [peer, runs] of peers) {
      const rate = median(runs.map((r) => workload.bytesPerRequest === undefined ? r.rate : (r.rate * workload.bytesPerRequest) / 1e6));
      const pairs = qemu === undefined || peer === "QEMU microvm" ? null
        : ratioSpread(runs.slice(0, qemu.length).map((r, i) => r.rate / qemu[i].rate));
      const pick = (of: (m: Measurement) => number | undefined) => {
        const values = runs.map(of).filter((v): v is number => v !== undefined);
        return values.length === 0 ? null : median(values);
      };
      lines.push(tableLine(COLUMNS, [
        workload.name, peer, String(cpl), fitNumber(rate, 7, 1), workload.bytesPerRequest === undefined ? "IOPS" : "MB/s",
        fitNumber(pick((m) => (m.seconds * 1000) / workload.requests), 6, 3),
        pairs === null ? "-" : fitNumber(pairs.median, 7, 2),
        pairs === null ? "-" : `${fitNumber(pairs.min, 4, 2)}..${fitNumber(pairs.max, 4, 2)}`,
        fitNumber(pick((m) => m.exitsPerRequest), 5, 2), fitNumber(pick((m) => m.notifyExitsPerRequest), 5, 2),
        fitNumber(pick((m) => m.mainCpuMicrosPerRequest), 7, 1), fitNumber(pick((m) => m.deviceCpuMicrosPerRequest), 6, 1),
      ]));
    }
  }
  lines.push(...wrapText(
    `Peers: workervisor with the device on the main thread or on a device worker, and QEMU. cpl: where the guest's driver runs (3: long-mode kit, 0: 32-bit kit). Medians of ${rounds} rounds. vs QEMU: ours/QEMU rate at the same CPL, median of per-round ratios (above 1: faster than QEMU), spread min..max. ` +
      "exits: userspace exits per request, ntfy: QueueNotify exits per request, main µs: main-thread CPU µs per request, dev µs: the device worker's CPU µs per request (ours only).",
  ));
  return lines.join("\n") + "\n";
}

export async function virtioBenchCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { runs: { type: "string" }, quick: { type: "boolean" }, "no-qemu": { type: "boolean" }, cpl: { type: "string" }, help: { type: "boolean", short: "h" } }, strict: true }));
  } catch (error) {
    process.stderr.write(`workervisor bench virtio: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const rounds = Number(values.runs ?? 3);
  if (!Number.isInteger(rounds) || rounds < 1) {
    process.stderr.write(`workervisor bench virtio: --runs takes a whole number of at least 1\n${USAGE}`);
    return 2;
  }
  const cplChoice = values.cpl ?? "3";
  if (cplChoice !== "3" && cplChoice !== "0" && cplChoice !== "both") {
    process.stderr.write(`workervisor bench virtio: --cpl takes 3, 0 or both, got '${cplChoice}'\n${USAGE}`);
    return 2;
  }
  const cpls: GuestCpl[] = cplChoice === "both" ? [3, 0] : [Number(cplChoice) as GuestCpl];
  const log = (line: string) => process.stderr.write(`bench virtio: ${line}\n`);
  const qemuFound = spawnSync("qemu-system-x86_64", ["--version"], { stdio: "ignore" });
  const withQemu = !values["no-qemu"] && qemuFound.error === undefined && qemuFound.status === 0;
  if (!withQemu) log("QEMU not run (--no-qemu, or qemu-system-x86_64 not installed)");
  const dir = mkdtempSync(join(tmpdir(), "workervisor-bench-virtio-"));
  const list = workloads(values.quick === true);
  const results = new Map<string, Map<PeerName, Measurement[]>>();
  let netTable = "";
  try {
    const image = join(dir, "disk.img");
    // Not sparse, and in the page cache for every peer alike.
    const bytes = Buffer.alloc(IMAGE_BYTES);
    for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32LE(i, i);
    writeFileSync(image, bytes);
    readFileSync(image);
    for (let round = 0; round < rounds; round++) {
      for (const workload of list) for (const cpl of cpls) {
        // CPL3 is the long-mode kit; CPL0 the 32-bit kit the bench has always measured.
        const kernelPath = buildMultibootGuest("virtio-check", workload.defines, { cpl });
        const kernel = readFileSync(kernelPath);
        const peers: PeerName[] = ["main thread", "device worker", ...(withQemu ? ["QEMU microvm" as const] : [])];
        if (round % 2 === 1) peers.reverse();
        const key = rowKey(workload, cpl);
        const byPeer = results.get(key) ?? new Map<PeerName, Measurement[]>([["main thread", []], ["device worker", []], ...(withQemu ? [["QEMU microvm", []] as [PeerName, Measurement[]]] : [])]);
        results.set(key, byPeer);
        for (const peer of peers) {
          const measured = peer === "QEMU microvm" ? await runQemu(workload, kernelPath, image)
            : await runOurs(workload, peer === "main thread" ? "main-thread" : "worker", kernel, image);
          byPeer.get(peer)!.push(measured);
          log(`round ${round + 1}, ${workload.name} at CPL${cpl}, ${peer}: ${(measured.seconds * 1000 / workload.requests).toFixed(3)} ms/request`);
        }
      }
    }
    netTable = await netBenchSection(rounds, values.quick === true, withQemu, log, cpls);
  } finally {
    await destroyVcpuPool();
    await destroyDeviceWorkerPool();
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(formatVirtioTable(results, list, rounds, cpls));
  process.stdout.write(`\n${netTable}`);
  return 0;
}
