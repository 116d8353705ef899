/*
 * Drives the virtio-mmio devices it finds in the microvm window, polled, and reports on
 * COM1 in `key=value` lines for the host to check:
 *   CHECK=1 (entropy): two 32-byte reads from virtio-rng, printed in hex.
 *   CHECK=2 (block): config (capacity, blk_size, seg_max), GET_ID, a read of sectors 0-1,
 *     a write of sectors 2-3 (through an indirect table when negotiated), FLUSH, and a read
 *     back of sectors 2-3 compared with what was written.
 *   CHECK=3 (hostile driver): a ring broken on purpose (HOSTILE: 1 a descriptor loop, 2 a
 *     buffer across the end of RAM, 3 avail.idx jumping past the queue size, 4 nested
 *     indirect tables), reporting what the device did (hostile-outcome: needs-reset,
 *     completed or none); then a reset and re-initialisation must give entropy again.
 *   CHECK=4 (endless I/O): reads sectors 0-1 of virtio-blk for ever, for a host that stops
 *     the VM in the middle of it.
 *   CHECK=5 (measurement): COUNT reads of 4 KiB at pseudo-random 4 KiB-aligned sectors,
 *     one at a time (queue depth 1), for timing from outside.
 *   CHECK=7 (measurement): COUNT 4 KiB reads at pseudo-random sectors with DEPTH requests
 *     in flight (build with VQ_SIZE >= 3 * DEPTH), a notification per batch refilled;
 *     after the count, the number of batches and of the kicks among them the device had
 *     said it did not need (VIRTQ_USED_F_NO_NOTIFY; the loop kicks anyway).
 *   CHECK=8 (measurement): COUNT sequential 64 KiB reads, one at a time.
 *   CHECK=9 (measurement): COUNT 64 KiB entropy requests to virtio-rng, one at a time;
 *     reports the bytes received.
 *   The measurements print "go" when the device is ready and their count at the end, so
 *   the host times the lines between.
 *   CHECK=10 (discard and write zeroes): on a 64 KiB image, the DISCARD and WRITE_ZEROES
 *     config, a pattern written over the image, requests the device must refuse (a
 *     reserved flag, UNMAP on a discard, a range past the end, a count over the maximum, one
 *     segment too many) reported by status, then WRITE_ZEROES of blocks 1-2, WRITE_ZEROES
 *     with UNMAP of block 5, DISCARD of blocks 8-9 and 12, and the whole image read back:
 *     which 4 KiB blocks read as zeroes and whether the others still hold the pattern.
 *   CHECK=6 (interrupt-driven entropy): virtio-rng's IOAPIC pin, VIRTIO_FIRST_GSI + its
 *     slot, routed to a vector (level-triggered, or edge with LEVEL=0); three requests, each
 *     completion seen by the interrupt handler, which acks InterruptStatus before the EOI.
 *     Handler runs that found InterruptStatus 0 are counted as other-interrupts.
 * The same kernel runs under workervisor's PC machine and QEMU -M microvm; built with the
 * long-mode kit it reports cpl= first (KIT_CPL=3 runs it all at CPL3).
 * Exit status 0 when every step worked; otherwise the number of the failed step.
 */
#include "kit.h"
#include "virtio-mmio.h"
#include "interrupts.h"

#ifndef CHECK
#define CHECK 1
#endif

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_ENTROPY 4
#define BLK_F_SEG_MAX (1u << 2)
#define BLK_F_RO (1u << 5)
#define BLK_F_BLK_SIZE (1u << 6)
#define BLK_F_FLUSH (1u << 9)
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8

static u8 ring[VQ_RING_BYTES] __attribute__((aligned(4096)));
static struct vq_desc indirect_table[4] __attribute__((aligned(16)));
static u8 data[1024] __attribute__((aligned(16)));
static u8 readback[1024] __attribute__((aligned(16)));
static u8 entropy[32];
static u8 status_byte;
static struct { u32 type; u32 reserved; u64x sector; } header;
static struct virtio_dev dev;

static __attribute__((noreturn)) void fail(u32 step, const char *why) {
  serial_puts("virtio-check: step ");
  serial_put_decimal(step);
  serial_puts(" failed: ");
  serial_puts(why);
  serial_puts("\n");
  guest_exit(step);
}

static void put_hex(const char *key, const u8 *bytes, u32 n) {
  serial_puts(key);
  serial_putc('=');
  for (u32 i = 0; i < n; i++) serial_put_hex8(bytes[i]);
  serial_putc('\n');
}

static void put_number(const char *key, u32 value) {
  serial_puts(key);
  serial_putc('=');
  serial_put_decimal(value);
  serial_putc('\n');
}

static int read_entropy(void) {
  kit_memset(entropy, 0, sizeof entropy);
  vq_set(&dev, 0, entropy, sizeof entropy, DESC_F_WRITE, 0);
  return vq_submit(&dev, 0);
}

static void check_entropy(void) {
  u32 base = virtio_find(VIRTIO_ID_ENTROPY, 0);
  if (!base) fail(1, "no virtio-rng device in the window");
  int err = virtio_init(&dev, base, F_EVENT_IDX | F_INDIRECT_DESC, ring);
  if (err) { put_number("init-step", err); fail(2, "initialisation"); }
  for (int i = 0; i < 2; i++) {
    int n = read_entropy();
    if (n <= 0) fail(3, "no entropy came back");
    put_number("entropy-bytes", n);
    put_hex("entropy", entropy, sizeof entropy);
  }
  put_number("interrupts", dev.interrupts_seen);
}

/* A request of header + (data, len, data_flags) + status; through the indirect table if asked. */
static int blk_request(u32 type, u32 sector, void *buf, u32 len, u16 data_flags, int indirect) {
  header.type = type;
  header.reserved = 0;
  header.sector = sector;
  status_byte = 0xff;
  struct vq_desc *t = indirect ? indirect_table : dev.desc;
  u16 n = 0;
  t[n] = (struct vq_desc){(uptr)&header, sizeof header, DESC_F_NEXT, (u16)(n + 1)}; n++;
  if (len) { t[n] = (struct vq_desc){(uptr)buf, len, (u16)(data_flags | DESC_F_NEXT), (u16)(n + 1)}; n++; }
  t[n] = (struct vq_desc){(uptr)&status_byte, 1, DESC_F_WRITE, 0}; n++;
  if (indirect) vq_set(&dev, 0, indirect_table, n * sizeof(struct vq_desc), DESC_F_INDIRECT, 0);
  if (vq_submit(&dev, 0) < 0) return -1;
  return status_byte;
}

static u32 fnv1a(const u8 *p, u32 n) {
  u32 h = 2166136261u;
  for (u32 i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static void check_block(void) {
  u32 base = virtio_find(VIRTIO_ID_BLOCK, 0);
  if (!base) fail(1, "no virtio-blk device in the window");
  int err = virtio_init(&dev, base, F_EVENT_IDX | F_INDIRECT_DESC | BLK_F_SEG_MAX | BLK_F_RO | BLK_F_BLK_SIZE | BLK_F_FLUSH, ring);
  if (err) { put_number("init-step", err); fail(2, "initialisation"); }
  put_number("capacity", vreg(&dev, VM_CONFIG + 0)); /* low word: small images */
  if (dev.features & BLK_F_SEG_MAX) put_number("seg-max", vreg(&dev, VM_CONFIG + 12));
  if (dev.features & BLK_F_BLK_SIZE) put_number("blk-size", vreg(&dev, VM_CONFIG + 20));
  put_number("read-only", !!(dev.features & BLK_F_RO));
  put_number("flush", !!(dev.features & BLK_F_FLUSH));
  put_number("indirect", !!(dev.features & F_INDIRECT_DESC));

  u8 id[21];
  kit_memset(id, 0, sizeof id);
  if (blk_request(BLK_T_GET_ID, 0, id, 20, DESC_F_WRITE, 0) != 0) fail(3, "GET_ID");
  serial_puts("serial=");
  serial_puts((const char *)id);
  serial_putc('\n');

  if (blk_request(BLK_T_IN, 0, readback, 1024, DESC_F_WRITE, 0) != 0) fail(4, "read of sectors 0-1");
  put_number("sector0-fnv", fnv1a(readback, 1024));

  for (u32 i = 0; i < sizeof data; i++) data[i] = (u8)(i * 7 + 3);
  int indirect = (dev.features & F_INDIRECT_DESC) != 0;
  int written = blk_request(BLK_T_OUT, 2, data, sizeof data, 0, indirect);
  put_number("write-status", (u32)written);
  if (written < 0) fail(5, "write of sectors 2-3 got no answer");
  if (dev.features & BLK_F_FLUSH) {
    int flushed = blk_request(BLK_T_FLUSH, 0, 0, 0, 0, 0);
    put_number("flush-status", (u32)flushed);
    if (flushed != 0) fail(6, "FLUSH");
  }
  kit_memset(readback, 0, sizeof readback);
  if (blk_request(BLK_T_IN, 2, readback, 1024, DESC_F_WRITE, indirect) != 0) fail(7, "read of sectors 2-3");
  u32 same = 1;
  for (u32 i = 0; i < sizeof data; i++) same &= readback[i] == data[i];
  put_number("readback-matches", same);
  put_number("sector2-fnv", fnv1a(readback, 1024));
  put_number("interrupts", dev.interrupts_seen);
  if (!(dev.features & BLK_F_RO) && (!same || written != 0)) fail(8, "what was read back is not what was written");
}

#ifndef HOSTILE
#define HOSTILE 1
#endif
#define RAM_END 0x4000000u /* the tests give the guest 64 MiB */

/* Polls for DEVICE_NEEDS_RESET or a completion after a notification, for a while. */
static const char *wait_outcome(void) {
  for (u32 n = 0; n < POLL_LIMIT / 8; n++) {
    if (n % STATUS_POLL_EVERY == 0 && (vreg(&dev, VM_STATUS) & S_NEEDS_RESET)) return "needs-reset";
    if (dev.used->idx != dev.last_used) return "completed";
    pause_cpu();
  }
  return (vreg(&dev, VM_STATUS) & S_NEEDS_RESET) ? "needs-reset" : "none";
}

/* Breaks the ring as HOSTILE says: 1 a descriptor loop, 2 a buffer across the end of RAM,
   3 avail.idx jumping by more than the queue size, 4 an indirect table inside another. */
static void offer_hostile(void) {
  u16 idx = dev.avail->idx;
  dev.avail->ring[idx % VQ_SIZE] = 0;
  u16 next_idx = (u16)(idx + 1);
  switch (HOSTILE) {
  case 1:
    vq_set(&dev, 0, entropy, 8, DESC_F_WRITE | DESC_F_NEXT, 1);
    vq_set(&dev, 1, entropy + 8, 8, DESC_F_WRITE | DESC_F_NEXT, 0);
    break;
  case 2:
    vq_set(&dev, 0, (void *)(uptr)(RAM_END - 8), 16, DESC_F_WRITE, 0);
    break;
  case 3:
    vq_set(&dev, 0, entropy, 8, DESC_F_WRITE, 0);
    next_idx = (u16)(idx + VQ_SIZE + 1);
    break;
  case 4:
    indirect_table[0] = (struct vq_desc){(uptr)&indirect_table[2], 16, DESC_F_INDIRECT, 0};
    indirect_table[2] = (struct vq_desc){(uptr)entropy, 8, DESC_F_WRITE, 0};
    vq_set(&dev, 0, indirect_table, 16, DESC_F_INDIRECT, 0);
    break;
  }
  barrier();
  dev.avail->idx = next_idx;
  barrier();
  vset(&dev, VM_QUEUE_NOTIFY, 0);
}

static void check_hostile(void) {
  u32 base = virtio_find(VIRTIO_ID_ENTROPY, 0);
  if (!base) fail(1, "no virtio-rng device in the window");
  if (virtio_init(&dev, base, F_EVENT_IDX | F_INDIRECT_DESC, ring)) fail(2, "initialisation");
  if (HOSTILE == 4 && !(dev.features & F_INDIRECT_DESC)) fail(2, "INDIRECT_DESC not offered");
  offer_hostile();
  serial_puts("hostile-outcome=");
  serial_puts(wait_outcome());
  serial_putc('\n');
  u32 isr = vreg(&dev, VM_INTERRUPT_STATUS);
  put_number("hostile-status", vreg(&dev, VM_STATUS));
  put_number("hostile-isr", isr);
  vset(&dev, VM_INTERRUPT_ACK, isr);
  int err = virtio_init(&dev, base, F_EVENT_IDX, ring);
  if (err) { put_number("init-step", err); fail(4, "re-initialisation after reset"); }
  put_number("reinit-status", vreg(&dev, VM_STATUS));
  if (read_entropy() <= 0) fail(5, "no entropy after re-initialisation");
  put_hex("entropy", entropy, sizeof entropy);
}

static void endless_reads(void) {
  u32 base = virtio_find(VIRTIO_ID_BLOCK, 0);
  if (!base) fail(1, "no virtio-blk device in the window");
  if (virtio_init(&dev, base, F_EVENT_IDX, ring)) fail(2, "initialisation");
  serial_puts("reading\n");
  for (;;) {
    if (blk_request(BLK_T_IN, 0, readback, 1024, DESC_F_WRITE, 0) != 0) fail(3, "read of sectors 0-1");
  }
}

#ifndef COUNT
#define COUNT 1000
#endif
static u8 block4k[4096] __attribute__((aligned(4096)));

static void timed_reads(void) {
  u32 base = virtio_find(VIRTIO_ID_BLOCK, 0);
  if (!base) fail(1, "no virtio-blk device in the window");
  if (virtio_init(&dev, base, F_EVENT_IDX, ring)) fail(2, "initialisation");
  u32 blocks = vreg(&dev, VM_CONFIG + 0) / 8;
  if (blocks == 0) fail(2, "the image is smaller than 4 KiB");
  u32 x = 12345;
  serial_puts("go\n");
  for (u32 i = 0; i < COUNT; i++) {
    x = x * 1103515245u + 12345u;
    if (blk_request(BLK_T_IN, ((x >> 8) % blocks) * 8, block4k, sizeof block4k, DESC_F_WRITE, 0) != 0) fail(3, "4 KiB read");
  }
  put_number("reads", COUNT);
}

#ifndef DEPTH
#define DEPTH 32
#endif
#define BLK_REQUEST_DESCRIPTORS 3
static u8 blocks[DEPTH][4096] __attribute__((aligned(4096)));
static struct { u32 type; u32 reserved; u64x sector; } headers[DEPTH];
static u8 statuses[DEPTH];
static u8 big[65536] __attribute__((aligned(4096)));

/* Puts request `slot` (descriptors 3*slot..3*slot+2) in the avail ring, without notifying. */
static void offer_read(u32 slot, u32 sector, void *buf, u32 len) {
  struct vq_desc *d = &dev.desc[BLK_REQUEST_DESCRIPTORS * slot];
  u16 head = (u16)(BLK_REQUEST_DESCRIPTORS * slot);
  headers[slot].type = BLK_T_IN;
  headers[slot].reserved = 0;
  headers[slot].sector = sector;
  statuses[slot] = 0xff;
  d[0] = (struct vq_desc){(uptr)&headers[slot], sizeof headers[slot], DESC_F_NEXT, (u16)(head + 1)};
  d[1] = (struct vq_desc){(uptr)buf, len, DESC_F_WRITE | DESC_F_NEXT, (u16)(head + 2)};
  d[2] = (struct vq_desc){(uptr)&statuses[slot], 1, DESC_F_WRITE, 0};
  u16 idx = dev.avail->idx;
  dev.avail->ring[idx % VQ_SIZE] = head;
  barrier();
  dev.avail->idx = (u16)(idx + 1);
}

static u32 blk_blocks(void) {
  u32 base = virtio_find(VIRTIO_ID_BLOCK, 0);
  if (!base) fail(1, "no virtio-blk device in the window");
  if (virtio_init(&dev, base, 0, ring)) fail(2, "initialisation");
  u32 n = vreg(&dev, VM_CONFIG + 0) / 8;
  if (n == 0) fail(2, "the image is smaller than 4 KiB");
  return n;
}

static void ack_interrupts(void) {
  u32 isr = vreg(&dev, VM_INTERRUPT_STATUS);
  if (isr) vset(&dev, VM_INTERRUPT_ACK, isr);
}

static void deep_reads(void) {
  if (VQ_SIZE < BLK_REQUEST_DESCRIPTORS * DEPTH) fail(2, "VQ_SIZE too small for DEPTH");
  u32 n = blk_blocks();
  u32 x = 12345, submitted = 0, completed = 0;
  serial_puts("go\n");
  for (; submitted < DEPTH && submitted < COUNT; submitted++) {
    x = x * 1103515245u + 12345u;
    offer_read(submitted, ((x >> 8) % n) * 8, blocks[submitted], 4096);
  }
  barrier();
  vset(&dev, VM_QUEUE_NOTIFY, 0);
  u32 polls = 0, batches = 0, spared = 0;
  while (completed < COUNT) {
    int offered = 0;
    while (dev.used->idx != dev.last_used) {
      barrier();
      u32 slot = dev.used->ring[dev.last_used % VQ_SIZE].id / BLK_REQUEST_DESCRIPTORS;
      dev.last_used++;
      if (slot >= DEPTH || statuses[slot] != 0) fail(3, "4 KiB read in flight");
      completed++;
      if (submitted < COUNT) {
        x = x * 1103515245u + 12345u;
        offer_read(slot, ((x >> 8) % n) * 8, blocks[slot], 4096);
        submitted++;
        offered = 1;
      }
    }
    if (offered) {
      barrier();
      /* Counted, not obeyed: how often a driver that honours VIRTQ_USED_F_NO_NOTIFY would skip this kick. */
      if (dev.used->flags & 1) spared++;
      vset(&dev, VM_QUEUE_NOTIFY, 0);
      ack_interrupts();
      polls = 0;
      batches++;
    } else if (++polls > POLL_LIMIT) {
      fail(4, "no completion");
    } else {
      pause_cpu();
    }
  }
  put_number("reads", completed);
  /* After the timed part: how many refills (each a notification and an InterruptStatus read) it took. */
  put_number("batches", batches);
  put_number("kicks-spared", spared);
}

static void sequential_reads(void) {
  u32 n = blk_blocks();
  u32 span = sizeof big / 4096;
  if (n < span) fail(2, "the image is smaller than 64 KiB");
  serial_puts("go\n");
  for (u32 i = 0; i < COUNT; i++) {
    offer_read(0, ((i * span) % (n - span + 1)) * 8, big, sizeof big);
    barrier();
    vset(&dev, VM_QUEUE_NOTIFY, 0);
    for (u32 p = 0; dev.used->idx == dev.last_used; p++) {
      if (p > POLL_LIMIT) fail(3, "no completion");
      pause_cpu();
    }
    dev.last_used++;
    if (statuses[0] != 0) fail(3, "64 KiB read");
    ack_interrupts();
  }
  put_number("reads", COUNT);
}

static void entropy_stream(void) {
  u32 base = virtio_find(VIRTIO_ID_ENTROPY, 0);
  if (!base) fail(1, "no virtio-rng device in the window");
  if (virtio_init(&dev, base, F_EVENT_IDX, ring)) fail(2, "initialisation");
  u32 bytes = 0;
  serial_puts("go\n");
  for (u32 i = 0; i < COUNT; i++) {
    vq_set(&dev, 0, big, sizeof big, DESC_F_WRITE, 0);
    int got = vq_submit(&dev, 0);
    if (got <= 0) fail(3, "no entropy came back");
    bytes += (u32)got;
  }
  put_number("entropy-bytes", bytes);
}

#ifndef VIRTIO_FIRST_GSI
#define VIRTIO_FIRST_GSI 16 /* slot i raises GSI 16 + i, as on QEMU microvm with ACPI */
#endif
#define VIRTIO_VECTOR 0x40
#ifndef LEVEL
#define LEVEL 1 /* virtio-mmio's line is level-triggered; 0 routes it as an edge */
#endif
static volatile u32 used_interrupts, other_interrupts;

void kit_interrupt(void) {
  u32 isr = virtio_interrupt_ack(&dev);
  if (isr & 1) used_interrupts++;
  else if (!isr) other_interrupts++;
  lapic_eoi();
}

static void interrupt_driven_entropy(void) {
  u32 base = virtio_find(VIRTIO_ID_ENTROPY, 0);
  if (!base) fail(1, "no virtio-rng device in the window");
  if (virtio_init(&dev, base, F_EVENT_IDX, ring)) fail(2, "initialisation");
  interrupts_init();
  u32 gsi = VIRTIO_FIRST_GSI + (base - VIRTIO_MMIO_WINDOW) / VIRTIO_MMIO_STRIDE;
  put_number("gsi", gsi);
  ioapic_route(gsi, VIRTIO_VECTOR, LEVEL);
  interrupts_enable();
  for (u32 i = 0; i < 3; i++) {
    u32 before = used_interrupts;
    kit_memset(entropy, 0, sizeof entropy);
    vq_set(&dev, 0, entropy, sizeof entropy, DESC_F_WRITE, 0);
    vq_offer_notify(&dev, 0);
    for (u32 n = 0; n < POLL_LIMIT && used_interrupts == before; n++) pause_cpu();
    if (used_interrupts == before) fail(3, "no interrupt for a completed request");
    if (dev.used->idx != (u16)(dev.last_used + 1)) fail(4, "an interrupt but no used buffer");
    dev.last_used++;
    put_hex("entropy", entropy, sizeof entropy);
  }
  interrupts_disable();
  put_number("used-interrupts", used_interrupts);
  put_number("other-interrupts", other_interrupts);
}

#define BLK_F_DISCARD (1u << 13)
#define BLK_F_WRITE_ZEROES (1u << 14)
#define BLK_T_DISCARD 11
#define BLK_T_WRITE_ZEROES 13
#define WZ_FLAG_UNMAP 1u
#define DWZ_IMAGE_BLOCKS 16 /* the test's image: 16 blocks of 4 KiB */
#define DWZ_MAX_SEGMENTS 32
struct dwz_segment { u64x sector; u32 num_sectors; u32 flags; };
static struct dwz_segment dwz_segments[DWZ_MAX_SEGMENTS] __attribute__((aligned(16)));

static u8 dwz_pattern(u32 i) { return (u8)(((i >> 12) * 37 + i * 7 + 1) | 1); }

/* One DISCARD or WRITE_ZEROES request of `n` segments of whole 4 KiB blocks: its status, or -1. */
static int dwz_request(u32 type, u32 n, u32 first_block, u32 blocks, u32 flags) {
  for (u32 i = 0; i < n; i++) {
    dwz_segments[i].sector = (u64x)(first_block + i * blocks) * 8;
    dwz_segments[i].num_sectors = blocks * 8;
    dwz_segments[i].flags = flags;
  }
  return blk_request(type, 0, dwz_segments, n * sizeof dwz_segments[0], 0, 0);
}

/* Reports `key`=status of a one-segment request of `sectors` sectors at `sector`. */
static void dwz_refused(const char *key, u32 type, u64x sector, u32 sectors, u32 flags) {
  dwz_segments[0].sector = sector;
  dwz_segments[0].num_sectors = sectors;
  dwz_segments[0].flags = flags;
  put_number(key, (u32)blk_request(type, 0, dwz_segments, sizeof dwz_segments[0], 0, 0));
}

static void discard_and_write_zeroes(void) {
  u32 base = virtio_find(VIRTIO_ID_BLOCK, 0);
  if (!base) fail(1, "no virtio-blk device in the window");
  int err = virtio_init(&dev, base, F_EVENT_IDX | F_INDIRECT_DESC | BLK_F_SEG_MAX | BLK_F_BLK_SIZE | BLK_F_FLUSH | BLK_F_DISCARD | BLK_F_WRITE_ZEROES, ring);
  if (err) { put_number("init-step", err); fail(2, "initialisation"); }
  u32 capacity = vreg(&dev, VM_CONFIG + 0);
  put_number("capacity", capacity);
  put_number("discard", !!(dev.features & BLK_F_DISCARD));
  put_number("write-zeroes", !!(dev.features & BLK_F_WRITE_ZEROES));
  if (!(dev.features & BLK_F_DISCARD) || !(dev.features & BLK_F_WRITE_ZEROES)) fail(2, "DISCARD and WRITE_ZEROES not offered");
  u32 max_discard = vreg(&dev, VM_CONFIG + 36), discard_seg = vreg(&dev, VM_CONFIG + 40);
  u32 max_zeroes = vreg(&dev, VM_CONFIG + 48), zeroes_seg = vreg(&dev, VM_CONFIG + 52);
  put_number("max-discard-sectors", max_discard);
  put_number("max-discard-seg", discard_seg);
  put_number("discard-sector-alignment", vreg(&dev, VM_CONFIG + 44));
  put_number("max-write-zeroes-sectors", max_zeroes);
  put_number("max-write-zeroes-seg", zeroes_seg);
  put_number("write-zeroes-may-unmap", mmio_read8(dev.base + VM_CONFIG + 56));
  if (capacity != DWZ_IMAGE_BLOCKS * 8) fail(2, "the image is not 64 KiB");

  for (u32 i = 0; i < sizeof big; i++) big[i] = dwz_pattern(i);
  if (blk_request(BLK_T_OUT, 0, big, sizeof big, 0, 0) != 0) fail(3, "pattern write");

  /* Refused requests first: none may change a byte of the pattern. */
  dwz_refused("reserved-flag-status", BLK_T_WRITE_ZEROES, 0, 8, 2);
  dwz_refused("discard-unmap-status", BLK_T_DISCARD, 0, 8, WZ_FLAG_UNMAP);
  dwz_refused("past-end-status", BLK_T_DISCARD, capacity - 4, 8, 0);
  if (max_discard < 0xffffffffu) dwz_refused("over-max-status", BLK_T_DISCARD, 0, max_discard + 1, 0);
  if (discard_seg < DWZ_MAX_SEGMENTS) put_number("too-many-segments-status", (u32)dwz_request(BLK_T_DISCARD, discard_seg + 1, 0, 0, 0));

  put_number("write-zeroes-status", (u32)dwz_request(BLK_T_WRITE_ZEROES, 1, 1, 2, 0));
  put_number("write-zeroes-unmap-status", (u32)dwz_request(BLK_T_WRITE_ZEROES, 1, 5, 1, WZ_FLAG_UNMAP));
  if (discard_seg >= 2) {
    /* Blocks 8-9 and block 12, two segments of one request. */
    dwz_segments[0] = (struct dwz_segment){8 * 8, 2 * 8, 0};
    dwz_segments[1] = (struct dwz_segment){12 * 8, 8, 0};
    put_number("discard-status", (u32)blk_request(BLK_T_DISCARD, 0, dwz_segments, 2 * sizeof dwz_segments[0], 0, 0));
  } else {
    int a = dwz_request(BLK_T_DISCARD, 1, 8, 2, 0), b = dwz_request(BLK_T_DISCARD, 1, 12, 1, 0);
    put_number("discard-status", (u32)(a != 0 ? a : b));
  }
  if (dev.features & BLK_F_FLUSH && blk_request(BLK_T_FLUSH, 0, 0, 0, 0, 0) != 0) fail(4, "FLUSH");

  kit_memset(big, 0xee, sizeof big);
  if (blk_request(BLK_T_IN, 0, big, sizeof big, DESC_F_WRITE, 0) != 0) fail(5, "read back");
  u32 zero_blocks = 0, pattern_kept = 1;
  for (u32 b = 0; b < DWZ_IMAGE_BLOCKS; b++) {
    u32 zero = 1, kept = 1;
    for (u32 i = b * 4096; i < (b + 1) * 4096; i++) {
      zero &= big[i] == 0;
      kept &= big[i] == dwz_pattern(i);
    }
    if (zero) zero_blocks |= 1u << b;
    else if (!kept) pattern_kept = 0;
  }
  put_number("zero-blocks", zero_blocks);
  put_number("pattern-kept", pattern_kept);
}

void main(u32 info) {
  (void)info;
#ifdef KIT_LONG_MODE
  put_number("cpl", kit_cpl());
#endif
  if (CHECK == 1) check_entropy();
  else if (CHECK == 2) check_block();
  else if (CHECK == 3) check_hostile();
  else if (CHECK == 4) endless_reads();
  else if (CHECK == 5) timed_reads();
  else if (CHECK == 7) deep_reads();
  else if (CHECK == 8) sequential_reads();
  else if (CHECK == 9) entropy_stream();
  else if (CHECK == 10) discard_and_write_zeroes();
  else interrupt_driven_entropy();
  serial_puts("virtio-check: done\n");
  guest_exit(0);
}
