/* smp-futex: N = max(2, CPUs) threads, thread i pinned to CPU i % CPUs, contend on one raw
 * futex lock (FUTEX_WAIT/FUTEX_WAKE through syscall(2)) around a shared non-atomic counter, pass a
 * token around a ring of per-thread futex words, and meet at pthread barriers.
 * Multi-core kernel paths: sched_setaffinity migration (stopper thread), one futex hash bucket
 * locked from several CPUs at once, remote wakeups (try_to_wake_up of a task sleeping on another
 * CPU: wake list + reschedule IPI), idle entry/exit on every CPU. */
#include "smp.h"
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>

#define ITERS 200 /* lock/increment/unlock per thread */
#define LAPS 20   /* token ring laps */
#define MAXT 64

/* Drepper's futex mutex (smp.h), private to this process. */
static atomic_int lockword;
static long counter; /* protected by lockword; deliberately not atomic */

static void lock(void)
{
    futex_lock(&lockword, FUTEX_PRIVATE_FLAG, NULL, 0);
}

static void unlock(void)
{
    futex_unlock(&lockword, FUTEX_PRIVATE_FLAG);
}

static int nthreads;
static pthread_barrier_t barrier;
static atomic_int ring[MAXT]; /* ring[t]: how many times thread t has been handed the token */
static int token;             /* passed by the ring hand-offs; not atomic */

struct result {
    int cpu, pin_err, wrong_cpu, bad_counter, ring_bad, barrier_err;
};
static struct result res[MAXT];

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    struct result *r = &res[t];
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(r->cpu, &set);
    r->pin_err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    r->wrong_cpu = sched_getcpu() != r->cpu;

    int b = pthread_barrier_wait(&barrier); /* round 1: everybody pinned, start together */
    r->barrier_err += b != 0 && b != PTHREAD_BARRIER_SERIAL_THREAD;

    for (int i = 0; i < ITERS; i++) {
        lock();
        long v = counter;
        /* A syscall inside the critical section keeps the lock held long enough for the
         * other CPUs to find it taken (and on one CPU, sched_yield lets them run into it). */
        if (i % 4 == 0)
            sched_yield();
        else
            syscall(SYS_getppid);
        counter = v + 1;
        unlock();
    }

    b = pthread_barrier_wait(&barrier); /* round 2: all increments done */
    r->barrier_err += b != 0 && b != PTHREAD_BARRIER_SERIAL_THREAD;
    lock();
    r->bad_counter = counter != (long)nthreads * ITERS;
    unlock();

    /* Token ring: thread t runs lap l once ring[t] > l, then hands over to thread t+1. */
    int next = (t + 1) % nthreads;
    for (int lap = 0; lap < LAPS; lap++) {
        int cur;
        while ((cur = atomic_load(&ring[t])) <= lap)
            futex(&ring[t], FUTEX_WAIT_PRIVATE, cur, NULL);
        r->ring_bad += token != lap * nthreads + t;
        token++;
        atomic_fetch_add(&ring[next], 1);
        futex(&ring[next], FUTEX_WAKE_PRIVATE, 1, NULL);
    }

    b = pthread_barrier_wait(&barrier); /* round 3: ring finished */
    r->barrier_err += b != 0 && b != PTHREAD_BARRIER_SERIAL_THREAD;
    return (void *)(uintptr_t)0x600d;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("smp-futex");
    cpus_init();
    nthreads = ncpu < 2 ? 2 : ncpu > MAXT ? MAXT : ncpu;
    wl_step("%d threads, thread i pinned to CPU i mod %d", nthreads, ncpu);

    CHECK(pthread_barrier_init(&barrier, NULL, (unsigned)nthreads) == 0, "pthread_barrier_init");
    atomic_store(&ring[0], 1); /* thread 0 holds the token first */
    pthread_t th[MAXT];
    int created = 0;
    for (int t = 0; t < nthreads; t++) {
        res[t].cpu = cpu_of(t);
        if (!CHECK(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0, "pthread_create %d", t))
            break;
        created++;
    }
    if (created < nthreads) /* the others would wait at the barrier forever */
        return wl_end();
    int joined = 0;
    for (int t = 0; t < nthreads; t++) {
        void *ret = NULL;
        joined += pthread_join(th[t], &ret) == 0 && ret == (void *)(uintptr_t)0x600d;
    }
    CHECK(joined == nthreads, "joined %d of %d threads", joined, nthreads);

    for (int t = 0; t < nthreads; t++) {
        struct result *r = &res[t];
        CHECK(r->pin_err == 0, "thread %d: pthread_setaffinity_np(CPU %d) = %d", t, r->cpu, r->pin_err);
        CHECK(!r->wrong_cpu, "thread %d: sched_getcpu() after pinning to CPU %d", t, r->cpu);
        CHECK(!r->bad_counter, "thread %d: counter after the barrier", t);
        CHECK(r->ring_bad == 0, "thread %d: %d token values out of order", t, r->ring_bad);
        CHECK(r->barrier_err == 0, "thread %d: pthread_barrier_wait errors", t);
    }
    CHECK(counter == (long)nthreads * ITERS, "counter %ld, expected %d", counter, nthreads * ITERS);
    CHECK(atomic_load(&lockword) == 0, "lock word is free at the end (%d)", atomic_load(&lockword));
    wl_step("futex lock: counter = %ld (%d threads x %d increments)", counter, nthreads, ITERS);
    CHECK(token == LAPS * nthreads, "token %d, expected %d", token, LAPS * nthreads);
    wl_step("futex token ring: %d laps over %d threads, %d hand-offs", LAPS, nthreads, token);
    wl_step("3 pthread_barrier rounds");
    CHECK(pthread_barrier_destroy(&barrier) == 0, "pthread_barrier_destroy");
    return wl_end();
}
