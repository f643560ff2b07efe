/* util_busd.c - a private bus with its own busd (util_busd.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util_busd.h"

struct tenv e;
struct bus *tb;
pid_t busd = -1;
char busd_log[300], busd_conf[300];
void (*busd_spawn_hook)(void);

void busd_setup(void)
{
	tenv_init(&e);
	tb = tenv_bus(&e);
	snprintf(busd_log, sizeof busd_log, "%s.busd.log", e.data_dir);
	snprintf(busd_conf, sizeof busd_conf, "%s.busd.conf", e.data_dir);
	busd = -1;
	busd_spawn_hook = NULL;
}

void busd_teardown(void)
{
	char mnt[300];

	snprintf(mnt, sizeof mnt, "%s/small", e.data_dir);
	if (busd > 0) {
		int st;
		kill(busd, SIGKILL);
		twait_status(busd, 5000, &st);
		busd = -1;
	}
	bus_close(tb);
	tb = NULL;
	umount2(mnt, MNT_DETACH); /* the full-disk test's, if it failed */
	if (getenv("BUS_TEST_KEEP_LOG") == NULL)
		unlink(busd_log);
	unlink(busd_conf);
	tenv_fini(&e);
}

void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

void write_conf(const char *text)
{
	FILE *f = fopen(busd_conf, "w");
	cr_assert(f, "config: %s", strerror(errno));
	fputs(text, f);
	fclose(f);
}

pid_t busd_spawn(void)
{
	char bin[256];
	const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
	pid_t pid;

	snprintf(bin, sizeof bin, "%s/bin/busd", build);
	cr_assert(access(bin, X_OK) == 0, "%s: %s", bin, strerror(errno));
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(busd_log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* kept across exec */
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		if (busd_spawn_hook)
			busd_spawn_hook();
		if (access(busd_conf, R_OK) == 0)
			execl(bin, "busd", "--foreground", "--config", busd_conf, (char *)NULL);
		else
			execl(bin, "busd", "--foreground", (char *)NULL);
		_exit(127);
	}
	return pid;
}

void busd_start(void)
{
	int64_t deadline = tnow_ms() + 20000;
	int st;

	busd = busd_spawn();
	while (bus_daemon_pid(tb) != busd) {
		cr_assert(waitpid(busd, &st, WNOHANG) == 0, "busd exited at start (status %d); see %s", st,
			  busd_log);
		cr_assert(tnow_ms() < deadline, "busd did not publish itself in 20 s");
		sleep_ms(2);
	}
}

int busd_stop(int sig)
{
	int st = 0;

	cr_assert(busd > 0);
	kill(busd, sig);
	cr_assert(twait_status(busd, 30000, &st) == 0, "busd did not exit within 30 s of signal %d", sig);
	busd = -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int busd_wait_exit(int ms)
{
	int st = 0;

	cr_assert(busd > 0);
	cr_assert(twait_status(busd, ms, &st) == 0, "busd did not exit within %d ms", ms);
	busd = -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int log_count(const char *needle)
{
	char line[4096];
	FILE *f = fopen(busd_log, "r");
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

bool log_has(const char *needle)
{
	char buf[1 << 16];
	size_t n;
	FILE *f = fopen(busd_log, "r");
	bool found = false;

	if (!f)
		return false;
	while (!found && (n = fread(buf, 1, sizeof buf - 1, f)) > 0) {
		buf[n] = 0;
		found = strstr(buf, needle) != NULL;
		if (!found && n == sizeof buf - 1)
			fseek(f, -(long)strlen(needle), SEEK_CUR);
	}
	fclose(f);
	return found;
}

void wait_log(const char *needle, int ms)
{
	int64_t deadline = tnow_ms() + ms;

	while (!log_has(needle)) {
		cr_assert(tnow_ms() < deadline, "busd never logged \"%s\" (see %s)", needle, busd_log);
		sleep_ms(5);
	}
}

struct bus_partition_info pinfo(const char *topic, uint32_t p)
{
	struct bus_partition_info pi;
	int err = bus_partition_describe(tb, topic, p, &pi);

	cr_assert_eq(err, 0, "describe %s/%u: %s", topic, p, bus_strerror(err));
	return pi;
}

void wait_spilled(const char *topic, uint32_t parts)
{
	int64_t deadline = tnow_ms() + 60000;

	for (uint32_t p = 0; p < parts; p++) {
		for (;;) {
			struct bus_partition_info pi = pinfo(topic, p);
			if (pi.spilled_offset == pi.next_offset)
				break;
			cr_assert(tnow_ms() < deadline, "partition %u: spilled %" PRIu64 " of %" PRIu64, p,
				  pi.spilled_offset, pi.next_offset);
			sleep_ms(2);
		}
	}
}
