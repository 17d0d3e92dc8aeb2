/* krr guest /init.
 *
 * A tiny static C program rather than a busybox sh script because:
 *  - it executes few instructions before the workload (a shell would parse a script first), which
 *    matters when the guest CPU is emulated (krr's `emu` backend) and when a recording starts at
 *    /init: the trace then contains almost nothing but the workload;
 *  - it passes arguments through verbatim (no shell word splitting or globbing) and reports the
 *    exact exit status, including death by a signal;
 *  - it is PID 1 and must reap orphans; C makes that explicit.
 *
 * What it does:
 *  1. mounts proc on /proc, sysfs on /sys, devtmpfs on /dev, tmpfs on /tmp and /dev/shm, and
 *     brings the loopback interface up (when the kernel has IPv4);
 *  2. finds the command (see guest/README.md, "Kernel command line"):
 *       0) from krr's VMM through the command port 0xf5 (krr-port.h), if it holds one;
 *       a) `krr.argv=<base64 of the NUL-terminated arguments>` on the kernel command line
 *          (read from /proc/cmdline) - exact for any bytes; or else
 *       b) the arguments the kernel passes to init: everything after ` -- ` on the kernel
 *          command line (the kernel strips double quotes around an argument with spaces);
 *       c) none: an interactive /bin/sh on the console (via busybox cttyhack);
 *  3. runs it (PATH=/bin, cwd /), reaping every child until the command's process exits;
 *  4. prints `krr-init: exit status N` and writes N to I/O port 0xf4 (krr-port.h); a command killed
 *     by signal S gives 128+S; a command that cannot be executed gives 127;
 *  5. if the port write returns, powers off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "krr-port.h"

#define MAX_ARGS 256

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data)
{
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) != 0 && errno != EBUSY)
        dprintf(2, "krr-init: warning: mount %s failed: %s\n", dst, strerror(errno));
}

/* What ordinary programs expect of any Linux: 127.0.0.1 and ::1 answer. Nothing to do on a
 * kernel without IPv4 (socket() fails with EAFNOSUPPORT). */
static void loopback_up(void)
{
    struct ifreq ifr;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
            dprintf(2, "krr-init: warning: cannot bring lo up: %s\n", strerror(errno));
    }
    close(fd);
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Decodes base64 (standard or URL alphabet, padding optional) from `in` up to whitespace/NUL. */
static size_t b64decode(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *in && *in != ' ' && *in != '\n' && *in != '=' ; in++) {
        int v = b64val((unsigned char)*in);
        if (v < 0)
            break;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap)
                out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    return n;
}

/* argv from the VMM's command port, or NULL if there is no VMM command. */
static char **argv_from_port(void)
{
    static char buf[8192];
    static char *args[256];
    if (ioperm(KRR_CMD_PORT, 4, 1) != 0) /* a 32-bit read checks 4 ports */
        return NULL;
    uint32_t len = krr_inl(KRR_CMD_PORT);
    if (len == 0 || len == 0xffffffffu || len > sizeof buf)
        return NULL;
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (char)krr_inb(KRR_CMD_PORT);
    int n = 0;
    for (uint32_t i = 0; i < len && n < 255;) {
        args[n++] = buf + i;
        while (i < len && buf[i])
            i++;
        i++;
    }
    args[n] = NULL;
    return n ? args : NULL;
}

/* argv from `krr.argv=` on /proc/cmdline, or NULL. */
static char **argv_from_cmdline(void)
{
    static char cmdline[4096];
    static char decoded[4096];
    static char *args[MAX_ARGS + 1];
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0)
        return NULL;
    ssize_t len = read(fd, cmdline, sizeof cmdline - 1);
    close(fd);
    if (len <= 0)
        return NULL;
    cmdline[len] = 0;
    char *p = cmdline;
    char *hit = NULL;
    /* The option must start a word; stop at " -- " (what follows belongs to init's argv). */
    for (;;) {
        while (*p == ' ' || *p == '\n')
            p++;
        if (!*p || (p[0] == '-' && p[1] == '-' && (p[2] == ' ' || p[2] == '\n' || !p[2])))
            break;
        if (strncmp(p, "krr.argv=", 9) == 0)
            hit = p + 9;
        while (*p && *p != ' ' && *p != '\n')
            p++;
    }
    if (!hit)
        return NULL;
    size_t n = b64decode(hit, decoded, sizeof decoded - 1);
    if (n == 0)
        return NULL;
    if (decoded[n - 1] != 0)
        decoded[n++] = 0; /* tolerate a missing final NUL */
    int argc = 0;
    for (size_t i = 0; i < n && argc < MAX_ARGS; i += strlen(decoded + i) + 1)
        args[argc++] = decoded + i;
    args[argc] = NULL;
    return args;
}

/* Counts the words after the first standalone `--` of /proc/cmdline, splitting like the kernel's
 * next_arg() (spaces inside double quotes do not split); -1 if there is no `--`. */
static int words_after_dashes(void)
{
    static char cmdline[4096];
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t len = read(fd, cmdline, sizeof cmdline - 1);
    close(fd);
    if (len <= 0)
        return -1;
    cmdline[len] = 0;
    int words = -1;
    char *p = cmdline;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        char *start = p;
        int in_quote = 0;
        for (; *p; p++) {
            if ((*p == ' ' || *p == '\t' || *p == '\n') && !in_quote)
                break;
            if (*p == '"')
                in_quote = !in_quote;
        }
        if (words >= 0)
            words++;
        else if (p - start == 2 && start[0] == '-' && start[1] == '-')
            words = 0;
    }
    return words;
}

int main(int argc, char **argv)
{
    /* stdin/stdout/stderr: the kernel opens /dev/console for init when the initramfs has it. */
    if (fcntl(1, F_GETFD) < 0) {
        int fd = open("/dev/console", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
            if (fd > 2)
                close(fd);
        }
    }

    do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    do_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    do_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    loopback_up();

    setenv("PATH", "/bin", 1);
    if (!getenv("HOME"))
        setenv("HOME", "/root", 1);
    (void)!chdir("/");

    char **cmd = argv_from_port();
    if (!cmd)
        cmd = argv_from_cmdline();
    /* The kernel passes init both the words after ` -- ` and, before them, every unknown
     * parameter without '=' that came before ` -- ` (e.g. `nokaslr` on a kernel without KASLR).
     * Keep only the last N, N being the number of words after the first ` -- `. */
    int after = words_after_dashes();
    if (after < 0)
        after = 0; /* no ` -- `: no command (the argv words are stray parameters) */
    if (after > argc - 1)
        after = argc - 1;
    argv += argc - 1 - after;
    argc = after + 1;
    /* busybox cttyhack opens the real console tty (ttyS0) as the controlling terminal, which
     * /dev/console cannot be, so that job control and Ctrl-C work in the shell. */
    static char *shell[] = {"/bin/cttyhack", "/bin/sh", NULL};
    int interactive = 0;
    if (!cmd && argc > 1)
        cmd = argv + 1;
    if (!cmd) {
        cmd = shell;
        interactive = 1;
        dprintf(2, "krr-init: no command given (krr.argv= or `-- CMD` on the kernel command line); "
                   "starting /bin/sh\n");
    }

    /* Block nothing; PID 1 ignores SIGINT etc. by default, the child gets default handlers. */
    pid_t child = fork();
    if (child < 0) {
        dprintf(2, "krr-init: fork failed: %s\n", strerror(errno));
        krr_exit_port(127);
    }
    if (child == 0) {
        if (interactive)
            setsid(); /* a session of its own, as a login shell would have */
        execvp(cmd[0], cmd);
        dprintf(2, "krr-init: cannot execute %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }

    int status = 0, code = 0;
    for (;;) {
        pid_t p = wait(&status);
        if (p < 0) {
            if (errno == EINTR)
                continue;
            code = 127; /* no children left: cannot happen while `child` lives */
            break;
        }
        if (p != child)
            continue; /* an orphan re-parented to init */
        if (WIFEXITED(status))
            code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
            code = 128 + WTERMSIG(status);
        break;
    }
    dprintf(2, "krr-init: exit status %d\n", code);
    krr_exit_port(code);
    return code;
}
