/** The public API of workervisor. */
export { Vm, type VmOptions, type VmResult, type VmState, type VmStats, type DeviceRegistration } from "./vm.js";
export { GuestFatalError, VcpuWorkerError, VmConfigError, VmStateError } from "./errors.js";
export { DeviceError, type DispatcherOptions } from "./dispatcher.js";
export { HypervisorError, HypervisorUnavailableError, ExitKind, exitKindName } from "./hypervisor/hypervisor.js";
export type { CpuState, Registers, SpecialRegisters, Exit } from "./hypervisor/hypervisor.js";
export { type Device, type AccessSize, type InterruptLine, allOnes } from "./devices/device.js";
export { DebugExit, DEBUG_EXIT_PORT } from "./devices/debug-exit.js";
export { CounterDevice, CounterRegister, COUNTER_LENGTH } from "./devices/counter.js";
export { Serial16550 } from "./devices/serial-16550.js";
export { ConsoleSink } from "./devices/console-sink.js";
export { loadFlatProgram, type FlatProgram, type GuestMode, GuestProgramError, DEFAULT_ENTRY } from "./boot/flat-loader.js";
export { GuestMemory, GuestMemoryError, MemoryLayoutError, PAGE_SIZE } from "../memory/guest-memory.js";
export { warmVcpuPool, destroyVcpuPool } from "./vcpu-pool.js";
export type { WorkerDeviceFactory } from "../workers/vcpu-worker.js";
export { PcMachine, type PcMachineOptions } from "./pc-machine.js";
export { KernelFormatError, detectKernelFormat } from "./boot/multiboot.js";
export { type HypervisorCpuidOptions, type KvmPvFeature, KVM_PV_FEATURES } from "./boot/hypervisor-cpuid.js";
