/* fuzz_ctl.c - a bus's control region from hostile bytes: the topic table
 * (slot states, generations, pids, configs, names, futex words) and the
 * daemon's line, as another process may have left them.  Listing,
 * describing, creating, deleting, opening producers and consumers over it
 * must give an error or a sound answer, never a crash or a hang.
 *
 * One input, over a real bus whose identity line stays the creator's (a bad
 * one is refused at open: test_safety.c):
 *   byte 0          flags (FL_*)
 *   16 bytes        the daemon's line: pid, reserved, heartbeat
 *   the rest        slots 0, 1, ... (struct bus_topic_slot, 192 bytes each,
 *                   FUZZ_SLOTS at most); the others stay as setup left them
 * Setup made topics "t0" (ephemeral) and "t1" (ephemeral, 2 partitions) in
 * the first slots, so a seed is the table as the library writes it.  Each
 * input is run on a new handle (bus_open() attaches and validates), which
 * lists, describes every listed topic and t0/t1, opens a consumer and a
 * producer on each (polling, producing one record), describes partitions,
 * and creates topic "n" (FL_CREATE), uses it and deletes it.
 * The table is restored before the next input.
 *
 * Built like fuzz_segment.c: make fuzz runs it under libFuzzer, make test
 * replays tests/fuzz/ctl/ (seeds from the table setup made, by --seeds DIR,
 * and inputs that once failed).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bus/bus.h>

#include "fuzz_util.h"
#include "layout.h"

#define FL_CREATE 0x01u

#define FUZZ_SLOTS 8u
#define SLOTS_BYTES (FUZZ_SLOTS * sizeof(struct bus_topic_slot))
#define DAEMON_OFF offsetof(struct bus_ctl_hdr, daemon_owner)

static char shm_dir[PATH_MAX], data_dir[PATH_MAX];
static struct bus *b;
static uint8_t *ctl;
static uint8_t pristine[BUS_CTL_SIZE];

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz_ctl: %s: %s\n", what, err ? bus_strerror(err) : strerror(errno));
	exit(2);
}

static void cleanup(void)
{
	if (b)
		bus_close(b);
	b = NULL;
	fuzz_rm_dir(shm_dir);
	fuzz_rm_dir(data_dir);
}

static void mk(const char *name, uint32_t parts)
{
	struct bus_topic_config cfg;
	int err;

	bus_topic_config_init(&cfg);
	cfg.partitions = parts;
	cfg.ring_size = BUS_RING_MIN;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.overflow = BUS_OVERFLOW_OVERWRITE;
	err = bus_topic_create(b, name, &cfg);
	if (err)
		die(name, err);
}

static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	struct bus_opts o = { .name = "fuzzctl" };
	char path[PATH_MAX + 64];
	int fd, err;

	snprintf(shm_dir, sizeof(shm_dir), "%s/bus-fuzz-shm-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	snprintf(data_dir, sizeof(data_dir), "%s/bus-fuzz-data-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(shm_dir) || !mkdtemp(data_dir))
		die("mkdtemp", 0);
	atexit(cleanup);
	o.shm_dir = shm_dir;
	setenv("BUS_DATA_DIR", data_dir, 1);
	setenv("BUS_SHM_DIR", shm_dir, 1);
	err = bus_open(&b, &o);
	if (err)
		die("bus_open", err);
	mk("t0", 1);
	mk("t1", 2);
	snprintf(path, sizeof(path), "%s/bus.fuzzctl.ctl", shm_dir);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die(path, 0);
	ctl = mmap(NULL, BUS_CTL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (ctl == MAP_FAILED)
		die("mmap", 0);
	memcpy(pristine, ctl, BUS_CTL_SIZE);
}

/* Every byte of @ti, and a name that is a C string. */
static void check_info(const struct bus_topic_info *ti)
{
	if (memchr(ti->name, 0, sizeof(ti->name)) == NULL) {
		fprintf(stderr, "fuzz_ctl: a topic name without its NUL\n");
		abort();
	}
}

struct seen {
	char names[16][BUS_NAME_MAX + 1];
	unsigned n;
};

static int on_topic(void *ctx, const struct bus_topic_info *ti)
{
	struct seen *s = ctx;

	check_info(ti);
	if (s->n < 16)
		memcpy(s->names[s->n++], ti->name, sizeof(ti->name));
	return 0;
}

static void use_topic(struct bus *h, const char *name)
{
	struct bus_topic_info ti;
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY, .wait = BUS_WAIT_SPIN };
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK,
					.block_timeout_ns = 1000000 };
	struct bus_record r = { .value = "x", .value_len = 1 };
	struct bus_consumer *c;
	struct bus_producer *p;
	struct bus_view v[8];

	if (bus_topic_describe(h, name, &ti) != 0)
		return;
	check_info(&ti);
	for (uint32_t i = 0; i < ti.config.partitions && i < 4; i++) {
		struct bus_partition_info pi;
		(void)bus_partition_describe(h, name, i, &pi);
	}
	if (bus_producer_open(h, name, &po, &p) == 0) {
		(void)bus_produce(p, BUS_PARTITION_ANY, &r, NULL, NULL);
		bus_producer_close(p);
	}
	if (bus_consumer_open(h, name, &co, &c) == 0) {
		for (int i = 0; i < 4; i++)
			if (bus_consumer_poll(c, v, 8, 0) <= 0)
				break;
		bus_consumer_close(c);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bus_opts o = { .name = "fuzzctl" };
	struct seen s = { .n = 0 };
	struct bus *h;
	uint8_t flags;
	size_t n;

	if (!b)
		setup();
	if (size < 17)
		return 0;
	flags = data[0];
	memcpy(ctl, pristine, BUS_CTL_SIZE);
	memcpy(ctl + DAEMON_OFF, data + 1, 16);
	n = size - 17 < SLOTS_BYTES ? size - 17 : SLOTS_BYTES;
	memcpy(ctl + BUS_CTL_TOPICS_OFF, data + 17, n);

	o.shm_dir = shm_dir;
	if (bus_open(&h, &o) == 0) {
		(void)bus_daemon_pid(h);
		(void)bus_topic_list(h, on_topic, &s);
		for (unsigned i = 0; i < s.n; i++)
			use_topic(h, s.names[i]);
		use_topic(h, "t0");
		use_topic(h, "t1");
		if (flags & FL_CREATE) {
			struct bus_topic_config cfg;
			bus_topic_config_init(&cfg);
			cfg.ring_size = BUS_RING_MIN;
			cfg.flags = BUS_TOPIC_EPHEMERAL;
			if (bus_topic_create(h, "n", &cfg) == 0) {
				use_topic(h, "n");
				(void)bus_topic_delete(h, "n");
			}
		}
		bus_close(h);
	}
	/* What the input left (rings of topics it made or deleted) goes with
	 * the table: ring files of generations setup never made are removed. */
	memcpy(ctl, pristine, BUS_CTL_SIZE);
	{
		DIR *d = opendir(shm_dir);
		struct dirent *e;
		if (d) {
			while ((e = readdir(d)))
				if (strncmp(e->d_name, "bus.fuzzctl.n.", 14) == 0)
					unlinkat(dirfd(d), e->d_name, 0);
			closedir(d);
		}
	}
	return 0;
}

#ifndef BUS_LIBFUZZER
/* ------------------------------------------------- make test: a runner */

static void put_seed(const char *out, const char *nm, uint8_t flags)
{
	char path[PATH_MAX + 64];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", out, nm);
	f = fopen(path, "wb");
	if (!f || fputc(flags, f) == EOF || fwrite(pristine + DAEMON_OFF, 1, 16, f) != 16 ||
	    fwrite(pristine + BUS_CTL_TOPICS_OFF, 1, SLOTS_BYTES, f) != SLOTS_BYTES ||
	    fclose(f) != 0)
		die(path, 0);
}

int main(int argc, char **argv)
{
	int ran = 0;

	setup();
	if (argc == 3 && strcmp(argv[1], "--seeds") == 0) {
		put_seed(argv[2], "seed-table", 0);
		put_seed(argv[2], "seed-table-create", FL_CREATE);
		return 0;
	}
	for (int i = 1; i < argc; i++)
		ran += fuzz_run_dir(argv[i]);
	printf("fuzz_ctl: %d inputs, no failure\n", ran);
	return 0;
}
#endif
