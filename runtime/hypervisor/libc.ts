/**
 * The libc calls hypervisor backends make (open, ioctl, mmap, eventfd, thread kicks), bound
 * once per thread through koffi. Only backends (`runtime/hypervisor/<backend>/`), the
 * neutral eventfd helpers (`eventfd.ts`) and device backends that need a host ioctl, poll
 * or fallocate (the virtio-net TAP, virtio-blk's discard) import it.
 */
import koffi from "koffi";

const libc = koffi.load("libc.so.6");

export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_ANONYMOUS = 0x20;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

export const open = libc.func("int open(const char *path, int flags)");
export const close = libc.func("int close(int fd)");
/** ioctl with an integer argument (or none). */
export const ioctlValue = libc.func("ioctl", "int", ["int", "unsigned long", "unsigned long"]);
/** ioctl with a pointer to a struct the caller laid out in a Uint8Array. */
export const ioctlBuffer = libc.func("ioctl", "int", ["int", "unsigned long", "void *"]);
export const mmap = libc.func("void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)");
export const munmap = libc.func("int munmap(void *addr, size_t length)");
export const eventfd = libc.func("int eventfd(unsigned int initval, int flags)");
export const read = libc.func("long read(int fd, void *buf, size_t count)");
export const write = libc.func("long write(int fd, const void *buf, size_t count)");
/** poll(2) over `struct pollfd` records laid out by the caller (8 bytes each). */
export const poll = libc.func("int poll(void *fds, unsigned long nfds, int timeout)");
export const POLLIN = 1;
/** fallocate(2) with 64-bit offsets (off_t on x86-64); modes from <linux/falloc.h>. */
export const fallocate = libc.func("int fallocate(int fd, int mode, int64_t offset, int64_t len)");
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;
export const gettid = libc.func("int gettid(void)");
export const getpid = libc.func("int getpid(void)");
export const tgkill = libc.func("int tgkill(int tgid, int tid, int sig)");
const signalInstall = libc.func("void *signal(int signum, void *handler)");
const dlsym = libc.func("void *dlsym(void *handle, const char *symbol)");
const currentSigRtMin = libc.func("int __libc_current_sigrtmin(void)");

export function errno(): number {
  return koffi.errno();
}

export function isMapFailed(pointer: unknown): boolean {
  return pointer === null || koffi.address(pointer) === 0xffff_ffff_ffff_ffffn;
}

// memcpy(address, address, 0) returns its first argument: turns a number back into a pointer.
const pointerAt = libc.func("memcpy", "void *", ["uintptr_t", "uintptr_t", "size_t"]);

export function addressOf(pointer: unknown): bigint {
  return koffi.address(pointer);
}

/** A view of `length` bytes at `address`, which another thread of this process mapped. */
export function viewAt(address: bigint, length: number): ArrayBuffer {
  return koffi.view(pointerAt(address, address, 0), length);
}

export function viewOf(pointer: unknown, length: number): ArrayBuffer {
  return koffi.view(pointer, length);
}

/** The real-time signal used to kick a vCPU thread out of KVM_RUN or MSHV_RUN_VP. */
export const KICK_SIGNAL: number = currentSigRtMin() + 6;

let kickHandlerInstalled = false;

/**
 * A signal with no handler kills the whole process, and an ignored one never interrupts
 * KVM_RUN, so the kick signal needs a real handler that does nothing. A JS callback
 * cannot run in signal context; libc's `abs(int)` is a native function of the right
 * shape with no side effects, so it serves as the no-op handler.
 */
export function installKickHandler(): void {
  if (kickHandlerInstalled) return;
  const noop = dlsym(null, "abs");
  if (noop === null) throw new Error("dlsym(abs) failed: cannot install the vCPU kick signal handler");
  const previous = signalInstall(KICK_SIGNAL, noop);
  // SIG_DFL comes back as null; only SIG_ERR (all ones) is a failure.
  if (previous !== null && isMapFailed(previous)) throw new Error(`signal(${KICK_SIGNAL}) failed: errno ${errno()}`);
  kickHandlerInstalled = true;
}
