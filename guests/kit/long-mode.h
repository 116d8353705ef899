/*
 * The long-mode variant of the guest kit (built with KIT_LONG_MODE by the test helper): a
 * Multiboot v1 kernel that switches itself to 64-bit mode (long-mode-entry.S) and runs main
 * at CPL0, or at CPL3 with KIT_CPL=3, where PVM runs guest code natively instead of
 * emulating it. At CPL3 the kit's TSS lets through the ports in kit_allow_ports (COM1, the
 * debug-exit port, the 8259s and the PM timer by default: PVM ignores RFLAGS.IOPL), and
 * interrupts reach the kit's CPL0 handler on the TSS's RSP0 stack and return with IRETQ.
 */
#ifndef GUEST_KIT_LONG_MODE_H
#define GUEST_KIT_LONG_MODE_H

#ifndef KIT_CPL
#define KIT_CPL 0
#endif

/*
 * The kit's system calls: CPL3 code asks CPL0 for a service with UD2 (RAX = one of these),
 * which the trap handler recognises and steps over. On this PVM host neither INT n (#UD
 * at CPL3) nor SYSCALL (it runs the LSTAR code still at CPL3) reaches CPL0, while an
 * exception does, through the IDT on the TSS's RSP0 stack, and IRETQ takes it back.
 */
#define KIT_SYS_INTERRUPTS_ON 1
#define KIT_SYS_INTERRUPTS_OFF 2
#define KIT_SYS_CALL 3

/* The trap path restores every register but RAX, which carries the result. */
static inline u64 kit_syscall(u64 op, u64 a, u64 b) {
  __asm__ volatile("ud2" : "+a"(op) : "D"(a), "S"(b) : "memory");
  return op;
}

/* Runs fn(arg) at CPL0 (through the system call when at CPL3) and returns its result. */
static inline u64 kit_kernel_call(u64 (*fn)(u64), u64 arg) {
  return kit_cpl() == 0 ? fn(arg) : kit_syscall(KIT_SYS_CALL, (u64)fn, arg);
}

/* Runs fn(arg) at CPL3 on the kit's user stack, interrupts off; never returns (fn's return ends the VM with 0xff). */
__attribute__((noreturn)) void kit_enter_user(void (*fn)(u64), u64 arg);

/* Lets CPL3 code use ports [first, first + count) (the TSS I/O permission bitmap); CPL0 only. */
void kit_allow_ports(u16 first, u16 count);

/* The last exception taken by a probe below: its vector and error code. */
extern volatile struct kit_fault { u64 vector, error; } kit_last_fault;
/* The code segment the latest interrupt arrived from (its low bits: the CPL it interrupted). */
extern volatile u64 kit_interrupted_cs;
/* Where the trap handler resumes after an exception inside a probe (0: none armed). */
extern volatile u64 kit_fault_resume;

/* OUTB that may fault: the vector of the exception it raised (e.g. 13, #GP), or -1 if none. */
static inline int kit_probe_outb(u16 port, u8 value) {
  int vector = -1;
  kit_last_fault.vector = (u64)-1;
  __asm__ volatile(
      "movq $1f, kit_fault_resume(%%rip)\n\t"
      "outb %b0, %w1\n"
      "1:\tmovq $0, kit_fault_resume(%%rip)"
      : : "a"(value), "Nd"(port) : "memory");
  if (kit_last_fault.vector != (u64)-1) vector = (int)kit_last_fault.vector;
  return vector;
}

#endif
