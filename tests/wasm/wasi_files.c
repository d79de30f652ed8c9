// A WASI command for the file and stdin tests: `wasi_files <command> [args...]`. It uses
// wasi-libc as a real program would (stdio, dirent, stat, unistd), plus `raw*` commands that
// call the WASI imports directly with exact bytes (NUL bytes, long paths, absolute paths), to
// reach the host's checks with inputs libc would never send. Every outcome is printed, errno
// values as numbers (wasi-libc's errno values are WASI's).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int32_t raw_path_open(int32_t fd, int32_t dirflags, int32_t path, int32_t path_len,
                      int32_t oflags, int64_t base, int64_t inheriting, int32_t fdflags,
                      int32_t out)
    __attribute__((__import_module__("wasi_snapshot_preview1"), __import_name__("path_open")));
int32_t raw_path_rename(int32_t fd, int32_t from, int32_t from_len, int32_t to_fd, int32_t to,
                        int32_t to_len)
    __attribute__((__import_module__("wasi_snapshot_preview1"), __import_name__("path_rename")));
int32_t raw_path_create_directory(int32_t fd, int32_t path, int32_t len) __attribute__((
    __import_module__("wasi_snapshot_preview1"), __import_name__("path_create_directory")));
int32_t raw_path_unlink_file(int32_t fd, int32_t path, int32_t len) __attribute__((
    __import_module__("wasi_snapshot_preview1"), __import_name__("path_unlink_file")));
int32_t raw_fd_read(int32_t fd, int32_t iovs, int32_t count, int32_t out)
    __attribute__((__import_module__("wasi_snapshot_preview1"), __import_name__("fd_read")));

#define RIGHT_READ (1ull << 1)
#define RIGHT_WRITE (1ull << 6)

static int fail(const char *what) {
  printf("%s: errno=%d\n", what, errno);
  return 1;
}

// Copies stdin to stdout in chunks of `chunk` bytes; prints the byte count to stderr.
static int cmd_stdin(int chunk) {
  static char buf[65536]; // static: the default Wasm stack is 64 KiB
  if (chunk <= 0 || chunk > (int)sizeof buf) chunk = sizeof buf;
  long total = 0;
  for (;;) {
    ssize_t n = read(0, buf, chunk);
    if (n < 0) return fail("read");
    if (n == 0) break;
    fwrite(buf, 1, n, stdout);
    total += n;
  }
  fflush(stdout);
  fprintf(stderr, "stdin bytes=%ld\n", total);
  return 0;
}

// Reads stdin with getchar() (libc refills its 1 KiB buffer with one fd_read each time) and
// prints only the byte count and a checksum: input crosses, almost nothing goes out.
static int cmd_count(void) {
  unsigned long total = 0, sum = 0;
  int c;
  while ((c = getchar()) != EOF) {
    total++;
    sum = sum * 31 + (unsigned char)c;
  }
  if (ferror(stdin)) return fail("getchar");
  printf("count bytes=%lu sum=%lu\n", total, sum);
  return 0;
}

static int cmd_cat(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return fail("fopen");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
  fclose(f);
  return 0;
}

static int cmd_write(const char *path, const char *text, const char *mode) {
  FILE *f = fopen(path, mode);
  if (!f) return fail("fopen");
  if (fputs(text, f) < 0) return fail("fputs");
  if (fclose(f) != 0) return fail("fclose");
  printf("wrote %zu\n", strlen(text));
  return 0;
}

static int compare(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmd_ls(const char *path) {
  DIR *d = opendir(path);
  if (!d) return fail("opendir");
  char *names[1024];
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && count < 1024) {
    char type = e->d_type == DT_DIR ? 'd' : e->d_type == DT_REG ? 'f' : e->d_type == DT_LNK ? 'l' : '?';
    char *s = malloc(strlen(e->d_name) + 3);
    sprintf(s, "%c %s", type, e->d_name);
    names[count++] = s;
  }
  closedir(d);
  qsort(names, count, sizeof names[0], compare);
  for (int i = 0; i < count; i++) printf("%s\n", names[i]);
  return 0;
}

static int cmd_stat(const char *path, int follow) {
  struct stat st;
  int r = follow ? stat(path, &st) : lstat(path, &st);
  if (r != 0) return fail("stat");
  printf("size=%lld dir=%d reg=%d lnk=%d\n", (long long)st.st_size, S_ISDIR(st.st_mode),
         S_ISREG(st.st_mode), S_ISLNK(st.st_mode));
  return 0;
}

// Writes, seeks, reads back, pread/pwrite, ftruncate, fstat: the fd-level calls.
static int cmd_seek(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return fail("open");
  if (write(fd, "hello world", 11) != 11) return fail("write");
  printf("tell=%lld\n", (long long)lseek(fd, 0, SEEK_CUR));
  if (lseek(fd, 6, SEEK_SET) != 6) return fail("lseek");
  char buf[16] = {0};
  if (read(fd, buf, 5) != 5) return fail("read");
  printf("read=%s\n", buf);
  if (pwrite(fd, "W", 1, 6) != 1) return fail("pwrite");
  memset(buf, 0, sizeof buf);
  if (pread(fd, buf, 11, 0) != 11) return fail("pread");
  printf("pread=%s tell=%lld\n", buf, (long long)lseek(fd, 0, SEEK_CUR));
  printf("end=%lld\n", (long long)lseek(fd, -2, SEEK_END));
  if (ftruncate(fd, 5) != 0) return fail("ftruncate");
  struct stat st;
  if (fstat(fd, &st) != 0) return fail("fstat");
  printf("size=%lld\n", (long long)st.st_size);
  if (fsync(fd) != 0) return fail("fsync");
  if (fdatasync(fd) != 0) return fail("fdatasync");
  if (close(fd) != 0) return fail("close");
  return 0;
}

static int result(const char *what, int r) {
  if (r == 0) printf("%s: ok\n", what);
  else printf("%s: errno=%d\n", what, errno);
  return r == 0 ? 0 : 1;
}

// Opens `path` under preopen fd 3 with the raw import: `len` bytes of `path` (so NUL bytes and
// absolute paths reach the host as given). Prints the errno (0: opened).
static int raw_open(const char *path, int len, int follow, int write_right) {
  int32_t fd = -1;
  int64_t rights = RIGHT_READ | (write_right ? RIGHT_WRITE : 0);
  int32_t e = raw_path_open(3, follow ? 1 : 0, (int32_t)(intptr_t)path, len, 0, rights, rights,
                            0, (int32_t)(intptr_t)&fd);
  printf("errno=%d\n", e);
  if (e == 0) {
    char buf[64] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    printf("read=%zd %s\n", n, n > 0 ? buf : "");
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: wasi_files <command> [args]\n");
    return 2;
  }
  const char *cmd = argv[1];
  const char *a = argc > 2 ? argv[2] : "";
  const char *b = argc > 3 ? argv[3] : "";
  if (!strcmp(cmd, "stdin")) return cmd_stdin(argc > 2 ? atoi(a) : 0);
  if (!strcmp(cmd, "count")) return cmd_count();
  if (!strcmp(cmd, "cat")) return cmd_cat(a);
  if (!strcmp(cmd, "write")) return cmd_write(a, b, "w");
  if (!strcmp(cmd, "append")) return cmd_write(a, b, "a");
  if (!strcmp(cmd, "ls")) return cmd_ls(a);
  if (!strcmp(cmd, "stat")) return cmd_stat(a, 1);
  if (!strcmp(cmd, "lstat")) return cmd_stat(a, 0);
  if (!strcmp(cmd, "seek")) return cmd_seek(a);
  if (!strcmp(cmd, "mkdir")) return result("mkdir", mkdir(a, 0755));
  if (!strcmp(cmd, "rmdir")) return result("rmdir", rmdir(a));
  if (!strcmp(cmd, "unlink")) return result("unlink", unlink(a));
  if (!strcmp(cmd, "rename")) return result("rename", rename(a, b));
  if (!strcmp(cmd, "readlink")) {
    char buf[256] = {0};
    ssize_t n = readlink(a, buf, sizeof buf - 1);
    if (n < 0) return fail("readlink");
    printf("link=%s\n", buf);
    return 0;
  }
  if (!strcmp(cmd, "openfds")) {
    // Opens `a` until it fails; prints how many opened and the errno.
    int n = 0;
    while (n < 10000 && open(a, O_RDONLY) >= 0) n++;
    printf("opened=%d errno=%d\n", n, errno);
    return 0;
  }
  // Raw WASI: path relative to preopen fd 3, exactly as given.
  if (!strcmp(cmd, "rawopen")) return raw_open(a, (int)strlen(a), atoi(b), 0);
  if (!strcmp(cmd, "rawopen-follow")) return raw_open(a, (int)strlen(a), 1, 0);
  if (!strcmp(cmd, "rawopen-write")) return raw_open(a, (int)strlen(a), 1, 1);
  if (!strcmp(cmd, "rawopen-nul")) {
    char path[] = "file.txt\0/../../etc/passwd";
    return raw_open(path, sizeof path - 1, 1, 0);
  }
  if (!strcmp(cmd, "rawopen-long")) {
    int len = atoi(a);
    char *path = malloc(len + 1);
    for (int i = 0; i < len; i++) path[i] = (i % 100 == 99) ? '/' : 'x';
    path[len] = 0;
    return raw_open(path, len, 1, 0);
  }
  if (!strcmp(cmd, "rawrename")) {
    printf("errno=%d\n", raw_path_rename(3, (int32_t)(intptr_t)a, strlen(a), 3,
                                         (int32_t)(intptr_t)b, strlen(b)));
    return 0;
  }
  if (!strcmp(cmd, "rawmkdir")) {
    printf("errno=%d\n", raw_path_create_directory(3, (int32_t)(intptr_t)a, strlen(a)));
    return 0;
  }
  if (!strcmp(cmd, "rawunlink")) {
    printf("errno=%d\n", raw_path_unlink_file(3, (int32_t)(intptr_t)a, strlen(a)));
    return 0;
  }
  if (!strcmp(cmd, "rawread-badfd")) {
    char buf[8];
    int32_t iov[2] = {(int32_t)(intptr_t)buf, sizeof buf};
    int32_t n = 0;
    printf("errno=%d\n", raw_fd_read(atoi(a), (int32_t)(intptr_t)iov, 1, (int32_t)(intptr_t)&n));
    return 0;
  }
  fprintf(stderr, "unknown command %s\n", cmd);
  return 2;
}
