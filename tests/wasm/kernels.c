// Compute kernels for the Wasm speed bench (issue 22): one WASI command, the kernel named by
// argv[1], each printing a checksum so every engine's result can be compared with V8's.
//   hash     SHA-256 compression over a 16 MiB buffer
//   nbody    the 5-body simulation, 400,000 steps
//   qsort    libc qsort of 300,000 ints (an indirect call per comparison)
//   matmul   384 x 384 double matrix multiply
//   strings  snprintf-built text appended to a growing buffer (300,000 numbers), then hashed
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t seed = 12345;
static uint32_t next(void) { return seed = seed * 1103515245u + 12345u; }

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static void compress(uint32_t h[8], const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static int hash(void) {
  size_t n = 16u << 20;
  uint8_t *buf = malloc(n);
  if (!buf) return 1;
  for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(next() >> 24);
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  for (size_t i = 0; i < n; i += 64) compress(h, buf + i);
  printf("hash %08x%08x\n", h[0], h[7]);
  free(buf);
  return 0;
}

typedef struct { double x, y, z, vx, vy, vz, m; } Body;

static int nbody(void) {
  const double PI = 3.141592653589793, SM = 4 * PI * PI, DPY = 365.24;
  Body b[5] = {
      {0, 0, 0, 0, 0, 0, SM},
      {4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
       1.66007664274403694e-03 * DPY, 7.69901118419740425e-03 * DPY, -6.90460016972063023e-05 * DPY,
       9.54791938424326609e-04 * SM},
      {8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
       -2.76742510726862411e-03 * DPY, 4.99852801234917238e-03 * DPY, 2.30417297573763929e-05 * DPY,
       2.85885980666130812e-04 * SM},
      {1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
       2.96460137564761618e-03 * DPY, 2.37847173959480950e-03 * DPY, -2.96589568540237556e-05 * DPY,
       4.36624404335156298e-05 * SM},
      {1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
       2.68067772490389322e-03 * DPY, 1.62824170038242295e-03 * DPY, -9.51592254519715870e-05 * DPY,
       5.15138902046611451e-05 * SM}};
  for (int step = 0; step < 400000; step++) {
    for (int i = 0; i < 5; i++)
      for (int j = i + 1; j < 5; j++) {
        double dx = b[i].x - b[j].x, dy = b[i].y - b[j].y, dz = b[i].z - b[j].z;
        double d2 = dx * dx + dy * dy + dz * dz;
        double mag = 0.01 / (d2 * __builtin_sqrt(d2));
        b[i].vx -= dx * b[j].m * mag, b[i].vy -= dy * b[j].m * mag, b[i].vz -= dz * b[j].m * mag;
        b[j].vx += dx * b[i].m * mag, b[j].vy += dy * b[i].m * mag, b[j].vz += dz * b[i].m * mag;
      }
    for (int i = 0; i < 5; i++)
      b[i].x += 0.01 * b[i].vx, b[i].y += 0.01 * b[i].vy, b[i].z += 0.01 * b[i].vz;
  }
  double e = 0;
  for (int i = 0; i < 5; i++) e += b[i].x + b[i].y + b[i].z;
  printf("nbody %.9f\n", e);
  return 0;
}

static int cmp(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static int sort(void) {
  int n = 300000;
  int *v = malloc(sizeof(int) * n);
  if (!v) return 1;
  for (int i = 0; i < n; i++) v[i] = (int)(next() >> 1);
  qsort(v, n, sizeof(int), cmp);
  uint32_t s = 0;
  for (int i = 0; i < n; i += 1000) s = s * 31 + (uint32_t)v[i];
  printf("qsort %u %d\n", s, v[n - 1] >= v[0]);
  free(v);
  return 0;
}

static int matmul(void) {
  int n = 384;
  double *a = malloc(sizeof(double) * n * n), *b = malloc(sizeof(double) * n * n);
  double *c = calloc((size_t)n * n, sizeof(double));
  if (!a || !b || !c) return 1;
  for (int i = 0; i < n * n; i++) a[i] = (next() >> 16) / 65536.0, b[i] = (next() >> 16) / 65536.0;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < n; k++) {
      double x = a[i * n + k];
      for (int j = 0; j < n; j++) c[i * n + j] += x * b[k * n + j];
    }
  double s = 0;
  for (int i = 0; i < n * n; i += 97) s += c[i];
  printf("matmul %.6f\n", s);
  return 0;
}

static int strings(void) {
  size_t cap = 16, len = 0;
  char *s = malloc(cap);
  if (!s) return 1;
  char tmp[48];
  for (int i = 0; i < 300000; i++) {
    int n = snprintf(tmp, sizeof tmp, "item-%d:%x;", i, i * 7919);
    if (len + n + 1 > cap) {
      while (len + n + 1 > cap) cap *= 2;
      s = realloc(s, cap);
      if (!s) return 1;
    }
    memcpy(s + len, tmp, n + 1);
    len += n;
  }
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
  printf("strings %zu %08x %d\n", len, h, (int)(strstr(s, "item-299999:") != NULL));
  free(s);
  return 0;
}

int main(int argc, char **argv) {
  const char *k = argc > 1 ? argv[1] : "";
  if (!strcmp(k, "hash")) return hash();
  if (!strcmp(k, "nbody")) return nbody();
  if (!strcmp(k, "qsort")) return sort();
  if (!strcmp(k, "matmul")) return matmul();
  if (!strcmp(k, "strings")) return strings();
  fprintf(stderr, "usage: kernels hash|nbody|qsort|matmul|strings\n");
  return 2;
}
