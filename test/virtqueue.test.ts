/**
 * The split-virtqueue walker over guest RAM: well-formed chains (direct, indirect, mixed)
 * come out whole, completions and EVENT_IDX suppression land where the driver looks, and
 * every hostile ring the issue lists stops the queue with its own fault, nothing thrown and
 * nothing outside guest RAM touched.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../memory/guest-memory.js";
import {
  SplitVirtqueue, VirtqueueError, type VirtqueueFault, type DescriptorChain,
  VIRTQ_DESC_F_INDIRECT as INDIRECT, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE,
} from "../runtime/devices/virtio/virtqueue.js";
import { DriverRing } from "./helpers/split-ring.js";

const MiB = 1 << 20;
const RING = 0x1000;
const DATA = 0x10000;

/** Two adjacent RAM regions, [0, 1 MiB) and [1 MiB, 2 MiB), and a hole up to 4 MiB. */
function twoRegions(): GuestMemory {
  return GuestMemory.allocate([{ gpa: 0, size: MiB }, { gpa: MiB, size: MiB }, { gpa: 4 * MiB, size: MiB }]);
}

function setup(size = 8, features: { eventIndex?: boolean; indirect?: boolean } = {}) {
  const memory = twoRegions();
  const driver = DriverRing.at(memory, RING, size, features);
  const queue = new SplitVirtqueue(memory, driver.layout, 3);
  assert.equal(queue.failure, undefined);
  return { memory, driver, queue };
}

function popChain(queue: SplitVirtqueue): DescriptorChain {
  const result = queue.pop();
  assert.ok(result !== undefined && !(result instanceof VirtqueueError), `expected a chain, got ${String(result)}`);
  return result;
}

function assertFault(queue: SplitVirtqueue, fault: VirtqueueFault): void {
  const result = queue.pop();
  assert.ok(result instanceof VirtqueueError, `expected fault ${fault}, got ${JSON.stringify(result)}`);
  assert.equal(result.fault, fault, result.message);
  assert.equal(result.queue, 3);
  assert.equal(queue.failure, result, "the queue remembers its fault");
  assert.equal(queue.pop(), result, "and refuses further work");
  queue.pushUsed(0, 0); // ignored on a failed queue, never throws
  assert.equal(queue.takeNotification(), false);
}

test("a chain of readable then writable buffers comes out as live views, and its completion lands in the used ring", () => {
  const { memory, driver, queue } = setup();
  memory.write(DATA, [1, 2, 3, 4]);
  driver.writeDescriptor(5, { addr: DATA, len: 4, flags: NEXT, next: 2 });
  driver.writeDescriptor(2, { addr: DATA + 0x100, len: 16, flags: NEXT | WRITE, next: 7 });
  driver.writeDescriptor(7, { addr: DATA + 0x200, len: 1, flags: WRITE, next: 0 });
  assert.equal(queue.pop(), undefined, "nothing offered yet");
  driver.offer(5);
  const chain = popChain(queue);
  assert.equal(chain.head, 5);
  assert.deepEqual(chain.readable.map((s) => [s.gpa, s.bytes.length]), [[DATA, 4]]);
  assert.deepEqual([...chain.readable[0].bytes], [1, 2, 3, 4]);
  assert.deepEqual(chain.writable.map((s) => [s.gpa, s.bytes.length]), [[DATA + 0x100, 16], [DATA + 0x200, 1]]);
  assert.equal(chain.readableLength, 4);
  assert.equal(chain.writableLength, 17);
  chain.writable[1].bytes[0] = 0xab;
  assert.equal(memory.readU8(DATA + 0x200), 0xab, "writable views are guest RAM itself");
  assert.equal(queue.pop(), undefined);
  queue.pushUsed(5, 17);
  assert.equal(driver.usedIndex(), 1);
  assert.deepEqual(driver.usedElement(0), { id: 5, len: 17 });
  assert.equal(queue.takeNotification(), true, "no suppression asked for: notify");
  assert.equal(queue.takeNotification(), false, "nothing new since the last notification");
});

test("the rings wrap at the queue size and at 2^16", () => {
  const { driver, queue } = setup(4);
  driver.writeDescriptor(0, { addr: DATA, len: 8, flags: 0, next: 0 });
  driver.setAvailIndex(0xfffe);
  (queue as unknown as { lastAvailIndex: number }).lastAvailIndex = 0xfffe;
  for (let i = 0; i < 6; i++) {
    driver.offer(0);
    assert.equal(popChain(queue).head, 0);
    queue.pushUsed(0, i);
  }
  assert.equal(driver.availIndex, 4);
  assert.equal(driver.usedIndex(), 6);
  assert.deepEqual(driver.usedElement(5), { id: 0, len: 5 });
});

test("an indirect table after direct descriptors, with INDIRECT_DESC negotiated", () => {
  const { memory, driver, queue } = setup(8, { indirect: true });
  const table = 0x8000;
  driver.writeDescriptor(0, { addr: DATA, len: 16, flags: NEXT, next: 1 });
  driver.writeDescriptor(1, { addr: table, len: 3 * 16, flags: INDIRECT | WRITE, next: 0 });
  driver.writeDescriptor(0, { addr: DATA + 0x10, len: 32, flags: NEXT, next: 2 }, table);
  driver.writeDescriptor(2, { addr: DATA + 0x40, len: 64, flags: NEXT | WRITE, next: 1 }, table);
  driver.writeDescriptor(1, { addr: DATA + 0x80, len: 1, flags: WRITE, next: 0 }, table);
  driver.offer(0);
  const chain = popChain(queue);
  assert.deepEqual(chain.readable.map((s) => s.gpa), [DATA, DATA + 0x10]);
  assert.deepEqual(chain.writable.map((s) => s.gpa), [DATA + 0x40, DATA + 0x80]);
  assert.equal(chain.readableLength, 48);
  assert.equal(chain.writableLength, 65);
  void memory;
});

test("EVENT_IDX: the device asks for the next entry and notifies only when used_event is crossed", () => {
  const { driver, queue } = setup(8, { eventIndex: true });
  driver.writeDescriptor(0, { addr: DATA, len: 8, flags: 0, next: 0 });
  driver.setUsedEvent(2); // the driver wants to hear once used.idx passes 2
  for (let i = 0; i < 3; i++) driver.offer(0);
  const notified: boolean[] = [];
  for (let i = 0; i < 3; i++) {
    popChain(queue);
    assert.equal(driver.availEvent(), i + 1, "avail_event follows the entries taken");
    queue.pushUsed(0, 0);
    notified.push(queue.takeNotification());
  }
  assert.deepEqual(notified, [false, false, true], "only the push that made used.idx 3 (> 2) notifies");
});

test("without EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT suppresses notifications and setNotifications sets NO_NOTIFY", () => {
  const { memory, driver, queue } = setup();
  driver.writeDescriptor(0, { addr: DATA, len: 8, flags: 0, next: 0 });
  memory.writeU16(driver.layout.availRing, 1);
  driver.offer(0);
  popChain(queue);
  queue.pushUsed(0, 0);
  assert.equal(queue.takeNotification(), false);
  queue.setNotifications(false);
  assert.equal(memory.readU16(driver.layout.usedRing) & 1, 1);
  queue.setNotifications(true);
  assert.equal(memory.readU16(driver.layout.usedRing) & 1, 0);
});

// ---- hostile rings ----

test("hostile: a chain that loops", () => {
  const { driver, queue } = setup(8);
  driver.writeDescriptor(0, { addr: DATA, len: 8, flags: NEXT, next: 1 });
  driver.writeDescriptor(1, { addr: DATA, len: 8, flags: NEXT, next: 0 });
  driver.offer(0);
  assertFault(queue, "chain-too-long");
});

test("hostile: a descriptor chaining to itself", () => {
  const { driver, queue } = setup(8);
  driver.writeDescriptor(3, { addr: DATA, len: 8, flags: NEXT, next: 3 });
  driver.offer(3);
  assertFault(queue, "chain-too-long");
});

test("hostile: a loop inside an indirect table", () => {
  const { driver, queue } = setup(8, { indirect: true });
  driver.writeDescriptor(0, { addr: 0x8000, len: 4 * 16, flags: INDIRECT, next: 0 });
  for (let i = 0; i < 4; i++) driver.writeDescriptor(i, { addr: DATA, len: 8, flags: NEXT, next: (i + 1) % 4 }, 0x8000);
  driver.offer(0);
  assertFault(queue, "chain-too-long");
});

test("hostile: a chain longer than the queue cannot exist without a loop, so one of queue size + 1 is refused", () => {
  const { driver, queue } = setup(4);
  // 4 distinct descriptors then back to the first: the 5th visit exceeds the queue size.
  for (let i = 0; i < 4; i++) driver.writeDescriptor(i, { addr: DATA + i * 8, len: 8, flags: NEXT, next: (i + 1) % 4 });
  driver.offer(0);
  assertFault(queue, "chain-too-long");
  const ok = setup(4);
  for (let i = 0; i < 4; i++) ok.driver.writeDescriptor(i, { addr: DATA + i * 8, len: 8, flags: i < 3 ? NEXT : 0, next: i + 1 });
  ok.driver.offer(0);
  assert.equal(popChain(ok.queue).readable.length, 4, "a chain of exactly the queue size is fine");
});

test("hostile: head and next indices beyond the table", () => {
  const a = setup(8);
  a.driver.offer(8);
  assertFault(a.queue, "head-out-of-range");
  const b = setup(8);
  b.driver.writeDescriptor(0, { addr: DATA, len: 8, flags: NEXT, next: 0xffff });
  b.driver.offer(0);
  assertFault(b.queue, "next-out-of-range");
  const c = setup(8, { indirect: true });
  c.driver.writeDescriptor(0, { addr: 0x8000, len: 2 * 16, flags: INDIRECT, next: 0 });
  c.driver.writeDescriptor(0, { addr: DATA, len: 8, flags: NEXT, next: 2 }, 0x8000);
  c.driver.offer(0);
  assertFault(c.queue, "next-out-of-range");
});

test("hostile: buffers outside guest RAM, in the hole, beyond 2^53 and across the end of a region", () => {
  const cases: [string, number | bigint, number][] = [
    ["in the hole between regions", 3 * MiB, 16],
    ["past the last region", 5 * MiB, 1],
    ["at the top of the 64-bit space", 0xffff_ffff_ffff_f000n, 16],
    ["across the end of the last region", 5 * MiB - 8, 16],
    ["across two adjacent regions", MiB - 8, 16],
    ["starting in RAM and running 4 GiB on", DATA, 0xffff_ffff],
  ];
  for (const [what, addr, len] of cases) {
    const { driver, queue, memory } = setup(8);
    const before = memory.read(0, 64);
    driver.writeDescriptor(0, { addr, len, flags: WRITE, next: 0 });
    driver.offer(0);
    const result = queue.pop();
    assert.ok(result instanceof VirtqueueError && result.fault === "buffer-outside-ram", `${what}: ${String(result)}`);
    assert.deepEqual(memory.read(0, 64), before);
  }
});

test("hostile: an indirect table outside RAM or across a region's end", () => {
  for (const addr of [3 * MiB, MiB - 16]) {
    const { driver, queue } = setup(8, { indirect: true });
    driver.writeDescriptor(0, { addr, len: 4 * 16, flags: INDIRECT, next: 0 });
    driver.offer(0);
    assertFault(queue, "buffer-outside-ram");
  }
});

test("hostile: readable or writable lengths that add up past 2^32 - 1", () => {
  // 4097 writable MiB buffers (the same one over and over) through an indirect table.
  const big = GuestMemory.allocate([{ gpa: 0, size: 4 * MiB }]);
  const ring = DriverRing.at(big, RING, 8, { indirect: true });
  const table = 0x20000;
  const entries = 4097;
  for (let i = 0; i < entries; i++) {
    ring.writeDescriptor(i, { addr: 2 * MiB, len: MiB, flags: NEXT | WRITE, next: i + 1 }, table);
  }
  ring.writeDescriptor(entries - 1, { addr: 2 * MiB, len: MiB, flags: WRITE, next: 0 }, table);
  ring.writeDescriptor(0, { addr: table, len: entries * 16, flags: INDIRECT, next: 0 });
  ring.offer(0);
  const queue = new SplitVirtqueue(big, ring.layout, 3);
  assertFault(queue, "length-overflow");
  for (const flags of [0, WRITE]) {
    const q = new SplitVirtqueue(big, ring.layout, 3);
    for (let i = 0; i < entries; i++) ring.writeDescriptor(i, { addr: 2 * MiB, len: MiB, flags: (i < entries - 1 ? NEXT : 0) | flags, next: i + 1 }, table);
    const result = q.pop();
    assert.ok(result instanceof VirtqueueError && result.fault === "length-overflow", String(result));
    assert.match(result.message, flags ? /writable/ : /readable/);
  }
});

test("hostile: nested indirect tables, indirect with NEXT, indirect without the feature, bad table sizes", () => {
  const nested = setup(8, { indirect: true });
  nested.driver.writeDescriptor(0, { addr: 0x8000, len: 16, flags: INDIRECT, next: 0 });
  nested.driver.writeDescriptor(0, { addr: 0x9000, len: 16, flags: INDIRECT, next: 0 }, 0x8000);
  nested.driver.offer(0);
  assertFault(nested.queue, "nested-indirect");

  const withNext = setup(8, { indirect: true });
  withNext.driver.writeDescriptor(0, { addr: 0x8000, len: 16, flags: INDIRECT | NEXT, next: 1 });
  withNext.driver.offer(0);
  assertFault(withNext.queue, "indirect-with-next");

  const notNegotiated = setup(8);
  notNegotiated.driver.writeDescriptor(0, { addr: 0x8000, len: 16, flags: INDIRECT, next: 0 });
  notNegotiated.driver.offer(0);
  assertFault(notNegotiated.queue, "indirect-not-negotiated");

  for (const len of [0, 15, 17, 65537 * 16]) {
    const bad = setup(8, { indirect: true });
    bad.driver.writeDescriptor(0, { addr: 0x8000, len, flags: INDIRECT, next: 0 });
    bad.driver.offer(0);
    assertFault(bad.queue, "bad-indirect-table");
  }
});

test("hostile: a device-readable buffer after a device-writable one", () => {
  const { driver, queue } = setup(8);
  driver.writeDescriptor(0, { addr: DATA, len: 8, flags: NEXT | WRITE, next: 1 });
  driver.writeDescriptor(1, { addr: DATA, len: 8, flags: 0, next: 0 });
  driver.offer(0);
  assertFault(queue, "readable-after-writable");
});

test("hostile: avail.idx jumping by more than the queue size", () => {
  const { driver, queue } = setup(8);
  driver.writeDescriptor(0, { addr: DATA, len: 8, flags: 0, next: 0 });
  driver.setAvailIndex(9);
  assertFault(queue, "avail-index-jump");
  const exact = setup(8);
  exact.driver.writeDescriptor(0, { addr: DATA, len: 8, flags: 0, next: 0 });
  exact.driver.setAvailIndex(8);
  for (let i = 0; i < 8; i++) popChain(exact.queue);
  assert.equal(exact.queue.pop(), undefined, "exactly a queue's worth is fine");
  const backwards = setup(8);
  backwards.driver.setAvailIndex(0xffff); // "moved back by one" is a jump of 65535
  assertFault(backwards.queue, "avail-index-jump");
});

test("hostile layouts: misaligned, outside RAM, across a region, bad sizes", () => {
  const memory = twoRegions();
  const base = { descriptorTable: RING, availRing: RING + 0x100, usedRing: RING + 0x200, eventIndex: true, indirect: false };
  const cases: [string, Partial<typeof base> & { size?: number }][] = [
    ["size 0", { size: 0 }], ["size 3", { size: 3 }], ["size 65536", { size: 65536 }],
    ["descriptor table misaligned", { descriptorTable: RING + 8 }],
    ["avail ring odd", { availRing: RING + 0x101 }],
    ["used ring misaligned", { usedRing: RING + 0x202 }],
    ["used ring in the hole", { usedRing: 3 * MiB }],
    ["descriptor table across the region end", { descriptorTable: MiB - 64 }],
    ["avail ring beyond 2^53", { availRing: 2 ** 60 }],
  ];
  for (const [what, change] of cases) {
    const queue = new SplitVirtqueue(memory, { size: 8, ...base, ...change }, 1);
    assert.equal(queue.failure?.fault, "bad-layout", what);
    assert.ok(queue.pop() instanceof VirtqueueError, what);
    assert.equal(queue.hasPending(), false);
    queue.setNotifications(true);
    queue.pushUsed(0, 0);
  }
});
