/**
 * Adaptive spin-then-park on a SAB word, like KVM's halt polling: a park that ended soon
 * after it began means spinning a little longer would have caught the answer, so the
 * budget grows; a long park means spinning was wasted, so it shrinks.
 */

import { CoreYielder } from "./thread-yield.js";

export interface SpinPolicy {
  /** Iterations a waiter may spin before parking; adapted between these bounds. */
  minSpins: number;
  maxSpins: number;
  /** A park shorter than this (µs) grows the budget; a longer one shrinks it. */
  shortParkMicros: number;
  /** sched_yield calls a waiter makes, once its spin budget is spent, before it parks (see thread-yield.ts). */
  yields: number;
}

/**
 * Spin, then yield the core, then park. On a contended host (`AdaptiveSpinner.contended`)
 * the spin is only `minSpins`: sharing a core with the thread it waits for, a spinner holds
 * it off until the scheduler's tick. Measured on 2 cores, 1 vCPU, sync pio-write at CPL0
 * beside another VM's busy vCPU: 12k exits/s spinning up to 200,000 iterations, 35k with 64
 * (both yielding after); on a quiet host the long spin catches answers a yield would
 * notice ~0.5 µs late (p50 1.16 x C against 1.27 x C).
 */
export const DEFAULT_SPIN: SpinPolicy = { minSpins: 64, maxSpins: 200_000, shortParkMicros: 200, yields: 200 };

/**
 * When more threads wait on each other than the host has cores, a spinning vCPU burns the
 * time slice the thread it waits for (the dispatcher, or the vCPU sharing its core) needs,
 * and a parked one pays a wake-up: vCPU workers then spin only `minSpins` and go on to
 * yield the core. Measured on 2 cores, pio-write main-sync at CPL0, 2 and 4 vCPUs against
 * 1: spinning, 0.6-0.9 x; parking at once, 0.3-0.5 x; yielding, 1.1-1.4 x.
 */
export function oversubscribedPolicy(policy: SpinPolicy, spinners: number, cores: number): SpinPolicy {
  if (spinners <= cores) return policy;
  return { ...policy, maxSpins: policy.minSpins };
}

/** Whether a waiter's word left `value`, or a stop was asked (`array[abortIndex] === abortValue`). */
function waitOver(array: Int32Array, index: number, value: number, abortIndex: number, abortValue: number): boolean {
  return Atomics.load(array, index) !== value || Atomics.load(array, abortIndex) === abortValue;
}

export class AdaptiveSpinner {
  budget: number;
  parks = 0;
  readonly yielder = new CoreYielder();
  /** Set by the owner before a wait when the host is contended: spin only `minSpins`. */
  contended = false;
  constructor(readonly policy: SpinPolicy = DEFAULT_SPIN) {
    this.budget = policy.maxSpins;
  }

  /**
   * Yields the core up to `policy.yields` times while `array[index] === value` and
   * `array[abortIndex] !== abortValue`; true if either changed.
   */
  yieldWhile(array: Int32Array, index: number, value: number, abortIndex: number, abortValue: number): boolean {
    const yields = this.policy.yields;
    if (yields === 0 || !this.yielder.mayYield()) return false;
    for (let i = 0; i < yields; i++) {
      if (!this.yielder.yieldOnce()) return false;
      if (waitOver(array, index, value, abortIndex, abortValue)) return true;
    }
    return false;
  }

  /**
   * Spins while `array[index] === value` and `array[abortIndex] !== abortValue`; returns
   * true if either changed within the budget.
   */
  spin(array: Int32Array, index: number, value: number, abortIndex: number, abortValue: number): boolean {
    const budget = this.contended ? this.policy.minSpins : this.budget;
    for (let i = 0; i < budget; i++) {
      if (waitOver(array, index, value, abortIndex, abortValue)) return true;
    }
    return false;
  }

  /** Adapts the budget to how long a park lasted. */
  parked(micros: number): void {
    this.parks++;
    const { minSpins, maxSpins, shortParkMicros } = this.policy;
    this.budget = micros <= shortParkMicros ? Math.min(maxSpins, this.budget * 2) : Math.max(minSpins, this.budget >> 1);
  }
}

/**
 * Waits (blocking: worker threads only) until `array[index]` is no longer `value`, or until
 * `array[abortIndex]` becomes `abortValue` (a stop request): spins within the budget, yields
 * the core if the policy says so, then parks with Atomics.wait. The other side notifies `index` when it sees
 * `array[parkedIndex]` set; whoever sets the abort word notifies `index` too (and repeats
 * it, since a notify that lands before the park is lost). Returns false on abort.
 */
export function waitWhileEqual(
  array: Int32Array,
  index: number,
  value: number,
  spinner: AdaptiveSpinner,
  parkedIndex: number,
  abortIndex: number,
  abortValue: number,
): boolean {
  if (!spinner.spin(array, index, value, abortIndex, abortValue) && !spinner.yieldWhile(array, index, value, abortIndex, abortValue)) {
    const start = performance.now();
    Atomics.store(array, parkedIndex, 1);
    while (!waitOver(array, index, value, abortIndex, abortValue)) {
      Atomics.wait(array, index, value);
    }
    Atomics.store(array, parkedIndex, 0);
    spinner.parked((performance.now() - start) * 1000);
  }
  return Atomics.load(array, index) !== value || Atomics.load(array, abortIndex) !== abortValue;
}
