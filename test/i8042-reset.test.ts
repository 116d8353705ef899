/** The PC machine's reset line through the keyboard controller, as Linux's reboot=kbd drives it. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { PcMachine } from "../runtime/pc-machine.js";
import { probeVmlinux } from "./linux-images.js";

function machineRunning(code: number[]): PcMachine {
  return new PcMachine({ kernel: probeVmlinux(Uint8Array.from(code)), memory: 64 << 20, pvmFallbacks: false, console: () => {} });
}

test("0xFE to port 0x64 resets the machine: the VM ends with reason 'reset'", async () => {
  // in al, 0x64 (an idle controller: 0); mov al, 0xfe; out 0x64, al; hlt
  const result = await machineRunning([0xe4, 0x64, 0xb0, 0xfe, 0xe6, 0x64, 0xf4]).run();
  assert.deepEqual(result, { reason: "reset", detail: "i8042 reset (0xfe to port 0x64)" });
});

test("other i8042 commands do not reset: the guest runs on to its debug-exit", async () => {
  // mov al, 0xaa (controller self-test); out 0x64, al; mov al, 5; out 0xf4, al
  const result = await machineRunning([0xb0, 0xaa, 0xe6, 0x64, 0xb0, 0x05, 0xe6, 0xf4]).run();
  assert.deepEqual(result, { reason: "debug-exit", status: 5 });
});
