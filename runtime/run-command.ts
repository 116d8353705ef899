/**
 * `workervisor run --kernel FILE ...`: boots a kernel on the PC machine with the console on
 * stdout. The exit status follows QEMU's isa-debug-exit convention, (status << 1) | 1, so
 * runner scripts written for QEMU work unchanged; a guest that halts or powers off exits 0
 * and a failure of the VM itself exits 2 (even, so it is never mistaken for a guest status).
 */
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { PcMachine, DEFAULT_MEMORY } from "./pc-machine.js";
import { ConsoleSink } from "./devices/console-sink.js";
import { cacheDir } from "./assets/cache-dir.js";
import { isLinuxKernel } from "./boot/linux/linux-loader.js";
import type { VmResult } from "./vm.js";
import { hypervisorCpuidSpecUsage, parseHypervisorCpuidSpec } from "./boot/hypervisor-cpuid-spec.js";
import { HypervisorCpuidError } from "./boot/hypervisor-cpuid.js";
import { ESCAPE_HELP, TerminalConsoleInput } from "./terminal-console.js";
import { UsageError } from "./errors.js";
import { DEVICE_FLAGS_USAGE, planVirtioDevices } from "./virtio-device-flags.js";

const USAGE = `usage: workervisor run --kernel FILE [--append "..."] [--initrd FILE] [--module FILE]... [--cpus N] [--mem SIZE]
                       [--cpu-features LIST] [--no-pit] [--irqchip in-kernel|split] [--test-devices] [--hypervisor-cpuid SPEC]
                       [--disk PATH[,ro][,serial=S][,worker]]... [--net tap=NAME[,mac=MAC]]... [--rng]
                       [--vsock CID,UDS_PATH] [--virtio-console] [--device-worker]
       workervisor run --kernel bzImage|vmlinux [--initrd FILE] [--cmdline "..."] [--decompress host|guest] [--cpus N] [--mem SIZE]

  --kernel FILE   Multiboot v1 kernel (ELF32), e.g. a kvm-unit-tests .flat file, or a Linux
                  x86-64 bzImage or ELF vmlinux (told from the file)
  --append TEXT   multiboot: kernel command line after the file name
  --initrd FILE   Linux: the initramfs; multiboot: the first module, as QEMU's -initrd passes
                  it (kvm-unit-tests' environment file)
  --module FILE   a further Multiboot module (repeatable)
  --cmdline TEXT  Linux: the kernel command line (e.g. "console=ttyS0")
  --decompress W  Linux bzImage: "host" (default; cached under .cache/kernels) or "guest"
  --cpus N        vCPUs (default 1)
  --mem SIZE      RAM: bytes or with K, M, G suffix (default 128M)
  --cpu-features LIST  CPUID changes, e.g. +x2apic,-pcid,-invpcid (QEMU's -cpu flag names);
                  a feature this host cannot give is refused
  --no-pit        a machine without the 8254 PIT (QEMU's -machine pit=off)
  --irqchip MODE  "in-kernel" (default): PIC, IOAPIC, local APICs and PIT in the hypervisor;
                  "split": local APICs there, IOAPIC, PIC and PIT emulated by workervisor
                  (QEMU's -machine kernel-irqchip=split)
  --test-devices  add pc-testdev and pci-testdev, as kvm-unit-tests' x86/run gives QEMU
  --hypervisor-cpuid SPEC
                  the CPUID 0x40000000 range the guest sees (default: KVM's signature and
                  every PV feature the host has).
${hypervisorCpuidSpecUsage("                  ")}
${DEVICE_FLAGS_USAGE}

The console is COM1 on stdin/stdout (hvc0 with --virtio-console). On a terminal, stdin is in
raw mode and Ctrl-A is the escape key, as in QEMU: Ctrl-A x quits, Ctrl-A h lists the keys.
Piped input is delivered as fast as the guest takes it, never dropped.

Exit status: (guest debug-exit status << 1) | 1; 0 when the guest halts, powers off or
reboots (the reason printed) or is quit with Ctrl-A x; 2 when the VM could not start or failed.
`;

export { UsageError };

export function parseSize(text: string): number {
  const match = /^(\d+)([KMG]?)i?B?$/i.exec(text.trim());
  if (!match) throw new UsageError(`--mem: '${text}' is not a size (examples: 134217728, 128M, 1G)`);
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match[2].toUpperCase() as "" | "K" | "M" | "G"];
  return Number(match[1]) * unit;
}

function readInput(path: string, what: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory" : (error as Error).message;
    throw new UsageError(`${what} '${path}': ${reason}`);
  }
}

function hypervisorCpuidOption(spec: string | undefined) {
  if (spec === undefined) return undefined;
  try {
    return parseHypervisorCpuidSpec(spec);
  } catch (error) {
    if (error instanceof HypervisorCpuidError) throw new UsageError(`--hypervisor-cpuid: ${error.message}`);
    throw error;
  }
}

export function exitStatusOf(result: VmResult): number {
  if (result.reason === "debug-exit") return (((result.status ?? 0) << 1) | 1) & 0xff;
  return 0;
}

export async function runCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        kernel: { type: "string" },
        append: { type: "string" },
        initrd: { type: "string" },
        module: { type: "string", multiple: true },
        cmdline: { type: "string" },
        decompress: { type: "string" },
        "test-devices": { type: "boolean" },
        "cpu-features": { type: "string" },
        "no-pit": { type: "boolean" },
        irqchip: { type: "string" },
        cpus: { type: "string" },
        mem: { type: "string" },
        "hypervisor-cpuid": { type: "string" },
        disk: { type: "string", multiple: true },
        net: { type: "string", multiple: true },
        rng: { type: "boolean" },
        vsock: { type: "string", multiple: true },
        "virtio-console": { type: "boolean" },
        "device-worker": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`workervisor run: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  let terminal: TerminalConsoleInput | undefined;
  try {
    if (!values.kernel) throw new UsageError("--kernel FILE is required");
    const cpus = values.cpus === undefined ? 1 : Number(values.cpus);
    if (!Number.isInteger(cpus)) throw new UsageError(`--cpus: '${values.cpus}' is not a whole number`);
    if (values.decompress !== undefined && values.decompress !== "host" && values.decompress !== "guest") {
      throw new UsageError(`--decompress: '${values.decompress}' is neither 'host' nor 'guest'`);
    }
    if (values.irqchip !== undefined && values.irqchip !== "in-kernel" && values.irqchip !== "split") {
      throw new UsageError(`--irqchip: '${values.irqchip}' is neither 'in-kernel' nor 'split'`);
    }
    const virtioPlan = planVirtioDevices(values);
    const sink = new ConsoleSink(process.stdout);
    let machineToQuit: PcMachine | undefined;
    let quit = false;
    terminal = new TerminalConsoleInput(process.stdin.on("error", () => {}), {
      quit: () => {
        quit = true;
        void machineToQuit?.stop();
      },
      help: () => process.stderr.write(`\r\n${ESCAPE_HELP}`),
    });
    const kernel = readInput(values.kernel, "kernel");
    const linux = isLinuxKernel(kernel);
    const initrd = values.initrd === undefined ? undefined : readInput(values.initrd, "initrd");
    const memory = values.mem === undefined ? DEFAULT_MEMORY : parseSize(values.mem);
    const modules = [
      ...(initrd === undefined || linux ? [] : [{ name: values.initrd!, data: initrd }]),
      ...(values.module ?? []).map((path) => ({ name: basename(path), data: readInput(path, "module") })),
    ];
    const hypervisorCpuid = hypervisorCpuidOption(values["hypervisor-cpuid"]);
    // From here the devices are open: the machine owns them (and closes them if it cannot be built).
    const virtio = await virtioPlan.build(() => ({ input: terminal!.readable(), output: process.stdout }));
    const machine = new PcMachine({
      kernel,
      kernelName: values.kernel,
      append: values.append,
      modules,
      testDevices: values["test-devices"] ?? false,
      cpuFeatures: values["cpu-features"],
      pit: !(values["no-pit"] ?? false),
      irqchip: values.irqchip as "in-kernel" | "split" | undefined,
      cpus,
      memory,
      console: sink.push,
      hypervisorCpuid,
      initrd: linux ? initrd : undefined,
      cmdline: values.cmdline,
      decompression: values.decompress as "host" | "guest" | undefined,
      kernelCacheDir: join(cacheDir(), "kernels"),
      virtio,
      // Input waits for room in the UART's receiver instead of overrunning it.
      input: virtioPlan.console ? undefined : terminal,
    });
    machineToQuit = machine;
    for (const note of machine.linux?.notes ?? []) process.stderr.write(`workervisor run: ${note}\n`);
    try {
      const result = await machine.run();
      if (quit) {
        process.stderr.write("\r\nworkervisor run: quit (Ctrl-A x)\n");
        return 0;
      }
      if (result.reason === "reset") process.stderr.write(`workervisor run: the guest rebooted (${result.detail}); ending\n`);
      return exitStatusOf(result);
    } finally {
      sink.flush();
      terminal.close();
      process.stdin.pause();
      process.stdin.unref?.();
    }
  } catch (error) {
    process.stderr.write(`workervisor run: ${(error as Error).message}\n`);
    terminal?.close();
    // A machine that failed to build may have started reading piped stdin: let Node exit.
    process.stdin.pause();
    process.stdin.unref?.();
    return 2;
  }
}
