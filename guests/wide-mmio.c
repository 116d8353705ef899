/*
 * 64-bit MMIO values, many times over: each iteration writes a value whose two 32-bit
 * halves both have their top bit set with one `movq`, then reads the register back with
 * one `movq` and checks that the device answered with the two halves swapped. WARMUP
 * iterations run first (the host's code gets hot), then the device's CONTROL register
 * marks the start and the end of the measured ones.
 *
 * arg (RDI): the device's MMIO base. Built with WARMUP and ITERATIONS (measured) defined.
 * Results at RESULTS: iterations checked, mismatches, the index and value of the first.
 */
#include "kit.h"

#define VALUE 0x00
#define CONTROL 0x08
#define CONTROL_START 1
#define CONTROL_STOP 2
#define RESULTS 0x80000
#if !defined(WARMUP) || !defined(ITERATIONS)
#error "build with -DWARMUP=n -DITERATIONS=n"
#endif

struct results {
  u64 checked;
  u64 mismatches;
  u64 first_bad_index;
  u64 first_bad_value;
};

static inline void store64(u64 address, u64 value) {
  __asm__ volatile("movq %0, (%1)" : : "r"(value), "r"(address) : "memory");
}

static inline u64 load64(u64 address) {
  u64 value;
  __asm__ volatile("movq (%1), %0" : "=r"(value) : "r"(address) : "memory");
  return value;
}

static inline void store32(u64 address, u32 value) {
  __asm__ volatile("movl %0, (%1)" : : "r"(value), "r"(address) : "memory");
}

/* Both halves keep bit 31 set for any i below 2^31; i changes the low bits of each half. */
static inline u64 pattern(u64 i) {
  return 0xdeadbeefcafef00dul ^ (i << 32 | i);
}

static inline u64 swapped(u64 v) {
  return v >> 32 | v << 32;
}

static void run(u64 base, u64 from, u64 to, volatile struct results *r) {
  for (u64 i = from; i < to; i++) {
    u64 v = pattern(i);
    store64(base + VALUE, v);
    u64 read = load64(base + VALUE);
    if (read != swapped(v) && r->mismatches++ == 0) {
      r->first_bad_index = i;
      r->first_bad_value = read;
    }
    r->checked++;
  }
}

void main(u64 base) {
  volatile struct results *r = (volatile struct results *)RESULTS;
  r->checked = 0;
  r->mismatches = 0;
  run(base, 0, WARMUP, r);
  store32(base + CONTROL, CONTROL_START);
  run(base, WARMUP, WARMUP + ITERATIONS, r);
  store32(base + CONTROL, CONTROL_STOP);
  guest_exit(0);
}
