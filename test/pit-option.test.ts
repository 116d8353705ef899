/** The 8254 PIT: absent (QEMU's `-machine pit=off`, as unittests.cfg's vmexit_ipi asks), KVM's, or split mode's userspace one. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Vm } from "../runtime/vm.js";
import { DEBUG_EXIT } from "../runtime/guests/guest-bytes.js";
import { readFileSync } from "node:fs";
import { PcMachine } from "../runtime/pc-machine.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";

test("pit: false leaves port 0x40 unclaimed (QEMU's -machine pit=off); the default PIT answers it (in the kernel, or split mode's own)", async () => {
  for (const [irqchip, pit] of [[true, true], [true, false], ["split", true], ["split", false]] as const) {
    const vm = Vm.create({ memory: 2 << 20, irqchip, pit });
    vm.addDebugExit();
    vm.loadProgram({
      code: [
        0xe4, 0x40,                     // in al, 0x40   ; PIT counter 0
        0x31, 0xc0,                     // xor eax, eax
        0xe6, DEBUG_EXIT,               // out 0xf4, al
        0xf4,                           // hlt
      ],
      mode: "long64",
    });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0 });
    assert.equal(vm.stats.unclaimedReads, pit ? 0 : 1, `irqchip: ${irqchip}, pit: ${pit}`);
  }
});

for (const irqchip of ["in-kernel", "split"] as const) {
  test(`${irqchip === "split" ? "split mode's" : "KVM's"} 8254: counter 2 behind port 0x61 counts down, latches, reads back and raises OUT2; counter 0 ticks IRQ 0 on IOAPIC pin 2, as the MADT says`, { timeout: 120_000 }, async () => {
    const bytes: number[] = [];
    const machine = new PcMachine({ kernel: readFileSync(buildMultibootGuest("pit-check")), irqchip, console: (b) => bytes.push(b) });
    const result = await machine.run();
    const console = Buffer.from(bytes).toString("latin1");
    for (const name of ["counter2-counts-down", "readback-status", "out2-rises-at-terminal-count", "readback-out-high", "irq0-periodic-on-ioapic-pin-2"]) {
      assert.match(console, new RegExp(`^${name}=ok$`, "m"), console);
    }
    assert.deepEqual(result, { reason: "debug-exit", status: 0 });
    if (irqchip === "split") assert.ok((machine.vm.splitIrqChip?.pit?.ticks ?? 0) >= 3);
  });
}
