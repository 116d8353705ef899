import { constants } from "node:os";

const NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!NAMES.has(value)) NAMES.set(value, name);
}

/** "EINVAL" for 22, and so on. */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${errno}`;
}
