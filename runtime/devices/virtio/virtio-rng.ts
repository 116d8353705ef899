/**
 * virtio-rng (virtio 1.2 section 5.4): one request queue; every device-writable buffer the
 * driver offers is filled from the host's CSPRNG (node:crypto) and returned whole.
 */
import { randomFillSync } from "node:crypto";
import type { SplitVirtqueue } from "./virtqueue.js";
import { VIRTIO_ID_ENTROPY, type VirtioDevice } from "./virtio-device.js";

export const VIRTIO_RNG_QUEUE_SIZE = 256;
/** Entropy handed out per request at most, so one huge buffer cannot stall the thread. */
export const VIRTIO_RNG_MAX_REQUEST = 64 * 1024;

export class VirtioRng implements VirtioDevice {
  readonly name = "virtio-rng";
  readonly deviceId = VIRTIO_ID_ENTROPY;
  readonly features = 0n;
  readonly queueSizes = [VIRTIO_RNG_QUEUE_SIZE];
  readonly config = new Uint8Array(0);
  /** Bytes of entropy given to the guest. */
  bytesServed = 0;

  processQueue(_index: number, queue: SplitVirtqueue): void {
    // At most a queue's worth per call: a guest refilling the ring from another vCPU must not
    // hold the main thread; the transport calls again later for what is left.
    for (let budget = queue.size, chain = queue.pop(); chain !== undefined && !(chain instanceof Error); chain = --budget > 0 ? queue.pop() : undefined) {
      let written = 0;
      for (const segment of chain.writable) {
        const room = Math.min(segment.bytes.length, VIRTIO_RNG_MAX_REQUEST - written);
        if (room <= 0) break;
        randomFillSync(segment.bytes, 0, room);
        written += room;
      }
      this.bytesServed += written;
      queue.pushUsed(chain.head, written);
    }
  }

  reset(): void {}
}
