/*
 * The 8254 PIT as Linux and kvm-unit-tests use it: counter 2 gated by port 0x61 in mode 0
 * (OUT2 rises at terminal count), the counter-latch and read-back commands (status byte:
 * mode, access, OUT), and counter 0 in mode 2 raising IRQ 0 on IOAPIC pin 2 (the MADT's
 * override) periodically. Prints key=value lines; exits with the number of failed checks.
 */
#include "kit.h"
#include "interrupts.h"

#define PIT_CH0 0x40
#define PIT_CH2 0x42
#define PIT_CMD 0x43
#define SPEAKER 0x61
#define OUT2 0x20
#define POLL_LIMIT 200000u
#ifndef IRQ0_PIN
#define IRQ0_PIN 2
#endif
#define IRQ0_VECTOR 0x60

static volatile u32 ticks;
static u32 failures;

void kit_interrupt(void) {
  ticks++;
  lapic_eoi();
}

static void check(const char *name, int ok) {
  serial_puts(name);
  serial_puts(ok ? "=ok\n" : "=FAIL\n");
  if (!ok) failures++;
}

static u16 latch_counter2(void) {
  outb(PIT_CMD, 0x80); /* counter 2, counter latch */
  u8 low = inb(PIT_CH2);
  return (u16)(low | (inb(PIT_CH2) << 8));
}

void main(u32 info) {
  (void)info;
  /* Counter 2, LSB then MSB, mode 0, gate high, speaker off. */
  outb(SPEAKER, (inb(SPEAKER) & ~0x02) | 0x01);
  outb(PIT_CMD, 0xb0);
  outb(PIT_CH2, 0xff);
  outb(PIT_CH2, 0xff);
  u16 first = latch_counter2();
  u16 second = latch_counter2();
  check("counter2-counts-down", first != 0 && second < first);

  outb(PIT_CMD, 0xe8); /* read-back: status only, counter 2 */
  u8 status = inb(PIT_CH2);
  check("readback-status", (status & 0x3f) == 0x30); /* LSB/MSB, mode 0, binary (OUT may be high: emulated CPL0 code is slow) */

  /* A short count: OUT2 rises at terminal count (Linux's pit_calibrate_tsc polls this bit). */
  outb(PIT_CMD, 0xb0);
  outb(PIT_CH2, 100);
  outb(PIT_CH2, 0);
  u32 n = 0;
  while (!(inb(SPEAKER) & OUT2) && n < POLL_LIMIT) n++;
  check("out2-rises-at-terminal-count", (inb(SPEAKER) & OUT2) != 0);
  outb(PIT_CMD, 0xe8);
  status = inb(PIT_CH2);
  check("readback-out-high", (status & 0x80) != 0);

  /* Counter 0, mode 2 at ~1 kHz: IRQ 0 arrives on IOAPIC pin 2. */
  interrupts_init();
  ioapic_route(IRQ0_PIN, IRQ0_VECTOR, 0);
  outb(PIT_CMD, 0x34);
  outb(PIT_CH0, 1193 & 0xff);
  outb(PIT_CH0, 1193 >> 8);
  interrupts_enable();
  for (n = 0; n < POLL_LIMIT * 10 && ticks < 3; n++) pause_cpu();
  interrupts_disable();
  check("irq0-periodic-on-ioapic-pin-2", ticks >= 3);
  outb(PIT_CMD, 0x30); /* counter 0 to mode 0, count unwritten: no more ticks */

  serial_puts("failures=");
  serial_put_decimal(failures);
  serial_puts("\n");
  guest_exit(failures);
}
