/**
 * The thread a vCPU runs on, published in a shared word by the worker that attached it, so
 * the VM (main thread) can signal exactly that thread. Backends that kick with a signal
 * (KVM, MSHV) carry the word's SAB in their vCPU descriptor. Only backends import this.
 */
import * as libc from "./libc.js";

export class KickTarget {
  private readonly word: Int32Array;

  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(4)) {
    if (buffer.byteLength < 4) throw new RangeError(`a kick target needs 4 bytes, got ${buffer.byteLength}`);
    this.word = new Int32Array(buffer, 0, 1);
  }

  /** Worker: from now on kicks signal the calling thread (installs the no-op handler first). */
  attachCallingThread(): void {
    libc.installKickHandler();
    Atomics.store(this.word, 0, libc.gettid());
  }

  /** Worker, when it lets the vCPU go: its pooled thread may run another VM next. */
  detach(): void {
    Atomics.store(this.word, 0, 0);
  }

  /** Signals the attached thread so a blocking run ioctl returns EINTR; false when none is attached. */
  signal(): boolean {
    const threadId = Atomics.load(this.word, 0);
    if (threadId <= 0) return false;
    libc.tgkill(libc.getpid(), threadId, libc.KICK_SIGNAL);
    return true;
  }
}
