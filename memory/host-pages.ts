import koffi from "koffi";

const libc = koffi.load("libc.so.6");
const mprotect = libc.func("int mprotect(uintptr_t addr, size_t len, int prot)");
const PROT_NONE = 0;
const PROT_READ_WRITE = 3;

/**
 * Takes a host page away and gives it back (mprotect to none, then read-write). The kernel
 * invalidates every secondary mapping of it on the way, so the hypervisor must fault the
 * page in again on the guest's next access, which is what QEMU's pc-testdev flush port
 * does to test KVM. Returns false when the kernel refused (the mapping is left as it was).
 */
export function cycleHostPageProtection(address: bigint, length: number): boolean {
  if (mprotect(address, length, PROT_NONE) !== 0) return false;
  return mprotect(address, length, PROT_READ_WRITE) === 0;
}
