/**
 * Bytes this thread's JS heap allocated between `start()` and `stop()`, whatever the
 * collector freed meanwhile: the growth of the used heap plus what each collection (as
 * v8.GCProfiler reports them) took away. Measures only the isolate it runs in, so a device
 * in a vCPU worker measures that worker.
 */
import v8 from "node:v8";

export interface Allocation {
  bytes: number;
  collections: number;
}

export class AllocationMeter {
  private profiler: v8.GCProfiler | undefined;
  private usedAtStart = 0;

  start(): void {
    this.profiler = new v8.GCProfiler();
    this.profiler.start();
    this.usedAtStart = v8.getHeapStatistics().used_heap_size;
  }

  stop(): Allocation {
    const used = v8.getHeapStatistics().used_heap_size;
    const profiler = this.profiler;
    if (profiler === undefined) throw new Error("AllocationMeter.stop() before start()");
    this.profiler = undefined;
    const { statistics } = profiler.stop();
    let freed = 0;
    for (const gc of statistics) freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
    return { bytes: used - this.usedAtStart + freed, collections: statistics.length };
  }
}
