/**
 * Booting the Debian cloud kernel in tests: its assets (fetched into the cache on first use)
 * and a console that collects lines and lets a test wait for one, failing at once if the
 * VM ends first and after a generous guard time otherwise.
 */
import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { ensureGuestAssets, type GuestAssets } from "../runtime/assets/guest-assets.js";
import { PcMachine } from "../runtime/pc-machine.js";
import type { VmResult } from "../runtime/vm.js";

export const ON_PVM = existsSync("/sys/module/kvm_pvm");
export const PVM_SKIP_REASON =
  "this host's KVM is PVM (no hardware virtualization): kernel-mode guest code is emulated at about a million " +
  "instructions a second; with the PVM fallbacks the Debian kernel runs past its INT3 self-test and the initramfs " +
  "unpacking, but is still in its initcalls (parsing its own BTF) after 20 minutes";

/** The assets, or undefined after skipping (failing on CI) when this host cannot fetch them. */
export function guestAssetsOrSkip(t: TestContext): GuestAssets | undefined {
  try {
    return ensureGuestAssets();
  } catch (error) {
    const message = `the Debian guest assets are not available: ${(error as Error).message} (run 'npm run guest:fetch')`;
    if (process.env.CI) assert.fail(message);
    t.skip(message);
    return undefined;
  }
}

export class ConsoleLines {
  readonly lines: string[] = [];
  private partial = "";
  private waiters: { pattern: RegExp; resolve: (line: string) => void; reject: (error: Error) => void }[] = [];
  private ended: string | undefined;

  readonly push = (byte: number): void => {
    if (byte === 10) {
      const line = this.partial.replace(/\r$/, "");
      this.partial = "";
      this.lines.push(line);
      if (process.env.WORKERVISOR_TEST_CONSOLE) process.stderr.write(`console: ${line}\n`);
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.pattern.test(line)) return true;
        waiter.resolve(line);
        return false;
      });
    } else {
      this.partial += String.fromCharCode(byte);
    }
  };

  /** The first line matching `pattern`, seen already or yet to come. */
  waitFor(pattern: RegExp, guardMs: number): Promise<string> {
    const seen = this.lines.find((line) => pattern.test(line));
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.ended !== undefined) return Promise.reject(new Error(`the VM ended (${this.ended}) before a line matching ${pattern}; last lines:\n${this.tail()}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no line matching ${pattern} within ${guardMs / 1000} s; last lines:\n${this.tail()}`));
      }, guardMs);
      this.waiters.push({
        pattern,
        resolve: (line) => { clearTimeout(timer); resolve(line); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
    });
  }

  /** Called when the VM ends: every pending wait fails with how it ended. */
  end(how: string): void {
    this.ended = how;
    for (const waiter of this.waiters) waiter.reject(new Error(`the VM ended (${how}) before a line matching ${waiter.pattern}; last lines:\n${this.tail()}`));
    this.waiters = [];
  }

  indexOf(pattern: RegExp): number {
    return this.lines.findIndex((line) => pattern.test(line));
  }

  tail(count = 15): string {
    return this.lines.slice(-count).join("\n");
  }
}

/** The kernel log line's text, without the "[    0.000000] " timestamp. */
export function message(line: string): string {
  return line.replace(/^\[\s*\d+\.\d+\]\s/, "");
}

export interface BootedLinux {
  machine: PcMachine;
  console: ConsoleLines;
  result: Promise<VmResult>;
}

export function bootDebianKernel(
  assets: GuestAssets,
  options: { cpus: number; cmdline: string; memory?: number; kernelCacheDir?: string; kernel?: "cloud" | "generic" },
): BootedLinux {
  const console = new ConsoleLines();
  const machine = new PcMachine({
    kernel: readFileSync(options.kernel === "generic" ? assets.genericKernel : assets.kernel), kernelName: "bzImage",
    initrd: readFileSync(assets.initrd),
    cmdline: options.cmdline, cpus: options.cpus, memory: options.memory ?? 256 * 1024 * 1024,
    kernelCacheDir: options.kernelCacheDir, console: console.push,
  });
  const result = machine.run();
  result.then(
    (r) => console.end(`${r.reason}${r.status !== undefined ? ` ${r.status}` : ""}`),
    (error: Error) => console.end(`${error.name}: ${error.message}`),
  );
  return { machine, console, result };
}

/** Types `text` on the guest's COM1 no faster than its receive FIFO drains, as a flow-controlled line would. */
export async function typeOnConsole(machine: PcMachine, text: string): Promise<void> {
  const bytes = Buffer.from(text);
  let at = 0;
  while (at < bytes.length) {
    const room = machine.serial.rxSpace();
    if (room > 0) {
      machine.serial.receive(bytes.subarray(at, at + room));
      at += room;
    }
    if (at < bytes.length) await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
