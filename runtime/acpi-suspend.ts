/**
 * ACPI S3, suspend to RAM, on the PC machine (ACPI 6.5, 16.1.3 and 16.3): the guest writes
 * SLP_TYP = S3 with SLP_EN; every vCPU stops and its context is lost, RAM and devices stay.
 * The machine wakes when an enabled wake event happens: here the RTC alarm with RTC_EN set
 * in PM1_EN (the only wake source a PC machine of ours has). Waking sets WAK_STS and
 * RTC_STS, and firmware's resume path runs: vCPU 0 enters the FACS firmware waking vector
 * in real mode, CS:IP = (vector >> 4):(vector & 0xF) (ACPI 5.2.10); the others wait for
 * INIT/SIPI, as after a reset. A vector of 0 means the OS did not ask to be resumed, so
 * the firmware would boot afresh: the machine resets.
 *
 * With no wake source enabled the machine sleeps until it is stopped.
 */
import type { Vm } from "./vm.js";
import type { CpuState } from "./hypervisor/x86/cpu-state.js";
import { type AcpiPm1Registers, PM1_RTC } from "./devices/acpi-pm1.js";
import type { CmosRtc } from "./devices/cmos-rtc.js";
import { realModeSegment } from "./boot/x86-segments.js";
import { applicationProcessorState } from "./boot/multiboot-cpu.js";

/** FACS offset of Firmware_Waking_Vector (ACPI 5.2.10, table 5.14). */
const FACS_FIRMWARE_WAKING_VECTOR = 12;
/** Real mode reaches the first MiB (plus the HMA, which the vector cannot name). */
const REAL_MODE_LIMIT = 0x10_0000;
/** CR0 after reset: CD, NW, ET (Intel SDM vol. 3, table 10-1). */
const CR0_RESET = 0x6000_0010n;

export interface AcpiSuspendOptions {
  vm: Vm;
  pm1: AcpiPm1Registers;
  rtc: CmosRtc;
  /** Guest-physical address of the FACS. */
  facsAddress: number;
}

/** The state of a CPU entering real-mode code at `vector` the way firmware's resume path does. */
export function wakingVectorCpuState(vector: number): CpuState {
  const cs = realModeSegment(vector >>> 4, true);
  const data = realModeSegment(0, false);
  const ldt = { ...realModeSegment(0, false), type: 0x2, s: 0 };
  const tr = { ...realModeSegment(0, false), type: 0xb, s: 0 };
  return {
    registers: {
      rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
      r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
      rip: BigInt(vector & 0xf), rflags: 2n,
    },
    specialRegisters: {
      cs, ds: data, es: data, fs: data, gs: data, ss: data, ldt, tr,
      gdt: { base: 0n, limit: 0xffff }, idt: { base: 0n, limit: 0x3ff },
      cr0: CR0_RESET, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n,
    },
  };
}

export class AcpiSuspend {
  private wakeTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: AcpiSuspendOptions) {
    options.vm.once("stopped", () => clearTimeout(this.wakeTimer));
  }

  /** SLP_TYP = S3 was written with SLP_EN: from the PM1 control register's handler. */
  enter(): void {
    this.sleep().catch((error: Error) => this.options.vm.reset(`ACPI S3 failed: ${error.message}`));
  }

  private async sleep(): Promise<void> {
    const { vm, pm1, rtc } = this.options;
    await vm.suspendVcpus();
    if (vm.state !== "running") return; // stopped while the vCPUs were leaving
    const wakeIn = (pm1.enabledEvents & PM1_RTC) !== 0 ? rtc.millisecondsToAlarm() : undefined;
    if (wakeIn === undefined) return;
    this.wakeTimer = setTimeout(() => this.wake(PM1_RTC), wakeIn);
  }

  private wake(sources: number): void {
    const { vm, pm1, facsAddress } = this.options;
    this.wakeTimer = undefined;
    if (vm.state !== "running") return;
    pm1.wake(sources);
    const vector = vm.memory.readU32(facsAddress + FACS_FIRMWARE_WAKING_VECTOR);
    if (vector === 0 || vector >= REAL_MODE_LIMIT) {
      vm.reset(vector === 0
        ? "woke from ACPI S3 with no firmware waking vector in the FACS: the firmware boots afresh"
        : `woke from ACPI S3 with a firmware waking vector (0x${vector.toString(16)}) beyond real mode's first MiB`);
      return;
    }
    const states = [wakingVectorCpuState(vector)];
    for (let i = 1; i < vm.vcpuCount; i++) states.push(applicationProcessorState());
    vm.resumeVcpus(states);
  }
}
