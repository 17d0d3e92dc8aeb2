/* smp-mix: every CPU busy at once. For ROUNDS rounds (default 3, or argv[1]) the parent forks one
 * worker per CPU (at least 2), worker w pinned to CPU w. The workers meet at a process-shared
 * futex barrier, then each: passes 8 KiB to the next worker through a pipe ring, increments a
 * counter in shared memory under a process-shared futex lock, fork+execs /bin/true, writes,
 * fsyncs, reads back (read and a MAP_SHARED mapping) and unlinks a tmpfs file, maps/touches/
 * unmaps anonymous memory, sleeps 1 ms, yields, and meets the others at the barrier again. The
 * parent checks every exit status, every worker's results and the counter after each round.
 * Multi-core kernel paths: everything at once on all CPUs - fork/exec/exit/wait with remote
 * wakeups of parents, shared futexes (keys on a shmem page) contended across CPUs, pipe wakeups,
 * tmpfs page allocation, page faults and TLB flushes, hrtimers for nanosleep on every CPU. */
#include "smp.h"
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define DIR_PATH "/tmp/smp-mix"
#define PIPE_BYTES 8192
#define INCS 40
#define FILE_BYTES 6000
#define ANON_PAGES 16
#define MAXW 64
#define GIVE_UP 20 /* a futex wait that times out (1 s) this many times in a row: failure, no hang */

/* Error bits a worker reports. */
enum {
    E_PIN = 1, E_BARRIER = 2, E_PIPE = 4, E_LOCK = 8, E_EXEC = 16, E_FILE = 32, E_MMAP = 64, E_SLEEP = 128
};

struct shared { /* MAP_SHARED between the parent and the workers */
    atomic_int lock; /* 0 free, 1 locked, 2 locked with waiters */
    atomic_int bar_count, bar_gen;
    long counter;
    struct {
        int err, piped, execs, files, pages;
        uint64_t hash;
    } res[MAXW];
};
static struct shared *sh;
static int nw;

/* The shared futex words (in a MAP_SHARED page: no FUTEX_PRIVATE_FLAG) are waited on for 1 s at a
 * time; GIVE_UP timeouts in a row are a failure, not a hang. */
static const struct timespec one_second = {1, 0};

static int lock(void)
{
    return futex_lock(&sh->lock, 0, &one_second, GIVE_UP);
}

static void unlock(void)
{
    futex_unlock(&sh->lock, 0);
}

static int barrier(void)
{
    int gen = atomic_load(&sh->bar_gen), timeouts = 0;
    if (atomic_fetch_add(&sh->bar_count, 1) + 1 == nw) {
        atomic_store(&sh->bar_count, 0);
        atomic_fetch_add(&sh->bar_gen, 1);
        futex(&sh->bar_gen, FUTEX_WAKE, INT_MAX, NULL);
        return 0;
    }
    while (atomic_load(&sh->bar_gen) == gen)
        if (futex_wait(&sh->bar_gen, FUTEX_WAIT, gen, &one_second, &timeouts, GIVE_UP) != 0)
            return -1;
    return 0;
}

/* The seed of the test data (smp.h's fill) of worker or file `what` in round `round`. */
static uint64_t seed(int round, int what)
{
    return (uint64_t)(round * 1000 + what);
}

static int worker(int round, int w, int in, int out)
{
    int err = 0;
    if (pin_self(cpu_of(w)) != 0)
        err |= E_PIN;
    if (barrier() != 0)
        err |= E_BARRIER;

    /* Pipe ring: 8 KiB to worker w+1 (fits in the pipe: no deadlock), then read worker w-1's. */
    unsigned char buf[PIPE_BYTES], want[PIPE_BYTES];
    fill(buf, PIPE_BYTES, seed(round, w));
    for (size_t off = 0; off < PIPE_BYTES;) {
        ssize_t n = write(out, buf + off, off == 0 ? 3000 : PIPE_BYTES - off);
        if (n <= 0) {
            err |= E_PIPE;
            break;
        }
        off += (size_t)n;
    }
    close(out);
    int from = (w + nw - 1) % nw, got = 0;
    for (;;) {
        ssize_t n = read(in, buf + got, sizeof buf - (size_t)got);
        if (n <= 0) {
            if (n < 0)
                err |= E_PIPE;
            break;
        }
        got += (int)n;
        if (got == PIPE_BYTES) { /* one more read must see EOF */
            char extra;
            if (read(in, &extra, 1) != 0)
                err |= E_PIPE;
            break;
        }
    }
    close(in);
    fill(want, PIPE_BYTES, seed(round, from));
    if (got != PIPE_BYTES || memcmp(buf, want, PIPE_BYTES) != 0)
        err |= E_PIPE;
    uint64_t h = hash(buf, (size_t)got);

    /* Futex lock contention with the other workers. */
    for (int i = 0; i < INCS; i++) {
        if (lock() != 0) {
            err |= E_LOCK;
            break;
        }
        long v = sh->counter;
        if (i % 4 == 0)
            sched_yield();
        sh->counter = v + 1;
        unlock();
    }

    /* fork + exec of /bin/true (inherits the pinning). */
    int execs = 0;
    pid_t pid = fork();
    if (pid == 0) {
        char *args[] = {"/bin/true", NULL};
        execv(args[0], args);
        _exit(127);
    }
    if (pid > 0 && wait_status(pid) == 0)
        execs++;
    else
        err |= E_EXEC;

    /* tmpfs: write, fsync, read back, map, unlink. */
    int files = 0;
    char path[64];
    snprintf(path, sizeof path, DIR_PATH "/w%d", w);
    unsigned char data[FILE_BYTES], back[FILE_BYTES];
    fill(data, FILE_BYTES, seed(round, 500 + w));
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0644);
    if (fd >= 0 && write(fd, data, FILE_BYTES) == FILE_BYTES && fsync(fd) == 0 &&
        pread(fd, back, FILE_BYTES, 0) == FILE_BYTES && memcmp(data, back, FILE_BYTES) == 0) {
        unsigned char *m = mmap(NULL, FILE_BYTES, PROT_READ, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED && memcmp(m, data, FILE_BYTES) == 0 && munmap(m, FILE_BYTES) == 0)
            files++;
    }
    if (fd < 0 || close(fd) != 0 || unlink(path) != 0 || files != 1)
        err |= E_FILE;

    /* Anonymous memory: fault in, check, unmap. */
    long pagesz = sysconf(_SC_PAGESIZE);
    int pages = 0;
    unsigned char *a = mmap(NULL, ANON_PAGES * (size_t)pagesz, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a != MAP_FAILED) {
        for (int p = 0; p < ANON_PAGES; p++)
            a[(size_t)p * (size_t)pagesz + (size_t)w] = (unsigned char)(p + 1);
        for (int p = 0; p < ANON_PAGES; p++)
            pages += a[(size_t)p * (size_t)pagesz + (size_t)w] == (unsigned char)(p + 1);
        if (munmap(a, ANON_PAGES * (size_t)pagesz) != 0)
            pages = 0;
    }
    if (pages != ANON_PAGES)
        err |= E_MMAP;

    struct timespec ms = {0, 1000 * 1000};
    if (nanosleep(&ms, NULL) != 0)
        err |= E_SLEEP;
    sched_yield();
    if (sched_getcpu() != cpu_of(w))
        err |= E_PIN;
    if (barrier() != 0)
        err |= E_BARRIER;

    sh->res[w].err = err;
    sh->res[w].piped = got;
    sh->res[w].hash = h;
    sh->res[w].execs = execs;
    sh->res[w].files = files;
    sh->res[w].pages = pages;
    return err ? 1 : 0;
}

static void remove_dir(void)
{
    DIR *d = opendir(DIR_PATH);
    struct dirent *de;
    char path[300];
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') {
            snprintf(path, sizeof path, DIR_PATH "/%s", de->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    rmdir(DIR_PATH);
}

int main(int argc, char **argv)
{
    int rounds = 3;
    if (argc > 1) {
        rounds = atoi(argv[1]);
        if (rounds < 1 || rounds > 1000) {
            fprintf(stderr, "usage: smp-mix [ROUNDS (1-1000, default 3)]\n");
            return 2;
        }
    }
    wl_begin("smp-mix");
    cpus_init();
    nw = ncpu < 2 ? 2 : ncpu > MAXW ? MAXW : ncpu;
    wl_step("%d rounds x %d workers, worker w pinned to CPU w mod %d", rounds, nw, ncpu);

    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!CHECK(sh != MAP_FAILED, "mmap shared state"))
        return wl_end();
    remove_dir();
    CHECK(mkdir(DIR_PATH, 0755) == 0, "mkdir " DIR_PATH);

    long piped = 0, execs = 0, files = 0, pages = 0;
    for (int r = 0; r < rounds; r++) {
        int ring[MAXW][2], ok = 1;
        memset(sh->res, 0, sizeof sh->res);
        for (int w = 0; w < nw; w++)
            ok &= CHECK(pipe2(ring[w], O_CLOEXEC) == 0, "pipe %d", w);
        if (!ok)
            break;
        pid_t pids[MAXW];
        int forked = 0;
        fflush(stdout);
        for (int w = 0; w < nw; w++) {
            pid_t pid = fork();
            if (pid == 0) {
                int in = ring[(w + nw - 1) % nw][0], out = ring[w][1];
                close_pipes(ring, nw, in, out);
                _exit(worker(r, w, in, out));
            }
            if (!CHECK(pid > 0, "fork worker %d", w))
                break;
            pids[forked++] = pid;
        }
        close_pipes(ring, nw, -1, -1);
        for (int w = 0; w < forked; w++) {
            int status = -1;
            pid_t got = waitpid(pids[w], &status, 0); /* not inside CHECK: its arguments print status */
            CHECK(got == pids[w] && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "round %d worker %d: status %#x, errors %#x", r, w, status, sh->res[w].err);
        }
        if (forked < nw) /* the forked ones gave up at the barrier */
            break;
        for (int w = 0; w < nw; w++) {
            int from = (w + nw - 1) % nw;
            static unsigned char data[PIPE_BYTES];
            fill(data, PIPE_BYTES, seed(r, from));
            uint64_t want = hash(data, PIPE_BYTES);
            CHECK(sh->res[w].hash == want && sh->res[w].piped == PIPE_BYTES, "round %d worker %d: pipe data", r, w);
            piped += sh->res[w].piped;
            execs += sh->res[w].execs;
            files += sh->res[w].files;
            pages += sh->res[w].pages;
        }
        CHECK(sh->counter == (long)(r + 1) * nw * INCS, "round %d: counter %ld", r, sh->counter);
        CHECK(atomic_load(&sh->lock) == 0, "round %d: lock free", r);
        wl_step("round %d: %d workers done", r + 1, nw);
    }
    CHECK(rmdir(DIR_PATH) == 0, "rmdir " DIR_PATH " (empty)");
    wl_step("summary: %ld futex-locked increments, %ld execs of /bin/true, %ld bytes piped, %ld tmpfs files, "
            "%ld anonymous pages",
            sh->counter, execs, piped, files, pages);
    return wl_end();
}
