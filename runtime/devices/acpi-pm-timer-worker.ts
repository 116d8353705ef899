/**
 * Worker-local factory for the ACPI PM timer: it is a pure function of the host's monotonic
 * clock, so every vCPU worker can answer it without a trip to the main thread.
 */
import { AcpiPmTimer } from "./acpi.js";

export default function createPmTimer(): AcpiPmTimer {
  return new AcpiPmTimer();
}
