/**
 * What the suite measures: exit kinds, dispatch paths, privilege levels and vCPU counts,
 * which combinations make sense, and the default plan.
 */
import { type ExitKindName, type GuestPrivilege, kindRunsAtCpl3 } from "./guest-programs.js";

export type { ExitKindName, GuestPrivilege } from "./guest-programs.js";

/**
 * How a JS run handles the measured exit:
 *   worker       a device inside the vCPU worker (SAB state), no main-thread involvement
 *   main-sync    a main-thread device; the vCPU waits for the dispatcher's answer
 *   main-posted  a main-thread device; the write is posted to the ring and the vCPU runs on
 *   main-coalesced  a main-thread device whose writes KVM queues in the kernel (coalesced
 *                MMIO/PIO): no userspace exit unless the kernel's queue is full
 *   postmessage  the naive reference: every exit posted with postMessage, reply awaited
 *   kernel       nothing in userspace (CPUID, ioeventfd): the cost of the VM exit alone
 */
export type JsPath = "worker" | "main-sync" | "main-posted" | "main-coalesced" | "postmessage" | "kernel";
/** Baselines: the C program (exits handled inline on the vCPU thread) and QEMU. */
export type BaselinePath = "c-inline" | "qemu";
export type PathName = JsPath | BaselinePath;

export const ALL_KINDS: readonly ExitKindName[] = [
  "pio-write", "pio-read", "mmio-write", "mmio-read", "hlt", "cpuid", "msr-read", "msr-write", "ioeventfd", "work-write",
];
export const ALL_JS_PATHS: readonly JsPath[] = ["worker", "main-sync", "main-posted", "main-coalesced", "postmessage", "kernel"];
export const ALL_PRIVILEGES: readonly GuestPrivilege[] = ["cpl0", "cpl3"];

/** Which JS paths can carry each kind. */
export function pathsFor(kind: ExitKindName): readonly JsPath[] {
  switch (kind) {
    case "pio-write":
    case "mmio-write":
      return ["worker", "main-sync", "main-posted", "main-coalesced", "postmessage"];
    case "pio-read":
    case "mmio-read":
      return ["worker", "main-sync", "postmessage"];
    case "work-write":
      // Against C doing the same work inline: does the work overlap the guest?
      return ["main-posted", "main-coalesced"];
    case "msr-read":
    case "msr-write":
      // The worker sends every userspace MSR access it cannot handle as a sync request.
      return ["worker", "main-sync"];
    case "hlt":
      // Without an in-kernel irqchip the worker re-enters the guest itself (onHalt: "resume").
      return ["worker"];
    case "cpuid":
    case "ioeventfd":
      return ["kernel"];
  }
}

/** Paths whose runs need more than one vCPU support (postMessage is a one-vCPU reference). */
export function pathSupportsVcpus(path: JsPath, kind: ExitKindName, vcpus: number): boolean {
  if (vcpus === 1) return true;
  return path !== "postmessage" && kind !== "hlt";
}

export interface FigureKey {
  kind: ExitKindName;
  privilege: GuestPrivilege;
  vcpus: number;
}

export interface FigureSpec extends FigureKey {
  path: JsPath;
}

/** The guest's loop counts of one run (per vCPU). */
export interface RunCounts {
  /** K: measured instructions between two markers. */
  opsPerBatch: number;
  warmupBatches: number;
  calibrationRounds: number;
  measuredBatches: number;
}

export function keyOf(f: FigureKey): string {
  return `${f.kind}/${f.privilege}/${f.vcpus}`;
}

export interface PlanOptions {
  kinds: readonly ExitKindName[];
  paths: readonly JsPath[];
  privileges: readonly GuestPrivilege[];
  /** vCPU counts for the scaling figures (1 is always measured). */
  vcpuCounts: readonly number[];
  /** Kinds measured at every vCPU count (the others at 1 vCPU). */
  scalingKinds: readonly ExitKindName[];
  /** Paths measured at every vCPU count. */
  scalingPaths: readonly JsPath[];
  /** Kinds measured at every vCPU count on the main-sync path only (sync exits contending for the dispatcher). */
  scalingSyncKinds: readonly ExitKindName[];
  /** Privilege levels measured at every vCPU count. */
  scalingPrivileges: readonly GuestPrivilege[];
}

export const DEFAULT_PLAN: PlanOptions = {
  kinds: ALL_KINDS,
  paths: ALL_JS_PATHS,
  privileges: ALL_PRIVILEGES,
  vcpuCounts: [1, 2, 4],
  scalingKinds: ["pio-write"],
  scalingPaths: ["worker", "main-sync", "main-posted"],
  scalingSyncKinds: ["pio-read"],
  scalingPrivileges: ["cpl0"],
};

/** Every JS figure of the plan, grouped so that runs sharing a C baseline sit together. */
export function planFigures(plan: PlanOptions): FigureSpec[] {
  const figures: FigureSpec[] = [];
  const counts = [...new Set([1, ...plan.vcpuCounts])].sort((a, b) => a - b);
  for (const vcpus of counts) {
    for (const privilege of plan.privileges) {
      for (const kind of plan.kinds) {
        if (privilege === "cpl3" && !kindRunsAtCpl3(kind)) continue;
        const scales = plan.scalingKinds.includes(kind);
        const scalesSync = plan.scalingSyncKinds.includes(kind);
        if (vcpus > 1 && ((!scales && !scalesSync) || !plan.scalingPrivileges.includes(privilege))) continue;
        for (const path of pathsFor(kind)) {
          if (!plan.paths.includes(path)) continue;
          const scaledHere = scales ? plan.scalingPaths.includes(path) : path === "main-sync";
          if (vcpus > 1 && (!scaledHere || !pathSupportsVcpus(path, kind, vcpus))) continue;
          figures.push({ kind, path, privilege, vcpus });
        }
      }
    }
  }
  return figures;
}

/** The (kind, privilege, vCPUs) groups of a plan: one C baseline each. */
export function figureGroups(figures: readonly FigureSpec[]): FigureKey[] {
  const seen = new Map<string, FigureKey>();
  for (const f of figures) {
    if (!seen.has(keyOf(f))) seen.set(keyOf(f), { kind: f.kind, privilege: f.privilege, vcpus: f.vcpus });
  }
  return [...seen.values()];
}
