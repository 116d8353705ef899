/**
 * A PC-compatible machine for third-party kernels: in-kernel irqchip and PIT, COM1 on
 * IRQ 4, debug-exit, fw_cfg, ACPI tables with a PM timer, CMOS/RTC, a PCI bus, and
 * a Multiboot v1 kernel entered on vCPU 0 while the others wait for INIT/SIPI.
 */
import { Vm, type VmResult } from "./vm.js";
import { VmConfigError } from "./errors.js";
import { Serial16550 } from "./devices/serial-16550.js";
import { FwCfg, FW_CFG_PORT, FW_CFG_PORT_LENGTH } from "./devices/fw-cfg.js";
import { DEFAULT_PM1A_EVENT_PORT, DEFAULT_PM_TIMER_PORT, PM_TIMER_LENGTH, writeAcpiTables } from "./devices/acpi.js";
import { AcpiPm1Registers, PM1_REGISTERS_LENGTH } from "./devices/acpi-pm1.js";
import { PciHost, PCI_ECAM_BASE, PCI_ECAM_BUSES } from "./pci/pci-host.js";
import { PciTestdev } from "./pci/pci-testdev.js";
import { PIRQ_GSIS } from "./pci/pci-bus.js";
import { CmosRtc, CMOS_PORT, CMOS_PORT_LENGTH } from "./devices/cmos-rtc.js";
import { loadMultiboot, type MultibootModule } from "./boot/multiboot.js";
import { addPcTestdev } from "./test-devices.js";
import { applicationProcessorState, multibootCpuState } from "./boot/multiboot-cpu.js";
import type { RegionSpec } from "../memory/guest-memory.js";

export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;
const MiB = 1024 * 1024;
export const DEFAULT_MEMORY = 128 * MiB;
/** RAM above this goes above 4 GiB, leaving the PCI hole, IOAPIC and LAPIC free. */
const LOW_MEMORY_LIMIT = 3 * 1024 * MiB;
const FOUR_GIB = 4 * 1024 * MiB;
/** ACPI tables sit in the BIOS area just after the RSDP, out of the usable memory map. */
const ACPI_TABLES_ADDRESS = 0xe1000;
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
  /** CPUID feature changes, e.g. `+x2apic,-pcid,-invpcid` (see VmOptions.cpuFeatures). */
  cpuFeatures?: string;
  /** Receives every byte the guest sends on COM1. */
  console: (byte: number) => void;
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
  /** The PCI bus (i440FX host bridge at 00:00.0); plug devices before `run()`. */
  readonly pci: PciHost;

  constructor(options: PcMachineOptions) {
    const cpus = options.cpus ?? 1;
    const memory = options.memory ?? DEFAULT_MEMORY;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255) {
      throw new VmConfigError(`cpus must be a whole number from 1 to 255 (APIC IDs fit in a byte), got ${cpus}`);
    }
    const vm = Vm.create({ memory: memoryLayout(memory), vcpus: cpus, irqchip: true, pit: options.pit, cpuFeatures: options.cpuFeatures });
    try {
      // PC firmware leaves the PICs initialised with the PC/AT vector bases; real-mode
      // guests (kvm-unit-tests' realmode) hook IRQs in the IVT at those vectors.
      vm.setPicVectorBases(PIC_MASTER_VECTOR_BASE, PIC_SLAVE_VECTOR_BASE);
      writeAcpiTables(vm.memory, { cpus, tablesAddress: ACPI_TABLES_ADDRESS, ecam: { base: PCI_ECAM_BASE, endBus: PCI_ECAM_BUSES - 1 }, pciIrqs: [...new Set(PIRQ_GSIS)] });
      const name = options.kernelName ?? "kernel";
      const entry = loadMultiboot(vm.memory, options.kernel, {
        fileName: name,
        cmdline: options.append ? `${name} ${options.append}` : name,
        modules: options.modules,
      });
      vm.setCpuState(0, multibootCpuState(vm.memory, entry));
      for (let i = 1; i < cpus; i++) vm.setCpuState(i, applicationProcessorState());

      this.serial = new Serial16550({ output: options.console, irq: vm.interruptLine(COM1_IRQ) });
      vm.addDevice({ space: "pio", base: COM1_PORT, length: 8, device: this.serial });
      vm.addDebugExit();
      vm.addDevice({ space: "pio", base: FW_CFG_PORT, length: FW_CFG_PORT_LENGTH, device: new FwCfg({ cpus, ramSize: memory }) });
      vm.addWorkerDevice({
        space: "pio", base: DEFAULT_PM_TIMER_PORT, length: PM_TIMER_LENGTH, shared: new SharedArrayBuffer(0),
        module: new URL("./devices/acpi-pm-timer-worker.js", import.meta.url).href,
      });
      vm.addDevice({
        space: "pio", base: DEFAULT_PM1A_EVENT_PORT, length: PM1_REGISTERS_LENGTH, sync: true,
        device: new AcpiPm1Registers(() => vm.exit(0)),
      });
      this.pci = new PciHost(vm);
      vm.addDevice({
        space: "pio", base: CMOS_PORT, length: CMOS_PORT_LENGTH,
        device: new CmosRtc({ ramSize: memory, ramBelow4GiB: Math.min(memory, LOW_MEMORY_LIMIT) }),
      });
      if (options.testDevices) {
        addPcTestdev(vm);
        this.pci.plug(new PciTestdev());
      }
      this.pci.assignResources();
    } catch (error) {
      void vm.stop();
      throw error;
    }
    this.vm = vm;
  }

  run(): Promise<VmResult> {
    // Devices plugged after construction get their BARs as firmware would give them.
    if (this.pci.needsAssignment && this.vm.state === "created") this.pci.assignResources();
    return this.vm.run();
  }

  stop(): Promise<VmResult> {
    return this.vm.stop();
  }
}
