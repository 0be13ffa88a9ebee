/* log_callback: ttdrv's log records reach a C callback, and nothing else, from C (scripts/test.d/16-c-abi.sh).
 *
 * The record used is the hugepage-fallback warning: opening a device with hugepages requested (the default) while
 * none are free logs it once per process. The test first takes every free 2 MiB hugepage for itself (as
 * tests/hugepages.rs does), so the fallback happens whether or not the machine has hugepages reserved.
 *
 *  1. A child process without a callback and without TTDRV_LOG opens such a device and panics inside a call: its
 *     stderr must stay empty (the library writes nothing anywhere).
 *  2. A child with TTDRV_LOG=warn: the warning and the panic's message are on its stderr.
 *  3. This process installs a callback and opens such a device: the warning reaches the callback on the calling
 *     thread before ttdrv_device_open returns. The callback calls back into ttdrv (a device query, a float round
 *     trip through another device, a failing call) without deadlock, and the open still succeeds with an empty
 *     message. A panic inside a call reaches the callback at error level with the same message as
 *     ttdrv_last_error().
 *
 * Output: one line per failed expectation, then "log_callback: N passed, M failed"; exit status 1 if any failed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <ttdrv.h>
#include <unistd.h>

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004u
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26)
#endif

#define FALLBACK_WARNING "no free 2 MiB hugepages"

static unsigned n_passed, n_failed;

#define TRUE_(cond, ...)                                                    \
  do {                                                                      \
    if (cond) {                                                             \
      n_passed++;                                                           \
    } else {                                                                \
      fprintf(stderr, "FAIL line %d: %s: ", __LINE__, #cond);               \
      fprintf(stderr, __VA_ARGS__);                                         \
      fprintf(stderr, "\n");                                                \
      n_failed++;                                                           \
    }                                                                       \
  } while (0)
#define CHECK(call)                                                                                         \
  do {                                                                                                      \
    ttdrv_status st_ = (call);                                                                              \
    if (st_ != TTDRV_STATUS_OK) {                                                                           \
      fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, ttdrv_status_name(st_), ttdrv_last_error()); \
      exit(2);                                                                                              \
    }                                                                                                       \
  } while (0)

/* ------------------------------------------------------------------------------------------------------------ */
/* Taking every free hugepage                                                                                   */

static unsigned long meminfo(const char *key) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  unsigned long v = 0;
  size_t n = strlen(key);
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, key, n) == 0 && line[n] == ':') {
      v = strtoul(line + n + 1, NULL, 10);
      break;
    }
  }
  if (f) fclose(f);
  return v;
}

/* 2 MiB hugepages a new mapping could still reserve. */
static unsigned long hugepages_available(void) {
  if (meminfo("Hugepagesize") != 2048) return 0;
  unsigned long free_ = meminfo("HugePages_Free"), rsvd = meminfo("HugePages_Rsvd");
  return free_ > rsvd ? free_ - rsvd : 0;
}

/* Reserves `pages` hugepages in a shared hugetlb mapping (the kernel reserves them at mmap time); 0 on failure.
 * The mapping is never unmapped: the pages return to the pool when the process exits. */
static int grab(unsigned long pages) {
  int fd = memfd_create("ttdrv-test-grab", MFD_HUGETLB | MFD_HUGE_2MB);
  if (fd < 0) return 0;
  size_t len = pages * (2u << 20);
  int ok = ftruncate(fd, (off_t)len) == 0 && mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED;
  close(fd);
  return ok;
}

static void take_all_hugepages(void) {
  for (int rounds = 0; rounds < 10000; rounds++) {
    unsigned long n = hugepages_available();
    if (n == 0) return;
    if (!grab(n) && !grab(1)) break; /* someone else took some meanwhile: go page by page */
  }
  if (hugepages_available() != 0) {
    fprintf(stderr, "cannot take every free hugepage (%lu left); the fallback cannot be forced\n", hugepages_available());
    exit(2);
  }
}

/* Opens the emulated device with the default parameters: hugepages requested. */
static ttdrv_device *open_with_hugepages(void) {
  ttdrv_device *d = NULL;
  CHECK(ttdrv_device_open("emu", NULL, &d));
  return d;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Children: what reaches stderr without a callback                                                             */

static int child_main(void) {
  take_all_hugepages();
  ttdrv_device *d = open_with_hugepages();
  if (ttdrv_debug_panic() != TTDRV_STATUS_PANIC) return 3;
  CHECK(ttdrv_device_close(d));
  return 0;
}

/* Runs this program as a child with `mode`, TTDRV_LOG set to `ttdrv_log` (NULL: unset); returns its stderr
 * (malloc'd) and stores its exit status. */
static char *run_child(const char *mode, const char *ttdrv_log, int *status) {
  char path[] = "/tmp/ttdrv-log-callback-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    perror("mkstemp");
    exit(2);
  }
  unlink(path);
  pid_t pid = fork();
  if (pid == 0) {
    if (ttdrv_log) setenv("TTDRV_LOG", ttdrv_log, 1);
    else unsetenv("TTDRV_LOG");
    dup2(fd, 2);
    execl("/proc/self/exe", "log_callback", mode, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  off_t n = lseek(fd, 0, SEEK_END);
  char *out = calloc(1, (size_t)n + 1);
  if (out && n > 0) {
    lseek(fd, 0, SEEK_SET);
    ssize_t got = read(fd, out, (size_t)n);
    out[got > 0 ? got : 0] = '\0';
  }
  close(fd);
  return out;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* The callback                                                                                                 */

typedef struct {
  pthread_t caller;        /* the thread that makes the ttdrv calls */
  ttdrv_device *other;     /* a device the callback uses */
  int in_open;             /* set while ttdrv_device_open runs on the caller */
  int warning_seen;        /* the fallback warning arrived */
  int warning_on_caller;   /* ... on the calling thread */
  int warning_during_open; /* ... before ttdrv_device_open returned */
  int reentry_ok;          /* the callback's own ttdrv calls worked */
  int errors;              /* error-level records */
  char last_error_record[1024];
} sink;

/* What a callback that uses ttdrv does: query a device, move floats through it, make a call that fails. */
static int callback_uses_ttdrv(ttdrv_device *dev) {
  ttdrv_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  if (ttdrv_device_get_info(dev, &info) != TTDRV_STATUS_OK || info.grid_x == 0) return 0;
  ttdrv_tensor_spec spec;
  if (ttdrv_tensor_spec_init(&spec) != TTDRV_STATUS_OK) return 0;
  spec.rows = 32;
  spec.cols = 32;
  float in[32 * 32], out[32 * 32];
  for (int i = 0; i < 32 * 32; i++) in[i] = (float)i * 0.5f;
  ttdrv_buffer *b = NULL;
  int ok = ttdrv_buffer_allocate(dev, &spec, &b) == TTDRV_STATUS_OK &&
           ttdrv_buffer_write(b, 0, in, sizeof in, false) == TTDRV_STATUS_OK &&
           ttdrv_buffer_read(b, 0, true, out, sizeof out) == TTDRV_STATUS_OK && memcmp(in, out, sizeof in) == 0;
  ok = ok && ttdrv_buffer_free(b) == TTDRV_STATUS_OK;
  /* A failing call inside the callback sets this thread's message; the outer call's result decides it afterwards. */
  ok = ok && ttdrv_device_params_init(NULL) == TTDRV_STATUS_NULL_PARAMETER;
  return ok;
}

static void on_log(void *userdata, ttdrv_log_level level, const char *message, size_t message_len) {
  sink *s = (sink *)userdata;
  if (message[message_len] != '\0' || strlen(message) != message_len) {
    fprintf(stderr, "FAIL: message_len %zu does not match the NUL-terminated message '%s'\n", message_len, message);
    n_failed++;
  }
  if (level == TTDRV_LOG_LEVEL_WARN && strstr(message, FALLBACK_WARNING)) {
    s->warning_seen++;
    s->warning_on_caller = pthread_equal(pthread_self(), s->caller);
    s->warning_during_open = s->in_open;
    s->reentry_ok = callback_uses_ttdrv(s->other);
  }
  if (level == TTDRV_LOG_LEVEL_ERROR) {
    s->errors++;
    snprintf(s->last_error_record, sizeof s->last_error_record, "%s", message);
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "child") == 0) return child_main();

  /* 1 and 2: stderr without a callback. */
  int st = 0;
  char *err = run_child("child", NULL, &st);
  TRUE_(st == 0, "child without TTDRV_LOG exited with %d: %s", st, err ? err : "");
  TRUE_(err && err[0] == '\0', "without a callback or TTDRV_LOG the library wrote to stderr:\n%s", err ? err : "");
  free(err);
  err = run_child("child", "warn", &st);
  TRUE_(st == 0, "child with TTDRV_LOG=warn exited with %d: %s", st, err ? err : "");
  TRUE_(err && strstr(err, FALLBACK_WARNING) && strstr(err, "WARN"), "TTDRV_LOG=warn did not print the warning:\n%s",
        err ? err : "");
  TRUE_(err && strstr(err, "ttdrv_debug_panic was called") && strstr(err, "ERROR"),
        "TTDRV_LOG=warn did not print the panic's message:\n%s", err ? err : "");
  TRUE_(err && !strstr(err, "stack backtrace") && !strstr(err, "panicked at"),
        "a panic inside a call was printed by Rust's panic hook:\n%s", err ? err : "");
  free(err);

  /* 3: the callback in this process. */
  take_all_hugepages();
  sink s;
  memset(&s, 0, sizeof s);
  s.caller = pthread_self();
  ttdrv_device_params p;
  CHECK(ttdrv_device_params_init(&p));
  p.flags = TTDRV_DEVICE_FLAG_NO_HUGEPAGES; /* no fallback, no warning: the warning must come from the next open */
  CHECK(ttdrv_device_open("emu", &p, &s.other));
  CHECK(ttdrv_set_log_level(TTDRV_LOG_LEVEL_WARN));
  CHECK(ttdrv_set_log_callback(on_log, &s));

  ttdrv_device *d = NULL;
  s.in_open = 1;
  ttdrv_status open_st = ttdrv_device_open("emu", NULL, &d);
  s.in_open = 0;
  TRUE_(open_st == TTDRV_STATUS_OK, "open with hugepages requested: %s: %s", ttdrv_status_name(open_st),
        ttdrv_last_error());
  TRUE_(ttdrv_last_error()[0] == '\0', "the callback's failing call left its message on a successful open: '%s'",
        ttdrv_last_error());
  TRUE_(s.warning_seen == 1, "the callback saw the hugepage-fallback warning %d times", s.warning_seen);
  TRUE_(s.warning_on_caller, "the warning was not delivered on the thread that called ttdrv_device_open");
  TRUE_(s.warning_during_open, "the warning was delivered after ttdrv_device_open returned");
  TRUE_(s.reentry_ok, "the callback's own ttdrv calls failed");

  /* A panic inside a call: at error level, the same message as the last error. */
  TRUE_(ttdrv_debug_panic() == TTDRV_STATUS_PANIC, "ttdrv_debug_panic");
  TRUE_(s.errors == 1 && strcmp(s.last_error_record, ttdrv_last_error()) == 0,
        "panic record (%d): '%s', last error '%s'", s.errors, s.last_error_record, ttdrv_last_error());

  /* Removed: nothing more arrives, and the caller may release what the callback used. */
  CHECK(ttdrv_set_log_callback(NULL, NULL));
  TRUE_(ttdrv_debug_panic() == TTDRV_STATUS_PANIC, "ttdrv_debug_panic");
  TRUE_(s.errors == 1, "a record arrived after the callback was removed");
  TRUE_(ttdrv_set_log_level(99) == TTDRV_STATUS_INVALID_ARGUMENT && strstr(ttdrv_last_error(), "TTDRV_LOG_LEVEL_"),
        "log level 99: '%s'", ttdrv_last_error());

  CHECK(ttdrv_device_close(d));
  CHECK(ttdrv_device_close(s.other));
  printf("log_callback: %u passed, %u failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
