/**
 * Adaptive spin-then-park on a SAB word, like KVM's halt polling: a park that ended soon
 * after it began means spinning a little longer would have caught the answer, so the
 * budget grows; a long park means spinning was wasted, so it shrinks.
 */

export interface SpinPolicy {
  /** Iterations a waiter may spin before parking; adapted between these bounds. */
  minSpins: number;
  maxSpins: number;
  /** A park shorter than this (µs) grows the budget; a longer one shrinks it. */
  shortParkMicros: number;
}

export const DEFAULT_SPIN: SpinPolicy = { minSpins: 64, maxSpins: 200_000, shortParkMicros: 200 };

/**
 * When more threads spin than the host has cores, a spinning vCPU burns the time slice the
 * thread it waits for (the dispatcher, or the vCPU sharing its core) needs: vCPU workers
 * then spin only `minSpins` before parking. Measured on 2 cores, pio-read main-sync, 2 and
 * 4 vCPUs: 64.1k and 61.2k exits/s spinning as usual, 67.9k and 78.8k parking early.
 */
export function oversubscribedPolicy(policy: SpinPolicy, spinners: number, cores: number): SpinPolicy {
  if (spinners <= cores) return policy;
  return { ...policy, maxSpins: policy.minSpins };
}

export class AdaptiveSpinner {
  budget: number;
  parks = 0;
  constructor(readonly policy: SpinPolicy = DEFAULT_SPIN) {
    this.budget = policy.maxSpins;
  }

  /**
   * Spins while `array[index] === value` and `array[abortIndex] !== abortValue`; returns
   * true if either changed within the budget.
   */
  spin(array: Int32Array, index: number, value: number, abortIndex: number, abortValue: number): boolean {
    const budget = this.budget;
    for (let i = 0; i < budget; i++) {
      if (Atomics.load(array, index) !== value || Atomics.load(array, abortIndex) === abortValue) return true;
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
 * `array[abortIndex]` becomes `abortValue` (a stop request): spins within the budget, then
 * parks with Atomics.wait. The other side notifies `index` when it sees
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
  if (!spinner.spin(array, index, value, abortIndex, abortValue)) {
    const start = performance.now();
    Atomics.store(array, parkedIndex, 1);
    while (Atomics.load(array, index) === value && Atomics.load(array, abortIndex) !== abortValue) {
      Atomics.wait(array, index, value);
    }
    Atomics.store(array, parkedIndex, 0);
    spinner.parked((performance.now() - start) * 1000);
  }
  return Atomics.load(array, index) !== value || Atomics.load(array, abortIndex) !== abortValue;
}
