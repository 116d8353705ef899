/** Worker-local factory for the counter device: its state is the SAB it is given. */
import { CounterDevice } from "./counter.js";

export default function createCounter(shared: SharedArrayBuffer): CounterDevice {
  return new CounterDevice(shared, "counter (worker)");
}
