/* The compiled relay core's shared shapes (relay.c). Python (balancer/engines/builtin/core.py)
 * keeps the policy and writes these tables; the loop thread only reads them to pick a server,
 * and writes only the counters. */
#ifndef BALANCER_RELAY_H
#define BALANCER_RELAY_H

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

/* core.py checks it against its own, so a stale build left in the tree is never run. */
#define RELAY_VERSION 2

/* What a real server takes, as Python decided from its state, weight and health. */
enum takes { TAKES_NONE = 0, TAKES_STUCK = 1, TAKES_NEW = 2 };  /* stuck: drain, weight 0 */

/* Counters: written by the loop thread only, read by Python at any time (relaxed atomics: each
 * value is whole, the set need not be a snapshot). */
struct counters {
    int64_t active, total, bytes_in, bytes_out;
};

/* A real server. Shared by Python's handle, the tables and connections, so refcounted: a
 * connection keeps its server's counters alive after a commit removed it. */
struct server {
    int refs;
    int id;                      /* Python's name for it in events */
    int takes, weight, maxconn;  /* set by Python (atomics) */
    int vip_port;                /* 1: the listener's port, as a server without a port */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct counters counters;
};

/* A service's table, replaced whole by Python under the core's lock. */
struct table {
    int nservers;
    struct server **servers;
    int norder;
    int *order;                  /* weighted round robin: indexes into servers */
    int least;                   /* least connections instead */
    struct server *fallback;     /* may be NULL */
    int retries;
    int64_t connect_ms, idle_ms;
    int64_t persist_ms;          /* source-IP persistence's timeout; 0: none */
    long persist_size;           /* its entries at most, as Python's table; 0: no limit */
};

/* A source-IP persistence entry: the client's server, when last used, its open connections.
 * Python's StickTable mirrors them from the events (stick, hold, release) and stays the one
 * that lists, journals and replicates them; the core's copy answers the hot path. */
struct stick {
    struct stick *next;          /* in its bucket */
    struct stick *older, *newer; /* in order of last use, as Python's OrderedDict */
    unsigned char client[16];    /* IPv4 as IPv4-mapped IPv6 */
    struct server *server;
    int64_t used;
    int open;                    /* the client's connections open, whatever became of the entry */
    int gone;                    /* dropped (evicted, cleared) while some were: kept aside, out
                                  * of the order of use and the count, for that count alone */
};

struct service {
    int refs;
    int id;
    struct table *table;         /* under the core's lock */
    unsigned cursor;             /* under the core's lock */
    struct stick **buckets;      /* under the core's lock */
    unsigned nbuckets, nsticks;
    struct stick *oldest, *newest;  /* under the core's lock */
    struct counters counters;
};

#endif
