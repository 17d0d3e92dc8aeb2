/* smp-pipes: one writer/reader process pair per CPU, the writer of pair i pinned to CPU i and its
 * reader to CPU i+1 (mod CPUs), streaming 256 KiB in total through pipes with every byte and a
 * checksum verified; then a ring of max(3, CPUs) processes, process j on CPU j, passing a token
 * through pipes for 50 laps.
 * Multi-core kernel paths: pipe_write/pipe_read on different CPUs contending on the pipe mutex,
 * remote wakeups of the peer (wait queues, wake list / reschedule IPI), page freeing on another CPU
 * than the allocating one, fork + exit + wait across CPUs. */
#include "smp.h"
#include <sched.h>
#include <stdint.h>
#include <sys/wait.h>

#define TOTAL (256 * 1024) /* bytes through all pairs together */
#define LAPS 50
#define MAXP 64

/* stream: the data of one pair, smp.h's fill() seeded with the pair's number. */
static unsigned char stream[TOTAL], recv_buf[TOTAL + 4096];

struct report { /* reader -> parent, one atomic pipe write */
    int pair, bad;
    size_t got;
    uint64_t hash;
};

static int writer(int pair, size_t bytes, int fd)
{
    fill(stream, bytes, (uint64_t)pair);
    size_t sent = 0;
    for (int c = 0; sent < bytes; c++) {
        size_t n = 512 + (size_t)(c * 733) % 3584; /* 512 .. 4095 bytes, uneven */
        if (n > bytes - sent)
            n = bytes - sent;
        ssize_t w = write(fd, stream + sent, n);
        if (w <= 0)
            return 2;
        sent += (size_t)w;
    }
    return close(fd) == 0 ? 0 : 3;
}

static int reader(int pair, size_t bytes, int fd, int rep)
{
    struct report r = {pair, 0, 0, 0};
    for (;;) {
        size_t room = sizeof recv_buf - r.got;
        ssize_t n = read(fd, recv_buf + r.got, room < 4096 ? room : 4096);
        if (n < 0)
            return 2;
        if (n == 0)
            break;
        r.got += (size_t)n;
    }
    fill(stream, bytes, (uint64_t)pair);
    r.bad = r.got != bytes || memcmp(stream, recv_buf, bytes) != 0;
    r.hash = hash(recv_buf, r.got);
    return write(rep, &r, sizeof r) == sizeof r ? 0 : 3;
}

static int wait_ok(pid_t pid)
{
    return wait_status(pid) == 0;
}

/* Ring member j: LAPS times read the token from in, check it, pass it on (the last one of the
 * last lap goes to done). */
static int ring_member(int j, int m, int in, int out, int done)
{
    for (int lap = 0; lap < LAPS; lap++) {
        uint32_t tok;
        if (read(in, &tok, sizeof tok) != sizeof tok)
            return 2;
        if (tok != (uint32_t)(lap * m + j))
            return 3;
        tok++;
        int to = j == m - 1 && lap == LAPS - 1 ? done : out;
        if (write(to, &tok, sizeof tok) != sizeof tok)
            return 4;
    }
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("smp-pipes");
    cpus_init();

    /* Part 1: pairs. */
    int np = ncpu > MAXP ? MAXP : ncpu;
    size_t per = TOTAL / (size_t)np / 8 * 8;
    int rep[2], gate[2];
    CHECK(pipe(rep) == 0 && pipe(gate) == 0, "report and gate pipes");
    pid_t pids[2 * MAXP];
    int nkids = 0;
    fflush(stdout);
    for (int i = 0; i < np; i++) {
        int p[2];
        if (!CHECK(pipe(p) == 0, "pipe %d", i))
            break;
        for (int role = 0; role < 2; role++) {
            pid_t pid = fork();
            if (pid == 0) {
                char c;
                close(gate[1]);
                close(rep[0]);
                int st = pin_self(cpu_of(i + role)) == 0 ? 0 : 1;
                if (read(gate[0], &c, 1) != 0) /* EOF once the parent has forked everybody */
                    st = 1;
                if (role == 0) {
                    close(p[0]);
                    close(rep[1]);
                    st = st ? st : writer(i, per, p[1]);
                } else {
                    close(p[1]);
                    st = st ? st : reader(i, per, p[0], rep[1]);
                }
                _exit(st);
            }
            if (CHECK(pid > 0, "fork"))
                pids[nkids++] = pid;
        }
        close(p[0]);
        close(p[1]);
    }
    close(gate[0]);
    close(gate[1]);
    close(rep[1]);
    int reports = 0;
    struct report r;
    while (read(rep[0], &r, sizeof r) == sizeof r) { /* EOF when every reader has exited */
        reports++;
        if (!CHECK(r.pair >= 0 && r.pair < np, "report from pair %d", r.pair))
            continue;
        fill(stream, per, (uint64_t)r.pair);
        uint64_t want = hash(stream, per);
        CHECK(r.got == per && r.bad == 0 && r.hash == want, "pair %d: %zu bytes, %s, hash %#llx (want %#llx)", r.pair,
              r.got, r.bad ? "wrong data" : "data ok", (unsigned long long)r.hash, (unsigned long long)want);
    }
    close(rep[0]);
    CHECK(reports == np, "%d reports from %d readers", reports, np);
    for (int k = 0; k < nkids; k++)
        CHECK(wait_ok(pids[k]), "pair process %d exit status", k);
    wl_step("writer/reader pairs: %d (writer of pair i on CPU i, reader on CPU i+1 mod %d), %zu bytes each, "
            "checksums ok", np, ncpu, per);

    /* Part 2: token ring. */
    int m = ncpu < 3 ? 3 : ncpu > MAXP ? MAXP : ncpu;
    int ring[MAXP][2], done[2];
    CHECK(pipe(done) == 0, "done pipe");
    int piped = 0;
    for (int j = 0; j < m; j++)
        piped += CHECK(pipe(ring[j]) == 0, "ring pipe %d", j);
    if (piped < m)
        return wl_end();
    uint32_t tok = 0;
    CHECK(write(ring[0][1], &tok, sizeof tok) == sizeof tok, "inject the token");
    nkids = 0;
    fflush(stdout);
    for (int j = 0; j < m; j++) {
        pid_t pid = fork();
        if (pid == 0) {
            int in = ring[j][0], out = ring[(j + 1) % m][1];
            close_pipes(ring, m, in, out);
            close(done[0]);
            if (j != m - 1)
                close(done[1]);
            int st = pin_self(cpu_of(j)) == 0 ? 0 : 1;
            _exit(st ? st : ring_member(j, m, in, out, done[1]));
        }
        if (CHECK(pid > 0, "fork ring member %d", j))
            pids[nkids++] = pid;
    }
    close_pipes(ring, m, -1, -1);
    close(done[1]);
    tok = 0;
    ssize_t got = read(done[0], &tok, sizeof tok);
    CHECK(got == sizeof tok && tok == (uint32_t)(LAPS * m), "token after %d laps: %u", LAPS, tok);
    close(done[0]);
    for (int k = 0; k < nkids; k++)
        CHECK(wait_ok(pids[k]), "ring member %d exit status", k);
    wl_step("token ring: %d processes (process j on CPU j mod %d) x %d laps = %u hops", m, ncpu, LAPS, tok);
    return wl_end();
}
