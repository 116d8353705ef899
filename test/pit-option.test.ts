/** A PC without an 8254 PIT (QEMU's `-machine pit=off`), as unittests.cfg's vmexit_ipi asks. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Vm } from "../runtime/vm.js";
import { DEBUG_EXIT } from "../runtime/guests/guest-bytes.js";

test("pit: false leaves port 0x40 unclaimed (QEMU's -machine pit=off); the default PIT answers it in the kernel", async () => {
  for (const pit of [true, false]) {
    const vm = Vm.create({ memory: 2 << 20, irqchip: true, pit });
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
    assert.equal(vm.stats.unclaimedReads, pit ? 0 : 1, `pit: ${pit}`);
  }
});
