/*
 * A polled virtio-console driver (one port, no multiport) that echoes: it says
 * "console: ready\n" on the port, sends back every byte the host writes until ECHO_BYTES
 * have come, says "console: done\n", and with VIRTIO_CONSOLE_F_EMERG_WRITE writes '!' through
 * emerg_wr. With RESET=1 it resets and re-initialises the device half way through. It
 * reports on COM1 in key=value lines (echoed byte count, FNV-1a of what it got).
 * The same kernel runs under workervisor's PC machine and QEMU -M microvm.
 * Exit status 0 when every step worked; otherwise the number of the failed step.
 */
#include "kit.h"
#include "virtio-mmio.h"

#ifndef ECHO_BYTES
#define ECHO_BYTES 4096
#endif
#ifndef RESET
#define RESET 0
#endif

#define VIRTIO_ID_CONSOLE 3
#define CONSOLE_F_EMERG_WRITE (1u << 2)
#define RX_BUFS 4
#define RX_BUF_BYTES 256

static u8 rx_page[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 tx_page[VQ_RING_BYTES] __attribute__((aligned(4096)));
static u8 rx_bufs[RX_BUFS][RX_BUF_BYTES];
static struct virtio_dev dev;
static struct virtq rxq, txq;

static __attribute__((noreturn)) void fail(u32 step, const char *why) { kit_fail("virtio-console-check", step, why); }

static void console_init(void) {
  u32 base = virtio_find(VIRTIO_ID_CONSOLE, 0);
  if (!base) fail(1, "no virtio-console device in the window");
  int err = virtio_begin(&dev, base, CONSOLE_F_EMERG_WRITE);
  if (!err) err = virtio_queue(&dev, &rxq, 0, rx_page);
  if (!err) err = virtio_queue(&dev, &txq, 1, tx_page);
  if (!err) err = virtio_driver_ok(&dev);
  if (err) { kit_report("init-step", err); fail(2, "initialisation"); }
  for (u16 i = 0; i < RX_BUFS; i++) {
    virtq_set(&rxq, i, rx_bufs[i], RX_BUF_BYTES, DESC_F_WRITE, 0);
    virtq_offer(&rxq, i);
  }
  virtq_notify(&rxq);
}

static void send(const void *bytes, u32 len) {
  virtq_set(&txq, 0, bytes, len, 0, 0);
  if (virtq_submit(&dev, &txq, 0) < 0) fail(3, "a transmit request was not completed");
}

static u32 length_of(const char *s) {
  u32 n = 0;
  while (s[n]) n++;
  return n;
}

void main(u32 info) {
  (void)info;
  console_init();
  const char *ready = "console: ready\n";
  send(ready, length_of(ready));
  u32 echoed = 0, hash = 2166136261u, chunks = 0;
  int was_reset = 0;
  while (echoed < ECHO_BYTES) {
    if (RESET && !was_reset && echoed >= ECHO_BYTES / 2) {
      console_init();
      was_reset = 1;
      kit_report("reinitialised-after", echoed);
    }
    u32 id, len, n;
    for (n = 0; n < POLL_LIMIT * 10 && !virtq_take(&rxq, &id, &len); n++) pause_cpu();
    if (n == POLL_LIMIT * 10) fail(4, "no input from the host");
    virtio_ack(&dev);
    if (id >= RX_BUFS || len == 0 || len > RX_BUF_BYTES) fail(5, "a used receive element out of range");
    for (u32 i = 0; i < len; i++) hash = (hash ^ rx_bufs[id][i]) * 16777619u;
    send(rx_bufs[id], len);
    echoed += len;
    chunks++;
    virtq_offer(&rxq, (u16)id);
    virtq_notify(&rxq);
  }
  const char *done = "console: done\n";
  send(done, length_of(done));
  if (dev.features & CONSOLE_F_EMERG_WRITE) mmio_write32(dev.base + VM_CONFIG + 8, '!');
  kit_report("emerg-write", !!(dev.features & CONSOLE_F_EMERG_WRITE));
  kit_report("echoed", echoed);
  kit_report("chunks", chunks);
  kit_report("fnv", hash);
  serial_puts("virtio-console-check: done\n");
  guest_exit(0);
}
