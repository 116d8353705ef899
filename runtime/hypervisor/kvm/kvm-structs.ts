/** Encoding and decoding of the KVM structs the backend passes by pointer. */
import type { CpuidEntry, MsrEntry, Registers, Segment, SpecialRegisters } from "../x86/cpu-state.js";
import {
  CPUID_ENTRY_SIZE, KVM_REGS_SIZE, KVM_SEGMENT_SIZE, KVM_SREGS_SIZE, MSR_ENTRY_SIZE, REGISTER_NAMES,
  SEGMENT_NAMES, Sregs,
} from "./kvm-abi.js";

export function decodeRegisters(bytes: Uint8Array): Registers {
  const view = new DataView(bytes.buffer, bytes.byteOffset, KVM_REGS_SIZE);
  const regs = {} as Registers;
  REGISTER_NAMES.forEach((name, i) => (regs[name] = view.getBigUint64(i * 8, true)));
  return regs;
}

export function encodeRegisters(regs: Registers): Uint8Array {
  const bytes = new Uint8Array(KVM_REGS_SIZE);
  const view = new DataView(bytes.buffer);
  REGISTER_NAMES.forEach((name, i) => view.setBigUint64(i * 8, BigInt.asUintN(64, regs[name]), true));
  return bytes;
}

function decodeSegment(view: DataView, at: number): Segment {
  return {
    base: view.getBigUint64(at, true),
    limit: view.getUint32(at + 8, true),
    selector: view.getUint16(at + 12, true),
    type: view.getUint8(at + 14),
    present: view.getUint8(at + 15),
    dpl: view.getUint8(at + 16),
    db: view.getUint8(at + 17),
    s: view.getUint8(at + 18),
    l: view.getUint8(at + 19),
    g: view.getUint8(at + 20),
    avl: view.getUint8(at + 21),
    unusable: view.getUint8(at + 22),
  };
}

function encodeSegment(view: DataView, at: number, s: Segment): void {
  view.setBigUint64(at, s.base, true);
  view.setUint32(at + 8, s.limit >>> 0, true);
  view.setUint16(at + 12, s.selector, true);
  const flags = [s.type, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable];
  flags.forEach((v, i) => view.setUint8(at + 14 + i, v));
}

export function decodeSpecialRegisters(bytes: Uint8Array): SpecialRegisters {
  const view = new DataView(bytes.buffer, bytes.byteOffset, KVM_SREGS_SIZE);
  const sregs = {} as SpecialRegisters;
  SEGMENT_NAMES.forEach((name, i) => (sregs[name] = decodeSegment(view, i * KVM_SEGMENT_SIZE)));
  sregs.gdt = { base: view.getBigUint64(Sregs.gdt, true), limit: view.getUint16(Sregs.gdt + 8, true) };
  sregs.idt = { base: view.getBigUint64(Sregs.idt, true), limit: view.getUint16(Sregs.idt + 8, true) };
  sregs.cr0 = view.getBigUint64(Sregs.cr0, true);
  sregs.cr2 = view.getBigUint64(Sregs.cr2, true);
  sregs.cr3 = view.getBigUint64(Sregs.cr3, true);
  sregs.cr4 = view.getBigUint64(Sregs.cr4, true);
  sregs.cr8 = view.getBigUint64(Sregs.cr8, true);
  sregs.efer = view.getBigUint64(Sregs.efer, true);
  sregs.apicBase = view.getBigUint64(Sregs.apic_base, true);
  return sregs;
}

/** Encodes into `bytes` (which holds the current sregs, so the interrupt bitmap survives). */
export function encodeSpecialRegisters(sregs: SpecialRegisters, bytes: Uint8Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, KVM_SREGS_SIZE);
  SEGMENT_NAMES.forEach((name, i) => encodeSegment(view, i * KVM_SEGMENT_SIZE, sregs[name]));
  view.setBigUint64(Sregs.gdt, sregs.gdt.base, true);
  view.setUint16(Sregs.gdt + 8, sregs.gdt.limit, true);
  view.setBigUint64(Sregs.idt, sregs.idt.base, true);
  view.setUint16(Sregs.idt + 8, sregs.idt.limit, true);
  view.setBigUint64(Sregs.cr0, sregs.cr0, true);
  view.setBigUint64(Sregs.cr2, sregs.cr2, true);
  view.setBigUint64(Sregs.cr3, sregs.cr3, true);
  view.setBigUint64(Sregs.cr4, sregs.cr4, true);
  view.setBigUint64(Sregs.cr8, sregs.cr8, true);
  view.setBigUint64(Sregs.efer, sregs.efer, true);
  view.setBigUint64(Sregs.apic_base, sregs.apicBase, true);
}

/** struct kvm_cpuid2 with room for `capacity` entries. */
export function allocateCpuid(capacity: number): Uint8Array {
  const bytes = new Uint8Array(8 + capacity * CPUID_ENTRY_SIZE);
  new DataView(bytes.buffer).setUint32(0, capacity, true);
  return bytes;
}

export function decodeCpuid(bytes: Uint8Array): CpuidEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const count = view.getUint32(0, true);
  const entries: CpuidEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 8 + i * CPUID_ENTRY_SIZE;
    entries.push({
      function: view.getUint32(at, true),
      index: view.getUint32(at + 4, true),
      flags: view.getUint32(at + 8, true),
      eax: view.getUint32(at + 12, true),
      ebx: view.getUint32(at + 16, true),
      ecx: view.getUint32(at + 20, true),
      edx: view.getUint32(at + 24, true),
    });
  }
  return entries;
}

export function encodeCpuid(entries: CpuidEntry[]): Uint8Array {
  const bytes = allocateCpuid(entries.length);
  const view = new DataView(bytes.buffer);
  entries.forEach((e, i) => {
    const at = 8 + i * CPUID_ENTRY_SIZE;
    [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx].forEach((v, j) =>
      view.setUint32(at + j * 4, v >>> 0, true),
    );
  });
  return bytes;
}

export function encodeMsrs(msrs: MsrEntry[]): Uint8Array {
  const bytes = new Uint8Array(8 + msrs.length * MSR_ENTRY_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, msrs.length, true);
  msrs.forEach((m, i) => {
    view.setUint32(8 + i * MSR_ENTRY_SIZE, m.index >>> 0, true);
    view.setBigUint64(8 + i * MSR_ENTRY_SIZE + 8, BigInt.asUintN(64, m.value), true);
  });
  return bytes;
}
