/**
 * The warm pool of device worker threads (piscina): a device on a worker of its own holds one
 * thread for its VM's life, so the pool grows to the number of such devices running and
 * keeps one thread warm, and a VM start does not pay a thread's startup and module loading.
 */
import type { DeviceWorkerTask } from "../workers/device-worker-task.js";
import { WarmPool } from "./warm-pool.js";

const pool = new WarmPool<DeviceWorkerTask, Record<string, unknown>>(new URL("../workers/device-worker.js", import.meta.url).href, {
  warmThreads: 1, maxThreads: 256, idleTimeoutMs: 10_000,
});

export const deviceWorkerPool = () => pool.get();
export const warmDeviceWorkerPool = (count = 1): Promise<void> => pool.warm(count);
export const destroyDeviceWorkerPool = (): Promise<void> => pool.destroy();
