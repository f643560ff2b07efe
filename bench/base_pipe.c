/* bench/base_pipe.c - pipes as a baseline: round trip (two pipes, one per
 * direction) and throughput (one pipe) between two pinned processes
 * (driver: base_common.h).
 *
 * usage: base_pipe rtt  VARIANT [SIZE [ROUND_TRIPS [WARMUP]]]
 *        base_pipe tput VARIANT [SIZE [RECORDS]]
 * VARIANT: block, spin
 *
 * Blocking: read()/write() sleep in the kernel.  Spinning: both ends
 * O_NONBLOCK, read()/write() retried at once on EAGAIN (base_fd.h).  For
 * throughput the pipe is grown with fcntl(F_SETPIPE_SZ) to
 * /proc/sys/fs/pipe-max-size (1 MiB by default), the documented way to let
 * a writer run ahead (pipe(7)); the reader takes every whole record that
 * arrived at once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base_common.h"
#include "base_fd.h"

static const char *const variants[] = { "block", "spin", NULL };
static int ab[2], ba[2] = { -1, -1 }; /* [0] read end, [1] write end */
static struct base_fd fd;

static int pipe_max(void)
{
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
	int v = 1 << 20;
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = 1 << 20;
		fclose(f);
	}
	return v;
}

static void prepare(int variant, int rtt, size_t size)
{
	(void)size;
	fd.prog = "base_pipe";
	fd.spin = variant == 1;
	if (pipe(ab) != 0 || (rtt && pipe(ba) != 0))
		bench_die("base_pipe: pipe: %s", strerror(errno));
	if (!rtt && fcntl(ab[1], F_SETPIPE_SZ, pipe_max()) < 0)
		bench_die("base_pipe: F_SETPIPE_SZ: %s", strerror(errno));
}

static void xclose(int f)
{
	if (f >= 0 && close(f) != 0)
		bench_die("base_pipe: close: %s", strerror(errno));
}

static void pipe_open(enum base_role role)
{
	if (role == BASE_A) {
		xclose(ab[0]);
		xclose(ba[1]);
		base_fd_init(&fd, ba[0], ab[1], base_size);
	} else {
		xclose(ab[1]);
		xclose(ba[0]);
		base_fd_init(&fd, ab[0], ba[1], base_size);
	}
}

static void pipe_send(const void *buf, size_t len)
{
	base_fd_send(&fd, buf, len);
}

static const void *pipe_take(size_t len, size_t *n)
{
	return base_fd_take(&fd, len, n);
}

static void pipe_release(const void *p, size_t n)
{
	(void)p;
	base_fd_release(&fd, n);
}

static void cleanup(void)
{
	close(ab[0]);
	close(ab[1]);
	if (ba[0] >= 0) {
		close(ba[0]);
		close(ba[1]);
	}
}

static const struct base_transport pipes = {
	.prog = "base_pipe",
	.variants = variants,
	.prepare = prepare,
	.open = pipe_open,
	.send = pipe_send,
	.take = pipe_take,
	.release = pipe_release,
	.cleanup = cleanup,
};

int main(int argc, char **argv)
{
	return base_main(&pipes, argc, argv);
}
