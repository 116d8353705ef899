/**
 * One run of one JS figure through workervisor's own paths (worker, main-sync,
 * main-posted, main-coalesced, kernel): builds the VM, runs the exit loop, checks every
 * exit was counted, and returns the raw markers for bench/stats.ts.
 */
import { Vm, type VmStats } from "../runtime/vm.js";
import { CounterDevice } from "../runtime/devices/counter.js";
import { BusyCounterDevice } from "./busy-counter.js";
import type { DispatcherOptions } from "../runtime/dispatcher.js";
import type { SpinPolicy } from "../memory/waiter.js";
import { type FigureSpec, pathsFor, pathSupportsVcpus, type RunCounts } from "./figures.js";
import { exitLoopProgram, parameterBlock } from "./guest-programs.js";
import { paramAddress } from "./guest-image.js";
import { FINISH_PORT, GUEST_MEMORY_BYTES, IOEVENTFD_TARGET, MARKER_BASE, targetAddress, targetFor } from "./layout.js";
import { MarkerLog, mainCpuWhileMeasuring, Phase } from "./marker-log.js";
import { FinishLine } from "./finish-line.js";
import { eventFdCount } from "./eventfd-count.js";
import { expectedMarkers, type RawRun } from "./stats.js";
import { countedBy, guestIterations, type RunCheck, userspaceExitsPerOp } from "./accounting.js";

const MARKER_MODULE = new URL("./marker-device.js", import.meta.url).href;
const COUNTER_WORKER_MODULE = new URL("../runtime/devices/counter-worker.js", import.meta.url).href;

export interface RuntimeTuning {
  spin: SpinPolicy;
  dispatcher: DispatcherOptions;
  ringCapacity: number;
}

export interface FigureRun {
  raw: RawRun;
  check: RunCheck;
  stats?: VmStats;
}

export async function runJsFigure(figure: FigureSpec, counts: RunCounts, tuning: RuntimeTuning): Promise<FigureRun> {
  const { kind, path, privilege, vcpus } = figure;
  if (path === "postmessage") throw new Error("the postMessage path has its own runner (bench/postmessage-runner.ts)");
  if (!pathsFor(kind).includes(path) || !pathSupportsVcpus(path, kind, vcpus)) {
    throw new RangeError(`${kind} cannot be measured on the ${path} path with ${vcpus} vCPU(s)`);
  }
  const markers = expectedMarkers(counts);
  const log = MarkerLog.create(vcpus, markers, counts.warmupBatches + counts.calibrationRounds, markers - 1);
  const code = exitLoopProgram(kind, counts.opsPerBatch, privilege);
  const vm = Vm.create({
    memory: GUEST_MEMORY_BYTES,
    vcpus,
    userspaceMsrs: kind === "msr-read" || kind === "msr-write",
    onHalt: kind === "hlt" ? "resume" : "stop",
    ringCapacity: tuning.ringCapacity,
    spin: tuning.spin,
    dispatcher: tuning.dispatcher,
  });
  try {
    vm.addWorkerDevice({ space: "pio", base: MARKER_BASE, length: vcpus, module: MARKER_MODULE, shared: log.buffer });
    const counters: CounterDevice[] = [];
    const target = targetFor(kind);
    for (let i = 0; target !== undefined && i < vcpus; i++) {
      const base = target.base + i * target.stride;
      if (path === "worker") {
        const shared = CounterDevice.createState();
        vm.addWorkerDevice({ space: target.space, base, length: target.length, module: COUNTER_WORKER_MODULE, shared });
        counters.push(new CounterDevice(shared));
      } else {
        const counter = kind === "work-write" ? new BusyCounterDevice(undefined, `busy counter ${i}`) : new CounterDevice(undefined, `counter ${i}`);
        vm.addDevice({
          space: target.space, base, length: target.length, device: counter,
          sync: path === "main-sync", coalesced: path === "main-coalesced",
        });
        counters.push(counter);
      }
    }
    const eventFds = kind === "ioeventfd"
      ? Array.from({ length: vcpus }, (_, i) => vm.addIoEvent({ space: "mmio", address: targetAddress(kind, i), size: IOEVENTFD_TARGET.size }))
      : [];
    let signalled = 0;
    const finish = new FinishLine(vcpus, () => {
      // The eventfds close with the VM: read them first.
      signalled = eventFds.reduce((sum, fd) => sum + eventFdCount(fd), 0);
      vm.exit(0);
    });
    vm.addDevice({ space: "pio", base: FINISH_PORT, length: 1, device: finish, sync: true });
    for (let i = 0; i < vcpus; i++) {
      vm.loadProgram({ code, mode: privilege === "cpl0" ? "long64" : "user64", registers: { rdi: BigInt(paramAddress(i)) } }, i);
    }
    for (let i = 0; i < vcpus; i++) {
      vm.memory.write(paramAddress(i), parameterBlock({
        markerPort: MARKER_BASE + i,
        target: targetAddress(kind, i),
        warmupBatches: counts.warmupBatches,
        calibrationRounds: counts.calibrationRounds,
        measuredBatches: counts.measuredBatches,
        finishPort: FINISH_PORT,
      }));
    }

    const mainCpu = mainCpuWhileMeasuring(log);
    const result = await vm.run();
    if (result.reason !== "debug-exit" || result.status !== 0) {
      throw new Error(`${kind}/${path} run ended with ${result.reason}${result.detail ? ` (${result.detail})` : ""}, expected the finish line`);
    }
    if (!log.reached(Phase.DONE)) throw new Error(`${kind}: the guest finished without its final marker being timestamped`);
    const mainCpuNs = await mainCpu;
    const stats = vm.stats;

    const markerWrites = Array.from({ length: vcpus }, (_, i) => log.count(i)).reduce((a, b) => a + b, 0);
    let counted: number | null;
    switch (kind) {
      case "cpuid":
        counted = null;
        break;
      case "ioeventfd":
        counted = signalled;
        break;
      case "hlt":
        counted = stats.inWorker - markerWrites - vcpus; // markers and barrier reads are in-worker too
        break;
      case "pio-read":
      case "mmio-read":
      case "msr-read":
        counted = counters.reduce((sum, c) => sum + c.reads, 0);
        break;
      default:
        counted = counters.reduce((sum, c) => sum + c.writes, 0);
    }
    const iterations = guestIterations(counts, vcpus);
    // With a coalesced zone a measured write exits only when the kernel's queue is full; it
    // is then a sync write, as is each vCPU's finish-line write.
    const coalesced = path === "main-coalesced"
      ? { delivered: stats.coalesced, fullQueueExits: stats.coalescedZones > 0 ? stats.sync - vcpus : 0, zones: stats.coalescedZones }
      : undefined;
    if (coalesced && counted !== coalesced.delivered + coalesced.fullQueueExits + (coalesced.zones > 0 ? 0 : stats.posted)) {
      throw new Error(
        `${kind}/${path}: the device saw ${counted} writes but ${coalesced.delivered} were delivered from the kernel's queue ` +
          `and ${coalesced.fullQueueExits} exited on a full queue (${stats.posted} posted)`,
      );
    }
    const measuredExits = coalesced && coalesced.zones > 0 ? coalesced.fullQueueExits : iterations * userspaceExitsPerOp(kind);
    const explained = markerWrites + 2 * vcpus + measuredExits;
    // An early finisher parks (HLT, or a kick out of its pause loop): one exit each.
    const unexplainedExits = Math.max(0, stats.exits - explained - (vcpus - 1));
    return {
      raw: {
        counts,
        marks: Array.from({ length: vcpus }, (_, i) => log.marks(i)),
        // The finish line is a sync write: every posted or queued write was handled before it.
        drainedAt: path === "main-posted" || path === "main-coalesced" ? Math.max(...finish.finishedAt) : undefined,
        mainCpuNs,
      },
      check: { iterations, counted, countedBy: countedBy(kind, path), unexplainedExits, coalesced },
      stats,
    };
  } finally {
    await vm.stop();
  }
}
