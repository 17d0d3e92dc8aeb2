/* efault: the kernel copying from/to user memory that faults midway. A buffer whose second page
 * is unmapped is passed to write() (tmpfs file and pipe: a short write of exactly the mapped bytes,
 * or EFAULT), to read(), and bad pointers to a few syscalls (EFAULT). Raw syscalls are used where
 * glibc would touch the memory itself. */
#include "wl.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#define PAGE 4096

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("efault");
    char *m = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED, "mmap 2 pages");
    memset(m, 'k', PAGE);
    CHECK(munmap(m + PAGE, PAGE) == 0, "unmap the second page");
    char *buf = m + PAGE - 100; /* 100 mapped bytes, then the hole */

    int fd = open("/tmp/efault", O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0, "open tmpfs file");
    ssize_t w = syscall(SYS_write, fd, buf, 200);
    CHECK(w == 100 || (w < 0 && errno == EFAULT), "write() of 200 bytes with 100 mapped: %zd", w);
    wl_step("write to tmpfs from a half-unmapped buffer returned %zd%s", w, w < 0 ? " (EFAULT)" : " (short write)");
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == (w > 0 ? w : 0), "file size %lld", (long long)st.st_size);
    w = syscall(SYS_write, fd, m + PAGE, 10);
    CHECK(w < 0 && errno == EFAULT, "write() from an unmapped buffer: EFAULT");

    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    w = syscall(SYS_write, p[1], buf, 200);
    CHECK(w == 100 || (w < 0 && errno == EFAULT), "pipe write with 100 mapped: %zd", w);
    wl_step("write to a pipe from a half-unmapped buffer returned %zd%s", w, w < 0 ? " (EFAULT)" : " (short write)");

    /* Reading into a buffer that becomes unmapped midway: a short read or EFAULT. */
    CHECK(pwrite(fd, m, PAGE, 0) == PAGE, "fill the file");
    ssize_t r = syscall(SYS_pread64, fd, buf, 200, 0);
    CHECK(r == 100 || (r < 0 && errno == EFAULT), "pread into a half-unmapped buffer: %zd", r);
    wl_step("read into a half-unmapped buffer returned %zd", r);

    struct iovec iov[2] = {{.iov_base = m, .iov_len = 50}, {.iov_base = m + PAGE, .iov_len = 50}};
    w = syscall(SYS_writev, fd, iov, 2);
    CHECK(w == 50 || (w < 0 && errno == EFAULT), "writev with a bad second iovec: %zd", w);

    void *bad = m + PAGE;
    CHECK(syscall(SYS_uname, bad) < 0 && errno == EFAULT, "uname(bad): EFAULT");
    CHECK(syscall(SYS_clock_gettime, CLOCK_MONOTONIC, bad) < 0 && errno == EFAULT, "clock_gettime(bad): EFAULT");
    CHECK(syscall(SYS_open, bad, O_RDONLY) < 0 && errno == EFAULT, "open(bad path): EFAULT");
    CHECK(syscall(SYS_pipe, bad) < 0 && errno == EFAULT, "pipe(bad): EFAULT");
    char *path = m + PAGE - 4;
    memcpy(path, "/tmp", 4); /* a path string that runs into the hole: no NUL before the fault */
    CHECK(syscall(SYS_open, path, O_RDONLY) < 0 && errno == EFAULT, "open(path running into the hole): EFAULT");
    CHECK(syscall(SYS_nanosleep, bad, NULL) < 0 && errno == EFAULT, "nanosleep(bad): EFAULT");
    wl_step("bad pointers to uname, clock_gettime, open, pipe, nanosleep: EFAULT");
    close(fd);
    unlink("/tmp/efault");
    return wl_end();
}
