/**
 * The console as streams for embedders: a Readable feeds COM1 (flow-controlled), a Writable
 * receives what the guest prints, everything written by the time the machine stops.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { PcMachine } from "../runtime/pc-machine.js";
import { destroyVcpuPool } from "../runtime/vcpu-pool.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { readFileSync } from "node:fs";

after(() => destroyVcpuPool());

test("PcMachine console and input as streams: typed bytes reach the guest, its output reaches the stream", { timeout: 60_000 }, async () => {
  const input = new PassThrough();
  const output = new PassThrough();
  let printed = "";
  output.on("data", (chunk: Buffer) => (printed += chunk.toString("latin1")));
  const machine = new PcMachine({ kernel: readFileSync(buildMultibootGuest("serial-echo")), console: output, input });
  const result = machine.run();
  input.write("ab");
  input.write(Buffer.from([0x00, 0xff]));
  const deadline = Date.now() + 50_000;
  while (!printed.includes("61 62 00 ff ") && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  await machine.stop();
  assert.deepEqual(await result, { reason: "stopped" });
  assert.equal(printed, "echo ready\n61 62 00 ff ");
});
