/* tools/cmd_produce.c - `bus produce`: one record per line of stdin. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getline, memmem, timegm, *_unlocked */
#endif
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char usage_produce[] =
	"usage: bus produce TOPIC [-k SEP] [-p PARTITION] [--acks 0|1|all]\n"
	"                   [--timestamp NS] [-H NAME=VALUE]... [--print-offsets]\n"
	"\n"
	"Append one record per line of stdin to TOPIC (the newline is not part of\n"
	"the record; lines may be of any length).  Prints nothing on success\n"
	"unless --print-offsets.  Exits 1 if a record could not be written,\n"
	"saying how many were.\n"
	"\n"
	"Options:\n"
	"  -k, --key-sep SEP    the text before the first SEP is the key, the rest\n"
	"                       the value (a line without SEP has no key)\n"
	"  -p, --partition N    write to partition N (default: by the key's hash,\n"
	"                       FNV-1a; records without a key round-robin)\n"
	"  --acks 0|1|all       0 and 1: the record is in the ring when written;\n"
	"                       all needs a standby (not available yet)\n"
	"  --timestamp NS       the records' timestamp, ns since the epoch, at\n"
	"                       least 1 (default: the time of each append)\n"
	"  -H, --header NAME=VALUE\n"
	"                       add a header to every record (repeatable)\n"
	"  --print-offsets      print \"PARTITION OFFSET\" per record on stdout\n"
	"\n"
	"Common options:\n" CLI_COMMON_HELP;

enum { OPT_ACKS = OPT_CMD_BASE, OPT_TIMESTAMP, OPT_PRINT_OFFSETS };

#define HEADERS_MAX 64

/* Where the round-robin of records without a key starts: anywhere, so
 * that one-record invocations spread over the partitions as one long
 * invocation does (the library's own round-robin starts at 0 for each
 * producer). */
static uint32_t rr_start(void)
{
	struct timespec ts;
	uint64_t x;
	uint32_t r;

	if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
		return r;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	x = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)ts.tv_nsec;
	x *= 0x9e3779b97f4a7c15ull;
	return (uint32_t)(x >> 32);
}

/* Nothing more to read on stdin right now (so that buffered output is
 * worth flushing before getline() blocks). */
static int stdin_idle(void)
{
	struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN, .revents = 0 };

	return poll(&pfd, 1, 0) == 0;
}

/* --print-offsets: stdout failed.  The offsets asked for are being lost,
 * so produce stops, and says how many lines went in. */
static int offsets_failed(const char *topic, uint64_t written)
{
	return cli_error("produce to '%s': writing the offsets to stdout: %s; %" PRIu64 " records written",
			 topic, strerror(cli.out_errno ? cli.out_errno : EIO), written);
}

int cmd_produce(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ "key-sep", required_argument, NULL, 'k' },
		{ "partition", required_argument, NULL, 'p' },
		{ "header", required_argument, NULL, 'H' },
		{ "acks", required_argument, NULL, OPT_ACKS },
		{ "timestamp", required_argument, NULL, OPT_TIMESTAMP },
		{ "print-offsets", no_argument, NULL, OPT_PRINT_OFFSETS },
		{ NULL, 0, NULL, 0 },
	};
	struct bus_header headers[HEADERS_MAX];
	struct bus_producer_opts popts;
	struct bus_producer *prod = NULL;
	struct bus_topic_info ti;
	struct bus_record rec;
	struct bus *b = NULL;
	const char *topic, *sep = NULL;
	char *line = NULL;
	size_t cap = 0, seplen = 0;
	uint64_t v, written = 0;
	int64_t timestamp = 0;
	int32_t partition = BUS_PARTITION_ANY;
	uint32_t nheaders = 0, rr;
	int c, r, rc, print_offsets = 0;
	ssize_t n;

	while ((c = cli_getopt(argc, argv, "k:p:H:", longopts)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage_produce, stdout);
			return CLI_OK;
		case 'k':
			if (!*optarg)
				return cli_usage("-k: the key separator is empty");
			sep = optarg;
			seplen = strlen(sep);
			break;
		case 'p':
			if (parse_u64(optarg, &v) || v >= BUS_PARTITIONS_MAX)
				return cli_usage("-p '%s': expected a partition number from 0 to %d", optarg,
						 BUS_PARTITIONS_MAX - 1);
			partition = (int32_t)v;
			break;
		case 'H': {
			const char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg || eq - optarg > UINT16_MAX)
				return cli_usage("-H '%s': expected NAME=VALUE", optarg);
			if (nheaders == HEADERS_MAX)
				return cli_usage("-H: at most %d headers", HEADERS_MAX);
			headers[nheaders].name = optarg;
			headers[nheaders].name_len = (uint16_t)(eq - optarg);
			headers[nheaders].value = eq + 1;
			headers[nheaders].value_len = (uint32_t)strlen(eq + 1);
			nheaders++;
			break;
		}
		case OPT_ACKS:
			if (strcmp(optarg, "all") == 0 || strcmp(optarg, "-1") == 0)
				return cli_usage("--acks all: needs a standby (busd --standby), which is not "
						 "available yet; use --acks 1");
			if (strcmp(optarg, "0") != 0 && strcmp(optarg, "1") != 0)
				return cli_usage("--acks '%s': expected 0, 1 or all", optarg);
			break; /* 0 and 1: a written record is in the ring either way */
		case OPT_TIMESTAMP:
			/* 0 is the library's "now", not the epoch. */
			if (parse_u64(optarg, &v) || v == 0 || v > INT64_MAX)
				return cli_usage("--timestamp '%s': expected nanoseconds since the epoch, "
						 "from 1 to %" PRId64, optarg, INT64_MAX);
			timestamp = (int64_t)v;
			break;
		case OPT_PRINT_OFFSETS:
			print_offsets = 1;
			break;
		default:
			return CLI_USAGE;
		}
	}
	if ((rc = cli_positional(argc, argv, 1, "TOPIC")) != CLI_OK)
		return rc;
	topic = argv[optind];
	if ((rc = cli_check_name("topic", topic)) != CLI_OK)
		return rc;

	if ((rc = cli_open_bus(&b)) != CLI_OK)
		return rc;
	cli.topic = topic;
	cli.hint_create = 1;
	r = bus_topic_describe(b, topic, &ti);
	if (r < 0) {
		rc = cli_fail(b, r, "produce to '%s'", topic);
		goto out;
	}
	if (partition != BUS_PARTITION_ANY && (uint32_t)partition >= ti.config.partitions) {
		rc = cli_error("produce to '%s': no partition %" PRId32 ": the topic has %" PRIu32
			       " (0..%" PRIu32 ")",
			       topic, partition, ti.config.partitions, ti.config.partitions - 1);
		goto out;
	}
	/* Wait when the ring is full, but in slices, so that a signal stops
	 * a producer that a reader or the spiller holds back. */
	memset(&popts, 0, sizeof popts);
	popts.block_timeout_ns = 200 * 1000 * 1000;
	r = bus_producer_open(b, topic, &popts, &prod);
	if (r < 0) {
		rc = cli_fail(b, r, "produce to '%s'", topic);
		goto out;
	}
	cli_catch_signals();
	if ((rc = cli_interruptible_stdout()) != CLI_OK)
		goto out;

	memset(&rec, 0, sizeof rec);
	rec.timestamp = timestamp;
	rec.headers = nheaders ? headers : NULL;
	rec.header_count = nheaders;
	rr = rr_start();
	rc = CLI_OK;
	for (;;) {
		char *val, *k;
		int32_t p;
		size_t len;
		uint32_t out_p;
		uint64_t out_o;

		if (print_offsets && stdin_idle() && fflush(stdout) != 0 && !cli_stop) {
			rc = offsets_failed(topic, written);
			break;
		}
		errno = 0;
		n = getline(&line, &cap, stdin);
		if (n < 0 || cli_stop) {
			if (cli_stop)
				rc = cli_error("produce to '%s': interrupted; %" PRIu64 " records written", topic,
					       written);
			else if (ferror(stdin))
				rc = cli_error("produce to '%s': reading stdin: %s; %" PRIu64 " records written",
					       topic, strerror(errno ? errno : EIO), written);
			else if (!feof(stdin))
				/* getline() failed without a read error: no
				 * memory for the line (ENOMEM), which it does
				 * not flag on the stream.  Not the end. */
				rc = cli_error("produce to '%s': record %" PRIu64 " not written: its line does "
					       "not fit in memory: %s; %" PRIu64 " records written",
					       topic, written + 1, strerror(errno ? errno : ENOMEM), written);
			break;
		}
		len = (size_t)n;
		if (len && line[len - 1] == '\n')
			len--;
		if (len > UINT32_MAX) {
			rc = cli_error("produce to '%s': record %" PRIu64 " not written: a line of %zu bytes is "
				       "too long; %" PRIu64 " records written",
				       topic, written + 1, len, written);
			break;
		}
		val = line;
		rec.key = NULL;
		rec.key_len = 0;
		if (sep && (k = memmem(line, len, sep, seplen)) != NULL) {
			rec.key = line;
			rec.key_len = (uint32_t)(k - line);
			val = k + seplen;
		}
		rec.value = val;
		rec.value_len = (uint32_t)(len - (size_t)(val - line));
		/* Without -p: a key picks the partition (in the library), no
		 * key the next one round-robin. */
		p = partition;
		if (p == BUS_PARTITION_ANY && rec.key_len == 0)
			p = (int32_t)(rr++ % ti.config.partitions);
		do
			r = bus_produce(prod, p, &rec, &out_p, &out_o);
		while (r == -ETIMEDOUT && !cli_stop);
		if (r < 0) {
			char why[512];

			if (r == -ETIMEDOUT)
				rc = cli_error("produce to '%s': interrupted while the ring was full; %" PRIu64
					       " records written",
					       topic, written);
			else
				rc = cli_error("produce to '%s': record %" PRIu64 " not written: %s; %" PRIu64
					       " records written",
					       topic, written + 1, cli_why(b, r, why, sizeof why), written);
			break;
		}
		written++;
		if (print_offsets) {
			printf("%" PRIu32 " %" PRIu64 "\n", out_p, out_o);
			if (ferror(stdout) && !cli_stop) {
				rc = offsets_failed(topic, written);
				break;
			}
		}
	}
	free(line);
	if (rc == CLI_OK && print_offsets && fflush(stdout) != 0)
		rc = offsets_failed(topic, written);
	if (cli.verbose)
		fprintf(stderr, "bus: produce to '%s': %" PRIu64 " records written\n", topic, written);
out:
	bus_producer_close(prod);
	bus_close(b);
	return rc;
}
