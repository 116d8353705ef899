/**
 * The devices kvm-unit-tests' runner (`x86/run`) always gives QEMU besides isa-debug-exit:
 * `-device pc-testdev` (and `-device pci-testdev`, on the PCI bus). The PC machine adds
 * them with its `testDevices` option and `workervisor run --test-devices`.
 */
import type { Vm } from "./vm.js";
import {
  PC_TESTDEV_BYTE_DATA_PORT, PC_TESTDEV_DATA_PORT, PC_TESTDEV_FLUSH_PORT, PC_TESTDEV_IOMEM_BASE, PC_TESTDEV_IOMEM_LENGTH,
  PC_TESTDEV_IRQ_LINES, PC_TESTDEV_IRQ_PORT, PC_TESTDEV_PORT_LENGTH, PcTestdevDataPort, PcTestdevFlushPage,
  PcTestdevIoMemory, PcTestdevIrqLines,
} from "./devices/pc-testdev.js";

export function addPcTestdev(vm: Vm): void {
  const data = PcTestdevDataPort.createState();
  const dataModule = new URL("./devices/pc-testdev-data-worker.js", import.meta.url).href;
  for (const base of [PC_TESTDEV_DATA_PORT, PC_TESTDEV_BYTE_DATA_PORT]) {
    vm.addWorkerDevice({ space: "pio", base, length: PC_TESTDEV_PORT_LENGTH, module: dataModule, shared: data });
  }
  vm.addWorkerDevice({
    space: "mmio", base: PC_TESTDEV_IOMEM_BASE, length: PC_TESTDEV_IOMEM_LENGTH, shared: PcTestdevIoMemory.createState(),
    module: new URL("./devices/pc-testdev-iomem-worker.js", import.meta.url).href,
  });
  // Both are sync: a test raises a line or flushes a page and checks the effect at once.
  vm.addDevice({
    space: "pio", base: PC_TESTDEV_FLUSH_PORT, length: PC_TESTDEV_PORT_LENGTH, sync: true,
    device: new PcTestdevFlushPage((gpa) => void vm.memory.remapPage(gpa)),
  });
  vm.addDevice({
    space: "pio", base: PC_TESTDEV_IRQ_PORT, length: PC_TESTDEV_IRQ_LINES, sync: true,
    device: new PcTestdevIrqLines((irq) => vm.interruptLine(irq)),
  });
}
