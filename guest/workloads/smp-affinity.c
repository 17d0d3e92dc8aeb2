/* smp-affinity: migration between CPUs. Threads and then processes move themselves around the
 * CPUs with sched_setaffinity (checking sched_getcpu() and the getcpu syscall on arrival, then a
 * syscall or two there, and once a two-CPU mask), all at the same time; then the parent moves a
 * child that sleeps in read() between moves (the child reports where it woke up, and
 * /proc/<pid>/stat field 39 agrees), and a child that keeps running (sched_yield loop), checking
 * /proc/<pid>/stat after each move.
 * Multi-core kernel paths: __set_cpus_allowed_ptr -> affine_move_task -> the stopper thread
 * (migration_cpu_stop via stop_one_cpu on the task's CPU, a remote wakeup of the stopper),
 * move_queued_task between runqueues (double rq locks), select_task_rq on wakeup of a sleeping
 * task whose mask changed, the vDSO/syscall getcpu, /proc/<pid>/stat of a task on another CPU. */
#include "smp.h"
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define LAPS 3 /* each mover visits every CPU LAPS times */
#define MAXT 64

static int getcpu_syscall(void)
{
    unsigned cpu = ~0u;
    return syscall(SYS_getcpu, &cpu, NULL, NULL) == 0 ? (int)cpu : -1;
}

/* Moves the calling thread over all CPUs LAPS times starting at CPU index `start`, then once to
 * a two-CPU mask. Returns the number of failed checks. */
static int mover(int start)
{
    int bad = 0;
    for (int j = 0; j < LAPS * ncpu; j++) {
        int cpu = cpu_of(start + j);
        if (set_cpu(0, cpu) != 0) {
            bad++;
            continue;
        }
        bad += sched_getcpu() != cpu;
        bad += getcpu_syscall() != cpu;
        cpu_set_t got;
        bad += sched_getaffinity(0, sizeof got, &got) != 0 || CPU_COUNT(&got) != 1 || !CPU_ISSET(cpu, &got);
        syscall(SYS_getppid);
        sched_yield();
        bad += sched_getcpu() != cpu; /* still there after a trip through the scheduler */
    }
    cpu_set_t two;
    CPU_ZERO(&two);
    CPU_SET(cpu_of(start), &two);
    CPU_SET(cpu_of(start + 1), &two);
    if (sched_setaffinity(0, sizeof two, &two) != 0)
        return bad + 1;
    for (int j = 0; j < 4; j++) {
        int c = sched_getcpu();
        bad += c < 0 || c >= CPU_SETSIZE || !CPU_ISSET(c, &two);
        sched_yield();
    }
    return bad;
}

static pthread_barrier_t barrier;

static void *thread_mover(void *arg)
{
    int t = (int)(intptr_t)arg;
    pthread_barrier_wait(&barrier); /* all threads move at the same time */
    return (void *)(intptr_t)mover(t);
}

/* Field 39 (processor) of /proc/<pid>/stat, or -1. */
static int stat_cpu(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    p++;
    for (int field = 3; field <= 39; field++) { /* p is at " field3 field4 ..." */
        while (*p == ' ')
            p++;
        if (field == 39)
            return *p >= '0' && *p <= '9' ? atoi(p) : -1;
        while (*p && *p != ' ')
            p++;
    }
    return -1;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("smp-affinity");
    cpus_init();
    cpu_set_t all;
    CHECK(sched_getaffinity(0, sizeof all, &all) == 0, "sched_getaffinity");
    int nt = ncpu < 2 ? 2 : ncpu > MAXT ? MAXT : ncpu;
    int moves = LAPS * ncpu;

    /* 1. Threads moving themselves, concurrently. */
    CHECK(pthread_barrier_init(&barrier, NULL, (unsigned)nt) == 0, "pthread_barrier_init");
    pthread_t th[MAXT];
    int created = 0;
    for (int t = 0; t < nt; t++) {
        if (!CHECK(pthread_create(&th[t], NULL, thread_mover, (void *)(intptr_t)t) == 0, "pthread_create"))
            return wl_end(); /* exit() ends the threads waiting at the barrier */
        created++;
    }
    for (int t = 0; t < created; t++) {
        void *ret = (void *)(intptr_t)-1;
        int j = pthread_join(th[t], &ret);
        CHECK(j == 0 && ret == NULL, "thread %d: %d failed checks", t, (int)(intptr_t)ret);
    }
    pthread_barrier_destroy(&barrier);
    wl_step("%d threads x %d moves: on the CPU set by sched_setaffinity after each", nt, moves);

    /* 2. Processes moving themselves, released together by closing a gate pipe. */
    int gate[2];
    CHECK(pipe(gate) == 0, "gate pipe");
    pid_t pids[MAXT];
    int forked = 0;
    fflush(stdout);
    for (int p = 0; p < nt; p++) {
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            close(gate[1]);
            if (read(gate[0], &c, 1) != 0)
                _exit(255);
            int bad = mover(p);
            _exit(bad > 254 ? 254 : bad);
        }
        if (CHECK(pid > 0, "fork mover %d", p))
            pids[forked++] = pid;
    }
    close(gate[0]);
    close(gate[1]);
    for (int p = 0; p < forked; p++) {
        int st = wait_status(pids[p]);
        CHECK(st == 0, "process %d: status %d (failed checks)", p, st);
    }
    wl_step("%d processes x %d moves: on the CPU set by sched_setaffinity after each", nt, moves);

    /* 3. The parent moves a child sleeping in read(); woken, the child reports its CPU. */
    int cmd[2], rep[2];
    CHECK(pipe(cmd) == 0 && pipe(rep) == 0, "pipes");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(cmd[1]);
        close(rep[0]);
        char c;
        while (read(cmd[0], &c, 1) == 1 && c == 'r') {
            int cpus[2] = {sched_getcpu(), getcpu_syscall()};
            if (write(rep[1], cpus, sizeof cpus) != sizeof cpus)
                _exit(2);
        }
        _exit(0); /* 'q' or EOF */
    }
    close(cmd[0]);
    close(rep[1]);
    int bad_set = 0, bad_report = 0, bad_stat = 0;
    for (int j = 0; pid > 0 && j < moves; j++) {
        int cpu = cpu_of(j + 1);
        bad_set += set_cpu(pid, cpu) != 0;
        cpu_set_t got;
        bad_set += sched_getaffinity(pid, sizeof got, &got) != 0 || CPU_COUNT(&got) != 1 || !CPU_ISSET(cpu, &got);
        int cpus[2] = {-1, -1};
        if (write(cmd[1], "r", 1) != 1 || read(rep[0], cpus, sizeof cpus) != sizeof cpus) {
            bad_report += 100;
            break;
        }
        bad_report += cpus[0] != cpu || cpus[1] != cpu;
        /* The child can only have run on `cpu` since the move: its task_cpu() stays there. */
        bad_stat += stat_cpu(pid) != cpu;
    }
    CHECK(write(cmd[1], "q", 1) == 1, "tell the child to quit");
    close(cmd[1]);
    close(rep[0]);
    CHECK(pid > 0 && wait_status(pid) == 0, "sleeping child exit status");
    CHECK(bad_set == 0, "%d failed sched_setaffinity/sched_getaffinity on the child", bad_set);
    CHECK(bad_report == 0, "%d wrong CPUs reported by the child", bad_report);
    CHECK(bad_stat == 0, "%d wrong processor fields in /proc/<pid>/stat", bad_stat);
    wl_step("moved a sleeping child %d times: it woke up on the new CPU, /proc/<pid>/stat agreed", moves);

    /* 4. The parent moves a child that keeps running (a runnable task: the stopper moves it). */
    volatile int *stop = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!CHECK(stop != MAP_FAILED, "mmap shared page"))
        return wl_end();
    *stop = 0;
    int ready[2];
    CHECK(pipe(ready) == 0, "ready pipe");
    pid_t parent = getpid();
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        close(ready[0]);
        long spins = 0;
        /* Touch the shared page, then tell the parent we are running. */
        if (*stop || write(ready[1], "x", 1) != 1)
            _exit(2);
        while (!*stop) {
            sched_yield();
            if (++spins % 64 == 0 && getppid() != parent)
                _exit(3); /* the parent died: do not spin forever */
        }
        _exit(0);
    }
    close(ready[1]);
    char c;
    CHECK(pid > 0 && read(ready[0], &c, 1) == 1, "running child started");
    close(ready[0]);
    bad_set = bad_stat = 0;
    for (int j = 0; pid > 0 && j < moves; j++) {
        int cpu = cpu_of(j + 1);
        bad_set += set_cpu(pid, cpu) != 0;
        bad_stat += stat_cpu(pid) != cpu;
    }
    *stop = 1;
    CHECK(pid > 0 && wait_status(pid) == 0, "running child exit status");
    CHECK(bad_set == 0, "%d failed sched_setaffinity on the running child", bad_set);
    CHECK(bad_stat == 0, "%d wrong processor fields in /proc/<pid>/stat", bad_stat);
    munmap((void *)stop, 4096);
    wl_step("moved a running child %d times: /proc/<pid>/stat processor followed", moves);

    CHECK(sched_setaffinity(0, sizeof all, &all) == 0, "restore the affinity mask");
    return wl_end();
}
