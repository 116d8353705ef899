/**
 * A counter device for tests and benchmarks, with its state in a SharedArrayBuffer so the
 * same device can run on the main thread or inside a vCPU worker.
 *   offset 0 COUNT    write: count it (and check it is previous + 1); read: writes seen
 *   offset 4 IN_ORDER read: writes whose value was the previous value + 1 (from 1)
 *   offset 8 ECHO     write: store it (up to 8 bytes); read: the stored value
 */
import { type AccessSize, type Device, type HighWord, toUnsigned } from "./device.js";

export const COUNTER_LENGTH = 16;
export const CounterRegister = { COUNT: 0, IN_ORDER: 4, ECHO: 8 } as const;
const S = { WRITES: 0, LAST: 1, IN_ORDER: 2, ECHO_LOW: 3, ECHO_HIGH: 4, READS: 5 } as const;

export class CounterDevice implements Device {
  readonly name: string;
  readonly state: Int32Array;

  constructor(shared: SharedArrayBuffer = CounterDevice.createState(), name = "counter") {
    this.state = new Int32Array(shared);
    this.name = name;
  }

  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(8 * 4);
  }

  get writes(): number {
    return Atomics.load(this.state, S.WRITES) >>> 0;
  }
  get inOrder(): number {
    return Atomics.load(this.state, S.IN_ORDER) >>> 0;
  }
  get reads(): number {
    return Atomics.load(this.state, S.READS) >>> 0;
  }

  read(offset: number, size: AccessSize, wide: HighWord): number {
    const state = this.state;
    Atomics.add(state, S.READS, 1);
    if (offset === CounterRegister.ECHO) {
      if (size === 8) wide.high = state[S.ECHO_HIGH] >>> 0;
      return toUnsigned(state[S.ECHO_LOW], size);
    }
    return toUnsigned(offset === CounterRegister.IN_ORDER ? state[S.IN_ORDER] : state[S.WRITES], size);
  }

  write(offset: number, _size: AccessSize, value: number, high: number): void {
    const state = this.state;
    if (offset === CounterRegister.ECHO) {
      state[S.ECHO_LOW] = value;
      state[S.ECHO_HIGH] = high;
      return;
    }
    if (value === ((state[S.LAST] + 1) >>> 0)) state[S.IN_ORDER]++;
    state[S.LAST] = value;
    state[S.WRITES]++;
  }
}
