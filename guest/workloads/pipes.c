/* pipes: a pipe between parent and child (256 KiB, checked), a non-blocking pipe (EAGAIN, EPIPE),
 * and a UNIX socketpair exchange. */
#include "wl.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define TOTAL (256 * 1024)

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("pipes");
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        unsigned char chunk[3000];
        size_t sent = 0;
        while (sent < TOTAL) {
            size_t n = TOTAL - sent < sizeof chunk ? TOTAL - sent : sizeof chunk;
            for (size_t i = 0; i < n; i++)
                chunk[i] = (unsigned char)((sent + i) * 13);
            ssize_t w = write(p[1], chunk, n);
            if (w <= 0)
                _exit(2);
            sent += (size_t)w;
        }
        _exit(0);
    }
    close(p[1]);
    size_t got = 0;
    int bad = 0;
    unsigned char rb[4096];
    for (;;) {
        ssize_t r = read(p[0], rb, sizeof rb);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            bad += rb[i] != (unsigned char)((got + (size_t)i) * 13);
        got += (size_t)r;
    }
    close(p[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer child");
    CHECK(got == TOTAL && bad == 0, "received %zu bytes, %d wrong", got, bad);
    wl_step("pipe parent<-child: %zu bytes ok", got);

    int q[2];
    CHECK(pipe2(q, O_NONBLOCK) == 0, "pipe2 O_NONBLOCK");
    char c;
    CHECK(read(q[0], &c, 1) < 0 && errno == EAGAIN, "empty non-blocking read gives EAGAIN");
    size_t filled = 0;
    static char big[65536];
    for (;;) {
        ssize_t w = write(q[1], big, sizeof big);
        if (w < 0)
            break;
        filled += (size_t)w;
    }
    CHECK(errno == EAGAIN && filled >= 4096, "full pipe gives EAGAIN after %zu bytes", filled);
    wl_step("non-blocking pipe filled with %zu bytes", filled);
    close(q[0]);
    signal(SIGPIPE, SIG_IGN);
    CHECK(write(q[1], "x", 1) < 0 && errno == EPIPE, "write to a pipe without readers gives EPIPE");
    close(q[1]);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair AF_UNIX");
    pid = fork();
    if (pid == 0) {
        close(sv[0]);
        char in[64];
        ssize_t r = read(sv[1], in, sizeof in);
        if (r <= 0)
            _exit(3);
        for (ssize_t i = 0; i < r; i++)
            in[i] = (char)(in[i] ^ 0x20);
        _exit(write(sv[1], in, (size_t)r) == r ? 0 : 4);
    }
    close(sv[1]);
    CHECK(write(sv[0], "unix socket", 11) == 11, "socket write");
    char out[64] = {0};
    CHECK(read(sv[0], out, sizeof out) == 11 && memcmp(out, "UNIX\0SOCKET", 11) == 0, "socket echo '%s'", out);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "socket child");
    close(sv[0]);
    wl_step("unix socketpair round trip ok");
    return wl_end();
}
