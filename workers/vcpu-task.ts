/** The messages between the VM (main thread) and a vCPU worker. Structured-clonable only. */
import type { VcpuDescriptor } from "../runtime/hypervisor/hypervisor.js";
import type { CpuState, CpuidEntry, RegisterDump } from "../runtime/hypervisor/x86/cpu-state.js";
import type { SharedRegion } from "../memory/guest-memory.js";
import type { SpinPolicy } from "../memory/waiter.js";

export type AddressSpace = "pio" | "mmio" | "msr";

export interface AddressRange {
  space: AddressSpace;
  base: number;
  length: number;
}

/** A device the worker runs itself: its module's default export builds it from a SAB. */
export interface WorkerDeviceSpec extends AddressRange {
  /** File URL or absolute path of an ES module whose default export is a `WorkerDeviceFactory`. */
  module: string;
  shared: SharedArrayBuffer;
}

export interface VcpuTask {
  descriptor: VcpuDescriptor;
  channel: SharedArrayBuffer;
  doorbell: SharedArrayBuffer;
  memory: SharedRegion[];
  cpuState: CpuState;
  cpuid: CpuidEntry[];
  /** The vCPU ran before (a task after a suspend): it has its CPUID, which KVM lets no one change after KVM_RUN. */
  cpuidSet?: boolean;
  /** Main-thread devices whose writes the vCPU must wait for. */
  syncWrites: AddressRange[];
  workerDevices: WorkerDeviceSpec[];
  spin: SpinPolicy;
  /** Re-enter the guest after a HLT exit instead of ending the vCPU. */
  resumeOnHalt: boolean;
  /** Complete CPL0 instructions the backend could not run (PVM: INT3, FWAIT) instead of failing. */
  completeKernelInstructions?: boolean;
  /** Split interrupt controllers: the userspace PIC's INT output (Int32 word 0), for the boot vCPU. */
  picOutput?: SharedArrayBuffer;
  /** Split interrupt controllers: Int32 word `descriptor.index` set when the VM asks the vCPU to leave a HLT after a kick. */
  leaveHalt?: SharedArrayBuffer;
}

export type { RegisterDump };

export type VcpuOutcome =
  | { reason: "stopped" }
  /** Left the run loop for Control.SUSPEND; the VM may start the vCPU again with a new state. */
  | { reason: "suspended" }
  | { reason: "hlt" }
  | { reason: "system-event"; detail: string }
  | { reason: "fatal"; exitKind: string; detail: string; registers: RegisterDump };
