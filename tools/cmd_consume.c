/* tools/cmd_consume.c - `bus consume`: print a topic's records. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getline, memmem, timegm, *_unlocked */
#endif
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char usage_consume[] =
	"usage: bus consume TOPIC [-p PARTITION] [--from earliest|latest|OFFSET|@TIME]\n"
	"                   [-c COUNT] [-e] [-g GROUP] [-f FORMAT]\n"
	"\n"
	"Print TOPIC's records, waiting for more until interrupted (SIGINT or\n"
	"SIGTERM stop it cleanly), or until -c or -e says so.  Without -g the\n"
	"consumer is independent and commits nothing.\n"
	"\n"
	"Options:\n"
	"  -p, --partition N    read partition N only (default: all)\n"
	"  -o, --from WHERE     where to start (default: earliest):\n"
	"                         earliest  the oldest record still available\n"
	"                         latest    the next record appended\n"
	"                         OFFSET    that offset, in every partition read\n"
	"                         @TIME     the first record at or after TIME:\n"
	"                                   epoch milliseconds, or ISO-8601 such as\n"
	"                                   2026-11-24T10:00:00.250Z or\n"
	"                                   2026-11-24T11:00:00+01:00 (no zone: local)\n"
	"  -c, --count COUNT    stop after COUNT records\n"
	"  -e, --exit           stop at the end of the log: the offsets that were the\n"
	"                       ends when the command started\n"
	"  -g, --group GROUP    join a consumer group (not implemented yet)\n"
	"      --offset-reset earliest|latest|none\n"
	"                       when the position is no longer held (before the\n"
	"                       earliest offset: retention deleted it), go on from\n"
	"                       the earliest or the latest record, reporting what\n"
	"                       was skipped; none (default): stop with \"offset out\n"
	"                       of range\" (exit 1)\n"
	"  -f, --format FORMAT  print each record as FORMAT (default \"%s\\n\"):\n"
	"                         %t topic  %p partition  %o offset  %k key\n"
	"                         %K key size  %s value  %S value size\n"
	"                         %T timestamp (ms since the epoch)\n"
	"                         %h headers (name=value,...)  %% a '%'\n"
	"                         escapes: \\n \\t \\r \\0 \\\\\n"
	"\n"
	"Records spilled to disk and gone from the ring are read from disk (busd\n"
	"writes them under BUS_DATA_DIR) exactly as from the ring.  Records lost\n"
	"to a lapping producer (on an ephemeral topic) are reported on stderr as\n"
	"warnings.\n"
	"\n"
	"Common options:\n" CLI_COMMON_HELP;

enum { FROM_EARLIEST, FROM_LATEST, FROM_OFFSET, FROM_TIME };

/* Per-partition state. */
struct part {
	uint64_t end;      /* -e: stop before this offset */
	uint64_t min_off;  /* skip offsets below (--from OFFSET past the end) */
	int64_t min_ts;    /* while ts_armed: skip records older than this */
	int ts_armed;
	int done;          /* -e: reached end */
};

struct consume {
	const char *topic;
	struct bus *b;
	struct bus_consumer *c;
	struct part *parts;
	uint32_t first, count; /* the partitions read: first .. first+count-1 */
	int exit_at_end;
	unsigned reset; /* BUS_CONSUMER_RESET_* or 0 */
	/* lost records not reported yet, and when the last report was */
	uint64_t lost_pending, lost_total;
	uint32_t lost_p;
	uint64_t lost_off;
	struct timespec lost_last;
};

static double since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Report lost records at most once a second, summing in between. */
static void report_lost(struct consume *cs, int force)
{
	if (!cs->lost_pending || (!force && cs->lost_last.tv_sec && since(&cs->lost_last) < 1.0))
		return;
	cli_warn("consume '%s': %" PRIu64 " record%s lost before offset %" PRIu64 " of partition %" PRIu32
		 " (the consumer was lapped by producers)",
		 cs->topic, cs->lost_pending, cs->lost_pending == 1 ? "" : "s", cs->lost_off, cs->lost_p);
	cs->lost_pending = 0;
	clock_gettime(CLOCK_MONOTONIC, &cs->lost_last);
}

/* -e: whether every partition read has reached its end offset. */
static int all_done(struct consume *cs)
{
	uint32_t i;

	for (i = 0; i < cs->count; i++) {
		struct part *pt = &cs->parts[i];
		uint64_t pos;

		if (pt->done)
			continue;
		if (bus_consumer_position(cs->c, cs->first + i, &pos) == 0 && pos >= pt->end)
			pt->done = 1;
		else
			return 0;
	}
	return 1;
}

/* The earliest offset still held: on disk, else in the ring. */
static uint64_t earliest_of(const struct bus_partition_info *pi)
{
	return pi->disk_segments && pi->disk_first_offset < pi->first_offset ? pi->disk_first_offset
									     : pi->first_offset;
}

/* Position partition @p at @from/@value, falling back as documented when
 * the library reports the place out of the ring's range. */
static int seek_one(struct consume *cs, uint32_t p, int from, int64_t value)
{
	struct part *pt = &cs->parts[p - cs->first];
	struct bus_partition_info pi;
	int r;

	switch (from) {
	case FROM_EARLIEST:
		r = bus_consumer_seek(cs->c, (int32_t)p, BUS_SEEK_EARLIEST, 0);
		break;
	case FROM_LATEST:
		r = bus_consumer_seek(cs->c, (int32_t)p, BUS_SEEK_LATEST, 0);
		break;
	case FROM_OFFSET:
		r = bus_consumer_seek(cs->c, (int32_t)p, BUS_SEEK_OFFSET, value);
		if (r != -ERANGE)
			break;
		r = bus_partition_describe(cs->b, cs->topic, p, &pi);
		if (r < 0)
			break;
		if ((uint64_t)value >= pi.next_offset) {
			/* Not written yet: wait at the end, skip up to it. */
			pt->min_off = (uint64_t)value;
			r = bus_consumer_seek(cs->c, (int32_t)p, BUS_SEEK_OFFSET, (int64_t)pi.next_offset);
			if (r == -ERANGE)
				r = bus_consumer_seek(cs->c, (int32_t)p, BUS_SEEK_LATEST, 0);
		} else if (cs->reset) {
			cli_warn("consume '%s': partition %" PRIu32 ": offset %" PRId64 " is out of range "
				 "(the earliest is %" PRIu64 "); starting at the %s",
				 cs->topic, p, value, earliest_of(&pi),
				 cs->reset == BUS_CONSUMER_RESET_EARLIEST ? "earliest" : "latest");
			r = bus_consumer_seek(cs->c, (int32_t)p,
					      cs->reset == BUS_CONSUMER_RESET_EARLIEST ? BUS_SEEK_EARLIEST
										  : BUS_SEEK_LATEST,
					      0);
		} else {
			return cli_error("consume '%s': partition %" PRIu32 ": offset %" PRId64
					 " is out of range: the earliest is %" PRIu64
					 " (use --from earliest, or --offset-reset earliest)",
					 cs->topic, p, value, earliest_of(&pi));
		}
		break;
	case FROM_TIME:
	default:
		r = bus_consumer_seek(cs->c, (int32_t)p, BUS_SEEK_TIME, value);
		if (r == -ERANGE) {
			/* Before the oldest record or after the newest: read
			 * from the oldest and skip until the first record at or
			 * after the time. */
			pt->ts_armed = 1;
			pt->min_ts = value;
			r = bus_consumer_seek(cs->c, (int32_t)p, BUS_SEEK_EARLIEST, 0);
		}
		break;
	}
	if (r < 0)
		return cli_fail(cs->b, r, "consume '%s': positioning partition %" PRIu32, cs->topic, p);
	return CLI_OK;
}

/* Whether stdout's reader has gone (a pipe whose read end is closed, a
 * socket shut down), which only a write would otherwise tell: an idle
 * consumer checks at each wait (every 200 ms) so that `bus consume T |
 * head -1` ends when head does, records or not. */
static bool stdout_gone(void)
{
	struct pollfd pf = { .fd = STDOUT_FILENO, .events = 0 };

	return poll(&pf, 1, 0) == 1 && (pf.revents & (POLLERR | POLLHUP));
}

/* A write to stdout failed: a clean stop when SIGINT/SIGTERM cut it short
 * (the rest of the output is dropped), else an error. */
static int out_failed(const struct consume *cs)
{
	if (cli_stop && cli.out_errno == EINTR) {
		clearerr(stdout);
		return CLI_OK;
	}
	return cli_error("consume '%s': writing to stdout: %s", cs->topic,
			 strerror(cli.out_errno ? cli.out_errno : EIO));
}

int cmd_consume(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ "partition", required_argument, NULL, 'p' },
		{ "from", required_argument, NULL, 'o' },
		{ "count", required_argument, NULL, 'c' },
		{ "exit", no_argument, NULL, 'e' },
		{ "group", required_argument, NULL, 'g' },
		{ "format", required_argument, NULL, 'f' },
		{ "offset-reset", required_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 },
	};
	enum { MSGS = 256 };
	struct bus_consumer_opts copts;
	struct bus_msg *msgs = NULL;
	struct bus_topic_info ti;
	struct consume cs;
	struct fmt fmt;
	const char *format = "%s\n";
	char *buf = NULL, err[256];
	size_t buflen = 256 * 1024;
	uint64_t v, max_count = 0, printed = 0;
	int64_t from_value = 0;
	int32_t partition = BUS_PARTITION_ANY;
	int c, r, rc, from = FROM_EARLIEST;
	uint32_t i;

	memset(&cs, 0, sizeof cs);
	while ((c = cli_getopt(argc, argv, "p:o:c:eg:f:", longopts)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage_consume, stdout);
			return CLI_OK;
		case 'p':
			if (parse_u64(optarg, &v) || v >= BUS_PARTITIONS_MAX)
				return cli_usage("-p '%s': expected a partition number from 0 to %d", optarg,
						 BUS_PARTITIONS_MAX - 1);
			partition = (int32_t)v;
			break;
		case 'o':
			if (strcmp(optarg, "earliest") == 0 || strcmp(optarg, "beginning") == 0) {
				from = FROM_EARLIEST;
			} else if (strcmp(optarg, "latest") == 0 || strcmp(optarg, "end") == 0) {
				from = FROM_LATEST;
			} else if (optarg[0] == '@') {
				r = parse_time_ns(optarg + 1, &from_value);
				if (r == -ERANGE)
					return cli_usage("--from '%s': out of range: a time from 1970-01-01T00:00:00Z "
							 "to 2262-04-11T23:47:16Z",
							 optarg);
				if (r < 0)
					return cli_usage("--from '%s': expected @ and a time: epoch milliseconds or "
							 "ISO-8601 such as 2026-11-24T10:00:00Z",
							 optarg);
				from = FROM_TIME;
			} else {
				r = parse_u64(optarg, &v);
				if (r == -ERANGE || (r == 0 && v > INT64_MAX))
					return cli_usage("--from '%s': out of range: offsets go up to %" PRId64, optarg,
							 INT64_MAX);
				if (r < 0)
					return cli_usage("--from '%s': expected earliest, latest, an offset or @TIME",
							 optarg);
				from_value = (int64_t)v;
				from = FROM_OFFSET;
			}
			break;
		case 'c':
			r = parse_u64(optarg, &v);
			if (r == -ERANGE)
				return cli_usage("-c '%s': too large: a count goes up to %" PRIu64, optarg,
						 UINT64_MAX);
			if (r < 0 || v == 0)
				return cli_usage("-c '%s': expected a count of at least 1", optarg);
			max_count = v;
			break;
		case 'e':
			cs.exit_at_end = 1;
			break;
		case 'g':
			return cli_usage("-g %s: consumer groups are not implemented yet", optarg);
		case 'f':
			format = optarg;
			break;
		case 'R':
			if (strcmp(optarg, "earliest") == 0)
				cs.reset = BUS_CONSUMER_RESET_EARLIEST;
			else if (strcmp(optarg, "latest") == 0)
				cs.reset = BUS_CONSUMER_RESET_LATEST;
			else if (strcmp(optarg, "none") == 0)
				cs.reset = 0;
			else
				return cli_usage("--offset-reset '%s': expected earliest, latest or none",
						 optarg);
			break;
		default:
			return CLI_USAGE;
		}
	}
	if ((rc = cli_positional(argc, argv, 1, "TOPIC")) != CLI_OK)
		return rc;
	cs.topic = argv[optind];
	if ((rc = cli_check_name("topic", cs.topic)) != CLI_OK)
		return rc;
	r = fmt_compile(&fmt, format, err, sizeof err);
	if (r == -EINVAL)
		return cli_usage("-f: %s", err);
	if (r < 0)
		return cli_error("consume: out of memory");

	if ((rc = cli_open_bus(&cs.b)) != CLI_OK) {
		fmt_free(&fmt);
		return rc;
	}
	cli.topic = cs.topic;
	cli.hint_create = 1;
	r = bus_topic_describe(cs.b, cs.topic, &ti);
	if (r < 0) {
		rc = cli_fail(cs.b, r, "consume '%s'", cs.topic);
		goto out;
	}
	if (partition != BUS_PARTITION_ANY && (uint32_t)partition >= ti.config.partitions) {
		rc = cli_error("consume '%s': no partition %" PRId32 ": the topic has %" PRIu32 " (0..%" PRIu32 ")",
			       cs.topic, partition, ti.config.partitions, ti.config.partitions - 1);
		goto out;
	}
	cs.first = partition == BUS_PARTITION_ANY ? 0 : (uint32_t)partition;
	cs.count = partition == BUS_PARTITION_ANY ? ti.config.partitions : 1;
	cs.parts = calloc(cs.count, sizeof cs.parts[0]);
	msgs = calloc(MSGS, sizeof msgs[0]);
	buf = malloc(buflen);
	if (!cs.parts || !msgs || !buf) {
		rc = cli_error("consume '%s': out of memory", cs.topic);
		goto out;
	}

	memset(&copts, 0, sizeof copts);
	copts.partition = partition;
	copts.wait = BUS_WAIT_SLEEP;
	copts.start = from == FROM_LATEST ? BUS_SEEK_LATEST : BUS_SEEK_EARLIEST;
	copts.flags = cs.reset;
	r = bus_consumer_open(cs.b, cs.topic, &copts, &cs.c);
	if (r < 0) {
		rc = cli_fail(cs.b, r, "consume '%s'", cs.topic);
		goto out;
	}
	/* -e: the ends as they are now, before anything else is read. */
	if (cs.exit_at_end) {
		for (i = 0; i < cs.count; i++) {
			struct bus_partition_info pi;

			r = bus_partition_describe(cs.b, cs.topic, cs.first + i, &pi);
			if (r < 0) {
				rc = cli_fail(cs.b, r, "consume '%s' partition %" PRIu32, cs.topic, cs.first + i);
				goto out;
			}
			cs.parts[i].end = pi.next_offset;
		}
	}
	if (from != FROM_EARLIEST && from != FROM_LATEST) {
		for (i = 0; i < cs.count; i++)
			if ((rc = seek_one(&cs, cs.first + i, from, from_value)) != CLI_OK)
				goto out;
	}

	cli_catch_signals();
	if ((rc = cli_interruptible_stdout()) != CLI_OK)
		goto out;
	if (!isatty(STDOUT_FILENO))
		setvbuf(stdout, NULL, _IOFBF, 64 * 1024);
	rc = CLI_OK;
	while (!cli_stop) {
		int64_t timeout = 0;
		int n, k;

		if (cs.exit_at_end && all_done(&cs))
			break;
		n = bus_consumer_read(cs.c, msgs, MSGS, buf, buflen, 0);
		if (n == 0) {
			/* Idle: flush what is printed, then wait. */
			if (fflush(stdout) != 0) {
				rc = out_failed(&cs);
				break;
			}
			report_lost(&cs, 0);
			if (cs.exit_at_end && all_done(&cs))
				break;
			if (stdout_gone()) {
				/* As a write would: SIGPIPE, or EPIPE where it
				 * is ignored. */
				raise(SIGPIPE);
				rc = cli_error("consume '%s': writing to stdout: %s", cs.topic,
					       strerror(EPIPE));
				break;
			}
			timeout = cs.exit_at_end ? 20 * 1000 * 1000 : 200 * 1000 * 1000;
			n = bus_consumer_read(cs.c, msgs, MSGS, buf, buflen, timeout);
		}
		if (n == -EMSGSIZE) {
			size_t want = buflen * 2;
			char *nb;

			if ((size_t)msgs[0].value_len + 64 * 1024 > want)
				want = (size_t)msgs[0].value_len + 64 * 1024;
			nb = realloc(buf, want);
			if (!nb) {
				rc = cli_error("consume '%s': out of memory for a record of %" PRIu32 " bytes",
					       cs.topic, msgs[0].value_len);
				break;
			}
			buf = nb;
			buflen = want;
			continue;
		}
		if (n == -ERANGE) {
			rc = cli_error("consume '%s': offset out of range: retention deleted the records "
				       "at the position (use --offset-reset earliest to go on from the "
				       "earliest)",
				       cs.topic);
			break;
		}
		if (n < 0) {
			rc = cli_fail(cs.b, n, "consume '%s'", cs.topic);
			break;
		}
		for (k = 0; k < n; k++) {
			const struct bus_msg *m = &msgs[k];
			struct part *pt;

			if (m->partition < cs.first || m->partition - cs.first >= cs.count)
				continue; /* not asked for; cannot happen */
			pt = &cs.parts[m->partition - cs.first];
			if (m->lost_before) {
				cs.lost_pending += m->lost_before;
				cs.lost_total += m->lost_before;
				cs.lost_p = m->partition;
				cs.lost_off = m->offset;
				report_lost(&cs, 0);
			}
			if (cs.exit_at_end) {
				if (pt->done || m->offset >= pt->end) {
					pt->done = 1;
					continue;
				}
				if (m->offset + 1 >= pt->end)
					pt->done = 1;
			}
			if (m->offset < pt->min_off)
				continue;
			if (pt->ts_armed) {
				if (m->timestamp < pt->min_ts)
					continue;
				pt->ts_armed = 0;
			}
			fmt_print(&fmt, stdout, cs.topic, m);
			if (++printed == max_count)
				goto done;
		}
		if (ferror(stdout)) {
			rc = out_failed(&cs);
			break;
		}
	}
done:
	/* Stopped by a signal: what stdout takes now, without blocking. */
	if (cli_stop && rc == CLI_OK && fflush(stdout) != 0)
		rc = out_failed(&cs);
	report_lost(&cs, 1);
	if (cli.verbose)
		fprintf(stderr, "bus: consume '%s': %" PRIu64 " records printed, %" PRIu64 " lost\n", cs.topic,
			printed, cs.lost_total);
out:
	bus_consumer_close(cs.c);
	bus_close(cs.b);
	free(cs.parts);
	free(msgs);
	free(buf);
	fmt_free(&fmt);
	return rc;
}
