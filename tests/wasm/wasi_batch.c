// File calls the runtime guest answers itself and sends in batches (issue 22; docs/wasm.md, "File
// calls cross in batches"): writes, seeks, reads, truncation and closes interleaved on one file
// through two fds, a write on a read-only fd, a host import that reads the file on the host
// (`env.peek`), and a file left open with a write at the end of the call.
// tests/kvm/wasi_batch.test.ts compares the output and the files with V8 through node:wasi
// (every call unbatched).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((import_module("env"), import_name("peek"))) void peek(void);

// Prints `n` bytes, NUL as '.'.
static void dump(const char *what, const char *buf, long n) {
  printf("%s: %ld [", what, n);
  for (long i = 0; i < n; i++) putchar(buf[i] ? buf[i] : '.');
  printf("]\n");
}

static void show(const char *what, int fd) {
  char buf[64];
  dump(what, buf, (long)pread(fd, buf, sizeof buf, 0));
}

int main(void) {
  char buf[64];
  int a = open("/data/f.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
  int b = open("/data/f.txt", O_RDWR);
  if (a < 0 || b < 0) {
    perror("open");
    return 1;
  }
  write(a, "hello ", 6);
  write(a, "world", 5);
  show("b sees a's writes", b);
  lseek(a, 2, SEEK_SET);
  write(a, "LL", 2);
  lseek(b, 0, SEEK_SET);
  dump("read through b", buf, (long)read(b, buf, 4));
  write(b, "O", 1);
  printf("offsets: a %lld, b %lld\n", (long long)lseek(a, 0, SEEK_CUR),
         (long long)lseek(b, 0, SEEK_CUR));
  lseek(a, 20, SEEK_SET);
  write(a, "Z", 1);
  struct stat st;
  fstat(b, &st);
  printf("size after a write past the end: %lld\n", (long long)st.st_size);
  pwrite(b, "pw", 2, 8);
  peek();
  lseek(a, 0, SEEK_END);
  write(a, "!", 1);
  lseek(a, 3, SEEK_SET);
  close(a);
  show("after a's close", b);
  ftruncate(b, 5);
  write(b, "+", 1);
  fstat(b, &st);
  printf("size after truncate and write: %lld\n", (long long)st.st_size);
  close(b);
  int r = open("/data/f.txt", O_RDONLY);
  errno = 0;
  long w = (long)write(r, "x", 1);
  printf("write on a read-only fd: %ld, errno %s\n", w, errno == EBADF ? "EBADF" : "other");
  dump("final", buf, (long)read(r, buf, sizeof buf));
  close(r);
  // Written and never closed: crosses at the end of the call.
  int d = open("/data/g.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  lseek(d, 4, SEEK_SET);
  write(d, "end of call", 11);
  printf("done\n");
  fflush(stdout);
  return 0;
}
