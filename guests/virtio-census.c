/*
 * Finds every virtio-mmio transport the machine has and checks each one is where the
 * firmware says and raises the line it says: the multiboot command line's
 * `virtio_mmio.device=<size>@<base>:<gsi>` entries against a scan of the microvm window
 * for the magic value. For each transport it reports `transport=<slot>,<device id>,<gsi>`;
 * block and entropy devices are then driven with that GSI's IOAPIC pin routed (level) and
 * every request's completion taken by the interrupt handler, so a line wired to the wrong
 * pin shows as a missing interrupt.
 *   block: GET_ID (serial-<slot>=), a write of sectors 0-1 with a pattern of the slot's own
 *     (write-<slot>= the status), a read back (readback-<slot>= 1 if it is the pattern);
 *   entropy: 32 bytes (entropy-<slot>= in hex).
 * Exit status 0 when every step worked; otherwise the number of the failed step.
 */
#include "kit.h"
#include "virtio-mmio.h"
#include "interrupts.h"

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_ENTROPY 4
#define BLK_F_RO (1u << 5)
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_GET_ID 8
#define VIRTIO_VECTOR 0x40
#define MAX_ANNOUNCED 32
#define MULTIBOOT_INFO_CMDLINE (1u << 2)
#define IOAPIC_MASKED (1u << 16)

static u8 ring[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 data[1024] __attribute__((aligned(16)));
static u8 readback[1024] __attribute__((aligned(16)));
static u8 entropy[32];
static u8 status_byte;
static struct { u32 type; u32 reserved; u64x sector; } header;
static struct virtio_dev dev;
static volatile u32 used_interrupts, other_interrupts;

static struct { u32 base, size, gsi, found; } announced[MAX_ANNOUNCED];
static u32 announced_count;

static __attribute__((noreturn)) void fail(u32 step, const char *why) { kit_fail("virtio-census", step, why); }

static void put_slot_number(const char *key, u32 slot, u32 value) {
  serial_puts(key);
  serial_putc('-');
  serial_put_decimal(slot);
  serial_putc('=');
  serial_put_decimal(value);
  serial_putc('\n');
}

static int starts_with(const char *s, const char *prefix) {
  while (*prefix)
    if (*s++ != *prefix++) return 0;
  return 1;
}

/* A decimal or 0x-prefixed hex number at *p; advances *p past it. */
static u32 parse_number(const char **p) {
  const char *s = *p;
  u32 v = 0;
  if (s[0] == '0' && s[1] == 'x') {
    for (s += 2;; s++) {
      u32 d = *s >= '0' && *s <= '9' ? (u32)(*s - '0') : *s >= 'a' && *s <= 'f' ? (u32)(*s - 'a' + 10) : 99;
      if (d == 99) break;
      v = v * 16 + d;
    }
  } else {
    for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (u32)(*s - '0');
  }
  *p = s;
  return v;
}

/* Collects the `virtio_mmio.device=` words of the multiboot command line. */
static void read_command_line(u32 multiboot_info) {
  const u32 *info = (const u32 *)multiboot_info;
  if (!(info[0] & MULTIBOOT_INFO_CMDLINE)) fail(1, "no command line in the multiboot information");
  for (const char *p = (const char *)info[4]; *p; p++) {
    if (!starts_with(p, "virtio_mmio.device=")) continue;
    p += 19;
    if (announced_count == MAX_ANNOUNCED) fail(1, "too many virtio_mmio.device= entries");
    announced[announced_count].size = parse_number(&p);
    if (*p++ != '@') fail(1, "virtio_mmio.device= without @base");
    announced[announced_count].base = parse_number(&p);
    if (*p++ != ':') fail(1, "virtio_mmio.device= without :irq");
    announced[announced_count].gsi = parse_number(&p);
    announced_count++;
    p--;
  }
}

void kit_interrupt(void) {
  u32 isr = virtio_interrupt_ack(&dev);
  if (isr & 1) used_interrupts++;
  else if (!isr) other_interrupts++;
  lapic_eoi();
}

/* Offers the chain at `head` and waits for the interrupt its completion raises: the used length. */
static u32 submit_and_wait_interrupt(u16 head) {
  u32 before = used_interrupts;
  vq_offer_notify(&dev, head);
  for (u32 n = 0; n < POLL_LIMIT && used_interrupts == before; n++) pause_cpu();
  if (used_interrupts == before) fail(5, "no interrupt on the announced GSI for a completed request");
  if (dev.used->idx == dev.last_used) fail(6, "an interrupt but no used buffer");
  barrier();
  u32 len = dev.used->ring[dev.last_used % VQ_SIZE].len;
  dev.last_used++;
  return len;
}

static int blk_request(u32 type, u32 sector, void *buf, u32 len, u16 data_flags) {
  header = (typeof(header)){type, 0, sector};
  status_byte = 0xff;
  vq_set(&dev, 0, &header, sizeof header, DESC_F_NEXT, 1);
  vq_set(&dev, 1, buf, len, (u16)(data_flags | DESC_F_NEXT), 2);
  vq_set(&dev, 2, &status_byte, 1, DESC_F_WRITE, 0);
  submit_and_wait_interrupt(0);
  return status_byte;
}

static void check_block(u32 slot) {
  char id[21];
  kit_memset(id, 0, sizeof id);
  if (blk_request(BLK_T_GET_ID, 0, id, 20, DESC_F_WRITE) != 0) fail(7, "GET_ID");
  serial_puts("serial-");
  serial_put_decimal(slot);
  serial_putc('=');
  serial_puts(id);
  serial_putc('\n');
  put_slot_number("ro", slot, !!(dev.features & BLK_F_RO));
  for (u32 i = 0; i < sizeof data; i++) data[i] = (u8)(slot * 31 + i * 7);
  put_slot_number("write", slot, (u32)blk_request(BLK_T_OUT, 0, data, sizeof data, 0));
  kit_memset(readback, 0, sizeof readback);
  if (blk_request(BLK_T_IN, 0, readback, sizeof readback, DESC_F_WRITE) != 0) fail(8, "read of sectors 0-1");
  u32 same = 1;
  for (u32 i = 0; i < sizeof data; i++) same &= readback[i] == data[i];
  put_slot_number("readback", slot, same);
}

static void check_entropy(u32 slot) {
  kit_memset(entropy, 0, sizeof entropy);
  vq_set(&dev, 0, entropy, sizeof entropy, DESC_F_WRITE, 0);
  if (submit_and_wait_interrupt(0) != sizeof entropy) fail(9, "entropy request not filled");
  serial_puts("entropy-");
  serial_put_decimal(slot);
  serial_putc('=');
  for (u32 i = 0; i < sizeof entropy; i++) serial_put_hex8(entropy[i]);
  serial_putc('\n');
}

static void drive(u32 slot, u32 base, u32 id, u32 gsi) {
  if (id != VIRTIO_ID_BLOCK && id != VIRTIO_ID_ENTROPY) return;
  if (virtio_init(&dev, base, id == VIRTIO_ID_BLOCK ? BLK_F_RO : 0, ring)) fail(4, "initialisation");
  u32 before = used_interrupts;
  ioapic_route(gsi, VIRTIO_VECTOR, 1);
  interrupts_enable();
  if (id == VIRTIO_ID_BLOCK) check_block(slot);
  else check_entropy(slot);
  interrupts_disable();
  ioapic_write(0x10 + 2 * gsi, IOAPIC_MASKED);
  put_slot_number("interrupts", slot, used_interrupts - before);
  vset(&dev, VM_STATUS, 0); /* reset: the next device reuses the ring memory */
}

void main(u32 multiboot_info) {
  read_command_line(multiboot_info);
  kit_report("announced", announced_count);
  interrupts_init();
  u32 found = 0;
  for (u32 slot = 0; slot < VIRTIO_MMIO_SLOTS; slot++) {
    u32 base = VIRTIO_MMIO_WINDOW + slot * VIRTIO_MMIO_STRIDE;
    if (mmio_read32(base + VM_MAGIC) != 0x74726976u || mmio_read32(base + VM_VERSION) != 2) continue;
    u32 id = mmio_read32(base + VM_DEVICE_ID);
    if (id == 0) continue; /* a transport with no device behind it (QEMU's) */
    u32 e = 0;
    while (e < announced_count && announced[e].base != base) e++;
    if (e == announced_count) fail(2, "a transport the command line does not announce");
    if (announced[e].size != VIRTIO_MMIO_STRIDE) fail(2, "an announced window of another size");
    announced[e].found = 1;
    found++;
    serial_puts("transport=");
    serial_put_decimal(slot);
    serial_putc(',');
    serial_put_decimal(id);
    serial_putc(',');
    serial_put_decimal(announced[e].gsi);
    serial_putc('\n');
    drive(slot, base, id, announced[e].gsi);
  }
  for (u32 e = 0; e < announced_count; e++)
    if (!announced[e].found) fail(3, "an announced transport is not in the window");
  kit_report("transports", found);
  kit_report("other-interrupts", other_interrupts);
  guest_exit(0);
}
