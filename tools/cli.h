/* tools/cli.h - the pieces the `bus` subcommands share: exit codes, option
 * parsing with the common options, one-line errors, opening the bus, and the
 * parsers of SIZE, DURATION, TIME and the consume format (CLI.md is the
 * contract).
 *
 * Conventions
 *   Every command is `int cmd_x(int argc, char **argv)`, with argv[0] the
 *   command's own name, and returns an exit status: CLI_OK, CLI_FAIL (a
 *   runtime error) or CLI_USAGE (a usage error).  Errors are printed as one
 *   line on stderr, `bus: <what failed>: <why>`, before returning.  The
 *   printers below (cli_usage() to cli_note()) escape C0 controls and DEL
 *   in the message (\n, \r, \t, \xNN): a quoted argument cannot split the
 *   line or send escape sequences to the terminal.
 *   The tool is single-threaded; `cli` below is its only global state.
 */
#ifndef BUS_TOOLS_CLI_H
#define BUS_TOOLS_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <bus/bus.h>

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Ids of long-only options.  Each command numbers its own from
 * OPT_CMD_BASE; short options keep their character. */
enum { OPT_BUS = 0x100, OPT_CMD_BASE = 0x110 };

/* Common options, accepted by every command (before or after the command
 * name).  Put CLI_COMMON_LONG first in a command's option table and
 * CLI_COMMON_SHORT is added by cli_getopt(). */
#define CLI_COMMON_SHORT "hv"
#define CLI_COMMON_LONG                                 \
	{ "bus", required_argument, NULL, OPT_BUS },    \
	{ "verbose", no_argument, NULL, 'v' },          \
	{ "help", no_argument, NULL, 'h' }
#define CLI_COMMON_HELP                                                        \
	"  --bus NAME           the bus (env BUS_NAME, default \"default\")\n" \
	"  -v, --verbose        also print the library's informational events\n" \
	"  -h, --help           this help\n"

struct cli {
	const char *cmd;      /* the command, for messages: "topic create" */
	const char *bus_name; /* --bus, or NULL: $BUS_NAME, else "default" */
	const char *topic;    /* the topic the command works on, for hints */
	int hint_create;      /* an unknown topic's hint: create it (else list) */
	int verbose;          /* -v count */
	unsigned bus_flags;   /* BUS_F_* for bus_open() */
	/* While set, the library's line about the memory backing a ring is
	 * kept in mem_line (the first one) instead of being printed. */
	int capture_mem;
	char mem_line[512];
	/* The errno of the last write to stdout that failed, once
	 * cli_interruptible_stdout() has run (EINTR: cut short by cli_stop). */
	int out_errno;
};

extern struct cli cli;

/* Set by the SIGINT/SIGTERM handler that cli_catch_signals() installs. */
extern volatile sig_atomic_t cli_stop;

/* ------------------------------------------------------------ bus.c */

/**
 * cli_getopt() - getopt_long() over a command's options plus the common
 * ones, which it handles itself (--bus, -v).  Returns the option, -1 after
 * the last one, 'h' for --help (the caller prints its help), or '?' after
 * printing a one-line usage error (the caller returns CLI_USAGE).  Reset
 * optind to 0 before the first call of a command.
 */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

/** cli_usage() - print `bus: <cmd>: <msg> (see 'bus <cmd> --help')`;
 *  returns CLI_USAGE. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** cli_error() - print `bus: <msg>`; returns CLI_FAIL. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** cli_warn() - print `bus: warning: <msg>`. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** cli_note() - print `bus: <msg>`, an informational line. */
void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * cli_fail() - print `bus: <what>: <why>` where <why> explains libbus error
 * @err (bus_strerror() plus, where there is one, what to do about it, using
 * cli.topic and the bus @b, which may be NULL).  Returns CLI_FAIL.
 */
int cli_fail(const struct bus *b, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** cli_why() - the <why> part of cli_fail() into @buf; returns @buf. */
const char *cli_why(const struct bus *b, int err, char *buf, size_t len);

/** cli_open_bus() - bus_open() with the common options and the log
 *  callback; prints the error and returns CLI_FAIL when it fails, or
 *  CLI_USAGE when $BUS_NAME (used without --bus) is not a bus name. */
int cli_open_bus(struct bus **out);

/** cli_check_name() - CLI_OK, or a usage error when @name cannot be a
 *  @what ("topic", "bus") name: [A-Za-z0-9._-], 1..BUS_NAME_MAX bytes,
 *  no leading '.'. */
int cli_check_name(const char *what, const char *name);

/** cli_catch_signals() - SIGINT and SIGTERM set cli_stop (without
 *  SA_RESTART, so a blocking read returns EINTR). */
void cli_catch_signals(void);

/**
 * cli_interruptible_stdout() - make stdout a stream whose writes end when
 * cli_stop is set, for the commands that catch SIGINT/SIGTERM: stdio
 * retries a write(2) that a signal cut short, so a command blocked writing
 * to a reader that does not read stayed blocked after SIGTERM.  Once
 * cli_stop is set, a write goes on only while the descriptor takes it
 * without blocking (PIPE_BUF bytes at a time after POLLOUT), then fails
 * with cli.out_errno EINTR; what it could not write is dropped, as stdio
 * drops a failed write.  Other write errors and SIGPIPE are as before,
 * with the errno in cli.out_errno.  Buffering: line on a terminal, else
 * full.  Call after cli_catch_signals() and before anything is printed.
 * A signal that lands after the check of cli_stop and before the write(2)
 * blocks is only seen by the next signal.  CLI_OK, or CLI_FAIL after
 * printing why.
 */
int cli_interruptible_stdout(void);

/** cli_positional() - check that exactly @want positional arguments follow
 *  optind, naming @what ("TOPIC") when one is missing.  CLI_OK or usage. */
int cli_positional(int argc, char **argv, int want, const char *what);

/* ---------------------------------------------------------- parse.c */

#include "parse.h"

/* --------------------------------------------------------- format.c */

/** A compiled consume format (-f): literal runs and fields. */
struct fmt_op {
	char field;       /* 0: literal; else the letter after '%' */
	uint32_t lit_off; /* literal: into fmt->lit */
	uint32_t lit_len;
};

struct fmt {
	struct fmt_op *ops;
	size_t n;
	char *lit;
};

/**
 * fmt_compile() - compile @s, kcat style: %t topic, %p partition, %o offset,
 * %k key, %K key size, %s value, %S value size, %T timestamp (ms), %h
 * headers (name=value,...), %% a '%'; escapes \n \t \r \0 \\.  Returns 0,
 * -EINVAL (with a message in @err) or -ENOMEM.
 */
int fmt_compile(struct fmt *f, const char *s, char *err, size_t errlen);
void fmt_free(struct fmt *f);

/** fmt_print() - write @m of @topic to @out (unlocked stdio) as @f says. */
void fmt_print(const struct fmt *f, FILE *out, const char *topic, const struct bus_msg *m);

/* -------------------------------------------------------- commands */

int cmd_topic(int argc, char **argv);
int cmd_produce(int argc, char **argv);
int cmd_consume(int argc, char **argv);

#endif
