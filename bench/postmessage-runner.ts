/**
 * One run of the naive postMessage reference path (one vCPU): the main thread creates the
 * VM through the backend, a plain worker (bench/postmessage-vcpu-worker.ts) runs the vCPU
 * and round-trips every exit as a message.
 */
import { Worker } from "node:worker_threads";
import { openHypervisor } from "../runtime/hypervisor/backends.js";
import { ExitKind } from "../runtime/hypervisor/hypervisor.js";
import { cpuidForVcpu } from "../runtime/boot/cpuid.js";
import { loadFlatProgram } from "../runtime/boot/flat-loader.js";
import { CounterDevice } from "../runtime/devices/counter.js";
import type { AccessSize } from "../runtime/devices/device.js";
import type { FigureSpec, RunCounts } from "./figures.js";
import { exitLoopProgram, parameterBlock } from "./guest-programs.js";
import { paramAddress } from "./guest-image.js";
import { FINISH_PORT, GUEST_MEMORY_BYTES, MARKER_BASE, targetAddress, targetFor } from "./layout.js";
import { MarkerLog, mainCpuWhileMeasuring, Phase } from "./marker-log.js";
import { expectedMarkers } from "./stats.js";
import { countedBy, guestIterations } from "./accounting.js";
import type { FigureRun } from "./js-runner.js";
import type { PostMessageWorkerData, WorkerMessage } from "./postmessage-vcpu-worker.js";

const WORKER_FILE = new URL("./postmessage-vcpu-worker.js", import.meta.url);

export async function runPostMessageFigure(figure: FigureSpec, counts: RunCounts): Promise<FigureRun> {
  const { kind, privilege } = figure;
  const target = targetFor(kind);
  if (figure.vcpus !== 1 || target === undefined || target.space === "msr") {
    throw new RangeError(`the postMessage reference runs port and MMIO kinds on one vCPU, not ${kind} on ${figure.vcpus}`);
  }
  const markers = expectedMarkers(counts);
  const log = MarkerLog.create(1, markers, counts.warmupBatches + counts.calibrationRounds, markers - 1);
  const hypervisor = openHypervisor();
  const handle = hypervisor.createVm();
  try {
    const memory = handle.createGuestMemory([{ gpa: 0, size: GUEST_MEMORY_BYTES }]);
    const descriptor = handle.createVcpu(0);
    const code = exitLoopProgram(kind, counts.opsPerBatch, privilege);
    const cpuState = loadFlatProgram(memory, {
      code,
      mode: privilege === "cpl0" ? "long64" : "user64",
      registers: { rdi: BigInt(paramAddress(0)) },
    });
    memory.write(paramAddress(0), parameterBlock({
      markerPort: MARKER_BASE,
      target: targetAddress(kind, 0),
      warmupBatches: counts.warmupBatches,
      calibrationRounds: counts.calibrationRounds,
      measuredBatches: counts.measuredBatches,
      finishPort: FINISH_PORT,
    }));
    const workerData: PostMessageWorkerData = {
      descriptor,
      memory: memory.toShared(),
      cpuState,
      cpuid: cpuidForVcpu(hypervisor.supportedCpuid(), 0),
      markerLog: log.buffer,
      markerPort: MARKER_BASE,
      finishPort: FINISH_PORT,
    };
    const counter = new CounterDevice();
    const wide = { high: 0 };
    const base = target.base;
    const mainCpu = mainCpuWhileMeasuring(log);
    let mainCpuNs = NaN;
    const worker = new Worker(WORKER_FILE, { workerData });
    let exits = 0;
    try {
      exits = await new Promise<number>((resolve, reject) => {
        worker.on("message", (message: WorkerMessage) => {
          switch (message.type) {
            case "exit": {
              const offset = message.address - base;
              const isRead = message.kind === ExitKind.IoIn || message.kind === ExitKind.MmioRead;
              let answer = 0;
              if (offset < 0 || offset >= target.length) answer = 0xffff_ffff;
              else if (isRead) answer = counter.read(offset, message.size as AccessSize, wide);
              else counter.write(offset, message.size as AccessSize, message.data, 0);
              worker.postMessage(answer);
              break;
            }
            case "done":
              resolve(message.exits);
              break;
            case "failed":
              reject(new Error(`postMessage vCPU worker: ${message.message}`));
              break;
          }
        });
        worker.on("error", reject);
        worker.on("exit", (code) => reject(new Error(`postMessage vCPU worker exited with code ${code} before finishing`)));
      });
      if (!log.reached(Phase.DONE)) throw new Error(`${kind}: the guest finished without its final marker being timestamped`);
      mainCpuNs = await mainCpu;
    } finally {
      await worker.terminate();
    }
    const iterations = guestIterations(counts, 1);
    const counted = kind === "pio-read" || kind === "mmio-read" ? counter.reads : counter.writes;
    const explained = log.count(0) + 2 + iterations;
    return {
      raw: { counts, marks: [log.marks(0)], mainCpuNs },
      check: { iterations, counted, countedBy: countedBy(kind, "postmessage"), unexplainedExits: Math.max(0, exits - explained) },
    };
  } finally {
    handle.close();
    hypervisor.close();
  }
}
