/**
 * Hypercalls through MSHV_ROOT_HVCALL (get/set VP registers, install intercepts): the
 * kernel fills in the partition id and passes the call to the hypervisor. Input and output
 * must each fit a hypervisor page, so one anonymous mapping per caller holds both, reused
 * for every call.
 */
import { HypervisorError } from "../hypervisor.js";
import * as libc from "../libc.js";
import { HV_PAGE_SIZE, HV_STATUS_SUCCESS, HvCall, Ioctl, Offset, Size } from "./mshv-abi.js";

const CALL = Offset.mshv_root_hvcall;
const REGISTERS_PER_CALL = Math.floor((HV_PAGE_SIZE - Size.hv_input_set_vp_registers) / Size.hv_register_assoc);

/** Lays out hv_input_get_vp_registers in `input`; returns its size. */
export function encodeGetVpRegisters(input: DataView, vpIndex: number, names: readonly number[]): number {
  if (names.length > REGISTERS_PER_CALL) throw new RangeError(`at most ${REGISTERS_PER_CALL} registers per hypercall`);
  const at = Offset.hv_input_get_vp_registers;
  const size = at.names + 4 * names.length;
  new Uint8Array(input.buffer, input.byteOffset, size).fill(0);
  input.setUint32(at.vp_index, vpIndex, true);
  names.forEach((name, i) => input.setUint32(at.names + 4 * i, name, true));
  return size;
}

/** Lays out hv_input_set_vp_registers; `fill(value, i)` writes element i's 16-byte hv_register_value. Returns the size. */
export function encodeSetVpRegisters(
  input: DataView, vpIndex: number, names: readonly number[], fill: (value: DataView, i: number) => void,
): number {
  if (names.length > REGISTERS_PER_CALL) throw new RangeError(`at most ${REGISTERS_PER_CALL} registers per hypercall`);
  const at = Offset.hv_input_set_vp_registers;
  const size = at.elements + Size.hv_register_assoc * names.length;
  new Uint8Array(input.buffer, input.byteOffset, size).fill(0);
  input.setUint32(at.vp_index, vpIndex, true);
  names.forEach((name, i) => {
    const element = at.elements + Size.hv_register_assoc * i;
    input.setUint32(element + Offset.hv_register_assoc.name, name, true);
    fill(new DataView(input.buffer, input.byteOffset + element + Offset.hv_register_assoc.value, Size.hv_register_value), i);
  });
  return size;
}

/** Lays out hv_input_install_intercept; returns its size. */
export function encodeInstallIntercept(input: DataView, accessMask: number, interceptType: number, parameter: bigint): number {
  const at = Offset.hv_input_install_intercept;
  new Uint8Array(input.buffer, input.byteOffset, Size.hv_input_install_intercept).fill(0);
  input.setUint32(at.access_type, accessMask, true);
  input.setUint32(at.intercept_type, interceptType, true);
  input.setBigUint64(at.intercept_parameter, parameter, true);
  return Size.hv_input_install_intercept;
}

export class HvCaller {
  private readonly pages: unknown;
  private readonly inputAddress: bigint;
  readonly input: DataView;
  readonly output: DataView;
  private readonly call = new Uint8Array(Size.mshv_root_hvcall);
  private readonly callView = new DataView(this.call.buffer);

  /** `fd`: a partition fd or a VP fd (then `vpIndex` names the VP the calls are about). */
  constructor(
    private readonly fd: number,
    private readonly vpIndex: number,
  ) {
    this.pages = libc.mmap(null, 2 * HV_PAGE_SIZE, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0);
    if (libc.isMapFailed(this.pages)) throw new HypervisorError("mmap (hypercall pages)", libc.errno());
    this.inputAddress = libc.addressOf(this.pages);
    const buffer = libc.viewOf(this.pages, 2 * HV_PAGE_SIZE);
    this.input = new DataView(buffer, 0, HV_PAGE_SIZE);
    this.output = new DataView(buffer, HV_PAGE_SIZE, HV_PAGE_SIZE);
  }

  /** Makes one hypercall with `inputSize` bytes of `input`; fails on an errno or a non-success status. */
  invoke(code: number, name: string, inputSize: number, outputSize: number, reps = 0): void {
    const view = this.callView;
    this.call.fill(0);
    view.setUint16(CALL.code, code, true);
    view.setUint16(CALL.reps, reps, true);
    view.setUint16(CALL.in_sz, inputSize, true);
    view.setUint16(CALL.out_sz, outputSize, true);
    view.setBigUint64(CALL.in_ptr, this.inputAddress, true);
    view.setBigUint64(CALL.out_ptr, outputSize > 0 ? this.inputAddress + BigInt(HV_PAGE_SIZE) : 0n, true);
    if (libc.ioctlBuffer(this.fd, Ioctl.ROOT_HVCALL, this.call) < 0) throw new HypervisorError(`MSHV_ROOT_HVCALL(${name})`, libc.errno());
    const status = view.getUint16(CALL.status, true);
    if (status !== HV_STATUS_SUCCESS) {
      throw new HypervisorError(`MSHV_ROOT_HVCALL(${name})`, 5, `the hypervisor answered HV_STATUS 0x${status.toString(16)}`);
    }
  }

  /** Reads VP registers by hv_register_name; value i is the 16 bytes at 16 × i of the returned view. */
  getRegisters(names: readonly number[]): DataView {
    const size = encodeGetVpRegisters(this.input, this.vpIndex, names);
    this.invoke(HvCall.GET_VP_REGISTERS, "HVCALL_GET_VP_REGISTERS", size, Size.hv_register_value * names.length, names.length);
    return this.output;
  }

  /** Writes VP registers: `fill(value, i)` lays out the 16-byte hv_register_value of element i. */
  setRegisters(names: readonly number[], fill: (value: DataView, i: number) => void): void {
    const size = encodeSetVpRegisters(this.input, this.vpIndex, names, fill);
    this.invoke(HvCall.SET_VP_REGISTERS, "HVCALL_SET_VP_REGISTERS", size, 0, names.length);
  }

  /** Installs an intercept for the whole partition (call on a partition fd). */
  installIntercept(accessMask: number, interceptType: number, parameter: bigint, name: string): void {
    const size = encodeInstallIntercept(this.input, accessMask, interceptType, parameter);
    this.invoke(HvCall.INSTALL_INTERCEPT, `HVCALL_INSTALL_INTERCEPT(${name})`, size, 0);
  }

  close(): void {
    libc.munmap(this.pages, 2 * HV_PAGE_SIZE);
  }
}
