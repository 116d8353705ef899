/*
 * A polled virtio-net driver (no offloads: MAC and STATUS only, the 12-byte VERSION_1
 * header) that plays one side of a frame exchange and reports on COM1 in key=value lines:
 *   ROLE=0 (initiator): sends COUNT frames of EtherType 0x88b5, each with a known pattern,
 *     the first broadcast and the rest to the MAC the responder answered from; after each it
 *     waits for the matching reply, checks it byte for byte, and resends on a timeout (the
 *     peer may not be up yet: frames sent before its driver reset are lost, as on a wire).
 *     With RESET=1 it resets and re-initialises its device half way through.
 *   ROLE=1 (responder): checks each frame byte for byte and answers it (a resent frame is
 *     answered again), until COUNT different frames were answered.
 *   ROLE=2 (endless): transmits for ever, for a host that stops the VM in the middle of it.
 *   ROLE=3 (malformed): a transmit header with NEEDS_CSUM (not negotiated: the device drops
 *     it and completes the request), then a chain shorter than the header (DEVICE_NEEDS_RESET),
 *     then a reset and re-initialisation that must transmit again.
 *   ROLE=4 (ARP, against a host kernel through TAP): asks who has HOST_IP, telling GUEST_IP
 *     (addresses as 32-bit numbers, most significant byte first), resending until an ARP reply
 *     for GUEST_IP comes; reports the replier's MAC and IP. Other frames are ignored.
 *   ROLE=5 (benchmark sender) and ROLE=6 (benchmark receiver), EtherType 0x88b6: the receiver
 *     broadcasts READY until a frame comes; the sender, once it has a READY, sends COUNT DATA
 *     frames of SIZE bytes to the receiver's MAC, up to DEPTH in flight (VQ_SIZE >= 2 * DEPTH),
 *     then END until the receiver answers DONE. The receiver prints "go" at the first DATA
 *     frame and "received=<n>" at END: what a host times. Nothing is checked but the type.
 * The same kernel runs under workervisor's PC machine and QEMU -M microvm.
 * Exit status 0 when every step worked; otherwise the number of the failed step.
 */
#include "kit.h"
#include "virtio-mmio.h"

#ifndef ROLE
#define ROLE 0
#endif
#ifndef COUNT
#define COUNT 8
#endif
#ifndef RESET
#define RESET 0
#endif
/* Polls for a reply before the initiator resends. */
#ifndef REPLY_POLLS
#define REPLY_POLLS 200000u
#endif

#define VIRTIO_ID_NET 1
#define NET_F_MAC (1u << 5)
#define NET_F_STATUS (1u << 16)
#define NET_HDR 12
#define ETHERTYPE 0x88b5
#ifndef RX_BUFS
#define RX_BUFS 4 /* at most VQ_SIZE */
#endif
#define RX_BUF_BYTES 1526 /* header + 1514, what a driver without MRG_RXBUF must offer */
#define MAX_FRAME 1514

static u8 rx_page[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 tx_page[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 rx_bufs[RX_BUFS][RX_BUF_BYTES] __attribute__((aligned(16)));
static u8 tx_hdr[NET_HDR];
static u8 tx_frame[MAX_FRAME];
static struct virtio_dev dev;
static struct virtq rxq, txq;
static u8 mac[6], peer[6];
static u32 retransmits, mismatches, num_buffers_not_1;

static __attribute__((noreturn)) void fail(u32 step, const char *why) { kit_fail("virtio-net-check", step, why); }

static void put_mac(const char *key, const u8 *m) {
  serial_puts(key);
  serial_putc('=');
  for (int i = 0; i < 6; i++) {
    if (i) serial_putc(':');
    serial_put_hex8(m[i]);
  }
  serial_putc('\n');
}

static void post_rx(u16 i) {
  virtq_set(&rxq, i, rx_bufs[i], RX_BUF_BYTES, DESC_F_WRITE, 0);
  virtq_offer(&rxq, i);
}

static void net_init(void) {
  u32 base = virtio_find(VIRTIO_ID_NET, 0);
  if (!base) fail(1, "no virtio-net device in the window");
  int err = virtio_begin(&dev, base, NET_F_MAC | NET_F_STATUS);
  if (!err) err = virtio_queue(&dev, &rxq, 0, rx_page);
  if (!err) err = virtio_queue(&dev, &txq, 1, tx_page);
  if (!err) err = virtio_driver_ok(&dev);
  if (err) { kit_report("init-step", err); fail(2, "initialisation"); }
  if (!(dev.features & NET_F_MAC)) fail(2, "VIRTIO_NET_F_MAC not offered");
  for (int i = 0; i < 6; i++) mac[i] = mmio_read8(base + VM_CONFIG + i);
  u32 status = (dev.features & NET_F_STATUS) ? (u32)mmio_read8(base + VM_CONFIG + 6) | (u32)mmio_read8(base + VM_CONFIG + 7) << 8 : 1;
  put_mac("mac", mac);
  kit_report("link-up", status & 1);
  for (u16 i = 0; i < RX_BUFS; i++) post_rx(i);
  virtq_notify(&rxq);
}

static u8 pattern(u32 j, u32 seq, u32 role) { return (u8)(j * 13 + seq * 7 + role * 101); }
static u32 frame_length(u32 seq, u32 role) { return 60 + (seq * 197 + role * 500) % (MAX_FRAME - 59); }

/* Sends a frame of sequence `seq` from `role` to `to`: header and frame in two descriptors. */
static void send_frame(const u8 *to, u32 seq, u32 role) {
  u32 len = frame_length(seq, role);
  for (int i = 0; i < 6; i++) { tx_frame[i] = to[i]; tx_frame[6 + i] = mac[i]; }
  tx_frame[12] = ETHERTYPE >> 8;
  tx_frame[13] = ETHERTYPE & 0xff;
  tx_frame[14] = (u8)seq;
  tx_frame[15] = (u8)role;
  for (u32 j = 16; j < len; j++) tx_frame[j] = pattern(j, seq, role);
  kit_memset(tx_hdr, 0, NET_HDR);
  virtq_set(&txq, 0, tx_hdr, NET_HDR, DESC_F_NEXT, 1);
  virtq_set(&txq, 1, tx_frame, len, 0, 0);
  if (virtq_submit(&dev, &txq, 0) < 0) fail(3, "a transmit request was not completed");
}

/* Waits up to `polls` for a frame; returns its buffer index (its bytes after the header) or -1. */
static int receive_frame(u32 polls, u32 *frame_len) {
  u32 id, len;
  for (u32 n = 0; n < polls; n++) {
    if (virtq_take(&rxq, &id, &len)) {
      virtio_ack(&dev);
      if (id >= RX_BUFS || len < NET_HDR || len > RX_BUF_BYTES) fail(4, "a used receive element out of range");
      /* num_buffers must be 1 without MRG_RXBUF (5.1.6.3); QEMU 7.2 leaves it 0: reported, not failed. */
      u32 num_buffers = rx_bufs[id][10] | (u32)rx_bufs[id][11] << 8;
      if (num_buffers > 1) fail(4, "num_buffers above 1 without VIRTIO_NET_F_MRG_RXBUF");
      if (num_buffers != 1) num_buffers_not_1++;
      *frame_len = len - NET_HDR;
      return (int)id;
    }
    if (n % STATUS_POLL_EVERY == 0 && (vreg(&dev, VM_STATUS) & S_NEEDS_RESET)) fail(4, "the device needs a reset");
    pause_cpu();
  }
  return -1;
}

/* Whether the frame in buffer `id` is frame `seq` of `role`, byte for byte; the sender's MAC to `from`. */
static int frame_matches(int id, u32 len, u32 seq, u32 role, const u8 *to, u8 *from) {
  const u8 *f = rx_bufs[id] + NET_HDR;
  if (len != frame_length(seq, role)) return 0;
  for (int i = 0; i < 6; i++) if (f[i] != to[i] && !(to[0] == 0xff && f[i] == 0xff)) return 0;
  if (f[12] != (ETHERTYPE >> 8) || f[13] != (ETHERTYPE & 0xff) || f[14] != (u8)seq || f[15] != (u8)role) return 0;
  for (u32 j = 16; j < len; j++) if (f[j] != pattern(j, seq, role)) return 0;
  for (int i = 0; i < 6; i++) from[i] = f[6 + i];
  return 1;
}

static const u8 broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static void initiator(void) {
  int unicast = 0;
  u32 replies = 0;
  for (u32 seq = 0; seq < COUNT; seq++) {
    if (RESET && seq == COUNT / 2) {
      net_init();
      kit_report("reinitialised-at", seq);
    }
    int answered = 0;
    for (u32 attempt = 0; attempt < 200 && !answered; attempt++) {
      if (attempt) retransmits++;
      send_frame(unicast ? peer : broadcast, seq, 0);
      u32 len;
      int id;
      while (!answered && (id = receive_frame(REPLY_POLLS, &len)) >= 0) {
        u8 from[6];
        if (frame_matches(id, len, seq, 1, mac, from)) {
          answered = 1;
          for (int i = 0; i < 6; i++) peer[i] = from[i];
          unicast = 1;
        } else if (((const u8 *)rx_bufs[id] + NET_HDR)[14] != (u8)seq || ((const u8 *)rx_bufs[id] + NET_HDR)[15] != 1) {
          /* a late answer to a resent frame: ignored */
        } else {
          mismatches++;
        }
        post_rx((u16)id);
        virtq_notify(&rxq);
      }
    }
    if (!answered) fail(5, "no reply");
    replies++;
  }
  put_mac("peer", peer);
  kit_report("replies-checked", replies);
}

static void responder(void) {
  u32 next = 0;
  while (next < COUNT) {
    u32 len;
    int id = receive_frame(POLL_LIMIT * 20, &len);
    if (id < 0) fail(6, "no frame from the initiator");
    const u8 *f = rx_bufs[id] + NET_HDR;
    u32 seq = f[14];
    u8 from[6];
    if (len >= 16 && seq <= next && frame_matches(id, len, seq, 0, seq == 0 ? broadcast : mac, from)) {
      for (int i = 0; i < 6; i++) peer[i] = from[i];
      post_rx((u16)id);
      virtq_notify(&rxq);
      send_frame(peer, seq, 1);
      if (seq == next) next++;
      else retransmits++;
    } else {
      mismatches++;
      post_rx((u16)id);
      virtq_notify(&rxq);
    }
  }
  put_mac("peer", peer);
  kit_report("frames-checked", next);
}

#ifndef HOST_IP
#define HOST_IP 0x0a000001u
#endif
#ifndef GUEST_IP
#define GUEST_IP 0x0a000002u
#endif

static void put_ip(u8 *at, u32 ip) {
  for (int i = 0; i < 4; i++) at[i] = (u8)(ip >> (24 - 8 * i));
}

static u32 get_ip(const u8 *at) { return (u32)at[0] << 24 | (u32)at[1] << 16 | (u32)at[2] << 8 | at[3]; }

static void arp(void) {
  u32 ignored = 0;
  for (u32 attempt = 0; attempt < 50; attempt++) {
    /* Ethernet: broadcast, from us, ARP; ARP: Ethernet/IPv4, request, sender us, target HOST_IP. */
    for (int i = 0; i < 6; i++) { tx_frame[i] = 0xff; tx_frame[6 + i] = mac[i]; }
    tx_frame[12] = 0x08; tx_frame[13] = 0x06;
    u8 *a = tx_frame + 14;
    a[0] = 0; a[1] = 1; a[2] = 0x08; a[3] = 0x00; a[4] = 6; a[5] = 4; a[6] = 0; a[7] = 1;
    for (int i = 0; i < 6; i++) { a[8 + i] = mac[i]; a[18 + i] = 0; }
    put_ip(a + 14, GUEST_IP);
    put_ip(a + 24, HOST_IP);
    kit_memset(tx_frame + 42, 0, 18);
    kit_memset(tx_hdr, 0, NET_HDR);
    virtq_set(&txq, 0, tx_hdr, NET_HDR, DESC_F_NEXT, 1);
    virtq_set(&txq, 1, tx_frame, 60, 0, 0);
    if (virtq_submit(&dev, &txq, 0) < 0) fail(3, "a transmit request was not completed");
    u32 len;
    int id;
    while ((id = receive_frame(REPLY_POLLS, &len)) >= 0) {
      const u8 *f = rx_bufs[id] + NET_HDR;
      const u8 *r = f + 14;
      int reply = len >= 42 && f[12] == 0x08 && f[13] == 0x06 && r[6] == 0 && r[7] == 2 && get_ip(r + 24) == GUEST_IP && get_ip(r + 14) == HOST_IP;
      if (reply) {
        int to_us = 1;
        for (int i = 0; i < 6; i++) to_us &= f[i] == mac[i] && r[18 + i] == mac[i];
        kit_report("arp-reply-to-us", to_us);
        put_mac("arp-reply-mac", r + 8);
        kit_report("arp-reply-ip", get_ip(r + 14));
        kit_report("arp-requests", attempt + 1);
        kit_report("frames-ignored", ignored);
        post_rx((u16)id);
        virtq_notify(&rxq);
        return;
      }
      ignored++;
      post_rx((u16)id);
      virtq_notify(&rxq);
    }
  }
  fail(7, "no ARP reply");
}

static void endless(void) {
  serial_puts("sending\n");
  for (u32 seq = 0;; seq++) send_frame(broadcast, seq, 2);
}

static void malformed(void) {
  kit_memset(tx_hdr, 0, NET_HDR);
  tx_hdr[0] = 1; /* VIRTIO_NET_HDR_F_NEEDS_CSUM, never negotiated */
  for (int i = 0; i < 6; i++) { tx_frame[i] = 0xff; tx_frame[6 + i] = mac[i]; }
  tx_frame[12] = ETHERTYPE >> 8;
  tx_frame[13] = ETHERTYPE & 0xff;
  virtq_set(&txq, 0, tx_hdr, NET_HDR, DESC_F_NEXT, 1);
  virtq_set(&txq, 1, tx_frame, 60, 0, 0);
  kit_report("csum-request-used", (u32)virtq_submit(&dev, &txq, 0) + 1);
  virtq_set(&txq, 0, tx_hdr, NET_HDR - 4, 0, 0);
  virtq_offer(&txq, 0);
  virtq_notify(&txq);
  u32 status = 0;
  for (u32 n = 0; n < POLL_LIMIT / 64 && !(status & S_NEEDS_RESET); n++) status = vreg(&dev, VM_STATUS);
  kit_report("short-header-needs-reset", !!(status & S_NEEDS_RESET));
  virtio_ack(&dev);
  net_init();
  send_frame(broadcast, 0, 3);
  kit_report("sent-after-reset", 1);
}

/* ---- the benchmark pair (ROLE 5 and 6) ---- */
#define BENCH_ETHERTYPE 0x88b6
#define BENCH_READY 1
#define BENCH_DATA 2
#define BENCH_END 3
#define BENCH_DONE 4
#ifndef SIZE
#define SIZE 64
#endif
#ifndef DEPTH
#define DEPTH 1
#endif
#if SIZE < 16 || SIZE > MAX_FRAME || RX_BUFS > VQ_SIZE || 2 * DEPTH > VQ_SIZE
#error "the benchmark needs 16 <= SIZE <= 1514, RX_BUFS <= VQ_SIZE and 2 * DEPTH <= VQ_SIZE"
#endif

static u8 bench_frames[DEPTH][MAX_FRAME] __attribute__((aligned(16)));

static void bench_fill(u8 *f, const u8 *to, u8 kind) {
  for (int i = 0; i < 6; i++) { f[i] = to[i]; f[6 + i] = mac[i]; }
  f[12] = BENCH_ETHERTYPE >> 8;
  f[13] = BENCH_ETHERTYPE & 0xff;
  f[14] = kind;
}

/* The kind of a received benchmark frame (its sender's MAC to `from`), or 0 for any other frame. */
static u8 bench_kind(int id, u32 len, u8 *from) {
  const u8 *f = rx_bufs[id] + NET_HDR;
  if (len < 15 || f[12] != (BENCH_ETHERTYPE >> 8) || f[13] != (BENCH_ETHERTYPE & 0xff)) return 0;
  for (int i = 0; i < 6; i++) from[i] = f[6 + i];
  return f[14];
}

/* Sends one small control frame and waits for its completion. */
static void bench_control(const u8 *to, u8 kind) {
  bench_fill(tx_frame, to, kind);
  kit_memset(tx_frame + 15, 0, 45);
  kit_memset(tx_hdr, 0, NET_HDR);
  virtq_set(&txq, 0, tx_hdr, NET_HDR, DESC_F_NEXT, 1);
  virtq_set(&txq, 1, tx_frame, 60, 0, 0);
  if (virtq_submit(&dev, &txq, 0) < 0) fail(3, "a transmit request was not completed");
}

/* Acknowledges InterruptStatus once per batch of used entries (a polling driver's habit). */
static void bench_ack(void) {
  u32 isr = vreg(&dev, VM_INTERRUPT_STATUS);
  if (isr) vset(&dev, VM_INTERRUPT_ACK, isr);
}

static void bench_sender(void) {
  u8 from[6];
  for (;;) {
    u32 len;
    int id = receive_frame(POLL_LIMIT * 20, &len);
    if (id < 0) fail(8, "no READY from the receiver");
    u8 kind = bench_kind(id, len, from);
    post_rx((u16)id);
    virtq_notify(&rxq);
    if (kind == BENCH_READY) break;
  }
  for (int i = 0; i < 6; i++) peer[i] = from[i];
  for (u32 s = 0; s < DEPTH; s++) {
    bench_fill(bench_frames[s], peer, BENCH_DATA);
    for (u32 j = 15; j < SIZE; j++) bench_frames[s][j] = (u8)j;
    virtq_set(&txq, 2 * s, tx_hdr, NET_HDR, DESC_F_NEXT, (u16)(2 * s + 1));
    virtq_set(&txq, 2 * s + 1, bench_frames[s], SIZE, 0, 0);
  }
  kit_memset(tx_hdr, 0, NET_HDR);
  serial_puts("go\n");
  u16 free_slots[DEPTH];
  u32 nfree = DEPTH, sent = 0, done = 0;
  for (u32 s = 0; s < DEPTH; s++) free_slots[s] = (u16)s;
  while (done < COUNT) {
    u32 offered = 0;
    while (nfree > 0 && sent < COUNT) {
      virtq_offer(&txq, (u16)(2 * free_slots[--nfree]));
      sent++;
      offered++;
    }
    if (offered) virtq_notify(&txq);
    u32 id, len, taken = 0;
    for (u32 n = 0; !taken && n < POLL_LIMIT; n++) {
      while (virtq_take(&txq, &id, &len)) {
        if (id >= 2 * DEPTH || id % 2) fail(9, "a used transmit element out of range");
        free_slots[nfree++] = (u16)(id / 2);
        taken++;
      }
      if (!taken) pause_cpu();
    }
    if (!taken) fail(9, "transmit requests were not completed");
    bench_ack();
    done += taken;
  }
  kit_report("sent", done);
  /* The receiver may have no buffer for one END: resend until DONE (or give up: it may have gone). */
  u32 attempts = 0, done_seen = 0;
  for (; attempts < 200 && !done_seen; attempts++) {
    bench_control(peer, BENCH_END);
    u32 len;
    int id;
    while (!done_seen && (id = receive_frame(REPLY_POLLS, &len)) >= 0) {
      done_seen = bench_kind(id, len, from) == BENCH_DONE;
      post_rx((u16)id);
      virtq_notify(&rxq);
    }
  }
  kit_report("end-frames", attempts);
  kit_report("done-seen", done_seen);
}

static void bench_receiver(void) {
  u8 from[6];
  u32 received = 0;
  int started = 0;
  for (;;) {
    if (!started) bench_control(broadcast, BENCH_READY);
    u32 id, len, taken = 0;
    for (u32 n = 0; !taken && n < (started ? POLL_LIMIT * 20 : REPLY_POLLS); n++) {
      while (virtq_take(&rxq, &id, &len)) {
        if (id >= RX_BUFS || len < NET_HDR || len > RX_BUF_BYTES) fail(4, "a used receive element out of range");
        u8 kind = bench_kind((int)id, len - NET_HDR, from);
        if (kind == BENCH_DATA) {
          if (!started) serial_puts("go\n");
          started = 1;
          received++;
        } else if (kind == BENCH_END && started) {
          kit_report("received", received);
          for (int i = 0; i < 6; i++) peer[i] = from[i];
          post_rx((u16)id);
          virtq_notify(&rxq);
          bench_ack();
          for (int k = 0; k < 4; k++) bench_control(peer, BENCH_DONE);
          return;
        }
        post_rx((u16)id);
        taken++;
      }
      if (!taken) pause_cpu();
    }
    if (taken) {
      virtq_notify(&rxq);
      bench_ack();
    } else if (started) {
      fail(10, "the sender stopped before END");
    }
  }
}

void main(u32 info) {
  (void)info;
  net_init();
  if (ROLE == 0) initiator();
  else if (ROLE == 1) responder();
  else if (ROLE == 2) endless();
  else if (ROLE == 3) malformed();
  else if (ROLE == 4) arp();
  else if (ROLE == 5) bench_sender();
  else bench_receiver();
  kit_report("retransmits", retransmits);
  kit_report("mismatches", mismatches);
  kit_report("num-buffers-not-1", num_buffers_not_1);
  kit_report("interrupts", dev.interrupts_seen);
  serial_puts("virtio-net-check: done\n");
  guest_exit(0);
}
