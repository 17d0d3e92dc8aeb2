/* futex: two threads ping-pong through raw FUTEX_WAIT/FUTEX_WAKE, then a mutex/condvar counter
 * and a pthread_join. */
#include "wl.h"
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>

#define ROUNDS 1000

static atomic_int turn; /* 0: main's turn, 1: the thread's */
static long waits;

static long futex(atomic_int *uaddr, int op, int val, const struct timespec *ts)
{
    return syscall(SYS_futex, (int *)uaddr, op, val, ts, NULL, 0);
}

static void wait_for(int want)
{
    int cur;
    while ((cur = atomic_load(&turn)) != want) {
        __atomic_add_fetch(&waits, 1, __ATOMIC_RELAXED);
        futex(&turn, FUTEX_WAIT_PRIVATE, cur, NULL);
    }
}

static void give(int to)
{
    atomic_store(&turn, to);
    futex(&turn, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void *pong(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        wait_for(1);
        give(0);
    }
    return (void *)(uintptr_t)0x600d;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int counter, ready;

static void *adder(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&mu);
        counter++;
        pthread_mutex_unlock(&mu);
    }
    pthread_mutex_lock(&mu);
    ready++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("futex");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, pong, NULL) == 0, "pthread_create");
    for (int i = 0; i < ROUNDS; i++) {
        give(1);
        wait_for(0);
    }
    void *ret;
    CHECK(pthread_join(t, &ret) == 0 && ret == (void *)(uintptr_t)0x600d, "join ping-pong thread");
    /* The number of FUTEX_WAITs depends on where timer ticks fall: checked, not printed, so
     * the output is the same for every run (krr compares runs with recordings). */
    CHECK(waits > 0, "the ping-pong waited in the kernel (%ld FUTEX_WAITs)", waits);
    wl_step("%d futex ping-pong rounds", ROUNDS);

    atomic_int word = 5;
    struct timespec ts = {0, 10 * 1000 * 1000};
    CHECK(futex(&word, FUTEX_WAIT_PRIVATE, 6, NULL) < 0 && errno == EAGAIN, "FUTEX_WAIT on a changed value: EAGAIN");
    CHECK(futex(&word, FUTEX_WAIT_PRIVATE, 5, &ts) < 0 && errno == ETIMEDOUT, "FUTEX_WAIT timeout: ETIMEDOUT");
    CHECK(futex(&word, FUTEX_WAKE_PRIVATE, 1, NULL) == 0, "FUTEX_WAKE with no waiters wakes 0");

    pthread_t a[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&a[i], NULL, adder, NULL) == 0, "create adder");
    pthread_mutex_lock(&mu);
    while (ready < 2)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 2; i++)
        pthread_join(a[i], NULL);
    CHECK(counter == 20000, "mutex-protected counter %d", counter);
    wl_step("mutex/condvar counter = %d", counter);
    return wl_end();
}
