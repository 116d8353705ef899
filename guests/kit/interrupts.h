/*
 * Interrupts for guest-kit kernels: an IDT whose every vector runs one C handler, the local
 * APIC software-enabled, the 8259s masked (KVM leaves the BSP's LINT0 in ExtINT mode), and
 * one IOAPIC pin routed to a vector on CPU 0. The 32-bit kit (paging off) builds its IDT
 * here; the long-mode kit has loaded its own (long-mode.c), which works at CPL3 too: this
 * only touches ports and MMIO the kit lets CPL3 use, and interrupts_enable asks CPL0.
 */
#ifndef GUEST_KIT_INTERRUPTS_H
#define GUEST_KIT_INTERRUPTS_H
#include "kit.h"

#define LAPIC_BASE 0xfee00000u
#define LAPIC_SVR 0xf0
#define LAPIC_EOI 0xb0
#define IOAPIC_BASE 0xfec00000u

/* Defined by the kernel: called for every interrupt, with interrupts off. */
void kit_interrupt(void);

#ifndef KIT_LONG_MODE
struct idt_gate { u16 offset_low, selector; u8 zero, type; u16 offset_high; } __attribute__((packed));
static struct idt_gate kit_idt[256] __attribute__((aligned(8)));

/*
 * PVM cannot emulate a 32-bit IRET at CPL0 (KVM internal error), so the handler returns
 * without it: same privilege and code segment, so it only has to restore EFLAGS and EIP.
 * It turns the frame [EIP][CS][EFLAGS] into [EFLAGS][EIP], then POPF and RET.
 */
__attribute__((naked, used)) static void kit_interrupt_entry(void) {
  __asm__ volatile(
      "pushal\n\tcld\n\tcall kit_interrupt\n\tpopal\n\t"
      "pushl %eax\n\t"
      "movl 4(%esp), %eax\n\t"   /* EIP */
      "xchgl %eax, 12(%esp)\n\t" /* EIP over EFLAGS, EFLAGS in eax */
      "movl %eax, 8(%esp)\n\t"   /* EFLAGS over CS */
      "popl %eax\n\t"
      "addl $4, %esp\n\t"
      "popfl\n\tret");
}

#endif

static inline void lapic_write(u32 reg, u32 v) { *(volatile u32 *)(uptr)(LAPIC_BASE + reg) = v; }
static inline u32 lapic_read(u32 reg) { return *(volatile u32 *)(uptr)(LAPIC_BASE + reg); }
static inline void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }

static inline void ioapic_write(u32 reg, u32 v) {
  *(volatile u32 *)(uptr)IOAPIC_BASE = reg;
  *(volatile u32 *)(uptr)(IOAPIC_BASE + 0x10) = v;
}

static inline u32 ioapic_read(u32 reg) {
  *(volatile u32 *)(uptr)IOAPIC_BASE = reg;
  return *(volatile u32 *)(uptr)(IOAPIC_BASE + 0x10);
}

/* Routes IOAPIC pin `gsi` to `vector` on APIC ID 0: fixed, physical, active high, level or edge. */
static inline void ioapic_route(u32 gsi, u8 vector, int level) {
  ioapic_write(0x11 + 2 * gsi, 0);
  ioapic_write(0x10 + 2 * gsi, vector | (level ? 1u << 15 : 0));
}

#ifdef KIT_LONG_MODE
static void interrupts_init(void) {
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  lapic_write(LAPIC_SVR, 0x1ff);
}

static inline void interrupts_enable(void) {
  if (kit_cpl() == 0) __asm__ volatile("sti");
  else kit_syscall(KIT_SYS_INTERRUPTS_ON, 0, 0);
}
static inline void interrupts_disable(void) {
  if (kit_cpl() == 0) __asm__ volatile("cli");
  else kit_syscall(KIT_SYS_INTERRUPTS_OFF, 0, 0);
}
#else
static void interrupts_init(void) {
  u16 cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  u32 entry = (u32)kit_interrupt_entry;
  for (int i = 0; i < 256; i++) {
    kit_idt[i] = (struct idt_gate){(u16)entry, cs, 0, 0x8e, (u16)(entry >> 16)};
  }
  struct { u16 limit; u32 base; } __attribute__((packed)) idtr = {sizeof kit_idt - 1, (u32)kit_idt};
  __asm__ volatile("lidt %0" : : "m"(idtr));
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  lapic_write(LAPIC_SVR, 0x1ff);
}

static inline void interrupts_enable(void) { __asm__ volatile("sti"); }
static inline void interrupts_disable(void) { __asm__ volatile("cli"); }
#endif

#endif
