/* bench/bench_util.h - helpers shared by the benchmark programs: clock,
 * pinning, forked workers under a watchdog, shared anonymous memory, the
 * payload pattern and its checksum.  Header-only, static functions.
 *
 * Worker model: the parent never runs a measured loop.  It forks one worker
 * per role (bench_spawn), pins none of itself, and sleeps in waitpid()
 * (bench_wait_all) so that it takes no CPU from the two pinned workers.  A
 * worker reports failure by exiting non-zero; the parent then kills the
 * other workers it started (by pid) and fails too.  SIGALRM bounds the whole
 * run ($BENCH_TIMEOUT seconds, default 120).
 */
#ifndef BUS_BENCH_UTIL_H
#define BUS_BENCH_UTIL_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Fan-out runs a producer and up to 8 consumers (BUS_GATING_MAX). */
#define BENCH_MAX_WORKERS 16

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void bench_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* The two CPUs the workers run on: $BENCH_CPU_A / $BENCH_CPU_B, default 0
 * and 1. */
static inline int bench_cpu(int which)
{
	const char *s = getenv(which ? "BENCH_CPU_B" : "BENCH_CPU_A");
	return s && *s ? atoi(s) : which;
}

static inline void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void bench_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stdout);
	fflush(stderr);
	_exit(1);
}

static inline void bench_pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		bench_die("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
}

/* bench_shared() - @len bytes of zeroed, pre-faulted MAP_SHARED anonymous
 * memory, inherited by forked workers. */
static inline void *bench_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE,
		       -1, 0);
	if (p == MAP_FAILED)
		bench_die("mmap(%zu): %s", len, strerror(errno));
	memset(p, 0, len);
	return p;
}

static inline uint64_t bench_parse_u64(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		bench_die("bad %s: '%s'", what, s);
	return (uint64_t)v;
}

/* ------------------------------------------------------------ cost */

/* bench_cpu_seconds() - user + system CPU time of this process (all its
 * threads) so far. */
static inline double bench_cpu_seconds(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		bench_die("getrusage: %s", strerror(errno));
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* bench_hwm_kb() - peak resident set size (VmHWM of /proc/self/status) in
 * KiB; shared memory the process touched counts, as it does for RSS. */
static inline long bench_hwm_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		bench_die("/proc/self/status: %s", strerror(errno));
	char line[256];
	long kb = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	if (kb < 0)
		bench_die("/proc/self/status: no VmHWM");
	return kb;
}

/* ---------------------------------------------------------- workers */

static pid_t bench_pids[BENCH_MAX_WORKERS];
static unsigned bench_npids;
static volatile sig_atomic_t bench_alarm_fired;

static inline void bench_on_alarm(int sig)
{
	(void)sig;
	bench_alarm_fired = 1;
}

/* bench_spawn() - fork a worker running @fn(@arg) pinned to @cpu (-1: not
 * pinned); the worker exits with @fn's return value. */
static inline void bench_kill_all(void);

static inline pid_t bench_spawn(int (*fn)(void *), void *arg, int cpu)
{
	if (bench_npids >= BENCH_MAX_WORKERS) {
		bench_kill_all();
		bench_die("bench_spawn: more than %d workers", BENCH_MAX_WORKERS);
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		if (cpu >= 0)
			bench_pin(cpu);
		int rc = fn(arg);
		fflush(stdout);
		fflush(stderr);
		_exit(rc);
	}
	bench_pids[bench_npids++] = pid;
	return pid;
}

static inline void bench_kill_all(void)
{
	for (unsigned i = 0; i < bench_npids; i++) {
		if (bench_pids[i] > 0) {
			kill(bench_pids[i], SIGKILL);
			waitpid(bench_pids[i], NULL, 0);
			bench_pids[i] = 0;
		}
	}
	bench_npids = 0;
}

/* bench_arm_watchdog() - SIGALRM after $BENCH_TIMEOUT (default 120) s;
 * it, SIGINT and SIGTERM interrupt bench_wait_all(), which then kills the
 * workers. */
static inline void bench_arm_watchdog(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = bench_on_alarm;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: waitpid() must return EINTR */
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	const char *s = getenv("BENCH_TIMEOUT");
	alarm(s && *s ? (unsigned)atoi(s) : 120u);
}

/* bench_wait_all() - wait for every worker.  Returns 0 when all exited 0;
 * otherwise kills the rest, prints why on stderr and returns -1. */
static inline int bench_wait_all(const char *prog)
{
	unsigned left = bench_npids;
	int failed = 0;
	while (left > 0) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);
		if (pid < 0) {
			if (errno == EINTR && bench_alarm_fired) {
				fprintf(stderr, "%s: timed out or interrupted, killing workers\n",
					prog);
				failed = 1;
				break;
			}
			if (errno == EINTR)
				continue;
			break;
		}
		for (unsigned i = 0; i < bench_npids; i++) {
			if (bench_pids[i] != pid)
				continue;
			bench_pids[i] = 0;
			left--;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
				break;
			if (WIFSIGNALED(st))
				fprintf(stderr, "%s: worker %d killed by signal %d\n", prog, (int)pid,
					WTERMSIG(st));
			else
				fprintf(stderr, "%s: worker %d exited with %d\n", prog, (int)pid,
					WIFEXITED(st) ? WEXITSTATUS(st) : -1);
			failed = 1;
			break;
		}
		if (failed)
			break;
	}
	bench_kill_all();
	return failed ? -1 : 0;
}

/* bench_wait_ready() - sleep until *@ready reaches @n (every worker is set
 * up), then store 1 into *@go.  Returns 0, or -1 after killing the workers
 * when one exits first or the watchdog fires. */
static inline int bench_wait_ready(_Atomic uint32_t *ready, unsigned n, _Atomic uint32_t *go,
				   const char *prog)
{
	while (atomic_load_explicit(ready, memory_order_acquire) < n) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid > 0) {
			for (unsigned i = 0; i < bench_npids; i++)
				if (bench_pids[i] == pid)
					bench_pids[i] = 0;
			fprintf(stderr, "%s: worker %d ended before the start (status 0x%x)\n", prog,
				(int)pid, st);
			bench_kill_all();
			return -1;
		}
		if (bench_alarm_fired) {
			fprintf(stderr, "%s: timed out or interrupted before the start\n", prog);
			bench_kill_all();
			return -1;
		}
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	atomic_store_explicit(go, 1, memory_order_release);
	return 0;
}

/* ------------------------------------------------------- payloads */

/* Payloads are whole 64-bit words: word 0 is the record's sequence number,
 * word i > 0 is bench_pattern(i).  A record's checksum, the sum of its
 * words, is therefore seq + bench_pattern_sum(size). */
static inline uint64_t bench_pattern(size_t i)
{
	return 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
}

static inline void bench_fill(void *buf, size_t size)
{
	for (size_t i = 1; i < size / 8; i++) {
		uint64_t w = bench_pattern(i);
		memcpy((char *)buf + 8 * i, &w, 8);
	}
}

static inline uint64_t bench_checksum(const void *buf, size_t size)
{
	const char *p = buf;
	uint64_t a = 0, b = 0, c = 0, d = 0;
	size_t n = size / 8, i = 0;
	for (; i + 4 <= n; i += 4) {
		uint64_t w[4];
		memcpy(w, p + 8 * i, 32);
		a += w[0];
		b += w[1];
		c += w[2];
		d += w[3];
	}
	for (; i < n; i++) {
		uint64_t w;
		memcpy(&w, p + 8 * i, 8);
		a += w;
	}
	return a + b + c + d;
}

static inline uint64_t bench_pattern_sum(size_t size)
{
	uint64_t s = 0;
	for (size_t i = 1; i < size / 8; i++)
		s += bench_pattern(i);
	return s;
}

static inline uint64_t bench_load_seq(const void *buf)
{
	uint64_t s;
	memcpy(&s, buf, 8);
	return s;
}

static inline void bench_store_seq(void *buf, uint64_t seq)
{
	memcpy(buf, &seq, 8);
}

#endif
