/**
 * Fuzz target for the split-virtqueue walker (fast-check): rings, descriptors and indirect
 * tables full of guest-chosen values, biased towards the edges (region ends, the hole, huge
 * lengths, every flag, self-links). Whatever the guest writes, `pop()` never throws, every
 * buffer it returns lies wholly inside one RAM region, no chain is longer or larger than the
 * rules allow, a failed queue stays failed, and popping writes nothing but avail_event.
 * Runs for WORKERVISOR_FUZZ_SECONDS (default 10) or 2000 cases in CI, whichever ends first.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemory } from "../memory/guest-memory.js";
import { MAX_INDIRECT_ENTRIES, SplitVirtqueue, VirtqueueError } from "../runtime/devices/virtio/virtqueue.js";
import { DriverRing } from "./helpers/split-ring.js";

const MiB = 1 << 20;
const SECONDS = Number(process.env.WORKERVISOR_FUZZ_SECONDS ?? 10);
const RING = 0x1000;
const TABLES = [0x8000, 0x9000, MiB - 32];
// Memory: [0, 1 MiB) and [1 MiB, 2 MiB) adjacent, a hole, then [4 MiB, 5 MiB).
const REGIONS = [{ gpa: 0, size: MiB }, { gpa: MiB, size: MiB }, { gpa: 4 * MiB, size: MiB }];

const address = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0x10000, max: 0x20000 }) },
  fc.constantFrom(0x10000, MiB - 16, MiB - 1, MiB, 2 * MiB - 8, 3 * MiB, 5 * MiB - 4, 5 * MiB, ...TABLES),
  fc.integer({ min: 0, max: 6 * MiB }),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);
const length = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 512 }) },
  fc.constantFrom(0, 1, 15, 16, 32, 48, 4096, MiB, 0x7fff_ffff, 0xffff_ffff, 16 * MAX_INDIRECT_ENTRIES + 16),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);
const descriptor = (size: number) => fc.record({
  addr: address,
  len: length,
  flags: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 1, 2, 3) }, fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xffff })),
  next: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: size - 1 }) }, fc.integer({ min: 0, max: 0xffff })),
});

const scenario = fc.integer({ min: 0, max: 4 }).chain((log2) => {
  const size = 1 << log2;
  return fc.record({
    size: fc.constant(size),
    eventIndex: fc.boolean(),
    indirect: fc.boolean(),
    descriptors: fc.array(descriptor(size), { minLength: size, maxLength: size }),
    tables: fc.array(fc.array(descriptor(4), { minLength: 1, maxLength: 4 }), { minLength: TABLES.length, maxLength: TABLES.length }),
    heads: fc.array(fc.oneof(fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 0, max: 0xffff })), { minLength: size, maxLength: size }),
    availIndex: fc.oneof(fc.integer({ min: 0, max: size + 1 }), fc.integer({ min: 0, max: 0xffff })),
  });
});

test("fuzz: no guest-written ring makes the walker throw, escape guest RAM or break its own rules", { timeout: (SECONDS + 60) * 1000 }, () => {
  const memory = GuestMemory.allocate(REGIONS);
  let cases = 0;
  let chains = 0;
  let faults = 0;
  fc.assert(
    fc.property(scenario, (s) => {
      cases++;
      for (const region of memory.regions) region.bytes.fill(0);
      const driver = DriverRing.at(memory, RING, s.size, s);
      s.descriptors.forEach((d, i) => driver.writeDescriptor(i, d));
      s.tables.forEach((table, t) => table.forEach((d, i) => {
        if (memory.isBacked(TABLES[t] + 16 * i, 16)) driver.writeDescriptor(i, d, TABLES[t]);
      }));
      s.heads.forEach((head, i) => memory.writeU16(driver.layout.availRing + 4 + 2 * i, head));
      driver.setAvailIndex(s.availIndex);
      const snapshot = memory.regions.map((r) => r.bytes.slice());
      const queue = new SplitVirtqueue(memory, driver.layout, 0);
      let popped = 0;
      for (let round = 0; round <= s.size + 1; round++) {
        const result = queue.pop();
        if (result === undefined) break;
        if (result instanceof VirtqueueError) {
          faults++;
          assert.equal(queue.pop(), result, "a failed queue stays failed");
          break;
        }
        chains++;
        popped++;
        assert.ok(popped <= s.size && popped <= s.availIndex, "no more chains than were offered");
        const segments = [...result.readable, ...result.writable];
        assert.ok(segments.length <= s.size + MAX_INDIRECT_ENTRIES);
        assert.ok(result.readableLength < 2 ** 32 && result.writableLength < 2 ** 32);
        for (const seg of segments) {
          if (seg.bytes.length > 0) assert.ok(memory.isBacked(seg.gpa, seg.bytes.length), `segment 0x${seg.gpa.toString(16)}+${seg.bytes.length} is in RAM`);
        }
        assert.equal(result.readableLength, result.readable.reduce((n, x) => n + x.bytes.length, 0));
        assert.equal(result.writableLength, result.writable.reduce((n, x) => n + x.bytes.length, 0));
      }
      // Popping writes only avail_event (EVENT_IDX), the word after the used ring.
      const availEvent = driver.layout.usedRing + 4 + 8 * s.size;
      memory.regions.forEach((region, r) => {
        const before = snapshot[r];
        if (Buffer.compare(region.bytes, before) === 0) return;
        for (let i = 0; i < before.length; i++) {
          if (region.bytes[i] === before[i]) continue;
          const gpa = region.gpa + i;
          assert.ok(s.eventIndex && gpa >= availEvent && gpa < availEvent + 2, `pop wrote guest RAM at 0x${gpa.toString(16)}`);
        }
      });
    }),
    { numRuns: 2000, interruptAfterTimeLimit: SECONDS * 1000, markInterruptAsFailure: false },
  );
  assert.ok(cases > 0);
  console.log(`# virtqueue fuzz: ${cases} rings, ${chains} chains walked, ${faults} faults reported`);
  assert.ok(chains > 0 && faults > 0, "the generator reaches both well-formed chains and faults");
});
