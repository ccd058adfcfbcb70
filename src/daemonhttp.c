/*-------------------------------------------------------------------------
 *
 * daemonhttp.c
 *	  evpiped's --metrics-addr: GET /metrics (Prometheus text) and GET
 *	  /healthz (200 while connected and looping, 503 otherwise), served
 *	  from the daemon's own poll loop. Non-blocking sockets; a client gets
 *	  one answer and the connection is closed; slow or oversized requests
 *	  are dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "daemonhttp.h"

#define MAX_CLIENTS 16
#define REQUEST_MAX 4096
#define CLIENT_TIMEOUT_US (5 * USECS_PER_SEC)

/* A client connection: what it sent so far. */
typedef struct HttpClient
{
	int			fd;
	TimestampTz since;
	size_t		len;
	char		buf[REQUEST_MAX];
} HttpClient;

static int	listen_fd = -1;
static HttpClient clients[MAX_CLIENTS];
static int	nclients = 0;

/* Make a socket non-blocking. */
static bool
set_nonblocking(int fd)
{
	int			flags = fcntl(fd, F_GETFL, 0);

	return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

/*
 * Listen on HOST:PORT (a name, an IPv4 address, or [v6]:port). False with
 * *err set if it cannot.
 */
bool
ep_http_listen(const char *addr, char *err, size_t errlen)
{
	char		host[256];
	const char *colon = strrchr(addr, ':');
	const char *port;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	int			rc;
	int			one = 1;

	if (colon == NULL || colon == addr || colon[1] == '\0' ||
		(size_t) (colon - addr) >= sizeof(host))
	{
		snprintf(err, errlen, "--metrics-addr must be HOST:PORT, not \"%s\"", addr);
		return false;
	}
	memcpy(host, addr, colon - addr);
	host[colon - addr] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']')
	{
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	port = colon + 1;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || res == NULL)
	{
		snprintf(err, errlen, "--metrics-addr %s: %s", addr, gai_strerror(rc));
		return false;
	}
	listen_fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
	if (listen_fd < 0 ||
		setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		bind(listen_fd, res->ai_addr, res->ai_addrlen) != 0 ||
		listen(listen_fd, 16) != 0 || !set_nonblocking(listen_fd))
	{
		snprintf(err, errlen, "--metrics-addr %s: %m", addr);
		if (listen_fd >= 0)
			close(listen_fd);
		listen_fd = -1;
		freeaddrinfo(res);
		return false;
	}
	freeaddrinfo(res);
	return true;
}

/* Add the listening socket and the clients to a poll set; how many. */
int
ep_http_pollfds(struct pollfd *fds, int max)
{
	int			n = 0;
	int			i;

	if (listen_fd < 0 || max < 1)
		return 0;
	fds[n].fd = listen_fd;
	fds[n].events = POLLIN;
	fds[n++].revents = 0;
	for (i = 0; i < nclients && n < max; i++)
	{
		fds[n].fd = clients[i].fd;
		fds[n].events = POLLIN;
		fds[n++].revents = 0;
	}
	return n;
}

/* Drop client i. */
static void
drop_client(int i)
{
	close(clients[i].fd);
	clients[i] = clients[--nclients];
}

/* Write all of an answer (small: the socket's buffer takes it). */
static void
respond(int fd, int status, const char *reason, const char *ctype, const char *body)
{
	StringInfoData out;
	size_t		off = 0;

	initStringInfo(&out);
	appendStringInfo(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
					 "Connection: close\r\n\r\n%s",
					 status, reason, ctype, strlen(body), body);
	/* blocking for the write: the answer is written whole or not at all */
	(void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK);
	while (off < (size_t) out.len)
	{
		ssize_t		w = send(fd, out.data + off, out.len - off, MSG_NOSIGNAL);

		if (w <= 0)
			break;
		off += w;
	}
	pfree(out.data);
}

/* Answer a complete request. */
static void
answer(HttpClient *c, const EpHttpHandlers *h)
{
	bool		get = strncmp(c->buf, "GET ", 4) == 0;
	char	   *path = c->buf + 4;
	char	   *end = strchr(path, ' ');

	if (!get || end == NULL)
	{
		respond(c->fd, 405, "Method Not Allowed", "text/plain", "only GET\n");
		return;
	}
	*end = '\0';
	if (strcmp(path, "/metrics") == 0)
	{
		StringInfoData body;

		initStringInfo(&body);
		h->metrics(&body);
		respond(c->fd, 200, "OK", "text/plain; version=0.0.4", body.data);
		pfree(body.data);
	}
	else if (strcmp(path, "/healthz") == 0)
	{
		if (h->healthy())
			respond(c->fd, 200, "OK", "text/plain", "ok\n");
		else
			respond(c->fd, 503, "Service Unavailable", "text/plain", "not connected\n");
	}
	else
		respond(c->fd, 404, "Not Found", "text/plain", "not found: try /metrics or /healthz\n");
}

/* After poll: accept new clients, read requests, answer complete ones. */
void
ep_http_handle(const struct pollfd *fds, int n, const EpHttpHandlers *h)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;
	int			k;

	if (listen_fd < 0)
		return;
	for (k = 1; k < n; k++)
	{
		if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		for (i = 0; i < nclients; i++)
			if (clients[i].fd == fds[k].fd)
			{
				HttpClient *c = &clients[i];
				ssize_t		r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);

				if (r <= 0)
				{
					if (r < 0 && (errno == EAGAIN || errno == EINTR))
						break;
					drop_client(i);
					break;
				}
				c->len += r;
				c->buf[c->len] = '\0';
				if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n"))
				{
					answer(c, h);
					drop_client(i);
				}
				else if (c->len >= sizeof(c->buf) - 1)
					drop_client(i);
				break;
			}
	}
	/* clients too slow to send a request */
	for (i = nclients - 1; i >= 0; i--)
		if (now - clients[i].since > CLIENT_TIMEOUT_US)
			drop_client(i);
	if (n > 0 && (fds[0].revents & POLLIN))
	{
		for (;;)
		{
			int			fd = accept(listen_fd, NULL, NULL);

			if (fd < 0)
				break;
			if (nclients >= MAX_CLIENTS || !set_nonblocking(fd))
			{
				close(fd);
				continue;
			}
			clients[nclients].fd = fd;
			clients[nclients].since = now;
			clients[nclients].len = 0;
			nclients++;
		}
	}
}
