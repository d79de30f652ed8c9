/*
 * vma_cost: what KVM_CREATE_VM costs as the process's mappings grow (issue 19). KVM registers an
 * MMU notifier for each new VM, and mmu_notifier_register takes mm_take_all_locks, which walks
 * (and locks) every mapping of the process: so a create costs time linear in the process's
 * mappings, whoever made them.
 *
 * Usage: vma_cost <mode>
 *   mode 0: no VMs; each step adds 2 mappings (an anonymous page written, so it has an anon_vma,
 *           and a read-only one beside it that cannot merge with it).
 *   mode 1: live VMs, each with 2 MiB of anonymous memory in a slot (adjacent ones merge) and its
 *           vCPU's kvm_run mapped: ~1 mapping per VM, as a C program's raw VMs have.
 * Prints, per level, the mappings (/proc/self/maps lines) and the median of 41 KVM_CREATE_VM +
 * close, in µs.
 *
 * Build: cc -O2 -Wall -o vma_cost vma_cost.c
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int kvm;

static double create_vm_median(void) {
  double s[41];
  for (int i = 0; i < 41; i++) {
    double t = now_us();
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    s[i] = now_us() - t;
    if (vm < 0) {
      perror("KVM_CREATE_VM");
      exit(1);
    }
    close(vm);
  }
  qsort(s, 41, sizeof(double), cmp);
  return s[20];
}

static int mappings(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f)) n++;
  fclose(f);
  return n;
}

int main(int argc, char **argv) {
  int mode = argc > 1 ? atoi(argv[1]) : 0;
  kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) {
    perror("/dev/kvm");
    return 1;
  }
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  static const int levels[] = {0, 10, 100, 1000, 2000, 4000};
  int have = 0;
  for (size_t li = 0; li < sizeof levels / sizeof levels[0]; li++) {
    while (have < levels[li]) {
      if (mode == 0) {
        char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 1;
        mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      } else {
        int vm = ioctl(kvm, KVM_CREATE_VM, 0);
        char *m = mmap(0, 2 << 20, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        struct kvm_userspace_memory_region r = {
            .slot = 0,
            .guest_phys_addr = 0,
            .memory_size = 2 << 20,
            .userspace_addr = (unsigned long)m,
        };
        if (vm < 0 || m == MAP_FAILED || ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
          perror("VM");
          return 1;
        }
        int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
        if (vcpu < 0 || mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0) == MAP_FAILED) {
          perror("vCPU");
          return 1;
        }
        m[0] = 1;
      }
      have++;
    }
    printf("mode %d: %d %s, %d mappings: KVM_CREATE_VM %.1f us\n", mode, levels[li],
           mode == 0 ? "steps" : "live VMs", mappings(), create_vm_median());
    fflush(stdout);
  }
  return 0;
}
