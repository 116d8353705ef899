/**
 * Ratios between interleaved runs: run i of a figure is paired with run i of its baseline
 * (the same round), and the report keeps the median of the per-pair ratios with their range.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { pairedRatios, ratioSpread } from "../bench/paired-ratios.js";
import type { RunReport } from "../bench/json-report.js";

function run(meanNs: number, exitsPerS = 1e9 / meanNs): RunReport {
  return {
    mean_ns: meanNs, p50_ns: meanNs / 2, p99_ns: meanNs * 4, p999_ns: meanNs * 8, exits_per_s: exitsPerS,
    marker_ns: [0], exits: 1, busy_ns: meanNs, main_cpu_ns: null, worker_parks: null, worker_spin_budgets: null, samples_ns: [meanNs],
  };
}

test("each run pairs with the baseline's run of the same round, not with its pooled mean", () => {
  // Round 2 is slow for both programs: its pair still says 1.1. Round 3 is slow for the
  // figure alone: that shows as the range, and the median stays 1.1.
  const figure = [run(110), run(330), run(121)];
  const baseline = [run(100), run(300), run(100)];
  const pairs = pairedRatios(figure, baseline)!;
  assert.equal(pairs.pairs, 3);
  assert.deepEqual(pairs.mean!.per_pair.map((r) => r.toFixed(2)), ["1.10", "1.10", "1.21"]);
  assert.equal(pairs.mean!.median.toFixed(2), "1.10");
  assert.equal(pairs.mean!.min.toFixed(2), "1.10");
  assert.equal(pairs.mean!.max.toFixed(2), "1.21");
  assert.equal(pairs.exits_per_s!.median.toFixed(3), (1 / 1.1).toFixed(3));
});

test("unequal run counts pair only the rounds both completed; none gives no ratio", () => {
  assert.equal(pairedRatios([run(1), run(2), run(3)], [run(1), run(1)])!.pairs, 2);
  assert.equal(pairedRatios([], [run(1)]), null);
});

test("an even number of pairs takes the middle two for the median; a non-finite ratio gives none", () => {
  assert.equal(ratioSpread([1, 4, 2, 3])!.median, 2.5);
  assert.equal(ratioSpread([1, Infinity]), null);
  assert.equal(ratioSpread([]), null);
});
