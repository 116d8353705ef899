/**
 * The calling thread's CPU time, from clock_gettime(CLOCK_THREAD_CPUTIME_ID) through koffi:
 * the price the main thread pays per exit, spinning included, or a device worker per
 * request. (process.cpuUsage() counts every thread, the vCPU workers too.)
 */
import koffi from "koffi";

const CLOCK_THREAD_CPUTIME_ID = 3;

const libc = koffi.load("libc.so.6");
const clockGettime = libc.func("int clock_gettime(int clockid, void *ts)");
const timespec = new BigInt64Array(2);
const timespecBytes = new Uint8Array(timespec.buffer);

/** CPU time consumed by the calling thread, in nanoseconds. */
export function threadCpuNs(): number {
  if (clockGettime(CLOCK_THREAD_CPUTIME_ID, timespecBytes) !== 0) throw new Error(`clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed: errno ${koffi.errno()}`);
  return Number(timespec[0]) * 1e9 + Number(timespec[1]);
}
