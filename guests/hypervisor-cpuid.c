/*
 * What the hypervisor offers, as a guest finds it (Multiboot kernel for the PC machine).
 * Prints on COM1:
 *   cpuid LEAF: EAX EBX ECX EDX   for leaf 1, 0x40000000, 0x40000001, 0x40000010 and the
 *                                 highest hypervisor leaf when 0x40000000 names one above
 *   msr INDEX: ok|gp              after writing 0 to KVM's two kvmclock MSRs: a withheld
 *                                 paravirtual feature answers with #GP
 *   timing TSC-TICKS PM-TICKS     TSC ticks across 100 ms of the ACPI PM timer, so the host
 *                                 can check the TSC rate 0x40000010 claims
 *   done
 * (all numbers hex), then ends with debug-exit status 0.
 */
#include "kit.h"

#define PM_TICKS_100MS 357955u
/* A PM timer sample counts only if reading it took fewer TSC ticks than this. */
#define MAX_SAMPLE_TSC_TICKS 2000000u

struct descriptor_pointer {
  u16 limit;
  u32 base;
} __attribute__((packed));

/* Null, flat 4 GiB code (0x08), flat 4 GiB data (0x10): our own, so #GP finds its CS. */
static const u64x gdt[3] __attribute__((aligned(8))) = {0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull};
static u64x idt[32] __attribute__((aligned(8)));
/* Counted by the #GP handler, which also steps over the 2-byte WRMSR that faulted. */
volatile u32 general_protection_faults;
void general_protection_handler(void);

/*
 * #GP at CPL0 pushes EFLAGS, CS, EIP and an error code. Drop the error code, step EIP over
 * the WRMSR, restore EFLAGS and return without IRET: PVM cannot emulate IRET at CPL0 (a KVM
 * internal error), and a same-privilege return needs no more than this.
 */
__asm__(".text\n"
        ".globl general_protection_handler\n"
        "general_protection_handler:\n\t"
        "addl $4, %esp\n\t"
        "addl $2, (%esp)\n\t"
        "incl general_protection_faults\n\t"
        "pushl 8(%esp)\n\t"
        "popfl\n\t"
        "ret $8\n");

static inline u64x rdtsc(void) {
  u32 lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64x)hi << 32) | lo;
}

static void put_hex(u32 value) {
  for (int shift = 28; shift >= 0; shift -= 4) serial_putc("0123456789abcdef"[(value >> shift) & 0xf]);
}

static void cpuid(u32 leaf, u32 regs[4]) {
  __asm__ volatile("cpuid" : "=a"(regs[0]), "=b"(regs[1]), "=c"(regs[2]), "=d"(regs[3]) : "a"(leaf), "c"(0));
}

static void print_leaf(u32 leaf) {
  u32 regs[4];
  cpuid(leaf, regs);
  serial_puts("cpuid ");
  put_hex(leaf);
  serial_puts(":");
  for (int i = 0; i < 4; i++) {
    serial_putc(' ');
    put_hex(regs[i]);
  }
  serial_putc('\n');
}

static void load_descriptor_tables(void) {
  struct descriptor_pointer gdtr = {sizeof(gdt) - 1, (u32)gdt};
  struct descriptor_pointer idtr = {sizeof(idt) - 1, (u32)idt};
  u32 handler = (u32)general_protection_handler;
  /* A 32-bit interrupt gate: selector 0x08, present, DPL 0, type 0xe. */
  idt[13] = (handler & 0xffff) | (0x08ull << 16) | (0x8e00ull << 32) | ((u64x)(handler >> 16) << 48);
  __asm__ volatile(
      "lgdt %0\n\t"
      "ljmp $0x08, $1f\n"
      "1:\n\t"
      "mov $0x10, %%ax\n\t"
      "mov %%ax, %%ds\n\t"
      "mov %%ax, %%es\n\t"
      "mov %%ax, %%ss\n\t"
      "lidt %1"
      : : "m"(gdtr), "m"(idtr) : "eax", "memory");
}

static void probe_msr(u32 index) {
  u32 faults = general_protection_faults;
  __asm__ volatile("wrmsr" : : "c"(index), "a"(0), "d"(0) : "memory");
  serial_puts("msr ");
  put_hex(index);
  serial_puts(general_protection_faults != faults ? ": gp\n" : ": ok\n");
}

/*
 * One PM timer reading and the TSC at that moment. The read is bracketed by two TSC reads
 * and retried while the bracket is wide (the vCPU was descheduled, the exit was slow), so
 * the error stays far below the 100 ms window whatever the host's load.
 */
static void sample(u32 *pm, u64x *tsc) {
  for (int attempt = 0; attempt < 1000; attempt++) {
    u64x before = rdtsc();
    u32 value = pm_timer();
    u64x after = rdtsc();
    *pm = value;
    *tsc = before + (after - before) / 2;
    if (after - before < MAX_SAMPLE_TSC_TICKS) return;
  }
}

static void measure_tsc(void) {
  u32 pm_start, pm_end;
  u64x tsc_start, tsc_end;
  sample(&pm_start, &tsc_start);
  do sample(&pm_end, &tsc_end);
  while (((pm_end - pm_start) & 0xffffff) < PM_TICKS_100MS);
  serial_puts("timing ");
  put_hex((u32)((tsc_end - tsc_start) >> 32));
  put_hex((u32)(tsc_end - tsc_start));
  serial_putc(' ');
  put_hex((pm_end - pm_start) & 0xffffff);
  serial_putc('\n');
}

void main(u32 multiboot_info) {
  (void)multiboot_info;
  u32 regs[4];
  print_leaf(0x1);
  print_leaf(0x40000000);
  print_leaf(0x40000001);
  print_leaf(0x40000010);
  cpuid(0x40000000, regs);
  if (regs[0] > 0x40000010 && regs[0] <= 0x400000ff) print_leaf(regs[0]);
  load_descriptor_tables();
  probe_msr(0x11);       /* MSR_KVM_SYSTEM_TIME: KVM_FEATURE_CLOCKSOURCE */
  probe_msr(0x4b564d01); /* MSR_KVM_SYSTEM_TIME_NEW: KVM_FEATURE_CLOCKSOURCE2 */
  measure_tsc();
  serial_puts("done\n");
  guest_exit(0);
}
