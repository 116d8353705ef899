/**
 * A counter device that also does a fixed amount of work per write (a busy-wait), standing
 * in for a device whose writes cost real time to handle: the "work-write" figure asks
 * whether a posted write lets that work overlap the guest, against C doing it inline.
 */
import type { AccessSize } from "../runtime/devices/device.js";
import { CounterDevice } from "../runtime/devices/counter.js";

/** Work per write, ns; the C baseline's job gets the same figure (bench/c-runner.ts). */
export const WORK_NS = 5000;

export class BusyCounterDevice extends CounterDevice {
  constructor(private readonly workNs: number = WORK_NS, name = "busy counter") {
    super(undefined, name);
    if (!Number.isInteger(workNs) || workNs < 0) throw new RangeError(`work per write must be a whole number of ns, got ${workNs}`);
  }

  override write(offset: number, size: AccessSize, value: number, high: number): void {
    const until = performance.now() + this.workNs / 1e6;
    super.write(offset, size, value, high);
    // A spin, not a sleep: the work occupies the thread that handles the write, as real work would.
    while (performance.now() < until);
  }
}
