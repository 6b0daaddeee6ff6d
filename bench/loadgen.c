/* The bench's load generator: one single-threaded epoll process, so that it is never what
 * limits a proxy (the bench's "direct" row, the generator straight to a backend, proves it).
 *
 *   loadgen bulk    TARGET --streams N --duration S
 *       N connections to a sink backend each write as fast as they can for S seconds, then
 *       half-close; the sink answers with the bytes it read, which must be every byte sent.
 *   loadgen connect TARGET --concurrency N --duration S [--size B]
 *       N connections at a time, each: connect, send B bytes, read their echo, close; then the
 *       next. Every connection's time, connect to the last byte of the echo, is recorded.
 *   loadgen idle    TARGET --conns N [--interval S] [--size B]
 *       N connections each send B bytes every S seconds and read their echo. Prints
 *       {"event": "ready"} once all are open; then on standard input "mark" prints the
 *       messages echoed so far and "stop" waits for the last echoes, closes and reports.
 *
 * TARGET is IP:PORT. Connections come from --sources N loopback addresses counted from
 * --source A.B.C.D (skipping .0 and .255), so that neither ephemeral ports nor a persistence
 * table see one client only. Every echo is compared byte for byte. Results are JSON lines.
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
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_EVENTS 1024
#define CHUNK (256 * 1024)
#define SOURCE_SIZE (16 * CHUNK)
#define OPENING 256 /* idle: connections being opened at once */

static struct sockaddr_in target;
static uint32_t source_base; /* host order */
static int sources = 256;
static double timeout = 10.0; /* one connection's longest wait before it counts as failed */
static int epfd;
static char chunk[CHUNK];

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* The i-th source address, counted from --source and skipping .0 and .255. */
static struct sockaddr_in source_address(uint32_t i)
{
	uint32_t usable = i % (uint32_t)sources, a = source_base;
	for (;;) {
		uint32_t low = a & 0xff;
		if (low != 0 && low != 255) {
			if (usable == 0)
				break;
			usable--;
		}
		a++;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(a)};
	return sa;
}

/* A non-blocking connection from source i to the target, registered for EPOLLOUT. */
static int open_connection(uint32_t i, void *owner)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	/* The port is chosen at connect(), where the kernel may reuse a loopback TIME_WAIT. */
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct sockaddr_in sa = source_address(i);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("bind source address");
	if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = owner};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
	return fd;
}

static int connected(int fd)
{
	int error = 0;
	socklen_t len = sizeof error;
	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
}

static void want(int fd, void *owner, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = owner};
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		die("epoll_ctl");
}

/* Byte j of message `seq` on connection `id`: every echo is checked against it. */
static inline uint8_t pattern(uint32_t id, uint32_t seq, uint32_t j)
{
	return (uint8_t)(id * 131u + seq * 31u + j * 7u + 1u);
}

static void fill(char *out, uint32_t id, uint32_t seq, int size)
{
	for (int j = 0; j < size; j++)
		out[j] = (char)pattern(id, seq, (uint32_t)j);
}

/* --- bulk ------------------------------------------------------------------------------- */

enum { CONNECTING, SENDING, WAITING, DONE, FAILED };

struct stream {
	int fd, state;
	uint64_t sent, counted;
	uint8_t count[8];
	int count_len;
};

static void stream_stop(struct stream *s)
{
	shutdown(s->fd, SHUT_WR);
	s->state = WAITING;
	want(s->fd, s, EPOLLIN);
}

static void stream_fail(struct stream *s)
{
	close(s->fd);
	s->state = FAILED;
}

/* The bytes a stream sends: pages of a memory file that sendfile() hands to TCP as they are,
 * without copying them, so the sender costs little. */
static int source_file(void)
{
	int fd = memfd_create("bulk", 0);
	if (fd < 0)
		die("memfd_create");
	memset(chunk, 'x', sizeof chunk);
	for (int i = 0; i < SOURCE_SIZE / CHUNK; i++)
		if (write(fd, chunk, sizeof chunk) != sizeof chunk)
			die("write");
	return fd;
}

static int bulk(int streams, double duration)
{
	struct stream *all = calloc((size_t)streams, sizeof *all);
	int source = source_file();
	double start = now(), end = start + duration, last = start;
	for (int i = 0; i < streams; i++) {
		all[i].fd = open_connection((uint32_t)i, &all[i]);
		all[i].state = all[i].fd < 0 ? FAILED : CONNECTING;
	}
	int stopping = 0, left = streams;
	for (int i = 0; i < streams; i++)
		left -= all[i].state == FAILED;
	struct epoll_event events[MAX_EVENTS];
	while (left > 0) {
		int n = epoll_wait(epfd, events, MAX_EVENTS, 20);
		double t = now();
		if (!stopping && t >= end) {
			stopping = 1;
			for (int i = 0; i < streams; i++)
				if (all[i].state == SENDING)
					stream_stop(&all[i]);
		}
		if (t > end + 60.0)
			break; /* what is left failed */
		for (int e = 0; e < n; e++) {
			struct stream *s = events[e].data.ptr;
			if (s->state == CONNECTING) {
				if (!connected(s->fd)) {
					stream_fail(s);
					left--;
				} else if (stopping) {
					stream_stop(s);
				} else {
					s->state = SENDING;
				}
			} else if (s->state == SENDING) {
				off_t offset = (off_t)(s->sent % SOURCE_SIZE);
				ssize_t w = sendfile(s->fd, source, &offset, CHUNK);
				if (w > 0)
					s->sent += (uint64_t)w;
				else if (errno != EAGAIN && errno != EINTR) {
					stream_fail(s);
					left--;
				}
			} else if (s->state == WAITING) {
				ssize_t r = read(s->fd, s->count + s->count_len, 8 - (size_t)s->count_len);
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				if (r <= 0) {
					stream_fail(s);
					left--;
					continue;
				}
				s->count_len += (int)r;
				if (s->count_len == 8) {
					uint64_t le;
					memcpy(&le, s->count, 8);
					s->counted = le64toh(le);
					s->state = DONE;
					close(s->fd);
					last = t;
					left--;
				}
			}
		}
	}
	uint64_t sent = 0, received = 0, lost = 0;
	int failed = 0;
	for (int i = 0; i < streams; i++) {
		if (all[i].state != DONE) {
			failed++;
			continue;
		}
		sent += all[i].sent;
		received += all[i].counted;
		lost += all[i].sent > all[i].counted ? all[i].sent - all[i].counted : 0;
	}
	printf("{\"event\": \"done\", \"mode\": \"bulk\", \"streams\": %d, \"sent\": %llu, "
	       "\"received\": %llu, \"lost\": %llu, \"failed\": %d, \"seconds\": %.6f}\n",
	       streams, (unsigned long long)sent, (unsigned long long)received,
	       (unsigned long long)lost, failed, last - start);
	return 0;
}

/* --- connect ---------------------------------------------------------------------------- */

struct slot {
	int fd, state, received;
	uint32_t id;
	double started;
};

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double p)
{
	if (n == 0)
		return 0.0;
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return sorted[i < n ? i : n - 1];
}

static int connect_rate(int concurrency, double duration, int size)
{
	struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
	size_t capacity = 1 << 16, samples = 0;
	double *latency = malloc(capacity * sizeof *latency);
	uint32_t next = 0;
	uint64_t completed = 0, counted = 0, failed = 0, mismatched = 0;
	char message[4096], got[4096];
	double start = now(), end = start + duration;
	int busy = 0;

	for (int i = 0; i < concurrency; i++)
		slots[i].state = DONE;
	struct epoll_event events[MAX_EVENTS];
	for (;;) {
		double t = now();
		for (int i = 0; i < concurrency; i++) {
			struct slot *s = &slots[i];
			if (s->state != DONE && t - s->started > timeout) {
				close(s->fd);
				failed++;
				s->state = DONE;
				busy--;
			}
			if (s->state == DONE && t < end) {
				s->id = next++;
				s->started = now();
				s->received = 0;
				s->fd = open_connection(s->id, s);
				if (s->fd < 0) {
					failed++; /* refused at once: this slot tries again next turn */
					continue;
				}
				s->state = CONNECTING;
				busy++;
			}
		}
		if (busy == 0 && t >= end)
			break;
		int n = epoll_wait(epfd, events, MAX_EVENTS, 20);
		for (int e = 0; e < n; e++) {
			struct slot *s = events[e].data.ptr;
			int ok = 1;
			if (s->state == CONNECTING) {
				fill(message, s->id, 0, size);
				ok = connected(s->fd) &&
				     send(s->fd, message, (size_t)size, MSG_NOSIGNAL) == size;
				if (ok) {
					s->state = SENDING;
					want(s->fd, s, EPOLLIN);
				}
			} else if (s->state == SENDING) {
				ssize_t r = read(s->fd, got, (size_t)(size - s->received));
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				ok = r > 0;
				for (ssize_t j = 0; ok && j < r; j++)
					if ((uint8_t)got[j] != pattern(s->id, 0, (uint32_t)(s->received + j))) {
						mismatched++;
						ok = 0;
					}
				if (ok) {
					s->received += (int)r;
					if (s->received == size) {
						double done = now();
						close(s->fd);
						s->state = DONE;
						busy--;
						completed++;
						if (done <= end)
							counted++;
						if (samples == capacity) {
							capacity *= 2;
							latency = realloc(latency, capacity * sizeof *latency);
						}
						latency[samples++] = done - s->started;
					}
				}
			}
			if (!ok) {
				close(s->fd);
				s->state = DONE;
				busy--;
				failed++;
			}
		}
	}
	qsort(latency, samples, sizeof *latency, compare_double);
	printf("{\"event\": \"done\", \"mode\": \"connect\", \"concurrency\": %d, "
	       "\"completed\": %llu, \"counted\": %llu, \"failed\": %llu, \"mismatched\": %llu, "
	       "\"seconds\": %.6f, \"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
	       "\"p999\": %.1f, \"max\": %.1f}}\n",
	       concurrency, (unsigned long long)completed, (unsigned long long)counted,
	       (unsigned long long)failed, (unsigned long long)mismatched, duration,
	       percentile(latency, samples, 50) * 1e6, percentile(latency, samples, 90) * 1e6,
	       percentile(latency, samples, 99) * 1e6, percentile(latency, samples, 99.9) * 1e6,
	       samples ? latency[samples - 1] * 1e6 : 0.0);
	return 0;
}

/* --- idle ------------------------------------------------------------------------------- */

enum { OPEN, IDLE, AWAITING, CLOSED };

struct idler {
	int fd, state, received;
	uint32_t id, seq;
};

static int idler_send(struct idler *c, int size)
{
	char message[4096];
	fill(message, c->id, c->seq, size);
	c->received = 0;
	c->state = AWAITING;
	return send(c->fd, message, (size_t)size, MSG_NOSIGNAL) == size;
}

/* Read what came of the echo; 1 when it is whole, 0 when more is to come, -1 on failure. */
static int idler_read(struct idler *c, int size, uint64_t *mismatched)
{
	char got[4096];
	if (c->state != AWAITING)
		return -1; /* readable while nothing is expected: an end of file, or a stray byte */
	ssize_t r = read(c->fd, got, (size_t)(size - c->received));
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (r <= 0)
		return -1;
	for (ssize_t j = 0; j < r; j++)
		if ((uint8_t)got[j] != pattern(c->id, c->seq, (uint32_t)(c->received + j))) {
			(*mismatched)++;
			return -1;
		}
	c->received += (int)r;
	if (c->received < size)
		return 0;
	c->seq++;
	c->state = IDLE;
	return 1;
}

static int idle(int count, double interval, int size)
{
	struct idler *all = calloc((size_t)count, sizeof *all);
	uint64_t messages = 0, failed = 0, mismatched = 0, late = 0, due = 0;
	int opened = 0, opening = 0, established = 0, ready = 0, stopping = 0;
	double start = now(), steady = 0, stop_deadline = 0;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: standard input */
	epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
	char line[256];
	size_t line_len = 0;
	struct epoll_event events[MAX_EVENTS];

	for (;;) {
		double t = now();
		while (!ready && opening < OPENING && opened < count) {
			struct idler *c = &all[opened];
			c->id = (uint32_t)opened++;
			c->fd = open_connection(c->id, c);
			if (c->fd < 0) {
				c->state = CLOSED;
				failed++;
			} else {
				c->state = OPEN;
				opening++;
			}
		}
		if (!ready && opened == count && opening == 0) {
			ready = 1;
			steady = now();
			printf("{\"event\": \"ready\", \"established\": %d, \"failed\": %llu, "
			       "\"seconds\": %.3f}\n",
			       established, (unsigned long long)failed, steady - start);
			fflush(stdout);
		}
		int wait_ms = 20;
		if (ready && !stopping) {
			/* Messages go out evenly: connection k's turn comes every `interval`. */
			uint64_t target = (uint64_t)((t - steady) / interval * count);
			for (; due < target; due++) {
				struct idler *c = &all[due % (uint64_t)count];
				if (c->state == CLOSED)
					continue;
				if (c->state == AWAITING) {
					late++;
					continue;
				}
				if (!idler_send(c, size)) {
					close(c->fd);
					c->state = CLOSED;
					failed++;
					continue;
				}
				want(c->fd, c, EPOLLIN);
			}
			wait_ms = 1;
		}
		if (stopping) {
			int waiting = 0;
			for (int i = 0; i < count; i++)
				waiting += all[i].state == AWAITING;
			if (waiting == 0 || t > stop_deadline) {
				for (int i = 0; i < count; i++)
					if (all[i].state != CLOSED)
						close(all[i].fd);
				printf("{\"event\": \"done\", \"mode\": \"idle\", \"conns\": %d, "
				       "\"established\": %d, \"messages\": %llu, \"failed\": %llu, "
				       "\"mismatched\": %llu, \"lost\": %d, \"late\": %llu}\n",
				       count, established, (unsigned long long)messages,
				       (unsigned long long)failed, (unsigned long long)mismatched,
				       waiting, (unsigned long long)late);
				return 0;
			}
		}
		int n = epoll_wait(epfd, events, MAX_EVENTS, wait_ms);
		for (int e = 0; e < n; e++) {
			struct idler *c = events[e].data.ptr;
			if (c == NULL) {
				ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
				if (r <= 0)
					exit(1); /* whoever drives us is gone */
				line_len += (size_t)r;
				char *newline;
				while ((newline = memchr(line, '\n', line_len)) != NULL) {
					*newline = '\0';
					if (!strcmp(line, "mark")) {
						printf("{\"event\": \"mark\", \"messages\": %llu, "
						       "\"failed\": %llu}\n",
						       (unsigned long long)messages,
						       (unsigned long long)failed);
						fflush(stdout);
					} else if (!strcmp(line, "stop")) {
						stopping = 1;
						stop_deadline = now() + timeout;
					}
					size_t used = (size_t)(newline - line) + 1;
					memmove(line, newline + 1, line_len - used);
					line_len -= used;
				}
				continue;
			}
			int result;
			if (c->state == OPEN && (events[e].events & EPOLLOUT)) {
				if (!connected(c->fd) || !idler_send(c, size)) {
					result = -1;
				} else {
					want(c->fd, c, EPOLLIN);
					continue;
				}
			} else if (c->state == CLOSED) {
				continue;
			} else {
				result = idler_read(c, size, &mismatched);
				if (result == 1 && c->seq == 1) {
					established++;
					opening--;
				} else if (result == 1) {
					messages++;
				}
				if (result == 0 && (events[e].events & (EPOLLHUP | EPOLLERR)))
					result = -1;
			}
			if (result == -1) {
				if (c->seq == 0)
					opening--; /* it was still being opened */
				close(c->fd);
				c->state = CLOSED;
				failed++;
			}
		}
	}
}

/* --- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: loadgen bulk|connect|idle IP:PORT [options]\n");
		return 2;
	}
	const char *mode = argv[1];
	char host[64];
	const char *colon = strrchr(argv[2], ':');
	if (!colon || (size_t)(colon - argv[2]) >= sizeof host) {
		fprintf(stderr, "loadgen: target %s is not IP:PORT\n", argv[2]);
		return 2;
	}
	memcpy(host, argv[2], (size_t)(colon - argv[2]));
	host[colon - argv[2]] = '\0';
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &target.sin_addr) != 1) {
		fprintf(stderr, "loadgen: %s is not an IPv4 address\n", host);
		return 2;
	}
	struct in_addr base;
	inet_pton(AF_INET, "127.200.0.1", &base);
	int streams = 1, concurrency = 1, conns = 100, size = 100;
	double duration = 5.0, interval = 1.0;
	for (int i = 3; i + 1 < argc; i += 2) {
		const char *name = argv[i], *value = argv[i + 1];
		if (!strcmp(name, "--streams"))
			streams = atoi(value);
		else if (!strcmp(name, "--concurrency"))
			concurrency = atoi(value);
		else if (!strcmp(name, "--conns"))
			conns = atoi(value);
		else if (!strcmp(name, "--size"))
			size = atoi(value);
		else if (!strcmp(name, "--duration"))
			duration = atof(value);
		else if (!strcmp(name, "--interval"))
			interval = atof(value);
		else if (!strcmp(name, "--timeout"))
			timeout = atof(value);
		else if (!strcmp(name, "--sources"))
			sources = atoi(value);
		else if (!strcmp(name, "--source")) {
			if (inet_pton(AF_INET, value, &base) != 1) {
				fprintf(stderr, "loadgen: --source %s is not an IPv4 address\n", value);
				return 2;
			}
		} else {
			fprintf(stderr, "loadgen: unknown option %s\n", name);
			return 2;
		}
	}
	if (size < 1 || size > 4096 || sources < 1 || streams < 1 || concurrency < 1 || conns < 1) {
		fprintf(stderr, "loadgen: --size 1..4096; counts at least 1\n");
		return 2;
	}
	source_base = ntohl(base.s_addr);
	signal(SIGPIPE, SIG_IGN);
	epfd = epoll_create1(0);
	if (epfd < 0)
		die("epoll_create1");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "bulk"))
		return bulk(streams, duration);
	if (!strcmp(mode, "connect"))
		return connect_rate(concurrency, duration, size);
	if (!strcmp(mode, "idle"))
		return idle(conns, interval, size);
	fprintf(stderr, "loadgen: unknown mode %s\n", mode);
	return 2;
}
