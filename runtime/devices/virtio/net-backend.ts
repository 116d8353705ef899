/**
 * What a virtio-net device sends frames into and receives them from: the in-process switch
 * (net-switch.ts) or a host TAP device (net-tap.ts). A backend deals in whole Ethernet frames
 * (destination MAC onwards, no virtio header, no FCS) and knows nothing of virtqueues, so a
 * device can move to another thread with a backend that posts frames to it.
 */
import type { FdWatcher } from "./virtio-device.js";

/** The smallest frame a backend carries: an Ethernet header (two MACs and the EtherType). */
export const ETHERNET_HEADER_BYTES = 14;
/** The largest frame without offloads: 1500 bytes of MTU, the header and one VLAN tag. */
export const MAX_FRAME_BYTES = 1500 + ETHERNET_HEADER_BYTES + 4;

export interface NetReceiver {
  /** A frame for the guest; the receiver may keep it (the backend gives up the bytes). */
  receive(frame: Uint8Array): void;
}

export interface NetBackend {
  readonly name: string;
  /**
   * Where frames for the guest go; set once by the device that owns the backend. With
   * `watchFd` the device's thread waits in poll(2) (a device worker) and the backend has it
   * watch its fd; without, the backend waits on this thread's event loop.
   */
  attach(receiver: NetReceiver, watchFd?: FdWatcher): void;
  /** A frame from the guest; the backend copies what it keeps, the bytes are the guest's. */
  transmit(frame: Uint8Array): void;
  /** Releases the backend's host resources (fd, switch port). Safe to call twice. */
  close(): void;
}

/** A MAC address as six bytes from "52:54:00:12:34:56". */
export function parseMac(text: string): Uint8Array {
  const parts = text.split(":");
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`MAC address '${text}' is not six hex byte pairs separated by ':' (e.g. 52:54:00:12:34:56)`);
  }
  const mac = Uint8Array.from(parts, (p) => parseInt(p, 16));
  if (mac[0] & 1) throw new Error(`MAC address '${text}' is a multicast address; a NIC needs a unicast one (first byte even)`);
  return mac;
}

export function formatMac(bytes: Uint8Array, offset = 0): string {
  return Array.from(bytes.subarray(offset, offset + 6), (b) => b.toString(16).padStart(2, "0")).join(":");
}
