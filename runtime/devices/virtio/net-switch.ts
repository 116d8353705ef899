/**
 * An in-process Ethernet switch: it joins the virtio-net devices of VMs in one process, so
 * two guests can talk with no host network and no privileges, whichever thread each NIC
 * runs on (the main thread or a device worker). It lives in one SharedArrayBuffer: per port
 * a receive ring (record-ring.ts) and the MACs learnt behind it. There is no switching
 * thread: the sender's thread learns its source MAC, looks the destination up, and copies
 * the frame into the receiving port's ring, ringing its bell (an eventfd for a device worker
 * blocked in poll(2), an Atomics word for a thread with an event loop). So frames between two
 * device workers never touch the main thread. Frames to a learnt MAC go to that port only;
 * broadcast, multicast and unknown destinations to every other port. A full ring drops the
 * frame and counts it (a network may drop, and says so in its counters).
 *
 * `port()` opens a port used on this thread; `portHandle()` a structured-clonable handle a
 * device worker opens with `SwitchPort.open(handle)` (see VirtioNet's `switchPort` option).
 */
import { ETHERNET_HEADER_BYTES, MAX_FRAME_BYTES, type NetBackend, type NetReceiver } from "./net-backend.js";
import { RecordRing } from "./record-ring.js";
import type { FdWatcher } from "./virtio-device.js";

export interface NetSwitchStats {
  /** Frames handed to exactly one port (a learnt destination). */
  forwarded: number;
  /** Frames copied to every other port (broadcast, multicast, unknown destination). */
  flooded: number;
  /** Frames dropped: runts, oversize, a destination behind the sender's own port, or a receiving port's full ring. */
  dropped: number;
}

export interface NetSwitchOptions {
  /** Ports the switch can have open at once (default 16). */
  maxPorts?: number;
  /** Bytes of each port's receive ring, a power of 2 (default 256 KiB: ~170 full-size frames). */
  ringBytes?: number;
}

/** What a device worker needs to open a port of a switch: structured-clonable. */
export interface SwitchPortHandle {
  switch: SharedArrayBuffer;
  port: number;
}

const enum Global {
  Stamp = 0,
  Forwarded = 1,
  Flooded = 2,
  Dropped = 3,
  MaxPorts = 4,
  RingBytes = 5,
  Words = 8,
}
/** Per port: a seqlock over the learnt MACs (written by the port's own thread only), then the MACs. */
const MACS_PER_PORT = 4;
const PORT_SEQ = 0;
const PORT_MACS = 1;
const MAC_WORDS = 3; // high 16 bits, low 32 bits, learning stamp (0: empty)
const PORT_WORDS = 16;

export class NetSwitch {
  readonly shared: SharedArrayBuffer;
  readonly maxPorts: number;
  private readonly globals: Int32Array;
  private readonly portWords: Int32Array;
  private readonly rings: RecordRing[];

  constructor(options: NetSwitchOptions | SharedArrayBuffer = {}) {
    if (options instanceof SharedArrayBuffer) {
      this.shared = options;
      const globals = new Int32Array(options, 0, Global.Words);
      this.maxPorts = globals[Global.MaxPorts];
    } else {
      const maxPorts = options.maxPorts ?? 16;
      const ringBytes = options.ringBytes ?? 256 * 1024;
      if (!Number.isInteger(maxPorts) || maxPorts < 1 || maxPorts > 1024) throw new RangeError(`a switch has 1 to 1024 ports, got maxPorts ${options.maxPorts}`);
      if (!Number.isInteger(ringBytes) || ringBytes < 4 * (MAX_FRAME_BYTES + 4) || (ringBytes & (ringBytes - 1)) !== 0) {
        throw new RangeError(`ringBytes must be a power of 2 holding at least four full-size frames (8192 or more), got ${options.ringBytes}`);
      }
      this.maxPorts = maxPorts;
      this.shared = new SharedArrayBuffer(4 * (Global.Words + PORT_WORDS * maxPorts) + maxPorts * RecordRing.bytesFor(ringBytes));
      const globals = new Int32Array(this.shared, 0, Global.Words);
      globals[Global.MaxPorts] = maxPorts;
      globals[Global.RingBytes] = ringBytes;
    }
    this.globals = new Int32Array(this.shared, 0, Global.Words);
    this.portWords = new Int32Array(this.shared, 4 * Global.Words, PORT_WORDS * this.maxPorts);
    const ringBytes = this.globals[Global.RingBytes];
    const ringsAt = 4 * (Global.Words + PORT_WORDS * this.maxPorts);
    this.rings = Array.from({ length: this.maxPorts }, (_, p) => new RecordRing(this.shared, ringsAt + p * RecordRing.bytesFor(ringBytes), ringBytes));
  }

  /** A new port used on this thread: give it to one virtio-net device as its backend. */
  port(): NetBackend {
    return SwitchPort.open(this.portHandle(), this);
  }

  /**
   * A new port for a device on another thread (VirtioNet's `switchPort` option): the port
   * exists, and queues frames, from now on; the device's close() closes it.
   */
  portHandle(): SwitchPortHandle {
    for (let p = 0; p < this.maxPorts; p++) {
      if (this.rings[p].isOpen) continue;
      if (!this.claim(p)) continue;
      return { switch: this.shared, port: p };
    }
    throw new RangeError(`the switch has all its ${this.maxPorts} ports open; make it with a larger maxPorts`);
  }

  /** Ports open now. */
  get portCount(): number {
    return this.rings.filter((ring) => ring.isOpen).length;
  }

  get stats(): NetSwitchStats {
    const g = this.globals;
    const ringDrops = this.rings.reduce((sum, ring) => sum + ring.refused, 0);
    return { forwarded: Atomics.load(g, Global.Forwarded) >>> 0, flooded: Atomics.load(g, Global.Flooded) >>> 0, dropped: (Atomics.load(g, Global.Dropped) >>> 0) + ringDrops };
  }

  /** @internal the receive ring of port `p`. */
  ring(p: number): RecordRing {
    if (!Number.isInteger(p) || p < 0 || p >= this.maxPorts) throw new RangeError(`switch port ${p} does not exist (the switch has ${this.maxPorts})`);
    return this.rings[p];
  }

  /** @internal a frame from port `from`'s guest, on the sender's thread. */
  carry(from: number, frame: Uint8Array): void {
    const g = this.globals;
    if (frame.length < ETHERNET_HEADER_BYTES || frame.length > MAX_FRAME_BYTES) {
      Atomics.add(g, Global.Dropped, 1);
      return;
    }
    if ((frame[6] & 1) === 0 && this.lookup(frame, 6) !== from) this.learn(from, frame);
    const to = (frame[0] & 1) === 0 ? this.lookup(frame, 0) : -1;
    if (to >= 0) {
      if (to === from) {
        Atomics.add(g, Global.Dropped, 1);
        return;
      }
      Atomics.add(g, Global.Forwarded, 1);
      this.rings[to].write(frame);
      return;
    }
    Atomics.add(g, Global.Flooded, 1);
    for (let p = 0; p < this.maxPorts; p++) if (p !== from && this.rings[p].isOpen) this.rings[p].write(frame);
  }

  /** @internal forgets what port `p` learnt and closes its ring. */
  release(p: number): void {
    this.editMacs(p, (base) => {
      for (let i = 0; i < MACS_PER_PORT * MAC_WORDS; i++) this.portWords[base + PORT_MACS + i] = 0;
    });
    this.rings[p].close();
  }

  /** Ports are handed out by one thread (the one that made the switch), so a closed ring stays closed until opened here. */
  private claim(p: number): boolean {
    const ring = this.rings[p];
    if (ring.isOpen) return false;
    this.release(p);
    ring.open();
    return true;
  }

  /** The open port whose most recent learning was `frame`'s MAC at `offset`, or -1. */
  private lookup(frame: Uint8Array, offset: number): number {
    const high = (frame[offset] << 8) | frame[offset + 1];
    const low = ((frame[offset + 2] << 24) | (frame[offset + 3] << 16) | (frame[offset + 4] << 8) | frame[offset + 5]) | 0;
    const words = this.portWords;
    let best = -1;
    let bestStamp = 0;
    for (let p = 0; p < this.maxPorts; p++) {
      if (!this.rings[p].isOpen) continue;
      const base = p * PORT_WORDS;
      let seq: number;
      let found = 0;
      do {
        seq = Atomics.load(words, base + PORT_SEQ);
        found = 0;
        for (let i = 0; i < MACS_PER_PORT; i++) {
          const at = base + PORT_MACS + i * MAC_WORDS;
          const stamp = Atomics.load(words, at + 2);
          if (stamp !== 0 && Atomics.load(words, at) === high && Atomics.load(words, at + 1) === low) found = stamp;
        }
      } while ((seq & 1) !== 0 || Atomics.load(words, base + PORT_SEQ) !== seq);
      if (found > bestStamp) {
        best = p;
        bestStamp = found;
      }
    }
    return best;
  }

  /** Port `p` (the caller's own) learns the source MAC of `frame`, replacing its oldest entry. */
  private learn(p: number, frame: Uint8Array): void {
    const stamp = Atomics.add(this.globals, Global.Stamp, 1) + 1;
    const high = (frame[6] << 8) | frame[7];
    const low = ((frame[8] << 24) | (frame[9] << 16) | (frame[10] << 8) | frame[11]) | 0;
    this.editMacs(p, (base) => {
      const words = this.portWords;
      let slot = 0;
      for (let i = 0; i < MACS_PER_PORT; i++) {
        const at = base + PORT_MACS + i * MAC_WORDS;
        if (words[at] === high && words[at + 1] === low) {
          slot = i;
          break;
        }
        if (words[at + 2] < words[base + PORT_MACS + slot * MAC_WORDS + 2]) slot = i;
      }
      const at = base + PORT_MACS + slot * MAC_WORDS;
      Atomics.store(words, at, high);
      Atomics.store(words, at + 1, low);
      Atomics.store(words, at + 2, stamp);
    });
  }

  /** Edits port `p`'s MACs inside its seqlock (one writer: the port's own thread). */
  private editMacs(p: number, edit: (base: number) => void): void {
    const base = p * PORT_WORDS;
    Atomics.add(this.portWords, base + PORT_SEQ, 1);
    try {
      edit(base);
    } finally {
      Atomics.add(this.portWords, base + PORT_SEQ, 1);
    }
  }
}

/** One port of a NetSwitch as the NIC behind it sees it, on the NIC's thread. */
export class SwitchPort implements NetBackend {
  /** Opens the port `handle` names (made by `NetSwitch.portHandle()`), on this thread. */
  static open(handle: SwitchPortHandle, owner?: NetSwitch): SwitchPort {
    if (!(handle?.switch instanceof SharedArrayBuffer) || !Number.isInteger(handle.port)) {
      throw new TypeError("a switch port handle is { switch: SharedArrayBuffer, port: number }, from NetSwitch.portHandle()");
    }
    const net = owner ?? new NetSwitch(handle.switch);
    const ring = net.ring(handle.port);
    if (!ring.isOpen) throw new Error(`switch port ${handle.port} is not open: a handle opens one port once, on one device`);
    return new SwitchPort(net, handle.port, ring);
  }

  readonly name: string;
  private receiver: NetReceiver | undefined;
  private closed = false;
  private stopListening: (() => void) | undefined;
  private readonly take = (record: Uint8Array) => this.receiver?.receive(record.slice());

  private constructor(
    private readonly owner: NetSwitch,
    readonly index: number,
    private readonly ring: RecordRing,
  ) {
    this.name = `switch port ${index}`;
  }

  /** Frames are given to `receiver` on this thread, woken by the ring's bell (see RecordRing.onBell). */
  attach(receiver: NetReceiver, watchFd?: FdWatcher): void {
    if (this.closed || this.receiver !== undefined) return;
    this.receiver = receiver;
    this.stopListening = this.ring.onBell("consumer", () => this.ring.drain(this.take), watchFd);
  }

  transmit(frame: Uint8Array): void {
    if (!this.closed) this.owner.carry(this.index, frame);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopListening?.();
    this.owner.release(this.index);
  }
}
