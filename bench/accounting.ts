/**
 * Exit accounting: how many measured instructions the guest executed, and what counted
 * the exits they caused, so every figure can show that no exit went missing.
 */
import type { ExitKindName, RunCounts } from "./figures.js";

export interface RunCheck {
  /** Measured instructions the guest executed, warm-up included, all vCPUs. */
  iterations: number;
  /** What the device (or eventfd, or the worker's HLT count) saw; null: nothing can count them. */
  counted: number | null;
  countedBy: string;
  /** Userspace exits neither markers, barrier, finish nor counted explain. */
  unexplainedExits: number;
  /** main-coalesced: writes delivered from the kernel's queue, writes that exited because it was full, zones the host took. */
  coalesced?: { delivered: number; fullQueueExits: number; zones: number };
}

export function guestIterations(counts: RunCounts, vcpus: number): number {
  return vcpus * (counts.warmupBatches + counts.measuredBatches) * counts.opsPerBatch;
}

export function countedBy(kind: ExitKindName, path: string): string {
  switch (kind) {
    case "cpuid":
      return "none (handled in KVM; checked: no userspace exit besides markers)";
    case "ioeventfd":
      return "eventfd counter";
    case "hlt":
      return path === "c-inline" ? "KVM_EXIT_HLT count" : "HLT exits the worker resumed";
    default:
      if (path === "worker") return "counter device (in worker)";
      if (path === "c-inline") return "inline counter";
      if (path === "main-coalesced") return "counter device (main thread): kernel queue + full-queue exits";
      return "counter device (main thread)";
  }
}

/** Exits each measured instruction makes to userspace (0 for those KVM handles itself). */
export function userspaceExitsPerOp(kind: ExitKindName): number {
  return kind === "cpuid" || kind === "ioeventfd" ? 0 : 1;
}
