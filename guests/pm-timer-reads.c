/*
 * The ACPI PM timer read many times in a row: WARMUP reads (the host's code gets hot),
 * then METER_PORT's start, ITERATIONS measured reads, and its stop. Counts the reads that
 * found the counter moved since the previous one.
 *
 * Built with WARMUP, ITERATIONS and METER_PORT defined. Results at RESULTS: reads made,
 * reads that saw the counter move.
 */
#include "kit.h"

#define RESULTS 0x80000
#define METER_START 1
#define METER_STOP 2
#if !defined(WARMUP) || !defined(ITERATIONS) || !defined(METER_PORT)
#error "build with -DWARMUP=n -DITERATIONS=n -DMETER_PORT=port"
#endif

struct results {
  u64 reads;
  u64 moved;
};

static u32 read_many(u32 count, u32 last, volatile struct results *r) {
  for (u32 i = 0; i < count; i++) {
    u32 now = pm_timer();
    if (now != last) r->moved++;
    last = now;
    r->reads++;
  }
  return last;
}

void main(u64 arg) {
  (void)arg;
  volatile struct results *r = (volatile struct results *)RESULTS;
  r->reads = 0;
  r->moved = 0;
  u32 last = read_many(WARMUP, pm_timer(), r);
  outl(METER_PORT, METER_START);
  read_many(ITERATIONS, last, r);
  outl(METER_PORT, METER_STOP);
  guest_exit(0);
}
