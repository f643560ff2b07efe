/* util_env.c - private folders, child processes and deadlines for tests. */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

void tenv_init(struct tenv *e)
{
	static unsigned seq;

	memset(e, 0, sizeof(*e));
	snprintf(e->shm_dir, sizeof(e->shm_dir), "/dev/shm/bus-test-XXXXXX");
	snprintf(e->data_dir, sizeof(e->data_dir), "/tmp/bus-test-data-XXXXXX");
	cr_assert(mkdtemp(e->shm_dir), "mkdtemp: %s", strerror(errno));
	cr_assert(mkdtemp(e->data_dir), "mkdtemp: %s", strerror(errno));
	snprintf(e->name, sizeof(e->name), "t%d-%u", getpid(), seq++);
	setenv("BUS_SHM_DIR", e->shm_dir, 1);
	setenv("BUS_DATA_DIR", e->data_dir, 1);
	setenv("BUS_NAME", e->name, 1);
	e->opts.name = e->name;
	e->opts.shm_dir = e->shm_dir;
	e->opts.data_dir = e->data_dir;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tenv_fini(struct tenv *e)
{
	if (e->shm_dir[0])
		nftw(e->shm_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	if (e->data_dir[0])
		nftw(e->data_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	e->shm_dir[0] = e->data_dir[0] = 0;
}

struct tenv env;
struct bus *b;

void tsuite_setup(void)
{
	tenv_init(&env);
	b = tenv_bus(&env);
}

void tsuite_teardown(void)
{
	bus_close(b);
	b = NULL;
	tenv_fini(&env);
}

struct bus *tenv_bus(struct tenv *e)
{
	struct bus *nb = NULL;
	int err = bus_open(&nb, &e->opts);
	cr_assert_eq(err, 0, "bus_open: %s", bus_strerror(err));
	return nb;
}

pid_t tfork(int (*fn)(void *), void *arg)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* A test that fails leaves no child behind: it dies with the
		 * test's process. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(fn(arg));
	}
	return pid;
}

int twait_status(pid_t pid, int timeout_ms, int *status)
{
	int64_t deadline = tnow_ms() + timeout_ms;

	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		cr_assert(r == 0, "waitpid: %s", strerror(errno));
		if (tnow_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, status, 0);
			return -1;
		}
		usleep(1000);
	}
}

int tzombie(pid_t pid, int timeout_ms)
{
	int64_t deadline = tnow_ms() + timeout_ms;

	for (;;) {
		siginfo_t si = { 0 };

		cr_assert_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT), 0,
			     "waitid: %s", strerror(errno));
		if (si.si_pid == pid)
			return 0;
		if (tnow_ms() > deadline)
			return -1;
		usleep(1000);
	}
}

int twait(pid_t pid, int timeout_ms)
{
	int st;

	if (twait_status(pid, timeout_ms, &st) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
