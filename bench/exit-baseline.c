/*
 * exit-baseline: the C reference for workervisor's exit benchmarks.
 *
 * Runs the same guest image the TypeScript runtime runs (memory bytes, registers and
 * special registers computed by the TS flat loader, passed in a job file so the two can
 * never drift) with raw KVM ioctls, one pthread per vCPU, and handles every exit inline
 * on the vCPU thread: no channel, no dispatcher, no other thread.
 *
 * Timing method (the same as the JS side): the guest writes a marker port before every
 * batch of K exits; the handler takes CLOCK_MONOTONIC there and nowhere else. The TS side
 * turns the marker timestamps into per-exit figures (see bench/stats.ts).
 *
 * A job may ask for a device's work on every target write (work_ns): a busy-wait of that
 * long on the vCPU thread, what a VMM handling the write inline pays.
 *
 * usage: exit-baseline JOBFILE     (job format: see bench/c-baseline.ts, writeJob)
 * output on stdout, one record a line:
 *   start_ns NS                      create (open /dev/kvm) to the first guest exit
 *   vcpu I writes N reads N hlts N msr_reads N msr_writes N markers N
 *   eventfd I N                      signals counted by vCPU I's ioeventfd
 *   marks I T0 T1 ...                marker timestamps of vCPU I, CLOCK_MONOTONIC ns
 * Exit status 0 on success; on failure a message on stderr and status 1.
 *
 * Build: cc -O2 -o exit-baseline exit-baseline.c -lpthread
 * KVM facts used here come from include/uapi/linux/kvm.h and Documentation/virt/kvm/api.rst.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_VCPUS 64
#define MAX_CPUID 256
#define MAX_IMAGES 8

/* Same addresses the TS backend gives KVM (runtime/hypervisor/kvm/kvm-vm.ts). */
#define TSS_ADDRESS 0xfffbd000u
#define IDENTITY_MAP_ADDRESS 0xfffbc000ull

/* KVM_MSR_EXIT_REASON_{INVAL,UNKNOWN,FILTER}, as the TS backend enables them. */
#define MSR_EXIT_REASONS (1u | 2u | 4u)

enum target_space { TARGET_NONE, TARGET_PIO, TARGET_MMIO, TARGET_MSR };

struct segment_spec {
  uint64_t base;
  uint32_t limit;
  uint16_t selector;
  uint8_t type, present, dpl, db, s, l, g, avl, unusable;
};

struct image {
  uint64_t gpa;
  char path[4096];
};

struct job {
  uint64_t memory;
  int vcpus;
  int images;
  struct image image[MAX_IMAGES];
  /* Register state: one set for all vCPUs except rdi (the parameter block). */
  uint64_t rip, rsp, rflags;
  uint64_t rdi[MAX_VCPUS];
  int have_sregs;
  struct segment_spec seg[8]; /* cs ds es fs gs ss tr ldt, in kvm_sregs order */
  int have_seg[8];
  uint64_t gdt_base, idt_base;
  uint16_t gdt_limit, idt_limit;
  uint64_t cr0, cr3, cr4, efer;
  int user_msrs;
  uint32_t marker_base, finish_port;
  enum target_space target;
  uint64_t target_base, target_stride, target_length;
  int ioevent_mmio; /* 1: MMIO, 0: PIO */
  int ioevents;
  uint64_t ioevent_base, ioevent_stride;
  uint32_t ioevent_size;
  size_t max_marks;
  uint64_t work_ns; /* busy-wait per target write: a device's work done inline on the vCPU thread */
};

struct vcpu {
  int index;
  int fd;
  struct kvm_run *run;
  pthread_t thread;
  uint64_t writes, reads, hlts, msr_reads, msr_writes;
  uint64_t *marks;
  size_t marks_count;
  int eventfd;
  const char *error;
  char detail[256];
};

static struct job job;
static int kvm_fd = -1, vm_fd = -1;
static size_t run_size;
static uint8_t *ram;
static struct vcpu vcpus[MAX_VCPUS];
static pthread_barrier_t barrier;
static uint64_t t_create;
static uint64_t t_first_exit;
static struct kvm_cpuid2 *cpuid;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "exit-baseline: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *message) {
  fprintf(stderr, "exit-baseline: %s\n", message);
  exit(1);
}

static const char *const SEGMENT_NAMES[8] = {"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"};

/* One "key values..." line per setting; unknown keys are an error so drift shows. */
static void read_job(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) die(path);
  char line[8192];
  job.vcpus = 1;
  job.rflags = 2;
  job.max_marks = 1024;
  while (fgets(line, sizeof line, f)) {
    char key[64];
    if (sscanf(line, "%63s", key) != 1 || key[0] == '#') continue;
    const char *rest = line + strlen(key);
    if (!strcmp(key, "memory")) {
      job.memory = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "vcpus")) {
      job.vcpus = atoi(rest);
    } else if (!strcmp(key, "image")) {
      if (job.images == MAX_IMAGES) fail("too many images");
      struct image *im = &job.image[job.images++];
      if (sscanf(rest, "%lli %4095s", (long long *)&im->gpa, im->path) != 2) fail("bad image line");
    } else if (!strcmp(key, "rip")) {
      job.rip = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "rsp")) {
      job.rsp = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "rflags")) {
      job.rflags = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "rdi")) {
      int i;
      unsigned long long v;
      if (sscanf(rest, "%d %lli", &i, (long long *)&v) != 2 || i < 0 || i >= MAX_VCPUS) fail("bad rdi line");
      job.rdi[i] = v;
    } else if (!strcmp(key, "segment")) {
      char name[8];
      unsigned long long base;
      unsigned limit, selector, type, present, dpl, db, s, l, g, avl, unusable;
      if (sscanf(rest, "%7s %lli %i %i %u %u %u %u %u %u %u %u %u", name, (long long *)&base, &limit, &selector,
                 &type, &present, &dpl, &db, &s, &l, &g, &avl, &unusable) != 13)
        fail("bad segment line");
      int i;
      for (i = 0; i < 8 && strcmp(SEGMENT_NAMES[i], name); i++) {
      }
      if (i == 8) fail("unknown segment");
      job.seg[i] = (struct segment_spec){base, limit, (uint16_t)selector, (uint8_t)type, (uint8_t)present,
                                         (uint8_t)dpl, (uint8_t)db, (uint8_t)s, (uint8_t)l, (uint8_t)g,
                                         (uint8_t)avl, (uint8_t)unusable};
      job.have_seg[i] = 1;
      job.have_sregs = 1;
    } else if (!strcmp(key, "gdt")) {
      unsigned limit;
      if (sscanf(rest, "%lli %i", (long long *)&job.gdt_base, &limit) != 2) fail("bad gdt line");
      job.gdt_limit = (uint16_t)limit;
    } else if (!strcmp(key, "idt")) {
      unsigned limit;
      if (sscanf(rest, "%lli %i", (long long *)&job.idt_base, &limit) != 2) fail("bad idt line");
      job.idt_limit = (uint16_t)limit;
    } else if (!strcmp(key, "cr0")) {
      job.cr0 = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "cr3")) {
      job.cr3 = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "cr4")) {
      job.cr4 = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "efer")) {
      job.efer = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "user_msrs")) {
      job.user_msrs = atoi(rest);
    } else if (!strcmp(key, "marker_base")) {
      job.marker_base = (uint32_t)strtoul(rest, NULL, 0);
    } else if (!strcmp(key, "finish_port")) {
      job.finish_port = (uint32_t)strtoul(rest, NULL, 0);
    } else if (!strcmp(key, "work_ns")) {
      job.work_ns = strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "max_marks")) {
      job.max_marks = (size_t)strtoull(rest, NULL, 0);
    } else if (!strcmp(key, "target")) {
      char space[8];
      if (sscanf(rest, "%7s %lli %lli %lli", space, (long long *)&job.target_base, (long long *)&job.target_stride,
                 (long long *)&job.target_length) != 4)
        fail("bad target line");
      job.target = !strcmp(space, "pio") ? TARGET_PIO : !strcmp(space, "mmio") ? TARGET_MMIO
                 : !strcmp(space, "msr") ? TARGET_MSR : TARGET_NONE;
    } else if (!strcmp(key, "ioeventfd")) {
      char space[8];
      if (sscanf(rest, "%7s %lli %lli %u", space, (long long *)&job.ioevent_base, (long long *)&job.ioevent_stride,
                 &job.ioevent_size) != 4)
        fail("bad ioeventfd line");
      job.ioevent_mmio = !strcmp(space, "mmio");
      job.ioevents = 1;
    } else {
      fprintf(stderr, "exit-baseline: unknown job key '%s'\n", key);
      exit(1);
    }
  }
  fclose(f);
  if (job.vcpus < 1 || job.vcpus > MAX_VCPUS) fail("vcpus out of range");
  if (job.memory == 0 || job.memory % 4096) fail("memory must be a positive multiple of 4096");
}

static void load_images(void) {
  for (int i = 0; i < job.images; i++) {
    FILE *f = fopen(job.image[i].path, "rb");
    if (!f) die(job.image[i].path);
    uint64_t at = job.image[i].gpa;
    size_t n;
    uint8_t buffer[65536];
    while ((n = fread(buffer, 1, sizeof buffer, f)) > 0) {
      if (at + n > job.memory) fail("image does not fit in guest memory");
      memcpy(ram + at, buffer, n);
      at += n;
    }
    fclose(f);
  }
}

static void setup_vm(void) {
  kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm_fd < 0) die("open /dev/kvm");
  if (ioctl(kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) fail("unexpected KVM API version");
  vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  if (vm_fd < 0) die("KVM_CREATE_VM");
  int size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size < 0) die("KVM_GET_VCPU_MMAP_SIZE");
  run_size = (size_t)size;
  if (ioctl(vm_fd, KVM_SET_TSS_ADDR, TSS_ADDRESS) < 0) die("KVM_SET_TSS_ADDR");
  uint64_t identity = IDENTITY_MAP_ADDRESS;
  if (ioctl(vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0) die("KVM_SET_IDENTITY_MAP_ADDR");

  ram = mmap(NULL, job.memory, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram == MAP_FAILED) die("mmap guest memory");
  load_images();
  struct kvm_userspace_memory_region region = {
      .slot = 0, .flags = 0, .guest_phys_addr = 0, .memory_size = job.memory, .userspace_addr = (uint64_t)ram};
  if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

  if (job.user_msrs) {
    struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR};
    cap.args[0] = MSR_EXIT_REASONS;
    if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0) die("KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)");
  }

  cpuid = calloc(1, sizeof *cpuid + MAX_CPUID * sizeof(struct kvm_cpuid_entry2));
  if (!cpuid) die("calloc");
  cpuid->nent = MAX_CPUID;
  if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");

  for (int i = 0; i < job.vcpus; i++) {
    struct vcpu *v = &vcpus[i];
    v->index = i;
    v->eventfd = -1;
    v->fd = ioctl(vm_fd, KVM_CREATE_VCPU, i);
    if (v->fd < 0) die("KVM_CREATE_VCPU");
    v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) die("mmap kvm_run");
    v->marks = calloc(job.max_marks, sizeof(uint64_t));
    if (!v->marks) die("calloc");
    if (job.ioevents) {
      v->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (v->eventfd < 0) die("eventfd");
      struct kvm_ioeventfd event = {
          .datamatch = 0,
          .addr = job.ioevent_base + (uint64_t)i * job.ioevent_stride,
          .len = job.ioevent_size,
          .fd = v->eventfd,
          .flags = job.ioevent_mmio ? 0 : KVM_IOEVENTFD_FLAG_PIO,
      };
      if (ioctl(vm_fd, KVM_IOEVENTFD, &event) < 0) die("KVM_IOEVENTFD");
    }
  }
}

static void set_segment(struct kvm_segment *to, const struct segment_spec *from) {
  to->base = from->base;
  to->limit = from->limit;
  to->selector = from->selector;
  to->type = from->type;
  to->present = from->present;
  to->dpl = from->dpl;
  to->db = from->db;
  to->s = from->s;
  to->l = from->l;
  to->g = from->g;
  to->avl = from->avl;
  to->unusable = from->unusable;
}

/* The vCPU state the TS loader computed; the worker applies it the same way (cpuid, sregs, regs). */
static void setup_vcpu_state(struct vcpu *v) {
  /* Per-vCPU APIC ID, as runtime/boot/cpuid.ts does. */
  struct kvm_cpuid2 *mine = malloc(sizeof *cpuid + cpuid->nent * sizeof(struct kvm_cpuid_entry2));
  if (!mine) die("malloc");
  memcpy(mine, cpuid, sizeof *cpuid + cpuid->nent * sizeof(struct kvm_cpuid_entry2));
  for (uint32_t i = 0; i < mine->nent; i++) {
    struct kvm_cpuid_entry2 *e = &mine->entries[i];
    if (e->function == 1) e->ebx = (e->ebx & 0x00ffffffu) | ((uint32_t)(v->index & 0xff) << 24);
    else if (e->function == 0xb || e->function == 0x1f) e->edx = (uint32_t)v->index;
  }
  if (ioctl(v->fd, KVM_SET_CPUID2, mine) < 0) die("KVM_SET_CPUID2");
  free(mine);

  struct kvm_sregs sregs;
  if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  if (job.have_sregs) {
    struct kvm_segment *segments[8] = {&sregs.cs, &sregs.ds, &sregs.es, &sregs.fs,
                                       &sregs.gs, &sregs.ss, &sregs.tr, &sregs.ldt};
    for (int i = 0; i < 8; i++)
      if (job.have_seg[i]) set_segment(segments[i], &job.seg[i]);
    sregs.gdt.base = job.gdt_base;
    sregs.gdt.limit = job.gdt_limit;
    sregs.idt.base = job.idt_base;
    sregs.idt.limit = job.idt_limit;
    sregs.cr0 = job.cr0;
    sregs.cr3 = job.cr3;
    sregs.cr4 = job.cr4;
    sregs.efer = job.efer;
  }
  if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");

  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = job.rip;
  regs.rsp = job.rsp;
  regs.rflags = job.rflags;
  regs.rdi = job.rdi[v->index];
  if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");
}

static int in_target(uint64_t address, int index) {
  uint64_t base = job.target_base + (uint64_t)index * job.target_stride;
  return address >= base && address < base + job.target_length;
}

static void record_first_exit(void) {
  uint64_t zero = 0;
  __atomic_compare_exchange_n(&t_first_exit, &zero, now_ns(), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static void handle_marker_write(struct vcpu *v) {
  if (v->marks_count < job.max_marks) v->marks[v->marks_count] = now_ns();
  v->marks_count++;
}

/* The device's work, as a spin: it occupies the vCPU thread, as kvmtool or QEMU handling it inline would. */
static void do_work(void) {
  if (job.work_ns == 0) return;
  uint64_t until = now_ns() + job.work_ns;
  while (now_ns() < until) {
  }
}

static void *vcpu_thread(void *arg) {
  struct vcpu *v = arg;
  struct kvm_run *run = v->run;
  setup_vcpu_state(v);
  uint32_t marker = job.marker_base + (uint32_t)v->index;
  for (;;) {
    if (ioctl(v->fd, KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      v->error = "KVM_RUN failed";
      snprintf(v->detail, sizeof v->detail, "%s", strerror(errno));
      return NULL;
    }
    switch (run->exit_reason) {
      case KVM_EXIT_IO: {
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        uint16_t port = run->io.port;
        if (run->io.direction == KVM_EXIT_IO_OUT) {
          if (port == marker) {
            handle_marker_write(v);
          } else if (port == job.finish_port) {
            return NULL;
          } else if (job.target == TARGET_PIO && in_target(port, v->index)) {
            v->writes += run->io.count;
            for (uint32_t n = 0; n < run->io.count; n++) do_work();
          } else {
            v->error = "unexpected port write";
            snprintf(v->detail, sizeof v->detail, "port 0x%x", port);
            return NULL;
          }
        } else {
          uint32_t value = 0;
          if (port == marker) {
            record_first_exit();
            pthread_barrier_wait(&barrier);
          } else if (job.target == TARGET_PIO && in_target(port, v->index)) {
            v->reads += run->io.count;
            value = (uint32_t)v->writes;
          } else {
            value = 0xffffffffu;
          }
          memcpy(data, &value, run->io.size);
        }
        break;
      }
      case KVM_EXIT_MMIO:
        if (job.target == TARGET_MMIO && in_target(run->mmio.phys_addr, v->index)) {
          if (run->mmio.is_write) {
            v->writes++;
            do_work();
          } else {
            v->reads++;
            uint64_t value = v->writes;
            memcpy(run->mmio.data, &value, run->mmio.len);
          }
        } else {
          v->error = "unexpected MMIO access";
          snprintf(v->detail, sizeof v->detail, "address 0x%llx", (unsigned long long)run->mmio.phys_addr);
          return NULL;
        }
        break;
      case KVM_EXIT_HLT:
        v->hlts++;
        break;
      case KVM_EXIT_X86_RDMSR:
        if (job.target == TARGET_MSR && in_target(run->msr.index, v->index)) {
          v->msr_reads++;
          run->msr.error = 0;
          run->msr.data = v->msr_writes;
        } else {
          run->msr.error = 1;
        }
        break;
      case KVM_EXIT_X86_WRMSR:
        if (job.target == TARGET_MSR && in_target(run->msr.index, v->index)) {
          v->msr_writes++;
          run->msr.error = 0;
        } else {
          run->msr.error = 1;
        }
        break;
      default:
        v->error = "unexpected exit";
        snprintf(v->detail, sizeof v->detail, "exit_reason %u", run->exit_reason);
        return NULL;
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: exit-baseline JOBFILE\n");
    return 2;
  }
  read_job(argv[1]);
  t_create = now_ns();
  setup_vm();
  pthread_barrier_init(&barrier, NULL, (unsigned)job.vcpus);
  for (int i = 0; i < job.vcpus; i++)
    if (pthread_create(&vcpus[i].thread, NULL, vcpu_thread, &vcpus[i]) != 0) fail("pthread_create failed");
  for (int i = 0; i < job.vcpus; i++) pthread_join(vcpus[i].thread, NULL);

  int failed = 0;
  for (int i = 0; i < job.vcpus; i++) {
    if (vcpus[i].error) {
      fprintf(stderr, "exit-baseline: vCPU %d: %s (%s)\n", i, vcpus[i].error, vcpus[i].detail);
      failed = 1;
    }
  }
  if (failed) return 1;
  printf("start_ns %llu\n", (unsigned long long)(t_first_exit - t_create));
  for (int i = 0; i < job.vcpus; i++) {
    struct vcpu *v = &vcpus[i];
    printf("vcpu %d writes %llu reads %llu hlts %llu msr_reads %llu msr_writes %llu markers %zu\n", i,
           (unsigned long long)v->writes, (unsigned long long)v->reads, (unsigned long long)v->hlts,
           (unsigned long long)v->msr_reads, (unsigned long long)v->msr_writes, v->marks_count);
    if (v->eventfd >= 0) {
      uint64_t count = 0; /* EAGAIN: never signalled */
      if (read(v->eventfd, &count, sizeof count) != sizeof count && errno != EAGAIN) die("read eventfd");
      printf("eventfd %d %llu\n", i, (unsigned long long)count);
    }
    printf("marks %d", i);
    size_t n = v->marks_count < job.max_marks ? v->marks_count : job.max_marks;
    for (size_t j = 0; j < n; j++) printf(" %llu", (unsigned long long)v->marks[j]);
    printf("\n");
  }
  return 0;
}
