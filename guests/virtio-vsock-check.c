/*
 * A polled virtio-vsock driver (stream sockets) that makes one connection each way and
 * reports on COM1 in key=value lines:
 *   part A, guest-initiated: REQUEST to host port HOST_PORT from guest port 1234, A_BYTES of
 *     a known pattern sent within the host's credit, then A_BYTES back that must be the
 *     pattern XOR 0x5a (the host's server), then the host's SHUTDOWN answered with RST;
 *   part B, host-initiated: waits for a REQUEST to port GUEST_PORT, accepts it, checks
 *     B_BYTES of the host's pattern byte for byte while giving only GUEST_BUF_ALLOC bytes of
 *     credit (CREDIT_UPDATE as it consumes; more than the credit in flight is a failure),
 *     echoes each packet back, then SHUTDOWN both ways and waits for the host's RST.
 * Exit status 0 when every step worked; otherwise the number of the failed step.
 */
#include "kit.h"
#include "virtio-mmio.h"

#ifndef HOST_PORT
#define HOST_PORT 5000
#endif
#ifndef GUEST_PORT
#define GUEST_PORT 6000
#endif
#ifndef A_BYTES
#define A_BYTES 3000
#endif
#ifndef B_BYTES
#define B_BYTES 5000
#endif
#ifndef GUEST_BUF_ALLOC
#define GUEST_BUF_ALLOC 2048
#endif

#define VIRTIO_ID_VSOCK 19
#define VSOCK_F_STREAM (1u << 0)
#define HOST_CID 2
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define TYPE_STREAM 1
#define RX_BUFS 4
#define RX_PAYLOAD 1024
#define CHUNK 700

struct vsock_hdr {
  u64x src_cid, dst_cid;
  u32 src_port, dst_port, len;
  u16 type, op;
  u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static u8 rx_page[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 tx_page[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 event_page[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 rx_bufs[RX_BUFS][sizeof(struct vsock_hdr) + RX_PAYLOAD] __attribute__((aligned(8)));
static u8 events[2][8];
static u8 tx_payload[CHUNK];
static struct vsock_hdr tx_hdr;
static struct virtio_dev dev;
static struct virtq rxq, txq, eventq;
static u64x cid;

/* One connection's accounting. */
struct conn {
  u32 local_port, peer_port;
  u32 peer_buf_alloc, peer_fwd_cnt; /* the host's credit, from its last header */
  u32 tx_cnt;                       /* bytes sent */
  u32 fwd_cnt, announced_fwd;       /* bytes consumed, and last told to the host */
};

static __attribute__((noreturn)) void fail(u32 step, const char *why) { kit_fail("virtio-vsock-check", step, why); }

static void vsock_init(void) {
  u32 base = virtio_find(VIRTIO_ID_VSOCK, 0);
  if (!base) fail(1, "no virtio-vsock device in the window");
  int err = virtio_begin(&dev, base, VSOCK_F_STREAM);
  if (!err) err = virtio_queue(&dev, &rxq, 0, rx_page);
  if (!err) err = virtio_queue(&dev, &txq, 1, tx_page);
  if (!err) err = virtio_queue(&dev, &eventq, 2, event_page);
  if (!err) err = virtio_driver_ok(&dev);
  if (err) { kit_report("init-step", err); fail(2, "initialisation"); }
  cid = (u64x)vreg(&dev, VM_CONFIG) | (u64x)vreg(&dev, VM_CONFIG + 4) << 32;
  kit_report("guest-cid", (u32)cid);
  for (u16 i = 0; i < RX_BUFS; i++) {
    virtq_set(&rxq, i, rx_bufs[i], sizeof rx_bufs[i], DESC_F_WRITE, 0);
    virtq_offer(&rxq, i);
  }
  virtq_notify(&rxq);
  for (u16 i = 0; i < 2; i++) {
    virtq_set(&eventq, i, events[i], sizeof events[i], DESC_F_WRITE, 0);
    virtq_offer(&eventq, i);
  }
  virtq_notify(&eventq);
}

static void send_packet(struct conn *c, u16 op, u32 flags, const void *payload, u32 len) {
  tx_hdr = (struct vsock_hdr){cid, HOST_CID, c->local_port, c->peer_port, len, TYPE_STREAM, op, flags, GUEST_BUF_ALLOC, c->fwd_cnt};
  c->announced_fwd = c->fwd_cnt;
  virtq_set(&txq, 0, &tx_hdr, sizeof tx_hdr, len ? DESC_F_NEXT : 0, 1);
  if (len) virtq_set(&txq, 1, payload, len, 0, 0);
  if (virtq_submit(&dev, &txq, 0) < 0) fail(3, "a transmit packet was not completed");
  c->tx_cnt += len;
}

/* Waits for the next packet; returns its rx buffer (to give back with repost) and its header. */
static int receive_packet(struct vsock_hdr **h) {
  u32 id, len;
  for (u32 n = 0; n < POLL_LIMIT * 10; n++) {
    if (virtq_take(&rxq, &id, &len)) {
      virtio_ack(&dev);
      if (id >= RX_BUFS || len < sizeof(struct vsock_hdr) || len > sizeof rx_bufs[0]) fail(4, "a used receive element out of range");
      *h = (struct vsock_hdr *)rx_bufs[id];
      if ((*h)->len != len - sizeof(struct vsock_hdr)) fail(4, "header len is not the used length");
      if ((*h)->src_cid != HOST_CID || (*h)->dst_cid != cid || (*h)->type != TYPE_STREAM) fail(4, "a packet not from the host to us");
      return (int)id;
    }
    if (n % STATUS_POLL_EVERY == 0 && (vreg(&dev, VM_STATUS) & S_NEEDS_RESET)) fail(4, "the device needs a reset");
    pause_cpu();
  }
  fail(4, "no packet from the host");
}

static void repost(int id) {
  virtq_offer(&rxq, (u16)id);
  virtq_notify(&rxq);
}

/* Takes the host's credit from a header of this connection. */
static void note_credit(struct conn *c, const struct vsock_hdr *h) {
  c->peer_buf_alloc = h->buf_alloc;
  c->peer_fwd_cnt = h->fwd_cnt;
}

static u32 peer_free(const struct conn *c) { return c->peer_buf_alloc - (c->tx_cnt - c->peer_fwd_cnt); }

static u8 pattern_a(u32 i) { return (u8)(i * 7 + 1); }
static u8 pattern_b(u32 i) { return (u8)(i * 11 + (i >> 9) + 3); }

/* Consumes RW payload: the credit check, then a CREDIT_UPDATE once half the window is free again. */
static void consumed(struct conn *c, u32 n, u32 *received) {
  if (*received + n - c->announced_fwd > GUEST_BUF_ALLOC) fail(9, "the host sent more than the guest's credit");
  *received += n;
  c->fwd_cnt += n;
}

static void credit_if_due(struct conn *c) {
  if (c->fwd_cnt - c->announced_fwd >= GUEST_BUF_ALLOC / 2) send_packet(c, OP_CREDIT_UPDATE, 0, 0, 0);
}

static void part_a(void) {
  struct conn c = {1234, HOST_PORT, 0, 0, 0, 0, 0};
  struct vsock_hdr *h;
  send_packet(&c, OP_REQUEST, 0, 0, 0);
  int id = receive_packet(&h);
  if (h->op != OP_RESPONSE || h->src_port != HOST_PORT || h->dst_port != 1234) { kit_report("a-op", h->op); fail(5, "no RESPONSE to the REQUEST"); }
  note_credit(&c, h);
  kit_report("a-host-buf-alloc", h->buf_alloc);
  repost(id);
  u32 sent = 0, received = 0, credit_waits = 0;
  while (sent < A_BYTES) {
    u32 n = A_BYTES - sent < CHUNK ? A_BYTES - sent : CHUNK;
    if (peer_free(&c) < n) {
      credit_waits++;
      send_packet(&c, OP_CREDIT_REQUEST, 0, 0, 0);
      id = receive_packet(&h);
      note_credit(&c, h);
      repost(id);
      continue;
    }
    for (u32 i = 0; i < n; i++) tx_payload[i] = pattern_a(sent + i);
    send_packet(&c, OP_RW, 0, tx_payload, n);
    sent += n;
  }
  int shutdown = 0;
  while (received < A_BYTES || !shutdown) {
    id = receive_packet(&h);
    note_credit(&c, h);
    if (h->op == OP_RW) {
      const u8 *p = (const u8 *)(h + 1);
      for (u32 i = 0; i < h->len; i++) if (p[i] != (pattern_a(received + i) ^ 0x5a)) fail(6, "the host's answer is not the pattern XOR 0x5a");
      consumed(&c, h->len, &received);
    } else if (h->op == OP_SHUTDOWN) {
      shutdown = 1;
    } else if (h->op != OP_CREDIT_UPDATE) {
      kit_report("a-op", h->op);
      fail(6, "an unexpected packet in part A");
    }
    repost(id);
    if (!shutdown) credit_if_due(&c);
  }
  if (received != A_BYTES) fail(6, "more data than was sent");
  send_packet(&c, OP_RST, 0, 0, 0);
  kit_report("a-received", received);
  kit_report("a-credit-waits", credit_waits);
  serial_puts("part-a=ok\n");
}

static void part_b(void) {
  struct vsock_hdr *h;
  int id = receive_packet(&h);
  if (h->op != OP_REQUEST || h->dst_port != GUEST_PORT) { kit_report("b-op", h->op); fail(7, "no REQUEST to the guest's port"); }
  struct conn c = {GUEST_PORT, h->src_port, 0, 0, 0, 0, 0};
  note_credit(&c, h);
  kit_report("b-host-port", h->src_port);
  repost(id);
  send_packet(&c, OP_RESPONSE, 0, 0, 0);
  u32 received = 0, echoed = 0;
  while (received < B_BYTES) {
    id = receive_packet(&h);
    note_credit(&c, h);
    if (h->op == OP_RW) {
      const u8 *p = (const u8 *)(h + 1);
      for (u32 i = 0; i < h->len; i++) if (p[i] != pattern_b(received + i)) fail(8, "the host's data is not its pattern");
      u32 n = h->len;
      if (peer_free(&c) < n) fail(8, "no host credit for the echo"); /* the host gives far more than B_BYTES */
      consumed(&c, n, &received);
      /* The echo goes straight from the receive buffer, which is given back after it. */
      for (u32 off = 0; off < n; off += CHUNK) send_packet(&c, OP_RW, 0, p + off, n - off < CHUNK ? n - off : CHUNK);
      repost(id);
      echoed += n;
      credit_if_due(&c);
    } else if (h->op == OP_CREDIT_UPDATE) {
      repost(id);
    } else {
      kit_report("b-op", h->op);
      fail(8, "an unexpected packet in part B");
    }
  }
  send_packet(&c, OP_SHUTDOWN, 3, 0, 0);
  for (;;) {
    id = receive_packet(&h);
    u16 op = h->op;
    repost(id);
    if (op == OP_RST) break;
    if (op != OP_CREDIT_UPDATE && op != OP_RW) { kit_report("b-op", op); fail(10, "no RST after the SHUTDOWN"); }
  }
  kit_report("b-received", received);
  kit_report("b-echoed", echoed);
  serial_puts("part-b=ok\n");
}

void main(u32 info) {
  (void)info;
  vsock_init();
  part_a();
  part_b();
  serial_puts("virtio-vsock-check: done\n");
  guest_exit(0);
}
