/** Worker-local factory for pc-testdev's RAM-like MMIO region: its bytes are the SAB it is given. */
import { PcTestdevIoMemory } from "./pc-testdev.js";

export default function createPcTestdevIoMemory(shared: SharedArrayBuffer): PcTestdevIoMemory {
  return new PcTestdevIoMemory(shared);
}
