// Driver of ours for zlib (the sources in the crates.io package libz-sys, compiled unmodified;
// see tools/build_c_codebases.sh and docs/wasm.md).
//
// Usage:
//   zlib roundtrip <bytes> <seed>  generates <bytes> of text-like data from <seed>, compresses it
//                                  with every level and strategy, as zlib, gzip and raw deflate,
//                                  in one shot and streamed through small buffers, inflates each
//                                  result back and prints sizes and checksums (one line each).
//   zlib corrupt <bytes> <seed>    compresses, damages the stream, and reports inflate's error on
//                                  stderr (exit 3).
//   zlib gzip | gunzip             stdin to stdout through gzdopen().
// Exit status: 0 on success, 2 on a usage error, 3 on a data error, 4 on a mismatch.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zlib.h"

static unsigned long long rng_state;

static unsigned rng(void) {  // xorshift64*
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (unsigned)((rng_state * 2685821657736338717ULL) >> 32);
}

static const char *const words[] = {
    "the",    "sandbox", "guest",  "memory", "page",   "table", "exit",    "vcpu",
    "wasm",   "module",  "import", "export", "deflate", "inflate", "window", "huffman",
    "stream", "block",   "crc",    "adler",  "zlib",   "of",    "and",     "a",
};

static unsigned char *generate(size_t n, unsigned long long seed) {
  unsigned char *data = malloc(n ? n : 1);
  if (!data) return NULL;
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
  size_t i = 0;
  while (i < n) {
    unsigned r = rng();
    if (r % 16 == 0) {  // a short run of noise
      for (unsigned k = 0; k < 8 && i < n; k++) data[i++] = (unsigned char)rng();
    } else if (r % 16 == 1) {  // a number
      char num[16];
      int len = snprintf(num, sizeof num, "%u", rng() % 100000);
      for (int k = 0; k < len && i < n; k++) data[i++] = (unsigned char)num[k];
    } else {
      const char *w = words[(r >> 8) % (sizeof words / sizeof *words)];
      while (*w && i < n) data[i++] = (unsigned char)*w++;
    }
    if (i < n) data[i++] = (r >> 4) % 11 == 0 ? '\n' : ' ';
  }
  return data;
}

// Streams `in` through deflate with an output buffer of `chunk` bytes; returns the compressed
// size (0 on error) and the stream in *out (malloc'd, caller frees).
static size_t deflate_stream(const unsigned char *in, size_t n, int level, int window_bits,
                             int strategy, size_t chunk, unsigned char **out) {
  z_stream s;
  memset(&s, 0, sizeof s);
  if (deflateInit2(&s, level, Z_DEFLATED, window_bits, 8, strategy) != Z_OK) return 0;
  size_t cap = deflateBound(&s, n) + chunk, len = 0;
  unsigned char *buf = malloc(cap);
  if (!buf) {
    deflateEnd(&s);
    return 0;
  }
  s.next_in = (unsigned char *)in;
  int rc;
  do {
    s.avail_in = (uInt)(n - (size_t)(s.next_in - in) < chunk ? n - (size_t)(s.next_in - in)
                                                               : chunk);
    int flush = s.next_in + s.avail_in == in + n ? Z_FINISH : Z_NO_FLUSH;
    do {
      s.next_out = buf + len;
      s.avail_out = (uInt)(cap - len < chunk ? cap - len : chunk);
      size_t before = s.avail_out;
      rc = deflate(&s, flush);
      len += before - s.avail_out;
    } while (s.avail_out == 0 && len < cap);
  } while (rc != Z_STREAM_END && rc >= 0);
  deflateEnd(&s);
  if (rc != Z_STREAM_END) {
    free(buf);
    return 0;
  }
  *out = buf;
  return len;
}

// Inflates `in` into `out` (capacity `cap`) feeding `chunk` bytes at a time. Returns inflate's
// final code; *produced gets the output size, *message inflate's message.
static int inflate_stream(const unsigned char *in, size_t n, int window_bits, size_t chunk,
                          unsigned char *out, size_t cap, size_t *produced, const char **message) {
  z_stream s;
  memset(&s, 0, sizeof s);
  int rc = inflateInit2(&s, window_bits);
  if (rc != Z_OK) return rc;
  s.next_out = out;
  s.avail_out = (uInt)cap;
  size_t fed = 0;
  do {
    size_t take = n - fed < chunk ? n - fed : chunk;
    s.next_in = (unsigned char *)in + fed;
    s.avail_in = (uInt)take;
    rc = inflate(&s, Z_NO_FLUSH);
    fed += take - s.avail_in;
    // Z_BUF_ERROR: no progress possible. Go on only while it lacked input that is still there.
  } while (rc == Z_OK || (rc == Z_BUF_ERROR && s.avail_out > 0 && fed < n));
  *produced = cap - s.avail_out;
  *message = s.msg ? s.msg : "";
  inflateEnd(&s);
  return rc;
}

static int roundtrip(size_t n, unsigned long long seed) {
  unsigned char *data = generate(n, seed);
  unsigned char *back = malloc(n ? n : 1);
  if (!data || !back) return 2;
  printf("zlib %s, %zu bytes, seed %llu, crc32 %08lx, adler32 %08lx\n", zlibVersion(), n, seed,
         crc32(0, data, (uInt)n), adler32(1, data, (uInt)n));

  // One shot: compress2/uncompress at every level.
  for (int level = 0; level <= 9; level++) {
    uLongf clen = compressBound(n);
    unsigned char *c = malloc(clen);
    if (!c || compress2(c, &clen, data, n, level) != Z_OK) return 4;
    uLongf blen = n;
    int rc = uncompress(back, &blen, c, clen);
    if (rc != Z_OK || blen != n || memcmp(back, data, n) != 0) return 4;
    printf("compress2 level %d: %lu bytes, crc32 %08lx\n", level, (unsigned long)clen,
           crc32(0, c, (uInt)clen));
    free(c);
  }

  // Streams: zlib, gzip and raw framing; strategies; small and large buffers.
  static const struct {
    const char *name;
    int bits;
  } framings[] = {{"zlib", 15}, {"gzip", 31}, {"raw", -15}, {"zlib-w9", 9}};
  static const struct {
    const char *name;
    int value;
  } strategies[] = {{"default", Z_DEFAULT_STRATEGY}, {"filtered", Z_FILTERED},
                    {"huffman", Z_HUFFMAN_ONLY},     {"rle", Z_RLE},
                    {"fixed", Z_FIXED}};
  static const int levels[] = {1, 6, 9};
  static const size_t chunks[] = {97, 16384};
  for (size_t f = 0; f < sizeof framings / sizeof *framings; f++) {
    for (size_t st = 0; st < sizeof strategies / sizeof *strategies; st++) {
      for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
        for (size_t ch = 0; ch < sizeof chunks / sizeof *chunks; ch++) {
          unsigned char *c = NULL;
          size_t clen = deflate_stream(data, n, levels[l], framings[f].bits, strategies[st].value,
                                       chunks[ch], &c);
          if (!clen) return 4;
          size_t blen = 0;
          const char *msg;
          int rc = inflate_stream(c, clen, framings[f].bits, chunks[ch], back, n, &blen, &msg);
          if (rc != Z_STREAM_END || blen != n || memcmp(back, data, n) != 0) {
            fprintf(stderr, "mismatch: %s %s level %d chunk %zu: inflate %d %s\n",
                    framings[f].name, strategies[st].name, levels[l], chunks[ch], rc, msg);
            return 4;
          }
          printf("%s %s level %d chunk %zu: %zu bytes, adler32 %08lx\n", framings[f].name,
                 strategies[st].name, levels[l], chunks[ch], clen, adler32(1, c, (uInt)clen));
          free(c);
        }
      }
    }
  }
  // Checksum combination over two halves.
  size_t half = n / 2;
  uLong a = crc32(0, data, (uInt)half), b = crc32(0, data + half, (uInt)(n - half));
  printf("crc32_combine %08lx\n", crc32_combine(a, b, (z_off_t)(n - half)));
  free(data);
  free(back);
  return 0;
}

static int corrupt(size_t n, unsigned long long seed) {
  unsigned char *data = generate(n, seed);
  unsigned char *back = malloc(n ? n : 1);
  unsigned char *c = NULL;
  if (!data || !back) return 2;
  size_t clen = deflate_stream(data, n, 6, 15, Z_DEFAULT_STRATEGY, 4096, &c);
  if (clen < 16) return 4;
  printf("compressed %zu bytes to %zu\n", n, clen);
  size_t blen;
  const char *msg;
  // A truncated stream ends without Z_STREAM_END.
  int rc = inflate_stream(c, clen / 2, 15, 4096, back, n, &blen, &msg);
  printf("truncated: inflate %d after %zu bytes\n", rc, blen);
  // A damaged header, then damaged data: inflate reports Z_DATA_ERROR with a message.
  c[0] ^= 0x01;
  rc = inflate_stream(c, clen, 15, 4096, back, n, &blen, &msg);
  printf("bad header: inflate %d (%s)\n", rc, msg);
  c[0] ^= 0x01;
  for (size_t i = clen / 3; i < clen / 3 + 8; i++) c[i] ^= 0x5a;
  rc = inflate_stream(c, clen, 15, 4096, back, n, &blen, &msg);
  fflush(stdout);
  fprintf(stderr, "zlib: inflate failed: %s (%d) after %zu bytes\n", msg, rc, blen);
  return rc == Z_DATA_ERROR ? 3 : 4;
}

static int gz(int compress) {
  unsigned char buf[8192];
  if (compress) {
    gzFile out = gzdopen(1, "wb9");
    if (!out) return 2;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
      if (gzwrite(out, buf, (unsigned)n) != (int)n) return 4;
    }
    return gzclose(out) == Z_OK && !ferror(stdin) ? 0 : 4;
  }
  gzFile in = gzdopen(0, "rb");
  if (!in) return 2;
  int n;
  while ((n = gzread(in, buf, sizeof buf)) > 0) fwrite(buf, 1, (size_t)n, stdout);
  int err;
  const char *msg = gzerror(in, &err);
  if (n < 0) {
    fprintf(stderr, "zlib: gunzip: %s\n", msg);
    gzclose(in);
    return 3;
  }
  gzclose(in);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "roundtrip") == 0) {
    return roundtrip(strtoul(argv[2], NULL, 10), strtoull(argv[3], NULL, 10));
  }
  if (argc == 4 && strcmp(argv[1], "corrupt") == 0) {
    return corrupt(strtoul(argv[2], NULL, 10), strtoull(argv[3], NULL, 10));
  }
  if (argc == 2 && strcmp(argv[1], "gzip") == 0) return gz(1);
  if (argc == 2 && strcmp(argv[1], "gunzip") == 0) return gz(0);
  fprintf(stderr, "usage: zlib roundtrip|corrupt <bytes> <seed> | gzip | gunzip\n");
  return 2;
}
