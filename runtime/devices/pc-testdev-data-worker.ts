/** Worker-local factory for pc-testdev's data register: its state is the SAB it is given. */
import { PcTestdevDataPort } from "./pc-testdev.js";

export default function createPcTestdevDataPort(shared: SharedArrayBuffer): PcTestdevDataPort {
  return new PcTestdevDataPort(shared);
}
