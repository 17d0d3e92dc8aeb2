/* oom: memory hogs in a small guest, ended by the kernel's OOM killer. The parent shields
 * itself (oom_score_adj -1000) and forks the hogs one after another; each offers itself
 * (oom_score_adj 1000) and touches anonymous memory a MiB at a time, telling the parent through
 * a pipe, until the OOM killer ends it. Every hog must end by SIGKILL. Meant for a small guest
 * (the soak suite runs it with --mem 64M): page reclaim, the OOM killer's task scan and report,
 * and the exit of a task whose memory is being reaped. */
#include "wl.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define HOGS 3
#define MIB (1u << 20)

static int set_oom_score_adj(const char *value)
{
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, value, strlen(value));
    close(fd);
    return n == (ssize_t)strlen(value) ? 0 : -1;
}

static void hog(int out)
{
    if (set_oom_score_adj("1000"))
        _exit(2);
    for (unsigned mib = 1;; mib++) {
        char *m = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            _exit(3);
        memset(m, (int)mib, MIB);
        if (write(out, &mib, sizeof mib) != sizeof mib)
            _exit(4);
    }
}

int main(void)
{
    wl_begin("oom");
    CHECK(set_oom_score_adj("-1000") == 0, "shield the parent from the OOM killer");
    for (int i = 0; i < HOGS; i++) {
        int p[2];
        if (!CHECK(pipe(p) == 0, "pipe"))
            break;
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            hog(p[1]);
        }
        close(p[1]);
        if (!CHECK(pid > 0, "fork hog %d", i))
            break;
        unsigned mib = 0, last = 0;
        while (read(p[0], &mib, sizeof mib) == sizeof mib)
            last = mib;
        close(p[0]);
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid, "wait for hog %d", i);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "hog %d ended by SIGKILL (status 0x%x)", i, status);
        CHECK(last >= 8, "hog %d touched %u MiB before it was killed", i, last);
        wl_step("hog %d killed by the OOM killer after %u MiB", i, last);
    }
    return wl_end();
}
