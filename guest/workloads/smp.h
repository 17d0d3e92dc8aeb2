/* Shared helpers for krr's multi-core workloads (smp-*.c): the CPUs to spread work over, pinning,
 * test data, a raw futex(2) and a futex mutex, waiting for children. Everything is static (the
 * workloads are linked into one multi-call binary) and inline, so that a workload that leaves
 * some of it unused still builds with -Wall -Werror. */
#ifndef KRR_SMP_H
#define KRR_SMP_H
#include "wl.h"
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

/* The CPUs this process may run on, in order. In the guest that is every online CPU (the count
 * equals sysconf(_SC_NPROCESSORS_ONLN)); taking them from the affinity mask also lets
 * `taskset -c 0` simulate a single CPU on a host. Filled by cpus_init(). */
static int ncpu;
static int cpu_ids[CPU_SETSIZE];

static inline void cpus_init(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set))
                cpu_ids[ncpu++] = c;
    if (ncpu == 0) {
        ncpu = 1;
        cpu_ids[0] = 0;
    }
}

/* The CPU of worker i: i-th of the CPUs, round robin. */
static inline int cpu_of(int i)
{
    return cpu_ids[i % ncpu];
}

/* Restricts task pid (0: the calling thread) to the one CPU cpu; sched_setaffinity's result. */
static inline int set_cpu(pid_t pid, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(pid, sizeof set, &set);
}

/* Pins the calling thread to cpu: 0 when that worked and it now runs there, else -1. */
static inline int pin_self(int cpu)
{
    return set_cpu(0, cpu) == 0 && sched_getcpu() == cpu ? 0 : -1;
}

/* Test data: 64-bit words from an LCG started from seed - cheap to make and to check under an
 * instruction-counting interpreter. Writes n rounded up to a multiple of 8 bytes. */
static inline void fill(unsigned char *buf, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i += 8) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t v = x ^ (x >> 29);
        memcpy(buf + i, &v, 8);
    }
}

static inline uint64_t hash(const unsigned char *buf, size_t n) /* FNV-1a over 64-bit words */
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, buf + i, 8);
        h = (h ^ v) * 1099511628211ull;
    }
    return h;
}

/* The raw system call (no glibc wrapper), for FUTEX_WAIT / FUTEX_WAKE; ts NULL: no timeout. */
static inline long futex(atomic_int *uaddr, int op, int val, const struct timespec *ts)
{
    return syscall(SYS_futex, (int *)uaddr, op, val, ts, NULL, 0);
}

/* One futex(op) wait on *w while it holds val. With ts NULL it returns 0. With a timeout,
 * *timeouts counts the waits in a row that timed out (any other return resets it) and the result
 * is -1 once there were give_up of them: the caller fails instead of hanging. */
static inline int futex_wait(atomic_int *w, int op, int val, const struct timespec *ts, int *timeouts,
                             int give_up)
{
    if (futex(w, op, val, ts) == 0 || errno != ETIMEDOUT) {
        *timeouts = 0;
        return 0;
    }
    return ++*timeouts >= give_up ? -1 : 0;
}

/* Drepper's "futexes are tricky" mutex on *w: 0 free, 1 locked, 2 locked and maybe waiters.
 * priv: FUTEX_PRIVATE_FLAG (threads of one process) or 0 (the word is in a MAP_SHARED page).
 * ts and give_up as for futex_wait: with ts NULL futex_lock waits as long as it takes and returns
 * 0; otherwise it returns -1 when it gave up. */
static inline int futex_lock(atomic_int *w, int priv, const struct timespec *ts, int give_up)
{
    int c = 0, timeouts = 0;
    if (atomic_compare_exchange_strong(w, &c, 1))
        return 0;
    if (c != 2)
        c = atomic_exchange(w, 2);
    while (c != 0) {
        if (futex_wait(w, FUTEX_WAIT | priv, 2, ts, &timeouts, give_up) != 0)
            return -1;
        c = atomic_exchange(w, 2);
    }
    return 0;
}

static inline void futex_unlock(atomic_int *w, int priv)
{
    if (atomic_fetch_sub(w, 1) != 1) {
        atomic_store(w, 0);
        futex(w, FUTEX_WAKE | priv, 1, NULL);
    }
}

/* Closes both ends of the n pipes ring[0..n-1] in order, except the descriptors keep_in and
 * keep_out (-1: close everything). */
static inline void close_pipes(int (*ring)[2], int n, int keep_in, int keep_out)
{
    for (int k = 0; k < n; k++) {
        if (ring[k][0] != keep_in)
            close(ring[k][0]);
        if (ring[k][1] != keep_out)
            close(ring[k][1]);
    }
}

/* Waits for child pid: its exit status, 1000 + the signal that killed it, or -1 if waitpid
 * failed. */
static inline int wait_status(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}
#endif
