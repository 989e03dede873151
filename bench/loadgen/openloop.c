/*
 * openloop: an open-loop HTTP/1.1 load generator for loopback benchmarks (part of rtserve's bench/).
 *
 * Request i is due at t0 + i/rate, whatever happened to the requests before it. Its latency is measured from
 * that intended send time to the last byte of its response, so a server that stalls cannot hide the requests
 * that queued behind the stall (no coordinated omission). Requests go out on keep-alive connections, one request
 * in flight per connection; a due request takes an idle connection, or opens a new one up to -c, or waits in the
 * generator (its wait counts in its latency). One thread, epoll, a timerfd armed at the next intended send time.
 *
 * Everything is bounded: the run sends rate*duration requests, stops waiting for answers at duration+timeout,
 * and connects only to the IPv4 address given (the bench passes 127.0.0.1).
 *
 * usage: openloop -a 127.0.0.1 -p PORT -u PATH -b BODYFILE -r RATE -d SECONDS [-c MAXCONNS] [-t TIMEOUT_S]
 *                 [-H 'Name: value']...
 * prints one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#define MAX_CONNS 1024
#define TIMER_TAG UINT64_MAX

enum state { FREE, CONNECTING, IDLE, WRITING, READING };

struct conn {
    int fd;
    enum state state;
    size_t written;
    char *in;
    size_t in_len, in_cap;
    long request; /* index of the request in flight */
};

static struct conn conns[MAX_CONNS];
static int epfd, timer_fd;
static struct sockaddr_in addr;
static char *request_bytes;
static size_t request_len;
static long total, next_dispatch, done_ok, done_non2xx, done_error;
static int open_conns, max_open_conns, max_conns = 256;
static long pool_exhausted;
static int64_t t0, interval_ns;
static int64_t *latency_ns, *dispatch_delay_ns;
static unsigned char *finished;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t intended(long i) { return t0 + (int64_t)i * interval_ns; }

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void conn_close(struct conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        open_conns--;
    }
    c->fd = -1;
    c->state = FREE;
    c->in_len = 0;
}

static void finish(struct conn *c, int status) {
    long r = c->request;
    if (r >= 0 && !finished[r]) {
        finished[r] = 1;
        latency_ns[r] = now_ns() - intended(r);
        if (status >= 200 && status < 300)
            done_ok++;
        else if (status > 0)
            done_non2xx++;
        else
            done_error++;
        if (status <= 0 || status >= 300) latency_ns[r] = -1; /* only 2xx answers enter the percentiles */
    }
    c->request = -1;
}

static void fail(struct conn *c) {
    finish(c, -1);
    conn_close(c);
}

static void want(struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(c - conns)};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
}

static struct conn *conn_open(void) {
    for (int i = 0; i < max_conns; i++) {
        struct conn *c = &conns[i];
        if (c->state != FREE) continue;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) die("socket");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        open_conns++;
        if (open_conns > max_open_conns) max_open_conns = open_conns;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add");
        int rc = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
        if (rc < 0 && errno != EINPROGRESS) {
            conn_close(c);
            return NULL;
        }
        c->state = CONNECTING;
        c->request = -1;
        c->in_len = 0;
        return c;
    }
    return NULL;
}

static void try_write(struct conn *c) {
    while (c->written < request_len) {
        ssize_t n = send(c->fd, request_bytes + c->written, request_len - c->written, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                want(c, EPOLLOUT);
                return;
            }
            fail(c);
            return;
        }
        c->written += (size_t)n;
    }
    c->state = READING;
    want(c, EPOLLIN);
}

static void start_request(struct conn *c, long r) {
    c->request = r;
    c->written = 0;
    c->in_len = 0;
    dispatch_delay_ns[r] = now_ns() - intended(r);
    if (c->state == CONNECTING) return; /* sent once the connection is up */
    c->state = WRITING;
    try_write(c);
}

/* Length of a complete chunked body starting at p, or -1 while incomplete. */
static long chunked_length(const char *p, size_t len) {
    size_t pos = 0;
    for (int guard = 0; guard < 100000; guard++) {
        const char *eol = memmem(p + pos, len - pos, "\r\n", 2);
        if (!eol) return -1;
        long size = strtol(p + pos, NULL, 16);
        pos = (size_t)(eol - p) + 2;
        if (size == 0) {
            const char *end = memmem(p + pos, len - pos, "\r\n", 2); /* no trailers expected */
            return end ? (long)((size_t)(end - p) + 2) : -1;
        }
        if (pos + (size_t)size + 2 > len) return -1;
        pos += (size_t)size + 2;
    }
    return -1;
}

static const char *header_value(const char *head, size_t head_len, const char *name) {
    size_t name_len = strlen(name);
    const char *p = head;
    const char *end = head + head_len;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > name_len && strncasecmp(p, name, name_len) == 0 && p[name_len] == ':') {
            const char *v = p + name_len + 1;
            while (*v == ' ') v++;
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* 1 when a whole response is in the buffer (and consumes it), 0 when more bytes are needed. */
static int parse_response(struct conn *c, int *status, int *close_after) {
    const char *head_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!head_end) return 0;
    size_t head_len = (size_t)(head_end - c->in) + 4;
    if (c->in_len < 12 || strncmp(c->in, "HTTP/1.", 7) != 0) {
        *status = -1;
        *close_after = 1;
        return 1;
    }
    *status = atoi(c->in + 9);
    const char *connection = header_value(c->in, head_len, "Connection");
    *close_after = (connection && strncasecmp(connection, "close", 5) == 0) || c->in[7] == '0';
    const char *length = header_value(c->in, head_len, "Content-Length");
    const char *encoding = header_value(c->in, head_len, "Transfer-Encoding");
    size_t total_len;
    if (length) {
        total_len = head_len + (size_t)strtoul(length, NULL, 10);
    } else if (encoding && strncasecmp(encoding, "chunked", 7) == 0) {
        long body = chunked_length(c->in + head_len, c->in_len - head_len);
        if (body < 0) return 0;
        total_len = head_len + (size_t)body;
    } else {
        return 0; /* delimited by close: finished in on_readable at EOF */
    }
    if (c->in_len < total_len) return 0;
    c->in_len = 0; /* one request in flight per connection: nothing follows */
    return 1;
}

static void on_readable(struct conn *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
            if (c->in_cap > (64u << 20)) {
                fail(c);
                return;
            }
            c->in = realloc(c->in, c->in_cap);
            if (!c->in) die("realloc");
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            int status, close_after;
            if (parse_response(c, &status, &close_after)) {
                finish(c, status);
                if (close_after)
                    conn_close(c);
                else
                    c->state = IDLE;
                return;
            }
            continue;
        }
        if (n == 0) { /* EOF: a close-delimited answer is complete now, anything else failed */
            const char *head_end = c->in_len ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
            finish(c, head_end && c->request >= 0 ? atoi(c->in + 9) : -1);
            conn_close(c);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        fail(c);
        return;
    }
}

static void on_event(struct conn *c, uint32_t events) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            fail(c);
            return;
        }
        if (c->request >= 0) {
            c->state = WRITING;
            try_write(c);
        } else {
            c->state = IDLE;
            want(c, EPOLLIN);
        }
        return;
    }
    if (c->state == WRITING) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            fail(c);
            return;
        }
        try_write(c);
        return;
    }
    if (c->state == READING) {
        on_readable(c);
        return;
    }
    if (c->state == IDLE && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) conn_close(c); /* server closed it */
}

static void dispatch(int64_t now) {
    while (next_dispatch < total && intended(next_dispatch) <= now) {
        struct conn *c = NULL;
        for (int i = 0; i < max_conns; i++) {
            if (conns[i].state == IDLE) {
                c = &conns[i];
                break;
            }
        }
        if (!c && open_conns < max_conns) c = conn_open();
        if (!c) {
            pool_exhausted++;
            return; /* every connection is busy: the request waits, its clock already running */
        }
        start_request(c, next_dispatch++);
    }
}

static void arm_timer(void) {
    if (next_dispatch >= total) return;
    int64_t at = intended(next_dispatch);
    struct itimerspec its = {.it_value = {.tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL}};
    if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const int64_t *sorted, long n, double q) {
    if (n == 0) return -1;
    long i = (long)(q * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1000.0;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) die("read body");
    fclose(f);
    *len = (size_t)size;
    return buf;
}

int main(int argc, char **argv) {
    const char *address = "127.0.0.1", *path = "/", *body_file = NULL;
    const char *headers[MAX_HEADERS];
    int n_headers = 0, port = 0, opt;
    double rate = 0, duration = 0, timeout = 5;
    while ((opt = getopt(argc, argv, "a:p:u:b:r:d:c:t:H:")) != -1) {
        switch (opt) {
        case 'a': address = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 'b': body_file = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'c': max_conns = atoi(optarg); break;
        case 't': timeout = atof(optarg); break;
        case 'H':
            if (n_headers < MAX_HEADERS) headers[n_headers++] = optarg;
            break;
        default: fprintf(stderr, "bad option\n"); return 2;
        }
    }
    if (!port || !body_file || rate <= 0 || duration <= 0 || duration > 600 || max_conns < 1 || max_conns > MAX_CONNS ||
        rate * duration > 5e6) {
        fprintf(stderr, "usage: openloop -p PORT -u PATH -b BODY -r RATE -d SECONDS [-c CONNS] [-t TIMEOUT] [-H h]\n");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &addr.sin_addr) != 1) die("address");

    size_t body_len;
    char *body = read_file(body_file, &body_len);
    size_t cap = body_len + 4096;
    request_bytes = malloc(cap);
    int head = snprintf(request_bytes, cap, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %zu\r\n", path,
                        address, port, body_len);
    for (int i = 0; i < n_headers; i++) head += snprintf(request_bytes + head, cap - (size_t)head, "%s\r\n", headers[i]);
    head += snprintf(request_bytes + head, cap - (size_t)head, "\r\n");
    memcpy(request_bytes + head, body, body_len);
    request_len = (size_t)head + body_len;

    total = (long)(rate * duration);
    interval_ns = (int64_t)(1e9 / rate);
    latency_ns = calloc((size_t)total, sizeof *latency_ns);
    dispatch_delay_ns = calloc((size_t)total, sizeof *dispatch_delay_ns);
    finished = calloc((size_t)total, 1);
    for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1, conns[i].request = -1;

    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* wake within 1 us of the timer, not the default 50 us */
    epfd = epoll_create1(EPOLL_CLOEXEC);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
    epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &tev);

    t0 = now_ns() + 1000000; /* first request 1 ms from now */
    int64_t stop_at = t0 + (int64_t)((duration + timeout) * 1e9);
    struct epoll_event events[256];
    arm_timer();
    for (long loops = 0; loops < 100000000L; loops++) {
        if (done_ok + done_non2xx + done_error >= total) break;
        int64_t now = now_ns();
        if (now >= stop_at) break;
        int wait_ms = (int)((stop_at - now) / 1000000) + 1;
        int n = epoll_wait(epfd, events, 256, wait_ms > 100 ? 100 : wait_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == TIMER_TAG) {
                uint64_t expirations;
                if (read(timer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timer read");
                continue;
            }
            on_event(&conns[events[i].data.u64], events[i].events);
        }
        dispatch(now_ns());
        arm_timer();
    }
    int64_t elapsed = now_ns() - t0;

    long n_ok = 0, n_sent = next_dispatch;
    int64_t *ok = malloc(sizeof *ok * (size_t)(total ? total : 1));
    int64_t *delay = malloc(sizeof *delay * (size_t)(total ? total : 1));
    double sum = 0;
    for (long i = 0; i < total; i++) {
        if (finished[i] && latency_ns[i] >= 0) {
            ok[n_ok++] = latency_ns[i];
            sum += (double)latency_ns[i];
        }
        if (i < n_sent) delay[i] = dispatch_delay_ns[i];
    }
    qsort(ok, (size_t)n_ok, sizeof *ok, cmp64);
    qsort(delay, (size_t)n_sent, sizeof *delay, cmp64);
    long unfinished = total - (done_ok + done_non2xx + done_error);
    printf("{\"rate\": %.3f, \"duration_s\": %.3f, \"elapsed_s\": %.3f, \"scheduled\": %ld, \"sent\": %ld, "
           "\"ok\": %ld, \"non2xx\": %ld, \"errors\": %ld, \"unfinished\": %ld, \"achieved_rps\": %.3f, "
           "\"max_connections\": %d, \"pool_exhausted\": %ld, "
           "\"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f, "
           "\"mean\": %.1f}, "
           "\"dispatch_delay_us\": {\"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}}\n",
           rate, duration, (double)elapsed / 1e9, total, n_sent, done_ok, done_non2xx, done_error, unfinished,
           (double)n_ok / duration, max_open_conns, pool_exhausted, pct(ok, n_ok, 0.50), pct(ok, n_ok, 0.90),
           pct(ok, n_ok, 0.99), pct(ok, n_ok, 0.999), n_ok ? (double)ok[n_ok - 1] / 1000.0 : -1,
           n_ok ? sum / (double)n_ok / 1000.0 : -1, pct(delay, n_sent, 0.50), pct(delay, n_sent, 0.99),
           n_sent ? (double)delay[n_sent - 1] / 1000.0 : -1);
    return 0;
}
