/* balancer._relay: the built-in engine's compiled relay core (README, "Engines: built-in or
 * HAProxy"; issue 16).
 *
 * One epoll loop in a thread of its own that never takes the GIL: a new connection must not
 * wait behind health checks, API requests or the garbage collector. Python keeps every policy
 * and writes it here as tables (struct table: the servers, what each takes, the weighted round
 * robin order); the loop reads them under a mutex held for a few instructions. What Python must
 * hear (a real server unreachable, a client refused, an idle connection closed) is queued and
 * signalled on an eventfd that the worker's asyncio loop reads.
 *
 * A connection costs its struct and two sockets; a buffer is taken from a pool only while
 * bytes are in flight, so an idle connection holds none. Level-triggered epoll: a side is
 * watched only for what it can do now (read while its flow's buffer has room, write while the
 * other side's flow holds bytes), which is the flow control. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

/* Every read asks for up to this much: bulk read 64 KiB at a time measured half the Python
 * relay's 1 MiB reads (on loopback each read's ACK, and the wakeup of the sender it brings, is
 * paid on this core). A flow whose destination lags holds up to this much (the Python relay:
 * 512 KiB queued, and a 1 MiB read). */
#define BIG_SIZE (1024 * 1024)
#define BUFFER_SIZE (64 * 1024)  /* a rest this small moves to a buffer this size */
#define READS 8             /* reads per wakeup of one side while each fills what it asked */
#define POOL_KEEP 256       /* free buffers of BUFFER_SIZE kept for the next burst */
#define BIG_KEEP 16         /* and of BIG_SIZE; more are malloc'd and freed (glibc serves them
                             * from its heap once one was freed: its mmap threshold rises) */
#define ACCEPTS 64          /* per wakeup, so one busy listener does not starve the others */
#define EVENTS_KEPT 262144  /* events Python has not read yet; more are counted, not kept */
#define MAX_TRIED 17         /* retries (at most 16) and the fallback */
#define CONNECTING_TICK 50  /* ms: connect timeouts take effect up to this late */
#define IDLE_TICK 1000      /* ms: idle timeouts, this late */
#define FULL_PAUSE 250      /* ms a listener rests when the process is out of descriptors */
/* ms between two wakeups of Python for events: one per connection (persistence reports three)
 * would take a core's worth of Python at HAProxy's rates. The first of a quiet spell goes at
 * once. */
#define BATCH_MS 20
/* Nice values the loop thread runs below the thread that starts it, where it may (as root, or
 * with CAP_SYS_NICE): where the two share a core, a batch of Python's work (events, a status,
 * a health check) otherwise keeps a new connection waiting for the CPU. One at a time with
 * persistence, p99 326 us at the same priority, 236 at ten apart (HAProxy 250, same runs). */
#define LOOP_PRIORITY 10

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, v) __atomic_store_n(&(x), LOAD(x) + (v), __ATOMIC_RELAXED) /* one writer */

enum kind { LISTENER, SIDE, WAKE };
enum event { EV_UNREACHABLE = 1, EV_REFUSED = 2, EV_IDLE = 3, EV_STICK = 4, EV_HOLD = 5,
             EV_RELEASE = 6, EV_EVICT = 7 };

/* Long idle RDP sessions need keepalive (relay.KEEPALIVE, which the listeners set already). */
static const int KEEPALIVE[][3] = {
    {SOL_SOCKET, SO_KEEPALIVE, 1},
    {IPPROTO_TCP, TCP_KEEPIDLE, 300},
    {IPPROTO_TCP, TCP_KEEPINTVL, 30},
    {IPPROTO_TCP, TCP_KEEPCNT, 4},
};

struct listener {
    enum kind kind;          /* first: what an epoll event points at */
    int fd, id, port, gone, paused;
    struct service *service; /* under the core's lock */
    struct listener *next;
};

struct pool {
    char **free;
    int count, keep;
    size_t size;
};

struct flow {                /* one direction's bytes in flight */
    char *buffer;            /* from ``pool``, while it holds bytes */
    struct pool *pool;
    uint32_t offset, length;
    int eof, shut;
};

struct conn;
struct side {
    enum kind kind;
    int fd;
    uint32_t watched;        /* the epoll events asked for; 0: not in the epoll set */
    struct conn *conn;
};

struct conn {
    struct side side[2];     /* 0: the client, 1: the real server */
    struct flow flow[2];     /* 0: client to server, 1: server to client */
    struct service *service;
    struct server *server;   /* being connected to or relayed to; NULL before */
    struct server *tried[MAX_TRIED];
    int ntried, connecting, port, dead;
    int stuck, held, persist;        /* persistence: what Python must hear of this client */
    struct server *fallback;         /* the table's when chosen: never stuck to */
    int64_t deadline, seen, idle_ms, connect_ms;
    struct sockaddr_storage client;
    struct conn *prev, *next;        /* every connection, for the idle sweep */
    struct conn *cprev, *cnext;      /* those connecting, for the connect sweep */
};

struct event_record {
    int kind, service, server, port, error;
    char client[INET6_ADDRSTRLEN];
};

struct core {
    int epoll, wake, events_fd, stopping, started;
    pthread_t thread;
    pthread_mutex_t lock;            /* tables, listeners' services, the event queue */
    struct listener *listeners, *dead;
    struct conn *conns, *connecting;
    struct conn *graveyard;          /* finished in this wakeup; freed after its last event */
    int64_t resume;                  /* when paused listeners are watched again; 0: none is */
    int64_t signalled;               /* when Python was last woken for events */
    struct pool small, big;
    struct event_record *events;
    int nevents, room, lost_events;
    struct side wake_side;
};

/* The test hook (tests/relay/test_crash.py): BALANCER_RELAY_FAULT=<port> makes the loop crash
 * as it accepts a client on that port, as a fault in the core would; 0, inert, unless set. */
static int fault_port;

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* --- shared objects ------------------------------------------------------------------------ */

static void server_unref(struct server *s) {
    if (s != NULL && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) free(s);
}

static struct server *server_ref(struct server *s) {
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

/* The next event's record, or NULL (counted lost) when Python is that far behind. Called
 * under the core's lock. */
static struct event_record *event_slot(struct core *c) {
    if (c->nevents == c->room && c->room < EVENTS_KEPT) {  /* grown while Python is busy */
        int room = c->room ? 2 * c->room : 256;
        struct event_record *grown = realloc(c->events, room * sizeof *grown);
        if (grown != NULL) {
            c->events = grown;
            c->room = room;
        }
    }
    if (c->nevents < c->room) return &c->events[c->nevents++];
    c->lost_events++;
    return NULL;
}

/* --- the persistence table, under the core's lock ------------------------------------------- */

static void client_key(const struct sockaddr_storage *a, unsigned char key[16]) {
    if (a->ss_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    } else {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)a)->sin_addr, 4);
    }
}

static unsigned key_hash(const unsigned char k[16]) {
    uint64_t a, b;
    memcpy(&a, k, 8);
    memcpy(&b, k + 8, 8);
    uint64_t h = a * 0x9E3779B97F4A7C15ULL ^ b * 0xC2B2AE3D27D4EB4FULL;
    return (unsigned)(h ^ h >> 29);
}

/* The link that points at ``k``'s entry, or at the NULL ending its bucket. */
static struct stick **stick_link(struct service *s, const unsigned char k[16]) {
    if (!s->nbuckets) return NULL;
    struct stick **p = &s->buckets[key_hash(k) & (s->nbuckets - 1)];
    while (*p && memcmp((*p)->client, k, 16)) p = &(*p)->next;
    return p;
}

static struct stick *stick_get(struct service *s, const unsigned char k[16]) {
    struct stick **p = stick_link(s, k);
    return p ? *p : NULL;
}

/* Out of the order of use. */
static void lru_unlink(struct service *s, struct stick *e) {
    if (e->older) e->older->newer = e->newer;
    else s->oldest = e->newer;
    if (e->newer) e->newer->older = e->older;
    else s->newest = e->older;
    e->older = e->newer = NULL;
}

/* Used now: the newest. */
static void stick_use(struct service *s, struct stick *e, int64_t used) {
    e->used = used;
    if (s->newest == e) return;
    if (e->older || e->newer || s->oldest == e) lru_unlink(s, e);
    e->older = s->newest;
    if (s->newest) s->newest->newer = e;
    else s->oldest = e;
    s->newest = e;
}

/* Out of the table: freed, or, while connections of the client are open, kept aside for their
 * count (as persistence.StickTable keeps its open counts apart from its entries), so that a
 * connection ending after the client's next one began does not end that one's hold too. The
 * client's next entry, or its last connection's end, takes it back. */
static void stick_drop(struct service *s, struct stick **p) {
    struct stick *e = *p;
    if (!e->gone) {
        lru_unlink(s, e);
        s->nsticks--;
    }
    if (e->open) {
        e->gone = 1;
        return;
    }
    *p = e->next;
    server_unref(e->server);
    free(e);
}

/* Make room for one entry more: the least recently used go, open or not, as
 * persistence.StickTable.stick drops them, and each is reported (EV_EVICT) so that Python's
 * table drops that one, not another of its own choosing (their orders of use differ by what is
 * in flight). Also for a peer's entry: Python's learn dropped its own oldest already, which
 * may be another; its table then holds one fewer for a while, never one this one does not. */
static void stick_room(struct core *c, struct service *s) {
    long limit = s->table ? s->table->persist_size : 0;
    while (limit && s->nsticks >= (unsigned long)limit && s->oldest) {
        struct stick *e = s->oldest;
        struct event_record *r = event_slot(c);
        if (r != NULL) {
            r->kind = EV_EVICT;
            r->service = s->id;
            r->server = e->server ? e->server->id : -1;
            r->port = r->error = 0;
            static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            int v4 = !memcmp(e->client, mapped, 12);
            inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? e->client + 12 : e->client, r->client,
                      sizeof r->client);
        }
        stick_drop(s, stick_link(s, e->client));
    }
}

/* ``k``'s entry, pointing at ``to``, used at ``used``, made if new (room made by ``c``). */
static struct stick *stick_put(struct core *c, struct service *s, const unsigned char k[16],
                               struct server *to, int64_t used) {
    struct stick *found = stick_get(s, k);
    if (found == NULL || found->gone) stick_room(c, s);
    if (s->nsticks >= s->nbuckets) {  /* grown by doubling: a lookup stays one or two steps */
        unsigned n = s->nbuckets ? 2 * s->nbuckets : 64;
        struct stick **b = calloc(n, sizeof *b);
        if (b == NULL) return NULL;
        for (unsigned i = 0; i < s->nbuckets; i++) {
            for (struct stick *e = s->buckets[i], *next; e; e = next) {
                next = e->next;
                unsigned h = key_hash(e->client) & (n - 1);
                e->next = b[h];
                b[h] = e;
            }
        }
        free(s->buckets);
        s->buckets = b;
        s->nbuckets = n;
    }
    struct stick **p = stick_link(s, k);
    struct stick *e = *p;
    if (e == NULL) {
        if ((e = calloc(1, sizeof *e)) == NULL) return NULL;
        memcpy(e->client, k, 16);
        *p = e;
        s->nsticks++;
    } else if (e->gone) {  /* back in the table (stick_use links it), its open count kept */
        e->gone = 0;
        s->nsticks++;
    }
    if (e->server != to) {
        server_unref(e->server);
        e->server = server_ref(to);
    }
    stick_use(s, e, used);
    return e;
}

/* Drop the entries ``doomed`` says, of every bucket. */
static int sticks_drop(struct service *s, int (*doomed)(struct stick *, int64_t), int64_t arg) {
    int dropped = 0;
    for (unsigned i = 0; i < s->nbuckets; i++) {
        for (struct stick **p = &s->buckets[i]; *p;) {
            struct stick *e = *p;
            if (!e->gone && doomed(e, arg)) {
                stick_drop(s, p);
                dropped++;
            }
            if (*p == e) p = &e->next;  /* kept (aside), or not doomed */
        }
    }
    return dropped;
}

static int always(struct stick *e, int64_t arg) { return 1; }

static void table_free(struct table *t) {
    if (t == NULL) return;
    for (int i = 0; i < t->nservers; i++) server_unref(t->servers[i]);
    server_unref(t->fallback);
    free(t->servers);
    free(t->order);
    free(t);
}

static void service_unref(struct service *s) {
    if (s != NULL && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        table_free(s->table);
        for (unsigned i = 0; i < s->nbuckets; i++) {  /* every entry, aside or not */
            for (struct stick *e = s->buckets[i], *next; e; e = next) {
                next = e->next;
                server_unref(e->server);
                free(e);
            }
        }
        free(s->buckets);
        free(s);
    }
}

static struct service *service_ref(struct service *s) {
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

/* --- the loop's helpers -------------------------------------------------------------------- */

static char *pool_get(struct pool *p) {
    return p->count ? p->free[--p->count] : malloc(p->size);
}

static void pool_put(struct pool *p, char *b) {
    if (p->count < p->keep) p->free[p->count++] = b;
    else free(b);
}

/* A buffer for the flow's next reads, a big one: each read takes all the socket holds, up to
 * BIG_SIZE; 0: out of memory. */
static int flow_buffer(struct core *c, struct flow *f) {
    if (f->buffer == NULL) {
        f->buffer = pool_get(&c->big);
        f->pool = &c->big;
    }
    return f->buffer != NULL;
}

/* Bytes the destination has not taken that fit a small buffer move to one, so that the big
 * one is back in the pool at once: a lagging reader holds 64 KiB, not 1 MiB, unless more than
 * that waits for it. */
static void flow_shrink(struct core *c, struct flow *f) {
    if (!f->length || f->length > BUFFER_SIZE || f->pool != &c->big) return;
    char *small = pool_get(&c->small);
    if (small == NULL) return;  /* out of memory: the big one stays */
    memcpy(small, f->buffer + f->offset, f->length);
    pool_put(&c->big, f->buffer);
    f->buffer = small;
    f->pool = &c->small;
    f->offset = 0;
}

/* The flow holds nothing any more: its buffer goes back. */
static void flow_empty(struct flow *f) {
    if (f->buffer == NULL) return;
    pool_put(f->pool, f->buffer);
    f->buffer = NULL;
    f->offset = 0;
}

static void report(struct core *c, int kind, struct conn *k, struct server *s, int error) {
    pthread_mutex_lock(&c->lock);
    struct event_record *e = event_slot(c);
    if (e != NULL) {
        e->kind = kind;
        e->service = k->service->id;
        e->server = s ? s->id : -1;
        e->port = s == NULL ? 0 : s->vip_port ? k->port : ntohs(((struct sockaddr_in *)&s->addr)->sin_port);
        e->error = error;
        const void *a = k->client.ss_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)&k->client)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)&k->client)->sin_addr;
        inet_ntop(k->client.ss_family, a, e->client, sizeof e->client);
    }
    pthread_mutex_unlock(&c->lock);
}

/* Watch ``side`` for ``events`` only; a side with nothing to wait for leaves the epoll set,
 * else a peer's hang-up, always reported, would wake the loop for nothing again and again. */
static void watch(struct core *c, struct side *s, uint32_t events) {
    if (s->fd < 0 || events == s->watched) return;
    struct epoll_event e = {.events = events, .data.ptr = s};
    int op = !s->watched ? EPOLL_CTL_ADD : events ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    epoll_ctl(c->epoll, op, s->fd, &e);
    s->watched = events;
}

/* The bytes flow ``f`` can read now: what its buffer has left after those it holds. The
 * source is read while the destination lags, until the buffer is full: a pipeline, not stop
 * and go (8 streams of bulk, measured side by side: 2.76 -> 2.93 GB/s). */
static size_t room(const struct flow *f) {
    if (f->eof) return 0;
    if (f->buffer == NULL) return BIG_SIZE;
    if (f->pool->size == BUFFER_SIZE) return 0;  /* a small rest: drained first */
    return f->pool->size - f->offset - f->length;
}

/* What each side waits for now, from the state of both flows. */
static void rewatch(struct core *c, struct conn *k) {
    struct flow *up = &k->flow[0], *down = &k->flow[1];
    uint32_t client = 0, server = 0;
    if (room(up)) client |= EPOLLIN;
    if (down->length) client |= EPOLLOUT;
    if (k->connecting) server = EPOLLOUT;
    else if (k->side[1].fd >= 0) {
        if (room(down)) server |= EPOLLIN;
        if (up->length) server |= EPOLLOUT;
    }
    watch(c, &k->side[0], client);
    watch(c, &k->side[1], server);
}

static void unlink_connecting(struct core *c, struct conn *k) {
    if (!k->connecting) return;
    k->connecting = 0;
    if (k->cprev) k->cprev->cnext = k->cnext;
    else c->connecting = k->cnext;
    if (k->cnext) k->cnext->cprev = k->cprev;
}

static void linger_zero(int fd) {
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

/* The end of a connection. ``reset``: the peers learn it by a reset (one side failed). */
static void report(struct core *c, int kind, struct conn *k, struct server *s, int error);

/* One of the client's connections has ended: its entry counts its timeout from now, pointing
 * where it points (a failover may have moved the client meanwhile), or, cleared meanwhile, at
 * this connection's server (as persistence.StickTable.release). */
static void release(struct core *c, struct conn *k) {
    unsigned char key[16];
    client_key(&k->client, key);
    pthread_mutex_lock(&c->lock);
    struct stick *e = stick_get(k->service, key);
    struct table *t = k->service->table;
    if (e != NULL && e->open) e->open--;
    if (e != NULL && !e->gone) {
        stick_use(k->service, e, now_ms());
    } else if (t != NULL && t->persist_ms) {  /* not once a commit turned persistence off */
        stick_put(c, k->service, key, k->server, now_ms());  /* back from aside, or anew */
    } else if (e != NULL && !e->open) {
        stick_drop(k->service, stick_link(k->service, key));  /* aside, and its last ended */
    }
    pthread_mutex_unlock(&c->lock);
    report(c, EV_RELEASE, k, k->server, 0);
}

static void finish(struct core *c, struct conn *k, int reset) {
    if (k->dead) return;
    k->dead = 1;
    if (k->held) release(c, k);
    unlink_connecting(c, k);
    if (k->prev) k->prev->next = k->next;
    else c->conns = k->next;
    if (k->next) k->next->prev = k->prev;
    for (int i = 0; i < 2; i++) {
        if (k->side[i].fd >= 0) {
            if (reset) linger_zero(k->side[i].fd);
            close(k->side[i].fd);  /* leaves the epoll set with it */
        }
        flow_empty(&k->flow[i]);
    }
    if (k->server) ADD(k->server->counters.active, -1);
    server_unref(k->server);
    for (int i = 0; i < k->ntried; i++) server_unref(k->tried[i]);
    ADD(k->service->counters.active, -1);
    service_unref(k->service);
    /* Freed only after this wakeup's events: one of them may name its other side. */
    k->next = c->graveyard;
    c->graveyard = k;
}

static void bury(struct core *c) {
    while (c->graveyard) {
        struct conn *k = c->graveyard;
        c->graveyard = k->next;
        free(k);
    }
}

static int tried(struct conn *k, struct server *s) {
    for (int i = 0; i < k->ntried; i++)
        if (k->tried[i] == s) return 1;
    return 0;
}

static int has_room(struct server *s) {
    int limit = LOAD(s->maxconn);
    return !limit || LOAD(s->counters.active) < limit;
}

static int takes_new(struct server *s) {
    return LOAD(s->takes) == TAKES_NEW && LOAD(s->weight) > 0 && has_room(s);
}

static int in_table(struct table *t, struct server *s) {
    for (int i = 0; i < t->nservers; i++)
        if (t->servers[i] == s) return 1;
    return 0;
}

/* The policy Python wrote, applied: the next server of the round robin order, or the one with
 * the fewest connections per weight (ties in turn), skipping those tried; then the fallback.
 * Called under the core's lock. */
static struct server *choose(struct core *c, struct conn *k, int64_t now) {
    struct service *svc = k->service;
    struct table *t = svc->table;
    struct server *best = NULL;
    if (t == NULL) return NULL;
    k->connect_ms = t->connect_ms;
    k->idle_ms = t->idle_ms;
    k->fallback = t->fallback;
    k->persist = t->persist_ms > 0;
    unsigned char key[16];
    if (k->persist) {
        /* The client's server while its entry lives (or a connection of it is open), if the
         * server is still the service's, not tried, and takes stuck clients. */
        client_key(&k->client, key);
        struct stick *e = stick_get(svc, key);
        if (e != NULL && !e->gone && (e->open || now - e->used < t->persist_ms) &&
            in_table(t, e->server) &&
            !tried(k, e->server) && LOAD(e->server->takes) >= TAKES_STUCK && has_room(e->server)) {
            stick_use(svc, e, now);
            k->stuck = 1;
            return server_ref(e->server);
        }
    }
    int retry = k->ntried < t->retries && k->ntried < MAX_TRIED - 1;  /* room for the fallback */
    if (retry && t->least && t->nservers) {
        unsigned start = svc->cursor++ % t->nservers;
        for (int i = 0; i < t->nservers; i++) {
            struct server *s = t->servers[(start + i) % t->nservers];
            if (!takes_new(s) || tried(k, s)) continue;
            if (best == NULL || LOAD(s->counters.active) * LOAD(best->weight) <
                                    LOAD(best->counters.active) * LOAD(s->weight))
                best = s;
        }
    } else if (retry) {
        for (int i = 0; i < t->norder && best == NULL; i++) {
            struct server *s = t->servers[t->order[svc->cursor++ % t->norder]];
            if (takes_new(s) && !tried(k, s)) best = s;
        }
    }
    if (best != NULL && k->persist && stick_put(c, svc, key, best, now) != NULL) k->stuck = 1;
    if (best == NULL && t->fallback != NULL && !tried(k, t->fallback)) best = t->fallback;
    return best ? server_ref(best) : NULL;
}

static void relay_flow(struct core *c, struct conn *k, int d);
static void dispatch(struct core *c, struct conn *k, int64_t now);

/* The real server answered: the relay starts, and the client's entry is held while it lasts. */
static void established(struct core *c, struct conn *k, int64_t now) {
    unlink_connecting(c, k);
    k->seen = now;
    if (!k->persist || k->server == k->fallback) return;
    unsigned char key[16];
    client_key(&k->client, key);
    pthread_mutex_lock(&c->lock);
    struct stick *e = stick_get(k->service, key);
    if (e == NULL) e = stick_put(c, k->service, key, k->server, now);
    if (e != NULL) e->open++;
    pthread_mutex_unlock(&c->lock);
    k->held = 1;
    report(c, EV_HOLD, k, k->server, 0);
}

static void connect_failed(struct core *c, struct conn *k, int error, int64_t now) {
    struct server *s = k->server;
    report(c, EV_UNREACHABLE, k, s, error);
    unlink_connecting(c, k);
    close(k->side[1].fd);
    k->side[1].fd = -1;
    k->side[1].watched = 0;
    ADD(s->counters.active, -1);
    k->server = NULL;
    k->tried[k->ntried++] = s;  /* choose leaves room for every server it gives */
    dispatch(c, k, now);
}

/* Connect to the next server, and write what the client sent at once rather than wait for
 * the connection to say it is ready (on a near network it already is: one wakeup saved). */
static void dispatch(struct core *c, struct conn *k, int64_t now) {
    pthread_mutex_lock(&c->lock);
    struct server *s = choose(c, k, now);
    pthread_mutex_unlock(&c->lock);
    if (k->stuck) {  /* told out of the lock: report takes it */
        k->stuck = 0;
        report(c, EV_STICK, k, s, 0);
    }
    if (s == NULL) {
        report(c, EV_REFUSED, k, NULL, 0);
        finish(c, k, 1);  /* a reset: the client learns at once there is nobody to serve it */
        return;
    }
    k->server = s;
    ADD(s->counters.active, 1);
    ADD(s->counters.total, 1);
    struct sockaddr_storage to = s->addr;
    if (s->vip_port) ((struct sockaddr_in *)&to)->sin_port = htons(k->port);  /* same offset in v6 */
    int fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        k->side[1].fd = -1;
        connect_failed(c, k, errno, now);
        return;
    }
    for (size_t i = 0; i < sizeof KEEPALIVE / sizeof *KEEPALIVE; i++)
        setsockopt(fd, KEEPALIVE[i][0], KEEPALIVE[i][1], &KEEPALIVE[i][2], sizeof(int));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    k->side[1].fd = fd;
    k->side[1].watched = 0;
    if (connect(fd, (struct sockaddr *)&to, s->addrlen) < 0 && errno != EINPROGRESS) {
        connect_failed(c, k, errno, now);
        return;
    }
    k->connecting = 1;
    k->deadline = now + k->connect_ms;
    k->cprev = NULL;
    k->cnext = c->connecting;
    if (c->connecting) c->connecting->cprev = k;
    c->connecting = k;
    if (k->flow[0].length) {
        ssize_t n = send(fd, k->flow[0].buffer + k->flow[0].offset, k->flow[0].length,
                         MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            connect_failed(c, k, errno, now);
            return;
        }
        if (n > 0) {  /* it was made, then: the relay starts */
            established(c, k, now);
            k->flow[0].offset += n;
            k->flow[0].length -= n;
            ADD(s->counters.bytes_in, n);
            relay_flow(c, k, 0);
            return;
        }
    }
    rewatch(c, k);
}

/* The server's side is writable or failed while connecting: made, or the next one is tried. */
static void connected(struct core *c, struct conn *k, int64_t now) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(k->side[1].fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error) {
        connect_failed(c, k, error, now);
        return;
    }
    established(c, k, now);
    relay_flow(c, k, 0);
}

/* Write what flow ``d`` holds to its destination; pass an EOF on once it is all written. */
static void relay_flow(struct core *c, struct conn *k, int d) {
    struct flow *f = &k->flow[d];
    int to = k->side[1 - d].fd;
    if (f->length && !(d == 0 && k->connecting)) {
        ssize_t n = send(to, f->buffer + f->offset, f->length, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            finish(c, k, 1);
            return;
        }
        if (n > 0) {
            f->offset += n;
            f->length -= n;
            if (d == 0) ADD(k->server->counters.bytes_in, n);
        }
    }
    if (!f->length) flow_empty(f);
    else flow_shrink(c, f);
    if (!f->length && f->eof && !f->shut && !(d == 0 && k->connecting)) {
        shutdown(to, SHUT_WR);
        f->shut = 1;
        if (k->flow[1 - d].shut) {  /* both ways ended: done */
            finish(c, k, 0);
            return;
        }
    }
    rewatch(c, k);
}

/* Read from side ``d`` into its flow (it has room, or it would not be watched) and pass it on. */
static void readable(struct core *c, struct conn *k, int d, int64_t now) {
    struct flow *f = &k->flow[d];
    for (int i = 0; i < READS; i++) {
        size_t asked = room(f);
        if (!asked || !flow_buffer(c, f)) return;  /* out of memory: tried on the next wakeup */
        ssize_t n = recv(k->side[d].fd, f->buffer + f->offset + f->length, asked, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!f->length) flow_empty(f);
            return;
        }
        if (n < 0) {
            finish(c, k, 1);  /* a reset, passed on as one */
            return;
        }
        if (n == 0) {
            f->eof = 1;
        } else {
            f->length += n;
            k->seen = now;
            if (d) {
                ADD(k->service->counters.bytes_out, n);
                ADD(k->server->counters.bytes_out, n);
            } else {
                ADD(k->service->counters.bytes_in, n);
            }
        }
        relay_flow(c, k, d);
        /* A full read that went straight on: the socket likely holds more, and reading it
         * now saves a wakeup (bulk transfers). */
        if (k->dead || (size_t)n != asked || f->length) return;
    }
}

static void on_side(struct core *c, struct side *s, uint32_t events, int64_t now) {
    struct conn *k = s->conn;
    int d = s == &k->side[1];
    if (k->dead) return;
    if (d && k->connecting) {
        connected(c, k, now);
        return;
    }
    if (events & EPOLLERR) {
        finish(c, k, 1);
        return;
    }
    /* A hang-up comes with EPOLLOUT whatever was asked: act only on what this side waits
     * for, so that a read it waits for is never passed over (level-triggered: it would be
     * reported again and again). Write first: it may empty the flow the read then fills. */
    uint32_t watched = s->watched;
    if (events & watched & EPOLLOUT) relay_flow(c, k, 1 - d);
    if (!k->dead && (watched & EPOLLIN) && (events & (EPOLLIN | EPOLLHUP)) && room(&k->flow[d]))
        readable(c, k, d, now);
}

static void accept_on(struct core *c, struct listener *l, int64_t now) {
    for (int i = 0; i < ACCEPTS; i++) {
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        int fd = accept4(l->fd, (struct sockaddr *)&from, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                       errno == ENOMEM)) {
            /* Out of descriptors or memory: the listener, still readable, would wake the loop
             * at once again and again; it rests instead, its clients waiting in the queue. */
            epoll_ctl(c->epoll, EPOLL_CTL_DEL, l->fd, NULL);
            l->paused = 1;
            c->resume = now + FULL_PAUSE;
        }
        if (fd < 0) return;
        if (fault_port && l->port == fault_port) abort();
        struct conn *k = calloc(1, sizeof *k);
        if (k == NULL) {
            close(fd);
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_mutex_lock(&c->lock);
        k->service = service_ref(l->service);
        pthread_mutex_unlock(&c->lock);
        ADD(k->service->counters.active, 1);
        ADD(k->service->counters.total, 1);
        k->side[0] = (struct side){SIDE, fd, 0, k};
        k->side[1] = (struct side){SIDE, -1, 0, k};
        k->client = from;
        k->port = l->port;
        k->seen = now;
        k->next = c->conns;
        if (c->conns) c->conns->prev = k;
        c->conns = k;
        /* Read at once: a client that speaks first (RDP, TLS) has its bytes here already,
         * and they go out with the connect instead of after another wakeup. */
        ssize_t n = flow_buffer(c, &k->flow[0]) ? recv(fd, k->flow[0].buffer, BIG_SIZE, 0) : -1;
        if (n > 0) {
            k->flow[0].length = n;
            ADD(k->service->counters.bytes_in, n);
            flow_shrink(c, &k->flow[0]);
        } else {
            if (n == 0) k->flow[0].eof = 1;
            flow_empty(&k->flow[0]);
        }
        dispatch(c, k, now);
    }
}

static void sweep(struct core *c, int64_t now, int idle) {
    for (struct conn *k = c->connecting, *next; k; k = next) {
        next = k->cnext;
        if (now >= k->deadline) connect_failed(c, k, ETIMEDOUT, now);
    }
    /* connect_failed may finish connections: walk the idle list only after. */
    for (struct conn *k = idle ? c->conns : NULL, *next; k; k = next) {
        next = k->next;
        if (!k->connecting && k->idle_ms && now - k->seen >= k->idle_ms) {
            report(c, EV_IDLE, k, k->server, 0);
            finish(c, k, 0);  /* a FIN, as the Python relay and HAProxy end an idle one */
        }
    }
}

static void *loop(void *arg) {
    struct core *c = arg;
    struct epoll_event events[256];
    int64_t next_idle = now_ms() + IDLE_TICK;
    /* A thread's own nice value on Linux: this thread's, not the process's. */
    pid_t self = gettid();
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, self);
    if (errno == 0) (void)setpriority(PRIO_PROCESS, self, nice - LOOP_PRIORITY);
    while (!LOAD(c->stopping)) {
        /* Listeners closed by Python leave here, between two waits: no event of theirs is
         * in hand any more. */
        pthread_mutex_lock(&c->lock);
        struct listener *dead = c->dead;
        c->dead = NULL;
        pthread_mutex_unlock(&c->lock);
        while (dead) {
            struct listener *next = dead->next;
            close(dead->fd);
            service_unref(dead->service);
            free(dead);
            dead = next;
        }
        pthread_mutex_lock(&c->lock);
        int pending = c->nevents;
        pthread_mutex_unlock(&c->lock);
        int wait = c->connecting || c->resume ? CONNECTING_TICK : IDLE_TICK;
        if (pending && wait > BATCH_MS) wait = BATCH_MS;
        int n = epoll_wait(c->epoll, events, 256, wait);
        int64_t now = now_ms();
        for (int i = 0; i < n; i++) {
            enum kind *kind = events[i].data.ptr;
            if (*kind == SIDE) {
                on_side(c, events[i].data.ptr, events[i].events, now);
            } else if (*kind == LISTENER) {
                struct listener *l = events[i].data.ptr;
                if (!LOAD(l->gone)) accept_on(c, l, now);
            } else {
                uint64_t value;
                (void)!read(c->wake, &value, sizeof value);
            }
        }
        if (c->resume && now >= c->resume) {
            c->resume = 0;
            pthread_mutex_lock(&c->lock);  /* Python may be closing one meanwhile */
            for (struct listener *l = c->listeners; l; l = l->next) {
                struct epoll_event e = {.events = EPOLLIN, .data.ptr = l};
                if (l->paused && !epoll_ctl(c->epoll, EPOLL_CTL_ADD, l->fd, &e)) l->paused = 0;
            }
            pthread_mutex_unlock(&c->lock);
        }
        int idle = now >= next_idle;
        if (idle) next_idle = now + IDLE_TICK;
        if (c->connecting || idle) sweep(c, now, idle);
        bury(c);
        pthread_mutex_lock(&c->lock);
        pending = c->nevents;
        pthread_mutex_unlock(&c->lock);
        if (pending && now >= c->signalled + BATCH_MS) {  /* Python reads them all at once */
            uint64_t one = 1;
            (void)!write(c->events_fd, &one, sizeof one);
            c->signalled = now;
        }
    }
    while (c->conns) finish(c, c->conns, 0);
    bury(c);
    return NULL;
}

/* --- Python's side: handles are capsules, wrapped by core.py -------------------------------- */

#define CORE "balancer._relay.core"
#define SERVER "balancer._relay.server"
#define SERVICE "balancer._relay.service"

/* The loop ends and its connections with it (the worker is stopping). */
static void core_stop(struct core *c) {
    if (c->started) {
        STORE(c->stopping, 1);
        uint64_t one = 1;
        (void)!write(c->wake, &one, sizeof one);
        pthread_join(c->thread, NULL);
        c->started = 0;
    }
}

static void core_free(struct core *c) {
    core_stop(c);
    for (struct listener *l = c->listeners, *n; l; l = n) {
        n = l->next;
        close(l->fd);
        service_unref(l->service);
        free(l);
    }
    for (struct listener *l = c->dead, *n; l; l = n) {
        n = l->next;
        close(l->fd);
        service_unref(l->service);
        free(l);
    }
    for (struct pool *p = &c->small; p <= &c->big; p++) {
        while (p->count) free(p->free[--p->count]);
        free(p->free);
    }
    free(c->events);
    close(c->epoll);
    close(c->wake);
    close(c->events_fd);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void core_capsule_free(PyObject *capsule) {
    struct core *c = PyCapsule_GetPointer(capsule, CORE);
    if (c == NULL) return;
    Py_BEGIN_ALLOW_THREADS  /* the loop may be waiting for the lock */
    core_free(c);
    Py_END_ALLOW_THREADS
}

static PyObject *py_core(PyObject *self, PyObject *args) {
    struct core *c = calloc(1, sizeof *c);
    if (c == NULL) return PyErr_NoMemory();
    pthread_mutex_init(&c->lock, NULL);
    c->epoll = epoll_create1(EPOLL_CLOEXEC);
    c->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c->events_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c->small = (struct pool){malloc(POOL_KEEP * sizeof(char *)), 0, POOL_KEEP, BUFFER_SIZE};
    c->big = (struct pool){malloc(BIG_KEEP * sizeof(char *)), 0, BIG_KEEP, BIG_SIZE};
    c->wake_side = (struct side){WAKE, c->wake, EPOLLIN, NULL};
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &c->wake_side};
    if (c->epoll < 0 || c->wake < 0 || c->events_fd < 0 || !c->small.free || !c->big.free ||
        epoll_ctl(c->epoll, EPOLL_CTL_ADD, c->wake, &e) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        core_free(c);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(c, CORE, core_capsule_free);
    if (capsule == NULL) core_free(c);
    return capsule;
}

static struct core *get_core(PyObject *o) { return PyCapsule_GetPointer(o, CORE); }

/* The service handle ``so`` and, in ``c``, the core ``co``; NULL (an exception set) if either
 * is not one. */
static struct service *get_service(PyObject *co, PyObject *so, struct core **c) {
    *c = get_core(co);
    return *c ? PyCapsule_GetPointer(so, SERVICE) : NULL;
}

static PyObject *py_start(PyObject *self, PyObject *arg) {
    struct core *c = get_core(arg);
    if (c == NULL) return NULL;
    if (!c->started) {
        int error = pthread_create(&c->thread, NULL, loop, c);
        if (error) {
            errno = error;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        c->started = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *py_stop(PyObject *self, PyObject *arg) {
    struct core *c = get_core(arg);
    if (c == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    core_stop(c);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_events_fd(PyObject *self, PyObject *arg) {
    struct core *c = get_core(arg);
    return c ? PyLong_FromLong(c->events_fd) : NULL;
}

/* The queued events: [(kind, service, server, port, client, error)], and how many were lost. */
static PyObject *py_events(PyObject *self, PyObject *arg) {
    struct core *c = get_core(arg);
    if (c == NULL) return NULL;
    uint64_t value;
    (void)!read(c->events_fd, &value, sizeof value);
    pthread_mutex_lock(&c->lock);  /* taken whole: the loop starts a new queue */
    struct event_record *copy = c->events;
    int n = c->nevents, lost = c->lost_events;
    c->events = NULL;
    c->nevents = c->room = c->lost_events = 0;
    pthread_mutex_unlock(&c->lock);
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *t = Py_BuildValue("(iiiisi)", copy[i].kind, copy[i].service, copy[i].server,
                                    copy[i].port, copy[i].client, copy[i].error);
        if (t == NULL) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, t);
    }
    free(copy);
    return list ? Py_BuildValue("(Ni)", list, lost) : NULL;
}

static void server_capsule_free(PyObject *o) { server_unref(PyCapsule_GetPointer(o, SERVER)); }
static void service_capsule_free(PyObject *o) { service_unref(PyCapsule_GetPointer(o, SERVICE)); }

/* server(id, family, packed address, port): port 0 is the listener's port. */
static PyObject *py_server(PyObject *self, PyObject *args) {
    int id, family, port;
    Py_buffer packed;
    if (!PyArg_ParseTuple(args, "iiy*i", &id, &family, &packed, &port)) return NULL;
    struct server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        PyBuffer_Release(&packed);
        return PyErr_NoMemory();
    }
    s->refs = 1;
    s->id = id;
    s->vip_port = port == 0;
    if (family == AF_INET6 && packed.len == 16) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s->addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        memcpy(&a->sin6_addr, packed.buf, 16);
        s->addrlen = sizeof *a;
    } else if (family == AF_INET && packed.len == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)&s->addr;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        memcpy(&a->sin_addr, packed.buf, 4);
        s->addrlen = sizeof *a;
    }
    PyBuffer_Release(&packed);
    if (!s->addrlen) {
        free(s);
        PyErr_SetString(PyExc_ValueError, "server: not an IPv4 or IPv6 address");
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(s, SERVER, server_capsule_free);
    if (capsule == NULL) free(s);
    return capsule;
}

/* set_server(server, takes, weight, max connections): what Python decided it takes now. */
static PyObject *py_set_server(PyObject *self, PyObject *args) {
    PyObject *o;
    int takes, weight, maxconn;
    if (!PyArg_ParseTuple(args, "Oiii", &o, &takes, &weight, &maxconn)) return NULL;
    struct server *s = PyCapsule_GetPointer(o, SERVER);
    if (s == NULL) return NULL;
    STORE(s->takes, takes);
    STORE(s->weight, weight);
    STORE(s->maxconn, maxconn);
    Py_RETURN_NONE;
}

static PyObject *counters(struct counters *k) {
    return Py_BuildValue("(LLLL)", (long long)LOAD(k->active), (long long)LOAD(k->total),
                         (long long)LOAD(k->bytes_in), (long long)LOAD(k->bytes_out));
}

/* counters(server or service): (active, total, bytes in, bytes out). */
static PyObject *py_counters(PyObject *self, PyObject *o) {
    if (PyCapsule_IsValid(o, SERVER))
        return counters(&((struct server *)PyCapsule_GetPointer(o, SERVER))->counters);
    struct service *s = PyCapsule_GetPointer(o, SERVICE);
    return s ? counters(&s->counters) : NULL;
}

static PyObject *py_service(PyObject *self, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    struct service *s = calloc(1, sizeof *s);
    if (s == NULL) return PyErr_NoMemory();
    s->refs = 1;
    s->id = id;
    PyObject *capsule = PyCapsule_New(s, SERVICE, service_capsule_free);
    if (capsule == NULL) free(s);
    return capsule;
}

/* set_table(core, service, servers, order, least, fallback or None, retries, connect ms,
 * idle ms, persistence ms or 0, persistence entries at most or 0): the service's table,
 * replaced whole. */
static PyObject *py_set_table(PyObject *self, PyObject *args) {
    PyObject *co, *so, *servers, *order, *fallback;
    int least, retries;
    long long connect_ms, idle_ms, persist_ms;
    long persist_size;
    if (!PyArg_ParseTuple(args, "OOO!O!pOiLLLl", &co, &so, &PyTuple_Type, &servers,
                          &PyTuple_Type, &order, &least, &fallback, &retries, &connect_ms,
                          &idle_ms, &persist_ms, &persist_size))
        return NULL;
    struct core *c;
    struct service *svc = get_service(co, so, &c);
    if (svc == NULL) return NULL;
    struct table *t = calloc(1, sizeof *t);
    if (t == NULL) return PyErr_NoMemory();
    t->least = least;
    t->retries = retries;
    t->connect_ms = connect_ms;
    t->idle_ms = idle_ms;
    t->persist_ms = persist_ms;
    t->persist_size = persist_size;
    t->servers = calloc(PyTuple_GET_SIZE(servers) + 1, sizeof *t->servers);
    t->order = calloc(PyTuple_GET_SIZE(order) + 1, sizeof *t->order);
    if (!t->servers || !t->order) {
        table_free(t);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(servers); i++) {
        struct server *s = PyCapsule_GetPointer(PyTuple_GET_ITEM(servers, i), SERVER);
        if (s == NULL) {
            table_free(t);
            return NULL;
        }
        t->servers[t->nservers++] = server_ref(s);
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(order); i++) {
        long index = PyLong_AsLong(PyTuple_GET_ITEM(order, i));
        if (index < 0 || index >= t->nservers) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "order: not a server");
            table_free(t);
            return NULL;
        }
        t->order[t->norder++] = (int)index;
    }
    if (fallback != Py_None) {
        struct server *s = PyCapsule_GetPointer(fallback, SERVER);
        if (s == NULL) {
            table_free(t);
            return NULL;
        }
        t->fallback = server_ref(s);
    }
    pthread_mutex_lock(&c->lock);
    struct table *old = svc->table;
    svc->table = t;
    if (!persist_ms) sticks_drop(svc, always, 0);
    pthread_mutex_unlock(&c->lock);
    table_free(old);
    Py_RETURN_NONE;
}

static int used_before(struct stick *e, int64_t before) { return e->used <= before; }

/* expire(core, service, timeout ms): drop the entries unused that long, none open. */
static PyObject *py_expire(PyObject *self, PyObject *args) {
    PyObject *co, *so;
    long long timeout;
    struct core *c;
    if (!PyArg_ParseTuple(args, "OOL", &co, &so, &timeout)) return NULL;
    struct service *svc = get_service(co, so, &c);
    if (svc == NULL) return NULL;
    int64_t before = now_ms() - timeout;
    int dropped = 0;
    pthread_mutex_lock(&c->lock);
    /* Oldest first, up to the first used since: the walk is as long as what it drops (and the
     * open ones it passes), not the table, which the loop waits on meanwhile. An entry learned
     * from the peer goes in as the newest whatever its age: out of order it is dropped by a
     * later walk, and the hot path looks at each entry's own age. */
    for (struct stick *e = svc->oldest, *newer; e != NULL && e->used <= before; e = newer) {
        newer = e->newer;
        if (!e->open) {
            stick_drop(svc, stick_link(svc, e->client));
            dropped++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return PyLong_FromLong(dropped);
}

/* A client's key from its packed address (4 or 16 bytes, as socket.inet_pton); 0 if neither. */
static int packed_key(const Py_buffer *packed, unsigned char key[16]) {
    if (packed->len != 4 && packed->len != 16) return 0;
    struct sockaddr_storage a = {.ss_family = packed->len == 4 ? AF_INET : AF_INET6};
    memcpy(packed->len == 4 ? (void *)&((struct sockaddr_in *)&a)->sin_addr
                            : (void *)&((struct sockaddr_in6 *)&a)->sin6_addr,
           packed->buf, packed->len);
    client_key(&a, key);
    return 1;
}

/* learn(core, service, packed client, server, age ms): the peer's entry (Python has checked
 * it against its own table, the one that decides). */
static PyObject *py_learn(PyObject *self, PyObject *args) {
    PyObject *co, *so, *to;
    Py_buffer packed;
    long long age;
    struct core *c;
    if (!PyArg_ParseTuple(args, "OOy*OL", &co, &so, &packed, &to, &age)) return NULL;
    struct service *svc = get_service(co, so, &c);
    struct server *s = svc ? PyCapsule_GetPointer(to, SERVER) : NULL;
    unsigned char key[16];
    if (s != NULL && packed_key(&packed, key)) {
        pthread_mutex_lock(&c->lock);
        struct stick *e = stick_get(svc, key);
        if (e == NULL || !e->open) stick_put(c, svc, key, s, now_ms() - age);
        pthread_mutex_unlock(&c->lock);
    }
    PyBuffer_Release(&packed);
    if (s == NULL) return NULL;
    Py_RETURN_NONE;
}

/* drop(core, service, packed client): the peer dropped the client's entry and Python's table
 * did too; so does this one, unless a connection of the client is open here. Whether dropped. */
static PyObject *py_drop(PyObject *self, PyObject *args) {
    PyObject *co, *so;
    Py_buffer packed;
    struct core *c;
    if (!PyArg_ParseTuple(args, "OOy*", &co, &so, &packed)) return NULL;
    struct service *svc = get_service(co, so, &c);
    unsigned char key[16];
    int dropped = 0;
    if (svc != NULL && packed_key(&packed, key)) {
        pthread_mutex_lock(&c->lock);
        struct stick **p = stick_link(svc, key);
        if (p != NULL && *p != NULL && !(*p)->open) {
            stick_drop(svc, p);
            dropped = 1;
        }
        pthread_mutex_unlock(&c->lock);
    }
    PyBuffer_Release(&packed);
    if (svc == NULL) return NULL;
    return PyBool_FromLong(dropped);
}

/* forget(core, service, age ms): drop every entry used before ``age`` ago (0: all), as the
 * operator's clear and the peer's do; how many. */
static PyObject *py_forget(PyObject *self, PyObject *args) {
    PyObject *co, *so;
    long long age;
    struct core *c;
    if (!PyArg_ParseTuple(args, "OOL", &co, &so, &age)) return NULL;
    struct service *svc = get_service(co, so, &c);
    if (svc == NULL) return NULL;
    pthread_mutex_lock(&c->lock);
    int dropped = sticks_drop(svc, used_before, now_ms() - age);
    pthread_mutex_unlock(&c->lock);
    return PyLong_FromLong(dropped);
}

/* listen(core, fd, id, port, service): relay what ``fd`` (a listening socket, duplicated:
 * Python closes its own when it likes) accepts to ``service``. */
static PyObject *py_listen(PyObject *self, PyObject *args) {
    PyObject *co, *so;
    int fd, id, port;
    if (!PyArg_ParseTuple(args, "OiiiO", &co, &fd, &id, &port, &so)) return NULL;
    struct core *c;
    struct service *svc = get_service(co, so, &c);
    if (svc == NULL) return NULL;
    struct listener *l = calloc(1, sizeof *l);
    if (l == NULL) return PyErr_NoMemory();
    l->kind = LISTENER;
    l->id = id;
    l->port = port;
    l->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    l->service = service_ref(svc);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = l};
    /* The loop must never block in accept: a client gone from the queue would hold it. */
    if (l->fd < 0 || fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK) < 0 ||
        epoll_ctl(c->epoll, EPOLL_CTL_ADD, l->fd, &e) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (l->fd >= 0) close(l->fd);
        service_unref(svc);
        free(l);
        return NULL;
    }
    pthread_mutex_lock(&c->lock);
    l->next = c->listeners;
    c->listeners = l;
    pthread_mutex_unlock(&c->lock);
    Py_RETURN_NONE;
}

/* relisten(core, id, service or None): the listener's new service (a commit moved its port),
 * or None: it stops accepting; its connections carry on. */
static PyObject *py_relisten(PyObject *self, PyObject *args) {
    PyObject *co, *so;
    int id;
    if (!PyArg_ParseTuple(args, "OiO", &co, &id, &so)) return NULL;
    struct core *c = get_core(co);
    struct service *svc = so == Py_None ? NULL : PyCapsule_GetPointer(so, SERVICE);
    if (c == NULL || (so != Py_None && svc == NULL)) return NULL;
    pthread_mutex_lock(&c->lock);
    for (struct listener **p = &c->listeners; *p; p = &(*p)->next) {
        struct listener *l = *p;
        if (l->id != id) continue;
        if (svc != NULL) {
            service_unref(l->service);
            l->service = service_ref(svc);
        } else {
            STORE(l->gone, 1);
            epoll_ctl(c->epoll, EPOLL_CTL_DEL, l->fd, NULL);
            *p = l->next;
            l->next = c->dead;  /* freed by the loop, between two waits */
            c->dead = l;
        }
        break;
    }
    pthread_mutex_unlock(&c->lock);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"core", py_core, METH_NOARGS, "A relay core, not started."},
    {"start", py_start, METH_O, "Start the core's loop thread."},
    {"stop", py_stop, METH_O, "Stop the loop thread; its connections close."},
    {"events_fd", py_events_fd, METH_O, "The eventfd readable when events are queued."},
    {"events", py_events, METH_O, "The queued events and how many were lost."},
    {"server", py_server, METH_VARARGS, "A real server: (id, family, packed address, port)."},
    {"set_server", py_set_server, METH_VARARGS, "What a server takes: (takes, weight, max)."},
    {"counters", py_counters, METH_O, "(active, total, bytes in, bytes out)."},
    {"service", py_service, METH_VARARGS, "A virtual service: (id)."},
    {"set_table", py_set_table, METH_VARARGS, "A service's table, replaced whole."},
    {"listen", py_listen, METH_VARARGS, "Relay a listening socket's clients to a service."},
    {"expire", py_expire, METH_VARARGS, "Drop persistence entries unused that long."},
    {"drop", py_drop, METH_VARARGS, "Drop a client's persistence entry, none open."},
    {"learn", py_learn, METH_VARARGS, "Take the peer's persistence entry."},
    {"forget", py_forget, METH_VARARGS, "Drop persistence entries used before age ago."},
    {"relisten", py_relisten, METH_VARARGS, "A listener's new service, or None: stop."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef relay_module = {
    PyModuleDef_HEAD_INIT, .m_name = "balancer._relay",
    .m_doc = "The built-in engine's compiled relay core.", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__relay(void) {
    const char *fault = getenv("BALANCER_RELAY_FAULT");
    fault_port = fault ? atoi(fault) : 0;
    PyObject *module = PyModule_Create(&relay_module);
    if (module != NULL && (PyModule_AddIntConstant(module, "VERSION", RELAY_VERSION) < 0 ||
                           PyModule_AddIntConstant(module, "TAKES_NEW", TAKES_NEW) < 0 ||
                           PyModule_AddIntConstant(module, "TAKES_NONE", TAKES_NONE) < 0 ||
                           PyModule_AddIntConstant(module, "UNREACHABLE", EV_UNREACHABLE) < 0 ||
                           PyModule_AddIntConstant(module, "REFUSED", EV_REFUSED) < 0 ||
                           PyModule_AddIntConstant(module, "IDLE", EV_IDLE) < 0 ||
                           PyModule_AddIntConstant(module, "STICK", EV_STICK) < 0 ||
                           PyModule_AddIntConstant(module, "HOLD", EV_HOLD) < 0 ||
                           PyModule_AddIntConstant(module, "RELEASE", EV_RELEASE) < 0 ||
                           PyModule_AddIntConstant(module, "EVICT", EV_EVICT) < 0 ||
                           PyModule_AddIntConstant(module, "TAKES_STUCK", TAKES_STUCK) < 0 ||
                           PyModule_AddIntConstant(module, "FAULT", fault_port) < 0))
        Py_CLEAR(module);
    return module;
}
