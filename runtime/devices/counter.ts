/**
 * A counter device for tests and benchmarks, with its state in a SharedArrayBuffer so the
 * same device can run on the main thread or inside a vCPU worker.
 *   offset 0 COUNT    write: count it (and check it is previous + 1); read: writes seen
 *   offset 4 IN_ORDER read: writes whose value was the previous value + 1 (from 1)
 *   offset 8 ECHO     write: store it (up to 8 bytes); read: the stored value
 */
import { type AccessSize, type Device, toUnsigned } from "./device.js";

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

  read(offset: number, size: AccessSize): number | bigint {
    const state = this.state;
    Atomics.add(state, S.READS, 1);
    if (offset === CounterRegister.ECHO) {
      const low = state[S.ECHO_LOW] >>> 0;
      if (size === 8) return BigInt(low) | (BigInt(state[S.ECHO_HIGH] >>> 0) << 32n);
      return toUnsigned(low, size);
    }
    const value = offset === CounterRegister.IN_ORDER ? state[S.IN_ORDER] >>> 0 : state[S.WRITES] >>> 0;
    return size === 8 ? BigInt(value) : toUnsigned(value, size);
  }

  write(offset: number, size: AccessSize, value: number | bigint): void {
    const state = this.state;
    if (offset === CounterRegister.ECHO) {
      if (typeof value === "bigint") {
        state[S.ECHO_LOW] = Number(value & 0xffff_ffffn);
        state[S.ECHO_HIGH] = Number((value >> 32n) & 0xffff_ffffn);
      } else {
        state[S.ECHO_LOW] = toUnsigned(value, size);
        state[S.ECHO_HIGH] = 0;
      }
      return;
    }
    const number = typeof value === "bigint" ? Number(value & 0xffff_ffffn) : value;
    if (number >>> 0 === ((state[S.LAST] + 1) >>> 0)) state[S.IN_ORDER]++;
    state[S.LAST] = number;
    state[S.WRITES]++;
  }
}
