/* test_topic.c - the topic table: create, describe, list, delete, validation,
 * concurrent creators (same and different names, over tombstones), stale
 * handles after delete, a full table, creators that die mid-create. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "layout.h"
#include "segment.h"
#include "util.h"

TestSuite(topic, .init = tsuite_setup, .fini = tsuite_teardown, .timeout = 120);

/* ------------------------------------------------------------- helpers */

static void cfg_small(struct bus_topic_config *cfg, uint32_t parts)
{
	bus_topic_config_init(cfg);
	cfg->partitions = parts;
	cfg->ring_size = BUS_RING_MIN;
	cfg->flags = BUS_TOPIC_EPHEMERAL;
}

static void mk(const char *name, uint32_t parts)
{
	struct bus_topic_config cfg;
	int err;

	cfg_small(&cfg, parts);
	err = bus_topic_create(b, name, &cfg);
	cr_assert_eq(err, 0, "create %s: %s", name, bus_strerror(err));
}

static int count_cb(void *ctx, const struct bus_topic_info *ti)
{
	(void)ti;
	(*(int *)ctx)++;
	return 0;
}

static int count_topics(void)
{
	int n = 0;
	cr_assert_eq(bus_topic_list(b, count_cb, &n), 0);
	return n;
}

struct named {
	const char *name;
	int n;
};

static int named_cb(void *ctx, const struct bus_topic_info *ti)
{
	struct named *nm = ctx;
	if (strcmp(ti->name, nm->name) == 0)
		nm->n++;
	return 0;
}

/* How many listed topics are called @name. */
static int count_named(const char *name)
{
	struct named nm = { .name = name };
	cr_assert_eq(bus_topic_list(b, named_cb, &nm), 0);
	return nm.n;
}

/* Ring files of topic @name (bus.<bus>.<topic>.*, see layout.h) in the shm
 * dir; the names used with it contain no '.'. */
static int count_ring_files(const char *name)
{
	char prefix[256];
	struct dirent *de;
	DIR *d = opendir(env.shm_dir);
	int n = 0;

	cr_assert(d, "opendir %s: %s", env.shm_dir, strerror(errno));
	snprintf(prefix, sizeof(prefix), "bus.%s.%s.", env.name, name);
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

/* Every entry of the shm dir but "." and "..". */
static int count_shm_files(void)
{
	struct dirent *de;
	DIR *d = opendir(env.shm_dir);
	int n = 0;

	cr_assert(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Produce one record to @name and read it back with a fresh consumer.
 * Returns 0 or a code saying what failed (usable in children). */
static int use_topic(struct bus *bb, const char *name)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_record r = { .value = name, .value_len = (uint32_t)strlen(name) };
	struct bus_view v[4];
	int n, rc = 0;

	if (bus_producer_open(bb, name, NULL, &p))
		return 1;
	if (bus_consumer_open(bb, name, NULL, &c)) {
		bus_producer_close(p);
		return 2;
	}
	if (bus_produce(p, BUS_PARTITION_ANY, &r, NULL, NULL))
		rc = 3;
	else if ((n = bus_consumer_poll(c, v, 4, 1000000000ll)) != 1)
		rc = 4;
	else if (v[0].value_len != r.value_len || memcmp(v[0].value, name, r.value_len) != 0)
		rc = 5;
	bus_consumer_close(c);
	bus_producer_close(p);
	return rc;
}

static struct bus *child_bus(void)
{
	struct bus *cb = NULL;
	if (bus_open(&cb, &env.opts))
		_exit(90);
	return cb;
}

/* A pid that is certainly dead: a child that exited and was reaped. */
static int32_t dead_pid(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0)
		_exit(0);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	return (int32_t)pid;
}

/* The control region, mapped to watch and forge slot states. */
static struct bus_ctl_hdr *ctl_map(void)
{
	char path[512];
	struct bus_ctl_hdr *h;
	int fd;

	snprintf(path, sizeof(path), "%s/bus.%s.ctl", env.shm_dir, env.name);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	h = mmap(NULL, BUS_CTL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	cr_assert(h != MAP_FAILED);
	cr_assert_eq(h->magic, BUS_CTL_MAGIC);
	cr_assert_eq(h->topics_off, BUS_CTL_TOPICS_OFF);
	cr_assert_eq(h->topics_max, BUS_TOPICS_MAX);
	return h;
}

static struct bus_topic_slot *ctl_slot(struct bus_ctl_hdr *h, uint32_t i)
{
	return (struct bus_topic_slot *)((char *)h + BUS_CTL_TOPICS_OFF) + (i % BUS_TOPICS_MAX);
}

/* Index of the slot in @state holding @name, or -1. */
static int slot_of(struct bus_ctl_hdr *h, const char *name, uint32_t state)
{
	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++) {
		struct bus_topic_slot *ts = ctl_slot(h, i);
		uint64_t w = atomic_load(&ts->state);
		if (BUS_SLOT_STATE(w) == state && strncmp(ts->name, name, sizeof(ts->name)) == 0)
			return (int)i;
	}
	return -1;
}

/* The home slot of a topic name: FNV-1a 32 of the name modulo the table
 * size (topic.c's probe start; checked against the table where used). */
static uint32_t home_of(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h % BUS_TOPICS_MAX;
}

/* A name "<prefix><n>" whose home slot is @home. */
static void name_with_home(char *out, size_t len, const char *prefix, uint32_t home)
{
	for (unsigned n = 0; n < 1000000; n++) {
		snprintf(out, len, "%s%u", prefix, n);
		if (home_of(out) == home)
			return;
	}
	cr_assert_fail("no name with home %u", home);
}

/* The scheduler state letter of @pid from /proc (R, S, D, Z...). */
static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

/* Run bus_topic_create(@name, @cfg) in a child with a 10 s deadline, so that
 * a create that waits forever fails the test instead of hanging it.
 * Returns create's result; fails the test on timeout. */
struct bounded {
	const char *name;
	const struct bus_topic_config *cfg;
	int fd;
};

static int bounded_main(void *arg)
{
	struct bounded *bd = arg;
	struct bus *cb = child_bus();
	int err = bus_topic_create(cb, bd->name, bd->cfg);

	bus_close(cb);
	return write(bd->fd, &err, sizeof(err)) == sizeof(err) ? 0 : 92;
}

static int create_bounded(const char *name, const struct bus_topic_config *cfg)
{
	int fds[2], err = 12345;
	struct bounded bd = { .name = name, .cfg = cfg };
	pid_t pid;

	cr_assert_eq(pipe(fds), 0);
	bd.fd = fds[1];
	pid = tfork(bounded_main, &bd);
	cr_assert_eq(twait(pid, 10000), 0, "create of %s did not finish within 10 s", name);
	cr_assert_eq(read(fds[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	close(fds[0]);
	close(fds[1]);
	return err;
}

/* ---------------------------------------- create, describe, list, delete */

Test(topic, create_then_describe_round_trips_the_config)
{
	struct bus_topic_config cfg, def;
	struct bus_topic_info ti;
	struct bus_partition_info pi;

	bus_topic_config_init(&cfg);
	cfg.partitions = 3;
	cfg.ring_size = 2 * BUS_RING_MIN;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.retention_ms = 60000;
	cfg.retention_bytes = 1u << 20;
	cfg.overflow = BUS_OVERFLOW_OVERWRITE;
	cr_assert_eq(bus_topic_create(b, "orders", &cfg), 0);
	memset(&ti, 0xa5, sizeof(ti));
	cr_assert_eq(bus_topic_describe(b, "orders", &ti), 0);
	cr_assert_str_eq(ti.name, "orders");
	cr_assert_eq(ti.config.partitions, 3u);
	cr_assert_eq(ti.config.ring_size, 2 * BUS_RING_MIN);
	cr_assert_eq(ti.config.flags, BUS_TOPIC_EPHEMERAL);
	cr_assert_eq(ti.config.retention_ms, 60000u);
	cr_assert_eq(ti.config.retention_bytes, 1u << 20);
	cr_assert_eq(ti.config.overflow, (uint32_t)BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(ti.config.numa_node, -1);
	for (uint32_t p = 0; p < 3; p++) {
		cr_assert_eq(bus_partition_describe(b, "orders", p, &pi), 0);
		cr_assert_eq(pi.ring_size, 2 * BUS_RING_MIN);
		cr_assert_eq(pi.next_offset, 0u);
	}
	cr_assert_eq(bus_partition_describe(b, "orders", 3, &pi), -ENOENT);
	cr_assert_eq(count_ring_files("orders"), 3);

	/* The defaults round-trip too. */
	bus_topic_config_init(&def);
	def.ring_size = BUS_RING_MIN;
	cr_assert_eq(bus_topic_create(b, "defaults", &def), 0);
	cr_assert_eq(bus_topic_describe(b, "defaults", &ti), 0);
	cr_assert_eq(memcmp(&ti.config, &def, sizeof(def)), 0);

	cr_assert_eq(bus_topic_describe(b, "nosuch", &ti), -ENOENT);
	cr_assert_eq(use_topic(b, "orders"), 0);
}

Test(topic, name_of_63_bytes_is_accepted)
{
	char name[BUS_NAME_MAX + 1];
	struct bus_topic_info ti;

	memset(name, 'n', BUS_NAME_MAX);
	name[BUS_NAME_MAX] = 0;
	name[10] = '-';
	name[20] = '_';
	name[30] = '.';
	mk(name, 1);
	cr_assert_eq(bus_topic_describe(b, name, &ti), 0);
	cr_assert_str_eq(ti.name, name);
	cr_assert_eq(use_topic(b, name), 0);
}

struct seen {
	const char *names[16];
	int hits[16];
	int n;
	int calls;
	int stop_after;
};

static int seen_cb(void *ctx, const struct bus_topic_info *ti)
{
	struct seen *s = ctx;
	s->calls++;
	for (int i = 0; i < s->n; i++)
		if (strcmp(ti->name, s->names[i]) == 0)
			s->hits[i]++;
	if (s->stop_after && s->calls == s->stop_after)
		return 42;
	return 0;
}

Test(topic, list_calls_back_once_per_topic_and_stops_with_the_callbacks_value)
{
	struct seen s = { .names = { "alpha", "beta", "gamma", "delta", "epsilon", "zeta" },
			  .n = 6 };

	cr_assert_eq(bus_topic_list(b, seen_cb, &s), 0);
	cr_assert_eq(s.calls, 0, "an empty bus lists nothing");
	for (int i = 0; i < s.n; i++)
		mk(s.names[i], (uint32_t)i % 3 + 1);
	cr_assert_eq(bus_topic_list(b, seen_cb, &s), 0);
	cr_assert_eq(s.calls, 6);
	for (int i = 0; i < s.n; i++)
		cr_assert_eq(s.hits[i], 1, "%s listed %d times", s.names[i], s.hits[i]);

	memset(s.hits, 0, sizeof(s.hits));
	s.calls = 0;
	s.stop_after = 2;
	cr_assert_eq(bus_topic_list(b, seen_cb, &s), 42, "early stop returns the callback's value");
	cr_assert_eq(s.calls, 2, "no call after the callback asked to stop");
	cr_assert_eq(bus_topic_list(b, NULL, NULL), -EINVAL);
}

Test(topic, delete_removes_the_topic_and_its_ring_files)
{
	struct bus_topic_info ti;
	struct seen s = { .names = { "doomed", "kept" }, .n = 2 };

	mk("doomed", 4);
	mk("kept", 2);
	cr_assert_eq(count_ring_files("doomed"), 4);
	cr_assert_eq(bus_topic_delete(b, "doomed"), 0);
	cr_assert_eq(bus_topic_describe(b, "doomed", &ti), -ENOENT);
	cr_assert_eq(bus_topic_list(b, seen_cb, &s), 0);
	cr_assert_eq(s.hits[0], 0, "deleted topic still listed");
	cr_assert_eq(s.hits[1], 1);
	cr_assert_eq(s.calls, 1);
	cr_assert_eq(count_ring_files("doomed"), 0, "ring files left behind");
	cr_assert_eq(bus_topic_delete(b, "doomed"), -ENOENT);
	cr_assert_eq(bus_topic_delete(b, "never"), -ENOENT);
	/* The other topic is untouched. */
	cr_assert_eq(count_ring_files("kept"), 2);
	cr_assert_eq(use_topic(b, "kept"), 0);
	cr_assert_eq(bus_topic_delete(b, "kept"), 0);
	cr_assert_eq(count_topics(), 0);
	cr_assert_eq(count_shm_files(), 1, "only the control region remains");
}

/* ------------------------------------------------- idempotence, configs */

Test(topic, create_existing_with_same_config_succeeds)
{
	struct bus_topic_config cfg;
	struct bus_topic_info a, c;

	cfg_small(&cfg, 2);
	cfg.retention_ms = 1000;
	cr_assert_eq(bus_topic_create(b, "same", &cfg), 0);
	cr_assert_eq(bus_topic_describe(b, "same", &a), 0);
	cr_assert_eq(bus_topic_create(b, "same", &cfg), 0);
	cr_assert_eq(bus_topic_create(b, "same", &cfg), 0);
	cr_assert_eq(bus_topic_describe(b, "same", &c), 0);
	cr_assert_eq(a.generation, c.generation, "an idempotent create re-made the topic");
	cr_assert_eq(count_topics(), 1);
	cr_assert_eq(count_ring_files("same"), 2);
}

Test(topic, create_existing_with_another_config_returns_econfig)
{
	struct bus_topic_config base, cfg;
	struct bus_topic_info ti;

	memset(&ti, 0, sizeof(ti));
	cfg_small(&base, 2);
	cr_assert_eq(bus_topic_create(b, "cfg", &base), 0);
	cr_assert_eq(bus_topic_describe(b, "cfg", &ti), 0);

	cfg = base, cfg.partitions = 3;
	cr_assert_eq(bus_topic_create(b, "cfg", &cfg), -BUS_ECONFIG, "partitions");
	cfg = base, cfg.ring_size = 2 * BUS_RING_MIN;
	cr_assert_eq(bus_topic_create(b, "cfg", &cfg), -BUS_ECONFIG, "ring size");
	cfg = base, cfg.overflow = BUS_OVERFLOW_OVERWRITE;
	cr_assert_eq(bus_topic_create(b, "cfg", &cfg), -BUS_ECONFIG, "overflow");
	cfg = base, cfg.flags = 0;
	cr_assert_eq(bus_topic_create(b, "cfg", &cfg), -BUS_ECONFIG, "ephemeral flag");
	cfg = base, cfg.retention_ms = 5000;
	cr_assert_eq(bus_topic_create(b, "cfg", &cfg), -BUS_ECONFIG, "retention_ms");
	cfg = base, cfg.retention_bytes = 1u << 20;
	cr_assert_eq(bus_topic_create(b, "cfg", &cfg), -BUS_ECONFIG, "retention_bytes");
	cfg = base, cfg.numa_node = 0;
	cr_assert_eq(bus_topic_create(b, "cfg", &cfg), -BUS_ECONFIG, "numa node");

	/* Nothing changed. */
	struct bus_topic_info after;
	memset(&after, 0, sizeof(after));
	cr_assert_eq(bus_topic_describe(b, "cfg", &after), 0);
	cr_assert_eq(memcmp(&after, &ti, sizeof(ti)), 0);
	cr_assert_eq(count_topics(), 1);
	cr_assert_eq(count_ring_files("cfg"), 2);
}

Test(topic, invalid_names_return_einval)
{
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	char longname[BUS_NAME_MAX + 2];
	const char *bad[] = { "", longname, "a/b", "/abs", "a b", " lead", ".hidden", ".",
			      "..", "tab\there", "semi;colon", "star*" };

	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	cr_assert_eq(strlen(longname), 64u);
	cfg_small(&cfg, 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(bus_topic_create(b, bad[i], &cfg), -EINVAL, "create '%s'", bad[i]);
		cr_assert_eq(bus_topic_describe(b, bad[i], &ti), -EINVAL, "describe '%s'", bad[i]);
		cr_assert_eq(bus_topic_delete(b, bad[i]), -EINVAL, "delete '%s'", bad[i]);
	}
	cr_assert_eq(bus_topic_create(b, NULL, &cfg), -EINVAL);
	cr_assert_eq(bus_topic_create(b, "ok", NULL), -EINVAL);
	cr_assert_eq(bus_topic_create(NULL, "ok", &cfg), -EINVAL);
	cr_assert_eq(count_topics(), 0);
	cr_assert_eq(count_shm_files(), 1, "a refused create left files");
}

Test(topic, invalid_configs_return_einval)
{
	struct bus_topic_config base, cfg;

	cfg_small(&base, 1);
	cfg = base, cfg.partitions = 0;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "0 partitions");
	cfg = base, cfg.partitions = BUS_PARTITIONS_MAX + 1;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "257 partitions");
	cfg = base, cfg.ring_size = 3 * BUS_RING_MIN;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "ring not a power of two");
	cfg = base, cfg.ring_size = BUS_RING_MIN + 8;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "ring not a power of two");
	cfg = base, cfg.ring_size = BUS_RING_MIN / 2;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "ring below BUS_RING_MIN");
	cfg = base, cfg.ring_size = 0;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "ring of 0 bytes");
	cfg = base, cfg.ring_size = BUS_RING_MAX * 2;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "ring above BUS_RING_MAX");
	cfg = base, cfg.flags = 0x4;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "unknown flag");
	cfg = base, cfg.flags = BUS_TOPIC_EPHEMERAL | 0x80000000u;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "unknown flag");
	cfg = base, cfg.overflow = 7;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "overflow 7");
	cfg = base, cfg.numa_node = -2;
	cr_assert_eq(bus_topic_create(b, "t", &cfg), -EINVAL, "numa node -2");
	cr_assert_eq(count_topics(), 0);
	cr_assert_eq(count_shm_files(), 1, "a refused create left files");
	/* The bounds themselves are fine. */
	cfg = base, cfg.partitions = BUS_PARTITIONS_MAX;
	cr_assert_eq(bus_topic_create(b, "t256", &cfg), 0);
	cr_assert_eq(count_ring_files("t256"), BUS_PARTITIONS_MAX);
}

/* ------------------------------------------------- concurrent creators */

/* A child that runs @rounds rounds; in round i it waits for a byte on its
 * own go pipe, creates topic "<prefix>-<i>" (or, with @per_round > 1, the
 * topics "<prefix>-<id>-<i*per_round+k>"), and reports {i, result}. */
struct racer {
	int id;
	int go_fd;
	int res_fd;
	int rounds;
	int per_round;
	const char *prefix;
	uint32_t parts;
};

static int racer_main(void *arg)
{
	struct racer *r = arg;
	struct bus *cb = child_bus();
	struct bus_topic_config cfg;
	char name[64];

	cfg_small(&cfg, r->parts);
	for (int i = 0; i < r->rounds; i++) {
		char c;
		int res[2] = { i, 0 };

		if (read(r->go_fd, &c, 1) != 1)
			return 91;
		for (int k = 0; k < r->per_round && res[1] == 0; k++) {
			if (r->per_round == 1)
				snprintf(name, sizeof(name), "%s-%d", r->prefix, i);
			else
				snprintf(name, sizeof(name), "%s-%d-%d", r->prefix, r->id,
					 i * r->per_round + k);
			res[1] = bus_topic_create(cb, name, &cfg);
		}
		if (write(r->res_fd, res, sizeof(res)) != (ssize_t)sizeof(res))
			return 92;
	}
	bus_close(cb);
	return 0;
}

#define MAX_RACERS 4

struct race {
	int n;
	pid_t pids[MAX_RACERS];
	int go[MAX_RACERS][2];
	int res[2];
	struct racer r[MAX_RACERS];
};

static void race_start(struct race *rc, int n, int rounds, int per_round, const char *prefix,
		       uint32_t parts)
{
	memset(rc, 0, sizeof(*rc));
	rc->n = n;
	cr_assert_eq(pipe(rc->res), 0);
	for (int i = 0; i < n; i++) {
		cr_assert_eq(pipe(rc->go[i]), 0);
		rc->r[i] = (struct racer){ .id = i, .go_fd = rc->go[i][0], .res_fd = rc->res[1],
					   .rounds = rounds, .per_round = per_round,
					   .prefix = prefix, .parts = parts };
	}
	for (int i = 0; i < n; i++)
		rc->pids[i] = tfork(racer_main, &rc->r[i]);
}

/* Release every racer into round @round at once; check they all returned 0. */
static void race_round(struct race *rc, int round)
{
	char c = 1;

	for (int i = 0; i < rc->n; i++)
		cr_assert_eq(write(rc->go[i][1], &c, 1), 1);
	for (int i = 0; i < rc->n; i++) {
		int res[2];
		cr_assert_eq(read(rc->res[0], res, sizeof(res)), (ssize_t)sizeof(res));
		cr_assert_eq(res[0], round);
		cr_assert_eq(res[1], 0, "round %d: a racer's create returned %s", round,
			     bus_strerror(res[1]));
	}
}

static void race_end(struct race *rc)
{
	for (int i = 0; i < rc->n; i++)
		cr_assert_eq(twait(rc->pids[i], 20000), 0, "racer %d exited badly", i);
	for (int i = 0; i < rc->n; i++) {
		close(rc->go[i][0]);
		close(rc->go[i][1]);
	}
	close(rc->res[0]);
	close(rc->res[1]);
}

static void same_name_race(int nproc, int rounds)
{
	struct race rc;
	char name[64];

	race_start(&rc, nproc, rounds, 1, "race", 2);
	for (int i = 0; i < rounds; i++) {
		race_round(&rc, i);
		snprintf(name, sizeof(name), "race-%d", i);
		cr_assert_eq(count_named(name), 1, "round %d: %s listed %d times", i, name,
			     count_named(name));
		cr_assert_eq(count_topics(), i + 1);
		cr_assert_eq(count_ring_files(name), 2, "round %d: not one set of ring files", i);
	}
	race_end(&rc);
	cr_assert_eq(use_topic(b, "race-0"), 0);
	cr_assert_eq(use_topic(b, name), 0);
}

Test(topic, two_processes_creating_the_same_topic_both_succeed_and_make_one)
{
	same_name_race(2, 50);
}

Test(topic, four_processes_creating_the_same_topic_all_succeed_and_make_one)
{
	same_name_race(4, 50);
}

Test(topic, two_processes_creating_fifty_topics_each_make_all_hundred)
{
	struct race rc;
	struct bus_topic_info ti;
	char name[64];

	race_start(&rc, 2, 1, 50, "many", 1);
	race_round(&rc, 0);
	race_end(&rc);
	cr_assert_eq(count_topics(), 100);
	for (int id = 0; id < 2; id++)
		for (int i = 0; i < 50; i++) {
			snprintf(name, sizeof(name), "many-%d-%d", id, i);
			cr_assert_eq(bus_topic_describe(b, name, &ti), 0, "%s missing", name);
			cr_assert_eq(ti.config.partitions, 1u);
			cr_assert_eq(count_ring_files(name), 1);
			cr_assert_eq(use_topic(b, name), 0, "%s not usable", name);
		}
}

Test(topic, processes_racing_over_tombstones_make_exactly_one_topic)
{
	struct race rc;
	char name[64];
	const int rounds = 50;

	/* 200 topics, every other one deleted: 100 tombstones across the
	 * table, in the probe sequence of most names. */
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "fill-%d", i);
		mk(name, 1);
	}
	for (int i = 0; i < 200; i += 2) {
		snprintf(name, sizeof(name), "fill-%d", i);
		cr_assert_eq(bus_topic_delete(b, name), 0);
	}
	cr_assert_eq(count_topics(), 100);

	race_start(&rc, 2, rounds, 1, "tomb", 2);
	for (int i = 0; i < rounds; i++) {
		race_round(&rc, i);
		snprintf(name, sizeof(name), "tomb-%d", i);
		cr_assert_eq(count_named(name), 1, "round %d: %s listed %d times", i, name,
			     count_named(name));
		cr_assert_eq(count_ring_files(name), 2, "round %d: not one set of ring files", i);
		cr_assert_eq(use_topic(b, name), 0, "round %d: %s not usable", i, name);
		/* Leave a tombstone behind for the next rounds. */
		cr_assert_eq(bus_topic_delete(b, name), 0);
		cr_assert_eq(count_ring_files(name), 0);
	}
	race_end(&rc);
	cr_assert_eq(count_topics(), 100);
}

/* --------------------------------------------------- creators that block */

/* A child whose bus logs through block_log: the first "topic '...'" event
 * (sent by bus_topic_create once partition 0's ring exists, while its slot
 * is CREATING) is reported on note_fd, then the child blocks on hold_fd
 * until it is killed or hold_fd's writer is closed. */
struct blocker {
	const char *name;
	uint32_t parts;
	uint64_t ring;
	int note_fd;
	int hold_fd;
	int res_fd;
};

static void block_log(void *ctx, enum bus_log_level lvl, const char *msg)
{
	struct blocker *bl = ctx;
	char c = 1;

	(void)lvl;
	if (strncmp(msg, "topic '", 7) != 0)
		return;
	if (write(bl->note_fd, &c, 1) != 1)
		_exit(93);
	if (read(bl->hold_fd, &c, 1) < 0)
		_exit(94);
}

static int blocker_main(void *arg)
{
	struct blocker *bl = arg;
	struct bus_opts o = env.opts;
	struct bus_topic_config cfg;
	struct bus *cb = NULL;
	int err;

	o.log = block_log;
	o.log_ctx = bl;
	if (bus_open(&cb, &o))
		return 90;
	cfg_small(&cfg, bl->parts);
	cfg.ring_size = bl->ring;
	err = bus_topic_create(cb, bl->name, &cfg);
	if (bl->res_fd >= 0 && write(bl->res_fd, &err, sizeof(err)) != (ssize_t)sizeof(err))
		return 92;
	bus_close(cb);
	return 0;
}

/* @unreaped: the killed creator stays a zombie (its parent, here the test,
 * has not waited for it) until the name is created again. */
static void killed_creator_case(bool unreaped)
{
	struct blocker bl = { .name = "victim", .parts = 64, .ring = 1u << 20, .res_fd = -1 };
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	int note[2], hold[2], s;
	uint64_t w;
	pid_t pid;
	char c;

	cr_assert_eq(pipe(note), 0);
	cr_assert_eq(pipe(hold), 0);
	bl.note_fd = note[1];
	bl.hold_fd = hold[0];
	pid = tfork(blocker_main, &bl);
	cr_assert_eq(read(note[0], &c, 1), 1, "creator never reached its first ring");

	/* The creator sits in the middle of bus_topic_create. */
	s = slot_of(h, "victim", BUS_SLOT_CREATING);
	cr_assert(s >= 0, "no CREATING slot for the topic");
	w = atomic_load(&ctl_slot(h, (uint32_t)s)->state);
	cr_assert_eq(BUS_SLOT_PID(w), (int32_t)pid);
	cr_assert_geq(count_ring_files("victim"), 1);
	cr_assert_lt(count_ring_files("victim"), 64);
	cr_assert_eq(bus_topic_describe(b, "victim", &ti), -ENOENT, "visible before READY");
	cr_assert_eq(count_topics(), 0);

	cr_assert_eq(kill(pid, SIGKILL), 0);
	if (unreaped)
		cr_assert_eq(tzombie(pid, 10000), 0);
	else
		cr_assert_eq(twait(pid, 10000), -1);

	cfg_small(&cfg, 4);
	cr_assert_eq(create_bounded("victim", &cfg), 0);
	if (unreaped)
		cr_assert_eq(twait(pid, 10000), -1);
	cr_assert_eq(bus_topic_describe(b, "victim", &ti), 0);
	cr_assert_eq(ti.config.partitions, 4u);
	cr_assert_neq(ti.generation, BUS_SLOT_GEN(w), "the dead attempt's generation was reused");
	cr_assert_eq(count_ring_files("victim"), 4, "rings of the dead attempt remain");
	cr_assert_eq(count_shm_files(), 1 + 4);
	cr_assert_eq(use_topic(b, "victim"), 0);
	munmap(h, BUS_CTL_SIZE);
	close(note[0]);
	close(note[1]);
	close(hold[0]);
	close(hold[1]);
}

Test(topic, creator_killed_mid_create_is_reaped_and_the_name_created_again)
{
	killed_creator_case(false);
}

/* kill(pid, 0) finds a zombie: its CREATING slot was waited on, without a
 * limit, for as long as its parent did not reap it. */
Test(topic, creator_killed_mid_create_and_left_unreaped_is_reaped_all_the_same)
{
	killed_creator_case(true);
}

/* A creator SIGKILLed at a varying point: while claiming, after k of its
 * rings exist, or after it finished.  Whatever it left, the next create of
 * the name succeeds in bounded time and leaves exactly one set of rings. */
static char victim_name[] = "victim";

static int plain_creator_main(void *arg)
{
	struct bus *cb = child_bus();
	struct bus_topic_config cfg;

	cfg_small(&cfg, 16);
	cfg.ring_size = 1u << 20;
	return bus_topic_create(cb, (const char *)arg, &cfg) == 0 ? 0 : 1;
}

Test(topic, creator_killed_at_any_point_leaves_nothing_that_blocks_a_new_create)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg, big;
	struct bus_topic_info ti;

	cfg_small(&cfg, 3);
	cfg_small(&big, 16);
	big.ring_size = 1u << 20;
	for (int it = 0; it < 20; it++) {
		int want_files = it % 10, st;
		int64_t deadline = tnow_ms() + 10000;
		bool done = false;
		pid_t pid = tfork(plain_creator_main, victim_name);

		/* Wait until the creator holds a slot (and, for want_files > 0,
		 * has made that many rings), finished, or exited. */
		while (!done) {
			for (uint32_t i = 0; i < BUS_TOPICS_MAX && !done; i++) {
				uint64_t w = atomic_load(&ctl_slot(h, i)->state);
				if ((BUS_SLOT_PID(w) == (int32_t)pid && want_files == 0) ||
				    (BUS_SLOT_STATE(w) == BUS_SLOT_READY &&
				     strcmp(ctl_slot(h, i)->name, "victim") == 0))
					done = true;
			}
			if (want_files && count_ring_files("victim") >= want_files)
				done = true;
			if (waitpid(pid, &st, WNOHANG) == pid) {
				pid = -1;
				done = true;
			}
			cr_assert(tnow_ms() < deadline, "iteration %d: creator made no progress", it);
		}
		if (pid > 0) {
			kill(pid, SIGKILL);
			twait(pid, 10000);
		}

		/* Either the dead attempt is reaped and the topic made anew
		 * (with this config), or the creator had finished (its config). */
		int err = create_bounded("victim", &cfg);
		if (err == -BUS_ECONFIG)
			err = create_bounded("victim", &big);
		cr_assert_eq(err, 0, "iteration %d: create after the kill: %s", it,
			     bus_strerror(err));
		cr_assert_eq(bus_topic_describe(b, "victim", &ti), 0);
		cr_assert_eq(count_named("victim"), 1);
		cr_assert_eq(count_ring_files("victim"), (int)ti.config.partitions,
			     "iteration %d: rings of the dead attempt remain", it);
		cr_assert_eq(count_shm_files(), 1 + (int)ti.config.partitions);
		cr_assert_eq(use_topic(b, "victim"), 0);
		cr_assert_eq(bus_topic_delete(b, "victim"), 0);
		cr_assert_eq(count_shm_files(), 1, "iteration %d: files left after delete", it);
	}
	munmap(h, BUS_CTL_SIZE);
}

/* Forge a transient state with a dead owner straight into the table. */
static void touch_ring_file(const char *name, uint32_t gen, uint32_t part)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/bus.%s.%s.%u.%u", env.shm_dir, env.name, name, gen,
		 part);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0, "create %s: %s", path, strerror(errno));
	cr_assert_eq(ftruncate(fd, 4096), 0);
	close(fd);
}

Test(topic, slot_left_creating_by_a_dead_process_is_reaped_by_create)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	struct bus_topic_slot *ts;
	uint64_t w;
	uint32_t gen;
	int s;

	/* A slot that held the topic (so name and config are written), then
	 * a re-create whose creator died with two of its rings made. */
	mk("ghost", 2);
	s = slot_of(h, "ghost", BUS_SLOT_READY);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	cr_assert_eq(bus_topic_delete(b, "ghost"), 0);
	w = atomic_load(&ts->state);
	cr_assert_eq(BUS_SLOT_STATE(w), BUS_SLOT_DELETED);
	gen = (BUS_SLOT_GEN(w) + 1) & 0xffffffu;
	cr_assert(atomic_compare_exchange_strong(
		&ts->state, &w, BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, dead_pid())));
	touch_ring_file("ghost", gen, 0);
	touch_ring_file("ghost", gen, 1);
	cr_assert_eq(count_ring_files("ghost"), 2);
	cr_assert_eq(count_topics(), 0);

	cfg_small(&cfg, 2);
	cr_assert_eq(create_bounded("ghost", &cfg), 0);
	cr_assert_eq(bus_topic_describe(b, "ghost", &ti), 0);
	cr_assert_neq(ti.generation, gen);
	cr_assert_eq(count_named("ghost"), 1);
	cr_assert_eq(count_ring_files("ghost"), 2, "leftover rings of the dead creator");
	cr_assert_eq(count_shm_files(), 1 + 2);
	cr_assert_eq(use_topic(b, "ghost"), 0);
	munmap(h, BUS_CTL_SIZE);
}

Test(topic, slot_left_deleting_by_a_dead_process_is_reaped_on_lookup)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_info ti;
	struct bus_topic_slot *ts;
	uint64_t w;
	int s;

	mk("half", 3);
	s = slot_of(h, "half", BUS_SLOT_READY);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	w = atomic_load(&ts->state);
	cr_assert(atomic_compare_exchange_strong(
		&ts->state, &w, BUS_SLOT_WORD(BUS_SLOT_DELETING, BUS_SLOT_GEN(w), dead_pid())));
	cr_assert_eq(count_topics(), 0);
	cr_assert_eq(bus_topic_describe(b, "half", &ti), -ENOENT);
	cr_assert_eq(BUS_SLOT_STATE(atomic_load(&ts->state)), BUS_SLOT_DELETED,
		     "the dead deleter's slot was not reaped");
	cr_assert_eq(count_ring_files("half"), 0, "the dead deleter's rings remain");
	mk("half", 3);
	cr_assert_eq(use_topic(b, "half"), 0);
	munmap(h, BUS_CTL_SIZE);
}

/*
 * Two creators A and B of one name T that pick different slots: A a
 * tombstone further down the probe than B's.  Built step by step, with
 * slots h = home(T), h+1, h+2 (all generation 1 when claimed again):
 *   X in h, Y in h+1; P creates T in h+2 and blocks mid-create.  Y is
 *   deleted and its slot forged CREATING by a dead pid.
 *   A creates T: passes h (X, READY), reaps h+1 (its candidate: the first
 *   claimable slot), then waits for P at h+2.
 *   X is deleted and h+1 forged again.  B creates T: h is now its
 *   candidate; it reaps h+1 and waits for P.
 * (Each reap of h+1 shows the parent that A or B is past h; the sleep that
 * follows it can only be the wait for P.)
 * When P dies both go on to claim: A h+1, B h.  Whatever the interleaving,
 * the table must end with one topic T, both creates returning 0.
 */
/* What a child process of these tests works on, and where it writes its
 * result (an int). */
struct child {
	const char *name;
	int res_fd;
};

static int creator_main(void *arg)
{
	struct child *cr = arg;
	struct bus *cb = child_bus();
	struct bus_topic_config cfg;
	int err;

	cfg_small(&cfg, 2);
	err = bus_topic_create(cb, cr->name, &cfg);
	if (write(cr->res_fd, &err, sizeof(err)) != (ssize_t)sizeof(err))
		return 92;
	bus_close(cb);
	return 0;
}

static void forge_dead_creating(struct bus_ctl_hdr *h, uint32_t i, int32_t dead)
{
	struct bus_topic_slot *ts = ctl_slot(h, i);
	uint64_t w = atomic_load(&ts->state);

	cr_assert_eq(BUS_SLOT_STATE(w), BUS_SLOT_DELETED);
	cr_assert(atomic_compare_exchange_strong(
		&ts->state, &w, BUS_SLOT_WORD(BUS_SLOT_CREATING, BUS_SLOT_GEN(w), dead)));
}

/* Wait (deadline 10 s) until slot @i is a tombstone again. */
static void slot_wait_deleted(struct bus_ctl_hdr *h, uint32_t i)
{
	int64_t deadline = tnow_ms() + 10000;

	while (BUS_SLOT_STATE(atomic_load(&ctl_slot(h, i)->state)) != BUS_SLOT_DELETED) {
		cr_assert(tnow_ms() < deadline, "slot %u was not reaped", i % BUS_TOPICS_MAX);
		sched_yield();
	}
}

static void wait_proc_state(pid_t pid, char state)
{
	int64_t deadline = tnow_ms() + 10000;

	while (proc_state(pid) != state) {
		cr_assert(tnow_ms() < deadline, "process %d never reached state %c", (int)pid,
			  state);
		sched_yield();
	}
}

struct clash {
	struct bus_ctl_hdr *h;
	const char *name;
	struct blocker bl;
	struct child ca, cb;
	int note[2], hold[2], res[2];
	pid_t p, a, b;
};

static void clash_setup(struct clash *k)
{
	uint32_t home = home_of("clash");
	int32_t dead = dead_pid();
	char x[64], y[64];
	char c;

	memset(k, 0, sizeof(*k));
	k->h = ctl_map();
	k->name = "clash";
	name_with_home(x, sizeof(x), "x", home);
	name_with_home(y, sizeof(y), "y", home);
	mk(x, 1);
	mk(y, 1);
	cr_assert_eq(slot_of(k->h, x, BUS_SLOT_READY), (int)home, "hash differs from topic.c's");
	cr_assert_eq(slot_of(k->h, y, BUS_SLOT_READY), (int)((home + 1) % BUS_TOPICS_MAX));

	/* P blocks with T CREATING in h+2. */
	cr_assert_eq(pipe(k->note), 0);
	cr_assert_eq(pipe(k->hold), 0);
	cr_assert_eq(pipe(k->res), 0);
	k->bl = (struct blocker){ .name = k->name, .parts = 2, .ring = BUS_RING_MIN,
				  .note_fd = k->note[1], .hold_fd = k->hold[0], .res_fd = -1 };
	k->p = tfork(blocker_main, &k->bl);
	cr_assert_eq(read(k->note[0], &c, 1), 1);
	cr_assert_eq(slot_of(k->h, k->name, BUS_SLOT_CREATING), (int)((home + 2) % BUS_TOPICS_MAX));
	cr_assert_eq(bus_topic_delete(b, y), 0);
	forge_dead_creating(k->h, home + 1, dead);

	/* A passes h while X holds it, takes h+1, sleeps waiting for P. */
	k->ca = (struct child){ .name = k->name, .res_fd = k->res[1] };
	k->a = tfork(creator_main, &k->ca);
	slot_wait_deleted(k->h, home + 1);
	wait_proc_state(k->a, 'S');

	/* h becomes claimable; B takes it, reaps h+1, goes on to wait for P. */
	cr_assert_eq(bus_topic_delete(b, x), 0);
	forge_dead_creating(k->h, home + 1, dead);
	k->cb = (struct child){ .name = k->name, .res_fd = k->res[1] };
	k->b = tfork(creator_main, &k->cb);
	slot_wait_deleted(k->h, home + 1);
	wait_proc_state(k->b, 'S');
}

static int clash_result(struct clash *k)
{
	int err = 12345;
	cr_assert_eq(read(k->res[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	return err;
}

/* A process that holds a pid, blocked until a byte comes down its pipe. */
static int hold_main(void *arg)
{
	char c;

	return read(*(int *)arg, &c, 1) < 0;
}

/* A creator killed mid-create whose pid went to another process before
 * anyone looked: the slot says CREATING by a live pid.  Creates of the
 * name waited for as long as that unrelated process lived (for ever, for a
 * daemon).  The slot records its creator's start time: a live pid that
 * started at another time is not the creator, and the slot is reaped.
 * With the right start time, the create waits, and goes on when the
 * creator dies. */
Test(topic, a_creating_slot_whose_pid_went_to_another_process_is_reaped)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg;
	struct bus_topic_slot *ts;
	struct child cr;
	int hold[2], res[2], err = 12345, s;
	uint32_t start, gen;
	uint64_t w, forged;
	pid_t other, creator;

	mk("reborn", 2);
	s = slot_of(h, "reborn", BUS_SLOT_READY);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	cr_assert_eq(pipe(hold), 0);
	other = tfork(hold_main, &hold[0]);
	start = bus_pid_start(other);
	cr_assert_neq(start, 0, "no start time for pid %d (is /proc mounted?)", (int)other);
	cfg_small(&cfg, 2);

	/* Forged: CREATING by @other's pid, started at another time. */
	cr_assert_eq(bus_topic_delete(b, "reborn"), 0);
	w = atomic_load(&ts->state);
	gen = (BUS_SLOT_GEN(w) + 1) & 0xffffffu;
	atomic_store(&ts->owner_start, start + 1000 ? start + 1000 : 1);
	cr_assert(atomic_compare_exchange_strong(
		&ts->state, &w, BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, other)));
	cr_assert_eq(create_bounded("reborn", &cfg), 0);
	cr_assert_eq(count_named("reborn"), 1);
	cr_assert_eq(use_topic(b, "reborn"), 0);

	/* Forged again, with @other's own start time: a live creator. */
	cr_assert_eq(bus_topic_delete(b, "reborn"), 0);
	s = slot_of(h, "reborn", BUS_SLOT_DELETED);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	w = atomic_load(&ts->state);
	gen = (BUS_SLOT_GEN(w) + 1) & 0xffffffu;
	forged = BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, other);
	atomic_store(&ts->owner_start, start);
	cr_assert(atomic_compare_exchange_strong(&ts->state, &w, forged));
	cr_assert_eq(pipe(res), 0);
	cr = (struct child){ .name = "reborn", .res_fd = res[1] };
	creator = tfork(creator_main, &cr);
	wait_proc_state(creator, 'S');
	for (int64_t until = tnow_ms() + 200; tnow_ms() < until;) {
		cr_assert_eq(atomic_load(&ts->state), forged, "a live creator's slot was taken");
		sched_yield();
	}
	cr_assert_eq(write(hold[1], "x", 1), 1); /* @other exits: the creator is gone */
	cr_assert_eq(twait(other, 10000), 0);
	cr_assert_eq(twait(creator, 10000), 0, "the create did not end once its rival died");
	cr_assert_eq(read(res[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	cr_assert_eq(err, 0, "create: %s", bus_strerror(err));
	cr_assert_eq(count_named("reborn"), 1);
	close(hold[0]);
	close(hold[1]);
	close(res[0]);
	close(res[1]);
	munmap(h, BUS_CTL_SIZE);
}

static void clash_check_and_fini(struct clash *k)
{
	struct bus_topic_info ti;

	cr_assert_eq(count_named(k->name), 1, "%d topics %s", count_named(k->name), k->name);
	cr_assert_eq(bus_topic_describe(b, k->name, &ti), 0);
	cr_assert_eq(count_ring_files(k->name), 2);
	cr_assert_eq(use_topic(b, k->name), 0, "the topic's rings are gone");
	cr_assert_eq(count_shm_files(), 1 + 2);
	munmap(k->h, BUS_CTL_SIZE);
	close(k->note[0]);
	close(k->note[1]);
	close(k->hold[0]);
	close(k->hold[1]);
	close(k->res[0]);
	close(k->res[1]);
}

Test(topic, creators_released_together_onto_different_tombstones_make_one_topic)
{
	struct clash k;
	int e1, e2;

	clash_setup(&k);
	/* P dies mid-create: A and B go on together. */
	cr_assert_eq(kill(k.p, SIGKILL), 0);
	cr_assert_eq(twait(k.p, 10000), -1);
	cr_assert_eq(twait(k.a, 10000), 0);
	cr_assert_eq(twait(k.b, 10000), 0);
	e1 = clash_result(&k);
	e2 = clash_result(&k);
	cr_assert_eq(e1, 0, "a creator failed: %s", bus_strerror(e1));
	cr_assert_eq(e2, 0, "a creator failed: %s", bus_strerror(e2));
	clash_check_and_fini(&k);
}

Test(topic, creator_resuming_after_another_made_the_same_topic_adopts_it)
{
	struct clash k;
	int ea, eb;

	clash_setup(&k);
	/* B is held (SIGSTOP) with its candidate slot chosen; A finishes. */
	cr_assert_eq(kill(k.b, SIGSTOP), 0);
	wait_proc_state(k.b, 'T');
	cr_assert_eq(kill(k.p, SIGKILL), 0);
	cr_assert_eq(twait(k.p, 10000), -1);
	cr_assert_eq(twait(k.a, 10000), 0);
	ea = clash_result(&k);
	cr_assert_eq(ea, 0, "A failed: %s", bus_strerror(ea));
	cr_assert_eq(count_named(k.name), 1);
	/* B resumes: it must find A's topic, not make a second one. */
	cr_assert_eq(kill(k.b, SIGCONT), 0);
	cr_assert_eq(twait(k.b, 10000), 0);
	eb = clash_result(&k);
	cr_assert_eq(eb, 0, "B failed: %s", bus_strerror(eb));
	clash_check_and_fini(&k);
}

/* ------------------------------------------------------ stale handles */

/* A slot's generation counts in 16 bits (its low 8 name the slot): after
 * 65,536 re-creations of a topic its state word came round to the value
 * an old handle held, and that handle, unused all along, produced into the
 * unlinked ring of the first topic: 0 returned, the record lost.  The
 * creation time tells them apart.  (Real re-creations, not a forged
 * word: about 65,536 creates and deletes.) */
Test(topic, a_handle_stays_stale_when_its_slot_generation_comes_round)
{
	struct bus_record r = { .value = "lost?", .value_len = 5 };
	struct bus_topic_info t0, ti;
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[8];
	uint32_t n = 0;

	mk("ouroboros", 1);
	cr_assert_eq(bus_topic_describe(b, "ouroboros", &t0), 0);
	cr_assert_eq(bus_producer_open(b, "ouroboros", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "ouroboros", NULL, &c), 0);
	do {
		cr_assert_eq(bus_topic_delete(b, "ouroboros"), 0);
		mk("ouroboros", 1);
		cr_assert_eq(bus_topic_describe(b, "ouroboros", &ti), 0);
		cr_assert_lt(++n, 70000u, "the generation never came round");
	} while (ti.generation != t0.generation);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), -BUS_ESTALE,
		     "a handle of the first topic wrote after %u re-creations", n);
	cr_assert_eq(bus_consumer_poll(c, v, 8, 0), -BUS_ESTALE);
	bus_producer_close(p);
	bus_consumer_close(c);
}

Test(topic, delete_makes_open_handles_stale_and_recreate_starts_afresh)
{
	struct bus_producer *p, *p2;
	struct bus_consumer *c, *c2;
	struct bus_record r = { .value = "old", .value_len = 3 };
	struct bus_record r2 = { .value = "new", .value_len = 3 };
	struct bus_view v[8];
	struct bus_claim cl;
	struct bus_topic_info t1, t2;
	uint64_t off;

	mk("phoenix", 1);
	cr_assert_eq(bus_topic_describe(b, "phoenix", &t1), 0);
	cr_assert_eq(bus_producer_open(b, "phoenix", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "phoenix", NULL, &c), 0);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 8, 0), 5);

	cr_assert_eq(bus_topic_delete(b, "phoenix"), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), -BUS_ESTALE);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 8, &cl), -BUS_ESTALE);
	cr_assert_eq(bus_consumer_poll(c, v, 8, 0), -BUS_ESTALE);
	cr_assert_eq(bus_producer_open(b, "phoenix", NULL, &p2), -ENOENT);
	cr_assert_eq(bus_consumer_open(b, "phoenix", NULL, &c2), -ENOENT);
	cr_assert_eq(count_ring_files("phoenix"), 0);

	mk("phoenix", 1);
	cr_assert_eq(bus_topic_describe(b, "phoenix", &t2), 0);
	cr_assert_gt(t2.generation, t1.generation, "generation did not grow");
	/* The old handles stay stale: they never reach the new topic. */
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), -BUS_ESTALE);
	cr_assert_eq(bus_consumer_poll(c, v, 8, 0), -BUS_ESTALE);

	cr_assert_eq(bus_producer_open(b, "phoenix", NULL, &p2), 0);
	cr_assert_eq(bus_consumer_open(b, "phoenix", NULL, &c2), 0);
	cr_assert_eq(bus_consumer_poll(c2, v, 8, 0), 0, "the new topic shows old records");
	cr_assert_eq(bus_produce(p2, 0, &r2, NULL, &off), 0);
	cr_assert_eq(off, 0u, "offsets of the new topic start at 0");
	cr_assert_eq(bus_consumer_poll(c2, v, 8, 1000000000ll), 1);
	cr_assert_eq(v[0].offset, 0u);
	cr_assert_eq(v[0].value_len, 3u);
	cr_assert(memcmp(v[0].value, "new", 3) == 0);
	cr_assert_eq(bus_consumer_poll(c2, v, 8, 0), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), -BUS_ESTALE);

	bus_consumer_close(c2);
	bus_producer_close(p2);
	bus_consumer_close(c);
	bus_producer_close(p);
}

/* A consumer asleep in a poll on a topic that is deleted is told at once
 * (the delete wakes the topic's sleepers), not when its wait next wakes by
 * itself (once a second, or at its deadline). */
static int sleeper_main(void *arg)
{
	struct child *sl = arg;
	struct bus *cb = child_bus();
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY,
					.wait = BUS_WAIT_SLEEP,
					.spin_count = 1 };
	struct bus_consumer *c;
	struct bus_view v[4];
	int err;

	if (bus_consumer_open(cb, sl->name, &co, &c))
		return 1;
	err = bus_consumer_poll(c, v, 4, 10000000000ll);
	if (write(sl->res_fd, &err, sizeof(err)) != (ssize_t)sizeof(err))
		return 92;
	bus_consumer_close(c);
	bus_close(cb);
	return 0;
}

/* Fork a consumer of topic @sl->name (sleeper_main(), its result written
 * to @res[1], a new pipe) and wait until it announced itself asleep on the
 * topic's futex line @ts. */
static pid_t fork_sleeper(struct child *sl, struct bus_topic_slot *ts, int res[2])
{
	int64_t deadline = tnow_ms() + 10000;
	pid_t pid;

	cr_assert_eq(pipe(res), 0);
	sl->res_fd = res[1];
	pid = tfork(sleeper_main, sl);
	while (atomic_load(&ts->sleepers) == 0) {
		cr_assert(tnow_ms() < deadline, "the consumer never went to sleep");
		sched_yield();
	}
	return pid;
}

Test(topic, a_consumer_asleep_in_poll_is_told_of_a_delete_at_once)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct child sl = { .name = "sleepy" };
	struct bus_topic_slot *ts;
	int64_t t0, ms;
	int res[2], err = 12345, s;
	pid_t pid;

	mk("sleepy", 2);
	s = slot_of(h, "sleepy", BUS_SLOT_READY);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	pid = fork_sleeper(&sl, ts, res);
	t0 = tnow_ms();
	cr_assert_eq(bus_topic_delete(b, "sleepy"), 0);
	cr_assert_eq(read(res[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	ms = tnow_ms() - t0;
	cr_assert_eq(err, -BUS_ESTALE, "poll: %s", bus_strerror(err));
	cr_expect(ms < 300, "the sleeping consumer learnt of the delete after %lld ms",
		  (long long)ms);
	cr_assert_eq(twait(pid, 10000), 0);
	close(res[0]);
	close(res[1]);
	munmap(h, BUS_CTL_SIZE);
}

/* A topic deleted and created again at once, while a consumer of the old
 * one was asleep on the slot's futex: the old consumer's leaving must not
 * leave the new topic counting a sleeper below zero (2^32 - 1 sleepers:
 * every produce on it would then make a FUTEX_WAKE system call). */
Test(topic, recreating_a_topic_under_a_sleeping_consumer_leaves_no_phantom_sleeper)
{
	struct bus_ctl_hdr *h = ctl_map();

	for (int it = 0; it < 5; it++) {
		struct child sl = { .name = "reborn" };
		struct bus_topic_slot *ts;
		int res[2], err, s;
		pid_t pid;

		mk("reborn", 1);
		s = slot_of(h, "reborn", BUS_SLOT_READY);
		cr_assert(s >= 0);
		ts = ctl_slot(h, (uint32_t)s);
		cr_assert_eq(atomic_load(&ts->sleepers), 0u);
		pid = fork_sleeper(&sl, ts, res);
		cr_assert_eq(bus_topic_delete(b, "reborn"), 0);
		mk("reborn", 1);
		cr_assert_eq(slot_of(h, "reborn", BUS_SLOT_READY), s, "not made in the same slot");
		cr_assert_eq(read(res[0], &err, sizeof(err)), (ssize_t)sizeof(err));
		cr_assert_eq(err, -BUS_ESTALE, "poll: %s", bus_strerror(err));
		cr_assert_eq(twait(pid, 10000), 0);
		cr_assert_eq(atomic_load(&ts->sleepers), 0u,
			     "round %d: %u sleepers counted on the new topic, none asleep", it,
			     atomic_load(&ts->sleepers));
		cr_assert_eq(bus_topic_delete(b, "reborn"), 0);
		close(res[0]);
		close(res[1]);
	}
	munmap(h, BUS_CTL_SIZE);
}

/* ---------------------------------------------------------- full table */

Test(topic, full_table_refuses_create_with_enomem_until_a_delete)
{
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	char name[64];

	cfg_small(&cfg, 1);
	for (int i = 0; i < BUS_TOPICS_MAX; i++) {
		snprintf(name, sizeof(name), "full-%d", i);
		int err = bus_topic_create(b, name, &cfg);
		cr_assert_eq(err, 0, "create %s: %s", name, bus_strerror(err));
	}
	cr_assert_eq(count_topics(), BUS_TOPICS_MAX);
	cr_assert_eq(bus_topic_create(b, "one-too-many", &cfg), -ENOMEM);
	cr_assert_eq(bus_topic_describe(b, "one-too-many", &ti), -ENOENT);
	cr_assert_eq(count_ring_files("one-too-many"), 0);
	/* Existing topics are still found (and idempotent) in a full table. */
	cr_assert_eq(bus_topic_create(b, "full-0", &cfg), 0);
	cr_assert_eq(bus_topic_create(b, "full-255", &cfg), 0);
	cr_assert_eq(bus_topic_describe(b, "full-128", &ti), 0);

	cr_assert_eq(bus_topic_delete(b, "full-77"), 0);
	cr_assert_eq(bus_topic_create(b, "one-too-many", &cfg), 0);
	cr_assert_eq(count_topics(), BUS_TOPICS_MAX);
	cr_assert_eq(use_topic(b, "one-too-many"), 0);
	cr_assert_eq(bus_topic_create(b, "full-77", &cfg), -ENOMEM);
}

/* ------------------------------------- deletes and the logs of a name */

static void cfg_persistent(struct bus_topic_config *cfg, uint32_t parts)
{
	cfg_small(cfg, parts);
	cfg->flags = 0;
}

/* Give partition @part of topic @name a log whose durable offset floor is
 * @floor, as busd leaves it: a topic created over it starts there. */
static void log_with_floor(const char *name, uint32_t part, uint64_t floor)
{
	char dir[512];
	struct bus_seg_writer *w;

	snprintf(dir, sizeof(dir), "%s/%s/%u", env.data_dir, name, part);
	cr_assert_eq(bus_seg_writer_open(&w, dir, NULL), 0, "open the log in %s", dir);
	cr_assert_eq(bus_seg_writer_floor_raise(w, floor, 0), 0);
	cr_assert_eq(bus_seg_writer_close(w), 0);
}

static uint64_t next_offset_of(const char *name)
{
	struct bus_partition_info pi;
	int err = bus_partition_describe(b, name, 0, &pi);

	cr_assert_eq(err, 0, "describe %s: %s", name, bus_strerror(err));
	return pi.next_offset;
}

static bool topic_dir_exists(const char *name)
{
	char dir[512];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/%s", env.data_dir, name);
	return stat(dir, &st) == 0;
}

/* A deleter killed after it took the slot (DELETING) and before it retired
 * the logs: whoever reaps the slot finishes the delete, so the name created
 * again starts a new log instead of continuing the deleted one's. */
Test(topic, a_dead_deleters_delete_is_finished_and_its_log_is_not_continued)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	struct bus_topic_slot *ts;
	uint64_t w;
	int s;

	cfg_persistent(&cfg, 1);
	cr_assert_eq(bus_topic_create(b, "lazarus", &cfg), 0);
	log_with_floor("lazarus", 0, 1000);
	s = slot_of(h, "lazarus", BUS_SLOT_READY);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	w = atomic_load(&ts->state);
	cr_assert(atomic_compare_exchange_strong(
		&ts->state, &w, BUS_SLOT_WORD(BUS_SLOT_DELETING, BUS_SLOT_GEN(w), dead_pid())));

	cr_assert_eq(bus_topic_describe(b, "lazarus", &ti), -ENOENT);
	cr_assert_eq(BUS_SLOT_STATE(atomic_load(&ts->state)), BUS_SLOT_DELETED);
	cr_assert_eq(count_ring_files("lazarus"), 0);
	cr_assert(!topic_dir_exists("lazarus"), "the deleted topic's logs were not retired");

	cr_assert_eq(bus_topic_create(b, "lazarus", &cfg), 0);
	cr_assert_eq(next_offset_of("lazarus"), 0u,
		     "the re-created topic continues the deleted one's log");
	munmap(h, BUS_CTL_SIZE);
}

struct pcreator {
	const char *name;
	int res_fd;
};

static int pcreator_main(void *arg)
{
	struct pcreator *pc = arg;
	struct bus *cb = child_bus();
	struct bus_topic_config cfg;
	int err;

	cfg_persistent(&cfg, 1);
	err = bus_topic_create(cb, pc->name, &cfg);
	bus_close(cb);
	return write(pc->res_fd, &err, sizeof(err)) == (ssize_t)sizeof(err) ? 0 : 92;
}

/* A create of a name whose delete is in progress (its slot DELETING by a
 * live deleter, the logs not yet retired) waits for the delete to end: made
 * before it, the new topic would continue the old log, and the deleter's
 * rename would then carry the new topic's logs away. */
Test(topic, create_waits_for_a_delete_of_the_same_name_in_progress)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg;
	struct bus_topic_info t1, t2;
	struct bus_topic_slot *ts;
	struct pcreator pc = { .name = "phoenix" };
	char from[512], to[600];
	int64_t deadline;
	int res[2], err = 12345, s;
	uint64_t w;
	pid_t pid;
	char st;

	cfg_persistent(&cfg, 1);
	cr_assert_eq(bus_topic_create(b, "phoenix", &cfg), 0);
	cr_assert_eq(bus_topic_describe(b, "phoenix", &t1), 0);
	log_with_floor("phoenix", 0, 1000);

	/* This process is the deleter: it has taken the slot. */
	s = slot_of(h, "phoenix", BUS_SLOT_READY);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	w = atomic_load(&ts->state);
	cr_assert(atomic_compare_exchange_strong(
		&ts->state, &w, BUS_SLOT_WORD(BUS_SLOT_DELETING, BUS_SLOT_GEN(w), getpid())));

	cr_assert_eq(pipe(res), 0);
	pc.res_fd = res[1];
	pid = tfork(pcreator_main, &pc);
	/* The creator waits (sleeps) for the delete, or (wrongly) finishes. */
	deadline = tnow_ms() + 10000;
	while ((st = proc_state(pid)) != 'S' && st != 'Z') {
		cr_assert(tnow_ms() < deadline, "the creator neither waited nor finished");
		sched_yield();
	}

	/* The deleter finishes as bus_topic_delete() does. */
	snprintf(from, sizeof(from), "%s/phoenix", env.data_dir);
	snprintf(to, sizeof(to), "%s/.deleted.phoenix.%u.%d", env.data_dir, BUS_SLOT_GEN(w),
		 (int)getpid());
	{
		char ring[600];
		snprintf(ring, sizeof(ring), "%s/bus.%s.phoenix.%u.0", env.shm_dir, env.name,
			 BUS_SLOT_GEN(w));
		cr_assert_eq(unlink(ring), 0, "unlink %s: %s", ring, strerror(errno));
	}
	cr_assert_eq(rename(from, to), 0, "rename %s: %s", from, strerror(errno));
	atomic_store(&ts->state, BUS_SLOT_WORD(BUS_SLOT_DELETED, BUS_SLOT_GEN(w), 0));

	cr_assert_eq(twait(pid, 10000), 0);
	cr_assert_eq(read(res[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	cr_assert_eq(err, 0, "create: %s", bus_strerror(err));
	cr_assert_eq(bus_topic_describe(b, "phoenix", &t2), 0);
	cr_assert_neq(t2.generation, t1.generation);
	cr_assert_eq(next_offset_of("phoenix"), 0u,
		     "the topic created during the delete continues the deleted log");
	cr_assert_eq(count_named("phoenix"), 1);
	close(res[0]);
	close(res[1]);
	munmap(h, BUS_CTL_SIZE);
}

/* A slot CLAIMED by a live process that never goes on (stopped between its
 * claim and writing the name, a reused pid, or a forged word) on a name's
 * probe path: create fails with -EBUSY after a bounded wait instead of
 * waiting for as long as that pid lives. */
#define BUS_SLOT_CLAIMED_FORGED 5 /* topic.c's BUS_SLOT_CLAIMED */

Test(topic, create_past_a_slot_claimed_for_good_by_a_live_pid_fails_with_ebusy)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg;
	struct bus_topic_slot *ts = ctl_slot(h, home_of("stuck"));
	int err;

	cr_assert_eq(BUS_SLOT_STATE(atomic_load(&ts->state)), BUS_SLOT_FREE);
	atomic_store(&ts->state, BUS_SLOT_WORD(BUS_SLOT_CLAIMED_FORGED, 1, getpid()));
	cfg_small(&cfg, 1);
	err = create_bounded("stuck", &cfg);
	cr_assert_eq(err, -EBUSY, "create: %s", bus_strerror(err));
	cr_assert_eq(count_topics(), 0);
	cr_assert_eq(count_ring_files("stuck"), 0);

	/* Once the claim is gone, the name is created. */
	atomic_store(&ts->state, BUS_SLOT_WORD(BUS_SLOT_DELETED, 1, 0));
	mk("stuck", 1);
	cr_assert_eq(use_topic(b, "stuck"), 0);
	munmap(h, BUS_CTL_SIZE);
}

/* /proc/<pid>/stat field 22 is shifted by the READER's time namespace
 * boottime offset (fs/proc/array.c: timens_add_boottime_ns()).  A process
 * of the bus in another time namespace (a container made with
 * CLONE_NEWTIME, a CRIU-restored process) read a live creator's start time
 * as a different value, and reaped its CREATING slot (found by review).
 * Start times are now taken as the initial namespace sees them.  Here the
 * creator (@other, alive, with its true start time in owner_start) is
 * waited for by a create run in a new time namespace: the slot stays the
 * creator's while it lives, and the create succeeds once it is gone. */
static int timens_main(void *arg)
{
	struct child *cr = arg;
	FILE *f;
	pid_t pid;
	int st;

	if (unshare(CLONE_NEWTIME) != 0)
		return 77;
	f = fopen("/proc/self/timens_offsets", "w");
	if (!f || fprintf(f, "boottime 100000 0\n") < 0 || fclose(f) != 0)
		return 78;
	pid = fork(); /* in the new time namespace */
	if (pid == 0)
		_exit(creator_main(cr));
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		return 79;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 80;
}

/* Whether this process may make a time namespace (root, CONFIG_TIME_NS). */
static bool timens_possible(void)
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0)
		_exit(unshare(CLONE_NEWTIME) == 0 ? 0 : 1);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

Test(topic, a_live_creator_is_not_reaped_by_a_process_in_another_time_namespace)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_slot *ts;
	struct child cr;
	int hold[2], res[2], s;
	uint32_t start, gen;
	uint64_t w, forged;
	pid_t other, waiter;
	int err = 12345;

	if (!timens_possible())
		cr_skip_test("no time namespace here (needs root and CONFIG_TIME_NS)");
	mk("tns", 2);
	s = slot_of(h, "tns", BUS_SLOT_READY);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	cr_assert_eq(pipe(hold), 0);
	other = tfork(hold_main, &hold[0]); /* the live creator */
	start = bus_pid_start(other);
	cr_assert_neq(start, 0);
	cr_assert_eq(bus_topic_delete(b, "tns"), 0);
	s = slot_of(h, "tns", BUS_SLOT_DELETED);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	w = atomic_load(&ts->state);
	gen = (BUS_SLOT_GEN(w) + 1) & 0xffffffu;
	forged = BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, other);
	atomic_store(&ts->owner_start, start); /* its true start time */
	cr_assert(atomic_compare_exchange_strong(&ts->state, &w, forged));
	cr_assert_eq(pipe(res), 0);
	cr = (struct child){ .name = "tns", .res_fd = res[1] };
	waiter = tfork(timens_main, &cr);
	for (int64_t until = tnow_ms() + 500; tnow_ms() < until;) {
		cr_assert_eq(atomic_load(&ts->state), forged,
			     "a live creator's CREATING slot was reaped by a process in another "
			     "time namespace");
		sched_yield();
	}
	cr_assert_eq(write(hold[1], "x", 1), 1);
	cr_assert_eq(twait(other, 10000), 0);
	cr_assert_eq(twait(waiter, 10000), 0, "the create in a time namespace did not end");
	cr_assert_eq(read(res[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	cr_assert_eq(err, 0, "create: %s", bus_strerror(err));
	cr_assert_eq(count_named("tns"), 1);
	cr_assert_eq(use_topic(b, "tns"), 0);
	close(hold[0]);
	close(hold[1]);
	close(res[0]);
	close(res[1]);
	munmap(h, BUS_CTL_SIZE);
}

/* A creator taken for dead while it lives (a misread start time, as in the
 * time-namespace case above) had its slot reaped and the name created by
 * another; it then stored READY over the slot (a plain store), and the
 * topic it published had half its rings unlinked by the reaper: unusable
 * (found by review).  Its moves out of CREATING are now a CAS from its own
 * word: it finds the slot taken, removes its rings, and starts over,
 * finding the topic made by the other.  Here the creator is held inside
 * its create (its log callback blocks after the first ring) and its
 * recorded start time spoiled, as a misreading would. */
Test(topic, a_creator_taken_for_dead_starts_over_rather_than_overwrite_its_slot)
{
	struct bus_ctl_hdr *h = ctl_map();
	struct bus_topic_config cfg;
	struct bus_topic_slot *ts;
	int note[2], hold[2], res[2], err = 12345, s;
	struct blocker bl;
	pid_t creator;
	char c;

	cr_assert_eq(pipe(note), 0);
	cr_assert_eq(pipe(hold), 0);
	cr_assert_eq(pipe(res), 0);
	bl = (struct blocker){ .name = "big", .parts = 64, .ring = BUS_RING_MIN,
			       .note_fd = note[1], .hold_fd = hold[0], .res_fd = res[1] };
	creator = tfork(blocker_main, &bl);
	cr_assert_eq(read(note[0], &c, 1), 1); /* CREATING, its first ring made */
	s = slot_of(h, "big", BUS_SLOT_CREATING);
	cr_assert(s >= 0);
	ts = ctl_slot(h, (uint32_t)s);
	atomic_store(&ts->owner_start, atomic_load(&ts->owner_start) + 1000);

	/* Another create reaps the slot (the creator looks like a reused
	 * pid) and makes the topic. */
	cfg_small(&cfg, 64);
	cfg.ring_size = BUS_RING_MIN;
	cr_assert_eq(create_bounded("big", &cfg), 0);
	cr_assert_eq(count_named("big"), 1);

	/* The creator goes on: its READY must not land. */
	cr_assert_eq(write(hold[1], "x", 1), 1);
	cr_assert_eq(twait(creator, 10000), 0);
	cr_assert_eq(read(res[0], &err, sizeof(err)), (ssize_t)sizeof(err));
	cr_assert_eq(err, 0, "the creator, started over, finds the same topic: %s",
		     bus_strerror(err));
	cr_assert_eq(count_named("big"), 1);
	cr_assert_eq(count_ring_files("big"), 64, "the creator's rings were left behind");
	cr_assert_eq(use_topic(b, "big"), 0, "the topic named big cannot be used");
	close(note[0]);
	close(note[1]);
	close(hold[0]);
	close(hold[1]);
	close(res[0]);
	close(res[1]);
	munmap(h, BUS_CTL_SIZE);
}

/* ------------------------------------------------------ bus_pid_gone() */

static int lone_thread_fd;

static void *lone_thread(void *arg)
{
	char x = 1;

	(void)arg;
	if (write(lone_thread_fd, &x, 1) != 1)
		_exit(41);
	pause(); /* lives until killed */
	return NULL;
}

/* The main thread leaves, another lives: /proc shows the leader as a
 * zombie, but the process is alive. */
static int main_thread_leaves(void *arg)
{
	pthread_t th;

	lone_thread_fd = *(int *)arg;
	if (pthread_create(&th, NULL, lone_thread, NULL))
		return 40;
	pthread_exit(NULL);
}

static int exit_at_once(void *arg)
{
	(void)arg;
	return 0;
}

Test(topic, an_owner_is_gone_once_dead_even_unreaped_but_not_while_a_thread_lives)
{
	int fds[2];
	pid_t pid;
	char x;

	cr_assert_not(bus_pid_gone(getpid()));
	cr_assert(bus_pid_gone(0));
	cr_assert(bus_pid_gone(-1));

	pid = tfork(exit_at_once, NULL);
	cr_assert_eq(tzombie(pid, 10000), 0);
	cr_assert(bus_pid_alive(pid), "kill(2) finds a zombie");
	cr_assert(bus_pid_gone(pid), "a zombie is gone");
	cr_assert_eq(twait(pid, 10000), 0);
	cr_assert(bus_pid_gone(pid), "reaped, it is gone");

	cr_assert_eq(pipe(fds), 0);
	pid = tfork(main_thread_leaves, &fds[1]);
	cr_assert_eq(read(fds[0], &x, 1), 1, "the thread did not start");
	/* Wait until the leader shows as a zombie, as a zombie's would. */
	for (int64_t deadline = tnow_ms() + 10000;;) {
		char path[64], buf[512], *p;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		cr_assert_not_null(f = fopen(path, "r"));
		cr_assert_not_null(fgets(buf, sizeof(buf), f));
		fclose(f);
		cr_assert_not_null(p = strrchr(buf, ')'));
		if (p[2] == 'Z')
			break;
		cr_assert(tnow_ms() < deadline, "the main thread did not leave");
		usleep(1000);
	}
	cr_assert_not(bus_pid_gone(pid), "a process with a live thread is not gone");
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(tzombie(pid, 10000), 0);
	cr_assert(bus_pid_gone(pid), "killed whole, it is gone");
	cr_assert_eq(twait(pid, 10000), -1);
	close(fds[0]);
	close(fds[1]);
}

/* In a new PID namespace that kept its parent's /proc, /proc/<pid> names
 * another process than our pid does: here /proc/1 is the host's init,
 * while pid 1 is the test's own child.  Nothing may be read there: the
 * child's start time is unknown (0), not init's, and init's state is not
 * taken for the child's. */
static int in_new_pidns(void *arg)
{
	pid_t g;
	int st;

	(void)arg;
	if (unshare(CLONE_NEWPID))
		return 77; /* no CAP_SYS_ADMIN */
	g = fork();
	if (g < 0)
		return 70;
	if (g == 0) {
		if (getpid() != 1)
			_exit(71);
		if (bus_pid_start(1) != 0)
			_exit(72); /* read /proc/1: another process's */
		if (bus_pid_gone(1))
			_exit(73);
		_exit(0);
	}
	if (waitpid(g, &st, 0) != g)
		return 74;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 75;
}

Test(topic, a_proc_of_another_pid_namespace_is_not_read_for_owners)
{
	int rc = twait(tfork(in_new_pidns, NULL), 10000);

	if (rc == 77)
		cr_skip_test("unshare(CLONE_NEWPID) refused: needs CAP_SYS_ADMIN");
	cr_assert_eq(rc, 0, "child in a new PID namespace: code %d (72: /proc/1 read as ours)",
		     rc);
}
