/**
 * Where the benchmark puts things in the guest's address spaces. Shared by the JS runs,
 * the C baseline's job files and the QEMU image, so every implementation sees the same
 * ports and addresses.
 */
import type { ExitKindName } from "./guest-programs.js";

export const GUEST_MEMORY_BYTES = 2 << 20;
/** Parameter blocks of the exit loop, one per vCPU, above the program at 0x10000. */
export const PARAMS_BASE = 0x20000;
/** First guest byte past what the C baseline and QEMU need copied (tables, code, parameters). */
export const IMAGE_END = 0x30000;

/** vCPU i timestamps on port MARKER_BASE + i (written) and waits at the barrier there (read). */
export const MARKER_BASE = 0x600;
export const FINISH_PORT = 0x6f0;

/** Per-vCPU targets: a counter device each, at base + i × stride. */
export const PIO_TARGET = { base: 0x500, stride: 0x10, length: 16 } as const;
export const MMIO_TARGET = { base: 0xd000_0000, stride: 0x1000, length: 16 } as const;
/**
 * MSR indexes KVM does not implement, so with KVM_CAP_X86_USER_SPACE_MSR (reason UNKNOWN)
 * every RDMSR/WRMSR of them exits to userspace: the top of the range KVM keeps for its own
 * paravirtual MSRs (0x4b564d00-0x4b564dff, Documentation/virt/kvm/x86/msr.rst), of which
 * it uses only the first few; vCPU i uses 0x4b564dc0 + i. The counts check would catch a
 * kernel that started handling them.
 */
export const MSR_TARGET = { base: 0x4b56_4dc0, stride: 1, length: 1 } as const;
/** Doorbells registered as ioeventfds: guest writes signal an eventfd in the kernel. */
export const IOEVENTFD_TARGET = { base: 0xd100_0000, stride: 0x1000, size: 4 } as const;

export interface TargetRange {
  space: "pio" | "mmio" | "msr";
  base: number;
  stride: number;
  length: number;
}

/** The address space and range the measured instruction of `kind` touches, or none. */
export function targetFor(kind: ExitKindName): TargetRange | undefined {
  switch (kind) {
    case "pio-write":
    case "pio-read":
    case "work-write":
      return { space: "pio", ...PIO_TARGET };
    case "mmio-write":
    case "mmio-read":
      return { space: "mmio", ...MMIO_TARGET };
    case "msr-read":
    case "msr-write":
      return { space: "msr", ...MSR_TARGET };
    case "ioeventfd":
    case "hlt":
    case "cpuid":
      return undefined;
  }
}

/** The value the exit loop loads into its target register for vCPU `index`. */
export function targetAddress(kind: ExitKindName, index: number): number {
  if (kind === "ioeventfd") return IOEVENTFD_TARGET.base + index * IOEVENTFD_TARGET.stride;
  const range = targetFor(kind);
  return range === undefined ? 0 : range.base + index * range.stride;
}
