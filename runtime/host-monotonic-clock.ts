/**
 * The host's CLOCK_MONOTONIC, read into a timespec allocated once per thread, so that a
 * reading allocates nothing on the JS heap: a device a guest polls (the ACPI PM timer)
 * reads it on every exit. It is the clock `process.hrtime()` reads (libuv's), and one clock
 * for every thread, which `performance.now()` is not (it counts from its own thread's
 * start). The alternatives allocate per reading in a vCPU worker's device path: a BigInt
 * (`process.hrtime.bigint()`), a boxed double (`performance.now()`), or `process.hrtime()`'s
 * pair where V8 does not manage to elide it (measured: 40 heap bytes per reading, the same
 * as BigInt arithmetic). The hot binding is declared `void`: with an `int` result a call
 * cost 6 heap bytes more, and CLOCK_MONOTONIC into a valid buffer cannot fail, which the
 * first reading, through a checked binding, confirms.
 */
import koffi from "koffi";

const CLOCK_MONOTONIC = 1;
const TIMESPEC_BYTES = 16; // struct timespec on x86-64: tv_sec, tv_nsec, 8 bytes each
const TWO_TO_32 = 2 ** 32;

const libc = koffi.load("libc.so.6");
const clockGettimeChecked = libc.func("int clock_gettime(int clockid, void *ts)");
const clockGettime = libc.func("void clock_gettime(int clockid, void *ts)");

/** A monotonic clock read in two steps, so a reading needs no object: `sample()`, then the fields. */
export interface MonotonicClock {
  /** Reads the clock; `seconds` and `nanoseconds` then hold that instant. */
  sample(): void;
  readonly seconds: number;
  /** 0 to 999 999 999. */
  readonly nanoseconds: number;
}

class HostMonotonicClock implements MonotonicClock {
  seconds = 0;
  nanoseconds = 0;
  private readonly timespec: unknown;
  private readonly words: Uint32Array;

  constructor() {
    this.timespec = koffi.alloc("uint8_t", TIMESPEC_BYTES);
    // Native memory: released when this thread ends.
    process.once("exit", () => koffi.free(this.timespec));
    this.words = new Uint32Array(koffi.view(this.timespec, TIMESPEC_BYTES));
    if (clockGettimeChecked(CLOCK_MONOTONIC, this.timespec) !== 0) {
      throw new Error(`clock_gettime(CLOCK_MONOTONIC) failed: errno ${koffi.errno()}`);
    }
  }

  sample(): void {
    clockGettime(CLOCK_MONOTONIC, this.timespec);
    const words = this.words;
    // tv_sec's high word is 0 for 136 years of uptime; tv_nsec is below 10^9.
    this.seconds = words[1] === 0 ? words[0] : words[0] + words[1] * TWO_TO_32;
    this.nanoseconds = words[2];
  }
}

let shared: HostMonotonicClock | undefined;

/** This thread's reader of the host's monotonic clock (one per thread, made on first use). */
export function hostMonotonicClock(): MonotonicClock {
  shared ??= new HostMonotonicClock();
  return shared;
}
