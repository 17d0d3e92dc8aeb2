/* panic: crashes the kernel on purpose via the magic SysRq trigger ('c': a NULL dereference in
 * sysrq_handle_crash, then panic "sysrq triggered crash"). Reaching the end is a failure. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("panic: writing 'c' to /proc/sysrq-trigger; the kernel should panic now\n");
    fflush(stdout);
    sync();
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0) {
        perror("panic: open /proc/sysrq-trigger");
        return 1;
    }
    if (write(fd, "c", 1) != 1)
        perror("panic: write /proc/sysrq-trigger");
    printf("panic: FAIL: the kernel is still running\n");
    return 1;
}
