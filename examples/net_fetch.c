// A WASI command that fetches over the host's allow-list (runtimes/include/hl_http.h):
//   net_fetch URL [METHOD BODY]
//   net_fetch URL LOOP      (1,000 GETs in one call: prints "ok N refused M last CODE")
// prints "status N", the response headers and the body; on a refusal or failure prints
// "error CODE: TEXT" and exits 2. Build (tools/build_wasm_fixtures.sh finds the same sysroot):
//   clang --target=wasm32-wasi --sysroot=/usr -O2 -nodefaultlibs -lc -I runtimes/include \
//     examples/net_fetch.c -o net_fetch.wasm
// Run it in a WasmSandbox with `net` and `wasi: { args: ["net_fetch", url] }` (runWasi);
// tests/kvm/net_hostile.test.ts builds and runs it.
#include <stdio.h>
#include <string.h>

#include "hl_http.h"

static char buf[1 << 16];

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: net_fetch URL [METHOD BODY]\n");
    return 1;
  }
  if (argc == 3 && strcmp(argv[2], "LOOP") == 0) {
    int ok = 0, refused = 0, last = 0;
    for (int i = 0; i < 1000; i++) {
      int32_t h = hl_http_fetch(NULL, argv[1], NULL, NULL, 0);
      if (h > 0) {
        ok++;
        hl_http_close(h);
      } else {
        refused++;
        last = h;
      }
    }
    printf("ok %d refused %d last %d\n", ok, refused, last);
    return 0;
  }
  const char *method = argc > 2 ? argv[2] : NULL;
  const char *body = argc > 3 ? argv[3] : NULL;
  int32_t h = hl_http_fetch(method, argv[1], "Accept: text/plain\n", body, body ? strlen(body) : 0);
  if (h < 0) {
    int32_t n = hl_http_copy(0, HL_HTTP_PART_ERROR, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("error %d: %s\n", h, buf);
    return 2;
  }
  printf("status %d\n", hl_http_status(h));
  int32_t n = hl_http_copy(h, HL_HTTP_PART_HEADERS, buf, sizeof buf - 1);
  buf[n > 0 ? n : 0] = 0;
  fputs(buf, stdout);
  n = hl_http_copy(h, HL_HTTP_PART_BODY, buf, sizeof buf - 1);
  buf[n > 0 ? n : 0] = 0;
  printf("\n%s\n", buf);
  hl_http_close(h);
  return 0;
}
