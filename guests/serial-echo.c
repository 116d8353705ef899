/*
 * Prints "echo ready", then every byte COM1 receives as two hex digits and a space, for
 * ever: a terminal test sees exactly which bytes reached the guest.
 */
#include "kit.h"

#define LSR (COM1 + 5)
#define LSR_DR 1

void main(u32 info) {
  (void)info;
  static const char hex[] = "0123456789abcdef";
  serial_puts("echo ready\n");
  for (;;) {
    while ((inb(LSR) & LSR_DR) == 0) pause_cpu();
    u8 byte = inb(COM1);
    serial_putc(hex[byte >> 4]);
    serial_putc(hex[byte & 15]);
    serial_putc(' ');
  }
}
