/**
 * Adaptive spin-then-park on a SAB word, like KVM's halt polling: the spin budget grows
 * while answers arrive within it and shrinks when we end up parking anyway.
 */

export interface SpinPolicy {
  /** Iterations a waiter may spin before parking; adapted between these bounds. */
  minSpins: number;
  maxSpins: number;
}

export const DEFAULT_SPIN: SpinPolicy = { minSpins: 64, maxSpins: 200_000 };

export class AdaptiveSpinner {
  budget: number;
  constructor(readonly policy: SpinPolicy = DEFAULT_SPIN) {
    this.budget = policy.maxSpins;
  }

  /** Spins while `array[index] === value`; returns true if it changed within the budget. */
  spin(array: Int32Array, index: number, value: number): boolean {
    const budget = this.budget;
    for (let i = 0; i < budget; i++) {
      if (Atomics.load(array, index) !== value) {
        if (i > budget >> 1) this.budget = Math.min(this.policy.maxSpins, budget * 2);
        return true;
      }
    }
    this.budget = Math.max(this.policy.minSpins, budget >> 1);
    return false;
  }
}

/**
 * Waits (blocking: worker threads only) until `array[index]` is no longer `value`:
 * spins within the budget, then parks with Atomics.wait. The other side must notify
 * when it sees `parkedIndex` set (or always notify when `parkedIndex` is negative).
 */
export function waitWhileEqual(
  array: Int32Array,
  index: number,
  value: number,
  spinner: AdaptiveSpinner,
  parkedIndex: number,
): void {
  if (spinner.spin(array, index, value)) return;
  Atomics.store(array, parkedIndex, 1);
  while (Atomics.load(array, index) === value) Atomics.wait(array, index, value);
  Atomics.store(array, parkedIndex, 0);
}
