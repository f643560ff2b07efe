/* tools/cmd_topic.c - `bus topic create|list|describe|delete`. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getline, memmem, timegm, *_unlocked */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char usage_topic[] =
	"usage: bus topic create NAME --partitions N [OPTIONS]\n"
	"       bus topic list [--long] [--json]\n"
	"       bus topic describe NAME [--json]\n"
	"       bus topic delete NAME\n"
	"\n"
	"See 'bus topic SUBCOMMAND --help' for each.\n"
	"\n"
	"Common options:\n" CLI_COMMON_HELP;

static const char usage_create[] =
	"usage: bus topic create NAME --partitions N [OPTIONS]\n"
	"\n"
	"Create topic NAME.  Creating a topic that exists with the same config\n"
	"succeeds and changes nothing; with another config it fails (exit 1).\n"
	"Prints on stderr which memory backs the rings, and a warning when the\n"
	"topic is persistent and no busd runs for the bus (the exit status is\n"
	"unchanged).\n"
	"\n"
	"Options:\n"
	"  --partitions N          number of partitions, 1..256 (required)\n"
	"  --ring-size SIZE        bytes per partition ring, a power of two from\n"
	"                          64K to 1G (default 4M); SIZE takes K, M, G\n"
	"  --ephemeral             never spilled to disk (default: persistent)\n"
	"  --retention DURATION    keep records this long on disk; 0 (the default)\n"
	"                          keeps them forever (describe says \"forever\");\n"
	"                          DURATION is NUNIT..., UNIT one of ms s m h d\n"
	"                          (e.g. 7d, 1h30m)\n"
	"  --retention-bytes SIZE  keep at most this much per partition on disk;\n"
	"                          0 (the default): no limit (describe: \"none\")\n"
	"                          Retention applies to persistent topics only\n"
	"                          (with --ephemeral: a warning, no effect).\n"
	"  --overflow block|overwrite\n"
	"                          when the ring is full: producers wait for the\n"
	"                          slowest gating reader (default), or overwrite\n"
	"  --numa-node N           bind the rings to NUMA node N\n"
	"  --private               the topic's files are 0600 instead of 0660\n"
	"                          (the bus's control region stays 0660)\n"
	"\n"
	"Common options:\n" CLI_COMMON_HELP;

static const char usage_list[] =
	"usage: bus topic list [--long] [--json]\n"
	"\n"
	"Print the bus's topics, one name per line.\n"
	"\n"
	"Options:\n"
	"  -l, --long    also print each topic's config\n"
	"  --json        print one JSON document instead\n"
	"\n"
	"Common options:\n" CLI_COMMON_HELP;

static const char usage_describe[] =
	"usage: bus topic describe NAME [--json]\n"
	"\n"
	"Print the topic's config and, per partition: the first offset on disk,\n"
	"the first offset still in the ring, the next offset, the spilled and\n"
	"replicated offsets (everything below them is on disk / on the standby),\n"
	"and the bytes on disk.  A retention of 0 (keep forever) prints as\n"
	"\"forever\", a retention in bytes of 0 (no limit) as \"none\"; --json\n"
	"gives both as 0 (retention_ms, retention_bytes).\n"
	"\n"
	"Options:\n"
	"  --json        print one JSON document instead\n"
	"\n"
	"Common options:\n" CLI_COMMON_HELP;

static const char usage_delete[] =
	"usage: bus topic delete NAME\n"
	"\n"
	"Delete the topic and unlink its rings.  Processes that have it open get\n"
	"an error on their next call.\n"
	"\n"
	"Common options:\n" CLI_COMMON_HELP;

static const char *overflow_name(uint32_t o)
{
	return o == BUS_OVERFLOW_OVERWRITE ? "overwrite" : o == BUS_OVERFLOW_BLOCK ? "block" : "?";
}

/* ------------------------------------------------------------- create */

enum {
	OPT_PARTITIONS = OPT_CMD_BASE,
	OPT_RING_SIZE,
	OPT_EPHEMERAL,
	OPT_RETENTION,
	OPT_RETENTION_BYTES,
	OPT_OVERFLOW,
	OPT_NUMA_NODE,
	OPT_PRIVATE,
	OPT_JSON,
};

/* A config's NUMA node as --numa-node takes it, or "none" (-1). */
static const char *numa_name(int32_t node, char *buf, size_t len)
{
	if (node < 0)
		snprintf(buf, len, "none");
	else
		snprintf(buf, len, "%" PRId32, node);
	return buf;
}

/* A retention as describe prints it: 0 keeps records forever. */
static const char *retention_name(uint64_t ms, char *buf, size_t len)
{
	return ms ? fmt_duration(ms, buf, len) : "forever";
}

/* A retention in bytes as describe prints it: 0 is no limit. */
static const char *retention_bytes_name(uint64_t v, char *buf, size_t len)
{
	return v ? fmt_size(v, buf, len) : "none";
}

/* The differences between two configs, as "partitions 3 (asked 4), ...". */
static void config_diff(const struct bus_topic_config *have, const struct bus_topic_config *want,
			char *buf, size_t len)
{
	char a[32], b[32];
	size_t n = 0;

#define DIFF(...)                                                                   \
	do {                                                                        \
		if (n < len)                                                        \
			n += (size_t)snprintf(buf + n, len - n, "%s", n ? ", " : ""); \
		if (n < len)                                                        \
			n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__);       \
	} while (0)

	buf[0] = '\0';
	if (have->partitions != want->partitions)
		DIFF("partitions %" PRIu32 " (asked %" PRIu32 ")", have->partitions, want->partitions);
	if (have->ring_size != want->ring_size)
		DIFF("ring-size %s (asked %s)", fmt_size(have->ring_size, a, sizeof a),
		     fmt_size(want->ring_size, b, sizeof b));
	if ((have->flags ^ want->flags) & BUS_TOPIC_EPHEMERAL)
		DIFF("%s (asked %s)", have->flags & BUS_TOPIC_EPHEMERAL ? "ephemeral" : "persistent",
		     want->flags & BUS_TOPIC_EPHEMERAL ? "ephemeral" : "persistent");
	if ((have->flags ^ want->flags) & BUS_TOPIC_PRIVATE)
		DIFF("%s (asked %s)", have->flags & BUS_TOPIC_PRIVATE ? "private" : "shared",
		     want->flags & BUS_TOPIC_PRIVATE ? "private" : "shared");
	if (have->retention_ms != want->retention_ms)
		DIFF("retention %s (asked %s)", retention_name(have->retention_ms, a, sizeof a),
		     retention_name(want->retention_ms, b, sizeof b));
	if (have->retention_bytes != want->retention_bytes)
		DIFF("retention-bytes %s (asked %s)", retention_bytes_name(have->retention_bytes, a, sizeof a),
		     retention_bytes_name(want->retention_bytes, b, sizeof b));
	if (have->overflow != want->overflow)
		DIFF("overflow %s (asked %s)", overflow_name(have->overflow), overflow_name(want->overflow));
	if (have->numa_node != want->numa_node)
		DIFF("numa-node %s (asked %s)", numa_name(have->numa_node, a, sizeof a),
		     numa_name(want->numa_node, b, sizeof b));
#undef DIFF
}

/* The line saying which memory backs the rings: the library's own when it
 * reported one while creating, else from the partitions' state. */
static void print_memory_line(struct bus *b, const char *name, const struct bus_topic_config *cfg)
{
	struct bus_partition_info pi;
	char sz[32];
	long page = sysconf(_SC_PAGESIZE);

	if (cli.mem_line[0]) {
		if (strncmp(cli.mem_line, "topic '", 7) == 0)
			cli_note("%s", cli.mem_line);
		else
			cli_note("topic '%s': %s", name, cli.mem_line);
		return;
	}
	if (bus_partition_describe(b, name, 0, &pi) != 0)
		return;
	cli_note("topic '%s': rings on %s (%" PRIu32 " x %s in %s)", name,
		 pi.hugepages ? "huge pages" : page == 4096 ? "normal 4 KiB pages" : "normal pages",
		 cfg->partitions, fmt_size(cfg->ring_size, sz, sizeof sz), bus_shm_dir(b));
}

/* The one positional argument of a topic subcommand: a valid topic name. */
static int topic_name_arg(int argc, char **argv, const char **name)
{
	int rc = cli_positional(argc, argv, 1, "topic NAME");

	if (rc != CLI_OK)
		return rc;
	*name = argv[optind];
	return cli_check_name("topic", *name);
}

static int topic_create(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ "partitions", required_argument, NULL, OPT_PARTITIONS },
		{ "ring-size", required_argument, NULL, OPT_RING_SIZE },
		{ "ephemeral", no_argument, NULL, OPT_EPHEMERAL },
		{ "retention", required_argument, NULL, OPT_RETENTION },
		{ "retention-bytes", required_argument, NULL, OPT_RETENTION_BYTES },
		{ "overflow", required_argument, NULL, OPT_OVERFLOW },
		{ "numa-node", required_argument, NULL, OPT_NUMA_NODE },
		{ "private", no_argument, NULL, OPT_PRIVATE },
		{ NULL, 0, NULL, 0 },
	};
	struct bus_topic_config cfg;
	struct bus_topic_info old;
	struct bus *b;
	const char *name;
	uint64_t v;
	char sz[32];
	int c, r, rc, have_partitions = 0, existed;

	bus_topic_config_init(&cfg);
	while ((c = cli_getopt(argc, argv, "", longopts)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage_create, stdout);
			return CLI_OK;
		case OPT_PARTITIONS:
			if (parse_u64(optarg, &v) || v < 1 || v > BUS_PARTITIONS_MAX)
				return cli_usage("--partitions '%s': must be a number from 1 to %d", optarg,
						 BUS_PARTITIONS_MAX);
			cfg.partitions = (uint32_t)v;
			have_partitions = 1;
			break;
		case OPT_RING_SIZE:
			if (parse_size(optarg, &v) || v < BUS_RING_MIN || v > BUS_RING_MAX || (v & (v - 1)))
				return cli_usage("--ring-size '%s': must be a power of two from 64K to 1G (e.g. 4M)",
						 optarg);
			cfg.ring_size = v;
			break;
		case OPT_EPHEMERAL:
			cfg.flags |= BUS_TOPIC_EPHEMERAL;
			break;
		case OPT_RETENTION:
			r = parse_duration_ms(optarg, &v);
			if (r == -ERANGE)
				return cli_usage("--retention '%s': too large: at most %" PRIu64 "ms", optarg,
						 UINT64_MAX);
			if (r < 0)
				return cli_usage("--retention '%s': expected a duration such as 500ms, 30s, 15m, 12h, 7d",
						 optarg);
			cfg.retention_ms = v;
			break;
		case OPT_RETENTION_BYTES:
			r = parse_size(optarg, &v);
			if (r == -ERANGE)
				return cli_usage("--retention-bytes '%s': too large: at most %" PRIu64 " bytes",
						 optarg, UINT64_MAX);
			if (r < 0)
				return cli_usage("--retention-bytes '%s': expected a size such as 512M or 10G", optarg);
			cfg.retention_bytes = v;
			break;
		case OPT_OVERFLOW:
			if (strcmp(optarg, "block") == 0)
				cfg.overflow = BUS_OVERFLOW_BLOCK;
			else if (strcmp(optarg, "overwrite") == 0)
				cfg.overflow = BUS_OVERFLOW_OVERWRITE;
			else
				return cli_usage("--overflow '%s': expected block or overwrite", optarg);
			break;
		case OPT_NUMA_NODE:
			if (parse_u64(optarg, &v) || v > INT32_MAX)
				return cli_usage("--numa-node '%s': expected a node number from 0 to %" PRId32,
						 optarg, INT32_MAX);
			cfg.numa_node = (int32_t)v;
			break;
		case OPT_PRIVATE:
			/* The topic's files only: a private handle
			 * (BUS_F_PRIVATE) would also make the bus's control
			 * region 0600 when this create makes the bus, and
			 * shut the group out of every topic. */
			cfg.flags |= BUS_TOPIC_PRIVATE;
			break;
		default:
			return CLI_USAGE;
		}
	}
	if ((rc = topic_name_arg(argc, argv, &name)) != CLI_OK)
		return rc;
	if (!have_partitions)
		return cli_usage("missing --partitions N");

	if ((rc = cli_open_bus(&b)) != CLI_OK)
		return rc;
	cli.topic = name;
	existed = bus_topic_describe(b, name, &old) == 0;
	cli.capture_mem = 1;
	cli.mem_line[0] = '\0';
	r = bus_topic_create(b, name, &cfg);
	cli.capture_mem = 0;
	if (r == -BUS_ECONFIG) {
		char diff[512];

		if (bus_topic_describe(b, name, &old) == 0)
			config_diff(&old.config, &cfg, diff, sizeof diff);
		else
			diff[0] = '\0';
		rc = cli_error("topic create '%s': exists on bus '%s' with another config%s%s; "
			       "delete it first (bus topic delete %s) or create it as it is",
			       name, bus_name(b), diff[0] ? ": " : "", diff, name);
	} else if (r == -EINVAL) {
		rc = cli_error("topic create '%s': the library refused the config: %s", name, bus_strerror(r));
	} else if (r < 0) {
		rc = cli_fail(b, r, "topic create '%s'", name);
	} else {
		if (existed && cli.verbose)
			fprintf(stderr, "bus: topic '%s' already exists with this config\n", name);
		print_memory_line(b, name, &cfg);
		/* Not an error: busd may be started later.  But until then
		 * nothing frees the rings, and producers fail once one is
		 * full (-BUS_ENODAEMON), which a user would meet far from
		 * here. */
		if ((cfg.flags & BUS_TOPIC_EPHEMERAL) && (cfg.retention_ms || cfg.retention_bytes))
			cli_warn("topic '%s' is ephemeral: --retention and --retention-bytes have no "
				 "effect (its records are never on disk; the ring keeps the latest %s "
				 "per partition)",
				 name, fmt_size(cfg.ring_size, sz, sizeof sz));
		if (!(cfg.flags & BUS_TOPIC_EPHEMERAL) && bus_daemon_pid(b) == 0)
			cli_warn("topic '%s' is persistent but no busd runs for bus '%s': its records are "
				 "not spilled to disk until one starts (busd --bus %s), and producers fail "
				 "once a partition's ring is full",
				 name, bus_name(b), bus_name(b));
		rc = CLI_OK;
	}
	bus_close(b);
	return rc;
}

/* --------------------------------------------------------------- list */

static void json_config(FILE *f, const struct bus_topic_config *c)
{
	fprintf(f,
		"{\"partitions\":%" PRIu32 ",\"ring_size\":%" PRIu64 ",\"ephemeral\":%s,"
		"\"private\":%s,\"retention_ms\":%" PRIu64 ",\"retention_bytes\":%" PRIu64
		",\"overflow\":\"%s\",",
		c->partitions, c->ring_size, c->flags & BUS_TOPIC_EPHEMERAL ? "true" : "false",
		c->flags & BUS_TOPIC_PRIVATE ? "true" : "false", c->retention_ms, c->retention_bytes, overflow_name(c->overflow));
	if (c->numa_node >= 0)
		fprintf(f, "\"numa_node\":%" PRId32 "}", c->numa_node);
	else
		fputs("\"numa_node\":null}", f);
}

struct list_ctx {
	int json, lng;
	unsigned n;
};

static int list_one(void *ctx, const struct bus_topic_info *ti)
{
	struct list_ctx *lc = ctx;
	const struct bus_topic_config *c = &ti->config;
	char sz[32], ret[32], rb[32];

	if (lc->json) {
		fputs(lc->n ? "," : "", stdout);
		fputs("{\"name\":", stdout);
		json_str(stdout, ti->name);
		printf(",\"generation\":%" PRIu32 ",\"config\":", ti->generation);
		json_config(stdout, c);
		fputc('}', stdout);
	} else if (lc->lng) {
		printf("%-24s %10" PRIu32 " %9s %-10s %-9s %9s %15s\n", ti->name, c->partitions,
		       fmt_size(c->ring_size, sz, sizeof sz),
		       c->flags & BUS_TOPIC_EPHEMERAL ? "ephemeral" : "persistent", overflow_name(c->overflow),
		       retention_name(c->retention_ms, ret, sizeof ret),
		       retention_bytes_name(c->retention_bytes, rb, sizeof rb));
	} else {
		puts(ti->name);
	}
	lc->n++;
	return 0;
}

static int topic_list(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ "json", no_argument, NULL, OPT_JSON },
		{ "long", no_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	struct list_ctx lc = { 0, 0, 0 };
	struct bus *b;
	int c, r, rc;

	while ((c = cli_getopt(argc, argv, "l", longopts)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage_list, stdout);
			return CLI_OK;
		case OPT_JSON:
			lc.json = 1;
			break;
		case 'l':
			lc.lng = 1;
			break;
		default:
			return CLI_USAGE;
		}
	}
	if ((rc = cli_positional(argc, argv, 0, "")) != CLI_OK)
		return rc;
	if ((rc = cli_open_bus(&b)) != CLI_OK)
		return rc;
	if (lc.json) {
		fputs("{\"bus\":", stdout);
		json_str(stdout, bus_name(b));
		fputs(",\"topics\":[", stdout);
	} else if (lc.lng) {
		printf("%-24s %10s %9s %-10s %-9s %9s %15s\n", "TOPIC", "PARTITIONS", "RING-SIZE", "KIND",
		       "OVERFLOW", "RETENTION", "RETENTION-BYTES");
	}
	r = bus_topic_list(b, list_one, &lc);
	/* -BUS_ECORRUPT: every topic that reads is listed (and the JSON
	 * document is whole) before the error is told. */
	if (lc.json && (r == 0 || r == -BUS_ECORRUPT))
		fputs("]}\n", stdout);
	if (r < 0) {
		fflush(stdout);
		rc = cli_fail(b, r, "topic list on bus '%s'", bus_name(b));
	} else {
		rc = CLI_OK;
	}
	bus_close(b);
	return rc;
}

/* ----------------------------------------------------------- describe */

static int topic_describe(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct bus_partition_info *pi;
	struct bus_topic_info ti;
	const struct bus_topic_config *cfg = &ti.config;
	struct bus *b;
	const char *name;
	char a[32];
	int c, r, rc, json = 0;
	uint32_t p;

	while ((c = cli_getopt(argc, argv, "", longopts)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage_describe, stdout);
			return CLI_OK;
		case OPT_JSON:
			json = 1;
			break;
		default:
			return CLI_USAGE;
		}
	}
	if ((rc = topic_name_arg(argc, argv, &name)) != CLI_OK)
		return rc;
	if ((rc = cli_open_bus(&b)) != CLI_OK)
		return rc;
	cli.topic = name;
	r = bus_topic_describe(b, name, &ti);
	if (r < 0) {
		rc = cli_fail(b, r, "topic describe '%s'", name);
		bus_close(b);
		return rc;
	}
	pi = calloc(cfg->partitions ? cfg->partitions : 1, sizeof pi[0]);
	if (!pi) {
		bus_close(b);
		return cli_error("topic describe '%s': out of memory", name);
	}
	/* Every partition first, so that an error prints no half document. */
	for (p = 0; p < cfg->partitions; p++) {
		r = bus_partition_describe(b, name, p, &pi[p]);
		if (r < 0) {
			rc = cli_fail(b, r, "topic describe '%s' partition %" PRIu32, name, p);
			free(pi);
			bus_close(b);
			return rc;
		}
	}

	if (json) {
		fputs("{\"bus\":", stdout);
		json_str(stdout, bus_name(b));
		fputs(",\"name\":", stdout);
		json_str(stdout, ti.name);
		printf(",\"generation\":%" PRIu32 ",\"config\":", ti.generation);
		json_config(stdout, cfg);
		fputs(",\"partitions\":[", stdout);
		for (p = 0; p < cfg->partitions; p++) {
			printf("%s{\"partition\":%" PRIu32 ",\"first_offset_disk\":", p ? "," : "", p);
			if (pi[p].disk_segments)
				printf("%" PRIu64, pi[p].disk_first_offset);
			else
				fputs("null", stdout);
			printf(",\"first_offset_ring\":%" PRIu64 ",\"next_offset\":%" PRIu64
			       ",\"spilled_offset\":%" PRIu64 ",\"replicated_offset\":%" PRIu64
			       ",\"bytes_on_disk\":%" PRIu64 ",\"segments\":%" PRIu32
			       ",\"write_pos\":%" PRIu64 ",\"repaired\":%" PRIu64
			       ",\"ring_size\":%" PRIu64 ",\"hugepages\":%s,\"spiller_pid\":%" PRId32 "}",
			       pi[p].first_offset, pi[p].next_offset, pi[p].spilled_offset,
			       pi[p].replicated_offset, pi[p].disk_bytes, pi[p].disk_segments,
			       pi[p].write_pos, pi[p].repaired, pi[p].ring_size,
			       pi[p].hugepages ? "true" : "false", pi[p].spiller_pid);
		}
		fputs("]}\n", stdout);
	} else {
		printf("topic            %s\n", ti.name);
		printf("bus              %s\n", bus_name(b));
		printf("partitions       %" PRIu32 "\n", cfg->partitions);
		printf("ring-size        %s\n", fmt_size(cfg->ring_size, a, sizeof a));
		printf("kind             %s\n", cfg->flags & BUS_TOPIC_EPHEMERAL ? "ephemeral" : "persistent");
		printf("access           %s\n",
		       cfg->flags & BUS_TOPIC_PRIVATE ? "private (owner only)" : "shared (owner and group)");
		printf("retention        %s\n", retention_name(cfg->retention_ms, a, sizeof a));
		printf("retention-bytes  %s\n", retention_bytes_name(cfg->retention_bytes, a, sizeof a));
		printf("overflow         %s\n", overflow_name(cfg->overflow));
		if (cfg->numa_node >= 0)
			printf("numa-node        %" PRId32 "\n", cfg->numa_node);
		else
			printf("numa-node        none\n");
		printf("memory           %s\n",
		       cfg->partitions && pi[0].hugepages ? "huge pages" : "normal pages");
		printf("generation       %" PRIu32 "\n", ti.generation);
		printf("\n%9s %13s %13s %13s %13s %13s %13s %8s\n", "PARTITION", "FIRST-ON-DISK",
		       "FIRST-IN-RING", "NEXT", "SPILLED", "REPLICATED", "BYTES-ON-DISK", "REPAIRED");
		for (p = 0; p < cfg->partitions; p++) {
			char first[32];
			if (pi[p].disk_segments)
				snprintf(first, sizeof first, "%" PRIu64, pi[p].disk_first_offset);
			else
				snprintf(first, sizeof first, "-");
			printf("%9" PRIu32 " %13s %13" PRIu64 " %13" PRIu64 " %13" PRIu64 " %13" PRIu64
			       " %13" PRIu64 " %8" PRIu64 "\n",
			       p, first, pi[p].first_offset, pi[p].next_offset, pi[p].spilled_offset,
			       pi[p].replicated_offset, pi[p].disk_bytes, pi[p].repaired);
		}
		if (!(cfg->flags & BUS_TOPIC_EPHEMERAL))
			printf("\nspiller          %s\n",
			       cfg->partitions && pi[0].spiller_pid ? "busd running" : "no daemon (start busd)");
	}
	free(pi);
	bus_close(b);
	return CLI_OK;
}

/* ------------------------------------------------------------- delete */

static int topic_delete(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ NULL, 0, NULL, 0 },
	};
	struct bus *b;
	const char *name;
	int c, r, rc;

	while ((c = cli_getopt(argc, argv, "", longopts)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage_delete, stdout);
			return CLI_OK;
		default:
			return CLI_USAGE;
		}
	}
	if ((rc = topic_name_arg(argc, argv, &name)) != CLI_OK)
		return rc;
	if ((rc = cli_open_bus(&b)) != CLI_OK)
		return rc;
	cli.topic = name;
	r = bus_topic_delete(b, name);
	rc = r < 0 ? cli_fail(b, r, "topic delete '%s'", name) : CLI_OK;
	bus_close(b);
	return rc;
}

/* ------------------------------------------------------------ dispatch */

int cmd_topic(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_LONG,
		{ NULL, 0, NULL, 0 },
	};
	static const struct {
		const char *name, *cmd;
		int (*fn)(int argc, char **argv);
	} subs[] = {
		{ "create", "topic create", topic_create },
		{ "list", "topic list", topic_list },
		{ "describe", "topic describe", topic_describe },
		{ "delete", "topic delete", topic_delete },
	};
	size_t i;
	int c;

	while ((c = cli_getopt(argc, argv, "+", longopts)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage_topic, stdout);
			return CLI_OK;
		default:
			return CLI_USAGE;
		}
	}
	if (optind >= argc)
		return cli_usage("missing subcommand: create, list, describe or delete");
	for (i = 0; i < sizeof subs / sizeof subs[0]; i++) {
		if (strcmp(argv[optind], subs[i].name) == 0) {
			argc -= optind;
			argv += optind;
			cli.cmd = subs[i].cmd;
			optind = 0;
			return subs[i].fn(argc, argv);
		}
	}
	return cli_usage("unknown subcommand '%s': create, list, describe or delete", argv[optind]);
}
