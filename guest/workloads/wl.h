/* Shared helpers for krr's guest workloads. Each workload prints clear lines and exits 0 when
 * every check passed, 1 otherwise. Everything here is static: the workloads are linked into one
 * multi-call binary (see guest/build.sh), so only `main` (renamed) may be global. */
#ifndef KRR_WL_H
#define KRR_WL_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *wl_name = "workload";
static int wl_failures;
static int wl_checks;

static void wl_begin(const char *name)
{
    wl_name = name;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("%s: start\n", wl_name);
}

/* CHECK(cond, fmt, ...): counts a check; prints the failure (with errno) when cond is false. */
#define CHECK(cond, ...) wl_check(!!(cond), #cond, __LINE__, __VA_ARGS__)

static int wl_check(int ok, const char *expr, int line, const char *fmt, ...)
{
    int saved = errno;
    wl_checks++;
    if (!ok) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        wl_failures++;
        printf("%s: FAIL line %d: %s (%s) errno=%d %s\n", wl_name, line, msg, expr, saved,
               strerror(saved));
    }
    errno = saved;
    return ok;
}

static void wl_step(const char *fmt, ...)
{
    va_list ap;
    printf("%s: ", wl_name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* Reads the file at path into buf (at most size - 1 bytes, then a NUL): its length, or -1. */
static inline ssize_t wl_slurp(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t total = 0, r;
    while ((r = read(fd, buf + total, size - 1 - (size_t)total)) > 0)
        total += r;
    close(fd);
    buf[total] = 0;
    return r < 0 ? -1 : total;
}

static int wl_end(void)
{
    if (wl_failures) {
        printf("%s: FAILED %d of %d checks\n", wl_name, wl_failures, wl_checks);
        return 1;
    }
    printf("%s: PASS (%d checks)\n", wl_name, wl_checks);
    return 0;
}
#endif
