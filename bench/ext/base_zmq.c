/* bench/ext/base_zmq.c - ZeroMQ over ipc:// as a baseline: round trip and
 * throughput between two pinned processes (driver: base_common.h).  Built
 * by bench/run.sh with -lzmq (Debian's libzmq3-dev), not by the Makefile.
 *
 * usage: base_zmq rtt  VARIANT [SIZE [ROUND_TRIPS [WARMUP]]]
 *        base_zmq tput VARIANT [SIZE [RECORDS]]
 * VARIANT: block, spin
 *
 * One ZMQ_PAIR socket per process (the pattern zmq_socket(3) gives for an
 * exclusive two-peer link), the pinger/producer binding
 * ipc:///tmp/bus-bench-zmq-<pid>.ipc and the other connecting; a hello
 * message is exchanged before the start so the connection is up.  Sends
 * copy the value (zmq_send); receives hand out the message in place
 * (zmq_msg_recv, zmq_msg_data), then zmq_msg_close.  Options as documented
 * by default (one I/O thread, ZMQ_SNDHWM and ZMQ_RCVHWM 1000 messages,
 * ZMQ_LINGER -1 so that closing the producer delivers what is queued):
 * libzmq documents no latency option for ipc:// (there is no Nagle to turn
 * off; ZMQ_BUSY_POLL is for TCP).  The process, hence its I/O thread, is
 * pinned like bus's workers; BASE_ZMQ_IO=free lets the I/O thread run on
 * either CPU (ZMQ_THREAD_AFFINITY_CPU_ADD), which was no better here.
 *   block  zmq_send/zmq_msg_recv with flags 0: sleep until done.
 *   spin   ZMQ_DONTWAIT, retried at once on EAGAIN: the application thread
 *          never sleeps (the I/O thread still does).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "../base_common.h"

static const char *const variants[] = { "block", "spin", NULL };
static char endpoint[128], path[108];
static int flags;
static void *ctx, *sock;
static zmq_msg_t msg;

static void zcheck(int rc, const char *what)
{
	if (rc < 0)
		bench_die("base_zmq: %s: %s", what, zmq_strerror(zmq_errno()));
}

static void prepare(int variant, int rtt, size_t size)
{
	(void)rtt;
	(void)size;
	flags = variant == 1 ? ZMQ_DONTWAIT : 0;
	snprintf(path, sizeof(path), "/tmp/bus-bench-zmq-%d.ipc", (int)getpid());
	snprintf(endpoint, sizeof(endpoint), "ipc://%s", path);
	unlink(path);
}

static void zmq_open_role(enum base_role role)
{
	ctx = zmq_ctx_new();
	if (!ctx)
		bench_die("base_zmq: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
	const char *io = getenv("BASE_ZMQ_IO");
	if (io && strcmp(io, "free") == 0) {
		zcheck(zmq_ctx_set(ctx, ZMQ_THREAD_AFFINITY_CPU_ADD, bench_cpu(0)), "affinity");
		zcheck(zmq_ctx_set(ctx, ZMQ_THREAD_AFFINITY_CPU_ADD, bench_cpu(1)), "affinity");
	}
	sock = zmq_socket(ctx, ZMQ_PAIR);
	if (!sock)
		bench_die("base_zmq: zmq_socket: %s", zmq_strerror(zmq_errno()));
	char hello[8] = "hello";
	if (role == BASE_A) {
		zcheck(zmq_bind(sock, endpoint), "zmq_bind");
		zcheck(zmq_recv(sock, hello, sizeof(hello), 0), "zmq_recv(hello)");
	} else {
		zcheck(zmq_connect(sock, endpoint), "zmq_connect");
		zcheck(zmq_send(sock, hello, sizeof(hello), 0), "zmq_send(hello)");
	}
	zcheck(zmq_msg_init(&msg), "zmq_msg_init");
}

static void zsend(const void *buf, size_t len)
{
	for (;;) {
		int rc = zmq_send(sock, buf, len, flags);
		if (rc >= 0) {
			if ((size_t)rc != len)
				bench_die("base_zmq: zmq_send: %d of %zu bytes", rc, len);
			return;
		}
		if (zmq_errno() != EAGAIN && zmq_errno() != EINTR)
			zcheck(rc, "zmq_send");
	}
}

static const void *ztake(size_t len, size_t *n)
{
	for (;;) {
		int rc = zmq_msg_recv(&msg, sock, flags);
		if (rc >= 0)
			break;
		if (zmq_errno() != EAGAIN && zmq_errno() != EINTR)
			zcheck(rc, "zmq_msg_recv");
	}
	*n = zmq_msg_size(&msg);
	if (*n != len)
		bench_die("base_zmq: message of %zu bytes, expected %zu", *n, len);
	return zmq_msg_data(&msg);
}

static void zrelease(const void *p, size_t n)
{
	(void)p;
	(void)n;
	/* Releases the message's buffer; the message is empty and reusable. */
	zcheck(zmq_msg_close(&msg), "zmq_msg_close");
	zcheck(zmq_msg_init(&msg), "zmq_msg_init");
}

static void zclose(enum base_role role)
{
	(void)role;
	zmq_msg_close(&msg);
	zcheck(zmq_close(sock), "zmq_close");
	zcheck(zmq_ctx_term(ctx), "zmq_ctx_term");
}

static void cleanup(void)
{
	unlink(path);
}

static const struct base_transport zmq = {
	.prog = "base_zmq",
	.variants = variants,
	.prepare = prepare,
	.open = zmq_open_role,
	.send = zsend,
	.take = ztake,
	.release = zrelease,
	.close = zclose,
	.cleanup = cleanup,
};

int main(int argc, char **argv)
{
	return base_main(&zmq, argc, argv);
}
