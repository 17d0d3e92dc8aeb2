/* hello: the smallest workload; prints one line and exits 0. */
#include <stdio.h>
#include <sys/utsname.h>

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct utsname u;
    if (uname(&u) != 0)
        return 1;
    printf("hello from the krr guest (Linux %s %s)\n", u.release, u.machine);
    return 0;
}
