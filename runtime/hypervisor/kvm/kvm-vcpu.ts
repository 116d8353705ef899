/** A KVM vCPU as seen from its worker thread: the run page, exit decode, registers. */
import { type Exit, ExitKind, HypervisorError, type VcpuDescriptor, type VcpuHandle } from "../hypervisor.js";
import { KickTarget } from "../kick-target.js";
import type { CpuidEntry, FpuControl, MsrEntry, Registers, SpecialRegisters } from "../x86/cpu-state.js";
import {
  ExitReason, Fpu, Ioctl, KVM_EXIT_IO_IN, KVM_FPU_SIZE, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_REGS_SIZE, KVM_SREGS_SIZE, Run,
  KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, KVM_VCPU_EVENTS_SIZE, VcpuEvents,
} from "./kvm-abi.js";
import {
  decodeRegisters, decodeSpecialRegisters, encodeCpuid, encodeMsrs, encodeRegisters, encodeSpecialRegisters,
} from "./kvm-structs.js";
import * as libc from "./libc.js";
import type { KvmVcpuAttachment } from "./kvm-vm.js";

const EINTR = 4;
const EAGAIN = 11;
const TWO_POW_32 = 2 ** 32;
const INT3_OPCODE = 0xcc;
const FWAIT_OPCODE = 0x9b;
/** x87 status word: error summary, an unmasked exception is pending (FWAIT would raise #MF). */
const FSW_ES = 0x80;
const BREAKPOINT_VECTOR = 3;

export class KvmVcpu implements VcpuHandle {
  readonly index: number;
  private readonly fd: number;
  private readonly runSize: number;
  private readonly run8: Uint8Array;
  private readonly run32: Uint32Array;
  private readonly runView: DataView;
  private readonly exit: Exit = { kind: ExitKind.Unknown, address: 0, size: 0, count: 0, data: 0, dataHigh: 0, detail: "" };
  /** Where an io-in answer goes in the run page (data_offset of the last exit). */
  private ioDataOffset = 0;
  private stringView: Uint8Array | undefined;
  private readonly kickTarget: KickTarget;
  /** struct kvm_interrupt { u32 irq }, reused. */
  private readonly interruptBytes = new Uint8Array(4);

  /** KVM needs nothing from the run context: the kernel decodes and completes every exit. */
  constructor(descriptor: VcpuDescriptor) {
    const attachment = descriptor.attachment as KvmVcpuAttachment;
    this.index = descriptor.index;
    this.fd = attachment.fd;
    this.runSize = attachment.runSize;
    const buffer = libc.viewAt(attachment.runAddress, this.runSize);
    this.run8 = new Uint8Array(buffer);
    this.run32 = new Uint32Array(buffer);
    this.runView = new DataView(buffer);
    this.kickTarget = new KickTarget(attachment.kickTarget);
    this.kickTarget.attachCallingThread();
  }

  run(): Exit {
    const exit = this.exit;
    if (libc.ioctlValue(this.fd, Ioctl.RUN, 0) < 0) {
      const errno = libc.errno();
      if (errno === EINTR || errno === EAGAIN) {
        exit.kind = ExitKind.Interrupted;
        return exit;
      }
      throw new HypervisorError(`KVM_RUN (vCPU ${this.index})`, errno);
    }
    const run8 = this.run8;
    const run32 = this.run32;
    switch (run32[Run.exit_reason >> 2]) {
      case ExitReason.IO: {
        const size = run8[Run.io_size];
        const offset = run32[Run.io_data_offset >> 2];
        exit.kind = run8[Run.io_direction] === KVM_EXIT_IO_IN ? ExitKind.IoIn : ExitKind.IoOut;
        exit.address = run8[Run.io_port] | (run8[Run.io_port + 1] << 8);
        exit.size = size;
        exit.count = run32[Run.io_count >> 2];
        this.ioDataOffset = offset;
        if (exit.kind === ExitKind.IoOut && exit.count === 1) {
          exit.data = size === 1 ? run8[offset] : size === 2 ? this.runView.getUint16(offset, true) : this.runView.getUint32(offset, true);
        }
        return exit;
      }
      case ExitReason.MMIO: {
        exit.kind = run8[Run.mmio_is_write] ? ExitKind.MmioWrite : ExitKind.MmioRead;
        exit.address = run32[Run.mmio_phys_addr >> 2] + run32[(Run.mmio_phys_addr >> 2) + 1] * TWO_POW_32;
        exit.size = run32[Run.mmio_len >> 2];
        exit.count = 1;
        if (exit.kind === ExitKind.MmioWrite) {
          // Any length 1..8 (KVM splits a page-crossing access into two odd-sized ones):
          // keep exactly `size` bytes, the rest of mmio_data is stale.
          const size = exit.size;
          const low = run32[Run.mmio_data >> 2];
          const high = run32[(Run.mmio_data >> 2) + 1];
          exit.data = size >= 4 ? low : low & ((1 << (size * 8)) - 1);
          exit.dataHigh = size >= 8 ? high : size > 4 ? high & ((1 << ((size - 4) * 8)) - 1) : 0;
        }
        return exit;
      }
      case ExitReason.HLT:
        exit.kind = ExitKind.Hlt;
        return exit;
      case ExitReason.INTR:
        exit.kind = ExitKind.Interrupted;
        return exit;
      case ExitReason.X86_RDMSR:
      case ExitReason.X86_WRMSR:
        exit.kind = run32[Run.exit_reason >> 2] === ExitReason.X86_RDMSR ? ExitKind.MsrRead : ExitKind.MsrWrite;
        exit.address = run32[Run.msr_index >> 2];
        exit.size = 8;
        exit.count = 1;
        exit.data = run32[Run.msr_data >> 2];
        exit.dataHigh = run32[(Run.msr_data >> 2) + 1];
        return exit;
      default:
        return this.decodeRareExit(exit);
    }
  }

  private decodeRareExit(exit: Exit): Exit {
    const reason = this.run32[Run.exit_reason >> 2];
    const view = this.runView;
    switch (reason) {
      case ExitReason.SHUTDOWN:
        exit.kind = ExitKind.Shutdown;
        exit.detail = "triple fault or shutdown";
        break;
      case ExitReason.FAIL_ENTRY:
        exit.kind = ExitKind.FailEntry;
        exit.detail = `hardware_entry_failure_reason 0x${view.getBigUint64(Run.hw_entry_failure_reason, true).toString(16)}`;
        break;
      case ExitReason.INTERNAL_ERROR: {
        exit.kind = ExitKind.InternalError;
        const ndata = Math.min(view.getUint32(Run.internal_ndata, true), 16);
        const data = Array.from({ length: ndata }, (_, i) => "0x" + view.getBigUint64(Run.internal_data + i * 8, true).toString(16));
        exit.detail = `suberror ${view.getUint32(Run.internal_suberror, true)}${ndata ? ` data [${data.join(", ")}]` : ""}`;
        break;
      }
      case ExitReason.SYSTEM_EVENT:
        exit.kind = ExitKind.SystemEvent;
        exit.data = view.getUint32(Run.system_event_type, true);
        exit.detail = `system event type ${exit.data}`;
        break;
      case ExitReason.DEBUG:
        exit.kind = ExitKind.Debug;
        break;
      case ExitReason.IOAPIC_EOI:
        exit.kind = ExitKind.IoapicEoi;
        exit.data = this.run8[Run.eoi_vector];
        break;
      case ExitReason.IRQ_WINDOW_OPEN:
        exit.kind = ExitKind.InterruptWindow;
        break;
      case ExitReason.HYPERCALL:
        exit.kind = ExitKind.Hypercall;
        break;
      default:
        exit.kind = ExitKind.Unknown;
        exit.detail = `KVM exit_reason ${reason}`;
    }
    return exit;
  }

  stringData(): Uint8Array {
    const exit = this.exit;
    const length = exit.size * exit.count;
    // KVM keeps string data at one offset, so the view is reused rather than made per exit.
    const view = this.stringView;
    if (view !== undefined && view.byteOffset === this.ioDataOffset && view.length === length) return view;
    return (this.stringView = this.run8.subarray(this.ioDataOffset, this.ioDataOffset + length));
  }

  completeRead(low: number, high = 0): void {
    const exit = this.exit;
    if (exit.kind === ExitKind.IoIn) {
      const at = this.ioDataOffset;
      if (exit.size === 1) this.run8[at] = low;
      else if (exit.size === 2) this.runView.setUint16(at, low, true);
      else this.runView.setUint32(at, low >>> 0, true);
    } else if (exit.kind === ExitKind.MmioRead) {
      this.runView.setUint32(Run.mmio_data, low >>> 0, true);
      this.runView.setUint32(Run.mmio_data + 4, high >>> 0, true);
    } else if (exit.kind === ExitKind.MsrRead) {
      this.run8[Run.msr_error] = 0;
      this.runView.setUint32(Run.msr_data, low >>> 0, true);
      this.runView.setUint32(Run.msr_data + 4, high >>> 0, true);
    }
  }

  /** The next KVM_RUN finishes the instruction: writes and string io-in need nothing more. */
  complete(): void {}

  failMsr(): void {
    this.run8[Run.msr_error] = 1;
  }

  clearKick(): void {
    Atomics.store(this.run8, Run.immediate_exit, 0);
  }

  private ioctl(request: number, bytes: Uint8Array, operation: string): void {
    if (libc.ioctlBuffer(this.fd, request, bytes) < 0) {
      throw new HypervisorError(`${operation} (vCPU ${this.index})`, libc.errno());
    }
  }

  getRegisters(): Registers {
    const bytes = new Uint8Array(KVM_REGS_SIZE);
    this.ioctl(Ioctl.GET_REGS, bytes, "KVM_GET_REGS");
    return decodeRegisters(bytes);
  }

  setRegisters(registers: Registers): void {
    this.ioctl(Ioctl.SET_REGS, encodeRegisters(registers), "KVM_SET_REGS");
  }

  getSpecialRegisters(): SpecialRegisters {
    const bytes = new Uint8Array(KVM_SREGS_SIZE);
    this.ioctl(Ioctl.GET_SREGS, bytes, "KVM_GET_SREGS");
    return decodeSpecialRegisters(bytes);
  }

  setSpecialRegisters(sregs: SpecialRegisters): void {
    const bytes = new Uint8Array(KVM_SREGS_SIZE);
    this.ioctl(Ioctl.GET_SREGS, bytes, "KVM_GET_SREGS");
    encodeSpecialRegisters(sregs, bytes);
    this.ioctl(Ioctl.SET_SREGS, bytes, "KVM_SET_SREGS");
  }

  setCpuid(entries: CpuidEntry[]): void {
    this.ioctl(Ioctl.SET_CPUID2, encodeCpuid(entries), "KVM_SET_CPUID2");
  }

  setMsrs(msrs: MsrEntry[]): void {
    const set = libc.ioctlBuffer(this.fd, Ioctl.SET_MSRS, encodeMsrs(msrs));
    if (set < 0) throw new HypervisorError(`KVM_SET_MSRS (vCPU ${this.index})`, libc.errno());
    if (set !== msrs.length) {
      const failed = msrs[set];
      throw new Error(`KVM_SET_MSRS (vCPU ${this.index}) stopped at MSR 0x${failed.index.toString(16)}: ${set} of ${msrs.length} set`);
    }
  }

  setFpuControl(fpu: FpuControl): void {
    const bytes = new Uint8Array(KVM_FPU_SIZE);
    this.ioctl(Ioctl.GET_FPU, bytes, "KVM_GET_FPU");
    const view = new DataView(bytes.buffer);
    view.setUint16(Fpu.fcw, fpu.fcw, true);
    view.setUint32(Fpu.mxcsr, fpu.mxcsr, true);
    this.ioctl(Ioctl.SET_FPU, bytes, "KVM_SET_FPU");
  }

  setWaitForStartup(): void {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, KVM_MP_STATE_INIT_RECEIVED, true);
    this.ioctl(Ioctl.SET_MP_STATE, bytes, "KVM_SET_MP_STATE");
  }

  readyForExternalInterrupt(): boolean {
    return this.run8[Run.ready_for_interrupt_injection] !== 0;
  }

  requestInterruptWindow(on: boolean): void {
    this.run8[Run.request_interrupt_window] = on ? 1 : 0;
  }

  /** KVM_INTERRUPT: with the local APIC in the kernel, an ExtINT KVM delivers when LINT0 lets it. */
  injectExternalInterrupt(vector: number): void {
    const bytes = this.interruptBytes;
    bytes[0] = vector & 0xff;
    this.ioctl(Ioctl.INTERRUPT, bytes, "KVM_INTERRUPT");
  }

  /**
   * KVM processes a vCPU's requests (an ioapic-eoi report among them) only on its way into
   * the guest, never for a halted vCPU; PVM, emulating a CPL0 EOI and the HLT after it in
   * one go, can halt with the report still pending. Marking the vCPU runnable sends it in.
   */
  leaveHalt(): boolean {
    const state = new Uint8Array(4);
    const view = new DataView(state.buffer);
    this.ioctl(Ioctl.GET_MP_STATE, state, "KVM_GET_MP_STATE");
    if (view.getUint32(0, true) !== KVM_MP_STATE_HALTED) return false;
    view.setUint32(0, KVM_MP_STATE_RUNNABLE, true);
    this.ioctl(Ioctl.SET_MP_STATE, state, "KVM_SET_MP_STATE");
    return true;
  }

  /**
   * PVM emulates all CPL0 code, but its emulator lacks INT3 and FWAIT; KVM reports the
   * emulation failure with the instruction's bytes. When the last exit is that failure at
   * CPL0 on one of them, do what the instruction does: INT3 steps past itself and raises #BP
   * (a trap, so the saved RIP is the next instruction); FWAIT with no unmasked x87 exception
   * pending (FSW.ES clear) does nothing. Returns false, changing nothing, for anything else.
   */
  completeUnemulatedKernelInstruction(): boolean {
    const view = this.runView;
    if (view.getUint32(Run.exit_reason, true) !== ExitReason.INTERNAL_ERROR) return false;
    if (view.getUint32(Run.internal_suberror, true) !== KVM_INTERNAL_ERROR_EMULATION) return false;
    const flags = view.getBigUint64(Run.emulation_failure_flags, true);
    if (!(flags & BigInt(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))) return false;
    if (this.run8[Run.emulation_failure_insn_size] < 1) return false;
    const opcode = this.run8[Run.emulation_failure_insn_bytes];
    if (opcode !== INT3_OPCODE && opcode !== FWAIT_OPCODE) return false;
    if (this.getSpecialRegisters().cs.dpl !== 0) return false;
    if (opcode === FWAIT_OPCODE) {
      const fpu = new Uint8Array(KVM_FPU_SIZE);
      this.ioctl(Ioctl.GET_FPU, fpu, "KVM_GET_FPU");
      if (new DataView(fpu.buffer).getUint16(Fpu.fsw, true) & FSW_ES) return false;
      const registers = this.getRegisters();
      this.setRegisters({ ...registers, rip: registers.rip + 1n });
      return true;
    }
    const events = new Uint8Array(KVM_VCPU_EVENTS_SIZE);
    this.ioctl(Ioctl.GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS");
    if (events[VcpuEvents.exception_injected] || events[VcpuEvents.exception_pending]) return false;
    const registers = this.getRegisters();
    this.setRegisters({ ...registers, rip: registers.rip + 1n });
    events[VcpuEvents.exception_injected] = 1;
    events[VcpuEvents.exception_nr] = BREAKPOINT_VECTOR;
    events[VcpuEvents.exception_has_error_code] = 0;
    new DataView(events.buffer).setUint32(VcpuEvents.exception_error_code, 0, true);
    this.ioctl(Ioctl.SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS");
    return true;
  }

  /** The run page belongs to the VM, which unmaps it after every worker has ended. */
  close(): void {
    this.kickTarget.detach();
  }
}
