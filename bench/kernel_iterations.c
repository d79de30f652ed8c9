// The compute kernels of tests/wasm/kernels.c run N times in one `_start`, for
// bench/_kernel_iterations.ts: the first iteration runs on fresh linear memory, the later ones on
// memory already touched (what a kernel leaves allocated is freed after each iteration, so the
// next one reuses it), which separates first-touch costs from the code's own speed.
//   kernel_iterations <hash|nbody|qsort|matmul|strings> <N>
// Prints "iter <i> <wall µs>" to stderr after each iteration (a WASI call: the host sees it then).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LIVE 64
static void *live[MAX_LIVE];

static void track(void *p) {
  for (int i = 0; p && i < MAX_LIVE; i++)
    if (!live[i]) {
      live[i] = p;
      return;
    }
}
static void untrack(void *p) {
  for (int i = 0; p && i < MAX_LIVE; i++)
    if (live[i] == p) live[i] = 0;
}
static void *it_malloc(size_t n) {
  void *p = malloc(n);
  track(p);
  return p;
}
static void *it_calloc(size_t n, size_t s) {
  void *p = calloc(n, s);
  track(p);
  return p;
}
static void *it_realloc(void *q, size_t n) {
  void *p = realloc(q, n);
  if (p) untrack(q), track(p);
  return p;
}
static void it_free(void *p) {
  untrack(p);
  free(p);
}

#define malloc it_malloc
#define calloc it_calloc
#define realloc it_realloc
#define free it_free
#define main kernels_main
#include "../tests/wasm/kernels.c"
#undef main
#undef free

static long long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

int main(int argc, char **argv) {
  int n = argc > 2 ? atoi(argv[2]) : 1;
  for (int i = 0; i < n; i++) {
    long long t0 = now_us();
    int r = kernels_main(2, argv);
    long long t1 = now_us();
    for (int j = 0; j < MAX_LIVE; j++)
      if (live[j]) free(live[j]), live[j] = 0;
    fprintf(stderr, "iter %d %lld\n", i, t1 - t0);
    if (r) return r;
  }
  return 0;
}
