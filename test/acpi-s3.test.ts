/**
 * ACPI S3 on the PC machine: a guest finds \_S3_ in the DSDT, sets the FACS waking vector
 * and the RTC alarm as its wake event, and sleeps; the machine wakes it in real mode at the
 * vector with its RAM intact. Without a wake event it sleeps until stopped; without a
 * waking vector the "firmware" boots afresh, i.e. the machine resets.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { PcMachine } from "../runtime/pc-machine.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";

function machine(defines: Record<string, number>, cpus: number, console: number[]): PcMachine {
  return new PcMachine({ kernel: readFileSync(buildMultibootGuest("acpi-s3", defines)), cpus, console: (b) => console.push(b) });
}

for (const cpus of [1, 2]) {
  test(`${cpus} vCPU(s): S3 wakes on the RTC alarm and resumes at the waking vector in real mode, RAM kept`, { timeout: 60_000 }, async () => {
    const output: number[] = [];
    const result = await machine({}, cpus, output).run();
    assert.equal(String.fromCharCode(...output), "sleeping\n");
    // RTC_STS, WAK_STS, and the marker left in RAM (bits 0-2).
    assert.deepEqual(result, { reason: "debug-exit", status: 7 });
  });
}

test("with no wake event enabled the machine sleeps until it is stopped", { timeout: 60_000 }, async () => {
  const output: number[] = [];
  const m = machine({ NO_WAKE: 1 }, 2, output);
  const done = m.run();
  let ended = false;
  void done.then(() => (ended = true));
  while (!String.fromCharCode(...output).includes("sleeping")) await sleep(20);
  await sleep(2500); // past the next RTC second, when an enabled alarm would have woken it
  assert.equal(ended, false, "still asleep");
  await assert.rejects(m.vm.pause(), /suspended \(ACPI S3\)/, "no vCPU runs to pause");
  assert.throws(() => m.vm.resumeVcpus([{}]), /1 CPU states for 2 vCPUs/);
  assert.deepEqual(await m.stop(), { reason: "stopped" });
  m.vm.resumeVcpus([{}, {}]); // a wake that comes too late starts nothing
  assert.equal(m.vm.state, "stopped");
});

test("woken with no firmware waking vector, the machine resets (firmware would boot afresh)", { timeout: 60_000 }, async () => {
  const result = await machine({ NO_VECTOR: 1 }, 1, []).run();
  assert.deepEqual(result, { reason: "reset", detail: "woke from ACPI S3 with no firmware waking vector in the FACS: the firmware boots afresh" });
});
