/**
 * An MSHV virtual processor as seen from its worker thread: MSHV_RUN_VP into a 256-byte
 * message buffer, decode into the neutral Exit, completion in the VP register page, CPUID
 * answered here from the vCPU's table, other registers through hypercalls.
 */
import type { GuestMemory } from "../../../memory/guest-memory.js";
import {
  type Exit, ExitKind, HypervisorError, type VcpuDescriptor, type VcpuHandle, type VcpuRunContext,
} from "../hypervisor.js";
import { KickTarget } from "../kick-target.js";
import * as libc from "../libc.js";
import type { CpuidEntry, FpuControl, MsrEntry, Registers, Segment, SpecialRegisters } from "../x86/cpu-state.js";
import {
  HV_REGISTER_PENDING_INTERRUPTION, Ioctl, MSR_REGISTER_NAMES, Offset, PendingInterruption, RegisterName,
  Size, SpecialRegisterName,
} from "./mshv-abi.js";
import { HvCaller } from "./mshv-hvcall.js";
import type { MshvVpAttachment } from "./mshv-partition.js";
import { readSegment, readTable, writeSegment, writeTable } from "./mshv-registers.js";
import {
  answerCpuid, Completion, completeIntercept, Decoded, InterceptDecoder, newPendingCompletion, RegisterPage, takeFollowUp,
} from "./mshv-intercepts.js";

const EINTR = 4;
const EOPNOTSUPP = 95;
const GP_VECTOR = 13n;
const GENERAL = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"] as const;
const SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
const CONTROL = ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apicBase"] as const;

export class MshvVp implements VcpuHandle {
  readonly index: number;
  private readonly fd: number;
  private readonly messageBytes = new Uint8Array(Size.mshv_run_vp);
  private readonly registers: RegisterPage;
  private readonly decoder: InterceptDecoder;
  private readonly pending = newPendingCompletion();
  private readonly exit: Exit = { kind: ExitKind.Unknown, address: 0, size: 0, count: 0, data: 0, dataHigh: 0, detail: "" };
  private readonly hv: HvCaller;
  private cpuid: CpuidEntry[] = [];
  private readonly kickTarget: KickTarget;
  /** Guest RAM: string I/O moves its bytes through it, after a walk of the guest's page tables. */
  private readonly memory: GuestMemory;

  constructor(descriptor: VcpuDescriptor, context: VcpuRunContext) {
    const attachment = descriptor.attachment as MshvVpAttachment;
    this.index = descriptor.index;
    this.fd = attachment.fd;
    this.memory = context.memory;
    this.registers = new RegisterPage(new DataView(libc.viewAt(attachment.registerPageAddress, attachment.registerPageSize)));
    this.decoder = new InterceptDecoder(new DataView(this.messageBytes.buffer), this.registers, this.memory);
    this.hv = new HvCaller(this.fd, this.index);
    this.kickTarget = new KickTarget(attachment.kickTarget);
    this.kickTarget.attachCallingThread();
  }

  run(): Exit {
    const pending = this.pending;
    // The second access of a read-modify-write (or a failure found completing the first) is
    // an exit of its own, without re-entering the guest.
    if (takeFollowUp(this.exit, pending)) return this.exit;
    if (pending.action !== Completion.NONE) {
      // The hypervisor finishes nothing for us: entering with an exit unanswered would re-run
      // or skip the instruction. The vCPU loop completes every exit; this is its bug.
      throw new Error(`VP ${this.index}: run() before the last exit was completed (completeRead, complete or failMsr)`);
    }
    for (;;) {
      if (libc.ioctlBuffer(this.fd, Ioctl.RUN_VP, this.messageBytes) < 0) {
        const errno = libc.errno();
        if (errno === EINTR) {
          this.exit.kind = ExitKind.Interrupted;
          return this.exit;
        }
        throw new HypervisorError(`MSHV_RUN_VP (VP ${this.index})`, errno);
      }
      if (this.registers.view.getUint8(Offset.hv_vp_register_page.isvalid) === 0) {
        throw new HypervisorError(`MSHV_RUN_VP (VP ${this.index})`, EOPNOTSUPP,
          "the VP register page is not valid after an intercept: this hypervisor does not keep it, and the backend needs it");
      }
      const decoded = this.decoder.decode(this.exit, pending);
      if (decoded === Decoded.CPUID) {
        answerCpuid(pending, this.cpuid, this.registers);
        continue;
      }
      if (decoded === Decoded.HANDLED) continue;
      return this.exit;
    }
  }

  /** The guest RAM the string I/O exit's elements are in (zero-copy: an io-in's bytes land in the guest). */
  stringData(): Uint8Array {
    const data = this.pending.stringData;
    if (data === undefined) throw new Error(`VP ${this.index}: stringData() outside a string I/O exit`);
    return data;
  }

  completeRead(low: number, high = 0): void {
    completeIntercept(this.pending, this.registers, low, high);
  }

  /** A handled write: RIP steps past the instruction. */
  complete(): void {
    completeIntercept(this.pending, this.registers, 0, 0);
  }

  /** Injects #GP(0) and leaves RIP on the RDMSR/WRMSR. */
  failMsr(): void {
    this.pending.action = Completion.NONE;
    const value = PendingInterruption.PENDING | PendingInterruption.TYPE_EXCEPTION | PendingInterruption.DELIVER_ERROR_CODE |
      (GP_VECTOR << PendingInterruption.VECTOR_SHIFT);
    this.hv.setRegisters([HV_REGISTER_PENDING_INTERRUPTION], (v) => v.setBigUint64(0, value, true));
  }

  clearKick(): void {
    // Nothing latches: MSHV_RUN_VP has no immediate_exit flag.
  }

  getRegisters(): Registers {
    const names = [...GENERAL.map((n) => RegisterName[n]), RegisterName.rip, RegisterName.rflags];
    const out = this.hv.getRegisters(names);
    const value = (i: number) => out.getBigUint64(Size.hv_register_value * i, true);
    const registers = Object.fromEntries(GENERAL.map((name, i) => [name, value(i)])) as Record<(typeof GENERAL)[number], bigint>;
    return { ...registers, rip: value(16), rflags: value(17) };
  }

  setRegisters(registers: Registers): void {
    const names = [...GENERAL.map((n) => RegisterName[n]), RegisterName.rip, RegisterName.rflags];
    const values = [...GENERAL.map((n) => registers[n]), registers.rip, registers.rflags];
    this.hv.setRegisters(names, (v, i) => v.setBigUint64(0, values[i], true));
    // What we wrote supersedes the page; the page must not write stale values back.
    this.registers.view.setUint32(Offset.hv_vp_register_page.dirty, 0, true);
  }

  getSpecialRegisters(): SpecialRegisters {
    const names = [...SEGMENTS.map((s) => SpecialRegisterName[s]), SpecialRegisterName.gdt, SpecialRegisterName.idt,
      ...CONTROL.map((c) => SpecialRegisterName[c])];
    const out = this.hv.getRegisters(names);
    const at = (i: number) => Size.hv_register_value * i;
    const table = (i: number) => readTable(out, at(i));
    const segments = Object.fromEntries(SEGMENTS.map((s, i) => [s, readSegment(out, at(i))])) as Record<(typeof SEGMENTS)[number], Segment>;
    const control = Object.fromEntries(CONTROL.map((c, i) => [c, out.getBigUint64(at(10 + i), true)])) as Record<(typeof CONTROL)[number], bigint>;
    return { ...segments, gdt: table(8), idt: table(9), ...control };
  }

  setSpecialRegisters(sregs: SpecialRegisters): void {
    const names = [...SEGMENTS.map((s) => SpecialRegisterName[s]), SpecialRegisterName.gdt, SpecialRegisterName.idt,
      ...CONTROL.map((c) => SpecialRegisterName[c])];
    this.hv.setRegisters(names, (v, i) => {
      if (i < SEGMENTS.length) writeSegment(v, 0, sregs[SEGMENTS[i]]);
      else if (i < SEGMENTS.length + 2) writeTable(v, 0, i === SEGMENTS.length ? sregs.gdt : sregs.idt);
      else v.setBigUint64(0, sregs[CONTROL[i - SEGMENTS.length - 2]], true);
    });
  }

  /**
   * Kept for CPUID intercepts; leaves not in the table get the hypervisor's own answer.
   * The hypervisor range (0x40000000-0x400000ff) is always Microsoft Hypervisor's: a KVM
   * signature answered here would promise paravirtual MSRs that do not exist.
   */
  setCpuid(entries: CpuidEntry[]): void {
    this.cpuid = entries.filter((e) => e.function < 0x4000_0000 || e.function > 0x4000_00ff).map((e) => ({ ...e }));
  }

  setMsrs(msrs: MsrEntry[]): void {
    const known = msrs.filter((m) => MSR_REGISTER_NAMES.has(m.index));
    // IA32_MISC_ENABLE (fast strings) is the hypervisor's to set; other unknown MSRs are an error.
    const unknown = msrs.filter((m) => !MSR_REGISTER_NAMES.has(m.index) && m.index !== 0x1a0);
    if (unknown.length > 0) {
      throw new HypervisorError("setMsrs (mshv)", EOPNOTSUPP,
        `MSRs ${unknown.map((m) => `0x${m.index.toString(16)}`).join(", ")} are not VP registers the hypervisor lets the root set`);
    }
    if (known.length > 0) this.hv.setRegisters(known.map((m) => MSR_REGISTER_NAMES.get(m.index)!), (v, i) => v.setBigUint64(0, known[i].value, true));
  }

  /** The hypervisor resets x87 and SSE control to the architectural values this API also uses by default. */
  setFpuControl(fpu: FpuControl): void {
    if (fpu.fcw !== 0x37f || fpu.mxcsr !== 0x1f80) {
      throw new HypervisorError("setFpuControl (mshv)", EOPNOTSUPP, "only the reset values FCW 0x37f and MXCSR 0x1f80 are supported");
    }
  }

  /** The hypervisor's local APIC holds application processors until INIT/SIPI. */
  setWaitForStartup(): void {}

  close(): void {
    this.kickTarget.detach();
    this.hv.close();
  }
}
