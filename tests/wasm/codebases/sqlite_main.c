// Driver of ours for the SQLite amalgamation (sqlite3.c from the crates.io package
// libsqlite3-sys, compiled unmodified; see tools/build_c_codebases.sh and docs/wasm.md).
//
// Usage: sqlite [--db=<file name or file: URI>] [SQL ...]
//   Each SQL argument is run, in order, with sqlite3_exec() on one database: in memory, or the
//   file --db names (opened read-write, created if missing; URIs such as
//   `file:/data/t.db?vfs=unix-none` or `?mode=ro` are understood). Rows are
//   printed on stdout as `col|col|...` (NULL as `NULL`), each statement's output followed by
//   nothing else, so the output is exactly what the SQL asks for. Without arguments the SQL is
//   read from stdin.
// Exit status: 0 when every statement ran; 1 on the first SQL error (its message on stderr,
// `error in statement <n>: <message>`); 2 when the database cannot be opened or stdin read.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

static int print_row(void *unused, int ncol, char **values, char **names) {
  (void)unused;
  (void)names;
  for (int i = 0; i < ncol; i++) {
    if (i) putchar('|');
    fputs(values[i] ? values[i] : "NULL", stdout);
  }
  putchar('\n');
  return 0;
}

static char *read_stdin(void) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  if (!buf) return NULL;
  for (;;) {
    if (len + 1 == cap) {
      char *bigger = realloc(buf, cap *= 2);
      if (!bigger) {
        free(buf);
        return NULL;
      }
      buf = bigger;
    }
    size_t n = fread(buf + len, 1, cap - 1 - len, stdin);
    len += n;
    if (n == 0) break;
  }
  if (ferror(stdin)) {
    free(buf);
    return NULL;
  }
  buf[len] = 0;
  return buf;
}

static int run(sqlite3 *db, int index, const char *sql) {
  char *message = NULL;
  if (sqlite3_exec(db, sql, print_row, NULL, &message) != SQLITE_OK) {
    fflush(stdout);
    fprintf(stderr, "error in statement %d: %s\n", index, message ? message : "(no message)");
    sqlite3_free(message);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *name = ":memory:";
  int first = 1;
  if (argc > 1 && strncmp(argv[1], "--db=", 5) == 0) {
    name = argv[1] + 5;
    first = 2;
  }
  sqlite3 *db;
  if (sqlite3_open_v2(name, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                      NULL) != SQLITE_OK) {
    fprintf(stderr, "cannot open database %s: %s\n", name, sqlite3_errmsg(db));
    sqlite3_close(db);
    return 2;
  }
  int status = 0;
  if (argc > first) {
    for (int i = first; i < argc && status == 0; i++) status = run(db, i - first + 1, argv[i]);
  } else {
    char *sql = read_stdin();
    if (!sql) {
      perror("reading SQL from stdin");
      status = 2;
    } else {
      status = run(db, 1, sql);
      free(sql);
    }
  }
  sqlite3_close(db);
  return status;
}
