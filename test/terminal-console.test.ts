/**
 * `workervisor run` on a real terminal (a pseudo-terminal from util-linux's `script`): stdin
 * is in raw mode, so every key reaches the guest as typed, and Ctrl-A is the escape key as
 * in QEMU: Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A x quits with status 0 and the terminal
 * is given back in the mode it had. The guest prints each byte it receives in hex.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { EscapeFilter } from "../runtime/terminal-console.js";

const CLI = new URL("../runtime/cli.js", import.meta.url).pathname;
const HAVE_SCRIPT = spawnSync("script", ["--version"]).status === 0;

test("the escape filter: C-a x quits and drops what follows, C-a C-a is one C-a, C-a h is help, C-a other passes both", () => {
  const events: string[] = [];
  const filter = new EscapeFilter({ quit: () => events.push("quit"), help: () => events.push("help") });
  const bytes = (text: string) => Uint8Array.from(Buffer.from(text, "latin1"));
  assert.deepEqual(filter.filter(bytes("ab\x01\x01c\x01h\x01zd")), bytes("ab\x01c\x01zd"));
  assert.deepEqual(events, ["help"]);
  // An escape split across two reads still counts.
  assert.deepEqual(filter.filter(bytes("e\x01")), bytes("e"));
  assert.deepEqual(filter.filter(bytes("xnot-sent")), bytes(""));
  assert.deepEqual(events, ["help", "quit"]);
});

test("on a terminal: raw keys reach the guest, Ctrl-A Ctrl-A sends Ctrl-A, Ctrl-A x quits with status 0", { timeout: 120_000, skip: HAVE_SCRIPT ? false : "util-linux 'script' is not installed" }, async () => {
  const kernel = buildMultibootGuest("serial-echo");
  // script runs the command on a new pty; what we write to script's stdin is typed on it.
  const child = spawn("script", ["-qfec", `${process.execPath} ${CLI} run --kernel ${kernel}`, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("latin1")));
  const waitFor = async (pattern: RegExp) => {
    const deadline = Date.now() + 100_000;
    while (!pattern.test(output)) {
      if (Date.now() > deadline || child.exitCode !== null) assert.fail(`no ${pattern} in: ${JSON.stringify(output)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const status = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  await waitFor(/echo ready/);
  // Ctrl-C (0x03) and CR are plain bytes in raw mode: no signal, no translation.
  child.stdin.write("hi\x03\r\x01\x01");
  await waitFor(/68 69 03 0d 01 /);
  child.stdin.write("\x01x");
  assert.equal(await status, 0);
  assert.match(output, /workervisor run: quit \(Ctrl-A x\)/);
  assert.doesNotMatch(output, /78 /, "the x of Ctrl-A x never reached the guest");
});
