/**
 * Running guests/virtio-check.c under the PC machine and reading its `key=value` report:
 * shared by the virtio guest tests of every placement.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PcMachine, type VirtioOnWorker } from "../../runtime/pc-machine.js";
import type { VirtioDevice } from "../../runtime/devices/virtio/virtio-device.js";
import { buildMultibootGuest, type MultibootBuild } from "./flat-guest.js";

export const CHECK = { entropy: 1, block: 2, hostile: 3, endless: 4, timedReads: 5, interrupts: 6, deepReads: 7, discard: 10 } as const;

/** The guest's RAM under both VMMs: guests/virtio-check.c puts a hostile buffer across its end. */
export const GUEST_MEMORY_MIB = 64;

export interface GuestReport {
  status: number | undefined;
  console: string;
  values: Map<string, string>;
  all: (key: string) => string[];
}

export function parseReport(status: number | undefined, console: string): GuestReport {
  const pairs = [...console.matchAll(/^([a-z0-9-]+)=(.*)$/gm)].map((m) => [m[1], m[2]] as const);
  return { status, console, values: new Map(pairs), all: (key) => pairs.filter(([k]) => k === key).map(([, v]) => v) };
}

/** A folder for images, removed by `cleanup`. */
export function imageFolder(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "workervisor-virtio-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A raw image whose first 1 KiB is a pattern and the rest zeros. */
export function makeImage(dir: string, name: string, sectors = 16): { path: string; first: Buffer } {
  const image = Buffer.alloc(sectors * 512);
  for (let i = 0; i < 1024; i++) image[i] = (i * 13) & 0xff;
  const path = join(dir, name);
  writeFileSync(path, image);
  return { path, first: image.subarray(0, 1024) };
}

export function fnv1a(bytes: Uint8Array): number {
  let h = 2166136261;
  for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h;
}

/** What CHECK=10 writes over its 64 KiB image before zeroing and discarding blocks of it. */
export function discardPattern(): Buffer {
  return Buffer.from(Array.from({ length: 65536 }, (_, i) => (((i >> 12) * 37 + i * 7 + 1) | 1) & 0xff));
}

/** The 4 KiB blocks CHECK=10 zeroes (1-2), zeroes with UNMAP (5) and discards (8-9, 12). */
export const DISCARD_ZERO_BLOCKS = [1, 2, 5, 8, 9, 12];

/** What CHECK=2 writes to sectors 2-3. */
export const WRITTEN = Buffer.from(Array.from({ length: 1024 }, (_, i) => (i * 7 + 3) & 0xff));

export interface GuestRun {
  report: GuestReport;
  machine: PcMachine;
}

/** Runs virtio-check with `defines` (CHECK first), built as `build` says, until its debug-exit. */
export async function runVirtioCheck(defines: Record<string, number>, devices: (VirtioDevice | VirtioOnWorker)[], log: string[] = [], build: MultibootBuild = {}): Promise<GuestRun> {
  const bytes: number[] = [];
  const machine = new PcMachine({
    kernel: readFileSync(buildMultibootGuest("virtio-check", defines, build)), console: (b) => bytes.push(b), virtio: devices,
    memory: GUEST_MEMORY_MIB << 20,
    virtioLog: (message) => log.push(message),
  });
  const result = await machine.run();
  assert.equal(result.reason, "debug-exit", `the guest ended by ${result.reason}: ${Buffer.from(bytes).toString("latin1")}`);
  return { report: parseReport(result.status, Buffer.from(bytes).toString("latin1")), machine };
}

/** The files and fds this process has open (targets of /proc/self/fd). */
export function openFiles(): string[] {
  return readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      return [readlinkSync(`/proc/self/fd/${fd}`)];
    } catch {
      return []; // the fd of the directory listing itself, gone by now
    }
  });
}
