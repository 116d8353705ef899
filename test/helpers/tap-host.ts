/** What the TAP tests need of the host: whether a TAP can be made here, and addresses for it. */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { TapBackend } from "../../runtime/devices/virtio/net-tap.js";

/** A skip reason when the TAP interface `name` cannot be made and addressed here, else false. */
export function tapSkip(name: string): string | false {
  if (!existsSync("/dev/net/tun")) return "/dev/net/tun does not exist on this host: no TAP test";
  try {
    new TapBackend(name).close();
  } catch (error) {
    return `cannot create a TAP interface here: ${(error as Error).message}`;
  }
  const ip = spawnSync("ip", ["-V"], { encoding: "utf8" });
  if (ip.error || ip.status !== 0) return "iproute2's `ip` is not installed (needed to give the TAP an address)";
  return false;
}

/** A /24 of 10.<second>.x.0 for this process (x from the pid), as a 32-bit number. */
export function tapSubnet(second: number): number {
  return 10 * 2 ** 24 + second * 2 ** 16 + (process.pid % 250) * 2 ** 8;
}

/** A 32-bit address in dotted form. */
export function dotted(ip: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(ip / 2 ** s) % 256).join(".");
}
