/**
 * The record ring under the switch and the console channel: records of every size come out
 * whole and in order across the wrap, a full ring refuses (and counts) rather than
 * overwrite, three producer threads writing at once into one ring lose and corrupt nothing,
 * and a never-opened ring (a zeroed buffer) signals no fd when it is closed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { spawnSync } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { RecordRing, RingWrite } from "../runtime/devices/virtio/record-ring.js";

function record(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}

test("records of every size come out whole and in order, across many wraps; a full ring refuses and counts", () => {
  const ring = new RecordRing(new SharedArrayBuffer(RecordRing.bytesFor(1024)), 0, 1024);
  ring.open();
  const out: Uint8Array[] = [];
  let expected: Uint8Array[] = [];
  for (let round = 0; round < 500; round++) {
    const batch: Uint8Array[] = [];
    for (let n = 0; n < 1 + (round % 5); n++) {
      const r = record((round * 37 + n * 11) % (ring.maxRecord + 1), round + n);
      if (ring.write(r) === RingWrite.Written) batch.push(r);
    }
    expected = expected.concat(batch);
    ring.drain((view) => void out.push(view.slice()));
  }
  assert.deepEqual(out, expected);
  // Fill it: the next record is refused whole, counted, and what was in stays intact.
  const small = record(60, 1);
  const refusedBefore = ring.refused;
  let written = 0;
  while (ring.write(small) === RingWrite.Written) written++;
  // 64 bytes a record (4 of length, 60 of data); a tail too short for one is skipped.
  assert.ok(written === 1024 / 64 || written === 1024 / 64 - 1, `${written} records fitted`);
  assert.equal(ring.refused - refusedBefore, 1);
  let drained = 0;
  ring.drain((view) => { assert.deepEqual(view, small); drained++; });
  assert.equal(drained, written);
  ring.close();
  assert.equal(ring.write(small), RingWrite.Closed);
});

test("three producer threads writing into one ring at once: every record arrives whole, each producer's in order", { timeout: 60_000 }, async () => {
  const shared = new SharedArrayBuffer(RecordRing.bytesFor(4096));
  const ring = new RecordRing(shared, 0, 4096);
  ring.open();
  const PER_PRODUCER = 3000;
  const ringModule = new URL("../runtime/devices/virtio/record-ring.js", import.meta.url).href;
  // Each producer writes records [producer, seq (2 bytes), pattern...], retrying while full.
  const source = `
    const { workerData } = await import("node:worker_threads");
    const { RecordRing } = await import(${JSON.stringify(ringModule)});
    const ring = new RecordRing(workerData.shared, 0, 4096);
    for (let seq = 0; seq < ${PER_PRODUCER}; seq++) {
      const length = 3 + ((seq * 13 + workerData.id * 7) % 200);
      const r = new Uint8Array(length);
      r[0] = workerData.id; r[1] = seq & 0xff; r[2] = seq >> 8;
      for (let i = 3; i < length; i++) r[i] = (i + seq + workerData.id) & 0xff;
      while (ring.write(r) !== 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 0.05);
    }`;
  const workers = [0, 1, 2].map((id) => new Worker(source, { eval: true, workerData: { shared, id }, type: "module" } as never));
  const next = [0, 0, 0];
  let bad = 0;
  const done = Promise.all(workers.map((w) => new Promise((resolve, reject) => w.on("exit", resolve).on("error", reject))));
  let finished = false;
  void done.then(() => { finished = true; });
  const take = (view: Uint8Array) => {
    const id = view[0];
    const seq = view[1] | (view[2] << 8);
    let ok = id < 3 && seq === next[id] && view.length === 3 + ((seq * 13 + id * 7) % 200);
    for (let i = 3; ok && i < view.length; i++) ok = view[i] === ((i + seq + id) & 0xff);
    if (!ok) bad++;
    if (id < 3) next[id] = seq + 1;
  };
  while (!finished || next.some((n) => n < PER_PRODUCER)) {
    ring.drain(take);
    if (bad > 0) break;
    await new Promise((resolve) => setImmediate(resolve));
  }
  await done;
  assert.equal(bad, 0, "a record came out corrupted or out of its producer's order");
  assert.deepEqual(next, [PER_PRODUCER, PER_PRODUCER, PER_PRODUCER]);
});

test("a ring in a zeroed buffer, never opened, has no eventfd to ring: closing it writes to no fd", () => {
  // In a child whose fd 0 is read-only, a write to fd 0 (an "eventfd" read as 0 from the
  // zeroed word) fails with EBADF and the child exits non-zero.
  const ringModule = new URL("../runtime/devices/virtio/record-ring.js", import.meta.url).href;
  const readOnly = openSync("/dev/null", "r");
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", `
    const { RecordRing } = await import(${JSON.stringify(ringModule)});
    const ring = new RecordRing(new SharedArrayBuffer(RecordRing.bytesFor(64)), 0, 64);
    if (ring.isOpen) throw new Error("a zeroed ring is open");
    ring.close();
    if (ring.write(new Uint8Array(10)) !== 2) throw new Error("a closed ring took a record");
  `], { stdio: [readOnly, "pipe", "pipe"], encoding: "utf8" });
  closeSync(readOnly);
  assert.equal(child.status, 0, child.stderr);
});
