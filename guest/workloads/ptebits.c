/* ptebits: the kernel reading the accessed and dirty bits that the CPU set in user PTEs while
 * user code ran. Replay skips user code, so those bits exist only in the recording: every
 * kernel read of them must go through the agent's PTE hook. Touches pages of an anonymous
 * mapping in a pattern that changes every round, then makes the kernel look at the bits:
 * /proc/self/smaps and smaps_rollup (Referenced, Private_Dirty), /proc/self/pagemap,
 * /proc/self/clear_refs, /proc/self/mem (GUP with FOLL_TOUCH), madvise MADV_COLD,
 * MADV_PAGEOUT and MADV_FREE. */
#include "wl.h"
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096
#define NPAGES 64
#define ROUNDS 24

#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static char text[65536];

static ssize_t slurp(const char *path)
{
    return wl_slurp(path, text, sizeof text);
}

/* Sum of a "Key:   N kB" field over every mapping in text. */
static long sum_field(const char *key)
{
    long sum = 0;
    for (char *p = strstr(text, key); p; p = strstr(p + 1, key))
        sum += strtol(p + strlen(key), NULL, 10);
    return sum;
}

/* Present pages of [base, base + NPAGES pages) according to /proc/self/pagemap. */
static int present_pages(int pagemap, char *base)
{
    uint64_t e[NPAGES];
    off_t off = (off_t)((uintptr_t)base / PAGE) * 8;
    if (pread(pagemap, e, sizeof e, off) != (ssize_t)sizeof e)
        return -1;
    int n = 0;
    for (int i = 0; i < NPAGES; i++)
        n += (int)(e[i] >> 63);
    return n;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("ptebits");
    char *m = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!CHECK(m != MAP_FAILED, "mmap"))
        return wl_end();
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    int mem = open("/proc/self/mem", O_RDWR);
    CHECK(pagemap >= 0 && mem >= 0, "open pagemap and mem");
    volatile unsigned sink = 0;
    long referenced = 0, dirty = 0;
    for (int round = 0; round < ROUNDS; round++) {
        /* Write every page whose index shares a bit with the round, read the others of the
         * first half: the CPU sets A and D, or A alone. */
        for (int i = 0; i < NPAGES; i++) {
            if (i & (round + 1))
                m[i * PAGE + round] = (char)(i + round);
            else if (i < NPAGES / 2)
                sink += (unsigned char)m[i * PAGE];
        }
        CHECK(slurp("/proc/self/smaps") > 0, "smaps");
        referenced += sum_field("Referenced:");
        dirty += sum_field("Private_Dirty:");
        CHECK(slurp("/proc/self/smaps_rollup") > 0 && sum_field("Rss:") > 0, "smaps_rollup");
        CHECK(present_pages(pagemap, m) > 0, "pagemap shows the touched pages");
        /* GUP with FOLL_TOUCH, reading and writing through /proc/self/mem. */
        char b[16];
        off_t at = (off_t)(uintptr_t)(m + (round % NPAGES) * PAGE);
        CHECK(pread(mem, b, sizeof b, at) == (ssize_t)sizeof b, "read /proc/self/mem");
        CHECK(pwrite(mem, b, sizeof b, at + PAGE / 2) == (ssize_t)sizeof b, "write /proc/self/mem");
        switch (round % 4) {
        case 0: {
            int fd = open("/proc/self/clear_refs", O_WRONLY);
            CHECK(fd >= 0 && write(fd, "1", 1) == 1, "clear_refs");
            if (fd >= 0)
                close(fd);
            break;
        }
        case 1:
            CHECK(madvise(m, NPAGES * PAGE, MADV_COLD) == 0, "MADV_COLD");
            break;
        case 2:
            CHECK(madvise(m + NPAGES / 2 * PAGE, NPAGES / 2 * PAGE, MADV_PAGEOUT) == 0, "MADV_PAGEOUT");
            break;
        case 3:
            CHECK(madvise(m + NPAGES / 4 * PAGE, NPAGES / 4 * PAGE, MADV_FREE) == 0, "MADV_FREE");
            break;
        }
    }
    wl_step("%d rounds over %d pages: %ld kB referenced, %ld kB dirty in smaps", ROUNDS, NPAGES,
            referenced, dirty);
    CHECK(referenced > 0 && dirty > 0, "smaps saw the bits");
    return wl_end();
}
