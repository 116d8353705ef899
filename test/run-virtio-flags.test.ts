/**
 * `workervisor run`'s virtio device flags, through the real CLI (`node dist/runtime/cli.js`):
 * bad values end with status 2 and an error naming the flag and what is allowed, before any
 * VM starts; good ones give the guest kit's drivers the devices they look for, with the data
 * checked on the host's side (disk files read back, the console's bytes on stdout, vsock
 * streams, the host kernel's ARP reply through a TAP).
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VIRTIO_MMIO_FIRST_GSI, VIRTIO_MMIO_SLOTS } from "../runtime/pc-machine.js";
import { buildMultibootGuest } from "./helpers/flat-guest.js";
import { fnv1a, imageFolder, makeImage, parseReport, type GuestReport } from "./helpers/virtio-guest.js";
import { censusPattern } from "./helpers/virtio-census.js";
import { A_BYTES, B_BYTES, hostConnect, patternA, patternB, xorServer } from "./helpers/vsock-peer.js";
import { TapBackend } from "../runtime/devices/virtio/net-tap.js";
import { dotted, tapSubnet } from "./helpers/tap-host.js";

const CLI = new URL("../runtime/cli.js", import.meta.url).pathname;
const { dir, cleanup } = imageFolder();
const immutable: string[] = [];
after(() => {
  for (const path of immutable) spawnSync("chattr", ["-i", path]);
  cleanup();
});

interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Starts `workervisor run ARGS` with `input` piped to its stdin; `output()` is its stdout so far. */
function startCli(args: string[], input?: Buffer | string): { output: () => string; done: Promise<CliRun> } {
  const child = spawn(process.execPath, [CLI, "run", ...args], { stdio: ["pipe", "pipe", "pipe"] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
  child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
  child.stdin.on("error", () => {}); // a CLI that refused its flags may exit before reading
  child.stdin.end(input);
  const output = () => Buffer.concat(out).toString("latin1");
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout: output(), stderr: Buffer.concat(err).toString("latin1") }));
  });
  return { output, done };
}

function runCli(args: string[], input?: Buffer | string): Promise<CliRun> {
  return startCli(args, input).done;
}

/** The guest's report from a run that ended by debug-exit: exit status (status << 1) | 1. */
function guestReport(run: CliRun): GuestReport {
  assert.ok(run.status !== null && (run.status & 1) === 1, `the CLI ended with ${run.status}, not by the guest's debug-exit:\n${run.stderr}\n${run.stdout}`);
  return parseReport(run.status >> 1, run.stdout);
}

const census = () => buildMultibootGuest("virtio-census");

test("run --help lists every device flag", async () => {
  const help = await runCli(["--help"]);
  assert.equal(help.status, 0);
  for (const flag of ["--disk PATH[,ro][,serial=S][,worker]", "--net tap=NAME", "--rng", "--vsock CID,UDS_PATH", "--virtio-console", "--device-worker"]) {
    assert.ok(help.stdout.includes(flag), `--help mentions ${flag}`);
  }
  assert.ok(help.stdout.includes(`at most ${VIRTIO_MMIO_SLOTS} in all`));
});

test("bad device flags: status 2, the flag named with what is allowed, and no VM started", async () => {
  const image = makeImage(dir, "ok.img").path;
  const tiny = join(dir, "tiny.img");
  writeFileSync(tiny, Buffer.alloc(100));
  const staleSocket = join(dir, "stale.sock");
  writeFileSync(staleSocket, "");
  const kernel = census();
  const linkTo = (path: string) => {
    const link = join(dir, "link-to-ok.img");
    if (!existsSync(link)) symlinkSync(path, link);
    return link;
  };
  const cases: [string[], RegExp][] = [
    [["--disk", join(dir, "missing.img")], /--disk .*missing\.img: no such file/],
    [["--disk", dir], /--disk .*: is a directory; give a raw image file/],
    [["--disk", tiny], /--disk .*tiny\.img: 100 bytes is less than one 512-byte sector/],
    [["--disk", `${image},rw`], /--disk .*ok\.img: unknown option 'rw' \(allowed: ro, serial=S, worker\)/],
    [["--disk", `${image},serial=${"x".repeat(21)}`], /serial '.*' must be at most 20 printable ASCII characters/],
    [["--disk", image, "--disk", image], /--disk: '.*ok\.img' is given twice/],
    [["--disk", image, "--disk", linkTo(image)], /--disk: '.*link-to-ok\.img' is given twice/],
    [["--net", "switch"], /--net switch: an in-process switch joins the NICs of VMs in one process.*use --net tap=NAME/],
    [["--net", "tap=this-name-is-too-long"], /--net tap=this-name-is-too-long: TAP name .* must be 1 to 15/],
    [["--net", "mac=52:54:00:00:00:01"], /--net mac=.*: say which host TAP interface, e\.g\. --net tap=tap0/],
    [["--net", "tap=t0,mac=01:00:00:00:00:01"], /--net tap=t0,mac=01:00:00:00:00:01: .*multicast/],

    [["--vsock", "2,/tmp/x.sock"], /--vsock 2,\/tmp\/x\.sock: CID '2' must be a whole number from 3 to 4294967294/],
    [["--vsock", "3"], /--vsock 3: give CID,UDS_PATH/],
    [["--vsock", `3,${join(dir, "no-folder", "v.sock")}`], /--vsock .*: the folder .*no-folder does not exist/],
    [["--vsock", `3,${staleSocket}`], /--vsock .*stale\.sock already exists; remove it/],
    [["--vsock", `3,${join(dir, "a.sock")}`, "--vsock", `4,${join(dir, "b.sock")}`], /--vsock is given 2 times; a guest has one vsock device/],
    [
      [...Array.from({ length: VIRTIO_MMIO_SLOTS }, (_, i) => ["--disk", makeImage(dir, `many${i}.img`).path]).flat(), "--rng"],
      new RegExp(`${VIRTIO_MMIO_SLOTS + 1} virtio devices given \\(--disk x${VIRTIO_MMIO_SLOTS}, --rng\\); the machine has ${VIRTIO_MMIO_SLOTS} virtio-mmio transports`),
    ],
  ];
  for (const [flags, expected] of cases) {
    const run = await runCli(["--kernel", kernel, ...flags]);
    assert.equal(run.status, 2, `${flags.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, expected, flags.join(" "));
    assert.equal(run.stdout, "", `${flags.join(" ")}: the guest never ran`);
  }
});

test("a machine that cannot be built (--cpus 0, a missing --module) still releases the devices: the vsock socket is removed and the CLI exits", { timeout: 60_000 }, async () => {
  const udsPath = join(dir, "unbuilt.vsock");
  const run = await runCli(["--kernel", census(), "--cpus", "0", "--vsock", `3,${udsPath}`, "--disk", makeImage(dir, "unbuilt.img").path]);
  assert.equal(run.status, 2);
  assert.match(run.stderr, /cpus must be a whole number from 1 to 255/);
  assert.equal(existsSync(udsPath), false);
  const missingModule = await runCli(["--kernel", census(), "--module", join(dir, "no-module"), "--vsock", `3,${udsPath}`]);
  assert.equal(missingModule.status, 2);
  assert.match(missingModule.stderr, /module '.*no-module': no such file/);
  assert.equal(existsSync(udsPath), false);
});

test("a disk file the guest may not write is refused without ,ro and given read-only with it", { timeout: 120_000 }, async (t) => {
  const { path } = makeImage(dir, "locked.img");
  const before = readFileSync(path);
  // Root writes through file modes; the immutable attribute stops even root.
  if (process.getuid?.() === 0) {
    if (spawnSync("chattr", ["+i", path]).status !== 0) return t.skip("chattr +i is not available here to make a file root cannot write");
    immutable.push(path);
  } else {
    chmodSync(path, 0o444);
  }
  const refused = await runCli(["--kernel", census(), "--disk", path]);
  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /--disk .*locked\.img: the file cannot be opened for writing \((EPERM|EACCES)\); add ,ro to give it to the guest read-only/);
  const report = guestReport(await runCli(["--kernel", census(), "--disk", `${path},ro`]));
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("ro-0"), "1", "the guest saw VIRTIO_BLK_F_RO");
  assert.equal(report.values.get("write-0"), "1", "its write failed with VIRTIO_BLK_S_IOERR");
  assert.deepEqual(readFileSync(path), before);
});

test(`--disk (with serial=, ro, ,worker), --rng and --device-worker: the guest finds them in flag order on GSIs ${VIRTIO_MMIO_FIRST_GSI}.., and the files hold what it wrote`, { timeout: 180_000 }, async () => {
  const a = makeImage(dir, "a.img");
  const b = makeImage(dir, "b,with-comma.img");
  const c = makeImage(dir, "c.img");
  const run = await runCli([
    "--kernel", census(), "--mem", "64M",
    "--disk", `${a.path},serial=first-disk`,
    "--disk", `${b.path.replace(",", ",,")},ro`,
    "--disk", `${c.path},worker,serial=on-a-worker`,
    "--rng", "--device-worker",
  ]);
  const report = guestReport(run);
  assert.equal(report.status, 0, report.console);
  assert.deepEqual(report.all("transport"), [2, 2, 2, 4].map((id, slot) => `${slot},${id},${VIRTIO_MMIO_FIRST_GSI + slot}`));
  assert.equal(report.values.get("serial-0"), "first-disk");
  assert.equal(report.values.get("serial-1"), "workervisor", "the default serial");
  assert.equal(report.values.get("serial-2"), "on-a-worker");
  assert.deepEqual(readFileSync(a.path).subarray(0, 1024), censusPattern(0));
  assert.equal(report.values.get("ro-1"), "1");
  assert.deepEqual(readFileSync(b.path).subarray(0, 1024), b.first, "the read-only disk is untouched");
  assert.deepEqual(readFileSync(c.path).subarray(0, 1024), censusPattern(2));
  assert.match(report.values.get("entropy-3") ?? "", /^[0-9a-f]{64}$/);
  for (const slot of [0, 1, 2]) assert.equal(report.values.get(`interrupts-${slot}`), "3");
});

test(`${VIRTIO_MMIO_SLOTS} devices from flags (disks, rng, vsock, console): every transport announced, found and in flag order`, { timeout: 180_000 }, async () => {
  const disks = Array.from({ length: VIRTIO_MMIO_SLOTS - 3 }, (_, i) => makeImage(dir, `full${i}.img`));
  const run = await runCli([
    "--kernel", census(), "--mem", "64M", ...disks.flatMap((disk) => ["--disk", disk.path]),
    "--virtio-console", "--vsock", `3,${join(dir, "full.vsock")}`, "--rng",
  ]);
  const report = guestReport(run);
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("announced"), String(VIRTIO_MMIO_SLOTS));
  const ids = [...disks.map(() => 2), 4, 19, 3]; // disks, then NICs, rng, vsock, console
  assert.deepEqual(report.all("transport"), ids.map((id, slot) => `${slot},${id},${VIRTIO_MMIO_FIRST_GSI + slot}`));
  disks.forEach((disk, slot) => assert.deepEqual(readFileSync(disk.path).subarray(0, 1024), censusPattern(slot), `disk ${slot}`));
});

test("--virtio-console: piped stdin reaches the guest's hvc0 and its port's output reaches stdout, beside COM1's", { timeout: 120_000 }, async () => {
  const typed = Buffer.from(Array.from({ length: 300 }, (_, i) => 0x20 + (i % 90)));
  const run = await runCli(["--kernel", buildMultibootGuest("virtio-console-check", { ECHO_BYTES: typed.length }), "--virtio-console"], typed);
  const report = guestReport(run);
  assert.equal(report.status, 0, report.console);
  assert.equal(report.values.get("echoed"), String(typed.length), "every byte of stdin reached the guest's port");
  const ready = run.stdout.indexOf("console: ready\n");
  assert.notEqual(ready, -1, run.stdout);
  assert.ok(run.stdout.includes(`console: ready\n${typed.toString("latin1")}console: done\n`), `the echo came back whole on stdout:\n${run.stdout}`);
});

const HAVE_SCRIPT = spawnSync("script", ["--version"]).status === 0;

test("--virtio-console on a terminal: raw keys reach hvc0 (Ctrl-C a byte, Ctrl-A Ctrl-A one Ctrl-A), the echo comes back to the terminal", { timeout: 120_000, skip: HAVE_SCRIPT ? false : "util-linux 'script' is not installed" }, async () => {
  const typed = "ab\x03\rcd\x01\x01";
  const received = Buffer.from("ab\x03\rcd\x01", "latin1");
  const kernel = buildMultibootGuest("virtio-console-check", { ECHO_BYTES: received.length });
  // script runs the command on a new pty; what we write to script's stdin is typed on it.
  const child = spawn("script", ["-qfec", `${process.execPath} ${CLI} run --kernel ${kernel} --virtio-console`, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("latin1")));
  const status = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const deadline = Date.now() + 100_000;
  while (!output.includes("console: ready")) {
    if (Date.now() > deadline || child.exitCode !== null) assert.fail(`no ready line in: ${JSON.stringify(output)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.stdin.write(typed);
  assert.equal(await status, 1, `the guest's debug-exit 0: ${JSON.stringify(output)}`);
  const report = parseReport(0, output.replaceAll("\r\n", "\n"));
  assert.equal(report.values.get("echoed"), String(received.length));
  assert.equal(report.values.get("fnv"), String(fnv1a(received)), "the guest got exactly the keys, Ctrl-A Ctrl-A as one Ctrl-A");
  assert.ok(output.includes(`console: ready\n${received.toString("latin1")}console: done`) || output.includes(`console: ready\r\n${received.toString("latin1")}console: done`),
    `the echo came back on the terminal: ${JSON.stringify(output)}`);
});

for (const placement of ["", ",worker"]) {
  test(`--vsock CID,UDS_PATH${placement}: the guest's connection reaches UDS_PATH_PORT, the host's CONNECT reaches the guest, data checked both ways`, { timeout: 180_000 }, async () => {
    const udsPath = join(dir, `cli${placement.slice(1)}.vsock`);
    const peer = xorServer(udsPath, 5000);
    try {
      const cli = startCli(["--kernel", buildMultibootGuest("virtio-vsock-check", { GUEST_BUF_ALLOC: 1024 }), "--vsock", `42,${udsPath}${placement}`]);
      let ended = false;
      void cli.done.then(() => { ended = true; });
      // The guest waits for the host's connection once part A is done.
      while (!ended && !cli.output().includes("part-a=ok") && !/failed/.test(cli.output())) await new Promise((resolve) => setTimeout(resolve, 20));
      const sent = patternB(B_BYTES);
      const [hostSide, run] = await Promise.all([hostConnect(udsPath, 6000, sent), cli.done]);
      const report = guestReport(run);
      assert.equal(report.status, 0, report.console);
      assert.equal(report.values.get("guest-cid"), "42");
      assert.deepEqual(peer.got(), patternA(A_BYTES));
      assert.equal(report.values.get("a-received"), String(A_BYTES));
      assert.equal(hostSide.okLine, `OK ${report.values.get("b-host-port")}`);
      assert.deepEqual(hostSide.received, sent);
      assert.equal(existsSync(udsPath), false, "the CLI removed its socket when the VM ended");
    } finally {
      peer.server.close();
    }
  });
}

const tapName = `wvc${process.pid % 100000}`;
const subnet = tapSubnet(214);
function tapSkip(): string | false {
  if (!existsSync("/dev/net/tun")) return "/dev/net/tun does not exist on this host: no TAP test";
  if (spawnSync("ip", ["-V"]).status !== 0) return "iproute2's `ip` is not installed";
  if (spawnSync("ip", ["tuntap", "add", "mode", "tap", "name", tapName]).status !== 0) return "cannot create a TAP interface here (needs CAP_NET_ADMIN)";
  spawnSync("ip", ["tuntap", "del", "mode", "tap", "name", tapName]);
  return false;
}

for (const placement of ["", ",worker"]) {
  test(`--net tap=NAME,mac=MAC${placement}: the guest's ARP request reaches the host kernel through the TAP, which answers it at the given MAC`, { skip: tapSkip(), timeout: 120_000 }, async () => {
    const mac = "52:54:00:ab:cd:ef";
    const hostIp = subnet + 1;
    const guestIp = subnet + 2;
    // A persistent TAP, addressed and up before the guest asks; the CLI attaches to it by name.
    execFileSync("ip", ["tuntap", "add", "mode", "tap", "name", tapName]);
    try {
      execFileSync("ip", ["addr", "add", `${dotted(hostIp)}/24`, "dev", tapName]);
      execFileSync("ip", ["link", "set", tapName, "up"]);
      const tapMac = readFileSync(`/sys/class/net/${tapName}/address`, "latin1").trim();
      const run = await runCli([
        "--kernel", buildMultibootGuest("virtio-net-check", { ROLE: 4, HOST_IP: hostIp, GUEST_IP: guestIp }), "--net", `tap=${tapName},mac=${mac}${placement}`,
      ]);
      const report = guestReport(run);
      assert.equal(report.status, 0, report.console);
      assert.equal(report.values.get("arp-reply-mac"), tapMac);
      assert.equal(report.values.get("arp-reply-ip"), String(hostIp));
      assert.equal(report.values.get("mac"), mac, "the NIC has the MAC given");
      assert.equal(report.values.get("arp-reply-to-us"), "1", "the host kernel answered that MAC");
    } finally {
      spawnSync("ip", ["tuntap", "del", "mode", "tap", "name", tapName]);
    }
  });
}

test("--net tap=NAME that cannot be had: held by another process, or not permitted to this user, is refused naming the flag and the cause", { skip: tapSkip(), timeout: 60_000 }, async (t) => {
  const held = new TapBackend(`${tapName}h`);
  try {
    const busy = await runCli(["--kernel", census(), "--net", `tap=${tapName}h`]);
    assert.equal(busy.status, 2);
    assert.match(busy.stderr, new RegExp(`--net tap=${tapName}h: TUNSETIFF for TAP interface ${tapName}h failed: the interface is in use by another process`));
  } finally {
    held.close();
  }
  if (process.getuid?.() !== 0 || spawnSync("runuser", ["--help"]).status !== 0) return t.skip("needs root and runuser to run the CLI as nobody");
  // The flags are checked and the TAP opened before any VM exists, so nobody needs no /dev/kvm to see the error.
  const open = mkdtempSync(join(tmpdir(), "workervisor-nobody-"));
  try {
    chmodSync(open, 0o755);
    const kernel = join(open, "k.elf");
    copyFileSync(census(), kernel);
    chmodSync(kernel, 0o644);
    const denied = spawnSync("runuser", ["-u", "nobody", "--", process.execPath, CLI, "run", "--kernel", kernel, "--net", `tap=${tapName}n`], { encoding: "utf8" });
    assert.equal(denied.status, 2, denied.stderr);
    // /dev/net/tun's mode decides which step refuses: the open, or TUNSETIFF without the capability.
    assert.match(denied.stderr, new RegExp(`--net tap=${tapName}n: (cannot open /dev/net/tun: .*\\(root or CAP_NET_ADMIN\\)|TUNSETIFF .* lacks CAP_NET_ADMIN)`));
  } finally {
    rmSync(open, { recursive: true, force: true });
  }
});
