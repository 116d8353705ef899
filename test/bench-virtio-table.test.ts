/** `workervisor bench virtio`'s table: within the report width whatever the figures, ratios paired by round. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatVirtioTable, rowKey, type Measurement, type PeerName, type Workload } from "../bench/virtio-bench.js";
import { REPORT_WIDTH } from "../bench/fixed-width.js";

const workloads: Workload[] = [
  { name: "blk 4K rand QD32", device: "blk", defines: {}, requests: 100 },
  { name: "rng 64K QD1", device: "rng", defines: {}, requests: 100, bytesPerRequest: 65536 },
];

function ours(rate: number, extreme: number): Measurement {
  return { seconds: 100 / rate, rate, exitsPerRequest: extreme, notifyExitsPerRequest: 0, mainCpuMicrosPerRequest: extreme * 1000, deviceCpuMicrosPerRequest: extreme * 10 };
}

test("every line fits the report width, even with huge and tiny figures; vs QEMU is the median of per-round ratios, each CPL paired with its own QEMU runs", () => {
  const results = new Map<string, Map<PeerName, Measurement[]>>();
  for (const w of workloads) {
    for (const [cpl, scale] of [[3, 1], [0, 0.5]] as const) {
      results.set(rowKey(w, cpl), new Map<PeerName, Measurement[]>([
        ["main thread", [ours(1e9, 1e7), ours(2e9, 1e-4), ours(3e9, 5)]],
        ["device worker", [ours(200 * scale, 2), ours(100 * scale, 2), ours(900 * scale, 2)]],
        ["QEMU microvm", [{ seconds: 1, rate: 100 }, { seconds: 1, rate: 100 }, { seconds: 1, rate: 100 }]],
      ]));
    }
  }
  const table = formatVirtioTable(results, workloads, 3, [3, 0]);
  for (const line of table.trimEnd().split("\n")) assert.ok(line.length <= REPORT_WIDTH, `${line.length} columns: ${line}`);
  const worker = (cpl: number) => table.split("\n").find((line) => line.startsWith("blk 4K rand QD32") && new RegExp(`device worker\\s+${cpl}\\s`).test(line))!;
  // Per-round ratios 2, 1, 9: median 2, spread 1..9; at CPL0 half of that, paired with its own QEMU rows.
  assert.match(worker(3), /\s2\.00\s+1\.00\.\.9\.00\s/);
  assert.match(worker(0), /\s1\.00\s+0\.50\.\.4\.50\s/);
});
