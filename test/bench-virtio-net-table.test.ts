/** The network table of `workervisor bench virtio`: within the report width whatever the figures, ratios paired by round. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatNetTable, type NetMeasurement, type NetPeerName, type NetWorkload } from "../bench/virtio-net-bench.js";
import { REPORT_WIDTH } from "../bench/fixed-width.js";

const workloads: NetWorkload[] = [
  { name: "net 64 B, CPL3", size: 64, frames: 1000 },
  { name: "net 1500 B, CPL3", size: 1500, frames: 1000 },
];

function run(rate: number, received = 1000, cpu?: number): NetMeasurement {
  return { seconds: received / rate, received, rate, mainCpuMicrosPerFrame: cpu };
}

test("every line fits the report width, even with huge and tiny figures; vs QEMU is the median of per-round ratios; MB/s follows the frame size", () => {
  const results = new Map<string, Map<NetPeerName, NetMeasurement[]>>();
  for (const w of workloads) {
    results.set(w.name, new Map<NetPeerName, NetMeasurement[]>([
      ["main thread", [run(1e12, 1, 1e9), run(2e-3, 1000, 1e-6), run(3, 999, 5)]],
      ["device worker", [run(2000), run(1000), run(9000)]],
      ["QEMU microvm", [run(1000), run(1000), run(1000)]],
    ]));
  }
  const table = formatNetTable(results, workloads, 3);
  for (const line of table.trimEnd().split("\n")) assert.ok(line.length <= REPORT_WIDTH, `${line.length} columns: ${line}`);
  const worker = table.split("\n").find((line) => line.startsWith("net 1500 B, CPL3") && line.includes("device worker"))!;
  // Per-round ratios 2, 1, 9: median 2, spread 1..9; median 2000 frames/s of 1500 bytes: 3 MB/s.
  assert.match(worker, /\s2000\s+3\.000\s+2\.00\s+1\.00\.\.9\.00\s+100\.0%\s+-$/);
  const qemu = table.split("\n").find((line) => line.startsWith("net 64 B, CPL3") && line.includes("QEMU"))!;
  assert.match(qemu, /QEMU microvm\s+1000\s+0\.064\s+-\s+-\s/);
});

test("one small round of every peer: the receiver counts frames of the sender's, and each figure is there", { timeout: 180_000 }, async (t) => {
  const { runNetPeer, NET_PEERS } = await import("../bench/virtio-net-bench.js");
  const { noQemu } = await import("./helpers/guest-report.js");
  const { destroyVcpuPool } = await import("../runtime/vcpu-pool.js");
  const { destroyDeviceWorkerPool } = await import("../runtime/device-worker-pool.js");
  t.after(() => destroyVcpuPool());
  t.after(() => destroyDeviceWorkerPool());
  for (const cpl of [3, 0] as const) for (const peer of NET_PEERS) {
    const workload: NetWorkload = { name: `net 64 B, CPL${cpl}`, size: 64, frames: 60, cpl };
    if (peer === "QEMU microvm" && noQemu) continue;
    const measured = await runNetPeer(workload, peer);
    t.diagnostic(`CPL${cpl}, ${peer}: ${JSON.stringify(measured)}`);
    assert.ok(measured.received > 0 && measured.received <= workload.frames, `${peer}: ${measured.received} frames counted of ${workload.frames}`);
    assert.ok(Number.isFinite(measured.rate) && measured.rate > 0 && measured.seconds > 0);
    assert.equal(measured.mainCpuMicrosPerFrame === undefined, peer === "QEMU microvm", "main-thread CPU is ours only");
  }
});
