/* bench/base_fd.h - send and take over a file descriptor (Unix sockets,
 * pipes) for the baseline programs, blocking or busy-polling.
 *
 * Blocking: plain read()/write() (recv()/send() for sockets) that sleep in
 * the kernel until data or room is there.  Spinning: the descriptor is
 * O_NONBLOCK and the calls are retried at once on EAGAIN, so the caller
 * never sleeps (the busy-poll variant BENCH.md asks for; the system call is
 * still made on every attempt).
 *
 * Streams (SOCK_STREAM, pipes) are read into a buffer of BASE_FD_BUF bytes
 * (or one record, if larger) as they arrive, and every whole record read so
 * far is handed out at once; the rest stays for the next take.  Message
 * sockets (SOCK_SEQPACKET) are read one message per call, and a truncated or
 * short message is an error.
 */
#ifndef BUS_BENCH_BASE_FD_H
#define BUS_BENCH_BASE_FD_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_util.h"

#define BASE_FD_BUF (256u * 1024)

struct base_fd {
	int rfd, wfd;
	int spin;   /* O_NONBLOCK and retry on EAGAIN */
	int socket; /* send()/recv() with MSG_NOSIGNAL instead of write()/read() */
	int packet; /* one message per recv() */
	char *buf;
	size_t cap, start, end;
	const char *prog;
};

static void base_fd_nonblock(int fd, const char *prog)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		bench_die("%s: fcntl(O_NONBLOCK): %s", prog, strerror(errno));
}

/* base_fd_init() - after fork, in the worker that reads @rfd and writes
 * @wfd (either may be -1). */
static void base_fd_init(struct base_fd *f, int rfd, int wfd, size_t record)
{
	f->rfd = rfd;
	f->wfd = wfd;
	f->cap = record > BASE_FD_BUF ? record : BASE_FD_BUF;
	f->buf = aligned_alloc(64, (f->cap + 63) & ~(size_t)63);
	if (!f->buf)
		bench_die("%s: out of memory", f->prog);
	memset(f->buf, 0, f->cap);
	f->start = f->end = 0;
	if (f->spin) {
		if (rfd >= 0)
			base_fd_nonblock(rfd, f->prog);
		if (wfd >= 0 && wfd != rfd)
			base_fd_nonblock(wfd, f->prog);
	}
}

static void base_fd_send(struct base_fd *f, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = f->socket ? send(f->wfd, p, len, MSG_NOSIGNAL) : write(f->wfd, p, len);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			bench_die("%s: send: %s", f->prog, strerror(errno));
		}
		if (f->packet && (size_t)n != len)
			bench_die("%s: send: %zd of %zu bytes", f->prog, n, len);
		p += n;
		len -= (size_t)n;
	}
}

/* One read of whatever is there (at least one byte): blocking, or retried
 * on EAGAIN. */
static size_t base_fd_read(struct base_fd *f, char *dst, size_t cap)
{
	for (;;) {
		ssize_t n = f->socket ? recv(f->rfd, dst, cap, f->packet ? MSG_TRUNC : 0)
				      : read(f->rfd, dst, cap);
		if (n > 0) {
			if ((size_t)n > cap)
				bench_die("%s: recv: message of %zd bytes truncated to %zu", f->prog,
					  n, cap);
			return (size_t)n;
		}
		if (n == 0)
			bench_die("%s: recv: end of file (peer gone)", f->prog);
		if (errno != EINTR && errno != EAGAIN)
			bench_die("%s: recv: %s", f->prog, strerror(errno));
	}
}

static const void *base_fd_take(struct base_fd *f, size_t len, size_t *out)
{
	if (f->packet) {
		size_t n = base_fd_read(f, f->buf, f->cap);
		if (n != len)
			bench_die("%s: recv: message of %zu bytes, expected %zu", f->prog, n, len);
		*out = n;
		return f->buf;
	}
	if (f->end - f->start < len) {
		if (f->start > 0) {
			memmove(f->buf, f->buf + f->start, f->end - f->start);
			f->end -= f->start;
			f->start = 0;
		}
		while (f->end < len)
			f->end += base_fd_read(f, f->buf + f->end, f->cap - f->end);
	}
	*out = (f->end - f->start) / len * len;
	return f->buf + f->start;
}

static void base_fd_release(struct base_fd *f, size_t n)
{
	if (f->packet)
		return;
	f->start += n;
	if (f->start == f->end)
		f->start = f->end = 0;
}

#endif
