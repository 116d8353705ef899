/** A virtio-rng whose reset throws: a device bug outside the queue path, for a device worker to fail on. */
import { VirtioRng } from "../../runtime/devices/virtio/virtio-rng.js";

export class ResetFailingRng extends VirtioRng {
  override reset(): void {
    throw new Error("reset failed on purpose");
  }
}
