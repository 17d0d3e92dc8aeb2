/* smp-tmpfs: N = max(2, CPUs) processes, process i pinned to CPU i % CPUs and released together
 * through a start gate, do file operations on tmpfs in parallel: create/write/fsync/read back
 * files in a per-process subdirectory, rename them into the shared directory /tmp/smp-tmpfs,
 * unlink half of them, create and unlink scratch names there, and append fixed-size records to one
 * shared O_APPEND file. The parent checks every kept file (size, content), the directory listing
 * and every appended record.
 * Multi-core kernel paths: the shared directory's i_rwsem and dcache (d_lock, rename_lock seqlock)
 * taken from several CPUs, the shared file's inode lock serializing O_APPEND writers, shmem page
 * allocation and freeing on every CPU (per-CPU page lists), fork + exit + wait across CPUs, remote
 * wakeups when the start gate opens. */
#include "smp.h"
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define DIR_PATH "/tmp/smp-tmpfs"
#define SHARED DIR_PATH "/shared"
#define FILES 8               /* files per process; the even-numbered ones are kept */
#define RECS (2 * FILES)      /* O_APPEND records per process */
#define RECSZ 64
#define MAXP 64

/* File (p, f): file_size(p, f) bytes of smp.h's fill() seeded with p * FILES + f (the buffer needs
 * room for the size rounded up to 8). */
static size_t file_size(int p, int f)
{
    return 2000 + 1500 * (size_t)f + 97 * (size_t)p; /* 2000 .. ~18500 bytes: 1 to 5 pages */
}

static void make_record(char *rec, int p, int k)
{
    memset(rec, '.', RECSZ);
    int n = snprintf(rec, RECSZ, "p=%02d k=%02d", p, k);
    rec[n] = '.';
    unsigned sum = 0;
    for (int i = 0; i < RECSZ - 6; i++)
        sum = sum * 33 + (unsigned char)rec[i];
    snprintf(rec + RECSZ - 6, 6, "%04x", sum & 0xffff);
    rec[RECSZ - 2] = '!';
    rec[RECSZ - 1] = '\n';
}

/* The child's work; returns 0 or the number of the step that failed (its exit status). */
static int child(int p, int gate)
{
    char c;
    if (pin_self(cpu_of(p)) != 0) /* pinned, and running there */
        return 1;
    if (read(gate, &c, 1) != 0) /* blocks until the parent closes the gate: EOF */
        return 2;
    close(gate);
    char sub[64], path[96], dst[96], rec[RECSZ];
    snprintf(sub, sizeof sub, DIR_PATH "/p%d", p);
    if (mkdir(sub, 0755) != 0)
        return 3;
    int app = open(SHARED, O_WRONLY | O_APPEND);
    if (app < 0)
        return 4;
    static unsigned char buf[20008], back[20000];
    int k = 0;
    for (int f = 0; f < FILES; f++) {
        size_t size = file_size(p, f);
        fill(buf, size, (uint64_t)(p * FILES + f));
        snprintf(path, sizeof path, "%s/f%d", sub, f);
        int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0644);
        if (fd < 0)
            return 5;
        size_t done = 0, chunk = 1000 + 100 * (size_t)p; /* uneven chunks cross pages */
        while (done < size) {
            size_t n = size - done < chunk ? size - done : chunk;
            ssize_t w = write(fd, buf + done, n);
            if (w <= 0)
                return 6;
            done += (size_t)w;
        }
        if (fsync(fd) != 0)
            return 7;
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_size != (off_t)size)
            return 8;
        if (lseek(fd, 0, SEEK_SET) != 0 || read(fd, back, sizeof back) != (ssize_t)size ||
            memcmp(buf, back, size) != 0)
            return 9;
        if (close(fd) != 0)
            return 10;

        make_record(rec, p, k++);
        if (write(app, rec, RECSZ) != RECSZ)
            return 11;

        snprintf(dst, sizeof dst, DIR_PATH "/k%d-%d", p, f);
        if (rename(path, dst) != 0) /* across directories, into the shared one */
            return 12;
        if (f % 2 && unlink(dst) != 0)
            return 13;
        snprintf(path, sizeof path, DIR_PATH "/scratch%d", p);
        fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (fd < 0 || write(fd, rec, RECSZ) != RECSZ || close(fd) != 0 || unlink(path) != 0)
            return 14;

        make_record(rec, p, k++);
        if (write(app, rec, RECSZ) != RECSZ)
            return 15;
    }
    if (close(app) != 0)
        return 16;
    return 0;
}

/* Removes DIR_PATH and what this workload puts in it (a leftover of an interrupted run). */
static void remove_tree(void)
{
    DIR *d = opendir(DIR_PATH);
    if (!d)
        return;
    struct dirent *de;
    char path[300];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, DIR_PATH "/%s", de->d_name);
        if (unlink(path) != 0 && errno == EISDIR) {
            DIR *s = opendir(path);
            struct dirent *se;
            char sp[600];
            while (s && (se = readdir(s)))
                if (se->d_name[0] != '.') {
                    snprintf(sp, sizeof sp, "%s/%s", path, se->d_name);
                    unlink(sp);
                }
            if (s)
                closedir(s);
            rmdir(path);
        }
    }
    closedir(d);
    rmdir(DIR_PATH);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("smp-tmpfs");
    cpus_init();
    int np = ncpu < 2 ? 2 : ncpu > MAXP ? MAXP : ncpu;
    wl_step("%d processes, process i pinned to CPU i mod %d", np, ncpu);

    remove_tree();
    CHECK(mkdir(DIR_PATH, 0755) == 0, "mkdir " DIR_PATH);
    int fd = open(SHARED, O_CREAT | O_EXCL | O_WRONLY, 0644);
    CHECK(fd >= 0, "create " SHARED);
    close(fd);

    int gate[2];
    CHECK(pipe(gate) == 0, "gate pipe");
    pid_t pids[MAXP];
    int forked = 0;
    fflush(stdout);
    for (int p = 0; p < np; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            close(gate[1]);
            int st = child(p, gate[0]);
            if (st)
                printf("smp-tmpfs: child %d failed at step %d: %s\n", p, st, strerror(errno));
            _exit(st);
        }
        if (!CHECK(pids[p] > 0, "fork %d", p))
            break;
        forked++;
    }
    close(gate[0]);
    close(gate[1]); /* opens the gate: every child's read() returns 0 */
    for (int p = 0; p < forked; p++) {
        int status = -1;
        pid_t got = waitpid(pids[p], &status, 0); /* not inside CHECK: its arguments print status */
        CHECK(got == pids[p] && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d: status %#x", p, status);
    }
    wl_step("%d x %d files created, written, fsynced, read back, renamed into the shared directory",
            np, FILES);

    /* The shared directory: the O_APPEND file, np subdirectories, np * FILES/2 kept files. */
    int entries = 0, subdirs = 0, kept = 0, other = 0;
    DIR *d = opendir(DIR_PATH);
    CHECK(d != NULL, "opendir");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        int p, f;
        char extra;
        if (de->d_name[0] == '.')
            continue;
        entries++;
        if (sscanf(de->d_name, "p%d%c", &p, &extra) == 1 && p >= 0 && p < np)
            subdirs++;
        else if (sscanf(de->d_name, "k%d-%d%c", &p, &f, &extra) == 2 && p >= 0 && p < np && f >= 0 &&
                 f < FILES && f % 2 == 0)
            kept++;
        else if (strcmp(de->d_name, "shared") != 0)
            other++;
    }
    if (d)
        closedir(d);
    CHECK(entries == 1 + np + np * FILES / 2 && subdirs == np && kept == np * FILES / 2 && other == 0,
          "listing: %d entries, %d subdirectories, %d kept files, %d others", entries, subdirs, kept, other);
    wl_step("directory listing: %d entries (shared file, %d subdirectories, %d files)", 1 + np + np * FILES / 2,
            np, np * FILES / 2);

    static unsigned char back[20000], want[20008];
    int good = 0;
    for (int p = 0; p < np; p++)
        for (int f = 0; f < FILES; f += 2) {
            char path[96];
            snprintf(path, sizeof path, DIR_PATH "/k%d-%d", p, f);
            size_t size = file_size(p, f);
            struct stat st;
            int ok = stat(path, &st) == 0 && st.st_size == (off_t)size;
            fd = open(path, O_RDONLY);
            ok = ok && fd >= 0 && read(fd, back, sizeof back) == (ssize_t)size;
            fill(want, size, (uint64_t)(p * FILES + f));
            ok = ok && memcmp(back, want, size) == 0;
            if (fd >= 0)
                close(fd);
            good += CHECK(ok, "%s: size and content", path);
            CHECK(unlink(path) == 0, "unlink %s", path);
        }
    wl_step("%d kept files: sizes and contents ok", good);

    /* The shared O_APPEND file: every record whole, each process's records in order. */
    static char all[MAXP * RECS * RECSZ + 1];
    struct stat st = {0};
    int sr = stat(SHARED, &st);
    CHECK(sr == 0 && st.st_size == (off_t)np * RECS * RECSZ, "shared file size %lld", (long long)st.st_size);
    fd = open(SHARED, O_RDONLY);
    ssize_t r = fd >= 0 ? read(fd, all, sizeof all) : -1;
    if (fd >= 0)
        close(fd);
    CHECK(r == (ssize_t)np * RECS * RECSZ, "read shared file: %zd", r);
    int next[MAXP] = {0}, bad = 0;
    for (ssize_t off = 0; off + RECSZ <= r; off += RECSZ) {
        int p, k;
        char want[RECSZ];
        if (sscanf(all + off, "p=%d k=%d", &p, &k) != 2 || p < 0 || p >= np || k != next[p]) {
            bad++;
            continue;
        }
        make_record(want, p, k);
        bad += memcmp(want, all + off, RECSZ) != 0;
        next[p]++;
    }
    int complete = 0;
    for (int p = 0; p < np; p++)
        complete += next[p] == RECS;
    CHECK(bad == 0 && complete == np, "%d bad records, %d of %d processes complete", bad, complete, np);
    wl_step("O_APPEND: %d processes x %d records of %d bytes, whole and in order", np, RECS, RECSZ);

    for (int p = 0; p < np; p++) {
        char sub[64];
        snprintf(sub, sizeof sub, DIR_PATH "/p%d", p);
        CHECK(rmdir(sub) == 0, "rmdir %s (empty)", sub);
    }
    CHECK(unlink(SHARED) == 0, "unlink shared file");
    CHECK(rmdir(DIR_PATH) == 0, "rmdir " DIR_PATH);
    wl_step("cleaned up");
    return wl_end();
}
