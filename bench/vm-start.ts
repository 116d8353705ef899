/**
 * VM start: from `Vm.create` to the guest's first exit (the exit loop's barrier read,
 * timestamped on the vCPU thread), with a cold worker (a fresh pool: thread start and
 * module load) and with a warm pool. Sampled with tinybench; the C baseline's figure is
 * the same span, open("/dev/kvm") to the first exit.
 */
import { Bench } from "tinybench";
import { Vm } from "../runtime/vm.js";
import { destroyVcpuPool, warmVcpuPool } from "../runtime/vcpu-pool.js";
import { exitLoopProgram, parameterBlock } from "./guest-programs.js";
import { buildGuestImage, paramAddress } from "./guest-image.js";
import { FINISH_PORT, GUEST_MEMORY_BYTES, MARKER_BASE, PIO_TARGET } from "./layout.js";
import { MarkerLog } from "./marker-log.js";
import { FinishLine } from "./finish-line.js";
import { type CBaseline, runCJob } from "./c-baseline.js";
import type { RunCounts } from "./figures.js";

const MARKER_MODULE = new URL("./marker-device.js", import.meta.url).href;

/** The smallest exit loop: barrier, one batch of each phase, finish. */
const START_COUNTS: RunCounts = { opsPerBatch: 1, warmupBatches: 1, calibrationRounds: 1, measuredBatches: 1 };
const START_PROGRAM = () => exitLoopProgram("pio-write", START_COUNTS.opsPerBatch, "cpl0");
const START_PARAMS = {
  markerPort: MARKER_BASE,
  target: PIO_TARGET.base,
  warmupBatches: START_COUNTS.warmupBatches,
  calibrationRounds: START_COUNTS.calibrationRounds,
  measuredBatches: START_COUNTS.measuredBatches,
  finishPort: FINISH_PORT,
};

export type StartMode = "cold" | "warm" | "c";

export interface StartFigure {
  mode: StartMode;
  /** Create to first guest exit, nanoseconds, one per VM started. */
  samplesNs: number[];
}

/** Starts one VM and returns create → first exit in nanoseconds. */
async function startOnce(): Promise<number> {
  const log = MarkerLog.create(1, 16, 0, 0);
  const created = Number(process.hrtime.bigint());
  const vm = Vm.create({ memory: GUEST_MEMORY_BYTES, vcpus: 1 });
  try {
    vm.addWorkerDevice({ space: "pio", base: MARKER_BASE, length: 1, module: MARKER_MODULE, shared: log.buffer });
    // The measured port writes go nowhere (unclaimed): only the first exit matters here.
    vm.addDevice({ space: "pio", base: FINISH_PORT, length: 1, device: new FinishLine(1, () => vm.exit(0)), sync: true });
    vm.loadProgram({ code: START_PROGRAM(), mode: "long64", registers: { rdi: BigInt(paramAddress(0)) } });
    vm.memory.write(paramAddress(0), parameterBlock(START_PARAMS));
    const result = await vm.run();
    if (result.reason !== "debug-exit") throw new Error(`start run ended with ${result.reason}, expected the finish line`);
    return log.arrivals[0] - created;
  } finally {
    await vm.stop();
  }
}

async function sample(
  name: string,
  iterations: number,
  task: () => Promise<number>,
  hooks: { beforeEach?: () => Promise<void>; afterEach?: () => Promise<void> } = {},
): Promise<number[]> {
  const bench = new Bench({ iterations, time: 0, warmupIterations: 1, warmupTime: 0, retainSamples: true, throws: true });
  bench.add(name, async () => ({ overriddenDuration: (await task()) / 1e6 }), hooks);
  await bench.run();
  const result = bench.tasks[0].result;
  if (result.state !== "completed") throw new Error(`VM start (${name}) did not complete: ${result.state}`);
  return Array.from(result.latency.samples ?? [], (ms) => ms * 1e6);
}

export async function measureVmStart(iterations: number, c: CBaseline | undefined): Promise<StartFigure[]> {
  const figures: StartFigure[] = [];
  figures.push({
    mode: "cold",
    samplesNs: await sample("cold worker", iterations, startOnce, {
      beforeEach: () => destroyVcpuPool(),
      // Node 20 aborts the process when a piscina thread is terminated while it is still
      // loading its ESM task module (a require(esm) assertion), and a new pool starts two
      // threads: let both finish loading before the next destroy. Not timed.
      afterEach: () => warmVcpuPool(2),
    }),
  });
  await warmVcpuPool(2);
  figures.push({ mode: "warm", samplesNs: await sample("warm pool", iterations, startOnce) });
  if (c !== undefined) {
    const image = buildGuestImage(START_PROGRAM(), "long64", [START_PARAMS]);
    const devices = { markerBase: MARKER_BASE, finishPort: FINISH_PORT, maxMarks: 16, userspaceMsrs: false, target: { space: "pio" as const, ...PIO_TARGET } };
    const cStart = async () => (await runCJob(c, image, 1, devices)).startNs;
    figures.push({ mode: "c", samplesNs: await sample("C baseline", iterations, cStart) });
  }
  return figures;
}
