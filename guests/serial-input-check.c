/*
 * Reads COUNT bytes from COM1 by polling and checks each against the pattern the host
 * sends ((i * 13 + 7) & 0xff). Before reading it waits for the first byte to arrive, lets
 * the host push on for a while and only then enables and clears the FIFO, as a driver
 * that starts late does: input the host sent meanwhile must not be lost.
 * Exit status: 0 if every byte arrived in order, 2 on a wrong byte, 3 if input stopped for
 * 2 s; either failure first prints how many bytes were good on COM1.
 */
#include "kit.h"

#ifndef COUNT
#define COUNT 4096
#endif

#define LSR (COM1 + 5)
#define FCR (COM1 + 2)
#define LSR_DR 1

static int wait_data(void) {
  u32 since = pm_timer();
  while ((inb(LSR) & LSR_DR) == 0) {
    if (((pm_timer() - since) & 0xffffff) > 2 * PM_TIMER_HZ) return 0;
  }
  return 1;
}

static void fail(u32 status, u32 good) {
  serial_puts("serial-input-check: good bytes ");
  serial_put_decimal(good);
  serial_puts(status == 2 ? ", then a wrong byte\n" : ", then nothing for 2 s\n");
  guest_exit(status);
}

void main(u32 info) {
  (void)info;
  if (!wait_data()) fail(3, 0);
  u32 start = pm_timer();
  while (((pm_timer() - start) & 0xffffff) < PM_TIMER_HZ / 20) {}
  outb(FCR, 0x07); /* enable the FIFOs and clear both */
  for (u32 i = 0; i < COUNT; i++) {
    if (!wait_data()) fail(3, i);
    u8 byte = inb(COM1);
    if (byte != (u8)(i * 13 + 7)) fail(2, i);
  }
  guest_exit(0);
}
