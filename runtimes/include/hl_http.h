/*
 * hl_http.h — outbound HTTP for a WebAssembly module in a @hl/sandbox WasmSandbox.
 *
 * The host makes the request, after checking it against the sandbox's `net` allow-list
 * (docs/networking.md): the module never holds a socket. Give the sandbox `net: { allow: [...] }`
 * or the module's `hl_http` imports are unsatisfied (WasmLinkError at create).
 *
 * The imports carry numbers only (the host cannot reach linear memory during an import), so
 * bytes move 8 at a time in an i64, little-endian. The raw imports:
 *
 *   int32_t hl_http_put(int32_t field, int64_t word, int32_t n)
 *       Append the n (1..8) low bytes of `word` to request field `field` (HL_HTTP_METHOD, _URL,
 *       _HEADERS as "Name: value\n" lines, _BODY). 0, or HL_HTTP_INVALID (the next send is then
 *       refused).
 *   int32_t hl_http_send(void)
 *       Make the request built so far (and start a new one). A response handle > 0, or
 *       HL_HTTP_REFUSED (the policy refused it: nothing was sent), HL_HTTP_FAILED (connect,
 *       timeout, response body past its cap), HL_HTTP_BUSY (16 responses open). The text of the
 *       last error is part HL_HTTP_ERROR of handle 0. Redirects are not followed: a 3xx is a
 *       response (its Location header in part HL_HTTP_HEADERS).
 *   int32_t hl_http_status(int32_t h)              HTTP status, or HL_HTTP_INVALID.
 *   int32_t hl_http_len(int32_t h, int32_t part)   Bytes in a part, or HL_HTTP_INVALID.
 *   int64_t hl_http_read(int32_t h, int32_t part, int32_t offset)
 *       8 bytes of a part from `offset`, little-endian (zero past its end).
 *   int32_t hl_http_close(int32_t h)               Frees a response: 0, or HL_HTTP_INVALID.
 *
 * Responses are kept until closed or until the guest call ends: the next call sees none of
 * them, nor a half-built request or the last error. Each call has the sandbox's per-call
 * limits (requests, bytes); the host counts every request (netStats()).
 *
 * The static inline helpers below (hl_http_fetch, hl_http_copy) are the convenient form.
 */
#ifndef HL_HTTP_H
#define HL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HL_HTTP_METHOD 0
#define HL_HTTP_URL 1
#define HL_HTTP_HEADERS 2
#define HL_HTTP_BODY 3

#define HL_HTTP_PART_BODY 0
#define HL_HTTP_PART_HEADERS 1
#define HL_HTTP_PART_ERROR 2

#define HL_HTTP_REFUSED (-1)
#define HL_HTTP_FAILED (-2)
#define HL_HTTP_INVALID (-3)
#define HL_HTTP_BUSY (-4)

#define HL_HTTP_IMPORT(name) __attribute__((import_module("hl_http"), import_name(name)))

HL_HTTP_IMPORT("put") int32_t hl_http_put(int32_t field, int64_t word, int32_t n);
HL_HTTP_IMPORT("send") int32_t hl_http_send(void);
HL_HTTP_IMPORT("status") int32_t hl_http_status(int32_t h);
HL_HTTP_IMPORT("len") int32_t hl_http_len(int32_t h, int32_t part);
HL_HTTP_IMPORT("read") int64_t hl_http_read(int32_t h, int32_t part, int32_t offset);
HL_HTTP_IMPORT("close") int32_t hl_http_close(int32_t h);

/* Appends `len` bytes to a request field; 0 or HL_HTTP_INVALID. */
static inline int32_t hl_http_put_bytes(int32_t field, const void *data, size_t len) {
  const uint8_t *p = (const uint8_t *)data;
  while (len > 0) {
    int32_t n = len < 8 ? (int32_t)len : 8;
    uint64_t word = 0;
    for (int32_t i = 0; i < n; i++) word |= (uint64_t)p[i] << (8 * i);
    int32_t rc = hl_http_put(field, (int64_t)word, n);
    if (rc != 0) return rc;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Copies up to `cap` bytes of a response part into `out`; the number copied, or a code < 0. */
static inline int32_t hl_http_copy(int32_t h, int32_t part, void *out, size_t cap) {
  int32_t total = hl_http_len(h, part);
  if (total < 0) return total;
  size_t want = (size_t)total < cap ? (size_t)total : cap;
  uint8_t *o = (uint8_t *)out;
  for (size_t at = 0; at < want; at += 8) {
    uint64_t word = (uint64_t)hl_http_read(h, part, (int32_t)at);
    for (size_t i = 0; i < 8 && at + i < want; i++) o[at + i] = (uint8_t)(word >> (8 * i));
  }
  return (int32_t)want;
}

/*
 * One request: `method` (NULL: GET), NUL-terminated `url`, `headers` ("Name: value\n" lines, or
 * NULL), and `body_len` bytes of `body`. A response handle > 0 (read it with hl_http_status /
 * hl_http_copy, then hl_http_close), or a code < 0.
 */
static inline int32_t hl_http_fetch(const char *method, const char *url, const char *headers,
                                    const void *body, size_t body_len) {
  size_t n = 0;
  if (method) {
    while (method[n]) n++;
    if (hl_http_put_bytes(HL_HTTP_METHOD, method, n) != 0) return hl_http_send();
  }
  for (n = 0; url[n]; n++) {
  }
  if (hl_http_put_bytes(HL_HTTP_URL, url, n) != 0) return hl_http_send();
  if (headers) {
    for (n = 0; headers[n]; n++) {
    }
    if (hl_http_put_bytes(HL_HTTP_HEADERS, headers, n) != 0) return hl_http_send();
  }
  if (body && body_len > 0 && hl_http_put_bytes(HL_HTTP_BODY, body, body_len) != 0) {
    return hl_http_send();
  }
  return hl_http_send();
}

#ifdef __cplusplus
}
#endif

#endif /* HL_HTTP_H */
