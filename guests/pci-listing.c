/*
 * What a guest finds on PCI bus 0 through configuration mechanism #1 (Multiboot kernel for
 * a PC machine: ours, or QEMU's i440FX `pc`). Prints on COM1:
 *   pci SS VVVV:DDDD class CCCCCC rev RR header HH   for each present function 0
 *   pirq RRRRRRRR                                    00:01.0's PIRQRC[A:D] (0x60-0x63) as one dword
 *   pirqb-written-05 RR, pirqb-written-80 RR         PIRQRCB read back after writing 0x05, 0x80
 *   done
 * (hex), restores PIRQRCB and ends with debug-exit status 0.
 */
#include "kit.h"

#define CONFIG_ADDRESS 0xcf8
#define CONFIG_DATA 0xcfc

static u32 config_address(u32 slot, u32 reg) { return 0x80000000u | (slot << 11) | (reg & 0xfc); }

static u32 config_read32(u32 slot, u32 reg) {
  outl(CONFIG_ADDRESS, config_address(slot, reg));
  return inl(CONFIG_DATA);
}

static u8 config_read8(u32 slot, u32 reg) {
  outl(CONFIG_ADDRESS, config_address(slot, reg));
  return inb(CONFIG_DATA + (reg & 3));
}

static void config_write8(u32 slot, u32 reg, u8 value) {
  outl(CONFIG_ADDRESS, config_address(slot, reg));
  outb(CONFIG_DATA + (reg & 3), value);
}

void main(u32 multiboot_info) {
  (void)multiboot_info;
  for (u32 slot = 0; slot < 32; slot++) {
    u32 id = config_read32(slot, 0x00);
    if ((id & 0xffff) == 0xffff) continue;
    u32 class_rev = config_read32(slot, 0x08);
    serial_puts("pci ");
    serial_put_hex(slot, 2);
    serial_putc(' ');
    serial_put_hex(id & 0xffff, 4);
    serial_putc(':');
    serial_put_hex(id >> 16, 4);
    serial_puts(" class ");
    serial_put_hex(class_rev >> 8, 6);
    serial_puts(" rev ");
    serial_put_hex(class_rev & 0xff, 2);
    serial_puts(" header ");
    serial_put_hex(config_read8(slot, 0x0e), 2);
    serial_putc('\n');
  }
  serial_puts("pirq ");
  serial_put_hex(config_read32(1, 0x60), 8);
  serial_putc('\n');
  u8 original = config_read8(1, 0x61);
  config_write8(1, 0x61, 0x05);
  serial_puts("pirqb-written-05 ");
  serial_put_hex(config_read8(1, 0x61), 2);
  serial_putc('\n');
  config_write8(1, 0x61, 0x80);
  serial_puts("pirqb-written-80 ");
  serial_put_hex(config_read8(1, 0x61), 2);
  serial_putc('\n');
  config_write8(1, 0x61, original);
  serial_puts("done\n");
  guest_exit(0);
}
