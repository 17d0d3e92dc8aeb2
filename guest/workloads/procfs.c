/* procfs: reads /proc/self/{status,maps,cmdline,stat}, /proc/{cpuinfo,meminfo,uptime,cmdline,
 * version,interrupts,filesystems} and /sys, checking a few fields. */
#include "wl.h"

static char buf[65536];

static ssize_t slurp(const char *path)
{
    return wl_slurp(path, buf, sizeof buf);
}

static long field(const char *key)
{
    char *p = strstr(buf, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

int main(int argc, char **argv)
{
    (void)argc;
    wl_begin("procfs");
    CHECK(slurp("/proc/self/status") > 0 && strstr(buf, "Name:\tprocfs"), "/proc/self/status Name");
    CHECK(field("Pid:\t") == getpid(), "/proc/self/status Pid");
    CHECK(slurp("/proc/self/maps") > 0 && strstr(buf, "[stack]"), "/proc/self/maps has [stack]");
    int maps = 0;
    for (char *p = buf; (p = strchr(p, '\n')); p++)
        maps++;
    wl_step("/proc/self/maps: %d mappings", maps);
    ssize_t n = slurp("/proc/self/cmdline");
    CHECK(n > 0 && strcmp(buf, argv[0]) == 0, "/proc/self/cmdline = argv[0] '%s'", buf);
    CHECK(slurp("/proc/self/stat") > 0 && strtol(buf, NULL, 10) == getpid(), "/proc/self/stat pid");

    CHECK(slurp("/proc/cpuinfo") > 0 && strstr(buf, "processor"), "/proc/cpuinfo");
    int cpus = 0;
    for (char *p = buf; (p = strstr(p, "processor\t")); p++)
        cpus++;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(cpus >= 1 && cpus == online, "cpuinfo lists %d CPUs, %ld online", cpus, online);
    wl_step("/proc/cpuinfo: %d CPU(s)", cpus);
    CHECK(slurp("/proc/meminfo") > 0 && field("MemTotal:") > 0, "/proc/meminfo MemTotal");
    wl_step("/proc/meminfo: MemTotal %ld kB, MemFree %ld kB", field("MemTotal:"), field("MemFree:"));
    CHECK(slurp("/proc/uptime") > 0 && strchr(buf, '.'), "/proc/uptime");
    CHECK(slurp("/proc/version") > 0 && strncmp(buf, "Linux version 6.1", 17) == 0, "/proc/version: %.40s", buf);
    CHECK(slurp("/proc/cmdline") > 0, "/proc/cmdline");
    wl_step("/proc/cmdline: %s", strtok(buf, "\n"));
    CHECK(slurp("/proc/filesystems") > 0 && strstr(buf, "tmpfs") && strstr(buf, "proc"), "/proc/filesystems");
    CHECK(slurp("/proc/interrupts") > 0 && strstr(buf, "CPU0"), "/proc/interrupts");
    CHECK(slurp("/proc/self/mounts") > 0 && strstr(buf, "/tmp tmpfs"), "/proc/self/mounts has /tmp tmpfs");
    CHECK(slurp("/sys/kernel/uevent_seqnum") >= 0, "/sys readable");
    CHECK(slurp("/proc/does-not-exist") < 0 && errno == ENOENT, "missing /proc file gives ENOENT");
    return wl_end();
}
