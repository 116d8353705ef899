/**
 * A lazily made piscina pool whose threads load their worker code ahead of need, shared by
 * the vCPU and device worker pools. Each task holds its thread for a VM's life.
 */
import { Piscina } from "piscina";

export interface WarmPoolOptions {
  /** Threads kept warm (loaded, idle) between VMs. */
  warmThreads: number;
  maxThreads: number;
  /** How long an extra idle thread lives, in milliseconds. */
  idleTimeoutMs: number;
}

export class WarmPool<Task, Outcome> {
  private pool: Piscina<Task | { warmup: true }, Outcome | "warm"> | undefined;
  /** Settles when the warm threads have loaded the worker code. */
  private warmed: Promise<unknown> = Promise.resolve();

  constructor(private readonly workerFile: string, private readonly defaults: WarmPoolOptions) {}

  get(options: Partial<WarmPoolOptions> = {}): Piscina<Task | { warmup: true }, Outcome | "warm"> {
    if (this.pool === undefined) {
      const settings = { ...this.defaults, ...options };
      const pool = new Piscina<Task | { warmup: true }, Outcome | "warm">({
        filename: this.workerFile, minThreads: settings.warmThreads, maxThreads: settings.maxThreads,
        idleTimeout: settings.idleTimeoutMs, concurrentTasksPerWorker: 1,
      });
      this.pool = pool;
      this.warmed = Promise.allSettled(Array.from({ length: pool.options.minThreads }, () => pool.run({ warmup: true })));
    }
    return this.pool;
  }

  /** Loads the worker code in `count` threads so the next start pays no thread startup. */
  async warm(count = 1): Promise<void> {
    const pool = this.get();
    await Promise.all(Array.from({ length: count }, () => pool.run({ warmup: true })));
  }

  /**
   * Ends the pool's threads. Idle threads do not keep Node alive, so this only releases them
   * early. It waits until every thread has loaded its code: Node 20 aborts the process when a
   * worker is terminated while it is still loading an ES module.
   */
  async destroy(): Promise<void> {
    const pool = this.pool;
    if (pool === undefined) return;
    this.pool = undefined;
    await this.warmed;
    await Promise.allSettled(pool.threads.map(() => pool.run({ warmup: true })));
    await pool.destroy();
  }
}
