/*-------------------------------------------------------------------------
 *
 * netpolicy.h
 *	  Outbound network policy: which addresses a destination may connect
 *	  to. Link-local and cloud metadata addresses are always refused; an
 *	  optional list of CIDRs (evpipe.destination_networks) allows only the
 *	  addresses inside it. Checked in libcurl's open-socket callback, so
 *	  every connection (redirect targets and proxies too) is checked after
 *	  the name is resolved. No PostgreSQL dependency (unit-tested alone).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVPIPE_NETPOLICY_H
#define EVPIPE_NETPOLICY_H

#include <stddef.h>
#include <sys/socket.h>

#include <curl/curl.h>

#define EP_NETPOLICY_MAX_CIDRS 256
#define EP_NETPOLICY_ERROR_MAX 160

/* classification of an address */
#define EP_NET_ALLOWED 0
#define EP_NET_LINK_LOCAL 1		/* 169.254.0.0/16, fe80::/10 */
#define EP_NET_METADATA 2		/* 169.254.169.254, fd00:ec2::254 */
#define EP_NET_OUTSIDE 3		/* not in the configured list */

typedef struct EpCidr
{
	int			family;			/* AF_INET or AF_INET6 */
	int			bits;
	unsigned char addr[16];		/* network byte order, host bits zero */
} EpCidr;

/* A parsed list: one malloc'd chunk (it is a GUC's "extra"). */
typedef struct EpNetPolicy
{
	int			ncidrs;			/* 0: any address but the refused ones */
	char		text[EP_NETPOLICY_ERROR_MAX];	/* normalised list, or "" if
												 * too long to quote */
	EpCidr		cidrs[];
} EpNetPolicy;

/* What the open-socket callback saw for one request. */
typedef struct EpNetGuard
{
	int			refused;		/* sockets refused */
	int			last_refused;	/* the last socket asked for was refused */
	char		error[EP_NETPOLICY_ERROR_MAX];	/* why (the first refusal) */
} EpNetGuard;

/*
 * Parse a comma-separated list of CIDRs ("10.0.0.0/8, ::1/128"; a bare
 * address is a single host). Returns a malloc'd policy (free() it), or NULL
 * with a message in err. NULL or blank text is the empty list.
 */
extern EpNetPolicy *ep_netpolicy_parse(const char *list, char *err,
									   size_t errlen);

/*
 * Classify an address (AF_INET or AF_INET6; IPv4-mapped IPv6 counts as its
 * IPv4 address) under a policy (NULL: no list). Returns EP_NET_*; unless
 * allowed, writes why into why (if not NULL).
 */
extern int	ep_netpolicy_check(const EpNetPolicy *policy,
							   const struct sockaddr *sa, char *why,
							   size_t whylen);

/*
 * The policy the open-socket callback applies (NULL: no list). Installing
 * a policy that differs from the current one makes connections opened
 * before it unusable (see ep_netpolicy_fresh_connect).
 */
extern void ep_netpolicy_install(const EpNetPolicy *policy);

/* CURLOPT_OPENSOCKETFUNCTION; CURLOPT_OPENSOCKETDATA is an EpNetGuard. */
extern curl_socket_t ep_netpolicy_opensocket(void *clientp,
											 curlsocktype purpose,
											 struct curl_sockaddr *address);

/*
 * Connection reuse after a policy change: a request must not reuse a
 * connection opened under an older policy. ep_netpolicy_fresh_connect()
 * is 1 (CURLOPT_FRESH_CONNECT) shortly after a change; otherwise
 * ep_netpolicy_max_lifetime() is the CURLOPT_MAXLIFETIME_CONN that excludes
 * older connections (0: no limit, the policy never changed).
 */
extern long ep_netpolicy_fresh_connect(void);
extern long ep_netpolicy_max_lifetime(void);

#endif							/* EVPIPE_NETPOLICY_H */
