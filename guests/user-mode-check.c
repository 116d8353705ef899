/*
 * The long-mode kit at CPL3 (build with KIT_CPL=3; at CPL0 it reports what a kernel sees):
 * reports on COM1 in `key=value` lines the CPL main runs at, a port read and write
 * (COM1's scratch register), MMIO (the IOAPIC's version register through its index and
 * window, the local APIC's version), a local APIC timer interrupt taken while at this CPL
 * (the CPL the handler ran at and the one it interrupted), a call into CPL0, and what an
 * OUTB to a port outside the kit's I/O bitmap raised (13 for #GP; -1 for nothing).
 * The same kernel runs under workervisor's PC machine and QEMU. Exit 0, or the failed step.
 */
#include "kit.h"
#include "interrupts.h"

#define PROGRAM "user-mode-check"
#define FORBIDDEN_PORT 0x80 /* the POST port: harmless if the bitmap were to let it through */
#define TIMER_VECTOR 0x41
#define LAPIC_VERSION 0x30
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_DIVIDE 0x3e0
#define IOAPIC_VERSION 1
#define WAIT_LIMIT 50000000u

static volatile u32 timer_interrupts, handler_cpl, interrupted_cpl;

void kit_interrupt(void) {
  timer_interrupts++;
  handler_cpl = kit_cpl();
  interrupted_cpl = (u32)(kit_interrupted_cs & 3);
  lapic_eoi();
}

static u64 cpl_of_kernel_call(u64 arg) { return kit_cpl() + arg; }

static void report_signed(const char *key, int value) {
  serial_puts(key);
  serial_puts(value < 0 ? "=-" : "=");
  serial_put_decimal((u32)(value < 0 ? -value : value));
  serial_putc('\n');
}

void main(u32 info) {
  (void)info;
  kit_report("cpl", kit_cpl());

  outb(COM1 + 7, 0x5a);
  kit_report("scratch", inb(COM1 + 7));

  u32 ioapic_version = ioapic_read(IOAPIC_VERSION);
  kit_report("ioapic-redirection-entries", ((ioapic_version >> 16) & 0xff) + 1);
  kit_report("lapic-version-nonzero", (lapic_read(LAPIC_VERSION) & 0xff) != 0);

  interrupts_init();
  lapic_write(LAPIC_TIMER_DIVIDE, 0xb); /* divide by 1 */
  lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR); /* one-shot, unmasked */
  interrupts_enable();
  lapic_write(LAPIC_TIMER_INITIAL, 100000);
  for (u32 n = 0; n < WAIT_LIMIT && timer_interrupts == 0; n++) pause_cpu();
  interrupts_disable();
  if (timer_interrupts == 0) kit_fail(PROGRAM, 1, "no local APIC timer interrupt");
  kit_report("timer-interrupts", timer_interrupts);
  kit_report("handler-cpl", handler_cpl);
  kit_report("interrupted-cpl", interrupted_cpl);

  kit_report("kernel-call-cpl", (u32)kit_kernel_call(cpl_of_kernel_call, 0));

  report_signed("allowed-port-fault", kit_probe_outb(COM1 + 7, 0xa5));
  report_signed("forbidden-port-fault", kit_probe_outb(FORBIDDEN_PORT, 0));
  if (kit_last_fault.vector == 13) kit_report("forbidden-port-error", (u32)kit_last_fault.error);
  kit_report("cpl-after", kit_cpl());
  serial_puts(PROGRAM ": done\n");
  guest_exit(0);
}
