/**
 * One run of the C baseline for a figure group: the exit loop image and device map of
 * that (kind, privilege, vCPUs), and the device counts checked against the guest's loops.
 */
import { type CBaseline, type CRunResult, runCJob } from "./c-baseline.js";
import type { FigureKey, RunCounts } from "./figures.js";
import { exitLoopProgram } from "./guest-programs.js";
import { buildGuestImage } from "./guest-image.js";
import { FINISH_PORT, IOEVENTFD_TARGET, MARKER_BASE, targetAddress, targetFor } from "./layout.js";
import { countedBy, guestIterations, type RunCheck } from "./accounting.js";
import { expectedMarkers } from "./stats.js";
import { WORK_NS } from "./busy-counter.js";

export async function runCFigure(c: CBaseline, key: FigureKey, counts: RunCounts): Promise<CRunResult> {
  const params = Array.from({ length: key.vcpus }, (_, i) => ({
    markerPort: MARKER_BASE + i,
    target: targetAddress(key.kind, i),
    warmupBatches: counts.warmupBatches,
    calibrationRounds: counts.calibrationRounds,
    measuredBatches: counts.measuredBatches,
    finishPort: FINISH_PORT,
  }));
  const image = buildGuestImage(exitLoopProgram(key.kind, counts.opsPerBatch, key.privilege), key.privilege === "cpl0" ? "long64" : "user64", params);
  return runCJob(c, image, key.vcpus, {
    markerBase: MARKER_BASE,
    finishPort: FINISH_PORT,
    maxMarks: expectedMarkers(counts),
    userspaceMsrs: key.kind === "msr-read" || key.kind === "msr-write",
    target: targetFor(key.kind),
    ioeventfd: key.kind === "ioeventfd" ? { space: "mmio", ...IOEVENTFD_TARGET } : undefined,
    workNs: key.kind === "work-write" ? WORK_NS : 0,
  });
}

export function cCheck(kind: FigureKey["kind"], run: CRunResult, counts: RunCounts, vcpus: number): RunCheck {
  const iterations = guestIterations(counts, vcpus);
  const per = run.vcpus;
  const sum = (f: (v: CRunResult["vcpus"][number]) => number) => per.reduce((n, v) => n + f(v), 0);
  let counted: number | null;
  switch (kind) {
    case "pio-write": case "mmio-write": case "work-write": counted = sum((v) => v.writes); break;
    case "pio-read": case "mmio-read": counted = sum((v) => v.reads); break;
    case "msr-read": counted = sum((v) => v.msrReads); break;
    case "msr-write": counted = sum((v) => v.msrWrites); break;
    case "hlt": counted = sum((v) => v.hlts); break;
    case "ioeventfd": counted = sum((v) => v.eventfdCount ?? 0); break;
    case "cpuid": counted = null; break;
  }
  // The C baseline stops on any exit it does not expect, so nothing is unexplained.
  return { iterations, counted, countedBy: countedBy(kind, "c-inline"), unexplainedExits: 0 };
}
