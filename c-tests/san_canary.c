/* san_canary: proves the memory checkers of scripts/test.d/30-sanitizers.sh and 40-valgrind.sh are live in this
 * environment. Each mode commits one bug the checker must report; the steps expect a failure and the report. A
 * checker that was silently off (LeakSanitizer cannot run under some ptrace setups, a valgrind that ignores
 * --error-exitcode) would otherwise make a clean run mean nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int sink;

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "leak") == 0) {
    char *p = malloc(4242);
    if (!p) return 2;
    p[0] = 1;
    sink = p[0];
    p = NULL; /* lost: LeakSanitizer and memcheck report 4242 bytes */
    return 0;
  }
  if (strcmp(mode, "overflow") == 0) {
    char *p = malloc(16);
    if (!p) return 2;
    sink = p[16 + (argc > 5)]; /* one past the end: heap-buffer-overflow / invalid read */
    free(p);
    return 0;
  }
  if (strcmp(mode, "use-after-free") == 0) {
    int *p = malloc(sizeof *p);
    if (!p) return 2;
    *p = 3;
    free(p);
    sink = *p; /* heap-use-after-free / invalid read */
    return 0;
  }
  fprintf(stderr, "usage: san_canary leak|overflow|use-after-free\n");
  return 2;
}
