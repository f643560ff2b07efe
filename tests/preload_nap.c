/* preload_nap.c - an LD_PRELOAD shim for test_busd.c's nap test: before
 * each of busd's deep naps (a ppoll() of 500 ms or more), touch the file
 * $NAP_SHIM_MARK and sleep 200 ms, so that the window between busd's last
 * look at its signal flags and its sleep is wide and known to the test.
 * Built by the test itself (cc -shared); not part of the build. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
	static int (*real)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	const char *mark = getenv("NAP_SHIM_MARK");

	if (!real)
		real = (int (*)(struct pollfd *, nfds_t, const struct timespec *,
				const sigset_t *))dlsym(RTLD_NEXT, "ppoll");
	if (mark && ts && (ts->tv_sec > 0 || ts->tv_nsec >= 500000000)) {
		struct timespec d = { 0, 200000000 };
		int fd = open(mark, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (fd >= 0)
			close(fd);
		/* The whole 200 ms, whatever signal comes meanwhile. */
		while (nanosleep(&d, &d) && errno == EINTR)
			;
	}
	return real(fds, n, ts, mask);
}
