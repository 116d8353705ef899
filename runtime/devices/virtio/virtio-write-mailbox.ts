/**
 * How a vCPU worker hands a state-changing register write to the thread that runs a
 * transport's state machine (a device worker), without the main thread: one request at a
 * time in SAB words, a lock among the vCPUs, and an eventfd that wakes the owner from
 * poll(2). The writer waits for the answer, so the driver's next read sees the write done.
 * Once the owner has gone the mailbox is closed and writes are dropped instead of waiting.
 */
import { signalEventFd } from "../../hypervisor/eventfd.js";

const Slot = { Lock: 0, State: 1, Offset: 2, Size: 3, Low: 4, High: 5, Control: 6, EventFd: 7 } as const;
export const MAILBOX_WORDS = 8;

const State = { Idle: 0, Request: 1, Done: 2, Closed: 3 } as const;
const Control = { Run: 0, Stop: 1 } as const;

/** A write the owner takes from the mailbox. */
export interface MailboxWrite {
  offset: number;
  size: number;
  low: number;
  high: number;
}

export class VirtioWriteMailbox {
  private readonly words: Int32Array;

  /** `words` is MAILBOX_WORDS words of a SharedArrayBuffer every side shares. */
  constructor(words: Int32Array) {
    if (words.length !== MAILBOX_WORDS || !(words.buffer instanceof SharedArrayBuffer)) {
      throw new TypeError(`a virtio write mailbox is ${MAILBOX_WORDS} words of a SharedArrayBuffer`);
    }
    this.words = words;
  }

  /** Main thread, before any worker starts: the eventfd that wakes the owner. */
  bind(eventFd: number): void {
    Atomics.store(this.words, Slot.EventFd, eventFd);
  }

  get eventFd(): number {
    return Atomics.load(this.words, Slot.EventFd);
  }

  // ---- the writer's side (any vCPU worker) ----

  /** Hands a write to the owner and waits until it has been applied (or the owner is gone). */
  write(offset: number, size: number, low: number, high: number): void {
    const words = this.words;
    while (Atomics.compareExchange(words, Slot.Lock, 0, 1) !== 0) {
      if (Atomics.load(words, Slot.State) === State.Closed) return;
      Atomics.wait(words, Slot.Lock, 1, 10);
    }
    try {
      if (Atomics.load(words, Slot.State) === State.Closed) return;
      words[Slot.Offset] = offset;
      words[Slot.Size] = size;
      words[Slot.Low] = low;
      words[Slot.High] = high;
      Atomics.store(words, Slot.State, State.Request);
      signalEventFd(Atomics.load(words, Slot.EventFd));
      while (Atomics.load(words, Slot.State) === State.Request) Atomics.wait(words, Slot.State, State.Request);
      Atomics.compareExchange(words, Slot.State, State.Done, State.Idle);
    } finally {
      Atomics.store(words, Slot.Lock, 0);
      Atomics.notify(words, Slot.Lock, 1);
    }
  }

  // ---- the owner's side (the device worker) ----

  /** The pending write, if any (the owner then calls `answer`). */
  take(): MailboxWrite | undefined {
    const words = this.words;
    if (Atomics.load(words, Slot.State) !== State.Request) return undefined;
    return { offset: words[Slot.Offset], size: words[Slot.Size], low: words[Slot.Low] >>> 0, high: words[Slot.High] >>> 0 };
  }

  /** The write taken has been applied: the writer goes on. */
  answer(): void {
    Atomics.store(this.words, Slot.State, State.Done);
    Atomics.notify(this.words, Slot.State);
  }

  get stopRequested(): boolean {
    return Atomics.load(this.words, Slot.Control) === Control.Stop;
  }

  // ---- the main thread's side ----

  /** Asks the owner to stop; it sees this at its next wake (the eventfd wakes it now). */
  requestStop(): void {
    Atomics.store(this.words, Slot.Control, Control.Stop);
    signalEventFd(Atomics.load(this.words, Slot.EventFd));
  }

  /** The owner is gone: a writer waiting now, or later, is released and its write dropped. */
  close(): void {
    Atomics.store(this.words, Slot.State, State.Closed);
    Atomics.notify(this.words, Slot.State);
    Atomics.notify(this.words, Slot.Lock);
  }
}
