/**
 * Linux eventfds as the threads that wait on them see them: make one, signal it, drain its
 * counter, and block in poll(2) until one of several is readable. Hypervisor-neutral (KVM's
 * ioeventfd/irqfd and mshv's take the same eventfds); usable on any thread, where a blocking
 * wait blocks only that thread. Every call is checked; an error names the call and the fd.
 */
import { HypervisorError } from "./hypervisor.js";
import * as libc from "./libc.js";

const EAGAIN = 11;
const EINTR = 4;
const POLLIN = 0x1;
const POLLFD_BYTES = 8;

/** A new non-blocking, close-on-exec eventfd with a zero counter. */
export function createEventFd(): number {
  const fd = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
  if (fd < 0) throw new HypervisorError("eventfd", libc.errno());
  return fd;
}

export function closeEventFd(fd: number): void {
  if (libc.close(fd) < 0) throw new HypervisorError(`close (eventfd ${fd})`, libc.errno());
}

const one = new BigUint64Array([1n]);

/** Adds 1 to the eventfd's counter, waking whoever waits on it. */
export function signalEventFd(fd: number): void {
  const written = libc.write(fd, one, 8);
  // EAGAIN only when the counter is at its maximum: the waiter is already due to wake.
  if (written !== 8 && !(written < 0 && libc.errno() === EAGAIN)) throw new HypervisorError(`write (eventfd ${fd})`, libc.errno());
}

/** Reads and clears a non-blocking eventfd's counter; 0 when it was not signalled. */
export function drainEventFd(fd: number, into = new BigUint64Array(1)): number {
  const got = libc.read(fd, into, 8);
  if (got === 8) return Number(into[0]);
  if (got < 0 && libc.errno() === EAGAIN) return 0;
  throw new HypervisorError(`read (eventfd ${fd})`, libc.errno());
}

/** poll(2) over a fixed set of eventfds (or other fds the caller reads itself, see `readable`); its buffers are reused, so a wait allocates nothing. */
export class EventFdPoller {
  private readonly records: Uint8Array;
  private readonly view: DataView;
  private readonly counter = new BigUint64Array(1);

  constructor(readonly fds: readonly number[]) {
    this.records = new Uint8Array(POLLFD_BYTES * fds.length);
    this.view = new DataView(this.records.buffer);
    fds.forEach((fd, i) => {
      this.view.setInt32(i * POLLFD_BYTES, fd, true);
      this.view.setInt16(i * POLLFD_BYTES + 4, POLLIN, true);
    });
  }

  /**
   * Blocks this thread until an fd is readable or `timeoutMs` passes (-1: no limit).
   * Returns how many are readable (0 on timeout or a signal).
   */
  wait(timeoutMs: number): number {
    for (let i = 0; i < this.fds.length; i++) this.view.setInt16(i * POLLFD_BYTES + 6, 0, true);
    const ready = libc.poll(this.records, this.fds.length, timeoutMs);
    if (ready >= 0) return ready;
    if (libc.errno() === EINTR) return 0;
    throw new HypervisorError(`poll (eventfds ${this.fds.join(", ")})`, libc.errno());
  }

  /**
   * `wait` on a pool thread (koffi's async call), so this thread's event loop turns in the
   * meantime (node:net sockets in a device worker). Settles with the same count.
   */
  waitAsync(timeoutMs: number): Promise<number> {
    for (let i = 0; i < this.fds.length; i++) this.view.setInt16(i * POLLFD_BYTES + 6, 0, true);
    return new Promise((resolve, reject) => {
      libc.poll.async(this.records, this.fds.length, timeoutMs, (error: unknown, ready: number) => {
        if (error !== null && error !== undefined) reject(error);
        else if (ready >= 0) resolve(ready);
        // errno is the pool thread's, not this one's: EINTR is the one a wait may see.
        else resolve(0);
      });
    });
  }

  /** Whether the last wait found fd `index` readable (or in error), without reading it. */
  readable(index: number): boolean {
    return this.view.getInt16(index * POLLFD_BYTES + 6, true) !== 0;
  }

  /**
   * The count fd `index` had if the last wait found it readable (0 if not), draining it. An
   * fd closed under the poller (POLLNVAL) fails the read, which names it.
   */
  take(index: number): number {
    if (this.view.getInt16(index * POLLFD_BYTES + 6, true) === 0) return 0;
    return drainEventFd(this.fds[index], this.counter);
  }
}
