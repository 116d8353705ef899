import { test } from "node:test";
import assert from "node:assert/strict";
import { DebugExit } from "../runtime/devices/debug-exit.js";
import { Vm } from "../runtime/vm.js";

test("debug-exit reports 1-, 2- and 4-byte writes as the status, unsigned", () => {
  const statuses: number[] = [];
  const device = new DebugExit((status) => statuses.push(status));
  device.write(0, 1, 0x1ff);
  device.write(0, 2, 0x1_2345);
  device.write(0, 4, 0xdead_beef);
  assert.deepEqual(statuses, [0xff, 0x2345, 0xdead_beef]);
  assert.equal(device.read(0, 4), 0);
});

test("a guest's 2-byte debug-exit write stops the VM before the next instruction runs", async () => {
  const vm = Vm.create({ memory: 2 << 20 });
  try {
    vm.addDebugExit();
    // prettier-ignore
    vm.loadProgram({ code: [
      0x66, 0xb8, 0x34, 0x12, // mov ax, 0x1234
      0x66, 0xe7, 0xf4,       // out 0xf4, ax
      0x0f, 0x0b,             // ud2: a triple fault if the vCPU ran on past the write
    ] });
    assert.deepEqual(await vm.run(), { reason: "debug-exit", status: 0x1234 });
  } finally {
    await vm.stop();
  }
});
