/* smp-munmap: TLB shootdowns. T threads (one per other CPU, at least 2), pinned, keep running in
 * the process's address space (touching their "stable" pages and calling sched_yield) while the
 * main thread, pinned to the first CPU, changes a "victim" range they have just touched: munmap +
 * mmap(MAP_FIXED), mprotect(PROT_READ) and back, madvise(MADV_DONTNEED) - 16 rounds of each
 * (on a kernel without CONFIG_ADVISE_SYSCALLS madvise fails with ENOSYS, and the zap is a
 * MAP_FIXED mapping over the range instead; the step line says which). After each change the
 * threads are released to touch the victim pages again and check what they find (zeros after a
 * zap, their previous marker after mprotect); nothing ever faults on an unmapped page: the threads
 * only touch the victim range between the main thread's announcements.
 * Multi-core kernel paths: flush_tlb_mm_range -> flush TLB IPIs (smp_call_function_many_cond) to
 * the CPUs running the mm, mm_cpumask / lazy-TLB tracking, page freeing after a remote flush
 * (mmu_gather), concurrent page faults of one mm on several CPUs (mmap_lock read side vs the main
 * thread's write side), futex wakeups across CPUs. */
#include "smp.h"
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

#define PAGES 64
#define VICTIM 24        /* first victim page */
#define VICTIM_PAGES 8
#define ROUNDS 48        /* after the first touch round: 16 x (remap, read-only, zap) */
#define MAXT 63

enum { TOUCH_FRESH, TOUCH_READONLY }; /* fresh: expect zeros, write markers; read-only: expect markers */

static unsigned char *region;
static long pagesz;
static int nthreads;
static atomic_int round_no; /* announced by the main thread; -1: stop */
static atomic_int mode;     /* TOUCH_* for the announced round */
static atomic_int acked;    /* threads done with the announced round */

static uint64_t marker(int r, int t)
{
    return (uint64_t)r << 16 | (uint64_t)(t + 1);
}

static uint64_t *slot(int page, int t)
{
    return (uint64_t *)(region + (size_t)page * (size_t)pagesz) + t;
}

static int stable_page(long k)
{
    int p = (int)(k % (PAGES - VICTIM_PAGES));
    return p < VICTIM ? p : p + VICTIM_PAGES;
}

struct result {
    int cpu, pin_err, bad, rounds;
    long spins;
};
static struct result res[MAXT];

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    struct result *me = &res[t];
    me->pin_err = pin_self(me->cpu);
    int seen = 0;
    for (;;) {
        int r = atomic_load(&round_no);
        if (r < 0)
            break;
        if (r != seen) {
            int m = atomic_load(&mode);
            for (int p = VICTIM; p < VICTIM + VICTIM_PAGES; p++) {
                uint64_t *s = slot(p, t);
                me->bad += *s != (m == TOUCH_FRESH ? 0 : marker(r - 1, t));
                if (m == TOUCH_FRESH)
                    *s = marker(r, t);
            }
            seen = r;
            me->rounds++;
            if (atomic_fetch_add(&acked, 1) + 1 == nthreads)
                futex(&acked, FUTEX_WAKE_PRIVATE, 1, NULL);
            continue;
        }
        /* Keep running in this mm, on stable pages only, until the next announcement. */
        (*slot(stable_page(me->spins), t))++;
        me->spins++;
        sched_yield();
    }
    return (void *)(uintptr_t)0x600d;
}

/* Announces round r (TOUCH_* m) and waits until every thread has touched the victim pages. */
static void run_round(int r, int m)
{
    atomic_store(&acked, 0);
    atomic_store(&mode, m);
    atomic_store(&round_no, r);
    int a;
    while ((a = atomic_load(&acked)) < nthreads)
        futex(&acked, FUTEX_WAIT_PRIVATE, a, NULL);
}

/* Every thread's slot on every victim page holds want(r, t). */
static int victim_ok(uint64_t r)
{
    for (int p = VICTIM; p < VICTIM + VICTIM_PAGES; p++)
        for (int t = 0; t < nthreads; t++)
            if (*slot(p, t) != marker((int)r, t))
                return 0;
    return 1;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("smp-munmap");
    cpus_init();
    nthreads = ncpu < 3 ? 2 : ncpu - 1 > MAXT ? MAXT : ncpu - 1;
    pagesz = sysconf(_SC_PAGESIZE);
    CHECK(pin_self(cpu_of(0)) == 0, "pin the main thread to CPU %d", cpu_of(0));
    wl_step("main thread on CPU %d, %d threads, thread t on CPU t+1 mod %d", cpu_of(0), nthreads, ncpu);

    region = mmap(NULL, (size_t)PAGES * (size_t)pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                  -1, 0);
    if (!CHECK(region != MAP_FAILED, "mmap %d pages", PAGES))
        return wl_end();
    memset(region, 0, (size_t)PAGES * (size_t)pagesz);
    unsigned char *victim = region + (size_t)VICTIM * (size_t)pagesz;
    size_t vlen = (size_t)VICTIM_PAGES * (size_t)pagesz;

    pthread_t th[MAXT];
    for (int t = 0; t < nthreads; t++) {
        res[t].cpu = cpu_of(1 + t);
        if (!CHECK(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0, "pthread_create"))
            return wl_end(); /* exit() ends the other threads */
    }

    run_round(1, TOUCH_FRESH); /* every thread gets the victim pages into its CPU's TLB */
    CHECK(victim_ok(1), "round 1 markers");
    int madv = 1, bad_op = 0, bad_mark = 0;
    for (int r = 2; r < 2 + ROUNDS; r++) {
        int m = TOUCH_FRESH;
        switch (r % 3) {
        case 2: /* munmap, then a fresh mapping at the same address */
            bad_op += munmap(victim, vlen) != 0;
            bad_op += mmap(victim, vlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                           0) != victim;
            break;
        case 0: /* write-protect: the threads read their markers of round r-1 */
            bad_op += mprotect(victim, vlen, PROT_READ) != 0;
            m = TOUCH_READONLY;
            break;
        case 1: /* writable again, then zap the pages */
            bad_op += mprotect(victim, vlen, PROT_READ | PROT_WRITE) != 0;
            if (madv && madvise(victim, vlen, MADV_DONTNEED) != 0) {
                /* Linux built without CONFIG_ADVISE_SYSCALLS: ENOSYS. */
                bad_op += errno != ENOSYS;
                madv = 0;
            }
            if (!madv) /* the same zap + flush through a MAP_FIXED mapping over it */
                bad_op += mmap(victim, vlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                               -1, 0) != victim;
            break;
        }
        run_round(r, m);
        bad_mark += !victim_ok(m == TOUCH_FRESH ? (uint64_t)r : (uint64_t)r - 1);
    }
    CHECK(bad_op == 0, "%d munmap/mmap/mprotect/madvise calls failed", bad_op);
    CHECK(bad_mark == 0, "%d rounds with wrong markers in the victim pages", bad_mark);

    atomic_store(&round_no, -1);
    for (int t = 0; t < nthreads; t++) {
        void *ret = NULL;
        CHECK(pthread_join(th[t], &ret) == 0 && ret == (void *)(uintptr_t)0x600d, "join thread %d", t);
        struct result *me = &res[t];
        CHECK(me->pin_err == 0, "thread %d pinned to CPU %d", t, me->cpu);
        CHECK(me->bad == 0 && me->rounds == 1 + ROUNDS, "thread %d: %d rounds, %d wrong victim slots", t,
              me->rounds, me->bad);
        long sum = 0;
        for (int p = 0; p < PAGES; p++)
            if (p < VICTIM || p >= VICTIM + VICTIM_PAGES)
                sum += (long)*slot(p, t);
        CHECK(sum == me->spins, "thread %d: stable page counters %ld, spins %ld", t, sum, me->spins);
    }
    wl_step("%d rounds: %d x munmap+mmap(MAP_FIXED), %d x mprotect(PROT_READ), %d x zap (%s)", ROUNDS,
            ROUNDS / 3, ROUNDS / 3, ROUNDS / 3, madv ? "madvise(MADV_DONTNEED)" : "MAP_FIXED remap: no madvise");
    wl_step("victim pages checked after every round, stable pages intact");
    CHECK(munmap(region, (size_t)PAGES * (size_t)pagesz) == 0, "munmap the whole region");
    return wl_end();
}
