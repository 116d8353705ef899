/** Reads an eventfd's counter without consuming it (and without blocking when it is 0). */
import { readFileSync } from "node:fs";

/** The kernel prints the counter in /proc/self/fdinfo as `eventfd-count: <hex>` (fs/eventfd.c). */
export function eventFdCount(fd: number): number {
  const info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
  const match = /^eventfd-count:\s*([0-9a-f]+)\s*$/m.exec(info);
  if (match === null) throw new Error(`fd ${fd} is not an eventfd (no eventfd-count in /proc/self/fdinfo/${fd})`);
  return parseInt(match[1], 16);
}
