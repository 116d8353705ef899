/*
 * The guest kit for test and benchmark guests: port and MMIO access, the debug-exit port, a
 * small polled COM1 console. Freestanding: no libc. Three builds (test/helpers/flat-guest.ts):
 * a flat 64-bit program, `void main(unsigned long arg)` with `arg` in RDI from the host; a
 * 32-bit Multiboot kernel, `void main(u32 multiboot_info)`; and with KIT_LONG_MODE a
 * Multiboot kernel that switches to 64-bit mode and may run main at CPL3 (long-mode.h).
 */
#ifndef GUEST_KIT_H
#define GUEST_KIT_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef unsigned long uptr; /* an address, as wide as a pointer */

#define DEBUG_EXIT_PORT 0xf4
#define COM1 0x3f8

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* The privilege level the code runs at: CS's low bits. */
static inline u32 kit_cpl(void) {
  u16 cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  return cs & 3u;
}

/* Ends the VM with `status` (the debug-exit device), and never returns. */
static inline __attribute__((noreturn)) void guest_exit(u32 status) {
  u32 cpl = kit_cpl();
  for (;;) {
    outl(DEBUG_EXIT_PORT, status);
    if (cpl != 0) __asm__ volatile("pause"); /* HLT is privileged */
    else __asm__ volatile("hlt");
  }
}

static inline void pause_cpu(void) { __asm__ volatile("pause" ::: "memory"); }

typedef unsigned long long u64x; /* 64 bits in both modes */
static inline u64x rdmsr(u32 index) {
  u32 lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(index));
  return ((u64x)hi << 32) | lo;
}

static void serial_putc(char c) {
  while ((inb(COM1 + 5) & 0x20) == 0) {}
  outb(COM1, (u8)c);
}

static inline void serial_puts(const char *s) {
  while (*s) serial_putc(*s++);
}

static inline void serial_put_decimal(u32 value) {
  char digits[10];
  int n = 0;
  do {
    digits[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) serial_putc(digits[--n]);
}

/* One `key=value` line of a guest's report on COM1. */
static inline void kit_report(const char *key, u32 value) {
  serial_puts(key);
  serial_putc('=');
  serial_put_decimal(value);
  serial_putc('\n');
}

/* "<program>: step <n> failed: <why>" on COM1, then the VM ends with status `step`. */
static inline __attribute__((noreturn)) void kit_fail(const char *program, u32 step, const char *why) {
  serial_puts(program);
  serial_puts(": step ");
  serial_put_decimal(step);
  serial_puts(" failed: ");
  serial_puts(why);
  serial_putc('\n');
  guest_exit(step);
}

static inline void serial_put_hex(u32 value, int digits) {
  for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) serial_putc("0123456789abcdef"[(value >> shift) & 0xf]);
}

#if defined(KIT_LONG_MODE)
/* Entered by long-mode-entry.S and long-mode.c, at CPL0 or (KIT_CPL=3) at CPL3. */
void main(u32 multiboot_info);
#include "long-mode.h"
#elif defined(__x86_64__)
void main(u64 arg);

/* Flat program entry: RDI holds the host's argument, RSP a stack the host chose. */
__attribute__((section(".text.entry"), naked, noreturn)) void _start(void) {
  __asm__ volatile("call main\n\tmov $0xff, %eax\n\tout %eax, $0xf4\n1:\thlt\n\tjmp 1b");
}
#else
/* Multiboot v1 kernel (32-bit protected mode, flat segments): EBX holds the info pointer. */
void main(u32 multiboot_info);

#define MULTIBOOT_MAGIC 0x1badb002u
__attribute__((section(".multiboot"), used, aligned(4)))
static const u32 multiboot_header[3] = {MULTIBOOT_MAGIC, 0, -MULTIBOOT_MAGIC};

__attribute__((used)) static u8 kit_stack[16384] __attribute__((aligned(16)));

__attribute__((section(".text.entry"), naked, noreturn)) void _start(void) {
  __asm__ volatile(
      "lea kit_stack + 16384, %esp\n\t"
      "push %ebx\n\tcall main\n\t"
      "mov $0xff, %eax\n\tout %eax, $0xf4\n1:\thlt\n\tjmp 1b");
}
#endif

/* The ACPI PM timer of the PC machine: 3.579545 MHz, 24 bits. */
#define PM_TIMER_PORT 0x608
#define PM_TIMER_HZ 3579545u
static inline u32 pm_timer(void) { return inl(PM_TIMER_PORT) & 0xffffff; }

#endif
