/*
 * vcpu_threads: what a thread per vCPU costs against a bounded set of worker threads that run
 * whichever vCPU has work (issue 19). Reuses raw_kvm.c's CPL-3 guest.
 *
 * Usage: vcpu_threads <rounds> <idle_threads>
 *
 * (a) Two VMs, two threads that take turns (a mutex + condition variable hands a token over, so
 *     both modes pay the same handoff). "pinned": thread A always runs VM 1 and B VM 2, so each
 *     vCPU stays on its thread; "migrating": each thread runs VM 1 and VM 2 alternately, so each
 *     vCPU runs on a different thread than last time on every run. Timed: the KVM_RUN ioctl
 *     alone (one exit each), medians in µs.
 * (b) <idle_threads> threads parked on a futex, as idle vCPU threads are: the RSS they add, per
 *     thread, in kB (kernel memory per thread, ~16 kB of kernel stack + task, is not in RSS).
 *
 * Prints one line of JSON. Build: cc -O2 -pthread -o vcpu_threads vcpu_threads.c
 */
#define main raw_kvm_main
#include "raw_kvm.c"
#undef main
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>

static struct vm vms[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_cv = PTHREAD_COND_INITIALIZER;
static int turn; /* whose turn: 0 = A, 1 = B */
static size_t rounds;
static int migrating;
static double *samples[2];

struct worker {
  int id;
};

static void *worker_main(void *arg) {
  int id = ((struct worker *)arg)->id;
  for (size_t i = 0; i < rounds; i++) {
    pthread_mutex_lock(&lock);
    while (turn != id) pthread_cond_wait(&turn_cv, &lock);
    pthread_mutex_unlock(&lock);
    int which = migrating ? (int)((i + (size_t)id) % 2) : id;
    double t0 = now_us();
    vm_run_one(&vms[which]);
    samples[id][i] = now_us() - t0;
    pthread_mutex_lock(&lock);
    turn = 1 - id;
    pthread_cond_broadcast(&turn_cv);
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

static double median_of(double *a, size_t n) {
  qsort(a, n, sizeof *a, cmp_double);
  return percentile(a, n, 0.5);
}

static double run_mode(int mode) {
  migrating = mode;
  turn = 0;
  pthread_t t[2];
  struct worker w[2] = {{0}, {1}};
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker_main, &w[i]);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  double all[2 * rounds];
  memcpy(all, samples[0], rounds * sizeof(double));
  memcpy(all + rounds, samples[1], rounds * sizeof(double));
  return median_of(all, 2 * rounds);
}

static uint32_t park_word;
static void *park_main(void *arg) {
  (void)arg;
  while (__atomic_load_n(&park_word, __ATOMIC_SEQ_CST) == 0)
    syscall(SYS_futex, &park_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
  return NULL;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, rss = 0;
  if (f == NULL || fscanf(f, "%ld %ld", &size, &rss) != 2) fail("statm");
  fclose(f);
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: vcpu_threads <rounds> <idle_threads>\n");
    return 1;
  }
  rounds = parse_count(argv[1], "rounds");
  size_t idle = parse_count(argv[2], "idle_threads");
  int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm_fd < 0) die("open /dev/kvm");
  struct kvm_cpuid2 *cpuid =
      calloc(1, sizeof *cpuid + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
  if (cpuid == NULL) fail("out of memory");
  cpuid->nent = CPUID_MAX_ENTRIES;
  if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
  samples[0] = malloc(rounds * sizeof(double));
  samples[1] = malloc(rounds * sizeof(double));
  if (samples[0] == NULL || samples[1] == NULL) fail("out of memory");
  double pinned = 0, moving = 0;
  /* Interleaved: pinned, migrating, pinned, migrating; each VM made on the main thread. */
  for (int rep = 0; rep < 4; rep++) {
    vm_create(&vms[0], kvm_fd, cpuid);
    vm_create(&vms[1], kvm_fd, cpuid);
    double m = run_mode(rep % 2);
    if (rep % 2) moving += m / 2; else pinned += m / 2;
    vm_destroy(&vms[0]);
    vm_destroy(&vms[1]);
  }
  long before = rss_kb();
  pthread_t *threads = malloc(idle * sizeof *threads);
  if (threads == NULL) fail("out of memory");
  for (size_t i = 0; i < idle; i++)
    if (pthread_create(&threads[i], NULL, park_main, NULL) != 0) fail("pthread_create");
  usleep(100000);
  long after = rss_kb();
  __atomic_store_n(&park_word, 1, __ATOMIC_SEQ_CST);
  syscall(SYS_futex, &park_word, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0);
  for (size_t i = 0; i < idle; i++) pthread_join(threads[i], NULL);
  printf("{\"pinned_run_us\":%.2f,\"migrating_run_us\":%.2f,\"idle_thread_rss_kb\":%.2f,"
         "\"rounds\":%zu,\"idle_threads\":%zu}\n",
         pinned, moving, (double)(after - before) / (double)idle, rounds, idle);
  return 0;
}
