/**
 * The warm pool of device worker threads (piscina): a device on a worker of its own holds one
 * thread for its VM's life, so the pool grows to the number of such devices running and
 * keeps one thread warm, and a VM start does not pay a thread's startup and module loading.
 */
import { Piscina } from "piscina";
import type { DeviceWorkerTask } from "../workers/device-worker-task.js";

const WORKER_FILE = new URL("../workers/device-worker.js", import.meta.url).href;

type DeviceWorkerPool = Piscina<DeviceWorkerTask | { warmup: true }, Record<string, unknown> | "warm">;

let pool: DeviceWorkerPool | undefined;
/** Settles when the warm threads have loaded the worker code. */
let warmed: Promise<unknown> = Promise.resolve();

export function deviceWorkerPool(): DeviceWorkerPool {
  if (pool === undefined) {
    pool = new Piscina({ filename: WORKER_FILE, minThreads: 1, maxThreads: 256, idleTimeout: 10_000, concurrentTasksPerWorker: 1 });
    const p = pool;
    warmed = Promise.allSettled(Array.from({ length: p.options.minThreads }, () => p.run({ warmup: true })));
  }
  return pool;
}

/** Loads the worker code in `count` threads so the next device start pays no thread startup. */
export async function warmDeviceWorkerPool(count = 1): Promise<void> {
  const p = deviceWorkerPool();
  await Promise.all(Array.from({ length: count }, () => p.run({ warmup: true })));
}

/** Ends the pool's threads (idle ones do not keep Node alive; this releases them early). */
export async function destroyDeviceWorkerPool(): Promise<void> {
  const p = pool;
  if (p === undefined) return;
  pool = undefined;
  // Node 20 aborts the process when a worker is terminated while it is still loading an ES module.
  await warmed;
  await Promise.allSettled(p.threads.map(() => p.run({ warmup: true })));
  await p.destroy();
}
