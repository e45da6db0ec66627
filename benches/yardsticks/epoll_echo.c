/*
 * A minimal epoll echo server: the C yardstick benches/compare.sh measures tcpool against.
 * Every read's bytes go straight back; nothing is parsed.
 *
 *   cc -O2 -pthread -o epoll_echo benches/yardsticks/epoll_echo.c
 *   ./epoll_echo            # one thread, on a free loopback port (printed)
 *   ./epoll_echo -t 0 9000  # one thread per CPU, SO_REUSEPORT, on 127.0.0.1:9000
 *
 * Usage: epoll_echo [-t THREADS] [-r] [PORT]. THREADS is 1 by default; 0 means one per
 * online CPU. With more than one thread (or with -r), each thread has its own listening
 * socket with SO_REUSEPORT on the same port (the first binds PORT, possibly 0, the others the
 * port it got), its own epoll and its own connections: the kernel spreads new connections
 * over the sockets. Once every socket listens it prints `listening on 127.0.0.1:PORT` on
 * stdout.
 *
 * Level-triggered, non-blocking, TCP_NODELAY. Each thread reads into one 64 KiB buffer and
 * writes what it read back at once. What the socket does not take is copied into the
 * connection's own buffer (allocated the first time, at most 64 KiB), and the connection
 * stops reading until EPOLLOUT has let all of it out: no byte is dropped, and memory stays
 * within 64 KiB per connection. EOF or an error closes the connection. Out of descriptors,
 * a thread stops accepting for 100 ms instead of spinning. SIGTERM or SIGINT ends it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 256
/* Reads in a row on one connection before the others get their turn. */
#define READS_PER_TURN 8

struct conn {
    int fd;
    /* Bytes read but not yet written back: pending[off..len). */
    char *pending;
    uint32_t off, len;
};

struct worker {
    pthread_t thread;
    int listener;
    int epoll;
    /* The address of this marks the listener in epoll_data.ptr. */
    char listener_mark;
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int listen_on(uint16_t port, int reuseport) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR");
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        die("SO_REUSEPORT");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

static void watch(struct worker *w, int op, int fd, uint32_t events, void *ptr) {
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(w->epoll, op, fd, &ev) < 0) die("epoll_ctl");
}

static void close_conn(struct conn *c) {
    close(c->fd); /* also takes it out of the epoll set */
    free(c->pending);
    free(c);
}

/* Accepts everything waiting. Returns 0, or -1 when out of descriptors or memory. */
static int accept_all(struct worker *w) {
    for (;;) {
        int fd = accept4(w->listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                perror("accept");
                return -1;
            }
            die("accept");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            return -1;
        }
        c->fd = fd;
        watch(w, EPOLL_CTL_ADD, fd, EPOLLIN, c);
    }
}

/* Writes pending bytes. Returns 1 when all are out, 0 when some wait for EPOLLOUT, -1 on
 * error. */
static int flush(struct conn *c) {
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->pending + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        c->off += (uint32_t)n;
    }
    c->off = c->len = 0;
    return 1;
}

/* Reads and echoes. Returns 0 to keep the connection, -1 to close it. Called only with
 * nothing pending. */
static int echo(struct worker *w, struct conn *c, char *buf) {
    for (int turn = 0; turn < READS_PER_TURN; turn++) {
        ssize_t n = recv(c->fd, buf, BUF_SIZE, 0);
        if (n == 0) return -1;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        ssize_t done = 0;
        while (done < n) {
            ssize_t m = send(c->fd, buf + done, (size_t)(n - done), MSG_NOSIGNAL);
            if (m < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                return -1;
            }
            done += m;
        }
        if (done < n) {
            /* Keep the rest and stop reading until it is out. */
            if (!c->pending && !(c->pending = malloc(BUF_SIZE))) return -1;
            memcpy(c->pending, buf + done, (size_t)(n - done));
            c->off = 0;
            c->len = (uint32_t)(n - done);
            watch(w, EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
            return 0;
        }
        if (n < BUF_SIZE) return 0; /* most likely drained; level-triggered tells otherwise */
    }
    return 0;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void *run(void *arg) {
    struct worker *w = arg;
    char *buf = malloc(BUF_SIZE);
    if (!buf) die("malloc");
    struct epoll_event events[MAX_EVENTS];
    /* While out of descriptors: when to accept again (0: accepting). */
    long long paused_until = 0;
    for (;;) {
        int timeout = -1;
        if (paused_until) {
            long long left = paused_until - now_ms();
            if (left <= 0) {
                watch(w, EPOLL_CTL_MOD, w->listener, EPOLLIN, &w->listener_mark);
                paused_until = 0;
            } else {
                timeout = (int)left;
            }
        }
        int n = epoll_wait(w->epoll, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == &w->listener_mark) {
                if (accept_all(w) < 0) {
                    /* Out of descriptors: pause accepting rather than spin on the listener. */
                    watch(w, EPOLL_CTL_MOD, w->listener, 0, &w->listener_mark);
                    paused_until = now_ms() + 100;
                }
                continue;
            }
            struct conn *c = events[i].data.ptr;
            uint32_t ev = events[i].events;
            int keep;
            if (c->len > 0) {
                /* Waiting to write: EPOLLOUT, or EPOLLERR/EPOLLHUP, which the write reports. */
                keep = flush(c);
                if (keep == 1) {
                    watch(w, EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
                    keep = 0;
                }
            } else if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                /* A read reports an error or EOF; data still buffered is echoed first. */
                keep = echo(w, c, buf);
            } else {
                keep = 0;
            }
            if (keep < 0) close_conn(c);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    long threads = 1;
    long port = 0;
    int opt, reuseport = 0;
    while ((opt = getopt(argc, argv, "t:r")) != -1) {
        if (opt == 't') {
            threads = strtol(optarg, NULL, 10);
        } else if (opt == 'r') {
            reuseport = 1;
        } else {
            fprintf(stderr, "usage: %s [-t THREADS] [-r] [PORT]\n", argv[0]);
            return 2;
        }
    }
    if (optind < argc) port = strtol(argv[optind], NULL, 10);
    if (threads == 0) threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1 || threads > 1024 || port < 0 || port > 65535) {
        fprintf(stderr, "bad thread count or port\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* As many descriptors as allowed: 1000 connections need more than the usual 1024. */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    if (!workers) die("calloc");
    if (threads > 1) reuseport = 1;
    for (long i = 0; i < threads; i++) {
        workers[i].listener = listen_on((uint16_t)port, reuseport);
        if (i == 0) {
            struct sockaddr_in addr;
            socklen_t len = sizeof addr;
            if (getsockname(workers[0].listener, (struct sockaddr *)&addr, &len) < 0)
                die("getsockname");
            port = ntohs(addr.sin_port);
        }
        workers[i].epoll = epoll_create1(EPOLL_CLOEXEC);
        if (workers[i].epoll < 0) die("epoll_create1");
        watch(&workers[i], EPOLL_CTL_ADD, workers[i].listener, EPOLLIN, &workers[i].listener_mark);
    }
    printf("listening on 127.0.0.1:%ld (%ld thread%s%s)\n", port, threads, threads > 1 ? "s" : "",
           reuseport ? ", SO_REUSEPORT" : "");
    fflush(stdout);
    for (long i = 1; i < threads; i++)
        if (pthread_create(&workers[i].thread, NULL, run, &workers[i]) != 0) die("pthread_create");
    run(&workers[0]);
    return 0;
}
