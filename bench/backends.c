/* The bench's real servers: one single-threaded epoll process serving every backend address.
 *
 *   backends --sink-port P --echo-port Q ADDRESS...
 *
 * On each ADDRESS it listens on two ports:
 *   sink  reads and discards everything; at the client's end of file it answers with the
 *         number of bytes it read (8 bytes, little endian) and closes, so the client can tell
 *         that no byte was lost on the way;
 *   echo  sends back everything it reads, and closes at the client's end of file.
 * A connect health check (connect, close) is served by either. It prints "ready" once every
 * socket listens, and runs until it is terminated. Written in C so that the backends are never
 * what limits a proxy: the bench's "direct" row proves it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum kind { LISTEN_SINK, LISTEN_ECHO, SINK, ECHO };

struct conn {
	int fd;
	enum kind kind;
	uint64_t count;  /* sink: bytes read */
	char *pending;   /* echo: bytes the socket did not take yet */
	size_t pending_len, pending_off;
};

static char buffer[256 * 1024];
static int epfd;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static struct conn *add(int fd, enum kind kind, uint32_t events)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		die("calloc");
	c->fd = fd;
	c->kind = kind;
	struct epoll_event ev = {.events = events, .data.ptr = c};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
	return c;
}

static void finish(struct conn *c)
{
	close(c->fd); /* also removes it from the epoll set */
	free(c->pending);
	free(c);
}

static void listen_on(const char *ip, int port, enum kind kind)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "backends: %s is not an IPv4 address\n", ip);
		exit(2);
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		fprintf(stderr, "backends: bind %s:%d: %s\n", ip, port, strerror(errno));
		exit(1);
	}
	if (listen(fd, 65535) < 0)
		die("listen");
	add(fd, kind, EPOLLIN);
}

static void accept_all(struct conn *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				perror("accept");
			return;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		add(fd, l->kind == LISTEN_SINK ? SINK : ECHO, EPOLLIN);
	}
}

static void sink(struct conn *c)
{
	for (int i = 0; i < 4; i++) {
		/* MSG_TRUNC: TCP discards the bytes without copying them, so a sink costs little. */
		ssize_t n = recv(c->fd, NULL, 1 << 30, MSG_TRUNC | MSG_DONTWAIT);
		if (n > 0) {
			c->count += (uint64_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n == 0) {
			uint64_t le = htole64(c->count);
			/* Eight bytes on a fresh socket buffer always fit. */
			(void)!send(c->fd, &le, sizeof le, MSG_NOSIGNAL);
		}
		finish(c);
		return;
	}
}

/* Write what is pending; return 0 when all of it went, 1 when the socket is full. */
static int flush(struct conn *c)
{
	while (c->pending_off < c->pending_len) {
		ssize_t n = send(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off,
				 MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN)
				return 1;
			if (errno == EINTR)
				continue;
			return -1;
		}
		c->pending_off += (size_t)n;
	}
	free(c->pending);
	c->pending = NULL;
	c->pending_len = c->pending_off = 0;
	return 0;
}

static void want(struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void echo_writable(struct conn *c)
{
	int r = flush(c);
	if (r < 0)
		finish(c);
	else if (r == 0)
		want(c, EPOLLIN); /* an end of file waits there until the echo went */
}

static void echo_readable(struct conn *c)
{
	ssize_t n = read(c->fd, buffer, sizeof buffer);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		finish(c);
		return;
	}
	ssize_t sent = send(c->fd, buffer, (size_t)n, MSG_NOSIGNAL);
	if (sent < 0 && errno != EAGAIN) {
		finish(c);
		return;
	}
	if (sent < 0)
		sent = 0;
	if (sent < n) {
		/* Stop reading until the peer takes the rest: flow control, as a proxy does. */
		c->pending_len = (size_t)(n - sent);
		c->pending = malloc(c->pending_len);
		if (!c->pending)
			die("malloc");
		memcpy(c->pending, buffer + sent, c->pending_len);
		want(c, EPOLLOUT);
	}
}

int main(int argc, char **argv)
{
	int sink_port = 0, echo_port = 0, first = 1;
	while (first + 1 < argc && argv[first][0] == '-') {
		if (!strcmp(argv[first], "--sink-port"))
			sink_port = atoi(argv[first + 1]);
		else if (!strcmp(argv[first], "--echo-port"))
			echo_port = atoi(argv[first + 1]);
		else
			break;
		first += 2;
	}
	if (!sink_port || !echo_port || first >= argc) {
		fprintf(stderr, "usage: backends --sink-port P --echo-port Q ADDRESS...\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	epfd = epoll_create1(0);
	if (epfd < 0)
		die("epoll_create1");
	for (int i = first; i < argc; i++) {
		listen_on(argv[i], sink_port, LISTEN_SINK);
		listen_on(argv[i], echo_port, LISTEN_ECHO);
	}
	printf("ready\n");
	fflush(stdout);

	struct epoll_event events[512];
	for (;;) {
		int n = epoll_wait(epfd, events, 512, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = events[i].data.ptr;
			switch (c->kind) {
			case LISTEN_SINK:
			case LISTEN_ECHO:
				accept_all(c);
				break;
			case SINK:
				sink(c);
				break;
			case ECHO:
				if (c->pending)
					echo_writable(c);
				else
					echo_readable(c);
				break;
			}
		}
	}
}
