/* mmap: anonymous mappings and demand-zero page faults, copy-on-write after fork, a shared file
 * mapping on tmpfs, mprotect (a write to a read-only page faults with SEGV_ACCERR), munmap (an
 * access faults with SEGV_MAPERR), mremap, MAP_FIXED. Faults are caught with sigsetjmp. */
#include "wl.h"
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096
#define NPAGES 1024

static sigjmp_buf jb;
static volatile int fault_code;
static void *volatile fault_addr;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    fault_code = si->si_code;
    fault_addr = si->si_addr;
    siglongjmp(jb, 1);
}

/* Writes one byte at p; returns 0 or the fault's si_code. */
static int try_write(volatile char *p)
{
    fault_code = 0;
    if (sigsetjmp(jb, 1) == 0)
        *p = 1;
    return fault_code;
}

static int try_read(volatile char *p)
{
    fault_code = 0;
    if (sigsetjmp(jb, 1) == 0)
        (void)*p;
    return fault_code;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("mmap");
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);

    char *a = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(a != MAP_FAILED, "mmap anonymous %d pages", NPAGES);
    int nonzero = 0;
    for (int i = 0; i < NPAGES; i++)
        nonzero += a[i * PAGE + (i % PAGE)] != 0; /* read faults: zero page */
    for (int i = 0; i < NPAGES; i++)
        a[i * PAGE + 5] = (char)i; /* write faults */
    int wrong = 0;
    for (int i = 0; i < NPAGES; i++)
        wrong += a[i * PAGE + 5] != (char)i;
    CHECK(nonzero == 0 && wrong == 0, "demand-zero pages (%d nonzero, %d wrong)", nonzero, wrong);
    wl_step("touched %d anonymous pages", NPAGES);

    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < NPAGES; i += 2)
            a[i * PAGE + 5] = 0x55; /* copy-on-write in the child */
        _exit(a[0 * PAGE + 5] == 0x55 ? 0 : 1);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child wrote");
    wrong = 0;
    for (int i = 0; i < NPAGES; i++)
        wrong += a[i * PAGE + 5] != (char)i;
    CHECK(wrong == 0, "parent unaffected by the child's writes (copy-on-write), %d wrong", wrong);
    wl_step("copy-on-write after fork ok");

    CHECK(mprotect(a, 4 * PAGE, PROT_READ) == 0, "mprotect read-only");
    CHECK(try_read(a + PAGE) == 0, "read of a read-only page");
    int code = try_write(a + PAGE + 8);
    CHECK(code == SEGV_ACCERR && fault_addr == a + PAGE + 8, "write to a read-only page: si_code %d", code);
    CHECK(mprotect(a, 4 * PAGE, PROT_NONE) == 0, "mprotect none");
    code = try_read(a + 3 * PAGE);
    CHECK(code == SEGV_ACCERR, "read of a PROT_NONE page: si_code %d", code);
    CHECK(mprotect(a, 4 * PAGE, PROT_READ | PROT_WRITE) == 0 && try_write(a + PAGE) == 0, "mprotect back");

    CHECK(munmap(a + 10 * PAGE, 2 * PAGE) == 0, "munmap a hole");
    code = try_write(a + 11 * PAGE);
    CHECK(code == SEGV_MAPERR && fault_addr == a + 11 * PAGE, "write to an unmapped page: si_code %d", code);
    char *fixed = mmap(a + 10 * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(fixed == a + 10 * PAGE && fixed[7] == 0, "MAP_FIXED into the hole");
    wl_step("mprotect and munmap faults ok");

    char *b = mremap(a + 100 * PAGE, 4 * PAGE, 64 * PAGE, MREMAP_MAYMOVE);
    CHECK(b != MAP_FAILED && b[5] == (char)100 && b[3 * PAGE + 5] == (char)103, "mremap keeps contents");
    b[63 * PAGE] = 1;
    CHECK(munmap(b, 64 * PAGE) == 0, "munmap mremapped");
    CHECK(munmap(a, NPAGES * PAGE) == 0, "munmap all");

    int fd = open("/tmp/mmap-file", O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 8 * PAGE) == 0, "tmpfs file");
    char *m = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED, "mmap shared file");
    for (int i = 0; i < 8; i++)
        snprintf(m + i * PAGE, 32, "page %d", i);
    CHECK(msync(m, 8 * PAGE, MS_SYNC) == 0, "msync");
    char rb[16] = {0};
    CHECK(pread(fd, rb, 6, 5 * PAGE) == 6 && memcmp(rb, "page 5", 6) == 0, "read() sees the mapped write '%s'", rb);
    CHECK(pwrite(fd, "PAGE", 4, 6 * PAGE) == 4 && memcmp(m + 6 * PAGE, "PAGE 6", 6) == 0, "mapping sees write()");
    /* Beyond EOF of a shared file mapping: SIGBUS. */
    CHECK(ftruncate(fd, 2 * PAGE) == 0, "shrink");
    struct sigaction sb = sa;
    sigaction(SIGBUS, &sb, NULL);
    code = try_read(m + 4 * PAGE);
    CHECK(code == BUS_ADRERR, "read beyond EOF of a file mapping: SIGBUS si_code %d", code);
    munmap(m, 8 * PAGE);
    close(fd);
    unlink("/tmp/mmap-file");
    wl_step("shared tmpfs file mapping ok");
    return wl_end();
}
