/**
 * The virtio device flags of `workervisor run` (--disk, --net, --rng, --vsock,
 * --virtio-console, --device-worker): each flag's value checked up front, with an error that
 * names the flag and says what is allowed, then turned into the machine's `virtio` list,
 * one transport per device in the order disks, NICs, rng, vsock, console. Each kind is built
 * from a plain spec by ON_MAIN_THREAD or, where a device worker can build it, ON_WORKER.
 */
import { closeSync, openSync, realpathSync, statSync } from "node:fs";
import { dirname } from "node:path";
import type { Readable, Writable } from "node:stream";
import { UsageError } from "./errors.js";
import { VIRTIO_MMIO_BASE, VIRTIO_MMIO_FIRST_GSI, VIRTIO_MMIO_SLOTS, virtioOnWorker, type VirtioOnWorker } from "./pc-machine.js";
import type { VirtioDevice } from "./devices/virtio/virtio-device.js";
import { SECTOR_SIZE, VIRTIO_BLK_ID_BYTES, VirtioBlk } from "./devices/virtio/virtio-blk.js";
import { VirtioRng } from "./devices/virtio/virtio-rng.js";
import { VirtioNet } from "./devices/virtio/virtio-net.js";
import { parseMac } from "./devices/virtio/net-backend.js";
import { TapBackend } from "./devices/virtio/net-tap.js";
import { VirtioConsole } from "./devices/virtio/virtio-console.js";
import { VirtioVsock } from "./devices/virtio/virtio-vsock.js";
import { UnixSocketVsockHost } from "./devices/virtio/vsock-host.js";

export interface VirtioDeviceFlags {
  disk?: string[];
  net?: string[];
  rng?: boolean;
  vsock?: string[];
  "virtio-console"?: boolean;
  "device-worker"?: boolean;
}

/** What a device of each kind is built from: plain data, so it can be sent to a device worker. */
interface DiskSpec { path: string; readOnly: boolean; serial?: string }
interface NetSpec { tap: string; mac: string }
interface VsockSpec { guestCid: number; udsPath: string }
type NoSpec = Record<string, never>;
interface Specs { disk: DiskSpec; net: NetSpec; rng: NoSpec; vsock: VsockSpec; "virtio-console": NoSpec }
type Kind = keyof Specs;

/**
 * The kinds a device worker can build, from the same spec as the main thread's device (a
 * TAP and a vsock UDS path are opened by name on the worker). The console is not here yet:
 * on a worker it needs a ConsoleChannel owned by the run (see console-channel.ts).
 */
const ON_WORKER: { [K in Kind]?: (spec: Specs[K]) => VirtioOnWorker } = {
  disk: (spec) => virtioOnWorker("./virtio-blk.js", "VirtioBlk", spec),
  net: (spec) => virtioOnWorker("./virtio-net.js", "VirtioNet", spec),
  rng: () => virtioOnWorker("./virtio-rng.js", "VirtioRng"),
  vsock: (spec) => virtioOnWorker("./virtio-vsock.js", "VirtioVsock", spec),
};

/** The terminal (or pipes) a virtio console is wired to. */
export interface ConsoleStdio {
  input: Readable;
  output: Writable;
}

/** What main-thread devices get from the host beyond their spec. */
interface HostSides {
  stdio: () => ConsoleStdio;
  /** A host side that becomes usable later (a listening socket): the run waits for it. */
  ready: (listening: Promise<void>) => void;
}

const ON_MAIN_THREAD: { [K in Kind]: (spec: Specs[K], host: HostSides) => VirtioDevice } = {
  disk: (spec) => new VirtioBlk(spec),
  net: (spec) => new VirtioNet({ mac: spec.mac, backend: new TapBackend(spec.tap) }),
  rng: () => new VirtioRng(),
  vsock: (spec, host) => {
    const sockets = new UnixSocketVsockHost(spec.udsPath);
    const device = new VirtioVsock({ guestCid: spec.guestCid, host: sockets });
    host.ready(sockets.listening);
    return device;
  },
  "virtio-console": (_, host) => new VirtioConsole(host.stdio()),
};

export const DEVICE_FLAGS_USAGE = `
virtio devices (virtio-mmio transports at 0x${VIRTIO_MMIO_BASE.toString(16)} + 0x200 * i, GSI ${VIRTIO_MMIO_FIRST_GSI} + i; at most ${VIRTIO_MMIO_SLOTS} in all):
  --disk PATH[,ro][,serial=S][,worker]
                  virtio-blk on a raw image file (repeatable; vda, vdb... in order); ro: the
                  guest may not write; serial: what GET_ID returns (up to ${VIRTIO_BLK_ID_BYTES} printable
                  characters); a comma in PATH is written ,,
  --net tap=NAME[,mac=MAC][,worker]
                  virtio-net on the host TAP interface NAME (created if missing; needs
                  /dev/net/tun and CAP_NET_ADMIN); MAC default 52:54:00:12:34:56, then :57...
  --rng           virtio-rng, entropy from the host's CSPRNG
  --vsock CID,UDS_PATH[,worker]
                  virtio-vsock, guest CID 3 or more; host side as Firecracker's: connect to
                  UDS_PATH and write "CONNECT <port>\\n"; guest connections to host port P
                  reach UDS_PATH_P
  --virtio-console
                  the console on a virtio-console port (Linux: console=hvc0) instead of COM1:
                  the terminal's input goes there; COM1's output is still printed
  --device-worker put every device that supports it on a device worker of its own (queue
                  notifications as ioeventfds, completions as irqfds); ",worker" asks it for
                  one device and fails where it is not supported (today: ${workerKinds()})`;

interface Planned<K extends Kind = Kind> {
  kind: K;
  flag: string;
  spec: Specs[K];
  worker: boolean;
}

export interface VirtioDevicePlan {
  /** Whether --virtio-console was given: the terminal belongs to hvc0, not COM1. */
  readonly console: boolean;
  /**
   * Builds the devices (opening images, TAPs, sockets) and waits until their host sides are
   * ready; on a failure closes what it built. `stdio` is asked for only by a virtio console.
   */
  build(stdio: () => ConsoleStdio): Promise<(VirtioDevice | VirtioOnWorker)[]>;
}

const DEFAULT_MAC_PREFIX = "52:54:00:12:34:";
const DEFAULT_MAC_LAST = 0x56;
const MAX_CID = 0xffff_fffe;
/** sun_path is 108 bytes with its NUL; a guest port's socket is UDS_PATH_<port>, up to 11 more. */
const MAX_UDS_PATH_BYTES = 107 - 11;

/** Checks every device flag; throws a UsageError naming the first bad one. */
export function planVirtioDevices(flags: VirtioDeviceFlags): VirtioDevicePlan {
  const everyWhere = flags["device-worker"] ?? false;
  const planned: Planned[] = [];
  const add = <K extends Kind>(kind: K, flag: string, spec: Specs[K], workerAsked: boolean) => {
    if (workerAsked && ON_WORKER[kind] === undefined) {
      throw new UsageError(`${flag}: ",worker" is not available for this device yet (device workers build ${workerKinds()})`);
    }
    planned.push({ kind, flag, spec, worker: workerAsked || (everyWhere && ON_WORKER[kind] !== undefined) } as Planned);
  };
  const paths = new Set<string>();
  for (const value of flags.disk ?? []) {
    const { spec, worker } = diskSpec(value);
    const key = realpathSync(spec.path); // the same image under two names (a symlink) is one image
    if (paths.has(key)) throw new UsageError(`--disk: '${spec.path}' is given twice; two disks on one image would overwrite each other's writes`);
    paths.add(key);
    add("disk", `--disk ${value}`, spec, worker);
  }
  const taps = new Set<string>();
  (flags.net ?? []).forEach((value, i) => {
    const { spec, worker } = netSpec(value, i);
    if (taps.has(spec.tap)) throw new UsageError(`--net: TAP interface '${spec.tap}' is given twice; one NIC per TAP`);
    taps.add(spec.tap);
    add("net", `--net ${value}`, spec, worker);
  });
  if (flags.rng) add("rng", "--rng", {}, false);
  const vsocks = flags.vsock ?? [];
  if (vsocks.length > 1) throw new UsageError(`--vsock is given ${vsocks.length} times; a guest has one vsock device (one CID)`);
  for (const value of vsocks) {
    const { spec, worker } = vsockSpec(value);
    add("vsock", `--vsock ${value}`, spec, worker);
  }
  if (flags["virtio-console"]) add("virtio-console", "--virtio-console", {}, false);
  if (planned.length > VIRTIO_MMIO_SLOTS) {
    throw new UsageError(
      `${planned.length} virtio devices given (${summary(planned)}); the machine has ${VIRTIO_MMIO_SLOTS} virtio-mmio transports`,
    );
  }
  return {
    console: flags["virtio-console"] ?? false,
    build: (stdio) => build(planned, stdio),
  };
}

async function build(planned: Planned[], stdio: () => ConsoleStdio): Promise<(VirtioDevice | VirtioOnWorker)[]> {
  const devices: (VirtioDevice | VirtioOnWorker)[] = [];
  const ready: Promise<void>[] = [];
  try {
    for (const { kind, flag, spec, worker } of planned) {
      const named = (error: Error) => new UsageError(`${flag}: ${error.message}`, { cause: error });
      const host: HostSides = { stdio, ready: (listening) => ready.push(listening.catch((error: Error) => { throw named(error); })) };
      try {
        const make = (worker ? ON_WORKER[kind] : ON_MAIN_THREAD[kind]) as (spec: Specs[Kind], host: HostSides) => VirtioDevice | VirtioOnWorker;
        devices.push(make(spec, host));
      } catch (error) {
        throw named(error as Error);
      }
    }
    await Promise.all(ready);
  } catch (error) {
    for (const device of devices) (device as VirtioDevice).close?.();
    throw error;
  }
  return devices;
}

/** Splits `a,b,,c` into ["a", "b,c"]: a doubled comma is a comma (QEMU's convention). */
function splitOptions(value: string): string[] {
  const parts = [""];
  for (let i = 0; i < value.length; i++) {
    if (value[i] !== ",") parts[parts.length - 1] += value[i];
    else if (value[i + 1] === ",") parts[parts.length - 1] += value[i++];
    else parts.push("");
  }
  return parts;
}

function diskSpec(value: string): { spec: DiskSpec; worker: boolean } {
  const [path, ...options] = splitOptions(value);
  const flag = "--disk";
  if (!path) throw new UsageError(`${flag}: give the image file first, e.g. --disk disk.img,ro`);
  let readOnly = false;
  let serial: string | undefined;
  let worker = false;
  for (const option of options) {
    if (option === "ro") readOnly = true;
    else if (option === "worker") worker = true;
    else if (option.startsWith("serial=")) serial = option.slice("serial=".length);
    else throw new UsageError(`${flag} ${path}: unknown option '${option}' (allowed: ro, serial=S, worker)`);
  }
  if (serial !== undefined && !/^[\x20-\x7e]{0,20}$/.test(serial)) {
    throw new UsageError(`${flag} ${path}: serial '${serial}' must be at most ${VIRTIO_BLK_ID_BYTES} printable ASCII characters`);
  }
  checkImage(path, readOnly);
  return { spec: { path, readOnly, ...(serial === undefined ? {} : { serial }) }, worker };
}

/** The image must be a file of at least one sector that opens as the guest will use it. */
function checkImage(path: string, readOnly: boolean): void {
  const what = `--disk ${path}`;
  let size: number;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new UsageError(`${what}: is ${stat.isDirectory() ? "a directory" : "not a regular file"}; give a raw image file`);
    size = stat.size;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(`${what}: ${code === "ENOENT" ? "no such file (create one, e.g. truncate -s 64M disk.img)" : (error as Error).message}`);
  }
  if (size < SECTOR_SIZE) throw new UsageError(`${what}: ${size} bytes is less than one ${SECTOR_SIZE}-byte sector`);
  let fd: number;
  try {
    fd = openSync(path, readOnly ? "r" : "r+");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    if (!readOnly && ["EACCES", "EPERM", "EROFS", "ETXTBSY"].includes(code)) {
      throw new UsageError(`${what}: the file cannot be opened for writing (${code}); add ,ro to give it to the guest read-only`);
    }
    throw new UsageError(`${what}: cannot open it${readOnly ? " for reading" : ""} (${code || (error as Error).message})`);
  }
  closeSync(fd);
}

function netSpec(value: string, index: number): { spec: NetSpec; worker: boolean } {
  const flag = "--net";
  const options = splitOptions(value);
  if (options[0] === "switch") {
    throw new UsageError(
      `${flag} switch: an in-process switch joins the NICs of VMs in one process, and 'workervisor run' starts one VM, so its NIC would have no peer; ` +
        "use --net tap=NAME for the host's network, or PcMachine with a NetSwitch from TypeScript for VMs that talk to each other",
    );
  }
  let tap: string | undefined;
  let mac = DEFAULT_MAC_PREFIX + (DEFAULT_MAC_LAST + index).toString(16).padStart(2, "0");
  let worker = false;
  for (const option of options) {
    if (option.startsWith("tap=")) tap = option.slice("tap=".length);
    else if (option.startsWith("mac=")) mac = option.slice("mac=".length);
    else if (option === "worker") worker = true;
    else throw new UsageError(`${flag} ${value}: unknown option '${option}' (allowed: tap=NAME, mac=MAC, worker)`);
  }
  if (tap === undefined) throw new UsageError(`${flag} ${value}: say which host TAP interface, e.g. --net tap=tap0`);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tap)) throw new UsageError(`${flag} ${value}: TAP name '${tap}' must be 1 to 15 letters, digits, '_', '.' or '-'`);
  try {
    parseMac(mac);
  } catch (error) {
    throw new UsageError(`${flag} ${value}: ${(error as Error).message}`);
  }
  return { spec: { tap, mac }, worker };
}

function vsockSpec(value: string): { spec: VsockSpec; worker: boolean } {
  const flag = "--vsock";
  const [cidText, udsPath, ...options] = splitOptions(value);
  const usage = "give CID,UDS_PATH, e.g. --vsock 3,/tmp/vm.vsock";
  if (!cidText || !udsPath) throw new UsageError(`${flag} ${value}: ${usage}`);
  const cid = /^\d{1,10}$/.test(cidText) ? Number(cidText) : NaN;
  if (!(cid >= 3 && cid <= MAX_CID)) {
    throw new UsageError(`${flag} ${value}: CID '${cidText}' must be a whole number from 3 to ${MAX_CID} (0-2 are reserved: 2 is the host)`);
  }
  let worker = false;
  for (const option of options) {
    if (option === "worker") worker = true;
    else throw new UsageError(`${flag} ${value}: unknown option '${option}' (allowed: worker)`);
  }
  if (Buffer.byteLength(udsPath) > MAX_UDS_PATH_BYTES) {
    throw new UsageError(`${flag} ${value}: UDS_PATH is ${Buffer.byteLength(udsPath)} bytes; a Unix socket path (with _<port> added) allows ${MAX_UDS_PATH_BYTES}`);
  }
  let dir;
  try {
    dir = statSync(dirname(udsPath));
  } catch {
    throw new UsageError(`${flag} ${value}: the folder ${dirname(udsPath)} does not exist`);
  }
  if (!dir.isDirectory()) throw new UsageError(`${flag} ${value}: ${dirname(udsPath)} is not a folder`);
  let exists = true;
  try {
    statSync(udsPath);
  } catch {
    exists = false;
  }
  if (exists) throw new UsageError(`${flag} ${value}: ${udsPath} already exists; remove it (a stale socket of an earlier VM?) or give another path`);
  return { spec: { guestCid: cid, udsPath }, worker };
}

function workerKinds(): string {
  const flags = Object.keys(ON_WORKER).map((kind) => `--${kind}`);
  return flags.length > 1 ? `${flags.slice(0, -1).join(", ")} and ${flags[flags.length - 1]}` : flags.join("");
}

function summary(planned: Planned[]): string {
  const counts = new Map<string, number>();
  for (const { kind } of planned) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return [...counts].map(([kind, n]) => `--${kind}${n > 1 ? ` x${n}` : ""}`).join(", ");
}
