/**
 * The warm pool of vCPU worker threads (piscina). Each vCPU holds one thread for the VM's
 * life, so the pool grows to the number of running vCPUs and keeps a few threads warm.
 */
import { Piscina } from "piscina";
import type { VcpuOutcome, VcpuTask } from "../workers/vcpu-task.js";

const WORKER_FILE = new URL("../workers/vcpu-worker.js", import.meta.url).href;

export interface PoolOptions {
  /** Threads kept warm between VMs. */
  warmThreads: number;
  maxThreads: number;
  /** How long an extra idle thread lives, in milliseconds. */
  idleTimeoutMs: number;
}

let pool: Piscina<VcpuTask | { warmup: true }, VcpuOutcome | "warm"> | undefined;
/** Settles when the warm threads have loaded the worker code. */
let warmed: Promise<unknown> = Promise.resolve();

export function vcpuPool(options: Partial<PoolOptions> = {}): Piscina<VcpuTask | { warmup: true }, VcpuOutcome | "warm"> {
  if (pool === undefined) {
    pool = new Piscina({
      filename: WORKER_FILE,
      minThreads: options.warmThreads ?? 2,
      maxThreads: options.maxThreads ?? 512,
      idleTimeout: options.idleTimeoutMs ?? 10_000,
      concurrentTasksPerWorker: 1,
    });
    const p = pool;
    warmed = Promise.allSettled(Array.from({ length: p.options.minThreads }, () => p.run({ warmup: true })));
  }
  return pool;
}

/** Loads the worker code in `count` threads so the next VM start pays no thread startup. */
export async function warmVcpuPool(count = 1): Promise<void> {
  const p = vcpuPool();
  await Promise.all(Array.from({ length: count }, () => p.run({ warmup: true })));
}

/**
 * Ends the pool's threads. Idle threads do not keep Node alive, so this is only needed to
 * release them early. It waits until every thread has loaded its code: Node 20 aborts the
 * process when a worker is terminated while it is still loading an ES module.
 */
export async function destroyVcpuPool(): Promise<void> {
  const p = pool;
  if (p === undefined) return;
  pool = undefined;
  await warmed;
  await Promise.allSettled(p.threads.map(() => p.run({ warmup: true })));
  await p.destroy();
}
