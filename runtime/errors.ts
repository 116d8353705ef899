/** Errors a VM's user can act on, one class per cause. */
import type { RegisterDump } from "../workers/vcpu-task.js";

/** Invalid options given to `Vm.create` or a device registration. */
export class VmConfigError extends Error {
  override name = "VmConfigError";
}

/** A command-line flag with a value that cannot be used; the message names the flag. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The VM is in a state where the call cannot be made. */
export class VmStateError extends Error {
  override name = "VmStateError";
}

/** The guest hit a fatal exit: triple fault, internal error or failed entry. */
export class GuestFatalError extends Error {
  override name = "GuestFatalError";
  constructor(
    readonly vcpu: number,
    readonly exitKind: string,
    readonly detail: string,
    readonly registers: RegisterDump,
  ) {
    const r = registers;
    super(
      `vCPU ${vcpu} stopped on a fatal ${exitKind} exit${detail ? ` (${detail})` : ""}\n` +
        `  RIP ${r.rip}  RSP ${r.rsp}  RFLAGS ${r.rflags}\n` +
        `  CR0 ${r.cr0}  CR3 ${r.cr3}  CR4 ${r.cr4}  EFER ${r.efer}\n` +
        `  CS  ${r.cs}`,
    );
  }
}

/** A vCPU worker threw or died; its VM was stopped. */
export class VcpuWorkerError extends Error {
  override name = "VcpuWorkerError";
  constructor(readonly vcpu: number, cause: unknown) {
    super(`vCPU ${vcpu} worker failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** A device worker threw or died; its VM was stopped. */
export class DeviceWorkerError extends Error {
  override name = "DeviceWorkerError";
  constructor(readonly device: string, cause: unknown) {
    super(`the device worker of ${device} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}
