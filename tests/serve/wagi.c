// A WAGI test program (hl serve, tests/kvm/serve.test.ts): echoes the request's CGI variables
// and body; the query string picks a misbehaviour (trap, loop, a malformed head, no head, a
// redirect, a huge output), prints the whole environment, or reads a file of the preopened /data.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v ? v : "";
}

int main(void) {
  const char *q = env("QUERY_STRING");
  if (strcmp(q, "trap") == 0) __builtin_trap();
  if (strcmp(q, "loop") == 0) {
    volatile unsigned long x = 0;
    for (;;) x++;
  }
  if (strcmp(q, "env") == 0) {
    // The whole environment, one variable a line (a run must see its own request's only).
    printf("Content-Type: text/plain\n\n");
    for (char **e = environ; *e; e++) printf("%s\n", *e);
    return 0;
  }
  if (strcmp(q, "badhead") == 0) {
    printf("Content-Type: text/plain\nBad Line\n\nx");
    return 0;
  }
  if (strcmp(q, "nohead") == 0) {
    printf("just text");
    return 0;
  }
  if (strcmp(q, "redirect") == 0) {
    printf("Location: /elsewhere\n\n");
    return 0;
  }
  if (strcmp(q, "big") == 0) {
    printf("Content-Type: text/plain\n\n");
    for (int i = 0; i < 2500; i++) fputs("0123456789012345678901234567890123456789\n", stdout);
    return 0;
  }
  if (strcmp(q, "file") == 0) {
    // A file in the route's preopened directory /data.
    static char text[256];
    FILE *f = fopen("/data/hello.txt", "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    printf("Content-Type: text/plain\n\n%s:%.*s", f ? "ok" : "missing", (int)n, text);
    return 0;
  }
  static char body[65536];
  size_t n = fread(body, 1, sizeof body, stdin);
  printf("Content-Type: text/plain\nStatus: 201 Created\nX-Method: %s\n\n", env("REQUEST_METHOD"));
  printf("method=%s script=%s path=%s query=%s length=%s id=%s agent=%s extra=%s\n",
         env("REQUEST_METHOD"), env("SCRIPT_NAME"), env("PATH_INFO"), q, env("CONTENT_LENGTH"),
         env("X_REQUEST_ID"), env("HTTP_USER_AGENT"), env("EXTRA"));
  fwrite(body, 1, n, stdout);
  return 0;
}
