/**
 * A host TAP interface as a virtio-net backend: /dev/net/tun opened with TUNSETIFF
 * (IFF_TAP | IFF_NO_PI, no IFF_VNET_HDR since no offloads are offered), so each read or
 * write of the fd is one whole Ethernet frame. Frames from the guest are written to the fd
 * (the host kernel receives them on the interface); frames the kernel sends out of the
 * interface are read from it and given to the guest.
 *
 * On a device worker the worker's own poll(2) watches the TAP fd. Elsewhere reads wait in poll(2) on a koffi async call (one libuv pool thread per open TAP), over the
 * TAP fd and an eventfd that `close()` signals, so an idle TAP costs the main thread nothing
 * and closing never waits on a blocked read. The interface goes away with the fd.
 */
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";
import { errnoName } from "../../hypervisor/errno.js";
import { errno, ioctlBuffer, POLLIN, poll } from "../../hypervisor/libc.js";
import { closeEventFd, createEventFd, signalEventFd } from "../../hypervisor/eventfd.js";
import { MAX_FRAME_BYTES, ETHERNET_HEADER_BYTES, type NetBackend, type NetReceiver } from "./net-backend.js";
import type { FdWatcher } from "./virtio-device.js";

/** linux/if_tun.h: TUNSETIFF = _IOW('T', 202, int); ifreq flags. */
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
/** struct ifreq: ifr_name[IFNAMSIZ] then the union (ifr_flags a short at offset 16); 40 bytes. */
const IFREQ_BYTES = 40;
const IFNAMSIZ = 16;
const TUN_PATH = "/dev/net/tun";

export class TapError extends Error {
  override name = "TapError";
}

export interface TapStats {
  framesIn: number;
  framesOut: number;
  /** Frames the kernel could not take at once (EAGAIN: its queue was full) or too short/long. */
  dropped: number;
}

export class TapBackend implements NetBackend {
  readonly name: string;
  readonly stats: TapStats = { framesIn: 0, framesOut: 0, dropped: 0 };
  private receiver: NetReceiver | undefined;
  private fd: number | undefined;
  private wakeFd: number | undefined;
  private readonly pollFds = Buffer.alloc(16);
  private readonly readBuffer = Buffer.alloc(65536);
  private polling = false;
  private unwatch: (() => void) | undefined;
  private closing = false;

  /**
   * Creates (or attaches to) the TAP interface `ifname`. Throws a TapError saying what the
   * host lacks: /dev/net/tun, CAP_NET_ADMIN, or a free name.
   */
  constructor(readonly ifname: string) {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(ifname)) throw new TapError(`TAP interface name '${ifname}' must be 1 to 15 letters, digits, '_', '.' or '-'`);
    this.name = `tap ${ifname}`;
    try {
      this.fd = openSync(TUN_PATH, constants.O_RDWR | constants.O_NONBLOCK | 0o2000000 /* O_CLOEXEC */);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new TapError(code === "ENOENT"
        ? `${TUN_PATH} does not exist: this host (or container) has no TUN/TAP driver; load the tun module or pass the device in, or use the in-process switch`
        : `cannot open ${TUN_PATH}: ${(error as Error).message}; TAP needs read-write access to it (root or CAP_NET_ADMIN)`, { cause: error });
    }
    const ifreq = Buffer.alloc(IFREQ_BYTES);
    ifreq.write(ifname, 0, IFNAMSIZ - 1, "latin1");
    ifreq.writeUInt16LE(IFF_TAP | IFF_NO_PI, IFNAMSIZ);
    if (ioctlBuffer(this.fd, TUNSETIFF, ifreq) < 0) {
      const e = errno();
      this.closeFds();
      const why = e === 1 /* EPERM */ ? "the process lacks CAP_NET_ADMIN (run as root, or give the capability, or create the TAP beforehand for this user with `ip tuntap add mode tap user ...`)"
        : e === 16 /* EBUSY */ ? "the interface is in use by another process"
        : `errno ${errnoName(e)}`;
      throw new TapError(`TUNSETIFF for TAP interface ${ifname} failed: ${why}`);
    }
    let wake: number;
    try {
      wake = createEventFd();
    } catch (error) {
      this.closeFds();
      throw new TapError(`TAP ${ifname}: ${(error as Error).message}`, { cause: error });
    }
    this.wakeFd = wake;
    this.pollFds.writeInt32LE(this.fd, 0);
    this.pollFds.writeInt16LE(POLLIN, 4);
    this.pollFds.writeInt32LE(wake, 8);
    this.pollFds.writeInt16LE(POLLIN, 12);
  }

  /** On a device worker (`watchFd`) its poll(2) watches the TAP; elsewhere an async poll does. */
  attach(receiver: NetReceiver, watchFd?: FdWatcher): void {
    if (this.receiver !== undefined) return;
    this.receiver = receiver;
    if (watchFd !== undefined && this.fd !== undefined) {
      this.unwatch = watchFd(this.fd, () => this.readFrames());
      return;
    }
    this.waitForFrames();
  }

  transmit(frame: Uint8Array): void {
    if (this.fd === undefined || this.closing) return;
    try {
      writeSync(this.fd, frame);
      this.stats.framesOut++;
    } catch {
      this.stats.dropped++; // EAGAIN (kernel queue full) or the interface went away: a wire drops
    }
  }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.unwatch?.();
    if (!this.polling) {
      this.closeFds();
      return;
    }
    // Wake the poll; its callback closes the fds once no thread is inside poll(2) with them.
    signalEventFd(this.wakeFd!);
  }

  private waitForFrames(): void {
    if (this.polling || this.closing || this.fd === undefined) return;
    this.polling = true;
    this.pollFds.writeInt16LE(0, 6);
    this.pollFds.writeInt16LE(0, 14);
    poll.async(this.pollFds, 2, -1, (error: unknown) => {
      this.polling = false;
      if (this.closing) {
        this.closeFds();
        return;
      }
      if (error === null || error === undefined) this.readFrames();
      this.waitForFrames();
    });
  }

  private readFrames(): void {
    for (let budget = 256; budget > 0 && this.fd !== undefined; budget--) {
      let n: number;
      try {
        n = readSync(this.fd, this.readBuffer, 0, this.readBuffer.length, null);
      } catch (error) {
        // EAGAIN: drained. Anything else (the interface went away) would poll readable for
        // ever: a watching thread stops watching, as the async poll stops on its error.
        if ((error as NodeJS.ErrnoException).code !== "EAGAIN") {
          this.unwatch?.();
          this.unwatch = undefined;
        }
        return;
      }
      if (n < ETHERNET_HEADER_BYTES || n > MAX_FRAME_BYTES) {
        this.stats.dropped++;
        continue;
      }
      this.stats.framesIn++;
      this.receiver?.receive(this.readBuffer.slice(0, n));
    }
  }

  private closeFds(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    if (this.wakeFd !== undefined) closeEventFd(this.wakeFd);
    this.fd = this.wakeFd = undefined;
  }
}
