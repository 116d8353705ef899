/**
 * Giving the core away without sleeping: sched_yield(2). When the thread a waiter waits
 * for shares its core (more waiting threads than cores, or a busy host), a waiter that
 * spins holds the core that thread needs, and one that parks pays a wake-up (a futex wake, on a virtualized host an
 * IPI through the hypervisor: tens of µs here). Yielding lets another runnable thread of
 * this core run at the cost of a system call, and costs nothing when none is.
 *
 * A yield to a thread that does not give the core back (a guest spinning in guest mode, a
 * busy process) loses a whole time slice, so a `CoreYielder` notices a yield that took a
 * slice and stops yielding for a while (doubling the while at each loss in a row, as the
 * spin budget adapts): parking then wakes it sooner, through the scheduler's wake-up
 * preemption.
 */
import koffi from "koffi";

const schedYield = koffi.load("libc.so.6").func("int sched_yield(void)");

/** A yield that took this long (ms, by Date.now(), which does not allocate) gave a slice away. */
const SLICE_LOST_MS = 2;
/** Waits without yielding after a yield lost a slice: from the first, doubled per loss in a row. */
const FIRST_PAUSE_WAITS = 16;
const LONGEST_PAUSE_WAITS = 4096;

export class CoreYielder {
  /** Yields made, and yields that lost a time slice. */
  yields = 0;
  slicesLost = 0;
  private skipWaits = 0;
  private pauseWaits = FIRST_PAUSE_WAITS;
  /** Whether the last wait that yielded lost a slice. */
  private lostLast = false;

  /** Whether this wait may yield (not for a while after a lost slice). */
  mayYield(): boolean {
    if (this.skipWaits === 0) return true;
    this.skipWaits--;
    return false;
  }

  /** Yields the core once; false if that lost a slice (stop yielding for this wait). */
  yieldOnce(): boolean {
    const before = Date.now();
    schedYield();
    this.yields++;
    if (Date.now() - before < SLICE_LOST_MS) {
      if (this.lostLast) {
        this.lostLast = false;
        this.pauseWaits = FIRST_PAUSE_WAITS;
      }
      return true;
    }
    this.slicesLost++;
    if (this.lostLast) this.pauseWaits = Math.min(LONGEST_PAUSE_WAITS, this.pauseWaits * 2);
    this.lostLast = true;
    this.skipWaits = this.pauseWaits;
    return false;
  }
}
