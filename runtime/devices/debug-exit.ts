/**
 * A debug-exit port (QEMU's isa-debug-exit convention): a guest write of 1, 2 or 4 bytes
 * stops the VM with that value as its status. Register it as a sync device so the vCPU
 * does not run past the write.
 */
import { type AccessSize, type Device, toUnsigned } from "./device.js";

export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_LENGTH = 4;

export class DebugExit implements Device {
  readonly name = "debug-exit";
  constructor(private readonly onExit: (status: number) => void) {}

  read(_offset: number, size: AccessSize): number {
    return 0;
  }

  write(_offset: number, size: AccessSize, value: number): void {
    this.onExit(toUnsigned(value, size));
  }
}
