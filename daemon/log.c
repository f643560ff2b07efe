/* log.c - busd's log: one line per event, with a level.
 *
 * In the foreground, lines go to stderr as
 *     2024-01-02T03:04:05.678Z busd[1234] INFO message
 * (UTC, milliseconds), each written with one write(2) so that lines of
 * the two threads never interleave.  Detached, they go to syslog
 * (LOG_DAEMON) with the matching priority.  The library's events (struct
 * bus_opts.log, struct bus_seg_opts.log) come through busd_lib_log().
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "busd.h"

/* The level above which lines are dropped: any thread reads it, the main
 * thread sets it (SIGHUP).  Relaxed: it orders nothing else. */
static _Atomic int log_max = BUS_LOG_INFO;
/* Set once before any other thread starts. */
static bool log_syslog;

/* Choose stderr (foreground) or syslog; called once, before any thread. */
void busd_log_open(bool foreground)
{
	log_syslog = !foreground;
	if (log_syslog)
		openlog("busd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

/* Set the most verbose level logged. */
void busd_log_level(enum bus_log_level level)
{
	atomic_store_explicit(&log_max, (int)level, memory_order_relaxed);
}

/* True when lines of @level are logged. */
bool busd_log_enabled(enum bus_log_level level)
{
	return (int)level <= atomic_load_explicit(&log_max, memory_order_relaxed);
}

/* Write @msg as one foreground line on stderr. */
static void log_stderr(enum bus_log_level level, const char *msg)
{
	static const char *const names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
	char line[2048], stamp[32];
	struct timespec ts;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ busd[%d] %s %s\n", stamp,
		     ts.tv_nsec / 1000000, (int)getpid(), names[level <= BUS_LOG_DEBUG ? level : 3],
		     msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* Best effort: a log line that cannot be written is dropped. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

/* Emit @msg at @level to wherever the log goes. */
static void log_emit(enum bus_log_level level, const char *msg)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

	if (log_syslog)
		syslog(prio[level <= BUS_LOG_DEBUG ? level : 3], "%s", msg);
	else
		log_stderr(level, msg);
}

/* Format and emit one event. */
void busd_log(enum bus_log_level level, const char *fmt, ...)
{
	char msg[1536];
	va_list ap;

	if (!busd_log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(level, msg);
}

/* The library's and the segment writer's events, through the same log. */
void busd_lib_log(void *ctx, enum bus_log_level level, const char *msg)
{
	(void)ctx;
	if (busd_log_enabled(level))
		log_emit(level, msg);
}
