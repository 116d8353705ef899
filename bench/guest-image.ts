/**
 * The exit loop as a guest image for runners outside workervisor (the C baseline, QEMU):
 * the low guest memory exactly as `vm.loadProgram` leaves it (tables, TSS, code) plus the
 * parameter blocks, and the vCPU state the runtime's flat loader computes. Using the
 * loader itself keeps the C baseline on the same long-mode state as the JS runs.
 */
import { GuestMemory } from "../memory/guest-memory.js";
import { DEFAULT_ENTRY, type GuestMode, loadFlatProgram } from "../runtime/boot/flat-loader.js";
import type { CpuState } from "../runtime/hypervisor/x86/cpu-state.js";
import { type ExitLoopParams, parameterBlock, PARAM_BLOCK_BYTES } from "./guest-programs.js";
import { GUEST_MEMORY_BYTES, IMAGE_END, PARAMS_BASE } from "./layout.js";

export interface GuestImage {
  /** Guest-physical bytes [0, IMAGE_END). */
  bytes: Uint8Array;
  cpuState: CpuState;
  /** RDI of each vCPU: its parameter block. */
  parameterAddresses: number[];
}

export function paramAddress(vcpu: number): number {
  return PARAMS_BASE + vcpu * PARAM_BLOCK_BYTES;
}

export function buildGuestImage(code: number[], mode: GuestMode, params: ExitLoopParams[]): GuestImage {
  if (DEFAULT_ENTRY + code.length > PARAMS_BASE) throw new RangeError(`guest program of ${code.length} bytes overlaps the parameter blocks`);
  if (paramAddress(params.length) > IMAGE_END) throw new RangeError(`${params.length} parameter blocks do not fit below 0x${IMAGE_END.toString(16)}`);
  const memory = GuestMemory.allocate([{ gpa: 0, size: GUEST_MEMORY_BYTES }]);
  const cpuState = loadFlatProgram(memory, { code, mode });
  params.forEach((p, i) => memory.write(paramAddress(i), parameterBlock(p)));
  return {
    bytes: memory.read(0, IMAGE_END),
    cpuState,
    parameterAddresses: params.map((_, i) => paramAddress(i)),
  };
}
