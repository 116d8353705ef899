/**
 * A PC-compatible machine for third-party kernels: in-kernel (or split) irqchip and PIT, COM1 on
 * IRQ 4, debug-exit, fw_cfg, ACPI tables with a PM timer, CMOS/RTC, a PCI bus, and
 * a Multiboot v1 kernel entered on vCPU 0 while the others wait for INIT/SIPI.
 */
import type { Writable } from "node:stream";
import { Vm, type VmResult } from "./vm.js";
import { ConsoleSink } from "./devices/console-sink.js";
import { VmConfigError } from "./errors.js";
import { Serial16550 } from "./devices/serial-16550.js";
import { type InputSource, SerialInputPump } from "./devices/serial-input.js";
import { FwCfg, FW_CFG_PORT, FW_CFG_PORT_LENGTH } from "./devices/fw-cfg.js";
import {
  AcpiPmTimer, DEFAULT_PM1A_EVENT_PORT, DEFAULT_PM_TIMER_PORT, DEFAULT_SCI_IRQ, IO_APIC_ADDRESS, IO_APIC_ID, LOCAL_APIC_ADDRESS, PM_TIMER_LENGTH,
  writeAcpiTables,
} from "./devices/acpi.js";
import { writeMpTable } from "./devices/mp-table.js";
import { AcpiPm1Registers, PM1_REGISTERS_LENGTH, SLEEP_TYPE_S3, SLEEP_TYPE_S5 } from "./devices/acpi-pm1.js";
import { AcpiSuspend } from "./acpi-suspend.js";
import { PciHost, PCI_ECAM_BASE, PCI_ECAM_BUSES, PCI_IO_WINDOW, PCI_MEMORY_WINDOW } from "./pci/pci-host.js";
import { ECAM_BYTES_PER_BUS } from "./pci/host-bridge.js";
import { PciTestdev } from "./pci/pci-testdev.js";
import { intxGsi, PIRQ_GSIS } from "./pci/pci-bus.js";
import { RESET_CONTROL_PORT, RESET_CONTROL_RESET_VALUE, ResetControl } from "./devices/reset-control.js";
import { CmosRtc, CMOS_PORT, CMOS_PORT_LENGTH } from "./devices/cmos-rtc.js";
import { I8042Reset, I8042_COMMAND_PORT } from "./devices/i8042-reset.js";
import { loadMultiboot, type MultibootModule } from "./boot/multiboot.js";
import { addPcTestdev } from "./test-devices.js";
import { applicationProcessorState, multibootCpuState } from "./boot/multiboot-cpu.js";
import { isLinuxKernel, type Decompression, type LinuxBoot } from "./boot/linux/linux-loader.js";
import { bootLinuxOnPc, type PvmFallbacks } from "./boot/linux/pc-linux-boot.js";
import type { RegionSpec } from "../memory/guest-memory.js";
import type { HypervisorCpuidOptions } from "./boot/hypervisor-cpuid.js";
import type { VirtioDevice } from "./devices/virtio/virtio-device.js";
import { VIRTIO_MMIO_LENGTH, VirtioMmioTransport } from "./devices/virtio/mmio-transport.js";
import { type VirtioWorkerDeviceSpec, VirtioWorkerTransport } from "./devices/virtio/worker-placement.js";

export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;
const MiB = 1024 * 1024;
export const DEFAULT_MEMORY = 128 * MiB;
/** RAM above this goes above 4 GiB, leaving the PCI hole, IOAPIC and LAPIC free. */
const LOW_MEMORY_LIMIT = 3 * 1024 * MiB;
const FOUR_GIB = 4 * 1024 * MiB;
/** ACPI tables sit in the BIOS area just after the RSDP, out of the usable memory map. */
const ACPI_TABLES_ADDRESS = 0xe1000;
/**
 * A virtio device built and run on a device worker of its own (see worker-placement.ts):
 * its queue notifications are ioeventfds and its completions an irqfd, so requests stop
 * neither a vCPU in userspace nor the main thread. `virtioOnWorker` makes one.
 */
export interface VirtioOnWorker extends VirtioWorkerDeviceSpec {
  placement: "worker";
  /** How completions reach the guest (default "auto": a resampling irqfd where the host has one). */
  interrupts?: "auto" | "irqfd" | "main-thread";
}

/** `new (module's export)(options)` on a device worker, e.g. `virtioOnWorker("./virtio-blk.js", "VirtioBlk", { path })`. */
export function virtioOnWorker(module: string | URL, exportName: string, options?: unknown, interrupts?: VirtioOnWorker["interrupts"]): VirtioOnWorker {
  const href = module instanceof URL ? module.href : module.startsWith("./") ? new URL(`./devices/virtio/${module.slice(2)}`, import.meta.url).href : module;
  return { placement: "worker", module: href, export: exportName, options, interrupts };
}

/** The MP floating pointer and configuration table, at the start of the BIOS ROM area. */
const MP_TABLE_ADDRESS = 0xf0000;
/**
 * virtio-mmio transports: QEMU microvm's window and lines (with ACPI: 8 transports on GSIs
 * 16..23), so one guest finds both. GSIs 0..15 are ISA's (SCI 9, PCI INTx on 10/11 through
 * PIRQA-D), 16..23 the IOAPIC's only and otherwise unused here: one unshared line each.
 */
export const VIRTIO_MMIO_BASE = 0xfeb0_0000;
export const VIRTIO_MMIO_FIRST_GSI = 16;
export const VIRTIO_MMIO_SLOTS = 8;
const PIC_MASTER_VECTOR_BASE = 0x08;
const PIC_SLAVE_VECTOR_BASE = 0x70;

export interface PcMachineOptions {
  kernel: Uint8Array;
  /** The kernel's file name: the first word of its command line, as QEMU passes it. */
  kernelName?: string;
  append?: string;
  modules?: MultibootModule[];
  cpus?: number;
  /** RAM in bytes (a multiple of 4 KiB, at least 2 MiB). */
  memory?: number;
  /**
   * The test devices kvm-unit-tests' runner always adds to QEMU: pc-testdev (and
   * pci-testdev on the PCI bus).
   */
  testDevices?: boolean;
  /** Whether the machine has an 8254 PIT (default true; QEMU's `-machine pit=off`). */
  pit?: boolean;
  /**
   * Where the interrupt controllers live: "in-kernel" (default) or "split" (local APICs in
   * the hypervisor; IOAPIC, PIC and PIT emulated here, as QEMU's `-machine kernel-irqchip=split`).
   */
  irqchip?: "in-kernel" | "split";
  /** CPUID feature changes, e.g. `+x2apic,-pcid,-invpcid` (see VmOptions.cpuFeatures). */
  cpuFeatures?: string;
  /**
   * Receives every byte the guest sends on COM1: a callback per byte, or a stream (written
   * in batches, flushed when the machine stops).
   */
  console: ((byte: number) => void) | Pick<Writable, "write">;
  /** The hypervisor CPUID leaves the guest sees (see HypervisorCpuidOptions). */
  hypervisorCpuid?: HypervisorCpuidOptions;
  /** Host input for COM1 (e.g. piped stdin), delivered with flow control and never dropped. */
  input?: InputSource;
  /**
   * virtio devices, each on a virtio-mmio transport at VIRTIO_MMIO_BASE + 0x200 * i with
   * GSI VIRTIO_MMIO_FIRST_GSI + i, announced in the DSDT as LNRO0005 devices and, to
   * multiboot kernels, by `virtio_mmio.device=` on the command line.
   * The machine owns them: one with a `close()` is closed when the machine stops. A device
   * is placed on the main thread, or given as `VirtioOnWorker`, built on a worker of its own.
   */
  virtio?: (VirtioDevice | VirtioOnWorker)[];
  /** Where a virtio device's once-per-reset fault report goes (default: console.warn). */
  virtioLog?: (message: string) => void;
  /** Linux kernels (bzImage or ELF vmlinux, told from the file): the initrd. */
  initrd?: Uint8Array;
  /** Linux kernels: the whole command line (`append` is the multiboot one). */
  cmdline?: string;
  /** Linux bzImage: decompress the payload on the host (default) or run the kernel's decompressor. */
  decompression?: Decompression;
  /** Linux bzImage: folder for decompressed kernels, keyed by content hash; undefined: no cache. */
  kernelCacheDir?: string;
  /**
   * Linux on a PVM host (default true; ignored elsewhere): steer the kernel away from
   * instructions PVM cannot emulate at CPL0 (see boot/linux/pvm-fallbacks.ts).
   */
  pvmFallbacks?: boolean;
}

function pcIrqChip(mode: PcMachineOptions["irqchip"]): "in-kernel" | "split" {
  if (mode === undefined) return "in-kernel";
  if (mode !== "in-kernel" && mode !== "split") throw new VmConfigError(`irqchip must be "in-kernel" or "split" for a PC machine, got ${String(mode)}`);
  return mode;
}

function memoryLayout(size: number): RegionSpec[] {
  if (!Number.isSafeInteger(size) || size < 2 * MiB) {
    throw new VmConfigError(`memory must be at least 2 MiB for a PC machine, got ${size} bytes`);
  }
  if (size <= LOW_MEMORY_LIMIT) return [{ gpa: 0, size }];
  return [
    { gpa: 0, size: LOW_MEMORY_LIMIT },
    { gpa: FOUR_GIB, size: size - LOW_MEMORY_LIMIT },
  ];
}

export class PcMachine {
  readonly vm: Vm;
  readonly serial: Serial16550;
  /** Input waiting for room in COM1's receiver; `push` more into it. */
  readonly input = new SerialInputPump();
  /** The transports of `options.virtio`, in order. */
  readonly virtio: (VirtioMmioTransport | VirtioWorkerTransport)[] = [];
  private readonly virtioDevices: VirtioDevice[];
  private readonly virtioWorkers: VirtioWorkerTransport[] = [];
  /** How a Linux kernel was loaded (undefined for multiboot kernels). */
  readonly linux: LinuxBoot | undefined;
  /** Linux on a PVM host: what was changed so the kernel avoids instructions PVM cannot emulate. */
  readonly pvmFallbacks: PvmFallbacks | undefined;
  /** The PCI bus (i440FX host bridge at 00:00.0); plug devices before `run()`. */
  readonly pci: PciHost;
  /** Batches COM1 output when `options.console` is a stream. */
  private consoleSink: ConsoleSink | undefined;

  constructor(options: PcMachineOptions) {
    const cpus = options.cpus ?? 1;
    const memory = options.memory ?? DEFAULT_MEMORY;
    const virtio = options.virtio ?? [];
    // The machine owns its devices from the start: any failure to build it closes them.
    this.virtioDevices = virtio.filter((d): d is VirtioDevice => !isOnWorker(d));
    let vm: Vm;
    try {
      if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255) {
        throw new VmConfigError(`cpus must be a whole number from 1 to 255 (APIC IDs fit in a byte), got ${cpus}`);
      }
      if (virtio.length > VIRTIO_MMIO_SLOTS) {
        throw new VmConfigError(`a PC machine has ${VIRTIO_MMIO_SLOTS} virtio-mmio slots, ${virtio.length} virtio devices were given`);
      }
      vm = Vm.create({
        memory: memoryLayout(memory), vcpus: cpus, irqchip: pcIrqChip(options.irqchip), pit: options.pit, cpuFeatures: options.cpuFeatures,
        hypervisorCpuid: options.hypervisorCpuid,
      });
    } catch (error) {
      this.closeVirtio();
      throw error;
    }
    try {
      // PC firmware leaves the PICs initialised with the PC/AT vector bases; real-mode
      // guests (kvm-unit-tests' realmode) hook IRQs in the IVT at those vectors.
      vm.setPicVectorBases(PIC_MASTER_VECTOR_BASE, PIC_SLAVE_VECTOR_BASE);
      const acpi = writeAcpiTables(vm.memory, {
        cpus, tablesAddress: ACPI_TABLES_ADDRESS, ecam: { base: PCI_ECAM_BASE, endBus: PCI_ECAM_BUSES - 1 }, pciIrqs: [...new Set(PIRQ_GSIS)],
        resetRegister: { port: RESET_CONTROL_PORT, value: RESET_CONTROL_RESET_VALUE },
        dsdt: {
          pciRoot: { lastBus: PCI_ECAM_BUSES - 1, ioWindow: PCI_IO_WINDOW, memoryWindow: PCI_MEMORY_WINDOW, intxGsi },
          serialPorts: [{ port: COM1_PORT, irq: COM1_IRQ }],
          virtioMmio: virtio.map((_, i) => ({ base: VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_LENGTH, length: VIRTIO_MMIO_LENGTH, gsi: VIRTIO_MMIO_FIRST_GSI + i })),
          reservedMemory: [{ base: PCI_ECAM_BASE, length: PCI_ECAM_BUSES * ECAM_BYTES_PER_BUS }],
          sleepTypes: { s3: SLEEP_TYPE_S3, s5: SLEEP_TYPE_S5 },
        },
      });
      writeMpTable(vm.memory, {
        address: MP_TABLE_ADDRESS, cpus, localApicAddress: LOCAL_APIC_ADDRESS, ioApicId: IO_APIC_ID, ioApicAddress: IO_APIC_ADDRESS,
        levelIsaIrqs: [DEFAULT_SCI_IRQ, ...PIRQ_GSIS], pciIntxGsi: intxGsi,
      });
      const name = options.kernelName ?? "kernel";
      if (isLinuxKernel(options.kernel)) {
        ({ linux: this.linux, pvmFallbacks: this.pvmFallbacks } = bootLinuxOnPc(vm, {
          kernel: options.kernel, fileName: name, initrd: options.initrd, cmdline: options.cmdline, rsdpAddress: acpi.rsdp,
          decompression: options.decompression, kernelCacheDir: options.kernelCacheDir, pvmFallbacks: options.pvmFallbacks,
        }));
      } else {
        this.pvmFallbacks = undefined;
        if (options.initrd !== undefined) throw new VmConfigError(`${name}: initrd given, but the kernel is not a Linux kernel (bzImage or ELF vmlinux)`);
        this.linux = undefined;
        const entry = loadMultiboot(vm.memory, options.kernel, {
          fileName: name,
          cmdline: [name, options.append, ...virtio.map((_, i) => virtioCommandLine(i))].filter((w) => w).join(" "),
          modules: options.modules,
        });
        vm.setCpuState(0, multibootCpuState(vm.memory, entry));
      }
      for (let i = 1; i < cpus; i++) vm.setCpuState(i, applicationProcessorState());

      this.serial = new Serial16550({
        output: this.consoleOutput(options.console), irq: vm.interruptLine(COM1_IRQ),
        onRxDrained: this.input.drained, onRxDiscarded: this.input.discarded,
      });
      this.input.attach(this.serial);
      if (options.input !== undefined) this.input.connect(options.input);
      vm.addDevice({ space: "pio", base: COM1_PORT, length: 8, device: this.serial });
      vm.addDebugExit();
      vm.addDevice({ space: "pio", base: FW_CFG_PORT, length: FW_CFG_PORT_LENGTH, device: new FwCfg({ cpus, ramSize: memory }) });
      vm.addWorkerDevice({
        space: "pio", base: DEFAULT_PM_TIMER_PORT, length: PM_TIMER_LENGTH, shared: AcpiPmTimer.createOrigin(),
        module: new URL("./devices/acpi-pm-timer-worker.js", import.meta.url).href,
      });
      const rtc = new CmosRtc({ ramSize: memory, ramBelow4GiB: Math.min(memory, LOW_MEMORY_LIMIT) });
      // SLP_TYP numbers as on QEMU's PC. S1 and S4 are not emulated: a request for them
      // powers the machine off, saying so.
      const pm1 = new AcpiPm1Registers((type) => {
        if (type === SLEEP_TYPE_S3) suspend.enter();
        else vm.powerOff(type === SLEEP_TYPE_S5 ? undefined : `the guest asked for ACPI sleep type ${type} (S1/S4 are not emulated): powered off`);
      });
      const suspend = new AcpiSuspend({ vm, pm1, rtc, facsAddress: acpi.facs });
      // Sync: the sleep must begin before the writing vCPU runs on.
      vm.addDevice({ space: "pio", base: DEFAULT_PM1A_EVENT_PORT, length: PM1_REGISTERS_LENGTH, sync: true, device: pm1 });
      this.pci = new PciHost(vm, { resetControl: new ResetControl(() => vm.reset("ACPI reset register (0x06 to port 0xcf9)")) });
      vm.addDevice({
        space: "pio", base: I8042_COMMAND_PORT, length: 1, sync: true,
        device: new I8042Reset(() => vm.reset("i8042 reset (0xfe to port 0x64)")),
      });
      vm.addDevice({ space: "pio", base: CMOS_PORT, length: CMOS_PORT_LENGTH, device: rtc });
      virtio.forEach((device, i) => {
        const base = VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_LENGTH;
        const gsi = VIRTIO_MMIO_FIRST_GSI + i;
        if (isOnWorker(device)) {
          const transport = new VirtioWorkerTransport({ vm, base, gsi, device, interrupts: device.interrupts, log: options.virtioLog });
          this.virtioWorkers.push(transport);
          this.virtio.push(transport);
          return;
        }
        const transport = new VirtioMmioTransport({ memory: vm.memory, device, interrupt: vm.interruptLine(gsi), log: options.virtioLog });
        vm.addDevice({ space: "mmio", base, length: VIRTIO_MMIO_LENGTH, device: transport });
        this.virtio.push(transport);
      });
      if (options.testDevices) {
        addPcTestdev(vm);
        this.pci.plug(new PciTestdev());
      }
      this.pci.assignResources();
    } catch (error) {
      this.input.detach();
      void vm.stop().finally(() => this.closeVirtio());
      throw error;
    }
    this.vm = vm;
  }

  async run(): Promise<VmResult> {
    // Devices plugged after construction get their BARs as firmware would give them.
    if (this.pci.needsAssignment && this.vm.state === "created") this.pci.assignResources();
    try {
      // A device that cannot be built on its worker (a missing image) fails the run before it starts.
      await Promise.all(this.virtioWorkers.map((w) => w.ready));
      return await this.vm.run();
    } finally {
      this.input.detach();
      if (this.vm.state === "created") await this.vm.stop();
      this.consoleSink?.flush();
      this.closeVirtio();
    }
  }

  async stop(): Promise<VmResult> {
    try {
      return await this.vm.stop();
    } finally {
      this.consoleSink?.flush();
      this.closeVirtio();
    }
  }

  private consoleOutput(console: PcMachineOptions["console"]): (byte: number) => void {
    if (typeof console === "function") return console;
    this.consoleSink = new ConsoleSink(console);
    return this.consoleSink.push;
  }

  private closeVirtio(): void {
    for (const device of this.virtioDevices) device.close?.();
  }
}

function isOnWorker(device: VirtioDevice | VirtioOnWorker): device is VirtioOnWorker {
  return (device as VirtioOnWorker).placement === "worker";
}

/** Linux's `virtio_mmio.device=<size>@<base>:<irq>` for slot `i`. */
function virtioCommandLine(i: number): string {
  return `virtio_mmio.device=${VIRTIO_MMIO_LENGTH}@0x${(VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_LENGTH).toString(16)}:${VIRTIO_MMIO_FIRST_GSI + i}`;
}
