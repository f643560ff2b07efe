/* tools/bus.c - `bus`: command dispatch, the common options, one-line
 * errors with their remedies, and the library's log callback. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getline, memmem, timegm, *_unlocked */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

struct cli cli;
volatile sig_atomic_t cli_stop;

static const char usage_main[] =
	"usage: bus [--bus NAME] [-v] COMMAND [ARGS...]\n"
	"       bus --version\n"
	"       bus COMMAND --help\n"
	"\n"
	"A Kafka-style streaming bus in shared memory for one host.\n"
	"\n"
	"Commands:\n"
	"  topic create NAME --partitions N [...]   create a topic (idempotent)\n"
	"  topic list                               one line per topic\n"
	"  topic describe NAME                      config and per-partition offsets\n"
	"  topic delete NAME                        delete a topic\n"
	"  produce TOPIC [...]                      append stdin's lines as records\n"
	"  consume TOPIC [...]                      print records\n"
	"  help [COMMAND]                           this help, or a command's\n"
	"\n"
	"Common options (before or after the command):\n" CLI_COMMON_HELP
	"  --version            print the version and exit\n"
	"\n"
	"Environment:\n"
	"  BUS_NAME      the bus when --bus is not given (default \"default\")\n"
	"  BUS_SHM_DIR   where the bus's shared memory lives (default: a writable\n"
	"                hugetlbfs mount with free pages, else /dev/shm; on this host: %s)\n"
	"  BUS_DATA_DIR  where persistent topics' logs live (default /var/lib/bus)\n"
	"\n"
	"Exit status: 0 success, 1 runtime error, 2 usage error.\n";

/* @s on stderr with the bytes that would split a one-line message or
 * drive the terminal (C0 controls and DEL, from an argument, a name or an
 * environment variable quoted in it) escaped: \n, \r, \t, else \xNN. */
static void put_escaped(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\n')
			fputs("\\n", stderr);
		else if (c == '\r')
			fputs("\\r", stderr);
		else if (c == '\t')
			fputs("\\t", stderr);
		else if (c < 0x20 || c == 0x7f)
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
}

static void __attribute__((format(printf, 1, 0))) vput_escaped(const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0) {
		fputs("(out of memory for the message)", stderr);
		return;
	}
	put_escaped(s);
	free(s);
}

int cli_usage(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("bus: ", stderr);
	if (cli.cmd)
		fprintf(stderr, "%s: ", cli.cmd);
	va_start(ap, fmt);
	vput_escaped(fmt, ap);
	va_end(ap);
	if (cli.cmd)
		fprintf(stderr, " (see 'bus %s --help')\n", cli.cmd);
	else
		fputs(" (see 'bus --help')\n", stderr);
	return CLI_USAGE;
}

/* One line on stderr after @prefix; stdout is flushed first so that the
 * two streams stay in order on a terminal. */
static void __attribute__((format(printf, 2, 0)))
vline(const char *prefix, const char *fmt, va_list ap)
{
	fflush(stdout);
	fputs(prefix, stderr);
	vput_escaped(fmt, ap);
	fputc('\n', stderr);
}

int cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("bus: ", fmt, ap);
	va_end(ap);
	return CLI_FAIL;
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("bus: warning: ", fmt, ap);
	va_end(ap);
}

void cli_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("bus: ", fmt, ap);
	va_end(ap);
}


/* The bus name and shm dir to name in messages, also before bus_open(). */
static const char *hint_bus(const struct bus *b)
{
	const char *n;

	if (b)
		return bus_name(b);
	if (cli.bus_name)
		return cli.bus_name;
	n = getenv("BUS_NAME");
	return n && *n ? n : "default";
}

static const char *hint_shm_dir(const struct bus *b)
{
	const char *d;

	if (b)
		return bus_shm_dir(b);
	d = getenv("BUS_SHM_DIR");
	return d && *d ? d : bus_default_shm_dir();
}

const char *cli_why(const struct bus *b, int err, char *buf, size_t len)
{
	const char *s = bus_strerror(err);

	switch (err < 0 ? -err : err) {
	case ENOENT:
		if (cli.topic && cli.hint_create)
			snprintf(buf, len,
				 "no such topic on bus '%s' (create it with: bus topic create %s --partitions N)",
				 hint_bus(b), cli.topic);
		else if (cli.topic)
			snprintf(buf, len, "no such topic on bus '%s' (see: bus topic list)", hint_bus(b));
		else
			snprintf(buf, len, "%s", s);
		break;
	case BUS_ENODAEMON:
		snprintf(buf, len, "no daemon for bus '%s': start busd --bus %s", hint_bus(b), hint_bus(b));
		break;
	case EACCES:
	case EPERM:
		snprintf(buf, len, "%s: check the permissions of %s (BUS_SHM_DIR)", s, hint_shm_dir(b));
		break;
	case BUS_EVERSION:
		snprintf(buf, len,
			 "%s: bus '%s' was made by another build of libbus; use that build, or remove the bus's files in %s",
			 s, hint_bus(b), hint_shm_dir(b));
		break;
	case BUS_ECORRUPT:
		snprintf(buf, len, "%s (bus '%s' in %s)", s, hint_bus(b), hint_shm_dir(b));
		break;
	case ENOSPC:
		snprintf(buf, len, "%s: free space in %s or use a smaller --ring-size", s, hint_shm_dir(b));
		break;
	case EMSGSIZE:
		snprintf(buf, len, "%s: larger than the partition's ring can hold (see --ring-size)", s);
		break;
	case EBUSY:
		snprintf(buf, len, "%s: a process holds a slot of bus '%s''s topic table and does not finish (stopped?)",
			 s, hint_bus(b));
		break;
	case ENODEV:
		snprintf(buf, len, "no such NUMA node (see numactl --hardware)");
		break;
	default:
		snprintf(buf, len, "%s", s);
		break;
	}
	return buf;
}

int cli_fail(const struct bus *b, int err, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	fflush(stdout);
	fputs("bus: ", stderr);
	va_start(ap, fmt);
	vput_escaped(fmt, ap);
	va_end(ap);
	fputs(": ", stderr);
	put_escaped(cli_why(b, err, why, sizeof why));
	fputc('\n', stderr);
	return CLI_FAIL;
}

/* The library's events.  Its line saying which memory backs a ring is kept
 * while a topic is created (the command prints it once); other events are
 * printed by level: warnings and errors always, info with -v, debug with
 * -vv. */
static void cli_log(void *ctx, enum bus_log_level level, const char *msg)
{
	(void)ctx;
	if (cli.capture_mem && strstr(msg, "page")) {
		if (!cli.mem_line[0])
			snprintf(cli.mem_line, sizeof cli.mem_line, "%s", msg);
		return;
	}
	switch (level) {
	case BUS_LOG_ERROR:
		cli_note("error: %s", msg);
		break;
	case BUS_LOG_WARN:
		cli_warn("%s", msg);
		break;
	case BUS_LOG_INFO:
		if (cli.verbose >= 1)
			cli_note("%s", msg);
		break;
	case BUS_LOG_DEBUG:
	default:
		if (cli.verbose >= 2)
			cli_note("debug: %s", msg);
		break;
	}
}

int cli_open_bus(struct bus **out)
{
	struct bus_opts o;
	char why[512];
	int r;

	/* $BUS_NAME is checked as --bus is: a usage error naming the rule. */
	if (!cli.bus_name && getenv("BUS_NAME") && *getenv("BUS_NAME") &&
	    cli_check_name("BUS_NAME: bus", getenv("BUS_NAME")) != CLI_OK)
		return CLI_USAGE;
	memset(&o, 0, sizeof o);
	o.name = cli.bus_name; /* NULL: the library reads $BUS_NAME */
	o.flags = cli.bus_flags;
	o.log = cli_log;
	r = bus_open(out, &o);
	if (r == 0)
		return CLI_OK;
	if (r == -ENOENT || r == -ENOTDIR)
		return cli_error("cannot open bus '%s': %s does not exist or is not a directory (set BUS_SHM_DIR)",
				 hint_bus(NULL), hint_shm_dir(NULL));
	return cli_error("cannot open bus '%s' in %s: %s", hint_bus(NULL), hint_shm_dir(NULL),
			 cli_why(NULL, r, why, sizeof why));
}

int cli_check_name(const char *what, const char *name)
{
	size_t n = strlen(name);

	if (n == 0)
		return cli_usage("%s name is empty", what);
	if (n > BUS_NAME_MAX)
		return cli_usage("%s name '%.20s...' is %zu bytes long; at most %d", what, name, n, BUS_NAME_MAX);
	if (name[0] == '.')
		return cli_usage("%s name '%s' starts with '.'", what, name);
	if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n)
		return cli_usage("%s name '%s' has a character outside [A-Za-z0-9._-]", what, name);
	return CLI_OK;
}

int cli_positional(int argc, char **argv, int want, const char *what)
{
	int have = argc - optind;

	if (have < want)
		return cli_usage("missing %s", what);
	if (have > want)
		return cli_usage("unexpected argument '%s'", argv[optind + want]);
	return CLI_OK;
}

static void on_signal(int sig)
{
	(void)sig;
	cli_stop = 1;
}

void cli_catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: a blocking read returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* The write function of the stream cli_interruptible_stdout() makes: the
 * bytes written from @buf (fewer than @len: an error, in cli.out_errno). */
static ssize_t stdout_write(void *cookie, const char *buf, size_t len)
{
	size_t done = 0;

	(void)cookie;
	while (done < len) {
		size_t chunk = len - done;
		ssize_t n;

		if (cli_stop) {
			/* Stopping: only what goes without blocking. */
			struct pollfd pfd = { .fd = STDOUT_FILENO, .events = POLLOUT, .revents = 0 };

			if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT)) {
				cli.out_errno = EINTR;
				break;
			}
			if (chunk > PIPE_BUF)
				chunk = PIPE_BUF;
		}
		n = write(STDOUT_FILENO, buf + done, chunk);
		if (n < 0) {
			if (errno == EINTR)
				continue; /* cli_stop is looked at above */
			cli.out_errno = errno;
			break;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int cli_interruptible_stdout(void)
{
	static const cookie_io_functions_t io = { .write = stdout_write };
	FILE *f;

	fflush(stdout);
	f = fopencookie(NULL, "w", io);
	if (!f)
		return cli_error("setting up stdout: %s", strerror(errno));
	setvbuf(f, NULL, isatty(STDOUT_FILENO) ? _IOLBF : _IOFBF, BUFSIZ);
	/* glibc's stdout is a variable that may be set; the old stream,
	 * empty, stays open (closing it would close descriptor 1). */
	stdout = f;
	return CLI_OK;
}

/* An option getopt_long() did not accept, as one usage line.
 *
 * Which argument it was: a long option, and a short one at the end of its
 * cluster, leave optind past it; a short one inside a cluster ("-xl")
 * leaves optind on the cluster, so that argv[optind - 1] is then the
 * argument before, which may be a long option that was fine.  A long
 * option's error sets optopt to 0 (unknown, ambiguous) or to the option's
 * val with a value it takes none of or a missing one; anything else is a
 * short option's, named by optopt alone. */
static int bad_option(int c, int argc, char **argv, const struct option *longopts)
{
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
	size_t n = 0, matches = 0;
	const struct option *o, *match = NULL;
	int is_long = 0;

	if (strncmp(arg, "--", 2) == 0 && arg[2]) {
		n = strcspn(arg + 2, "=");
		for (o = longopts; o->name; o++) {
			if (strncmp(o->name, arg + 2, n) != 0)
				continue;
			if (o->name[n] == '\0') { /* exact */
				match = o;
				matches = 1;
				break;
			}
			match = o;
			matches++;
		}
		is_long = optopt == 0 ||
			  (matches == 1 && match->val == optopt &&
			   (c == ':' ? match->has_arg == required_argument
				     : match->has_arg == no_argument && arg[2 + n] == '='));
	}
	if (!is_long) {
		if (optopt <= ' ' || optopt >= 127)
			return cli_usage("unknown option byte 0x%02x", (unsigned)optopt & 0xff);
		if (c == ':')
			return cli_usage("option '-%c' needs a value", optopt);
		return cli_usage("unknown option '-%c'", optopt);
	}
	if (matches > 1) {
		char cand[256];
		size_t m = 0;

		cand[0] = '\0';
		for (o = longopts; o->name; o++)
			if (strncmp(o->name, arg + 2, n) == 0 && m < sizeof cand)
				m += (size_t)snprintf(cand + m, sizeof cand - m, "%s--%s", m ? ", " : "", o->name);
		return cli_usage("ambiguous option '%.*s': %s", (int)(n + 2), arg, cand);
	}
	if (!match)
		return cli_usage("unknown option '%.*s'", (int)(n + 2), arg);
	if (c == ':')
		return cli_usage("option '--%s' needs a value", match->name);
	return cli_usage("option '--%s' takes no value", match->name);
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
	char spec[128];
	int c;

	opterr = 0;
	if (shortopts[0] == '+')
		snprintf(spec, sizeof spec, "+:%s%s", CLI_COMMON_SHORT, shortopts + 1);
	else
		snprintf(spec, sizeof spec, ":%s%s", CLI_COMMON_SHORT, shortopts);
	for (;;) {
		c = getopt_long(argc, argv, spec, longopts, NULL);
		switch (c) {
		case OPT_BUS:
			if (cli_check_name("bus", optarg) != CLI_OK)
				return '?';
			cli.bus_name = optarg;
			continue;
		case 'v':
			cli.verbose++;
			continue;
		case '?':
		case ':':
			bad_option(c, argc, argv, longopts);
			return '?';
		default:
			return c;
		}
	}
}

static void print_main_help(FILE *f)
{
	fprintf(f, usage_main, bus_default_shm_dir());
}

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
};

static const struct command commands[] = {
	{ "topic", cmd_topic },
	{ "produce", cmd_produce },
	{ "consume", cmd_consume },
};

/* In CLI.md, not written yet. */
static const char *const planned[] = { "group", "stat", "dump", "perf", "standby" };

static const struct command *find_command(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static int run_command(int argc, char **argv)
{
	const struct command *cmd = find_command(argv[0]);
	size_t i;

	if (cmd) {
		cli.cmd = cmd->name;
		optind = 0;
		return cmd->fn(argc, argv);
	}
	for (i = 0; i < sizeof planned / sizeof planned[0]; i++)
		if (strcmp(planned[i], argv[0]) == 0) {
			cli.cmd = planned[i];
			fflush(stdout);
			fprintf(stderr, "bus: %s: not implemented yet\n", planned[i]);
			return CLI_USAGE;
		}
	return cli_usage("unknown command '%s'", argv[0]);
}

/* `bus help [COMMAND [SUBCOMMAND]]`: the command's --help. */
static int run_help(int argc, char **argv)
{
	char *args[4];
	char help[] = "--help";
	int i, n = 0;

	if (argc <= 1) {
		print_main_help(stdout);
		return CLI_OK;
	}
	if (argc > 3)
		return cli_usage("help takes at most a command and a subcommand");
	if (argc == 2 && strcmp(argv[1], "help") == 0) { /* listed as a command */
		print_main_help(stdout);
		return CLI_OK;
	}
	for (i = 1; i < argc; i++)
		args[n++] = argv[i];
	args[n++] = help;
	args[n] = NULL;
	return run_command(n, args);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c, rc;

	rc = reopen_closed_std_fds();
	if (rc < 0) {
		fprintf(stderr, "bus: reopening a closed standard stream on /dev/null: %s\n", strerror(-rc));
		return CLI_FAIL;
	}
	optind = 0;
	while ((c = cli_getopt(argc, argv, "+V", longopts)) != -1) {
		switch (c) {
		case 'h':
			print_main_help(stdout);
			rc = CLI_OK;
			goto flush;
		case 'V':
			printf("bus %s (libbus %s)\n", BUS_VERSION_STRING, bus_version());
			rc = CLI_OK;
			goto flush;
		default:
			return CLI_USAGE;
		}
	}
	if (optind >= argc)
		return cli_usage("missing command");
	argc -= optind;
	argv += optind;
	if (strcmp(argv[0], "help") == 0)
		rc = run_help(argc, argv);
	else
		rc = run_command(argc, argv);
flush:
	/* Output not written is a failure, unless one was reported already. */
	errno = 0;
	if ((fflush(stdout) != 0 || ferror(stdout)) && rc == CLI_OK) {
		fprintf(stderr, "bus: writing to stdout: %s\n",
			strerror(cli.out_errno ? cli.out_errno : errno ? errno : EIO));
		return CLI_FAIL;
	}
	return rc;
}
