// A WASI command: prints to stdout and stderr, reads args, env, clock and random, then exits
// with status 7 via exit() (proc_exit).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  printf("hello from wasi, argc=%d\n", argc);
  for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
  const char *greeting = getenv("GREETING");
  printf("GREETING=%s\n", greeting ? greeting : "(unset)");
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  printf("time_ok=%d\n", ts.tv_sec > 1600000000);
  unsigned char buf[8];
  getentropy(buf, sizeof buf);
  printf("random=%02x%02x%02x%02x%02x%02x%02x%02x\n", buf[0], buf[1], buf[2], buf[3], buf[4],
         buf[5], buf[6], buf[7]);
  FILE *f = fopen("/etc/passwd", "r");
  printf("fopen=%s\n", f ? "opened" : "failed");
  fprintf(stderr, "to stderr\n");
  fflush(stdout);
  exit(7);
}
