/* Unit tests of the outbound network policy: CIDR lists and classification. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netpolicy.h"
#include "unit.h"

/* Classify a textual address under p; why gets the message. */
static int
classify(const EpNetPolicy *p, const char *addr, char *why, size_t len)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	why[0] = '\0';
	if (strchr(addr, ':'))
	{
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &ss;

		s6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1)
			return -1;
	}
	else
	{
		struct sockaddr_in *s4 = (struct sockaddr_in *) &ss;

		s4->sin_family = AF_INET;
		if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1)
			return -1;
	}
	return ep_netpolicy_check(p, (struct sockaddr *) &ss, why, len);
}

/* Whether parsing list fails with a message containing want. */
static int
refused(const char *list, const char *want)
{
	char		err[256];
	EpNetPolicy *p = ep_netpolicy_parse(list, err, sizeof(err));

	if (p)
	{
		free(p);
		return 0;
	}
	return strstr(err, want) != NULL;
}

/* Call the open-socket callback as curl would for an IPv4 address. */
static curl_socket_t
open_v4(EpNetGuard *g, const char *addr)
{
	struct
	{
		struct curl_sockaddr a;
		char		room[sizeof(struct sockaddr_in6)];
	}			buf;
	struct sockaddr_in s4;

	memset(&buf, 0, sizeof(buf));
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	inet_pton(AF_INET, addr, &s4.sin_addr);
	buf.a.family = AF_INET;
	buf.a.socktype = SOCK_STREAM;
	buf.a.protocol = 0;
	buf.a.addrlen = sizeof(s4);
	memcpy(&buf.a.addr, &s4, sizeof(s4));
	return ep_netpolicy_opensocket(g, CURLSOCKTYPE_IPCXN, &buf.a);
}

int
main(void)
{
	char		err[256];
	char		why[EP_NETPOLICY_ERROR_MAX];
	EpNetPolicy *p;
	EpNetPolicy *q;
	EpNetGuard	g;
	curl_socket_t s;
	char		big[4096];
	int			i;

	/* parsing */
	p = ep_netpolicy_parse("10.0.0.0/8, 127.0.0.0/8, ::1/128", err, sizeof(err));
	CHECK(p && p->ncidrs == 3 && strcmp(p->text, "10.0.0.0/8, 127.0.0.0/8, ::1/128") == 0,
		  "parse: IPv4 and IPv6 CIDRs, normalised text");
	free(p);
	p = ep_netpolicy_parse("", err, sizeof(err));
	CHECK(p && p->ncidrs == 0, "parse: empty text is the empty list");
	free(p);
	p = ep_netpolicy_parse(" \t ", err, sizeof(err));
	CHECK(p && p->ncidrs == 0, "parse: blank text is the empty list");
	free(p);
	p = ep_netpolicy_parse(NULL, err, sizeof(err));
	CHECK(p && p->ncidrs == 0, "parse: NULL is the empty list");
	free(p);
	p = ep_netpolicy_parse("192.168.1.7,2001:DB8::/32", err, sizeof(err));
	CHECK(p && p->ncidrs == 2 && p->cidrs[0].bits == 32 && p->cidrs[1].bits == 32 &&
		  strcmp(p->text, "192.168.1.7/32, 2001:db8::/32") == 0,
		  "parse: a bare address is one host; IPv6 lower-cased");
	free(p);
	p = ep_netpolicy_parse("::ffff:10.0.0.0/104", err, sizeof(err));
	CHECK(p && p->ncidrs == 1 && p->cidrs[0].family == AF_INET && p->cidrs[0].bits == 8,
		  "parse: an IPv4-mapped network is its IPv4 network");
	free(p);
	p = ep_netpolicy_parse("0.0.0.0/0", err, sizeof(err));
	CHECK(p && p->ncidrs == 1 && p->cidrs[0].bits == 0, "parse: /0 is accepted");
	free(p);
	CHECK(refused("10.0.0.0/33", "invalid prefix length (0 to 32)"), "parse: /33 refused");
	CHECK(refused("::/129", "invalid prefix length (0 to 128)"), "parse: /129 refused");
	CHECK(refused("10.0.0.0/", "invalid prefix length"), "parse: empty prefix refused");
	CHECK(refused("10.0.0.0/8x", "invalid prefix length"), "parse: junk after prefix refused");
	CHECK(refused("10.0.0.0/0008", "invalid prefix length"), "parse: over-long prefix refused");
	CHECK(refused("10.0.0.0/-8", "invalid prefix length"), "parse: negative prefix refused");
	CHECK(refused("10.0.0.300/8", "is not an IPv4 or IPv6 address"), "parse: bad octet refused");
	CHECK(refused("localhost", "is not an IPv4 or IPv6 address"), "parse: a name refused");
	CHECK(refused("0x7f000001", "is not an IPv4 or IPv6 address"), "parse: numeric forms refused");
	CHECK(refused("010.0.0.0/8", "is not an IPv4 or IPv6 address"), "parse: octal octet refused");
	CHECK(refused("fe80::1%eth0", "is not an IPv4 or IPv6 address"), "parse: zone id refused");
	CHECK(refused("/8", "is not an IPv4 or IPv6 address"), "parse: missing address refused");
	CHECK(refused("10.0.0.1/8", "bits set to the right of the mask (the network is 10.0.0.0/8)"),
		  "parse: host bits refused, network named");
	CHECK(refused("2001:db8::1/32", "(the network is 2001:db8::/32)"), "parse: IPv6 host bits refused");
	CHECK(refused("10.0.0.0/8,", "empty entry"), "parse: trailing comma refused");
	CHECK(refused("10.0.0.0/8,,::1", "empty entry"), "parse: empty entry refused");
	CHECK(refused(",", "empty entry"), "parse: lone comma refused");
	big[0] = '\0';
	for (i = 0; i < EP_NETPOLICY_MAX_CIDRS + 1; i++)
		strcat(big, i ? ",10.0.0.0/8" : "10.0.0.0/8");
	CHECK(refused(big, "more than 256 entries"), "parse: too many entries refused");

	/* always refused, no list */
	CHECK(classify(NULL, "169.254.169.254", why, sizeof(why)) == EP_NET_METADATA &&
		  strcmp(why, "refused: 169.254.169.254 is a cloud metadata address") == 0,
		  "no list: 169.254.169.254 is metadata, message");
	CHECK(classify(NULL, "169.254.0.1", why, sizeof(why)) == EP_NET_LINK_LOCAL &&
		  strcmp(why, "refused: 169.254.0.1 is a link-local address") == 0,
		  "no list: 169.254.0.1 is link-local, message");
	CHECK(classify(NULL, "169.254.255.255", why, sizeof(why)) == EP_NET_LINK_LOCAL,
		  "no list: 169.254.255.255 is link-local");
	CHECK(classify(NULL, "169.253.255.255", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(NULL, "169.255.0.0", why, sizeof(why)) == EP_NET_ALLOWED,
		  "no list: the neighbours of 169.254.0.0/16 are allowed");
	CHECK(classify(NULL, "fd00:ec2::254", why, sizeof(why)) == EP_NET_METADATA &&
		  strcmp(why, "refused: fd00:ec2::254 is a cloud metadata address") == 0,
		  "no list: fd00:ec2::254 is metadata");
	CHECK(classify(NULL, "fd00:ec2::253", why, sizeof(why)) == EP_NET_ALLOWED,
		  "no list: fd00:ec2::253 is allowed");
	CHECK(classify(NULL, "fe80::1", why, sizeof(why)) == EP_NET_LINK_LOCAL &&
		  classify(NULL, "febf:ffff::1", why, sizeof(why)) == EP_NET_LINK_LOCAL,
		  "no list: fe80::/10 is link-local");
	CHECK(classify(NULL, "fec0::1", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(NULL, "fe7f::1", why, sizeof(why)) == EP_NET_ALLOWED,
		  "no list: outside fe80::/10 is allowed");
	CHECK(classify(NULL, "::ffff:169.254.169.254", why, sizeof(why)) == EP_NET_METADATA &&
		  strcmp(why, "refused: ::ffff:169.254.169.254 is a cloud metadata address") == 0,
		  "no list: IPv4-mapped metadata refused, written as given");
	CHECK(classify(NULL, "::ffff:169.254.1.1", why, sizeof(why)) == EP_NET_LINK_LOCAL,
		  "no list: IPv4-mapped link-local refused");
	CHECK(classify(NULL, "::169.254.169.254", why, sizeof(why)) == EP_NET_METADATA,
		  "no list: IPv4-compatible metadata refused");
	CHECK(classify(NULL, "64:ff9b::169.254.169.254", why, sizeof(why)) == EP_NET_METADATA &&
		  classify(NULL, "64:ff9b::a9fe:0101", why, sizeof(why)) == EP_NET_LINK_LOCAL,
		  "no list: NAT64 forms refused");
	CHECK(classify(NULL, "127.0.0.1", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(NULL, "::1", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(NULL, "::", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(NULL, "10.1.2.3", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(NULL, "2001:db8::1", why, sizeof(why)) == EP_NET_ALLOWED,
		  "no list: ordinary addresses allowed");

	/* with a list */
	p = ep_netpolicy_parse("10.0.0.0/8", err, sizeof(err));
	CHECK(classify(p, "127.0.0.1", why, sizeof(why)) == EP_NET_OUTSIDE &&
		  strcmp(why, "refused by evpipe.destination_networks: 127.0.0.1 is not in 10.0.0.0/8") == 0,
		  "list: outside refused, message names the list");
	CHECK(classify(p, "10.255.255.255", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(p, "10.0.0.0", why, sizeof(why)) == EP_NET_ALLOWED,
		  "list: inside allowed");
	CHECK(classify(p, "11.0.0.0", why, sizeof(why)) == EP_NET_OUTSIDE &&
		  classify(p, "9.255.255.255", why, sizeof(why)) == EP_NET_OUTSIDE,
		  "list: neighbours refused");
	CHECK(classify(p, "::ffff:10.1.1.1", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(p, "::ffff:127.0.0.1", why, sizeof(why)) == EP_NET_OUTSIDE,
		  "list: IPv4-mapped addresses match IPv4 networks");
	CHECK(classify(p, "::1", why, sizeof(why)) == EP_NET_OUTSIDE &&
		  strstr(why, "::1 is not in 10.0.0.0/8"),
		  "list: IPv6 outside an IPv4-only list refused");
	free(p);
	p = ep_netpolicy_parse("169.254.0.0/16, fe80::/10, 0.0.0.0/0", err, sizeof(err));
	CHECK(classify(p, "169.254.169.254", why, sizeof(why)) == EP_NET_METADATA &&
		  classify(p, "169.254.3.4", why, sizeof(why)) == EP_NET_LINK_LOCAL &&
		  classify(p, "fe80::1", why, sizeof(why)) == EP_NET_LINK_LOCAL,
		  "list: listing link-local does not allow it");
	free(p);
	p = ep_netpolicy_parse("10.255.255.0/25, 2001:db8:1::/48", err, sizeof(err));
	CHECK(classify(p, "10.255.255.127", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(p, "10.255.255.128", why, sizeof(why)) == EP_NET_OUTSIDE,
		  "list: /25 boundary");
	CHECK(classify(p, "2001:db8:1:ffff::1", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(p, "2001:db8:2::1", why, sizeof(why)) == EP_NET_OUTSIDE &&
		  strstr(why, "is not in 10.255.255.0/25, 2001:db8:1::/48"),
		  "list: IPv6 /48 boundary, message lists both");
	free(p);
	big[0] = '\0';
	for (i = 0; i < 40; i++)
	{
		char		e[32];

		snprintf(e, sizeof(e), "%s10.%d.0.0/16", i ? ", " : "", i);
		strcat(big, e);
	}
	p = ep_netpolicy_parse(big, err, sizeof(err));
	CHECK(p && p->ncidrs == 40 && p->text[0] == '\0' &&
		  classify(p, "10.39.1.1", why, sizeof(why)) == EP_NET_ALLOWED &&
		  classify(p, "10.40.1.1", why, sizeof(why)) == EP_NET_OUTSIDE &&
		  strcmp(why, "refused by evpipe.destination_networks: 10.40.1.1 is not in any of its 40 networks") == 0,
		  "list: a long list is counted, not quoted");
	CHECK(classify(p, "10.40.1.1", why, 20) == EP_NET_OUTSIDE && strlen(why) == 19,
		  "list: the message is bounded by its buffer");
	free(p);

	/* the open-socket callback */
	memset(&g, 0, sizeof(g));
	ep_netpolicy_install(NULL);
	s = open_v4(&g, "169.254.169.254");
	CHECK(s == CURL_SOCKET_BAD && g.refused == 1 && g.last_refused &&
		  strcmp(g.error, "refused: 169.254.169.254 is a cloud metadata address") == 0,
		  "callback: metadata refused without a list, reason recorded");
	s = open_v4(&g, "127.0.0.1");
	CHECK(s != CURL_SOCKET_BAD && g.refused == 1 && !g.last_refused &&
		  strstr(g.error, "169.254.169.254"), "callback: loopback allowed; first reason kept");
	if (s != CURL_SOCKET_BAD)
		close(s);
	p = ep_netpolicy_parse("10.255.255.0/24", err, sizeof(err));
	CHECK(ep_netpolicy_fresh_connect() == 0 && ep_netpolicy_max_lifetime() == 0,
		  "reuse: no limit before the policy changes");
	ep_netpolicy_install(p);
	CHECK(ep_netpolicy_fresh_connect() == 1 && ep_netpolicy_max_lifetime() == 0,
		  "reuse: fresh connections right after a change");
	memset(&g, 0, sizeof(g));
	s = open_v4(&g, "127.0.0.1");
	CHECK(s == CURL_SOCKET_BAD && g.last_refused &&
		  strcmp(g.error, "refused by evpipe.destination_networks: 127.0.0.1 is not in 10.255.255.0/24") == 0,
		  "callback: the installed list applies");
	s = open_v4(NULL, "10.255.255.1");	/* a socket only: nothing is sent */
	CHECK(s != CURL_SOCKET_BAD, "callback: an address in the list gets a socket, no guard needed");
	if (s != CURL_SOCKET_BAD)
		close(s);
	q = ep_netpolicy_parse(" 10.255.255.0/24 ", err, sizeof(err));
	ep_netpolicy_install(q);	/* same list: no change */
	free(p);
	ep_netpolicy_install(NULL);
	free(q);

	return unit_done();
}
