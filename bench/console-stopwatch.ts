/**
 * Times a guest's measurement from its console: the "go" line starts the clock, the first
 * line matching `endLine` after it stops it. Our consoles are fed on the main thread, so
 * `mainCpuNs` is the main thread's CPU time between the two lines: what the measured work
 * cost it, without the VM's setup and teardown.
 */
import { threadCpuNs } from "../runtime/thread-cpu.js";

export interface ConsoleStopwatch {
  push(byte: number): void;
  /** The main thread's CPU time between the lines, ns. */
  readonly mainCpuNs: number;
  /** The line that stopped the clock. */
  readonly endLine: string | undefined;
  /** Seconds between the lines; throws, naming `what` and the console, if either is missing. */
  seconds(what: string): number;
}

export function consoleStopwatch(endLine: RegExp): ConsoleStopwatch {
  let line = "";
  let go: number | undefined;
  let end: number | undefined;
  let ended: string | undefined;
  let cpuAtGo = 0;
  let mainCpuNs = 0;
  const lines: string[] = [];
  return {
    push(byte: number) {
      if (byte !== 10) {
        line += String.fromCharCode(byte);
        return;
      }
      const now = performance.now();
      if (line === "go" && go === undefined) {
        go = now;
        cpuAtGo = threadCpuNs();
      } else if (go !== undefined && end === undefined && endLine.test(line)) {
        end = now;
        ended = line;
        mainCpuNs = threadCpuNs() - cpuAtGo;
      }
      lines.push(line);
      line = "";
    },
    get mainCpuNs() {
      return mainCpuNs;
    },
    get endLine() {
      return ended;
    },
    seconds(what: string): number {
      if (go === undefined || end === undefined) throw new Error(`${what}: the guest did not report (console: ${lines.join(" | ")})`);
      return (end - go) / 1000;
    },
  };
}
