/* signals: a SIGSEGV handled by the program (NULL write, recovered with siglongjmp), SIGUSR1 via
 * kill, blocked and pending signals, signalfd, SIGALRM from alarm(), SIGCHLD, a child killed by
 * SIGKILL, a handler on an alternate stack, SA_RESTART/EINTR, sigqueue payload; and the thread's
 * FS/GS bases read back with arch_prctl (the kernel reads the FS_BASE and KERNEL_GS_BASE MSRs,
 * which the emulator keeps itself: replay checks them against the log). */
#include "wl.h"
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <asm/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static sigjmp_buf jb;
static volatile sig_atomic_t segv_seen, usr1_seen, alrm_seen, chld_seen, rt_value;
static void *volatile segv_addr;
static volatile int on_alt;
static char altstack[65536];

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    segv_seen++;
    segv_addr = si->si_addr;
    char here;
    on_alt = &here >= altstack && &here < altstack + sizeof altstack;
    siglongjmp(jb, 1);
}
static void on_usr1(int sig) { (void)sig; usr1_seen++; }
static void on_alrm(int sig) { (void)sig; alrm_seen++; }
static void on_chld(int sig) { (void)sig; chld_seen++; }
static void on_rt(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; rt_value = si->si_value.sival_int; }

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("signals");
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    CHECK(sigaltstack(&ss, NULL) == 0, "sigaltstack");
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction SIGSEGV");
    volatile int *bad = (volatile int *)(uintptr_t)16;
    if (sigsetjmp(jb, 1) == 0) {
        *bad = 42;
        CHECK(0, "write to address 16 did not fault");
    }
    CHECK(segv_seen == 1 && segv_addr == (void *)16, "SIGSEGV handled, si_addr %p", segv_addr);
    CHECK(on_alt, "handler ran on the alternate stack");
    wl_step("SIGSEGV at %p handled on the alternate stack", segv_addr);

    signal(SIGUSR1, on_usr1);
    CHECK(kill(getpid(), SIGUSR1) == 0 && usr1_seen == 1, "SIGUSR1 delivered");
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, &old);
    raise(SIGUSR1);
    sigset_t pend;
    sigpending(&pend);
    CHECK(usr1_seen == 1 && sigismember(&pend, SIGUSR1), "blocked SIGUSR1 is pending");
    sigprocmask(SIG_SETMASK, &old, NULL);
    CHECK(usr1_seen == 2, "pending SIGUSR1 delivered on unblock");
    wl_step("kill, block, pending, unblock ok");

    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    CHECK(sfd >= 0, "signalfd");
    union sigval v = {.sival_int = 1234};
    CHECK(sigqueue(getpid(), SIGUSR2, v) == 0, "sigqueue SIGUSR2");
    struct signalfd_siginfo fi;
    CHECK(read(sfd, &fi, sizeof fi) == sizeof fi && fi.ssi_signo == SIGUSR2 && fi.ssi_int == 1234,
          "signalfd read signo %u int %d", fi.ssi_signo, fi.ssi_int);
    close(sfd);
    wl_step("signalfd ok");

    struct sigaction rs = {0};
    rs.sa_sigaction = on_rt;
    rs.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN, &rs, NULL);
    v.sival_int = 77;
    CHECK(sigqueue(getpid(), SIGRTMIN, v) == 0 && rt_value == 77, "real-time signal payload %d", (int)rt_value);

    signal(SIGALRM, on_alrm);
    alarm(1);
    pause();
    CHECK(alrm_seen == 1, "SIGALRM from alarm(1) interrupted pause()");

    struct sigaction cs = {0};
    cs.sa_handler = on_chld;
    sigaction(SIGCHLD, &cs, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    CHECK(kill(pid, SIGKILL) == 0, "kill child");
    int status;
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    CHECK(w == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child killed by SIGKILL");
    CHECK(chld_seen >= 1, "SIGCHLD delivered");

    /* A signal interrupting a blocking read without SA_RESTART: EINTR. */
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    struct sigaction as = {0};
    as.sa_handler = on_alrm;
    sigaction(SIGALRM, &as, NULL);
    alarm(1);
    char c;
    ssize_t r = read(p[0], &c, 1);
    CHECK(r < 0 && errno == EINTR && alrm_seen == 2, "blocking read interrupted with EINTR");
    wl_step("alarm, SIGCHLD, SIGKILL, EINTR ok");

    /* The thread's FS/GS bases (the kernel reads them from MSRs: no FSGSBASE on emu). */
    unsigned long fs = 0, gs = 1;
    CHECK(syscall(SYS_arch_prctl, ARCH_GET_FS, &fs) == 0 && fs != 0, "ARCH_GET_FS");
    CHECK(syscall(SYS_arch_prctl, ARCH_GET_GS, &gs) == 0 && gs == 0, "ARCH_GET_GS");
    wl_step("FS/GS bases read back ok");
    return wl_end();
}
