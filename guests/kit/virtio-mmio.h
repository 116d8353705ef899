/*
 * A polled virtio-mmio (version 2) driver for guest-kit kernels running with paging off or
 * identity-mapped (guest-physical = virtual, below 4 GiB): device discovery in the microvm window, the initialisation
 * sequence of virtio 1.2 section 3.1.1, and one split virtqueue of VQ_SIZE entries.
 * Completion is found by polling used.idx; InterruptStatus is read and acknowledged so the
 * interrupt side of the transport is exercised too.
 */
#ifndef GUEST_KIT_VIRTIO_MMIO_H
#define GUEST_KIT_VIRTIO_MMIO_H
#include "kit.h"

#define VIRTIO_MMIO_WINDOW 0xfeb00000u
#define VIRTIO_MMIO_STRIDE 0x200u
#define VIRTIO_MMIO_SLOTS 24 /* QEMU microvm has 24 and fills them from the top */

#define VM_MAGIC 0x000
#define VM_VERSION 0x004
#define VM_DEVICE_ID 0x008
#define VM_DEVICE_FEATURES 0x010
#define VM_DEVICE_FEATURES_SEL 0x014
#define VM_DRIVER_FEATURES 0x020
#define VM_DRIVER_FEATURES_SEL 0x024
#define VM_QUEUE_SEL 0x030
#define VM_QUEUE_NUM_MAX 0x034
#define VM_QUEUE_NUM 0x038
#define VM_QUEUE_READY 0x044
#define VM_QUEUE_NOTIFY 0x050
#define VM_INTERRUPT_STATUS 0x060
#define VM_INTERRUPT_ACK 0x064
#define VM_STATUS 0x070
#define VM_QUEUE_DESC_LOW 0x080
#define VM_QUEUE_DESC_HIGH 0x084
#define VM_QUEUE_DRIVER_LOW 0x090
#define VM_QUEUE_DRIVER_HIGH 0x094
#define VM_QUEUE_DEVICE_LOW 0x0a0
#define VM_QUEUE_DEVICE_HIGH 0x0a4
#define VM_CONFIG 0x100

#define S_ACKNOWLEDGE 1u
#define S_DRIVER 2u
#define S_DRIVER_OK 4u
#define S_FEATURES_OK 8u
#define S_NEEDS_RESET 64u

#define F_INDIRECT_DESC (1u << 28)
#define F_EVENT_IDX (1u << 29)
#define F_HIGH_VERSION_1 (1u << 0) /* bit 32 */

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define DESC_F_INDIRECT 4

#ifndef VQ_SIZE
#define VQ_SIZE 8 /* a power of 2; 128 keeps 32 three-descriptor requests in flight */
#endif
/* The used ring on its own page after the descriptors and the avail ring; the caller's
   ring area is VQ_RING_BYTES, 4 KiB-aligned. */
#define VQ_USED_OFFSET ((16u * VQ_SIZE + 6u + 2u * VQ_SIZE + 4095u) & ~4095u)
#define VQ_RING_BYTES (VQ_USED_OFFSET + ((6u + 8u * VQ_SIZE + 4095u) & ~4095u))
/* Polls of used.idx before giving up (seconds of emulated CPL0 code on PVM); the status
   register, an MMIO exit, is read only every STATUS_POLL_EVERY polls. CPL3 runs natively
   (2M polls took 0.17 s here, ~60 times faster than at CPL0), so both scale up there, to
   keep roughly the same time between Status reads and before giving up. */
#ifndef KIT_POLL_SCALE
#if defined(KIT_LONG_MODE) && KIT_CPL == 3
#define KIT_POLL_SCALE 16u
#else
#define KIT_POLL_SCALE 1u
#endif
#endif
#define POLL_LIMIT (2000000u * KIT_POLL_SCALE)
#define STATUS_POLL_EVERY (1024u * KIT_POLL_SCALE)
/* InterruptStatus reads virtio_ack waits at most: each one is an exit, at any CPL. */
#define INTERRUPT_STATUS_READS 1024u

struct vq_desc { u64x addr; u32 len; u16 flags; u16 next; };
struct vq_avail { u16 flags; u16 idx; u16 ring[VQ_SIZE]; u16 used_event; };
struct vq_used_elem { u32 id; u32 len; };
struct vq_used { u16 flags; u16 idx; struct vq_used_elem ring[VQ_SIZE]; u16 avail_event; };

struct virtio_dev {
  u32 base;
  u32 features;  /* low 32 feature bits accepted */
  struct vq_desc *desc;
  struct vq_avail *avail;
  volatile struct vq_used *used;
  u16 last_used;
  u32 interrupts_seen;
};

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u32 mmio_read32(u32 addr) { return *(volatile u32 *)(uptr)addr; }
static inline void mmio_write32(u32 addr, u32 v) { *(volatile u32 *)(uptr)addr = v; }
static inline u8 mmio_read8(u32 addr) { return *(volatile u8 *)(uptr)addr; }

static inline u32 vreg(struct virtio_dev *d, u32 off) { return mmio_read32(d->base + off); }
static inline void vset(struct virtio_dev *d, u32 off, u32 v) { mmio_write32(d->base + off, v); }

/* The transport of the `nth` (0-based) device with `device_id` in the window, or 0. */
static inline u32 virtio_find(u32 device_id, u32 nth) {
  for (u32 i = 0; i < VIRTIO_MMIO_SLOTS; i++) {
    u32 base = VIRTIO_MMIO_WINDOW + i * VIRTIO_MMIO_STRIDE;
    if (mmio_read32(base + VM_MAGIC) != 0x74726976u || mmio_read32(base + VM_VERSION) != 2) continue;
    if (mmio_read32(base + VM_DEVICE_ID) == device_id && nth-- == 0) return base;
  }
  return 0;
}

static inline void *kit_memset(void *p, int c, u32 n) {
  u8 *b = p;
  while (n--) *b++ = (u8)c;
  return p;
}

/* One queue of a device with several (net, console, vsock); see virtio_begin below. */
struct virtq {
  u32 base;
  u16 index;
  struct vq_desc *desc;
  struct vq_avail *avail;
  volatile struct vq_used *used;
  u16 last_used;
};

/* The initialisation steps, defined below with the multi-queue helpers. */
static inline int virtio_begin(struct virtio_dev *d, u32 base, u32 wanted);
static inline int virtio_queue(struct virtio_dev *d, struct virtq *q, u16 index, u8 *page);
static inline int virtio_driver_ok(struct virtio_dev *d);

/*
 * Resets and initialises the device with queue 0 in `ring` (VQ_RING_BYTES, 4 KiB-aligned),
 * accepting `wanted` of the low feature bits it offers. 0 on success, else the failing step.
 */
static inline int virtio_init(struct virtio_dev *d, u32 base, u32 wanted, u8 *ring) {
  struct virtq q;
  int err = virtio_begin(d, base, wanted);
  if (err) return err;
  err = virtio_queue(d, &q, 0, ring);
  if (err) return err == 11 ? 4 : 5;
  d->desc = q.desc;
  d->avail = q.avail;
  d->used = q.used;
  d->last_used = 0;
  return virtio_driver_ok(d) ? 6 : 0;
}

static inline void vq_set(struct virtio_dev *d, u32 i, const void *addr, u32 len, u16 flags, u16 next) {
  d->desc[i].addr = (uptr)addr;
  d->desc[i].len = len;
  d->desc[i].flags = flags;
  d->desc[i].next = next;
}

static inline int virtq_submit(struct virtio_dev *d, struct virtq *q, u16 head);

/*
 * Offers the chain at descriptor `head`, notifies and polls for its completion.
 * Returns the used length, or -1 if the device did not answer (or needs a reset).
 */
static inline int vq_submit(struct virtio_dev *d, u16 head) {
  struct virtq q = {d->base, 0, d->desc, d->avail, d->used, d->last_used};
  int len = virtq_submit(d, &q, head);
  d->last_used = q.last_used;
  return len;
}

/*
 * Devices with several queues (net, console, vsock): the same initialisation split in
 * three steps, virtio_begin (reset, features), virtio_queue per queue, virtio_driver_ok.
 * Each queue lives in its own zeroed, 4 KiB-aligned area of VQ_RING_BYTES.
 */

/* Resets the device and accepts `wanted` of its low feature bits and VERSION_1; 0 or the failing step. */
static inline int virtio_begin(struct virtio_dev *d, u32 base, u32 wanted) {
  d->base = base;
  d->interrupts_seen = 0;
  vset(d, VM_STATUS, 0);
  if (vreg(d, VM_STATUS) != 0) return 1;
  vset(d, VM_STATUS, S_ACKNOWLEDGE);
  vset(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER);
  vset(d, VM_DEVICE_FEATURES_SEL, 1);
  if (!(vreg(d, VM_DEVICE_FEATURES) & F_HIGH_VERSION_1)) return 2;
  vset(d, VM_DEVICE_FEATURES_SEL, 0);
  d->features = vreg(d, VM_DEVICE_FEATURES) & wanted;
  vset(d, VM_DRIVER_FEATURES_SEL, 0);
  vset(d, VM_DRIVER_FEATURES, d->features);
  vset(d, VM_DRIVER_FEATURES_SEL, 1);
  vset(d, VM_DRIVER_FEATURES, F_HIGH_VERSION_1);
  vset(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
  if (!(vreg(d, VM_STATUS) & S_FEATURES_OK)) return 3;
  return 0;
}

/* Sets up queue `index` of VQ_SIZE entries in `page` (VQ_RING_BYTES, 4 KiB-aligned); 0 or the failing step (10 + n). */
static inline int virtio_queue(struct virtio_dev *d, struct virtq *q, u16 index, u8 *page) {
  q->base = d->base;
  q->index = index;
  vset(d, VM_QUEUE_SEL, index);
  if (vreg(d, VM_QUEUE_READY) != 0) return 11;
  if (vreg(d, VM_QUEUE_NUM_MAX) < VQ_SIZE) return 12;
  kit_memset(page, 0, VQ_RING_BYTES);
  q->desc = (struct vq_desc *)page;
  q->avail = (struct vq_avail *)(page + 16 * VQ_SIZE);
  q->used = (volatile struct vq_used *)(page + VQ_USED_OFFSET);
  q->last_used = 0;
  vset(d, VM_QUEUE_NUM, VQ_SIZE);
  vset(d, VM_QUEUE_DESC_LOW, (u32)(uptr)q->desc);
  vset(d, VM_QUEUE_DESC_HIGH, 0);
  vset(d, VM_QUEUE_DRIVER_LOW, (u32)(uptr)q->avail);
  vset(d, VM_QUEUE_DRIVER_HIGH, 0);
  vset(d, VM_QUEUE_DEVICE_LOW, (u32)(uptr)q->used);
  vset(d, VM_QUEUE_DEVICE_HIGH, 0);
  vset(d, VM_QUEUE_READY, 1);
  return 0;
}

static inline int virtio_driver_ok(struct virtio_dev *d) {
  vset(d, VM_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  return (vreg(d, VM_STATUS) & S_NEEDS_RESET) ? 13 : 0;
}

static inline void virtq_set(struct virtq *q, u32 i, const void *addr, u32 len, u16 flags, u16 next) {
  q->desc[i].addr = (uptr)addr;
  q->desc[i].len = len;
  q->desc[i].flags = flags;
  q->desc[i].next = next;
}

/* Makes the chain at descriptor `head` available, without notifying. */
static inline void virtq_offer(struct virtq *q, u16 head) {
  u16 idx = q->avail->idx;
  q->avail->ring[idx % VQ_SIZE] = head;
  q->avail->used_event = idx;
  barrier();
  q->avail->idx = (u16)(idx + 1);
  barrier();
}

static inline void virtq_notify(struct virtq *q) { mmio_write32(q->base + VM_QUEUE_NOTIFY, q->index); }

/* The next used element, if any: 1 with its descriptor id and length, else 0. */
static inline int virtq_take(struct virtq *q, u32 *id, u32 *len) {
  if (q->used->idx == q->last_used) return 0;
  barrier();
  *id = q->used->ring[q->last_used % VQ_SIZE].id;
  *len = q->used->ring[q->last_used % VQ_SIZE].len;
  q->last_used++;
  return 1;
}

/* Acknowledges whatever InterruptStatus shows (the kit polls; this keeps the line low). */
static inline void virtio_ack(struct virtio_dev *d) {
  /* A device on its own thread may publish the used entry a moment before it sets
     InterruptStatus (the notification follows the ring update), so give it that moment. */
  u32 isr = vreg(d, VM_INTERRUPT_STATUS);
  for (u32 n = 0; !(isr & 1) && n < INTERRUPT_STATUS_READS; n++) {
    pause_cpu();
    isr = vreg(d, VM_INTERRUPT_STATUS);
  }
  if (isr & 1) d->interrupts_seen++;
  if (isr) vset(d, VM_INTERRUPT_ACK, isr);
}

/* Offers `head`, notifies and polls for its completion: the used length, or -1. */
static inline int virtq_submit(struct virtio_dev *d, struct virtq *q, u16 head) {
  virtq_offer(q, head);
  virtq_notify(q);
  u32 id, len;
  for (u32 n = 0; n < POLL_LIMIT; n++) {
    if (virtq_take(q, &id, &len)) {
      virtio_ack(d);
      return (int)len;
    }
    if (n % STATUS_POLL_EVERY == 0 && (vreg(d, VM_STATUS) & S_NEEDS_RESET)) return -1;
    pause_cpu();
  }
  return -1;
}

static inline void serial_put_hex8(u8 v) {
  const char *digits = "0123456789abcdef";
  serial_putc(digits[v >> 4]);
  serial_putc(digits[v & 15]);
}

#endif
