/*
 * A test kernel that prints more than a runner keeps of its console (Multiboot kernel for
 * the PC machine). Prints on COM1 LINES lines "flood N of LINES", then
 * "SUMMARY: LINES lines", and ends with debug-exit status 0 (kvm-unit-tests' pass).
 */
#include "kit.h"

#ifndef LINES
#define LINES 400
#endif

void main(u32 multiboot_info) {
  (void)multiboot_info;
  for (u32 n = 1; n <= LINES; n++) {
    serial_puts("flood ");
    serial_put_decimal(n);
    serial_puts(" of ");
    serial_put_decimal(LINES);
    serial_putc('\n');
  }
  serial_puts("SUMMARY: ");
  serial_put_decimal(LINES);
  serial_puts(" lines\n");
  guest_exit(0);
}
