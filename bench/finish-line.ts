/**
 * The finish port: each vCPU writes it once after its final marker. It is a synchronous
 * main-thread device, so by the time it sees a vCPU's write every write that vCPU posted
 * before has been handled (DESIGN section 4, ordering). When the last vCPU arrives it
 * calls `onAllFinished` (which reads the eventfds and ends the VM).
 */
import type { AccessSize, Device } from "../runtime/devices/device.js";

export class FinishLine implements Device {
  readonly name = "bench finish line";
  /** process.hrtime ns at which each finish write was handled, in order of arrival. */
  readonly finishedAt: number[];
  private finished = 0;

  constructor(
    private readonly vcpus: number,
    private readonly onAllFinished: () => void,
  ) {
    this.finishedAt = new Array<number>(vcpus).fill(NaN);
  }

  read(_offset: number, _size: AccessSize): number {
    return 0;
  }

  write(_offset: number, _size: AccessSize, _value: number): void {
    if (this.finished >= this.vcpus) return;
    this.finishedAt[this.finished] = Number(process.hrtime.bigint());
    this.finished++;
    if (this.finished === this.vcpus) this.onAllFinished();
  }
}
