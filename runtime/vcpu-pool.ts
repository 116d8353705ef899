/**
 * The warm pool of vCPU worker threads (piscina). Each vCPU holds one thread for the VM's
 * life, so the pool grows to the number of running vCPUs and keeps a few threads warm.
 */
import type { VcpuOutcome, VcpuTask } from "../workers/vcpu-task.js";
import { WarmPool, type WarmPoolOptions } from "./warm-pool.js";

export type PoolOptions = WarmPoolOptions;

const pool = new WarmPool<VcpuTask, VcpuOutcome>(new URL("../workers/vcpu-worker.js", import.meta.url).href, {
  warmThreads: 2, maxThreads: 512, idleTimeoutMs: 10_000,
});

export const vcpuPool = (options: Partial<PoolOptions> = {}) => pool.get(options);
export const warmVcpuPool = (count = 1): Promise<void> => pool.warm(count);
export const destroyVcpuPool = (): Promise<void> => pool.destroy();
