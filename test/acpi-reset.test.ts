/** Reboot through the ACPI reset register: a guest reads the FADT it is given and uses it. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PcMachine } from "../runtime/pc-machine.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { probeVmlinux } from "./linux-images.js";

test("a guest that writes the FADT's RESET_VALUE to its RESET_REG resets the machine", async () => {
  const bytes: number[] = [];
  const machine = new PcMachine({ kernel: readFileSync(buildMultibootGuest("acpi-reset")), console: (b) => bytes.push(b) });
  const result = await machine.run();
  assert.match(String.fromCharCode(...bytes), /resetting through the FADT's reset register/);
  assert.deepEqual(result, { reason: "reset", detail: "ACPI reset register (0x06 to port 0xcf9)" });
});

function machineRunning(code: number[]): PcMachine {
  return new PcMachine({ kernel: probeVmlinux(Uint8Array.from(code)), memory: 64 << 20, pvmFallbacks: false, console: () => {} });
}

test("0xCF9 keeps SYS_RST without RST_CPU; 32-bit CONFIG_ADDRESS at 0xCF8 still works beside it", async () => {
  // mov dx, 0xcf9; mov al, 2; out dx, al (SYS_RST only: no reset)
  // mov dx, 0xcf8; mov eax, 0x80000000; out dx, eax (CONFIG_ADDRESS)
  // mov dx, 0xcf9; in al, dx; mov bl, al; mov dx, 0xcf8; in eax, dx; shr eax, 24; add al, bl; out 0xf4, al
  const result = await machineRunning([
    0x66, 0xba, 0xf9, 0x0c, 0xb0, 0x02, 0xee,
    0x66, 0xba, 0xf8, 0x0c, 0xb8, 0x00, 0x00, 0x00, 0x80, 0xef,
    0x66, 0xba, 0xf9, 0x0c, 0xec, 0x88, 0xc3, 0x66, 0xba, 0xf8, 0x0c, 0xed, 0xc1, 0xe8, 0x18, 0x00, 0xd8, 0xe6, 0xf4,
  ]).run();
  assert.deepEqual(result, { reason: "debug-exit", status: 0x80 + 2 });
});
