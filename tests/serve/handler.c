// A Wasm handler by the bytes convention (hl serve's `wasm` kind, tests/kvm/serve.test.ts and
// tools/serve_load.sh): `handle(ptr, len)` gets the request as JSON and returns a CGI-style
// response (a head, an empty line, the request JSON as the body) as `ptr << 32 | len`.
// `X-Count` counts the calls this instance answered (1 on every request when restored). Paths
// ending in /trap and /loop trap and spin. No libc: built with --target=wasm32 -nostdlib.
typedef unsigned long size_t;

static unsigned char heap[1 << 20];
static size_t top;
static unsigned char out[(1 << 20) + 256];
static unsigned count;

void *memcpy(void *d, const void *s, size_t n) {
  unsigned char *dp = d;
  const unsigned char *sp = s;
  while (n--) *dp++ = *sp++;
  return d;
}

void *memset(void *d, int c, size_t n) {
  unsigned char *dp = d;
  while (n--) *dp++ = (unsigned char)c;
  return d;
}

__attribute__((export_name("alloc"))) void *alloc(int n) {
  if (n < 0 || (size_t)n > sizeof heap - top) return 0;
  void *p = heap + top;
  top += ((size_t)n + 7) & ~(size_t)7;
  return p;
}

static int has(const unsigned char *p, int n, const char *s) {
  int m = 0;
  while (s[m]) m++;
  for (int i = 0; i + m <= n; i++) {
    int j = 0;
    while (j < m && p[i + j] == (unsigned char)s[j]) j++;
    if (j == m) return 1;
  }
  return 0;
}

static int put(unsigned char *d, const char *s) {
  int k = 0;
  while (s[k]) {
    d[k] = (unsigned char)s[k];
    k++;
  }
  return k;
}

static int utoa(unsigned char *d, unsigned v) {
  char tmp[12];
  int k = 0, n = 0;
  do {
    tmp[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (k) d[n++] = (unsigned char)tmp[--k];
  return n;
}

__attribute__((export_name("handle"))) unsigned long long handle(unsigned char *p, int n) {
  count++;
  if (has(p, n, "/trap\"")) __builtin_trap();
  if (has(p, n, "/loop\"")) {
    volatile unsigned x = 0;
    for (;;) x++;
  }
  int k = put(out, "Content-Type: application/json\nX-Count: ");
  k += utoa(out + k, count);
  k += put(out + k, "\n\n");
  if (n > 0 && (size_t)n <= sizeof out - (size_t)k) {
    memcpy(out + k, p, (size_t)n);
    k += n;
  }
  top = 0;
  return ((unsigned long long)(size_t)out << 32) | (unsigned)k;
}
