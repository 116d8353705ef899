/**
 * An in-process Ethernet switch: it joins the virtio-net devices of VMs in one process, so
 * two guests can talk with no host network and no privileges. It learns which port each
 * unicast source MAC sits behind; frames to a learnt MAC go to that port only, broadcast,
 * multicast and unknown destinations go to every other port. Delivery is synchronous into
 * the receiving device, which queues the frame (and drops it when its guest gives no
 * buffers in time: a network may drop, and says so in its counters).
 */
import { ETHERNET_HEADER_BYTES, MAX_FRAME_BYTES, type NetBackend, type NetReceiver } from "./net-backend.js";

export interface NetSwitchStats {
  /** Frames handed to exactly one port (a learnt destination). */
  forwarded: number;
  /** Frames copied to every other port (broadcast, multicast, unknown destination). */
  flooded: number;
  /** Frames dropped: runts, oversize, or a destination behind the sender's own port. */
  dropped: number;
}

export class NetSwitch {
  readonly stats: NetSwitchStats = { forwarded: 0, flooded: 0, dropped: 0 };
  private readonly ports = new Set<SwitchPort>();
  private readonly learnt = new Map<number, SwitchPort>();
  private opened = 0;

  /** A new port: give it to one virtio-net device as its backend. */
  port(): NetBackend {
    const port = new SwitchPort(this, `switch port ${this.opened++}`);
    this.ports.add(port);
    return port;
  }

  /** Ports open now. */
  get portCount(): number {
    return this.ports.size;
  }

  /** @internal a frame from `from`'s guest. */
  carry(from: SwitchPort, frame: Uint8Array): void {
    if (frame.length < ETHERNET_HEADER_BYTES || frame.length > MAX_FRAME_BYTES) {
      this.stats.dropped++;
      return;
    }
    const source = macKey(frame, 6);
    if ((frame[6] & 1) === 0) this.learnt.set(source, from);
    // One copy for all receivers: they only read it.
    const copy = frame.slice();
    const to = (frame[0] & 1) === 0 ? this.learnt.get(macKey(frame, 0)) : undefined;
    if (to !== undefined) {
      if (to === from) {
        this.stats.dropped++;
        return;
      }
      this.stats.forwarded++;
      to.deliver(copy);
      return;
    }
    this.stats.flooded++;
    for (const port of this.ports) if (port !== from) port.deliver(copy);
  }

  /** @internal */
  remove(port: SwitchPort): void {
    this.ports.delete(port);
    for (const [mac, owner] of this.learnt) if (owner === port) this.learnt.delete(mac);
  }
}

class SwitchPort implements NetBackend {
  private receiver: NetReceiver | undefined;
  private closed = false;

  constructor(
    private readonly owner: NetSwitch,
    readonly name: string,
  ) {}

  attach(receiver: NetReceiver): void {
    this.receiver = receiver;
  }

  transmit(frame: Uint8Array): void {
    if (!this.closed) this.owner.carry(this, frame);
  }

  deliver(frame: Uint8Array): void {
    if (!this.closed) this.receiver?.receive(frame);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.owner.remove(this);
  }
}

/** The MAC at `offset` as a number (48 bits fit a double exactly). */
function macKey(frame: Uint8Array, offset: number): number {
  let key = 0;
  for (let i = 0; i < 6; i++) key = key * 256 + frame[offset + i];
  return key;
}
