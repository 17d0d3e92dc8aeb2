/* epoll: level- and edge-triggered readiness on a pipe, an eventfd written by a thread, a
 * timerfd, EPOLLHUP, epoll_wait timeouts, EPOLL_CTL_MOD/DEL. */
#include "wl.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>

static int efd;

static void *poster(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        struct timespec d = {0, 2000000};
        nanosleep(&d, NULL);
        uint64_t one = 1;
        if (write(efd, &one, sizeof one) != sizeof one)
            return (void *)1;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("epoll");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0, "epoll_create1");
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 1}, out[8];
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0, "add pipe (level-triggered)");
    CHECK(epoll_wait(ep, out, 8, 0) == 0, "nothing ready");
    CHECK(epoll_wait(ep, out, 8, 10) == 0, "10 ms timeout with nothing ready");
    CHECK(write(p[1], "ab", 2) == 2, "write pipe");
    CHECK(epoll_wait(ep, out, 8, -1) == 1 && out[0].data.u32 == 1 && (out[0].events & EPOLLIN), "pipe readable");
    CHECK(epoll_wait(ep, out, 8, 0) == 1, "level-triggered: still readable");
    ev.events = EPOLLIN | EPOLLET;
    CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev) == 0, "mod to edge-triggered");
    CHECK(epoll_wait(ep, out, 8, 0) == 1, "edge-triggered: first report");
    CHECK(epoll_wait(ep, out, 8, 0) == 0, "edge-triggered: no second report");
    char c2[2];
    CHECK(read(p[0], c2, 2) == 2, "drain");
    wl_step("pipe level/edge triggering ok");

    efd = eventfd(0, EFD_CLOEXEC);
    CHECK(efd >= 0, "eventfd");
    ev.events = EPOLLIN;
    ev.data.u32 = 2;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == 0, "add eventfd");
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {.it_value = {0, 30000000}};
    CHECK(tfd >= 0 && timerfd_settime(tfd, 0, &its, NULL) == 0, "timerfd 30 ms");
    ev.data.u32 = 3;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) == 0, "add timerfd");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, poster, NULL) == 0, "thread");
    uint64_t events = 0;
    int timer_seen = 0;
    while (!timer_seen || events < 3) {
        int n = epoll_wait(ep, out, 8, 5000);
        if (!CHECK(n > 0, "epoll_wait returned %d", n))
            break;
        for (int i = 0; i < n; i++) {
            uint64_t v;
            if (out[i].data.u32 == 2 && read(efd, &v, sizeof v) == sizeof v)
                events += v;
            if (out[i].data.u32 == 3 && read(tfd, &v, sizeof v) == sizeof v)
                timer_seen = 1;
        }
    }
    void *ret;
    pthread_join(t, &ret);
    CHECK(ret == NULL && events == 3 && timer_seen, "eventfd count %llu, timer %d", (unsigned long long)events, timer_seen);
    wl_step("eventfd from a thread (%llu) and timerfd ok", (unsigned long long)events);

    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, efd, NULL) == 0, "del eventfd");
    close(p[1]);
    int n = epoll_wait(ep, out, 8, 1000);
    CHECK(n == 1 && out[0].data.u32 == 1 && (out[0].events & EPOLLHUP), "EPOLLHUP after the writer closed");
    wl_step("EPOLL_CTL_DEL and EPOLLHUP ok");
    return wl_end();
}
