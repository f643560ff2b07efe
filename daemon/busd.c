/* busd.c - the daemon of a bus: command line, config, start-up (detaching,
 * single-instance locks, recovery), the main loop, signals, the heartbeat
 * thread, and the clean stop.
 *
 * HOW BUSD FITS TOGETHER
 *
 *   main thread                               heartbeat thread
 *   -----------                               ----------------
 *   options, config file (exit 2 if bad)      every heartbeat_ms: stores
 *   detach (unless --foreground): the parent  CLOCK_MONOTONIC ns in the
 *     waits on a pipe for "ready" or an error ctl region's
 *   bus_open(); lock <shm_dir>/bus.<bus>.busd daemon_heartbeat_ns, so that
 *     and <data_dir>/.busd.lock (flock)       a stall of the main thread in
 *   recovery (topics.c): remove .deleted.*,   fsync or a full disk does not
 *     re-create topics from topic.conf        read as a dead daemon
 *   publish daemon_owner, start the heartbeat
 *   loop:
 *     every 100 ms (or when the table's state words change): scan the
 *       topic table: take new persistent topics (spiller_pid, writers,
 *       topic.conf), drop deleted ones and remove their logs
 *     spill pass (spill.c): every partition's committed frames to its log,
 *       a batch each, then flush and publish the spill cursor
 *     every retention_check_ms: retention
 *     SIGHUP: reload the config
 *     nothing to do: sched_yield a few times, then sleep 20 us growing to
 *       1 ms, and idle_sleep_ms (10 ms) after a second of idleness, but
 *       no later than a quiet log's sync is due (fsync = DURATION); an
 *       inotify watch on the shm dir ends a sleep when ring files appear or
 *       go (a topic being created or deleted)
 *   SIGTERM/SIGINT: drain (spill everything claimed up to the stop, repairing
 *     dead or stuck claims, 10 s at most), close the writers, clear
 *     spiller_pid and daemon_owner, exit 0
 *
 * Producers never make a system call for busd: it polls the rings.  There
 * is no lock between the two threads; they share only atomics (struct
 * busd's hb_ms and hb_stop, the log level) and an eventfd.  The topic
 * registry belongs to the main thread alone.
 */
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "busd.h"
#include "../tools/parse.h"

#define SCAN_INTERVAL (100 * BUSD_MS)
#define SIGNATURE_INTERVAL 0
#define DRAIN_TIMEOUT (10000 * BUSD_MS)
#define NAP_YIELDS 16
#define NAP_MIN_NS 20000
#define NAP_MAX_NS BUSD_MS
#define DEEP_IDLE_AFTER (1000 * BUSD_MS)

/* Set by the signal handler only; the main loop does the work. */
static volatile sig_atomic_t sig_stop; /* SIGTERM/SIGINT count */
static volatile sig_atomic_t sig_hup;
/* Bumped by every signal handled: nap() compares it, with the signals
 * blocked, against the value its caller read before it looked at the
 * flags above. */
static volatile sig_atomic_t sig_seq;

/* Detached: the write end of the pipe the waiting parent reads; -1 once
 * start-up is over or in the foreground. */
static int ready_fd = -1;

static const char usage_text[] =
	"usage: busd [--bus NAME] [--config FILE] [--foreground] [--data-dir DIR]\n"
	"            [--fsync never|always|DURATION|SIZE] [--log-level LEVEL]\n"
	"       busd --help | --version\n"
	"\n"
	"The daemon of a bus: spills persistent topics from their rings to segment\n"
	"logs in the data dir, applies retention, re-creates topics after a reboot,\n"
	"and repairs the claims of dead or stuck producers.\n"
	"\n"
	"Options:\n"
	"  --bus NAME           the bus (env BUS_NAME, default \"default\")\n"
	"  -c, --config FILE    settings, as `key = value` lines (see busd.conf.example);\n"
	"                       without it, the built-in defaults\n"
	"  -f, --foreground     stay attached and log to stderr (default: detach, and\n"
	"                       log to syslog)\n"
	"  --data-dir DIR       where the logs live (env BUS_DATA_DIR, default\n"
	"                       /var/lib/bus)\n"
	"  --fsync POLICY       never; always; every DURATION (100ms, 1s); or every SIZE\n"
	"                       written (16M) (default never)\n"
	"  --log-level LEVEL    error, warn, info or debug (default info)\n"
	"  -h, --help           this help\n"
	"  --version            print the version and exit\n"
	"\n"
	"Options given here override the config file.  SIGTERM or SIGINT stop busd\n"
	"cleanly, after spilling everything committed (a second one stops at once);\n"
	"SIGHUP reloads the config file.\n"
	"\n"
	"Environment: BUS_NAME, BUS_SHM_DIR, BUS_DATA_DIR, as for `bus`.\n"
	"Exit status: 0 clean stop, 1 runtime error, 2 usage error.\n";

/* ----------------------------------------------------------- messages */

/* A usage error: one line, exit 2. */
static void __attribute__((noreturn, format(printf, 1, 2))) usage_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("busd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see 'busd --help')\n", stderr);
	exit(BUSD_EXIT_USAGE);
}

/* Start-up failed: `busd: <what failed>: <why>` on stderr, or, detached,
 * in syslog and through the pipe to the waiting parent, which prints it.
 * Exit 1. */
static void __attribute__((noreturn, format(printf, 1, 2))) start_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ready_fd >= 0) {
		busd_log(BUS_LOG_ERROR, "%s", msg);
		if (write(ready_fd, "1", 1) == 1 && write(ready_fd, msg, strlen(msg)) < 0) {
			/* the parent prints a generic error */
		}
		close(ready_fd);
	} else {
		fprintf(stderr, "busd: %s\n", msg);
	}
	exit(BUSD_EXIT_FAIL);
}

/* ------------------------------------------------------------ options */

struct options {
	const char *bus;
	const char *config;
	bool foreground;
};

enum { OPT_BUS = 0x100, OPT_DATA_DIR, OPT_FSYNC, OPT_LOG_LEVEL, OPT_VERSION };

/* Set config key @key of @cli from option @opt's value, or exit 2 naming
 * the option. */
static void cli_set(struct busd_config *cli, const char *key, const char *opt, const char *val)
{
	char err[512];
	const char *why;

	if (busd_config_set(cli, key, val, err, sizeof(err)) == 0)
		return;
	/* "bad value for KEY: 'VAL' (EXPECTED)": name the option instead. */
	why = strchr(err, ':');
	usage_fail("bad value for %s: %s", opt, why ? why + 2 : val);
}

/* The option that getopt_long() refused, quoted as given: @arg is the
 * argument it was working on ("--name[=value]", or a cluster of short
 * options such as "-fx", then named too).  Into @buf. */
static const char *bad_option(const char *arg, char *buf, size_t len)
{
	if (strncmp(arg, "--", 2) == 0)
		snprintf(buf, len, "'%.*s'", (int)strcspn(arg, "="), arg);
	else if (optopt > 0 && optopt < 0x100 && strlen(arg) > 2)
		snprintf(buf, len, "'-%c' (in '%s')", optopt, arg);
	else if (optopt > 0 && optopt < 0x100)
		snprintf(buf, len, "'-%c'", optopt);
	else
		snprintf(buf, len, "'%s'", arg);
	return buf;
}

/* The long options that "--@arg" abbreviates, ", "-separated, into @buf;
 * their count. */
static int long_matches(const struct option *opts, const char *arg, char *buf, size_t len)
{
	size_t n = strcspn(arg + 2, "="), used = 0;
	int count = 0;

	buf[0] = '\0';
	for (; opts->name; opts++) {
		if (strncmp(opts->name, arg + 2, n) != 0)
			continue;
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used, "%s--%s", count ? ", " : "",
						 opts->name);
		count++;
	}
	return count;
}

/* Parse the command line into @o and the keys it sets into @cli. */
static void parse_args(int argc, char **argv, struct options *o, struct busd_config *cli)
{
	static const struct option longopts[] = {
		{ "bus", required_argument, NULL, OPT_BUS },
		{ "config", required_argument, NULL, 'c' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "data-dir", required_argument, NULL, OPT_DATA_DIR },
		{ "fsync", required_argument, NULL, OPT_FSYNC },
		{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	char opt[PATH_MAX], alts[256];
	int c, at;

	opterr = 0;
	/* "+": no permutation, so that argv[at] is the argument getopt works
	 * on (the current cluster of short options, or a long option) when
	 * it refuses one.  The option in error is named from it: argv[optind
	 * - 1] named the argument before an unknown option inside a cluster
	 * ("busd --foreground -xf": "unknown option '--foreground'"). */
	while ((at = optind, c = getopt_long(argc, argv, "+:c:fh", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_BUS:
			if (!bus_name_valid(optarg))
				usage_fail("bad value for --bus: '%s' (a bus name: 1 to %d of "
					   "[A-Za-z0-9._-], not starting with '.')",
					   optarg, BUS_NAME_MAX);
			o->bus = optarg;
			break;
		case 'c':
			o->config = optarg;
			break;
		case 'f':
			o->foreground = true;
			break;
		case OPT_DATA_DIR:
			cli_set(cli, "data_dir", "--data-dir", optarg);
			break;
		case OPT_FSYNC:
			cli_set(cli, "fsync", "--fsync", optarg);
			break;
		case OPT_LOG_LEVEL:
			cli_set(cli, "log_level", "--log-level", optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			exit(BUSD_EXIT_OK);
		case OPT_VERSION:
			printf("busd %s (libbus %s)\n", BUS_VERSION_STRING, bus_version());
			exit(BUSD_EXIT_OK);
		case ':':
			/* The option was the last argument: getopt moved past it. */
			usage_fail("option %s needs a value",
				   bad_option(argv[optind - 1], opt, sizeof(opt)));
		default:
			if (at >= argc)
				at = argc - 1;
			/* A long option getopt knows (optopt: its value) given
			 * a value it does not take; else unknown, or an
			 * abbreviation of several. */
			if (strncmp(argv[at], "--", 2) == 0 && optopt)
				usage_fail("option %s takes no value",
					   bad_option(argv[at], opt, sizeof(opt)));
			if (strncmp(argv[at], "--", 2) == 0 &&
			    long_matches(longopts, argv[at], alts, sizeof(alts)) > 1)
				usage_fail("ambiguous option %s (%s)",
					   bad_option(argv[at], opt, sizeof(opt)), alts);
			usage_fail("unknown option %s", bad_option(argv[at], opt, sizeof(opt)));
		}
	}
	if (optind < argc)
		usage_fail("unexpected argument '%s'", argv[optind]);
}

/* The working directory busd was started in (main(), before it detaches
 * and moves to /); "" when getcwd() failed. */
static char start_cwd[PATH_MAX];

/* @path made absolute against the directory busd was started in, into
 * @out: at start, and as well at a SIGHUP reload after busd detached (a
 * relative data_dir in the config file then still names the same place,
 * instead of one under /).  An empty @path gives "".  Returns 0, or
 * -ENAMETOOLONG when the result does not fit: a usage error at start, a
 * failed reload (the config in force stays) at SIGHUP. */
static int absolute(const char *path, char *out, size_t len)
{
	if (!path[0] || path[0] == '/' || !start_cwd[0]) {
		snprintf(out, len, "%s", path);
		return 0;
	}
	if (snprintf(out, len, "%s/%s", start_cwd, path) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

/* ---------------------------------------------------------- detaching */

static void signals_setup(void);

/* Close every descriptor from 3 on but @keep. */
static void close_others(int keep)
{
	if (keep >= 3 && (keep == 3 || close_range(3, (unsigned)keep - 1, 0) == 0) &&
	    close_range((unsigned)keep + 1, ~0u, 0) == 0)
		return;
	for (int fd = 3, max = (int)sysconf(_SC_OPEN_MAX); fd < max && fd < 65536; fd++)
		if (fd != keep)
			close(fd);
}

/* Fork into the background.  The parent waits on a pipe until the child
 * is ready (exit 0) or failed (prints the child's error, exit 1); the child
 * leaves the session, the working directory and the terminal. */
static void detach(void)
{
	char buf[1100];
	size_t got = 0;
	int p[2], fd;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC)) {
		fprintf(stderr, "busd: cannot detach: pipe: %s\n", strerror(errno));
		exit(BUSD_EXIT_FAIL);
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "busd: cannot detach: fork: %s\n", strerror(errno));
		exit(BUSD_EXIT_FAIL);
	}
	if (pid > 0) {
		close(p[1]);
		for (;;) {
			ssize_t n = read(p[0], buf + got, sizeof(buf) - 1 - got);
			if (n > 0 && (got += (size_t)n) < sizeof(buf) - 1)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			break;
		}
		buf[got] = '\0';
		if (got >= 1 && buf[0] == '0')
			exit(BUSD_EXIT_OK);
		if (got > 1)
			fprintf(stderr, "busd: %s\n", buf + 1);
		else
			fprintf(stderr,
				"busd: the daemon (pid %d) exited during start-up; see syslog\n",
				(int)pid);
		exit(BUSD_EXIT_FAIL);
	}
	close(p[0]);
	ready_fd = p[1];
	signals_setup();
	/* Descriptors inherited from the caller (a pipe it reads to the end,
	 * say) must not stay open for the daemon's life. */
	close_others(ready_fd);
	if (setsid() < 0 || chdir("/") < 0)
		start_fail("cannot detach: %s", strerror(errno));
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0 || dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
	    dup2(fd, STDERR_FILENO) < 0)
		start_fail("cannot detach: /dev/null: %s", strerror(errno));
	if (fd > STDERR_FILENO)
		close(fd);
}

/* Start-up is over: release the waiting parent. */
static void notify_ready(void)
{
	if (ready_fd < 0)
		return;
	if (write(ready_fd, "0", 1) != 1) {
		/* the parent is gone: nobody to tell */
	}
	close(ready_fd);
	ready_fd = -1;
}

/* ------------------------------------------------------------- locks */

/* The pid in lock file @fd (its holder writes it right after locking: wait
 * a little for it).  0 when none shows up. */
static int lock_holder(int fd, char *rest, size_t restlen)
{
	for (int tries = 0; tries < 50; tries++) {
		char buf[128];
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		int pid = 0;

		if (n > 0) {
			buf[n] = '\0';
			if (rest) {
				/* "<bus> <pid>" */
				char name[BUS_NAME_MAX + 1];
				if (sscanf(buf, "%63s %d", name, &pid) == 2) {
					snprintf(rest, restlen, "%s", name);
					return pid;
				}
			} else if (sscanf(buf, "%d", &pid) == 1 && pid > 0) {
				return pid;
			}
		}
		usleep(10000);
	}
	return 0;
}

/* Open and flock @path (exclusive, non-blocking) into *@fd.  Returns 0,
 * -EWOULDBLOCK when another process holds it (*@fd is then open, for
 * reading the holder), or -errno. */
static int lock_file(const char *path, int *fd)
{
	/* No symlink: the shm dir is often world-writable (/dev/shm). */
	*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (*fd < 0)
		return -errno;
	if (flock(*fd, LOCK_EX | LOCK_NB)) {
		int err = -errno;
		if (err != -EWOULDBLOCK) {
			close(*fd);
			*fd = -1;
		}
		return err;
	}
	return 0;
}

/* Replace the content of locked file @fd by @text. */
static void lock_write(int fd, const char *text)
{
	size_t n = strlen(text);

	if (ftruncate(fd, 0) || pwrite(fd, text, n, 0) != (ssize_t)n)
		busd_log(BUS_LOG_WARN, "cannot write the lock file: %s", strerror(errno));
}

/* Become the one daemon of the bus and of its data dir, or exit with the
 * other one's pid.  Returns the two lock fds. */
static void take_locks(struct busd *d, int *shm_fd, int *data_fd)
{
	char path[PATH_MAX], text[128], other[BUS_NAME_MAX + 1];
	const char *name = bus_name(d->b);
	int fd, pid, err;

	snprintf(path, sizeof(path), "%s/bus.%s.busd", bus_shm_dir(d->b), name);
	err = lock_file(path, &fd);
	if (err == -EWOULDBLOCK) {
		pid = lock_holder(fd, NULL, 0);
		close(fd);
		if (pid)
			start_fail("bus '%s' already has a daemon: pid %d", name, pid);
		start_fail("bus '%s' already has a daemon (its pid is not in %s yet)", name, path);
	}
	if (err)
		start_fail("cannot lock %s: %s", path, bus_strerror(err));
	snprintf(text, sizeof(text), "%d\n", (int)d->pid);
	lock_write(fd, text);
	*shm_fd = fd;

	err = bus_seg_mkdir(bus_data_dir(d->b), 0750, true);
	if (err)
		start_fail("cannot create the data dir %s: %s", bus_data_dir(d->b),
			   bus_strerror(err));
	snprintf(path, sizeof(path), "%s/.busd.lock", bus_data_dir(d->b));
	err = lock_file(path, &fd);
	if (err == -EWOULDBLOCK) {
		other[0] = '\0';
		pid = lock_holder(fd, other, sizeof(other));
		close(fd);
		start_fail("data dir %s is in use by the daemon of bus '%s'%s: pid %d",
			   bus_data_dir(d->b), other[0] ? other : "?",
			   strcmp(other, name) == 0 ? " (with another BUS_SHM_DIR)" : "", pid);
	}
	if (err)
		start_fail("cannot lock %s: %s", path, bus_strerror(err));
	snprintf(text, sizeof(text), "%s %d\n", name, (int)d->pid);
	lock_write(fd, text);
	*data_fd = fd;
}

/* ------------------------------------------------------- descriptors */

/*
 * raise_fd_limit() - take the hard limit of descriptors as the soft one.
 * busd holds five per partition it spills (the log dir, the active segment,
 * its two indexes, the offset floor), so the usual soft limit of 1024 runs
 * out at about 200 partitions, far below what a bus holds (256 topics of up
 * to 256 partitions): the partitions past it could not open their logs and
 * their producers were held back for as long as busd ran.  Returns the soft
 * limit in force.
 */
static unsigned long long raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 0;
	if (rl.rlim_cur != rl.rlim_max) {
		struct rlimit want = rl;

		want.rlim_cur = rl.rlim_max;
		/* An infinite hard limit is refused (fs.nr_open bounds it). */
		if (setrlimit(RLIMIT_NOFILE, &want) == 0 ||
		    (want.rlim_cur = 1u << 20, setrlimit(RLIMIT_NOFILE, &want) == 0))
			rl.rlim_cur = want.rlim_cur;
	}
	return (unsigned long long)rl.rlim_cur;
}

/* ----------------------------------------------------------- signals */

/* SIGTERM/SIGINT count; SIGHUP sets a flag.  Nothing else: the main loop
 * works (async-signal safety). */
static void on_signal(int sig)
{
	sig_seq = (sig_seq + 1) & 0x3fffffff;
	if (sig == SIGHUP)
		sig_hup = 1;
	else if (sig_stop < 100)
		sig_stop = sig_stop + 1;
}

/* Install the handlers of SIGTERM, SIGINT and SIGHUP; ignore SIGPIPE. */
static void signals_setup(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaddset(&sa.sa_mask, SIGINT);
	sigaddset(&sa.sa_mask, SIGHUP);
	/* No SA_RESTART: a nap ends at once. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* ----------------------------------------------------- truncation */

bool busd_ctl_lost(struct busd *d)
{
	if (BUS_LIKELY(bus_mapguard_hits() == 0) || !bus_mapguard_hit(d->b->ctl_guard))
		return false;
	if (!d->ctl_lost)
		busd_log(BUS_LOG_ERROR,
			 "the control region %s/bus.%s.ctl was truncated under busd's mapping "
			 "(SIGBUS caught): the topic table is gone; busd stops after spilling what "
			 "the rings hold (the logs stay; stop every process of the bus, remove the "
			 "file, and start again)",
			 bus_shm_dir(d->b), bus_name(d->b));
	d->ctl_lost = true;
	return true;
}

/* --------------------------------------------------------- heartbeat */

/* The heartbeat thread: stores the time in the control region every
 * heartbeat_ms until told to stop (hb_stop, then a write to the eventfd). */
static void *heartbeat_main(void *arg)
{
	struct busd *d = arg;
	struct bus_ctl_hdr *ctl = d->b->ctl;

	/* hb_stop and hb_ms are process-local flags (seq_cst by default);
	 * they publish nothing else. */
	while (!atomic_load(&d->hb_stop)) {
		struct pollfd pfd = { .fd = d->hb_efd, .events = POLLIN };
		uint64_t v;

		/* Relaxed: a timestamp that publishes nothing else. */
		st_relaxed(&ctl->daemon_heartbeat_ns, (uint64_t)bus_mono_ns());
		if (poll(&pfd, 1, (int)atomic_load(&d->hb_ms)) > 0 &&
		    read(d->hb_efd, &v, sizeof(v)) < 0) {
			/* a wake-up lost: the next timeout comes anyway */
		}
	}
	return NULL;
}

/* Publish the daemon in the control region and start the heartbeat. */
static void heartbeat_start(struct busd *d, pthread_t *th)
{
	sigset_t all, old;
	int err;

	d->hb_efd = eventfd(0, EFD_CLOEXEC);
	if (d->hb_efd < 0)
		start_fail("cannot start the heartbeat: eventfd: %s", strerror(errno));
	st_relaxed(&d->b->ctl->daemon_heartbeat_ns, (uint64_t)bus_mono_ns());
	/* RD1: the first heartbeat before the owner word: a reader that sees
	 * it (acquire) sees a heartbeat. */
	st_release(&d->b->ctl->daemon_owner, bus_owner_self());
	/* The signals are the main thread's: the thread starts with all blocked
	 * but SIGBUS, which a fault raises in the faulting thread: blocked, the
	 * kernel kills the process instead of running the handler that turns
	 * a control region truncated under the heartbeat's store into zeros
	 * (mapguard.h). */
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(th, NULL, heartbeat_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		start_fail("cannot start the heartbeat thread: %s", strerror(err));
}

/* Wake the heartbeat thread (to stop, or to take a new interval). */
static void heartbeat_poke(struct busd *d)
{
	uint64_t one = 1;

	if (write(d->hb_efd, &one, sizeof(one)) < 0) {
		/* the counter is full: a wake-up is pending anyway */
	}
}

/* Stop and join the heartbeat thread, then withdraw the daemon's pid from
 * the control region. */
static void heartbeat_stop(struct busd *d, pthread_t th)
{
	uint64_t self = bus_owner_self();

	atomic_store(&d->hb_stop, true);
	heartbeat_poke(d);
	pthread_join(th, NULL);
	close(d->hb_efd);
	/* Only our own word: a successor may have published itself. */
	atomic_compare_exchange_strong(&d->b->ctl->daemon_owner, &self, 0);
}

/* ------------------------------------------------------------ config */

/* The config in force, for the start line. */
static void log_config(const struct busd *d, const char *what)
{
	char fs[32];

	busd_log(BUS_LOG_INFO,
		 "%s: fsync %s, segment_bytes %llu, segment_ms %llu, index_interval %llu, "
		 "preallocate %llu, retention_check_ms %llu, heartbeat_ms %llu, stuck_claim_ms %llu, "
		 "idle_sleep_ms %llu, log_level %s",
		 what, busd_fsync_str(d->cfg.fsync, d->cfg.fsync_arg, fs, sizeof(fs)),
		 (unsigned long long)d->cfg.segment_bytes, (unsigned long long)d->cfg.segment_ms,
		 (unsigned long long)d->cfg.index_interval, (unsigned long long)d->cfg.preallocate,
		 (unsigned long long)d->cfg.retention_check_ms,
		 (unsigned long long)d->cfg.heartbeat_ms, (unsigned long long)d->cfg.stuck_claim_ms,
		 (unsigned long long)d->cfg.idle_sleep_ms, busd_level_name(d->cfg.log_level));
}

/* SIGHUP: re-read the config file and apply what can change at once; a
 * bad file changes nothing. */
static void reload(struct busd *d)
{
	struct busd_config nc;
	char err[1024], dd[PATH_MAX];
	bool seg;

	if (!d->config_path) {
		busd_log(BUS_LOG_INFO, "SIGHUP: no config file (--config) to reload");
		return;
	}
	busd_config_defaults(&nc);
	if (busd_config_load(&nc, d->config_path, err, sizeof(err))) {
		busd_log(BUS_LOG_ERROR, "config reload failed: %s; keeping the config in force",
			 err);
		return;
	}
	busd_config_merge(&nc, &d->cli);
	if (absolute(nc.data_dir, dd, sizeof(dd))) {
		busd_log(BUS_LOG_ERROR,
			 "config reload failed: %s: data_dir: path too long once made absolute "
			 "against %s; keeping the config in force",
			 d->config_path, start_cwd);
		return;
	}
	if (dd[0] && strcmp(dd, bus_data_dir(d->b)) != 0)
		busd_log(BUS_LOG_WARN,
			 "config reload: data_dir changes only when busd restarts: keeping %s",
			 bus_data_dir(d->b));
	memcpy(nc.data_dir, d->cfg.data_dir, sizeof(nc.data_dir));
	seg = nc.fsync != d->cfg.fsync || nc.fsync_arg != d->cfg.fsync_arg ||
	      nc.segment_bytes != d->cfg.segment_bytes || nc.segment_ms != d->cfg.segment_ms ||
	      nc.index_interval != d->cfg.index_interval || nc.preallocate != d->cfg.preallocate;
	d->cfg = nc;
	busd_log_level((enum bus_log_level)nc.log_level);
	d->b->stuck_claim_ns = nc.stuck_claim_ms * (uint64_t)BUSD_MS;
	if (atomic_load(&d->hb_ms) != nc.heartbeat_ms) {
		atomic_store(&d->hb_ms, nc.heartbeat_ms);
		heartbeat_poke(d);
	}
	log_config(d, "config reloaded");
	if (seg) {
		spill_reopen_all(d);
		busd_log(BUS_LOG_INFO, "segment and fsync options changed: every open log is "
				       "closed and reopened with them at its next safe point (now, "
				       "unless a write is failing)");
	}
}

/* --------------------------------------------------------- main loop */

/* How long a polling loop has had nothing to do. */
struct idler {
	unsigned n;    /* idle passes in a row */
	int64_t since; /* monotonic ns of the first */
};

/*
 * nap() - nothing to do: yield a few times, then sleep, longer each time up
 * to 1 ms; after DEEP_IDLE_AFTER of idleness, @deep_ns (idle_sleep_ms) when
 * longer.  Producers never wake busd (they make no system call): it polls,
 * and these naps bound both its idle CPU and how long a producer whose ring
 * filled during one waits for the spiller.  A signal ends a nap early, and
 * so does an event on @wfd (the shm dir watch; -1: none).  @seq is sig_seq
 * as the caller read it before it looked at the signal flags: a signal
 * handled since then (after the caller's check, before the sleep) ends the
 * nap at once.  The signals are blocked from that comparison until
 * ppoll() unblocks them atomically with its sleep: one that came in
 * between was otherwise noticed only after the whole nap (up to 1 s).
 * Returns true when @wfd has events.
 */
static bool nap(struct idler *id, int64_t now, int64_t deep_ns, int wfd, sig_atomic_t seq)
{
	unsigned n = id->n++;
	int64_t ns = NAP_MAX_NS;
	struct pollfd pfd = { .fd = wfd, .events = POLLIN };
	struct timespec ts;
	sigset_t block, old;
	int got = 0;

	if (n == 0)
		id->since = now;
	if (n < NAP_YIELDS) {
		sched_yield();
		return false;
	}
	n -= NAP_YIELDS;
	if (n < 16 && ((int64_t)NAP_MIN_NS << n) < NAP_MAX_NS)
		ns = (int64_t)NAP_MIN_NS << n;
	if (deep_ns > ns && now - id->since >= DEEP_IDLE_AFTER)
		ns = deep_ns;
	ts.tv_sec = (time_t)(ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	if (sig_seq == seq)
		got = ppoll(wfd >= 0 ? &pfd : NULL, wfd >= 0 ? 1 : 0, &ts, &old);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return got > 0;
}

/* Watch the shm dir: creating or deleting a topic makes or unlinks its
 * ring files there, so busd wakes from a nap as soon as the table is about
 * to change, and takes a new topic before its producers fill its rings.
 * Producers never cause an event.  Returns the inotify fd, or -1 (busd
 * then finds new topics by polling only). */
static int watch_open(const struct busd *d)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	if (fd >= 0 &&
	    inotify_add_watch(fd, bus_shm_dir(d->b), IN_CREATE | IN_DELETE | IN_MOVED_TO) >= 0)
		return fd;
	busd_log(BUS_LOG_WARN, "cannot watch %s (%s): new topics are found by polling only",
		 bus_shm_dir(d->b), strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Read the watch's pending events.  True when one names a file of this bus
 * ("bus.<bus>.": its rings; other buses may share the directory). */
static bool watch_drain(const struct busd *d, int wfd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	char prefix[BUS_NAME_MAX + 8];
	size_t plen = (size_t)snprintf(prefix, sizeof(prefix), "bus.%s.", bus_name(d->b));
	bool hit = false;
	ssize_t n;

	while ((n = read(wfd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)(void *)p;

			if (ev->len && strncmp(ev->name, prefix, plen) == 0)
				hit = true;
			if (ev->mask & IN_Q_OVERFLOW)
				hit = true;
			p += sizeof(*ev) + ev->len;
		}
	}
	return hit;
}

/* Run until SIGTERM/SIGINT. */
static void run(struct busd *d)
{
	int64_t next_scan = 0, last_retention = 0, next_sig = 0;
	bool retained = false;
	struct idler idle = { 0, 0 };
	int wfd = watch_open(d);

	for (;;) {
		/* Before the flags are looked at (nap()). */
		sig_atomic_t seq = sig_seq;
		int64_t now;

		if (sig_stop || busd_ctl_lost(d))
			break;
		now = bus_mono_ns();

		if (sig_hup) {
			sig_hup = 0;
			reload(d);
		}
		if (now >= next_scan) {
			topics_scan(d);
			next_scan = now + SCAN_INTERVAL;
		}
		/* Due by the interval in force: a SIGHUP that shortens it takes
		 * effect at once, not after the longer one elapsed. */
		if (!retained ||
		    now - last_retention >= (int64_t)d->cfg.retention_check_ms * BUSD_MS) {
			spill_retention(d);
			last_retention = now;
			retained = true;
		}
		if (spill_pass(d, now)) {
			idle.n = 0;
			continue;
		}
		/* A topic created meanwhile is taken within a few ms, so
		 * that its producers find a spiller before the ring fills. */
		if (now >= next_sig) {
			next_sig = now + SIGNATURE_INTERVAL;
			if (topics_table_changed(d)) {
				next_scan = 0;
				continue;
			}
		}
		/* The deep nap ends when a quiet log is due its sync (fsync =
		 * DURATION), not up to idle_sleep_ms past it. */
		int64_t deep = (int64_t)d->cfg.idle_sleep_ms * BUSD_MS, t = bus_mono_ns();
		if (d->next_sync_ns && d->next_sync_ns - t < deep)
			deep = d->next_sync_ns > t ? d->next_sync_ns - t : 0;
		if (nap(&idle, now, deep, wfd, seq) && watch_drain(d, wfd)) {
			/* A topic is being made or deleted: poll briskly (the
			 * signature check above catches it becoming READY). */
			idle.n = 0;
			next_scan = 0;
		}
	}
	if (wfd >= 0)
		close(wfd);
}

/* Stop: spill what was claimed up to now (deadline 10 s; a second signal
 * ends it), then let go of everything. */
static void drain(struct busd *d)
{
	int64_t start = bus_mono_ns(), deadline = start + DRAIN_TIMEOUT;
	struct idler idle = { 0, 0 };
	int stops = sig_stop;

	busd_log(BUS_LOG_INFO, "stopping: spilling what is committed (at most %d s)",
		 (int)(DRAIN_TIMEOUT / 1000 / BUSD_MS));
	spill_drain_begin(d);
	for (;;) {
		sig_atomic_t seq = sig_seq; /* before sig_stop is looked at */
		int64_t now = bus_mono_ns();
		uint64_t work = spill_pass(d, now);

		if (spill_drain_done(d)) {
			spill_drain_report(d); /* partitions stopped by an error */
			break;
		}
		if (now >= deadline || sig_stop > stops) {
			busd_log(BUS_LOG_WARN, "%s: stopping with records left in the rings",
				 now >= deadline ? "drain deadline passed" : "second signal");
			spill_drain_report(d);
			break;
		}
		if (work)
			idle.n = 0;
		else
			nap(&idle, now, 0, -1, seq);
	}
	busd_log(BUS_LOG_DEBUG, "drain took %lld ms",
		 (long long)((bus_mono_ns() - start) / BUSD_MS));
}

/* Start (see the top of this file), run until stopped, drain, exit. */
int main(int argc, char **argv)
{
	static struct busd d; /* large (the registry): not on the stack */
	struct options o = { 0 };
	struct bus_opts bo = { 0 };
	char err[1024], shm[PATH_MAX], cfgpath[PATH_MAX];
	const char *env;
	int shm_fd, data_fd, rc;
	pthread_t hb;

	/* A stderr the caller closed (`busd 2>&-`) would be the next file
	 * opened, the control region or a log, and every log line would be
	 * written into it. */
	rc = reopen_closed_std_fds();
	if (rc < 0) {
		fprintf(stderr, "busd: reopening a closed standard stream on /dev/null: %s\n",
			strerror(-rc));
		return BUSD_EXIT_FAIL;
	}
	if (!getcwd(start_cwd, sizeof(start_cwd)))
		start_cwd[0] = '\0';
	busd_config_defaults(&d.cfg);
	memset(&d.cli, 0, sizeof(d.cli));
	parse_args(argc, argv, &o, &d.cli);
	env = getenv("BUS_NAME");
	if (!o.bus && env && *env && !bus_name_valid(env))
		usage_fail("bad bus name '%s' in BUS_NAME", env);
	if (o.config) {
		if (absolute(o.config, cfgpath, sizeof(cfgpath)))
			usage_fail("bad value for --config: path too long once made absolute: %s",
				   o.config);
		d.config_path = cfgpath;
		if (busd_config_load(&d.cfg, cfgpath, err, sizeof(err))) {
			fprintf(stderr, "busd: %s\n", err);
			return BUSD_EXIT_USAGE;
		}
	}
	busd_config_merge(&d.cfg, &d.cli);
	/* Relative paths are taken from here: busd leaves the directory. */
	env = getenv("BUS_DATA_DIR");
	{
		/* Not in place: absolute() reads its input while it writes. */
		char dd[sizeof(d.cfg.data_dir)];
		const char *want = d.cfg.data_dir[0] ? d.cfg.data_dir : env ? env : "";

		if (absolute(want, dd, sizeof(dd)))
			usage_fail("bad value for %s: path too long once made absolute: %s",
				   (d.cli.set & CFG_DATA_DIR) ? "--data-dir"
				   : d.cfg.data_dir[0]	     ? "data_dir (in the config file)"
							     : "BUS_DATA_DIR",
				   want);
		memcpy(d.cfg.data_dir, dd, sizeof(dd));
	}
	env = getenv("BUS_SHM_DIR");
	if (absolute(env ? env : "", shm, sizeof(shm)))
		usage_fail("bad value for BUS_SHM_DIR: path too long once made absolute: %s", env);

	/* From here on a stop request is noted, not fatal: start-up completes,
	 * then the drain runs.  (Detached, the child installs them: the
	 * waiting parent keeps the default actions.) */
	if (o.foreground)
		signals_setup();
	else
		detach();
	d.pid = getpid();
	busd_log_open(o.foreground);
	busd_log_level((enum bus_log_level)d.cfg.log_level);

	bo.name = o.bus;
	bo.shm_dir = shm[0] ? shm : NULL;
	bo.data_dir = d.cfg.data_dir[0] ? d.cfg.data_dir : NULL;
	bo.log = busd_lib_log;
	bo.stuck_claim_ns = d.cfg.stuck_claim_ms * (uint64_t)BUSD_MS;
	rc = bus_open(&d.b, &bo);
	if (rc) {
		/* The control region bus_open() tried, resolved as it does. */
		const char *name = o.bus ? o.bus : getenv("BUS_NAME");

		if (!name || !*name)
			name = "default";
		start_fail("cannot open bus '%s' (%s/bus.%s.ctl): %s", name,
			   bo.shm_dir ? bo.shm_dir : bus_default_shm_dir(), name,
			   bus_strerror(rc));
	}
	take_locks(&d, &shm_fd, &data_fd);
	snprintf(d.cfg.data_dir, sizeof(d.cfg.data_dir), "%s", bus_data_dir(d.b));
	busd_log(BUS_LOG_INFO, "busd %s starting: bus '%s', shm dir %s, data dir %s%s%s",
		 BUS_VERSION_STRING, bus_name(d.b), bus_shm_dir(d.b), bus_data_dir(d.b),
		 d.config_path ? ", config " : "", d.config_path ? d.config_path : "");
	log_config(&d, "config");
	busd_log(BUS_LOG_DEBUG, "descriptors: soft limit %llu (five per partition spilled)",
		 raise_fd_limit());

	if (topics_recover(&d, err, sizeof(err)))
		start_fail("%s", err);
	atomic_init(&d.hb_ms, d.cfg.heartbeat_ms);
	atomic_init(&d.hb_stop, false);
	heartbeat_start(&d, &hb);
	topics_scan(&d);
	busd_log(BUS_LOG_INFO, "ready: spilling %u persistent topic%s", d.ntopics,
		 d.ntopics == 1 ? "" : "s");
	notify_ready();

	run(&d);
	drain(&d);
	topics_release_all(&d);
	heartbeat_stop(&d, hb);
	/* Unlocked by the exit; emptied so that nobody reads a stale pid. */
	lock_write(data_fd, "");
	lock_write(shm_fd, "");
	free(d.scratch);
	bus_close(d.b);
	busd_log(BUS_LOG_INFO, "stopped");
	return d.ctl_lost ? BUSD_EXIT_FAIL : BUSD_EXIT_OK;
}
