/*-------------------------------------------------------------------------
 *
 * netpolicy.c
 *	  Outbound network policy (see netpolicy.h): parsing the CIDR list,
 *	  classifying an address, and libcurl's open-socket callback, which
 *	  checks every address curl is about to connect to (after DNS, so a name
 *	  that resolves somewhere else on its next lookup cannot pass).
 *
 *	  Always refused: link-local 169.254.0.0/16 and fe80::/10, the cloud
 *	  metadata addresses 169.254.169.254 and fd00:ec2::254, and the same
 *	  IPv4 addresses embedded in IPv6 (IPv4-mapped ::ffff:0:0/96,
 *	  IPv4-compatible ::/96, NAT64 64:ff9b::/96).
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "netpolicy.h"

static const EpNetPolicy *current_policy = NULL;
static int	policy_changed = 0;
static struct timespec policy_changed_at;

static const unsigned char v4mapped_prefix[12] =
{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
static const unsigned char nat64_prefix[12] =
{0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
static const unsigned char zero12[12];
static const unsigned char metadata_v4[4] = {169, 254, 169, 254};
static const unsigned char metadata_v6[16] =
{0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};

/* Whether the first bits of a and b are equal. */
static int
prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
	int			whole = bits / 8;
	int			rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[whole] ^ b[whole]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* Format a CIDR as text. */
static void
cidr_text(const EpCidr *c, char *buf, size_t len)
{
	char		a[INET6_ADDRSTRLEN];

	if (inet_ntop(c->family, c->addr, a, sizeof(a)) == NULL)
		strcpy(a, "?");
	snprintf(buf, len, "%s/%d", a, c->bits);
}

/* Parse one trimmed entry into *c; 0, or -1 with a message in err. */
static int
parse_cidr(const char *entry, EpCidr *c, char *err, size_t errlen)
{
	char		addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(entry, '/');
	size_t		alen = slash ? (size_t) (slash - entry) : strlen(entry);
	int			max;
	int			i;

	memset(c, 0, sizeof(*c));
	if (alen == 0 || alen >= sizeof(addr))
	{
		snprintf(err, errlen, "\"%s\" is not an IPv4 or IPv6 address", entry);
		return -1;
	}
	memcpy(addr, entry, alen);
	addr[alen] = '\0';
	c->family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(c->family, addr, c->addr) != 1)
	{
		snprintf(err, errlen, "\"%s\" is not an IPv4 or IPv6 address", entry);
		return -1;
	}
	max = c->family == AF_INET ? 32 : 128;
	if (slash == NULL)
		c->bits = max;
	else
	{
		const char *p = slash + 1;

		c->bits = 0;
		for (i = 0; p[i]; i++)
		{
			if (!isdigit((unsigned char) p[i]) || i >= 3)
				break;
			c->bits = c->bits * 10 + (p[i] - '0');
		}
		if (i == 0 || p[i] != '\0' || c->bits > max)
		{
			snprintf(err, errlen,
					 "\"%s\" has an invalid prefix length (0 to %d)", entry, max);
			return -1;
		}
	}
	for (i = c->bits; i < max; i++)
	{
		if (c->addr[i / 8] & (0x80 >> (i % 8)))
		{
			EpCidr		net = *c;
			char		text[INET6_ADDRSTRLEN + 8];

			for (i = c->bits; i < max; i++)
				net.addr[i / 8] &= (unsigned char) ~(0x80 >> (i % 8));
			cidr_text(&net, text, sizeof(text));
			snprintf(err, errlen,
					 "\"%s\" has bits set to the right of the mask (the network is %s)",
					 entry, text);
			return -1;
		}
	}
	/* ::ffff:a.b.c.d/n, n >= 96, is the IPv4 network a.b.c.d/(n - 96) */
	if (c->family == AF_INET6 && c->bits >= 96 &&
		memcmp(c->addr, v4mapped_prefix, 12) == 0)
	{
		memmove(c->addr, c->addr + 12, 4);
		memset(c->addr + 4, 0, 12);
		c->family = AF_INET;
		c->bits -= 96;
	}
	return 0;
}

/* Parse a comma-separated list of CIDRs (see netpolicy.h). */
EpNetPolicy *
ep_netpolicy_parse(const char *list, char *err, size_t errlen)
{
	EpNetPolicy *p;
	const char *s = list ? list : "";
	int			n = 1;
	size_t		used = 0;
	const char *q;

	err[0] = '\0';
	for (q = s; *q; q++)
		if (*q == ',')
			n++;
	if (n > EP_NETPOLICY_MAX_CIDRS)
	{
		snprintf(err, errlen, "The list has more than %d entries",
				 EP_NETPOLICY_MAX_CIDRS);
		return NULL;
	}
	p = calloc(1, sizeof(EpNetPolicy) + n * sizeof(EpCidr));
	if (p == NULL)
	{
		snprintf(err, errlen, "Out of memory");
		return NULL;
	}
	for (q = s; isspace((unsigned char) *q); q++)
		;
	if (*q == '\0')
		return p;				/* blank text is the empty list */
	for (;;)
	{
		char		entry[128];
		const char *end = strchr(s, ',');
		size_t		len = end ? (size_t) (end - s) : strlen(s);
		const char *b = s;
		char		text[INET6_ADDRSTRLEN + 8];
		int			k;

		/* trim */
		while (len > 0 && isspace((unsigned char) *b))
			b++, len--;
		while (len > 0 && isspace((unsigned char) b[len - 1]))
			len--;
		if (len == 0)
		{
			snprintf(err, errlen, "The list has an empty entry");
			free(p);
			return NULL;
		}
		if (len >= sizeof(entry))
			len = sizeof(entry) - 1;
		memcpy(entry, b, len);
		entry[len] = '\0';
		if (parse_cidr(entry, &p->cidrs[p->ncidrs], err, errlen) != 0)
		{
			free(p);
			return NULL;
		}
		cidr_text(&p->cidrs[p->ncidrs], text, sizeof(text));
		k = snprintf(p->text + used, sizeof(p->text) - used, "%s%s",
					 p->ncidrs ? ", " : "", text);
		used = (k < 0 || (size_t) k >= sizeof(p->text) - used) ?
			sizeof(p->text) : used + k;
		p->ncidrs++;
		if (end == NULL)
			break;
		s = end + 1;
	}
	if (used >= sizeof(p->text))
		p->text[0] = '\0';		/* too long to quote in a message */
	return p;
}

/* Whether an IPv4 address is always refused; EP_NET_*. */
static int
check_v4_always(const unsigned char *a)
{
	if (memcmp(a, metadata_v4, 4) == 0)
		return EP_NET_METADATA;
	if (a[0] == 169 && a[1] == 254)
		return EP_NET_LINK_LOCAL;
	return EP_NET_ALLOWED;
}

/* Classify an address under a policy (see netpolicy.h). */
int
ep_netpolicy_check(const EpNetPolicy *policy, const struct sockaddr *sa,
				   char *why, size_t whylen)
{
	char		text[INET6_ADDRSTRLEN];
	const unsigned char *a;
	int			family;
	int			verdict = EP_NET_ALLOWED;
	int			i;

	if (sa->sa_family == AF_INET)
	{
		a = (const unsigned char *) &((const struct sockaddr_in *) sa)->sin_addr;
		family = AF_INET;
		verdict = check_v4_always(a);
	}
	else if (sa->sa_family == AF_INET6)
	{
		a = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
		family = AF_INET6;
		if (memcmp(a, v4mapped_prefix, 12) == 0)
		{
			/* connecting to ::ffff:a.b.c.d reaches a.b.c.d */
			a += 12;
			family = AF_INET;
			verdict = check_v4_always(a);
		}
		else if (memcmp(a, metadata_v6, 16) == 0)
			verdict = EP_NET_METADATA;
		else if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
			verdict = EP_NET_LINK_LOCAL;
		else if (memcmp(a, nat64_prefix, 12) == 0 ||
				 (memcmp(a, zero12, 12) == 0 && (a[12] | a[13]) != 0))
			verdict = check_v4_always(a + 12);
	}
	else
	{
		/* not an IP address: only a list can refuse it */
		if (policy == NULL || policy->ncidrs == 0)
			return EP_NET_ALLOWED;
		if (why)
			snprintf(why, whylen,
					 "refused by evpipe.destination_networks: address family %d is not IPv4 or IPv6",
					 (int) sa->sa_family);
		return EP_NET_OUTSIDE;
	}

	if (inet_ntop(sa->sa_family, sa->sa_family == AF_INET ?
				  (const void *) &((const struct sockaddr_in *) sa)->sin_addr :
				  (const void *) &((const struct sockaddr_in6 *) sa)->sin6_addr,
				  text, sizeof(text)) == NULL)
		strcpy(text, "?");
	if (verdict != EP_NET_ALLOWED)
	{
		if (why)
			snprintf(why, whylen, "refused: %s is a %s address", text,
					 verdict == EP_NET_METADATA ? "cloud metadata" : "link-local");
		return verdict;
	}
	if (policy == NULL || policy->ncidrs == 0)
		return EP_NET_ALLOWED;
	for (i = 0; i < policy->ncidrs; i++)
	{
		const EpCidr *c = &policy->cidrs[i];

		if (c->family == family && prefix_match(a, c->addr, c->bits))
			return EP_NET_ALLOWED;
	}
	if (why)
	{
		int			k = -1;

		if (policy->text[0])
			k = snprintf(why, whylen,
						 "refused by evpipe.destination_networks: %s is not in %s",
						 text, policy->text);
		if (k < 0 || (size_t) k >= whylen)
			snprintf(why, whylen,
					 "refused by evpipe.destination_networks: %s is not in any of its %d networks",
					 text, policy->ncidrs);
	}
	return EP_NET_OUTSIDE;
}

/* Whether two policies allow the same addresses (as written). */
static int
same_policy(const EpNetPolicy *a, const EpNetPolicy *b)
{
	int			na = a ? a->ncidrs : 0;
	int			nb = b ? b->ncidrs : 0;
	int			i;

	if (na != nb)
		return 0;
	for (i = 0; i < na; i++)
		if (a->cidrs[i].family != b->cidrs[i].family ||
			a->cidrs[i].bits != b->cidrs[i].bits ||
			memcmp(a->cidrs[i].addr, b->cidrs[i].addr, 16) != 0)
			return 0;
	return 1;
}

/* Make a policy the one the open-socket callback applies. */
void
ep_netpolicy_install(const EpNetPolicy *policy)
{
	if (!same_policy(current_policy, policy))
	{
		policy_changed = 1;
		clock_gettime(CLOCK_MONOTONIC, &policy_changed_at);
	}
	current_policy = policy;
}

/* Seconds since the policy last changed, or -1 if it never did. */
static double
seconds_since_change(void)
{
	struct timespec now;

	if (!policy_changed)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) (now.tv_sec - policy_changed_at.tv_sec) +
		(now.tv_nsec - policy_changed_at.tv_nsec) / 1e9;
}

/* CURLOPT_FRESH_CONNECT: 1 within 2 s of a policy change. */
long
ep_netpolicy_fresh_connect(void)
{
	double		s = seconds_since_change();

	return s >= 0 && s < 2 ? 1L : 0L;
}

/*
 * CURLOPT_MAXLIFETIME_CONN that excludes connections opened before the
 * last change: curl drops a connection whose age in whole seconds exceeds
 * it, so one second less than the time since the change. 0 (no limit) if
 * the policy never changed, or within 2 s of a change (then
 * ep_netpolicy_fresh_connect() is 1).
 */
long
ep_netpolicy_max_lifetime(void)
{
	double		s = seconds_since_change();

	if (s < 2)
		return 0L;
	return (long) s - 1;
}

/* CURLOPT_OPENSOCKETFUNCTION: open the socket only if the policy allows. */
curl_socket_t
ep_netpolicy_opensocket(void *clientp, curlsocktype purpose,
						struct curl_sockaddr *address)
{
	EpNetGuard *guard = clientp;
	struct sockaddr_storage ss;
	size_t		len = address->addrlen;
	char		why[EP_NETPOLICY_ERROR_MAX];

	(void) purpose;				/* every kind of socket is checked */
	memset(&ss, 0, sizeof(ss));
	if (len > sizeof(ss))
		len = sizeof(ss);
	memcpy(&ss, &address->addr, len);
	if ((ss.ss_family == AF_INET && len < sizeof(struct sockaddr_in)) ||
		(ss.ss_family == AF_INET6 && len < sizeof(struct sockaddr_in6)))
	{
		snprintf(why, sizeof(why), "refused: the address to connect to is truncated");
	}
	else if (ep_netpolicy_check(current_policy, (struct sockaddr *) &ss,
								why, sizeof(why)) == EP_NET_ALLOWED)
	{
		if (guard)
			guard->last_refused = 0;
		return socket(address->family, address->socktype, address->protocol);
	}
	if (guard)
	{
		if (guard->refused++ == 0)
			snprintf(guard->error, sizeof(guard->error), "%s", why);
		guard->last_refused = 1;
	}
	return CURL_SOCKET_BAD;
}
