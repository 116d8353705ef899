/**
 * Worker-local factory for the ACPI PM timer: a pure function of the host's monotonic clock
 * (one clock for every thread) and the VM's time origin in `shared`, so every vCPU worker
 * answers it without a trip to the main thread and all of them agree.
 */
import { AcpiPmTimer } from "./acpi.js";

export default function createPmTimer(shared: SharedArrayBuffer): AcpiPmTimer {
  return new AcpiPmTimer(undefined, shared);
}
