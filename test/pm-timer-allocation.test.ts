/**
 * The ACPI PM timer in a vCPU worker, read tens of thousands of times by a C guest (Linux
 * reads it often): every read is answered in the worker, and the worker allocates next to
 * nothing per read. An allocation meter in the same worker measures its heap while the
 * guest reads.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { destroyVcpuPool, Vm } from "../runtime/index.js";
import { AcpiPmTimer, DEFAULT_PM_TIMER_PORT, PM_TIMER_LENGTH } from "../runtime/devices/acpi.js";
import { buildFlatGuest } from "./helpers/flat-guest.js";
import { ALLOCATION_METER_LENGTH, AllocationMeterDevice } from "./fixtures/allocation-meter-device.js";

after(() => destroyVcpuPool());

const MiB = 1 << 20;
const METER_PORT = 0x700;
const RESULTS = 0x80000;
const WARMUP = 5000;
const ITERATIONS = 40_000;
const PM_TIMER_WORKER = new URL("../runtime/devices/acpi-pm-timer-worker.js", import.meta.url).href;
const METER_WORKER = new URL("./fixtures/allocation-meter-device.js", import.meta.url).href;
/**
 * Heap bytes per read the worker may allocate. Measured here: 10-11 with the timer reading
 * CLOCK_MONOTONIC into a preallocated timespec (4 with a device that reads no clock at all:
 * the worker's exit path and the meter); 44 with process.hrtime.bigint() and BigInt
 * arithmetic per read, and as many with process.hrtime()'s pair, which V8 did not elide.
 */
const MAX_BYTES_PER_READ = 24;

test("a vCPU worker answers PM timer reads without allocating per read", { timeout: 120_000 }, async (t) => {
  const meter = AllocationMeterDevice.createState();
  const vm = Vm.create({ memory: 2 * MiB });
  try {
    vm.addDebugExit();
    vm.addWorkerDevice({
      space: "pio", base: DEFAULT_PM_TIMER_PORT, length: PM_TIMER_LENGTH, module: PM_TIMER_WORKER, shared: AcpiPmTimer.createOrigin(),
    });
    vm.addWorkerDevice({ space: "pio", base: METER_PORT, length: ALLOCATION_METER_LENGTH, module: METER_WORKER, shared: meter });
    vm.loadProgram({ code: buildFlatGuest("pm-timer-reads", { WARMUP, ITERATIONS, METER_PORT }) });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });

    const total = WARMUP + ITERATIONS;
    assert.equal(vm.memory.readU64(RESULTS), BigInt(total), "the guest made every read");
    assert.ok(vm.memory.readU64(RESULTS + 8) > 0n, "the counter moved between reads");
    const { inWorker, sync } = vm.stats;
    assert.ok(inWorker >= total && sync <= 3, `the reads were answered in the worker (in-worker ${inWorker}, sync ${sync})`);

    const report = AllocationMeterDevice.report(meter);
    assert.deepEqual([report.starts, report.stops, report.stray], [1, 1, 0], "one measurement, started and stopped");
    const perRead = report.bytes / ITERATIONS;
    t.diagnostic(`${report.bytes} heap bytes over ${ITERATIONS} PM timer reads (${perRead.toFixed(2)} per read), ${report.collections} collections`);
    assert.ok(perRead <= MAX_BYTES_PER_READ, `${perRead.toFixed(1)} heap bytes per PM timer read in the worker (at most ${MAX_BYTES_PER_READ})`);
  } finally {
    await vm.stop();
  }
});
