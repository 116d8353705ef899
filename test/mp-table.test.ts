/** The MP table (MPS 1.4) of the PC machine, as a guest finds and reads it. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PcMachine } from "../runtime/pc-machine.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { MpTableError, writeMpTable } from "../runtime/devices/mp-table.js";

for (const cpus of [1, 2]) {
  test(`a guest finds the MP table by scanning, and it lists ${cpus} processor(s) and the IOAPIC`, async () => {
    const bytes: number[] = [];
    const machine = new PcMachine({ kernel: readFileSync(buildMultibootGuest("mp-table-check", { CPUS: cpus })), cpus, console: (b) => bytes.push(b) });
    const result = await machine.run();
    assert.equal(String.fromCharCode(...bytes), `cpus=${cpus} bsp=0 ioapic=0xfec00000 isa-irq0-pin=2\n`);
    assert.deepEqual(result, { reason: "debug-exit", status: 0 });
  });
}

test("an MP table outside the BIOS ROM area or in unbacked memory is refused", () => {
  const memory = GuestMemory.allocate([{ gpa: 0, size: 2 << 20 }]);
  const base = { cpus: 1, localApicAddress: 0xfee00000, ioApicId: 0, ioApicAddress: 0xfec00000, levelIsaIrqs: [], pciIntxGsi: () => 10 };
  assert.throws(() => writeMpTable(memory, { ...base, address: 0xe0000 }), /BIOS ROM area/);
  assert.throws(() => writeMpTable(memory, { ...base, address: 0xffff0 }), MpTableError);
  assert.throws(() => writeMpTable(memory, { ...base, address: 0xf0000, cpus: 0 }), /cpus/);
  assert.throws(() => writeMpTable(GuestMemory.allocate([{ gpa: 0, size: 0x80000 }]), { ...base, address: 0xf0000 }), /not guest RAM/);
});
