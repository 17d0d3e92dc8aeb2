/* forkexec: a fork/exec/wait loop. Runs itself as a child with an exit code to return, busybox
 * `true` and `false`, a shell script (binfmt_script), and checks every status. */
#include "wl.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define ROUNDS 20

static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -2;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "child") == 0)
        return atoi(argv[2]); /* the exec'd child */
    wl_begin("forkexec");
    for (int i = 0; i < ROUNDS; i++) {
        char code[8];
        snprintf(code, sizeof code, "%d", i);
        char *args[] = {"/bin/forkexec", "child", code, NULL};
        int st = run(args);
        CHECK(st == i, "round %d: child exit status %d", i, st);
    }
    wl_step("%d fork/exec/wait rounds of /bin/forkexec", ROUNDS);
    char *t[] = {"/bin/true", NULL}, *f[] = {"/bin/false", NULL};
    CHECK(run(t) == 0, "/bin/true exits 0");
    CHECK(run(f) == 1, "/bin/false exits 1");

    int fd = open("/tmp/script.sh", O_CREAT | O_TRUNC | O_WRONLY, 0755);
    const char *script = "#!/bin/sh\necho \"forkexec: script says $1\"\nexit 42\n";
    CHECK(fd >= 0 && write(fd, script, strlen(script)) == (ssize_t)strlen(script), "write script");
    close(fd);
    char *s[] = {"/tmp/script.sh", "hi", NULL};
    CHECK(run(s) == 42, "#! script exits 42");
    unlink("/tmp/script.sh");

    char *missing[] = {"/bin/does-not-exist", NULL};
    CHECK(run(missing) == 127, "exec of a missing file fails");

    /* A grandchild that outlives its parent is re-parented (to init) and reaped there. */
    pid_t pid = fork();
    if (pid == 0) {
        if (fork() == 0) {
            usleep(1000);
            _exit(0);
        }
        _exit(5);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 5, "orphaning child");

    pid = vfork();
    if (pid == 0)
        _exit(9);
    CHECK(waitpid(pid, &status, 0) == pid && WEXITSTATUS(status) == 9, "vfork");
    wl_step("true/false, #! script, ENOENT, orphan and vfork ok");
    return wl_end();
}
