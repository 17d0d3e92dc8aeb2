/* timers: nanosleep and clock_nanosleep (relative and absolute), monotonic clock progress,
 * timerfd (periodic), POSIX timer_create with a signal, setitimer(ITIMER_REAL), gettimeofday. */
#include "wl.h"
#include <signal.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>

static volatile sig_atomic_t timer_hits, itimer_hits;
static void on_timer(int sig) { (void)sig; timer_hits++; }
static void on_itimer(int sig) { (void)sig; itimer_hits++; }

static int64_t now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("timers");
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    struct timespec d = {0, 20 * 1000 * 1000};
    CHECK(nanosleep(&d, NULL) == 0, "nanosleep 20 ms");
    int64_t t1 = now_ns(CLOCK_MONOTONIC);
    CHECK(t1 - t0 >= 20000000, "slept %lld ns >= 20 ms", (long long)(t1 - t0));
    /* How long exactly depends on the timer tick: print only what was checked, so the output
     * is the same for every run (krr compares the consoles of runs and recordings). */
    wl_step("nanosleep(20 ms) slept at least 20 ms");

    struct timespec abs;
    clock_gettime(CLOCK_MONOTONIC, &abs);
    abs.tv_nsec += 15 * 1000 * 1000;
    if (abs.tv_nsec >= 1000000000) {
        abs.tv_sec++;
        abs.tv_nsec -= 1000000000;
    }
    CHECK(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL) == 0, "clock_nanosleep absolute");
    int64_t t2 = now_ns(CLOCK_MONOTONIC);
    CHECK(t2 >= (int64_t)abs.tv_sec * 1000000000 + abs.tv_nsec, "woke after the absolute deadline");

    int64_t prev = now_ns(CLOCK_MONOTONIC), backwards = 0;
    for (int i = 0; i < 10000; i++) {
        int64_t n = now_ns(CLOCK_MONOTONIC);
        backwards += n < prev;
        prev = n;
    }
    CHECK(backwards == 0, "CLOCK_MONOTONIC never goes backwards (%lld times)", (long long)backwards);
    struct timeval tv;
    CHECK(gettimeofday(&tv, NULL) == 0, "gettimeofday");
    CHECK(now_ns(CLOCK_BOOTTIME) > 0 && now_ns(CLOCK_PROCESS_CPUTIME_ID) > 0, "boottime and cputime clocks");

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    CHECK(tfd >= 0, "timerfd_create");
    struct itimerspec its = {.it_interval = {0, 5000000}, .it_value = {0, 5000000}};
    CHECK(timerfd_settime(tfd, 0, &its, NULL) == 0, "timerfd_settime 5 ms periodic");
    uint64_t ticks = 0, exp;
    int64_t tf0 = now_ns(CLOCK_MONOTONIC);
    while (ticks < 5) {
        if (!CHECK(read(tfd, &exp, sizeof exp) == sizeof exp, "timerfd read"))
            break;
        ticks += exp;
    }
    CHECK(ticks >= 5 && now_ns(CLOCK_MONOTONIC) - tf0 >= 20000000, "timerfd: %llu expirations", (unsigned long long)ticks);
    close(tfd);
    wl_step("timerfd: %llu expirations", (unsigned long long)ticks);

    signal(SIGUSR1, on_timer);
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
    timer_t tid;
    CHECK(timer_create(CLOCK_MONOTONIC, &sev, &tid) == 0, "timer_create");
    struct itimerspec pit = {.it_interval = {0, 2000000}, .it_value = {0, 2000000}};
    CHECK(timer_settime(tid, 0, &pit, NULL) == 0, "timer_settime 2 ms periodic");
    while (timer_hits < 3)
        pause();
    CHECK(timer_delete(tid) == 0, "timer_delete");
    wl_step("POSIX timer fired %d times", (int)timer_hits);

    signal(SIGALRM, on_itimer);
    struct itimerval iv = {.it_interval = {0, 3000}, .it_value = {0, 3000}};
    CHECK(setitimer(ITIMER_REAL, &iv, NULL) == 0, "setitimer");
    while (itimer_hits < 3)
        pause();
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    CHECK(itimer_hits >= 3, "ITIMER_REAL fired %d times", (int)itimer_hits);
    wl_step("setitimer fired %d times", (int)itimer_hits);
    return wl_end();
}
