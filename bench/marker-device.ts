/**
 * The marker port as a device: a write timestamps the writing vCPU's next marker, a read
 * is the start barrier. It runs inside each vCPU worker (`vm.addWorkerDevice`), so a
 * marker costs the same on every dispatch path and never touches the main thread; the
 * default export is the worker-side factory.
 */
import type { AccessSize, Device } from "../runtime/devices/device.js";
import { MarkerLog } from "./marker-log.js";

export class MarkerDevice implements Device {
  readonly name = "bench marker";
  /** Accesses handled (marks and barrier reads), for reconciling the worker's exit counts. */
  handled = 0;
  private readonly log: MarkerLog;

  constructor(shared: SharedArrayBuffer) {
    this.log = new MarkerLog(shared);
  }

  /** `offset` is the vCPU index: vCPU i uses port MARKER_BASE + i. */
  write(offset: number, _size: AccessSize, _value: number): void {
    this.handled++;
    this.log.mark(offset);
  }

  read(offset: number, _size: AccessSize): number {
    this.handled++;
    this.log.arriveAndWait(offset);
    return 0;
  }
}

export default function createMarkerDevice(shared: SharedArrayBuffer): MarkerDevice {
  return new MarkerDevice(shared);
}
