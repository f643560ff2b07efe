/* bench/base_uds.c - Unix domain sockets as a baseline: round trip and
 * throughput between two pinned processes (driver: base_common.h).
 *
 * usage: base_uds rtt  VARIANT [SIZE [ROUND_TRIPS [WARMUP]]]
 *        base_uds tput VARIANT [SIZE [RECORDS]]
 * VARIANT: stream-block, stream-spin, seqpacket-block, seqpacket-spin
 *
 * A socketpair(AF_UNIX) made before the fork, as a parent would hand it to
 * its children (bind/connect on a path gives the same kernel object).
 * Blocking variants sleep in recv(); spinning ones set O_NONBLOCK and retry
 * recv()/send() on EAGAIN (base_fd.h).  Default buffer sizes (net.core
 * wmem_default): AF_UNIX has no documented latency option (no Nagle, no
 * busy-poll); SO_SNDBUF only bounds how much a stream can queue.
 * SOCK_STREAM is read in bulk (every whole record received at once);
 * SOCK_SEQPACKET one message per recv(), as its message boundaries require.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base_common.h"
#include "base_fd.h"

static const char *const variants[] = { "stream-block", "stream-spin", "seqpacket-block",
					"seqpacket-spin", NULL };
static int sv[2];
static struct base_fd fd;

static void prepare(int variant, int rtt, size_t size)
{
	(void)rtt;
	(void)size;
	fd.prog = "base_uds";
	fd.socket = 1;
	fd.packet = variant >= 2;
	fd.spin = variant % 2;
	if (socketpair(AF_UNIX, fd.packet ? SOCK_SEQPACKET : SOCK_STREAM, 0, sv) != 0)
		bench_die("base_uds: socketpair: %s", strerror(errno));
}

static void uds_open(enum base_role role)
{
	int mine = sv[role], other = sv[!role];
	if (close(other) != 0)
		bench_die("base_uds: close: %s", strerror(errno));
	base_fd_init(&fd, mine, mine, base_size);
}

static void uds_send(const void *buf, size_t len)
{
	base_fd_send(&fd, buf, len);
}

static const void *uds_take(size_t len, size_t *n)
{
	return base_fd_take(&fd, len, n);
}

static void uds_release(const void *p, size_t n)
{
	(void)p;
	base_fd_release(&fd, n);
}

static void cleanup(void)
{
	close(sv[0]);
	close(sv[1]);
}

static const struct base_transport uds = {
	.prog = "base_uds",
	.variants = variants,
	.prepare = prepare,
	.open = uds_open,
	.send = uds_send,
	.take = uds_take,
	.release = uds_release,
	.cleanup = cleanup,
};

int main(int argc, char **argv)
{
	return base_main(&uds, argc, argv);
}
