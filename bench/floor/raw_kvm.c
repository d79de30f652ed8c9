/*
 * raw_kvm: the raw floor of KVM work for a guest running in user mode (CPL 3).
 *
 * Usage: raw_kvm <create_iterations> <exit_iterations> [samples]
 *
 * (a) create: N times, build a whole VM from scratch (VM, memory, vCPU, CPUID, registers), run it
 *     to its first exit, and tear it all down again. Only /dev/kvm stays open across iterations,
 *     as a library would keep it.
 * (b) exit: on one VM, M consecutive KVM_RUN calls, each returning one KVM_EXIT_IO; each call is
 *     timed on its own.
 *
 * Prints one line of JSON on stdout:
 *   {"create_us":{"median":..,"p10":..,"p90":..},"exit_us":{...},"create_n":N,"exit_n":M}
 * With a third argument `samples`, each stats object also carries "samples": every timing, sorted
 * (so a caller can pool several short runs interleaved with its own measurements).
 *
 * Guest: long mode is entered directly through KVM_SET_SREGS with CPL 3 segments (no GDT in
 * memory), identity-mapped by 4-level page tables whose entries all carry the U bit, so the guest
 * runs natively even on kvm_pvm hosts where CPL 0 code is emulated.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o raw_kvm raw_kvm.c
 * Only libc and <linux/kvm.h>.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE 0x200000UL /* 2 MiB: exactly one large page */
#define PML4_ADDR 0x1000UL
#define PDPT_ADDR 0x2000UL
#define PD_ADDR 0x3000UL
#define CODE_ADDR 0x10000UL
#define STACK_TOP 0x80000UL
#define IO_PORT 0x10

/* Page-table entry bits. */
#define PTE_P 0x1UL
#define PTE_W 0x2UL
#define PTE_U 0x4UL /* user: the guest runs at CPL 3, so every level needs it */
#define PTE_PS 0x80UL /* 2 MiB page in the PD */

#define CR0_PE (1UL << 0)
#define CR0_MP (1UL << 1)
#define CR0_ET (1UL << 4)
#define CR0_NE (1UL << 5)
#define CR0_WP (1UL << 16)
#define CR0_PG (1UL << 31)
#define CR4_PAE (1UL << 5)
#define CR4_OSFXSR (1UL << 9)
#define CR4_OSXMMEXCPT (1UL << 10)
#define EFER_LME (1UL << 8)
#define EFER_LMA (1UL << 10)
#define EFER_NXE (1UL << 11)

/*
 * Guest code:
 *   0: xorps xmm0, xmm0   ; touch SSE once, to prove it works at CPL 3
 *   3: out 0x10, al       ; one KVM_EXIT_IO per KVM_RUN
 *   5: jmp 3              ; back to the out
 */
static const uint8_t guest_code[] = {0x0f, 0x57, 0xc0, 0xe6, IO_PORT, 0xeb, 0xfc};

#define CPUID_MAX_ENTRIES 256

static void die(const char *what) {
  fprintf(stderr, "raw_kvm: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *what) {
  fprintf(stderr, "raw_kvm: %s\n", what);
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) die("clock_gettime");
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* One VM and everything hanging off it. */
struct vm {
  int vm_fd;
  int vcpu_fd;
  uint8_t *mem;
  struct kvm_run *run;
  size_t run_size;
};

/* Fills guest memory: page tables identity-mapping the first 2 MiB, then the code. */
static void write_guest(uint8_t *mem) {
  uint64_t *pml4 = (uint64_t *)(mem + PML4_ADDR);
  uint64_t *pdpt = (uint64_t *)(mem + PDPT_ADDR);
  uint64_t *pd = (uint64_t *)(mem + PD_ADDR);
  pml4[0] = PDPT_ADDR | PTE_P | PTE_W | PTE_U;
  pdpt[0] = PD_ADDR | PTE_P | PTE_W | PTE_U;
  pd[0] = 0 | PTE_P | PTE_W | PTE_U | PTE_PS;
  memcpy(mem + CODE_ADDR, guest_code, sizeof guest_code);
}

/* Flat 64-bit user-mode segments; TR must be a busy TSS or VMX refuses to enter. */
static void set_long_mode_sregs(struct kvm_sregs *s) {
  struct kvm_segment code = {
      .base = 0,
      .limit = 0xffffffff,
      .selector = 0x23, /* RPL 3 */
      .type = 0xb,      /* execute/read, accessed */
      .present = 1,
      .dpl = 3,
      .db = 0,
      .s = 1,
      .l = 1, /* 64-bit code */
      .g = 1,
  };
  struct kvm_segment data = {
      .base = 0,
      .limit = 0xffffffff,
      .selector = 0x1b, /* RPL 3 */
      .type = 0x3,      /* read/write, accessed */
      .present = 1,
      .dpl = 3,
      .db = 1,
      .s = 1,
      .g = 1,
  };
  struct kvm_segment tr = {
      .base = 0,
      .limit = 0x67,
      .selector = 0,
      .type = 0xb, /* busy 64-bit TSS */
      .present = 1,
      .s = 0,
  };
  s->cs = code;
  s->ss = data;
  s->ds = data;
  s->es = data;
  s->fs = data;
  s->gs = data;
  s->tr = tr;
  s->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
  s->cr3 = PML4_ADDR;
  s->cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
  s->efer = EFER_LME | EFER_LMA | EFER_NXE;
}

/* Builds a VM ready to run: every step a library would do for a fresh sandbox. */
static void vm_create(struct vm *vm, int kvm_fd, const struct kvm_cpuid2 *cpuid) {
  /* The VM itself. */
  vm->vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  if (vm->vm_fd < 0) die("KVM_CREATE_VM");

  /* Size of the shared kvm_run area (asked per VM, as a library without a cache would). */
  int run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) die("KVM_GET_VCPU_MMAP_SIZE");
  vm->run_size = (size_t)run_size;

  /* Guest memory: fresh anonymous pages, then page tables and code. */
  void *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap guest memory");
  vm->mem = mem;
  write_guest(vm->mem);

  /* Hand the memory to the guest at physical address 0. */
  struct kvm_userspace_memory_region region = {
      .slot = 0,
      .flags = 0,
      .guest_phys_addr = 0,
      .memory_size = MEM_SIZE,
      .userspace_addr = (uint64_t)(uintptr_t)vm->mem,
  };
  if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    die("KVM_SET_USER_MEMORY_REGION");
  }

  /* One vCPU, and its kvm_run area for reading exits. */
  vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0);
  if (vm->vcpu_fd < 0) die("KVM_CREATE_VCPU");
  void *run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  vm->run = run;

  /* CPUID: KVM only accepts EFER.NXE once CPUID advertises NX. */
  if (ioctl(vm->vcpu_fd, KVM_SET_CPUID2, cpuid) != 0) die("KVM_SET_CPUID2");

  /* Long mode at CPL 3, set directly. */
  struct kvm_sregs sregs;
  if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs) != 0) die("KVM_GET_SREGS");
  set_long_mode_sregs(&sregs);
  if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs) != 0) die("KVM_SET_SREGS");

  /* Entry point, stack, RFLAGS: bit 1 reserved, IOPL 3 so `out` is allowed, IF clear. */
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = CODE_ADDR;
  regs.rsp = STACK_TOP;
  regs.rflags = 0x3002;
  if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs) != 0) die("KVM_SET_REGS");
}

/* Runs the vCPU until its next exit and checks that it is the expected `out 0x10, al`. */
static void vm_run_one(const struct vm *vm) {
  if (ioctl(vm->vcpu_fd, KVM_RUN, 0) != 0) die("KVM_RUN");
  const struct kvm_run *r = vm->run;
  if (r->exit_reason != KVM_EXIT_IO) {
    fprintf(stderr, "raw_kvm: unexpected exit reason %u (want KVM_EXIT_IO %u)", r->exit_reason,
            KVM_EXIT_IO);
    if (r->exit_reason == KVM_EXIT_FAIL_ENTRY) {
      fprintf(stderr, ", hardware_entry_failure_reason 0x%llx",
              (unsigned long long)r->fail_entry.hardware_entry_failure_reason);
    } else if (r->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
      fprintf(stderr, ", internal error suberror %u", r->internal.suberror);
    }
    fprintf(stderr, "\n");
    exit(1);
  }
  if (r->io.port != IO_PORT || r->io.direction != KVM_EXIT_IO_OUT || r->io.size != 1 ||
      r->io.count != 1) {
    fprintf(stderr, "raw_kvm: unexpected IO exit: port 0x%x direction %u size %u count %u\n",
            r->io.port, r->io.direction, r->io.size, r->io.count);
    exit(1);
  }
}

/* Tears the VM down: unmap, close the vCPU, then the VM, then free guest memory. */
static void vm_destroy(struct vm *vm) {
  if (munmap(vm->run, vm->run_size) != 0) die("munmap kvm_run");
  if (close(vm->vcpu_fd) != 0) die("close vcpu");
  if (close(vm->vm_fd) != 0) die("close vm");
  if (munmap(vm->mem, MEM_SIZE) != 0) die("munmap guest memory");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a;
  double y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, size_t n, double p) {
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return sorted[i];
}

static void print_stats(const char *name, double *samples, size_t n, int with_samples) {
  qsort(samples, n, sizeof *samples, cmp_double);
  printf("\"%s\":{\"median\":%.3f,\"p10\":%.3f,\"p90\":%.3f", name, percentile(samples, n, 0.5),
         percentile(samples, n, 0.1), percentile(samples, n, 0.9));
  if (with_samples) {
    printf(",\"samples\":[");
    for (size_t i = 0; i < n; i++) printf(i == 0 ? "%.3f" : ",%.3f", samples[i]);
    printf("]");
  }
  printf("}");
}

static size_t parse_count(const char *s, const char *what) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *s == '\0' || *end != '\0' || v <= 0) {
    fprintf(stderr, "raw_kvm: %s must be a positive integer, got '%s'\n", what, s);
    exit(1);
  }
  return (size_t)v;
}

int main(int argc, char **argv) {
  int with_samples = argc == 4 && strcmp(argv[3], "samples") == 0;
  if (argc != 3 && !with_samples) {
    fprintf(stderr, "usage: raw_kvm <create_iterations> <exit_iterations> [samples]\n");
    return 1;
  }
  size_t create_n = parse_count(argv[1], "create_iterations");
  size_t exit_n = parse_count(argv[2], "exit_iterations");

  double *create_us = malloc(create_n * sizeof *create_us);
  double *exit_us = malloc(exit_n * sizeof *exit_us);
  if (create_us == NULL || exit_us == NULL) fail("out of memory");

  /* /dev/kvm stays open for the whole run, as a library keeps it. */
  int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm_fd < 0) die("open /dev/kvm");
  int api = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
  if (api < 0) die("KVM_GET_API_VERSION");
  if (api != KVM_API_VERSION) fail("unexpected KVM_GET_API_VERSION");

  /* Supported CPUID is a property of the host: asked once, cached, like the /dev/kvm fd. */
  struct kvm_cpuid2 *cpuid =
      calloc(1, sizeof *cpuid + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
  if (cpuid == NULL) fail("out of memory");
  cpuid->nent = CPUID_MAX_ENTRIES;
  if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) != 0) die("KVM_GET_SUPPORTED_CPUID");

  struct vm vm;

  /* (a) create: one untimed warm-up, then N timed full lifecycles. */
  vm_create(&vm, kvm_fd, cpuid);
  vm_run_one(&vm);
  vm_destroy(&vm);
  for (size_t i = 0; i < create_n; i++) {
    double t0 = now_us();
    vm_create(&vm, kvm_fd, cpuid);
    vm_run_one(&vm);
    vm_destroy(&vm);
    create_us[i] = now_us() - t0;
  }

  /* (b) exit: one VM; the first KVM_RUN (entry, page faults) is untimed, then M timed. */
  vm_create(&vm, kvm_fd, cpuid);
  vm_run_one(&vm);
  for (size_t i = 0; i < exit_n; i++) {
    double t0 = now_us();
    vm_run_one(&vm);
    exit_us[i] = now_us() - t0;
  }
  vm_destroy(&vm);

  if (close(kvm_fd) != 0) die("close /dev/kvm");

  printf("{");
  print_stats("create_us", create_us, create_n, with_samples);
  printf(",");
  print_stats("exit_us", exit_us, exit_n, with_samples);
  printf(",\"create_n\":%zu,\"exit_n\":%zu}\n", create_n, exit_n);
  if (fflush(stdout) != 0) die("write stdout");

  free(cpuid);
  free(create_us);
  free(exit_us);
  return 0;
}
