/*
 * A minimal closed-loop echo load generator on one thread and one epoll: the second,
 * independent generator of benches/compare.sh. It shares no code with `tcpool bench`.
 *
 *   cc -O2 -o epoll_client benches/yardsticks/epoll_client.c
 *   ./epoll_client 127.0.0.1:9000 -c 64 -s 64 -p 1 -w 0.5 -d 2
 *
 * Usage: epoll_client ADDR [-c CONNECTIONS] [-s SIZE] [-p PIPELINE] [-w WARMUP_S]
 *        [-d DURATION_S] [-t CONNECT_TIMEOUT_S]   (defaults: 64, 64, 1, 0.5, 2, 10)
 *
 * It opens every connection first; once all are open (or failed), each connection keeps
 * PIPELINE messages of SIZE bytes in flight: a new one is queued (and written at once, or as
 * soon as the socket takes it) whenever the whole echo of an earlier one has come back.
 * A message is printable bytes without `q` ending in `\n` (a line for line-based servers);
 * message m on connection i is variant (i + m) % 16 of 16 different ones, and every byte that
 * comes back is compared with the byte sent at that place in the stream, so a changed, lost,
 * duplicated or reordered message is caught. Latency runs from when a message is queued to
 * when its echo's last byte has been read, both read with clock_gettime(CLOCK_MONOTONIC).
 *
 * The first WARMUP_S seconds are not recorded; the next DURATION_S are: `messages` counts the
 * echoes completed in that window, `msgs_per_sec` is messages / DURATION_S, and the latency
 * percentiles are those of these messages. Then no new message is queued, and those in
 * flight are awaited (at most 5 s; missing ones count as `lost`). `answered` counts every
 * echo completed from the start to the end, warm-up and drain included, to divide a
 * server's CPU time over the whole run by.
 *
 * Latencies go into a log-linear histogram: exact below 128 ns, then 128 buckets per power
 * of two up to 2^40 ns (longer ones count as 2^40 ns). A percentile is the highest value of
 * its bucket, at most 0.8 % above the true value (the max is exact); memory is fixed
 * (36 KiB), whatever the run's length.
 *
 * Prints one line of JSON on stdout, latencies in microseconds:
 *   {"connections":64,"connected":64,"size":64,"pipeline":1,"warmup_s":0.5,"duration_s":2,
 *    "messages":N,"msgs_per_sec":X,"answered":A,"latency_us":{"p50":..,"p90":..,"p99":..,
 *    "p999":..,"max":..,"mean":..},"errors":E,"connect_failed":0,"closed":0,"mismatch":0,
 *    "lost":0}
 * errors = connect_failed + closed + mismatch + lost; each of the first three ends one
 * connection (it is not reopened). The first few errors are described on stderr. The exit
 * status is 0 without errors, 1 with, 2 when the arguments are wrong.
 *
 * Bounded: at most CONNECT_TIMEOUT_S + WARMUP_S + DURATION_S + 5 s; memory: 16 * SIZE bytes
 * of payloads, a 64 KiB read buffer, 8 * PIPELINE bytes of timestamps per connection.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define VARIANTS 16
#define READ_SIZE (64 * 1024)
#define MAX_EVENTS 256
#define MAX_IOV 64
#define DRAIN_NS (5 * NS)
#define NS 1000000000ull
/* Payload bytes: printable, no `q` (no stretch spells `quit`), no line ending. */
static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnoprstuvwxyz0123456789-_.:";

/* ---- histogram ---- */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define MAX_SHIFT 33 /* 2^(33+7) ns = 2^40 ns, some 18 minutes */
#define BUCKETS (SUB + (MAX_SHIFT + 1) * SUB)
static uint64_t hist[BUCKETS];
static uint64_t hist_n, hist_max, hist_sum;

static unsigned bucket_of(uint64_t v) {
    if (v < SUB) return (unsigned)v;
    unsigned e = 63 - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
    unsigned shift = e - SUB_BITS;
    if (shift > MAX_SHIFT) return BUCKETS - 1;
    return SUB + shift * SUB + (unsigned)((v >> shift) - SUB);
}

/* The highest value that falls in bucket b. */
static uint64_t bucket_top(unsigned b) {
    if (b < SUB) return b;
    unsigned shift = (b - SUB) / SUB;
    uint64_t mantissa = SUB + (b - SUB) % SUB;
    return ((mantissa + 1) << shift) - 1;
}

static void record(uint64_t ns) {
    hist[bucket_of(ns)]++;
    hist_n++;
    hist_sum += ns;
    if (ns > hist_max) hist_max = ns;
}

/* The smallest recorded value v with at least ceil(q * n) values <= v (its bucket's top). */
static uint64_t quantile(double q) {
    if (hist_n == 0) return 0;
    double exact = q * (double)hist_n;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact) rank++;
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < BUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank) {
            uint64_t top = bucket_top(b);
            return top < hist_max ? top : hist_max;
        }
    }
    return hist_max;
}

/* ---- connections ---- */
enum state { CONNECTING, OPEN, DEAD };

struct conn {
    int fd;
    unsigned idx;
    enum state state;
    uint32_t events;        /* what epoll watches now */
    uint64_t queued;        /* messages queued so far */
    uint64_t written;       /* bytes written so far */
    uint64_t received;      /* bytes echoed and checked so far */
    uint64_t *sent_at;      /* queue time of message m at [m % pipeline] */
};

static struct conn *conns;
static unsigned n_conns, size, pipeline;
static char *payloads[VARIANTS];
static int ep;
static uint64_t err_connect, err_closed, err_mismatch, err_lost, reported;
static uint64_t measured, answered;
static uint64_t window_start, window_end;
static int sending = 1;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void complain(const struct conn *c, const char *what) {
    if (reported++ < 5)
        fprintf(stderr, "epoll_client: connection %u: %s (%llu bytes sent, %llu checked)\n",
                c->idx, what, (unsigned long long)c->written, (unsigned long long)c->received);
}

static void kill_conn(struct conn *c, uint64_t *counter, const char *what) {
    (*counter)++;
    complain(c, what);
    close(c->fd);
    c->state = DEAD;
}

static void watch(struct conn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        perror("epoll_ctl");
        exit(1);
    }
    c->events = events;
}

/* Writes what is queued and not yet written; watches EPOLLOUT when the socket is full. */
static void flush(struct conn *c) {
    uint64_t end = c->queued * size;
    while (c->written < end) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (uint64_t at = c->written; at < end && n < MAX_IOV; n++) {
            uint64_t m = at / size, off = at % size;
            iov[n].iov_base = payloads[(c->idx + m) % VARIANTS] + off;
            iov[n].iov_len = size - off;
            at += size - off;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                watch(c, EPOLLIN | EPOLLOUT);
                return;
            }
            kill_conn(c, &err_closed, strerror(errno));
            return;
        }
        c->written += (uint64_t)w;
    }
    watch(c, EPOLLIN);
}

/* Queues messages up to the pipeline's depth, stamped `now`, and writes them. */
static void pump(struct conn *c, uint64_t now) {
    if (c->state != OPEN) return;
    while (sending && c->queued - c->received / size < pipeline) {
        c->sent_at[c->queued % pipeline] = now;
        c->queued++;
    }
    flush(c);
}

/* Reads and checks everything the socket has; completes messages; queues the next ones. */
static void on_readable(struct conn *c, char *buf) {
    for (int turn = 0; turn < 16; turn++) {
        ssize_t n = recv(c->fd, buf, READ_SIZE, 0);
        if (n == 0) {
            kill_conn(c, &err_closed, "closed by the server");
            return;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            kill_conn(c, &err_closed, strerror(errno));
            return;
        }
        uint64_t now = now_ns();
        if (c->received + (uint64_t)n > c->written) {
            kill_conn(c, &err_mismatch, "more bytes came back than were sent");
            return;
        }
        const char *p = buf;
        size_t left = (size_t)n;
        while (left > 0) {
            uint64_t m = c->received / size, off = c->received % size;
            size_t k = size - off < left ? (size_t)(size - off) : left;
            if (memcmp(p, payloads[(c->idx + m) % VARIANTS] + off, k) != 0) {
                kill_conn(c, &err_mismatch, "an echoed byte differs from the byte sent");
                return;
            }
            p += k;
            left -= k;
            c->received += k;
            if (off + k == size) {
                answered++;
                if (now >= window_start && now < window_end) {
                    measured++;
                    record(now - c->sent_at[m % pipeline]);
                }
            }
        }
        if ((size_t)n < READ_SIZE) break;
    }
    pump(c, now_ns());
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s ADDR [-c CONNECTIONS] [-s SIZE] [-p PIPELINE] [-w WARMUP_S] "
            "[-d DURATION_S] [-t CONNECT_TIMEOUT_S]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv) {
    long c_arg = 64, s_arg = 64, p_arg = 1;
    double warmup = 0.5, duration = 2, connect_timeout = 10;
    if (argc < 2 || argv[1][0] == '-') usage(argv[0]);
    const char *addr_arg = argv[1];
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "c:s:p:w:d:t:")) != -1) {
        switch (opt) {
        case 'c': c_arg = strtol(optarg, NULL, 10); break;
        case 's': s_arg = strtol(optarg, NULL, 10); break;
        case 'p': p_arg = strtol(optarg, NULL, 10); break;
        case 'w': warmup = strtod(optarg, NULL); break;
        case 'd': duration = strtod(optarg, NULL); break;
        case 't': connect_timeout = strtod(optarg, NULL); break;
        default: usage(argv[0]);
        }
    }
    if (c_arg < 1 || c_arg > 100000 || s_arg < 1 || s_arg > (1 << 24) || p_arg < 1 ||
        p_arg > 65536 || !(warmup >= 0) || !(duration > 0) || !(connect_timeout > 0) ||
        warmup > 3600 || duration > 3600 || connect_timeout > 3600)
        usage(argv[0]);
    n_conns = (unsigned)c_arg;
    size = (unsigned)s_arg;
    pipeline = (unsigned)p_arg;

    struct sockaddr_in addr = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(addr_arg, ':');
    if (!colon || (size_t)(colon - addr_arg) >= sizeof host) usage(argv[0]);
    memcpy(host, addr_arg, (size_t)(colon - addr_arg));
    host[colon - addr_arg] = 0;
    long port = strtol(colon + 1, NULL, 10);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || port < 1 || port > 65535) {
        fprintf(stderr, "epoll_client: ADDR must be IPv4:PORT, such as 127.0.0.1:9000\n");
        return 2;
    }
    addr.sin_port = htons((uint16_t)port);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    /* Payloads: xorshift64 over the alphabet, one sequence per variant, then `\n`. */
    for (unsigned v = 0; v < VARIANTS; v++) {
        payloads[v] = malloc(size);
        if (!payloads[v]) return 1;
        uint64_t x = (v + 1) * 0x9E3779B97F4A7C15ull;
        for (unsigned i = 0; i + 1 < size; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            payloads[v][i] = ALPHABET[x % (sizeof ALPHABET - 1)];
        }
        payloads[v][size - 1] = '\n';
    }
    char *buf = malloc(READ_SIZE);
    conns = calloc(n_conns, sizeof *conns);
    if (!buf || !conns) return 1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return 1;
    }

    /* Connect all, non-blocking; wait until each is open or failed. */
    uint64_t t0 = now_ns();
    uint64_t connect_deadline = t0 + (uint64_t)(connect_timeout * NS);
    unsigned pending = 0;
    for (unsigned i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        c->idx = i;
        c->state = DEAD;
        c->sent_at = malloc(sizeof(uint64_t) * pipeline);
        if (!c->sent_at) return 1;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            err_connect++;
            complain(c, strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            kill_conn(c, &err_connect, strerror(errno));
            continue;
        }
        c->state = CONNECTING;
        c->events = EPOLLOUT;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            perror("epoll_ctl");
            return 1;
        }
        pending++;
    }
    struct epoll_event events[MAX_EVENTS];
    while (pending > 0) {
        uint64_t now = now_ns();
        if (now >= connect_deadline) break;
        int n = epoll_wait(ep, events, MAX_EVENTS, (int)((connect_deadline - now) / 1000000 + 1));
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->state == OPEN) {
                /* Open already and waiting for the start: only a hang-up or error wakes it. */
                kill_conn(c, &err_closed, "closed by the server before the start");
                continue;
            }
            if (c->state != CONNECTING) continue;
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
            pending--;
            if (err) {
                kill_conn(c, &err_connect, strerror(err));
                continue;
            }
            c->state = OPEN;
            watch(c, 0);
        }
    }
    unsigned connected = 0;
    for (unsigned i = 0; i < n_conns; i++) {
        if (conns[i].state == CONNECTING) kill_conn(&conns[i], &err_connect, "connect timed out");
        if (conns[i].state == OPEN) connected++;
    }

    /* Load: warm-up, the measured window, then the drain. */
    uint64_t start = now_ns();
    window_start = start + (uint64_t)(warmup * NS);
    window_end = window_start + (uint64_t)(duration * NS);
    uint64_t drain_end = window_end + DRAIN_NS;
    for (unsigned i = 0; i < n_conns; i++) pump(&conns[i], start);
    for (;;) {
        uint64_t now = now_ns();
        if (sending && now >= window_end) sending = 0;
        if (!sending) {
            int busy = 0;
            for (unsigned i = 0; i < n_conns && !busy; i++)
                busy = conns[i].state == OPEN && conns[i].received < conns[i].queued * size;
            if (!busy || now >= drain_end) break;
        }
        uint64_t until = sending ? window_end : drain_end;
        int n = epoll_wait(ep, events, MAX_EVENTS, (int)((until - now) / 1000000 + 1));
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->state != OPEN) continue;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c, buf);
            if (c->state == OPEN && (events[i].events & EPOLLOUT)) flush(c);
        }
    }
    for (unsigned i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        if (c->state != OPEN) continue;
        /* Messages queued whose echo never came back in full. */
        uint64_t missing = c->queued - c->received / size;
        if (missing > 0) {
            err_lost += missing;
            complain(c, "echoes still missing 5 s after the window closed");
        }
        close(c->fd);
    }

    uint64_t errors = err_connect + err_closed + err_mismatch + err_lost;
    printf("{\"connections\":%u,\"connected\":%u,\"size\":%u,\"pipeline\":%u,\"warmup_s\":%g,"
           "\"duration_s\":%g,\"messages\":%llu,\"msgs_per_sec\":%.1f,\"answered\":%llu,"
           "\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,"
           "\"mean\":%.1f},\"errors\":%llu,\"connect_failed\":%llu,\"closed\":%llu,"
           "\"mismatch\":%llu,\"lost\":%llu}\n",
           n_conns, connected, size, pipeline, warmup, duration, (unsigned long long)measured,
           (double)measured / duration, (unsigned long long)answered, quantile(0.50) / 1e3,
           quantile(0.90) / 1e3, quantile(0.99) / 1e3, quantile(0.999) / 1e3, hist_max / 1e3,
           hist_n ? (double)hist_sum / (double)hist_n / 1e3 : 0.0, (unsigned long long)errors,
           (unsigned long long)err_connect, (unsigned long long)err_closed,
           (unsigned long long)err_mismatch, (unsigned long long)err_lost);
    return errors ? 1 : 0;
}
