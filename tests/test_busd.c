/* test_busd.c - busd end to end: spill, replay across the ring/disk seam,
 * crash recovery, torn tails, retention, seeks on disk, full disk, stuck
 * claims, single instance and signals.  Each test runs its own busd
 * (build/bin/busd --foreground) on a private bus and data dir. */
#include <criterion/criterion.h>
#include <linux/capability.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "layout.h"
#include "segment.h"
#include "util_busd.h"

TestSuite(busd, .init = busd_setup, .fini = busd_teardown, .timeout = 120);

/* ----------------------------------------------------------- helpers */

static void mk_topic(const char *name, uint32_t parts, uint64_t ring, uint64_t ret_ms,
		     uint64_t ret_bytes)
{
	struct bus_topic_config cfg;
	int err;

	bus_topic_config_init(&cfg);
	cfg.partitions = parts;
	cfg.ring_size = ring;
	cfg.retention_ms = ret_ms;
	cfg.retention_bytes = ret_bytes;
	err = bus_topic_create(tb, name, &cfg);
	cr_assert_eq(err, 0, "create %s: %s", name, bus_strerror(err));
}

/* Payloads: [producer u32][seq u64][sum u64][filler], checked on read. */
#define HDRB 20u

static void fill(uint8_t *v, uint32_t len, uint32_t prod, uint64_t seq)
{
	uint64_t sum;

	memcpy(v, &prod, 4);
	memcpy(v + 4, &seq, 8);
	for (uint32_t i = HDRB; i < len; i++)
		v[i] = (uint8_t)(seq * 31 + i + prod);
	sum = tsum(v + HDRB, len - HDRB);
	memcpy(v + 12, &sum, 8);
}

static bool check(const uint8_t *v, uint32_t len, uint32_t *prod, uint64_t *seq)
{
	uint64_t sum;

	if (len < HDRB)
		return false;
	memcpy(prod, v, 4);
	memcpy(seq, v + 4, 8);
	memcpy(&sum, v + 12, 8);
	return sum == tsum(v + HDRB, len - HDRB);
}

/* Produce @n records of @len bytes as producer @prod; @ts0 > 0 gives record
 * i the timestamp ts0 + i * step.  Retries while busd is away. */
/* Flags of produce_n()'s producers. */
static unsigned produce_flags;

static int produce_n(const char *topic, uint32_t prod, uint64_t first, uint64_t n, uint32_t len,
		     int64_t ts0, int64_t step)
{
	struct bus_producer_opts po = { .flags = produce_flags,
					.block_timeout_ns = 50 * 1000000ll };
	struct bus_producer *p;
	uint8_t *v = malloc(len);
	int64_t deadline = tnow_ms() + 60000;
	int err = bus_producer_open(tb, topic, &po, &p);

	if (err || !v)
		return 1;
	for (uint64_t i = first; i < first + n; i++) {
		struct bus_record r = { .value = v, .value_len = len };
		fill(v, len, prod, i);
		if (ts0)
			r.timestamp = ts0 + (int64_t)i * step;
		while ((err = bus_produce(p, BUS_PARTITION_ANY, &r, NULL, NULL)) == -BUS_ENODAEMON ||
		       err == -ETIMEDOUT) {
			if (tnow_ms() > deadline)
				break; /* busd never came back: report it */
			sleep_ms(1);
		}
		if (err) {
			fprintf(stderr, "produce %" PRIu64 ": %s\n", i, bus_strerror(err));
			return 1;
		}
	}
	bus_producer_close(p);
	free(v);
	return 0;
}

/* Consume @want records of @topic (from @prods producers, each numbering
 * its records 0, 1, ...) from the earliest: every record exactly once,
 * intact, offsets dense per partition (but for @lost_ok records reported
 * lost), each producer's records in order within a partition. */
static void consume_all(const char *topic, uint32_t parts, uint32_t prods, uint64_t want,
			uint64_t lost_ok)
{
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer *c;
	struct bus_msg m[64];
	size_t buflen = 1 << 20;
	uint8_t *buf = malloc(buflen);
	uint64_t *next_off = calloc(parts, 8), records = 0, lost = 0;
	int64_t *last = malloc(sizeof(int64_t) * prods * parts);
	uint8_t *seen = calloc(prods, want + 1);
	int64_t deadline = tnow_ms() + 60000;
	int err = bus_consumer_open(tb, topic, &co, &c);

	cr_assert(buf && next_off && last && seen);
	for (uint32_t i = 0; i < prods * parts; i++)
		last[i] = -1;
	cr_assert_eq(err, 0, "consumer: %s", bus_strerror(err));
	for (uint32_t p = 0; p < parts; p++)
		cr_assert_eq(bus_consumer_position(c, p, &next_off[p]), 0);
	/* The copying read: a reader that does not gate the producers may be
	 * overwritten in the ring (it then goes on from disk), and only what
	 * bus_consumer_read() returns is known whole. */
	while (records < want) {
		int n = bus_consumer_read(c, m, 64, buf, buflen, 100 * 1000000ll);
		cr_assert(n >= 0, "read: %s", bus_strerror(n));
		if (tnow_ms() >= deadline) {
			for (uint32_t p = 0; p < parts; p++) {
				struct bus_partition_info pi = pinfo(topic, p);
				uint64_t pos = 0;
				bus_consumer_position(c, p, &pos);
				fprintf(stderr, "partition %u: position %" PRIu64 ", expected next %" PRIu64
					", ring first %" PRIu64 " next %" PRIu64 " spilled %" PRIu64
					", disk %" PRIu64 "..%" PRIu64 "\n",
					p, pos, next_off[p], pi.first_offset, pi.next_offset,
					pi.spilled_offset, pi.disk_first_offset, pi.disk_next_offset);
			}
		}
		cr_assert(tnow_ms() < deadline, "only %" PRIu64 " of %" PRIu64 " records", records, want);
		for (int i = 0; i < n; i++) {
			uint32_t prod, part = m[i].partition;
			uint64_t seq;
			cr_assert(check(m[i].value, m[i].value_len, &prod, &seq),
				  "record at %u/%" PRIu64 " damaged", part, m[i].offset);
			cr_assert(prod < prods && seq <= want, "bad record %u/%" PRIu64, prod, seq);
			cr_assert_eq(m[i].offset, next_off[part] + m[i].lost_before,
				     "partition %u: offset %" PRIu64 " after %" PRIu64 " (lost %" PRIu64 ")",
				     part, m[i].offset, next_off[part], m[i].lost_before);
			cr_assert_gt((int64_t)seq, last[prod * parts + part],
				     "producer %u, partition %u: %" PRIu64 " after %" PRId64, prod, part, seq,
				     last[prod * parts + part]);
			cr_assert(!seen[(uint64_t)prod * (want + 1) + seq], "duplicate %u/%" PRIu64, prod, seq);
			seen[(uint64_t)prod * (want + 1) + seq] = 1;
			last[prod * parts + part] = (int64_t)seq;
			next_off[part] = m[i].offset + 1;
			lost += m[i].lost_before;
			records++;
		}
	}
	cr_assert_leq(lost, lost_ok, "%" PRIu64 " records lost", lost);
	{
		int rest = bus_consumer_read(c, m, 64, buf, buflen, 0);
		cr_assert_eq(rest, 0, "more records than produced: %d %s", rest,
			     rest < 0 ? bus_strerror(rest) : "");
	}
	bus_consumer_close(c);
	free(buf);
	free(next_off);
	free(last);
	free(seen);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return ftw->level ? remove(path) : 0;
}

/* A reboot: the shared memory is gone, the data dir stays. */
static void reboot(void)
{
	bus_close(tb);
	tb = NULL;
	nftw(e.shm_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	tb = tenv_bus(&e);
}

/* The newest .log of @topic's partition @p. */
static void seg_path(const char *topic, uint32_t p, char *buf, size_t len)
{
	char cmd[700];
	FILE *f;

	snprintf(cmd, sizeof cmd, "ls %s/%s/%u/*.log | tail -1", e.data_dir, topic, p);
	f = popen(cmd, "r");
	cr_assert(f);
	cr_assert(fgets(buf, (int)len, f), "no segment in %s/%u", topic, p);
	pclose(f);
	buf[strcspn(buf, "\n")] = 0;
}

/* ------------------------------------------------------------- tests */

Test(busd, replay_crosses_the_seam_without_gap_or_duplicate)
{
	const uint64_t n = 50 * 1024 * 1024 / 1000; /* 50 MiB of 1000 B values */

	busd_start();
	mk_topic("seam", 1, 1 << 20, 0, 0);
	cr_assert_eq(produce_n("seam", 0, 0, n, 1000, 0, 0), 0);
	/* The ring holds only the last MiB: the rest must come from disk. */
	cr_assert_gt(pinfo("seam", 0).first_offset, n / 2);
	consume_all("seam", 1, 1, n, 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

static int produce_child(void *arg)
{
	const uint64_t *n = arg;
	return produce_n("seam", 0, 0, *n, 1000, 0, 0);
}

Test(busd, replay_while_the_producer_produces)
{
	uint64_t n = 50 * 1024 * 1024 / 1000;
	int64_t deadline = tnow_ms() + 60000;
	pid_t pid;

	busd_start();
	mk_topic("seam", 1, 1 << 20, 0, 0);
	pid = tfork(produce_child, &n);
	/* Start reading once a few rings' worth is on disk. */
	while (pinfo("seam", 0).spilled_offset < 5000) {
		cr_assert(tnow_ms() < deadline);
		sleep_ms(1);
	}
	consume_all("seam", 1, 1, n, 0);
	cr_assert_eq(twait(pid, 60000), 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

struct crash_arg {
	uint32_t prod;
	uint64_t n;
};

static int crash_child(void *arg)
{
	struct crash_arg *a = arg;
	return produce_n("crash", a->prod, 0, a->n, 200, 0, 0);
}

Test(busd, sigkill_and_reboot_lose_nothing_and_offsets_continue)
{
	struct crash_arg a[2] = { { 0, 30000 }, { 1, 30000 } };
	uint64_t next[2], floor[2];
	struct bus_seg_bounds sb;
	int64_t deadline = tnow_ms() + 60000;
	pid_t kids[2];

	busd_start();
	mk_topic("crash", 2, 256 * 1024, 0, 0);
	for (int i = 0; i < 2; i++)
		kids[i] = tfork(crash_child, &a[i]);
	while (pinfo("crash", 0).spilled_offset + pinfo("crash", 1).spilled_offset < 10000) {
		cr_assert(tnow_ms() < deadline);
		sleep_ms(1);
	}
	cr_assert_eq(busd_stop(SIGKILL), -1);
	busd_start(); /* adopts the live shared memory */
	for (int i = 0; i < 2; i++)
		cr_assert_eq(twait(kids[i], 60000), 0, "producer %d failed", i);
	wait_spilled("crash", 2);
	consume_all("crash", 2, 2, 60000, 0);
	for (uint32_t p = 0; p < 2; p++)
		next[p] = pinfo("crash", p).next_offset;
	cr_assert_eq(next[0] + next[1], 60000);

	/* Reboot: the shared memory goes, the logs stay.  Offsets go on
	 * above every one that may have been handed out: from the offset
	 * floor, at least a bound of the ring (256 KiB / 48 + 1) above the
	 * log's end (see "offset floor" in segment.h). */
	cr_assert_eq(busd_stop(SIGTERM), 0);
	reboot();
	for (uint32_t p = 0; p < 2; p++) {
		char dir[600];
		snprintf(dir, sizeof dir, "%s/crash/%u", e.data_dir, p);
		cr_assert_eq(bus_seg_floor_read(dir, &floor[p]), 0);
		cr_assert_geq(floor[p], next[p] + 256 * 1024 / 48 + 1, "partition %u: floor %" PRIu64,
			      p, floor[p]);
		cr_assert_eq(bus_seg_bounds(dir, &sb), 0);
		cr_assert_eq(sb.first, 0);
		cr_assert_eq(sb.next, next[p], "the log is whole: %" PRIu64 "..%" PRIu64 ", next was %" PRIu64,
			     sb.first, sb.next, next[p]);
	}
	busd_start();
	for (uint32_t p = 0; p < 2; p++) {
		int64_t until = tnow_ms() + 20000;
		struct bus_partition_info pi = pinfo("crash", p);
		cr_assert_eq(pi.next_offset, floor[p], "partition %u: next %" PRIu64 " after the reboot, was %" PRIu64
			     ", floor %" PRIu64, p, pi.next_offset, next[p], floor[p]);
		/* busd skips the log to the floor when it takes the partition
		 * up, some time after it has published itself. */
		while ((pi = pinfo("crash", p)).disk_next_offset != floor[p]) {
			cr_assert_eq(pi.disk_next_offset, next[p], "partition %u: the log ends at %" PRIu64, p,
				     pi.disk_next_offset);
			cr_assert(tnow_ms() < until, "partition %u: busd did not skip to the floor", p);
			sleep_ms(2);
		}
		cr_assert_eq(pi.disk_first_offset, 0);
	}
	consume_all("crash", 2, 2, 60000, 0);
	/* Offsets go on from there; a reader sees the skipped ones as lost. */
	{
		struct bus_producer *pr;
		struct bus_consumer *c;
		struct bus_consumer_opts co = { .partition = 1 };
		struct bus_view v;
		uint64_t off, want = pinfo("crash", 1).next_offset;
		uint32_t part;
		struct bus_record r = { .value = "x", .value_len = 1 };
		cr_assert_eq(bus_producer_open(tb, "crash", NULL, &pr), 0);
		cr_assert_eq(bus_produce(pr, 1, &r, &part, &off), 0);
		cr_assert_eq(off, want);
		bus_producer_close(pr);
		wait_spilled("crash", 2);
		cr_assert_eq(bus_consumer_open(tb, "crash", &co, &c), 0);
		cr_assert_eq(bus_consumer_seek(c, 1, BUS_SEEK_OFFSET, (int64_t)next[1] - 1), 0);
		cr_assert_eq(bus_consumer_poll(c, &v, 1, 5000000000ll), 1);
		cr_assert_eq(v.offset, next[1] - 1);
		cr_assert_eq(bus_consumer_poll(c, &v, 1, 5000000000ll), 1);
		cr_assert_eq(v.offset, off);
		cr_assert_eq(v.lost_before, off - next[1], "lost %" PRIu64, v.lost_before);
		bus_consumer_close(c);
	}
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* A power loss with fsync "never": the rings are gone, and so is the end
 * of the log that was still in the page cache (here: cut by hand, as
 * recovery finds it).  No offset a producer handed out is given out again:
 * the partition goes on above the highest one, from the offset floor. */
Test(busd, a_power_loss_never_gives_an_offset_out_twice)
{
	struct bus_producer *pr;
	struct bus_record r = { .value = "0123456789abcdef", .value_len = 16 };
	struct bus_partition_info pi;
	uint64_t off = 0, high = 0, floor = 0;
	struct bus_seg_bounds sb;
	char path[700], dir[600];
	struct stat st;

	busd_start();
	mk_topic("power", 1, 64 * 1024, 0, 0);
	cr_assert_eq(bus_producer_open(tb, "power", NULL, &pr), 0);
	for (int i = 0; i < 5000; i++) {
		int err;
		while ((err = bus_produce(pr, 0, &r, NULL, &off)) == -BUS_ENODAEMON ||
		       err == -ETIMEDOUT)
			sleep_ms(1);
		cr_assert_eq(err, 0, "produce: %s", bus_strerror(err));
		high = off;
	}
	bus_producer_close(pr);
	wait_spilled("power", 1);
	/* The power goes: busd dies, the page cache loses the log's last
	 * half, the shared memory goes. */
	cr_assert_eq(busd_stop(SIGKILL), -1);
	seg_path("power", 0, path, sizeof path);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(truncate(path, st.st_size / 2), 0);
	reboot();
	snprintf(dir, sizeof dir, "%s/power/0", e.data_dir);
	cr_assert_eq(bus_seg_floor_read(dir, &floor), 0);
	cr_assert_gt(floor, high, "the floor %" PRIu64 " covers offset %" PRIu64, floor, high);
	cr_assert_eq(bus_seg_bounds(dir, &sb), 0);
	cr_assert_lt(sb.next, high, "the log lost its end: it ends at %" PRIu64 ", %" PRIu64 " was handed out",
		     sb.next, high);
	busd_start();
	pi = pinfo("power", 0);
	cr_assert_gt(pi.next_offset, high, "next offset %" PRIu64 ", %" PRIu64 " was handed out",
		     pi.next_offset, high);
	cr_assert_eq(bus_producer_open(tb, "power", NULL, &pr), 0);
	cr_assert_eq(bus_produce(pr, 0, &r, NULL, &off), 0);
	cr_assert_gt(off, high);
	bus_producer_close(pr);
	wait_spilled("power", 1);
	wait_log("are skipped", 10000);
	/* The log goes on at the new offset, in a segment of its own. */
	snprintf(path, sizeof path, "%s/%020" PRIu64 ".log", dir, pi.next_offset);
	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* After a reboot, a topic re-created over its logs (here by hand, busd
 * not running) starts its ring at the offset floor; a reader from the
 * earliest record reads the log to its end without an error; producers
 * hand out nothing until busd has made the floor durable for the new ring;
 * then the first new record comes with the skipped offsets as lost. */
/* Topic @topic (1 partition, 64 KiB ring) with @n records of 100 bytes,
 * spilled by a busd then stopped, and the shared memory gone (a reboot):
 * the log alone holds them. */
static void spill_and_reboot(const char *topic, uint64_t n)
{
	busd_start();
	mk_topic(topic, 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n(topic, 0, 0, n, 100, 0, 0), 0);
	wait_spilled(topic, 1);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	reboot();
}

/* A low-latency producer's frames carry slack up to the next cache line
 * (layout.h): busd stores them as they are, the log's recovery after a
 * reboot checks each of them, and a replay reads them whole. */
Test(busd, low_latency_frames_spill_and_replay_whole_after_a_reboot)
{
	const uint64_t n = 20000; /* 100 B values: 148-byte records, 192-byte frames */
	char path[600];
	struct stat st;

	produce_flags = BUS_PRODUCER_LOW_LATENCY;
	spill_and_reboot("lines", n);
	seg_path("lines", 0, path, sizeof path);
	cr_assert_eq(stat(path, &st), 0);
	/* Every frame ends on a line; the first starts on one (position 0
	 * of the ring), and so do all others. */
	cr_assert_eq((uint64_t)st.st_size, BUS_SEG_HDR_SIZE + n * 192, "log of %lld bytes",
		     (long long)st.st_size);
	busd_start();
	wait_log("the ring starts at", 10000);
	consume_all("lines", 1, 1, n, 0);
	cr_assert(!log_has("bad frame"), "%s", busd_log);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(busd, a_reader_crosses_the_skipped_offsets_and_producers_wait_for_the_floor)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST };
	struct bus_record r = { .value = "new", .value_len = 3 };
	struct bus_producer *pr;
	struct bus_consumer *c;
	struct bus_view v[16];
	uint64_t off, got = 0, floor = 0;
	char dir[600];
	int n;

	spill_and_reboot("gap", 100);
	snprintf(dir, sizeof dir, "%s/gap/0", e.data_dir);
	cr_assert_eq(bus_seg_floor_read(dir, &floor), 0);
	cr_assert_gt(floor, 100);
	mk_topic("gap", 1, 64 * 1024, 0, 0);
	cr_assert_eq(pinfo("gap", 0).next_offset, floor);
	cr_assert_eq(bus_consumer_open(tb, "gap", &co, &c), 0);
	while (got < 100) {
		n = bus_consumer_poll(c, v, 16, 1000000000ll);
		cr_assert(n > 0, "poll: %d %s", n, n < 0 ? bus_strerror(n) : "");
		for (int i = 0; i < n; i++, got++) {
			cr_assert_eq(v[i].offset, got);
			cr_assert_eq(v[i].lost_before, 0);
		}
	}
	cr_assert_eq(bus_consumer_poll(c, v, 16, 0), 0, "the end of the log, no error");
	cr_assert_eq(bus_producer_open(tb, "gap", NULL, &pr), 0);
	cr_assert_eq(bus_produce(pr, 0, &r, NULL, &off), -BUS_ENODAEMON,
		     "no offset before busd has the floor");
	cr_assert_eq(bus_consumer_poll(c, v, 16, 0), 0);
	busd_start();
	wait_log("are skipped", 10000);
	cr_assert_eq(bus_produce(pr, 0, &r, NULL, &off), 0);
	cr_assert_eq(off, floor);
	bus_producer_close(pr);
	n = bus_consumer_poll(c, v, 16, 1000000000ll);
	cr_assert_eq(n, 1, "poll: %d %s", n, n < 0 ? bus_strerror(n) : "");
	cr_assert_eq(v[0].offset, floor);
	cr_assert_eq(v[0].lost_before, floor - 100);
	cr_assert_eq(v[0].value_len, 3);
	bus_consumer_close(c);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* The mode bits of @path. */
static unsigned fmode(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

/* A private topic (made through a BUS_F_PRIVATE handle) stays private when
 * busd re-creates it from its logs after a reboot: rings, topic folder,
 * topic.conf and logs are the owner's only; a shared topic beside it keeps
 * its group bits. */
Test(busd, a_private_topic_stays_private_after_a_reboot)
{
	struct bus_opts po = e.opts;
	struct bus *pb;
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	char path[700];

	busd_start();
	po.flags |= BUS_F_PRIVATE;
	cr_assert_eq(bus_open(&pb, &po), 0);
	bus_topic_config_init(&cfg);
	cfg.ring_size = 64 * 1024;
	cr_assert_eq(bus_topic_create(pb, "priv", &cfg), 0);
	bus_close(pb);
	mk_topic("shared", 1, 64 * 1024, 0, 0);
	/* Asking for the same topic as a shared one is another config. */
	cr_assert_eq(bus_topic_create(tb, "priv", &cfg), -BUS_ECONFIG);
	cr_assert_eq(produce_n("priv", 0, 0, 100, 100, 0, 0), 0);
	cr_assert_eq(produce_n("shared", 0, 0, 100, 100, 0, 0), 0);
	wait_spilled("priv", 1);
	wait_spilled("shared", 1);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	reboot();
	busd_start();
	cr_assert_eq(bus_topic_describe(tb, "priv", &ti), 0);
	cr_assert(ti.config.flags & BUS_TOPIC_PRIVATE, "the re-created topic lost its flag");
	snprintf(path, sizeof path, "%s/bus.%s.priv.%u.0", e.shm_dir, e.name, ti.generation);
	cr_assert_eq(fmode(path), 0600, "%s", path);
	snprintf(path, sizeof path, "%s/priv", e.data_dir);
	cr_assert_eq(fmode(path), 0700, "%s", path);
	snprintf(path, sizeof path, "%s/priv/topic.conf", e.data_dir);
	cr_assert_eq(fmode(path), 0600, "%s", path);
	seg_path("priv", 0, path, sizeof path);
	cr_assert_eq(fmode(path), 0600, "%s", path);
	cr_assert_eq(bus_topic_describe(tb, "shared", &ti), 0);
	cr_assert_not(ti.config.flags & BUS_TOPIC_PRIVATE);
	snprintf(path, sizeof path, "%s/bus.%s.shared.%u.0", e.shm_dir, e.name, ti.generation);
	cr_assert_eq(fmode(path), 0660, "%s", path);
	seg_path("shared", 0, path, sizeof path);
	cr_assert_eq(fmode(path), 0640, "%s", path);
	consume_all("priv", 1, 1, 100, 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

static void torn_case(bool garbage)
{
	char path[600];
	struct stat st;
	int fd;

	write_conf("log_level = debug\n");
	spill_and_reboot("torn", 1000);
	seg_path("torn", 0, path, sizeof path);
	cr_assert_eq(stat(path, &st), 0);
	if (garbage) {
		uint8_t junk[16];
		memset(junk, 0xab, sizeof junk);
		fd = open(path, O_WRONLY);
		cr_assert(fd >= 0);
		cr_assert_eq(pwrite(fd, junk, sizeof junk, st.st_size - (off_t)sizeof junk), (ssize_t)sizeof junk);
		close(fd);
	} else {
		cr_assert_eq(truncate(path, st.st_size - 10), 0);
	}
	busd_start();
	wait_log("torn tail", 10000);
	/* The last, cut record is gone, no other; and offset 999 was handed
	 * out: it is not given out again (the log goes on at the floor). */
	wait_log("ends at offset 999 and the ring starts at", 10000);
	cr_assert_gt(pinfo("torn", 0).next_offset, 999);
	consume_all("torn", 1, 1, 999, 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(busd, a_cut_tail_is_truncated_to_the_last_whole_frame)
{
	torn_case(false);
}

Test(busd, a_garbage_tail_is_truncated_to_the_last_whole_frame)
{
	torn_case(true);
}

/* A power loss can keep later pages of the log and lose earlier ones: a bad
 * frame before the last index checkpoint of the active segment.  After the
 * reboot busd checks every frame of it (verify_all), cuts the log at the
 * bad one, and the offsets from there on are skipped, never handed out
 * again; a reader from the earliest gets the records before the cut, then
 * the new ones, with the gap reported, and no error. */
Test(busd, a_power_loss_that_damaged_the_middle_of_the_log_cuts_it_there)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer *c;
	struct bus_msg m[64];
	static uint8_t buf[1 << 16];
	uint64_t next = 0, got = 0, lost = 0, newer = 0, prev_seq = 0;
	char path[600];
	struct stat st;
	int64_t deadline;
	int fd;

	spill_and_reboot("mid", 1000);
	seg_path("mid", 0, path, sizeof path);
	cr_assert_eq(stat(path, &st), 0);
	fd = open(path, O_WRONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, "\xde\xad\xbe\xef", 4, st.st_size / 2), 4);
	close(fd);
	busd_start();
	wait_log("before the last checkpoint", 10000);
	wait_log("torn tail", 10000);
	wait_log("the ring starts at", 10000);
	cr_assert_gt(pinfo("mid", 0).next_offset, 999);
	cr_assert_eq(produce_n("mid", 0, 1000, 10, 100, 0, 0), 0);
	wait_spilled("mid", 1);

	cr_assert_eq(bus_consumer_open(tb, "mid", &co, &c), 0);
	deadline = tnow_ms() + 20000;
	while (newer < 10) {
		int n = bus_consumer_read(c, m, 64, buf, sizeof buf, 10 * 1000000ll);
		cr_assert(n >= 0, "read after %" PRIu64 " records: %s", got, bus_strerror(n));
		cr_assert(tnow_ms() < deadline, "only %" PRIu64 " records", got);
		for (int i = 0; i < n; i++) {
			uint32_t prod;
			uint64_t seq;
			cr_assert(check(m[i].value, m[i].value_len, &prod, &seq),
				  "record %" PRIu64 " damaged", m[i].offset);
			cr_assert_eq(m[i].offset, next + m[i].lost_before);
			cr_assert(got == 0 || seq > prev_seq, "seq %" PRIu64 " after %" PRIu64, seq,
				  prev_seq);
			if (seq < 1000)
				cr_assert_eq(seq, m[i].offset, "an old record out of its place");
			else
				newer++;
			lost += m[i].lost_before;
			prev_seq = seq;
			next = m[i].offset + 1;
			got++;
		}
	}
	/* The cut is in the middle: records on both sides of it, and the
	 * skipped offsets (from the cut to past 999) reported as lost. */
	cr_assert(got - 10 > 100 && got - 10 < 900, "%" PRIu64 " old records kept", got - 10);
	cr_assert_geq(lost, 1000 - (got - 10), "lost %" PRIu64, lost);
	bus_consumer_close(c);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* A power loss with fsync "never" can cut a sealed segment inside a frame
 * (file systems keep a prefix of what was written).  After the reboot busd
 * (verify_all) cuts it to its last whole frame and writes its seal entry
 * again: a reader from the earliest gets every record before the cut, then
 * the next segment's, with the offset in between reported lost, and no
 * error (before the fix: -BUS_ECORRUPT at the cut, for good). */
Test(busd, a_sealed_segment_cut_by_a_power_loss_reads_as_a_gap_after_the_reboot)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer *c;
	struct bus_msg m[64];
	static uint8_t buf[1 << 16];
	uint64_t next = 0, got = 0, lost = 0;
	char path[600];
	struct stat st;
	int64_t deadline;

	write_conf("segment_bytes = 16K\n");
	spill_and_reboot("sealcut", 1000);
	snprintf(path, sizeof path, "%s/sealcut/0/%020d.log", e.data_dir, 0);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_lt(st.st_size, 17 * 1024, "segment 0 is sealed at 16 KiB");
	/* Inside the last frame (100-byte values: frames of 152 bytes). */
	cr_assert_eq(truncate(path, st.st_size - 100), 0);
	busd_start();
	wait_log("sealed segment 0: torn tail", 10000);

	cr_assert_eq(bus_consumer_open(tb, "sealcut", &co, &c), 0);
	deadline = tnow_ms() + 20000;
	while (got + lost < 1000) {
		int n = bus_consumer_read(c, m, 64, buf, sizeof buf, 10 * 1000000ll);
		cr_assert(n >= 0, "read after %" PRIu64 " records: %s", got, bus_strerror(n));
		cr_assert(tnow_ms() < deadline, "only %" PRIu64 " records", got);
		for (int i = 0; i < n; i++) {
			uint32_t prod;
			uint64_t seq;
			cr_assert(check(m[i].value, m[i].value_len, &prod, &seq),
				  "record %" PRIu64 " damaged", m[i].offset);
			cr_assert_eq(m[i].offset, next + m[i].lost_before);
			cr_assert_eq(seq, m[i].offset, "record %" PRIu64 " out of its place",
				     m[i].offset);
			lost += m[i].lost_before;
			next = m[i].offset + 1;
			got++;
		}
	}
	cr_assert_eq(lost, 1, "the one record cut, lost %" PRIu64, lost);
	cr_assert_eq(got, 999);
	bus_consumer_close(c);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(busd, retention_by_bytes_deletes_the_oldest_segments_and_reports_out_of_range)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer *c;
	struct bus_view v[16];
	int64_t deadline = tnow_ms() + 60000;
	struct bus_partition_info pi;
	int n;

	write_conf("segment_bytes = 64K\nretention_check_ms = 20\n");
	busd_start();
	mk_topic("ret", 1, 64 * 1024, 0, 256 * 1024);
	cr_assert_eq(produce_n("ret", 0, 0, 4000, 1000, 0, 0), 0); /* ~4 MiB */
	wait_spilled("ret", 1);
	for (;;) {
		pi = pinfo("ret", 0);
		if (pi.disk_first_offset > 0 && pi.disk_bytes < 512 * 1024)
			break;
		cr_assert(tnow_ms() < deadline, "retention never ran: first on disk %" PRIu64 ", %" PRIu64 " bytes",
			  pi.disk_first_offset, pi.disk_bytes);
		sleep_ms(5);
	}
	cr_assert_eq(pi.next_offset, 4000);
	cr_assert_geq(pi.disk_segments, 1);
	/* Before the earliest: out of range. */
	cr_assert_eq(bus_consumer_open(tb, "ret", &co, &c), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 0), -ERANGE);
	/* Earliest is the first record left on disk. */
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_EARLIEST, 0), 0);
	n = bus_consumer_poll(c, v, 1, 1000000000ll);
	cr_assert_eq(n, 1);
	cr_assert_geq(v[0].offset, pi.disk_first_offset);
	cr_assert_lt(v[0].offset, pi.first_offset, "read from disk");
	bus_consumer_close(c);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(busd, a_reader_overtaken_by_retention_is_told_or_reset)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer *c, *cr;
	struct bus_view v[4];
	int64_t deadline = tnow_ms() + 60000;
	uint64_t got = 0;
	int n;

	write_conf("segment_bytes = 16K\nretention_check_ms = 20\n");
	busd_start();
	mk_topic("ret", 1, 64 * 1024, 0, 256 * 1024);
	cr_assert_eq(produce_n("ret", 0, 0, 300, 1000, 0, 0), 0);
	wait_spilled("ret", 1);
	cr_assert_eq(bus_consumer_open(tb, "ret", &co, &c), 0);
	co.flags = BUS_CONSUMER_RESET_EARLIEST;
	cr_assert_eq(bus_consumer_open(tb, "ret", &co, &cr), 0);
	{
		uint64_t first;
		cr_assert_eq(bus_consumer_position(c, 0, &first), 0);
		cr_assert_lt(first, pinfo("ret", 0).first_offset, "starts on disk");
	}
	/* Push the retention far past both readers. */
	cr_assert_eq(produce_n("ret", 0, 300, 3000, 1000, 0, 0), 0);
	wait_spilled("ret", 1);
	while (pinfo("ret", 0).disk_first_offset < 2000) {
		cr_assert(tnow_ms() < deadline, "retention never ran");
		sleep_ms(5);
	}
	/* Without a reset policy the reader is told, once it gets there. */
	for (;;) {
		n = bus_consumer_poll(c, v, 4, 0);
		if (n == -ERANGE)
			break;
		cr_assert(n >= 0, "poll: %s", bus_strerror(n));
		cr_assert(tnow_ms() < deadline, "never out of range");
	}
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), -ERANGE, "stays out of range until sought");
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_EARLIEST, 0), 0);
	cr_assert_gt(bus_consumer_poll(c, v, 4, 1000000000ll), 0);
	/* With RESET_EARLIEST it goes on, reporting the records it skipped. */
	for (;;) {
		n = bus_consumer_poll(cr, v, 4, 0);
		cr_assert(n >= 0, "poll: %s", bus_strerror(n));
		for (int i = 0; i < n; i++)
			got += v[i].lost_before;
		if (got)
			break;
		cr_assert(tnow_ms() < deadline, "never reset");
	}
	cr_assert_geq(v[0].offset, 2000 - 400);
	bus_consumer_close(c);
	bus_consumer_close(cr);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(busd, retention_by_time_keeps_the_active_segment)
{
	int64_t deadline = tnow_ms() + 60000;
	int64_t old = (int64_t)time(NULL) * 1000000000ll - 3600 * 1000000000ll;
	struct bus_partition_info pi;

	write_conf("segment_bytes = 64K\nretention_check_ms = 20\n");
	busd_start();
	mk_topic("old", 1, 64 * 1024, 1000, 0); /* keep 1 s */
	cr_assert_eq(produce_n("old", 0, 0, 1000, 1000, old, 1000), 0); /* an hour old */
	wait_spilled("old", 1);
	for (;;) {
		pi = pinfo("old", 0);
		if (pi.disk_segments == 1)
			break;
		cr_assert(tnow_ms() < deadline, "%u segments left", pi.disk_segments);
		sleep_ms(5);
	}
	cr_assert_gt(pi.disk_first_offset, 0);
	cr_assert_eq(pi.next_offset, 1000);
	cr_assert_eq(pi.disk_next_offset, 1000, "the active segment stays");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(busd, seeks_by_time_and_offset_use_the_logs)
{
	const int64_t t0 = 1700000000000000000ll, step = 1000000; /* 1 ms apart */
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_LATEST };
	struct bus_consumer *c;
	struct bus_view v[8];
	uint32_t prod;
	uint64_t seq;

	busd_start();
	mk_topic("ts", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("ts", 0, 0, 20000, 100, t0, step), 0);
	wait_spilled("ts", 1);
	cr_assert_gt(pinfo("ts", 0).first_offset, 5000, "the ring holds only the end");
	cr_assert_eq(bus_consumer_open(tb, "ts", &co, &c), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_TIME, t0 + 1234 * step - step / 2), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 8, 1000000000ll), 8);
	cr_assert_eq(v[0].offset, 1234);
	cr_assert_eq(v[0].timestamp, t0 + 1234 * step);
	cr_assert(check(v[7].value, v[7].value_len, &prod, &seq));
	cr_assert_eq(seq, 1241);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 777), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 1000000000ll), 1);
	cr_assert_eq(v[0].offset, 777);
	/* Past the disk part, the ring answers. */
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_TIME, t0 + 19990 * step), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 1000000000ll), 1);
	cr_assert_eq(v[0].offset, 19990);
	bus_consumer_close(c);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

static int full_child(void *arg)
{
	(void)arg;
	return produce_n("full", 0, 0, 8000, 1000, 0, 0);
}

/* Mount a 2 MiB tmpfs at @mnt (the data dir's "small", which teardown
 * detaches if the test fails) and make it the data dir of busd and of
 * this process (skips without root or tmpfs). */
static void small_disk_mount(char *mnt, size_t len)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to mount a small tmpfs");
	snprintf(mnt, len, "%s/small", e.data_dir);
	cr_assert_eq(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") != 0)
		cr_skip_test("cannot mount tmpfs here: %s", strerror(errno));
	bus_close(tb);
	e.opts.data_dir = mnt;
	setenv("BUS_DATA_DIR", mnt, 1);
	tb = tenv_bus(&e);
}

/* Undo small_disk_mount(): the test's own data dir again. */
static void small_disk_unmount(const char *mnt)
{
	bus_close(tb);
	tb = NULL;
	umount2(mnt, MNT_DETACH);
	e.opts.data_dir = e.data_dir;
	setenv("BUS_DATA_DIR", e.data_dir, 1);
	tb = tenv_bus(&e);
}

Test(busd, a_full_disk_holds_producers_back_and_spilling_resumes)
{
	char mnt[300];
	int64_t deadline = tnow_ms() + 60000;
	pid_t pid;
	uint64_t spilled;

	small_disk_mount(mnt, sizeof mnt);
	busd_start();
	mk_topic("full", 1, 256 * 1024, 0, 0);
	pid = tfork(full_child, NULL); /* 8 MiB into 2 MiB */
	wait_log("No space left on device", 30000);
	/* The spill cursor stops; producers are held back. */
	spilled = pinfo("full", 0).spilled_offset;
	cr_assert_lt(spilled, 8000);
	cr_assert_leq(pinfo("full", 0).next_offset - spilled, 256 * 1024 / 1000 + 1);
	/* Space returns: spilling resumes by itself. */
	cr_assert_eq(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=64m"), 0, "remount: %s", strerror(errno));
	cr_assert_eq(twait(pid, 60000), 0);
	wait_spilled("full", 1);
	cr_assert(tnow_ms() < deadline);
	consume_all("full", 1, 1, 8000, 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	small_disk_unmount(mnt);
}

static int claim_and_die(void *arg)
{
	struct bus_producer *p;
	struct bus_claim cl;

	(void)arg;
	if (bus_producer_open(tb, "stuck", NULL, &p) || bus_producer_claim(p, 0, NULL, 0, 100, &cl))
		return 1;
	memset(cl.value, 0x55, 50);
	raise(SIGKILL); /* between claim and commit */
	return 2;
}

Test(busd, busd_repairs_a_claim_left_by_a_killed_producer)
{
	char dir[512];
	struct bus_seg_reader *rd;
	struct bus_seg_record rec;
	int st;
	pid_t pid;

	busd_start();
	mk_topic("stuck", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("stuck", 0, 0, 5, 100, 0, 0), 0);
	pid = tfork(claim_and_die, NULL);
	cr_assert_eq(twait_status(pid, 10000, &st), 0);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	cr_assert_eq(produce_n("stuck", 0, 6, 5, 100, 0, 0), 0);
	/* No consumer runs: busd alone gets past the dead claim. */
	wait_spilled("stuck", 1);
	cr_assert_eq(pinfo("stuck", 0).repaired, 1);
	cr_assert_eq(pinfo("stuck", 0).next_offset, 11);
	snprintf(dir, sizeof dir, "%s/stuck/0", e.data_dir);
	cr_assert_eq(bus_seg_reader_open(&rd, dir), 0);
	for (uint64_t off = 0; off < 11; off++) {
		cr_assert_eq(bus_seg_next(rd, &rec), 1);
		cr_assert_eq(rec.offset, off);
		cr_assert_eq(rec.type, off == 5 ? BUS_FRAME_LOST : BUS_FRAME_DATA, "offset %" PRIu64, off);
	}
	bus_seg_reader_close(rd);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(busd, a_frame_busd_cannot_take_stops_its_partition_and_producers_are_told)
{
	struct bus_producer_opts po = { .block_timeout_ns = 10 * 1000000000ll };
	struct bus_producer *p;
	struct bus_claim cl;
	struct bus_seg_reader *rd;
	struct bus_seg_record rec;
	char dir[512], v[100] = { 0 };
	struct bus_record r = { .value = v, .value_len = sizeof v };
	int err = 0, n;

	busd_start();
	mk_topic("bad", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("bad", 0, 0, 5, 100, 0, 0), 0);
	wait_spilled("bad", 1);
	/* A hostile (or broken) writer of the shared ring: sizes that do not
	 * add up to the frame's length, published as if whole. */
	cr_assert_eq(bus_producer_open(tb, "bad", &po, &p), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 100, &cl), 0);
	((struct bus_frame *)cl.priv_frame)->value_len = 5000;
	cr_assert_eq(bus_producer_commit(p, &cl, 0), 0);
	wait_log("spilling of this partition stops", 10000);
	/* busd goes on running; producers fill the ring, then are told
	 * instead of waiting forever (64 KiB ring, 152-byte frames). */
	for (n = 0; n < 2000 && (err = bus_produce(p, 0, &r, NULL, NULL)) == 0; n++)
		;
	cr_assert_eq(err, -BUS_ECORRUPT, "after %d records: %s", n, bus_strerror(err));
	cr_assert(n > 300 && n < 500, "the ring took %d records", n);
	bus_producer_close(p);
	/* What came before the bad frame is on disk, whole; nothing after. */
	snprintf(dir, sizeof dir, "%s/bad/0", e.data_dir);
	cr_assert_eq(bus_seg_reader_open(&rd, dir), 0);
	for (uint64_t off = 0; off < 5; off++) {
		cr_assert_eq(bus_seg_next(rd, &rec), 1);
		cr_assert_eq(rec.offset, off);
		cr_assert_eq(rec.type, BUS_FRAME_DATA);
	}
	cr_assert_eq(bus_seg_next(rd, &rec), 0);
	bus_seg_reader_close(rd);
	cr_assert(kill(busd, 0) == 0, "busd still runs");
	busd_stop(SIGTERM);
	cr_assert(log_has("stopped after an error"), "the stop names the partition left behind");
}

Test(busd, a_second_daemon_refuses_and_names_the_first)
{
	char pidstr[32];
	int st;
	pid_t second;

	busd_start();
	second = busd_spawn();
	cr_assert_eq(twait_status(second, 20000, &st), 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "second busd: status %d", st);
	snprintf(pidstr, sizeof pidstr, "%d", (int)busd);
	cr_assert(log_has(pidstr), "the refusal names pid %s", pidstr);
	cr_assert_eq(bus_daemon_pid(tb), busd, "the first one runs on");
	cr_assert_eq(busd_stop(SIGTERM), 0);
	cr_assert_eq(bus_daemon_pid(tb), 0);
}

Test(busd, sigterm_spills_everything_committed_first)
{
	char dir[512];
	struct bus_seg_bounds sb;

	busd_start();
	mk_topic("term", 2, 1 << 20, 0, 0);
	cr_assert_eq(produce_n("term", 0, 0, 6000, 200, 0, 0), 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	for (uint32_t p = 0; p < 2; p++) {
		snprintf(dir, sizeof dir, "%s/term/%u", e.data_dir, p);
		cr_assert_eq(bus_seg_bounds(dir, &sb), 0);
		cr_assert_eq(sb.next, pinfo("term", p).next_offset, "partition %u", p);
	}
}

Test(busd, sighup_reloads_the_config_and_keeps_it_when_bad)
{
	write_conf("log_level = info\n");
	busd_start();
	write_conf("log_level = debug\nretention_check_ms = 50\n");
	kill(busd, SIGHUP);
	wait_log("reloaded", 10000);
	write_conf("no_such_key = 1\n");
	kill(busd, SIGHUP);
	wait_log("no_such_key", 10000);
	cr_assert_eq(bus_daemon_pid(tb), busd, "a bad config does not stop it");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* preallocate: the active segment's blocks reserved ahead of the writes
 * (16M by default), none with 0; a value out of range is refused. */
Test(busd, preallocate_reserves_blocks_ahead_or_none)
{
	const char *conf[2] = { "preallocate = 0\n", "preallocate = 4M\n" };
	char path[600];
	struct stat st;
	int status;
	pid_t pid;

	for (int i = 0; i < 2; i++) {
		write_conf(conf[i]);
		busd_start();
		wait_log(i ? "preallocate 4194304" : "preallocate 0", 10000);
		mk_topic(i ? "pa1" : "pa0", 1, 64 * 1024, 0, 0);
		cr_assert_eq(produce_n(i ? "pa1" : "pa0", 0, 0, 200, 100, 0, 0), 0);
		wait_spilled(i ? "pa1" : "pa0", 1);
		seg_path(i ? "pa1" : "pa0", 0, path, sizeof path);
		cr_assert_eq(stat(path, &st), 0);
		if (i)
			cr_assert((uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size + (2 << 20) ||
					  (uint64_t)st.st_blocks == 0,
				  "4M: %lld bytes on disk for %lld", (long long)st.st_blocks * 512,
				  (long long)st.st_size);
		else
			cr_assert((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size + 65536,
				  "0: %lld bytes on disk for %lld", (long long)st.st_blocks * 512,
				  (long long)st.st_size);
		cr_assert_eq(busd_stop(SIGTERM), 0);
		/* Closed: the reserve is given back. */
		cr_assert_eq(stat(path, &st), 0);
		cr_assert((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size + 65536,
			  "closed: %lld bytes on disk for %lld", (long long)st.st_blocks * 512,
			  (long long)st.st_size);
	}
	write_conf("preallocate = 2G\n");
	pid = busd_spawn();
	cr_assert_eq(twait_status(pid, 20000, &status), 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);
	cr_assert(log_has("preallocate"), "the error names the key");
}

Test(busd, a_bad_config_is_a_usage_error)
{
	int st;
	pid_t pid;

	write_conf("fsync = sometimes\n");
	pid = busd_spawn();
	cr_assert_eq(twait_status(pid, 20000, &st), 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
	cr_assert(log_has(":1"), "the error names the line");
	/* A config path that is no regular file: said in words. */
	cr_assert_eq(unlink(busd_conf), 0);
	cr_assert_eq(mkdir(busd_conf, 0700), 0);
	pid = busd_spawn();
	cr_assert_eq(twait_status(pid, 20000, &st), 0);
	rmdir(busd_conf);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "status %d", st);
	cr_assert(log_has("not a regular file"), "the error says what is wrong with the path");
}

Test(busd, a_damaged_record_in_the_log_is_reported_not_skipped)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST,
					.wait = BUS_WAIT_SLEEP };
	struct bus_consumer *c;
	struct bus_view v[64];
	char path[600];
	struct stat st;
	int64_t deadline;
	uint64_t got = 0;
	int fd, n;

	busd_start();
	mk_topic("bad", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("bad", 0, 0, 2000, 100, 0, 0), 0);
	wait_spilled("bad", 1);
	/* Flip bytes in the middle of the active segment, under busd. */
	seg_path("bad", 0, path, sizeof path);
	cr_assert_eq(stat(path, &st), 0);
	fd = open(path, O_WRONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, "\xde\xad\xbe\xef", 4, st.st_size / 2), 4);
	close(fd);
	cr_assert_eq(bus_consumer_open(tb, "bad", &co, &c), 0);
	deadline = tnow_ms() + 20000;
	for (;;) {
		n = bus_consumer_poll(c, v, 64, 10 * 1000000ll);
		if (n < 0)
			break;
		got += (uint64_t)n;
		cr_assert(tnow_ms() < deadline, "no error after %" PRIu64 " records", got);
	}
	cr_assert_eq(n, -BUS_ECORRUPT, "poll: %s", bus_strerror(n));
	cr_assert_lt(got, 2000);
	bus_consumer_close(c);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* ------------------------------------------- hostile input, config */

/* The whole file @path, mapped shared and writable (munmap with *len). */
static void *map_whole(const char *path, size_t *len)
{
	struct stat st;
	void *m;
	int fd;

	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(fstat(fd, &st), 0);
	m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	cr_assert(m != MAP_FAILED);
	*len = (size_t)st.st_size;
	return m;
}

/* The test bus's control region, mapped (munmap with its size). */
static struct bus_ctl_hdr *ctl_map(size_t *len)
{
	char path[600];

	snprintf(path, sizeof path, "%s/bus.%s.ctl", e.shm_dir, e.name);
	return map_whole(path, len);
}

static struct bus_topic_slot *ctl_slot(struct bus_ctl_hdr *h, uint32_t i)
{
	return (struct bus_topic_slot *)(void *)((char *)h + h->topics_off +
						 (size_t)i * h->topic_slot_size);
}

/* Wait (deadline 10 s) until busd has taken @topic: its producers then get
 * a spiller instead of -BUS_ENODAEMON.  Returns the last error. */
static int wait_taken(const char *topic)
{
	struct bus_producer_opts po = { .block_timeout_ns = 50 * 1000000ll };
	struct bus_producer *p;
	struct bus_record r = { .value = "x", .value_len = 1 };
	int64_t deadline = tnow_ms() + 10000;
	int err = bus_producer_open(tb, topic, &po, &p);

	if (err)
		return err;
	while (((err = bus_produce(p, 0, &r, NULL, NULL)) == -BUS_ENODAEMON || err == -ETIMEDOUT) &&
	       tnow_ms() < deadline)
		sleep_ms(5);
	bus_producer_close(p);
	return err;
}

/* One topic slot of the shared table made hostile (a config no topic can
 * have) must not hide the other topics from busd: it names the bad one and
 * spills the rest, including topics in slots after it. */
Test(busd, a_corrupt_topic_slot_does_not_hide_the_topics_after_it)
{
	char name[8][16], want[64];
	int32_t slot[8];
	int low = 0, err;
	size_t clen;
	struct bus_ctl_hdr *h = ctl_map(&clen);

	for (int i = 0; i < 8; i++) {
		snprintf(name[i], sizeof name[i], "hs%d", i);
		mk_topic(name[i], 1, 64 * 1024, 0, 0);
		slot[i] = -1;
		for (uint32_t s = 0; s < BUS_TOPICS_MAX; s++)
			if (strcmp(ctl_slot(h, s)->name, name[i]) == 0)
				slot[i] = (int32_t)s;
		cr_assert(slot[i] >= 0);
		if (slot[i] < slot[low])
			low = i;
	}
	/* The lowest slot: every other topic lies after it in the table. */
	ctl_slot(h, (uint32_t)slot[low])->cfg.ring_size = 3;
	munmap(h, clen);
	busd_start();
	for (int i = 0; i < 8; i++) {
		if (i == low)
			continue;
		cr_assert_eq(err = wait_taken(name[i]), 0, "topic %s (slot %d, after the bad slot %d): %s",
			     name[i], slot[i], slot[low], bus_strerror(err));
	}
	for (int i = 0; i < 8; i++)
		if (i != low)
			wait_spilled(name[i], 1);
	snprintf(want, sizeof want, "slot %d", slot[low]);
	wait_log(want, 10000);
	cr_assert(kill(busd, 0) == 0, "busd still runs");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* The path of the ring file of partition 0 of @topic. */
static void ring_path(const char *topic, char *path, size_t len)
{
	char cmd[700];
	FILE *f;

	snprintf(cmd, sizeof cmd, "ls %s/bus.%s.%s.*.0", e.shm_dir, e.name, topic);
	f = popen(cmd, "r");
	cr_assert(f);
	cr_assert(fgets(path, (int)len, f), "no ring file for %s", topic);
	pclose(f);
	path[strcspn(path, "\n")] = 0;
}

/* The ring file of partition 0 of @topic (a @size-byte ring), mapped
 * (munmap with *len); its header follows the ring. */
static void *ring_map(const char *topic, size_t *len)
{
	char path[600];

	ring_path(topic, path, sizeof path);
	return map_whole(path, len);
}

/* A ring whose header holds a spill cursor no spiller wrote (unaligned,
 * past the tail): busd names the partition in an ERROR and leaves it,
 * instead of reading frames at a position producers never wrote (across
 * the end of the ring, or a lap ahead of the producers, whose records it
 * would then never find while they overwrite them), and serves the other
 * topics.  Its producers are told (-BUS_ECORRUPT), not held. */
Test(busd, a_hostile_spill_cursor_stops_its_partition_with_an_error)
{
	static const uint64_t bad_pos[2] = { 64 * 1024 - 4, 3 * 64 * 1024 };
	struct bus_producer_opts po = { .block_timeout_ns = 2000 * 1000000ll };
	struct bus_record r = { .value = "x", .value_len = 1 };
	struct bus_producer *p;
	char name[2][16];
	int err = 0;

	for (int i = 0; i < 2; i++) {
		struct bus_ring_hdr *h;
		size_t len;
		void *m;

		snprintf(name[i], sizeof name[i], "hostile%d", i);
		mk_topic(name[i], 1, 64 * 1024, 0, 0);
		m = ring_map(name[i], &len);
		h = (struct bus_ring_hdr *)(void *)((char *)m + 64 * 1024);
		atomic_store(&h->spill_pos, bad_pos[i]);
		munmap(m, len);
	}
	mk_topic("fine", 1, 64 * 1024, 0, 0);
	busd_start();
	cr_assert_eq(produce_n("fine", 0, 0, 2000, 100, 0, 0), 0);
	wait_spilled("fine", 1);
	for (int i = 0; i < 2; i++) {
		char want[64];

		snprintf(want, sizeof want, "topic '%s' partition 0: its ring", name[i]);
		wait_log(want, 10000);
		cr_assert_eq(bus_producer_open(tb, name[i], &po, &p), 0);
		for (int n = 0; n < 2000 && (err = bus_produce(p, 0, &r, NULL, NULL)) == 0; n++)
			;
		cr_assert_eq(err, -BUS_ECORRUPT, "%s: %s", name[i], bus_strerror(err));
		bus_producer_close(p);
	}
	cr_assert(kill(busd, 0) == 0, "busd still runs");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* CPU seconds (user and system) that process @pid has used so far. */
static double cpu_secs(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, stt;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	cr_assert(f, "%s: %s", path, strerror(errno));
	cr_assert(fgets(buf, sizeof buf, f));
	fclose(f);
	p = strrchr(buf, ')');
	cr_assert(p);
	cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt),
		     2);
	return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

/* The log of @topic's partition 0 holds records 0..@n-1, whole, and no
 * more. */
static void expect_log_holds(const char *topic, uint64_t n)
{
	struct bus_seg_reader *rd;
	struct bus_seg_record rec;
	char dir[512];

	snprintf(dir, sizeof dir, "%s/%s/0", e.data_dir, topic);
	cr_assert_eq(bus_seg_reader_open(&rd, dir), 0, "%s: no log", dir);
	for (uint64_t off = 0; off < n; off++) {
		int rc = bus_seg_next(rd, &rec);
		cr_assert_eq(rc, 1, "%s: offset %" PRIu64 ": %d (%s)", dir, off, rc,
			     bus_strerror(rc));
		cr_assert_eq(rec.offset, off);
		cr_assert_eq(rec.type, BUS_FRAME_DATA);
	}
	cr_assert_eq(bus_seg_next(rd, &rec), 0, "%s: more than %" PRIu64 " records", dir, n);
	bus_seg_reader_close(rd);
}

/* A ring file truncated (by hand, or a hostile process) under busd's
 * mapping killed busd with SIGBUS, and every other topic with it.  Now
 * busd logs one ERROR naming the partition and the file, stops that
 * partition without writing anything of the lost pages to its log, and
 * goes on spilling the others, without spinning.  A producer in another
 * process is told (-BUS_ECORRUPT). */
Test(busd, a_ring_truncated_under_busd_stops_its_partition_with_one_error)
{
	struct bus_record r = { .value = "x", .value_len = 1 };
	struct bus_producer *p;
	char path[600], want[800];
	double cpu;
	int err;

	busd_start();
	mk_topic("cut", 1, 64 * 1024, 0, 0);
	mk_topic("fine", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("cut", 0, 0, 100, 100, 0, 0), 0);
	cr_assert_eq(produce_n("fine", 0, 0, 100, 100, 0, 0), 0);
	wait_spilled("cut", 1);
	wait_spilled("fine", 1);
	ring_path("cut", path, sizeof path);
	cr_assert_eq(truncate(path, 0), 0, "truncate %s: %s", path, strerror(errno));
	snprintf(want, sizeof want,
		 "ERROR topic 'cut' partition 0: its ring file %s was truncated under busd's "
		 "mapping",
		 path);
	wait_log(want, 10000);
	/* The other topic is served: 2000 records fill its ring several
	 * times over, which only a spiller lets through. */
	cr_assert_eq(produce_n("fine", 0, 100, 2000, 100, 0, 0), 0);
	wait_spilled("fine", 1);
	cr_assert_eq(bus_producer_open(tb, "cut", NULL, &p), 0);
	err = bus_produce(p, 0, &r, NULL, NULL);
	cr_expect_eq(err, -BUS_ECORRUPT, "produce on the cut ring: %d (%s)", err, bus_strerror(err));
	bus_producer_close(p);
	cpu = cpu_secs(busd);
	sleep_ms(2000);
	cpu = cpu_secs(busd) - cpu;
	cr_expect(cpu < 0.5, "busd used %.2f s of CPU in 2 s after the truncation", cpu);
	cr_assert(kill(busd, 0) == 0, "busd still runs");
	cr_expect_eq(log_count("ERROR topic 'cut'"), 1, "one ERROR for the partition (see %s)",
		     busd_log);
	expect_log_holds("cut", 100);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* Descriptors of process @pid open on files under @prefix. */
static int fds_under(pid_t pid, const char *prefix)
{
	char path[64], link[PATH_MAX + 1], fd_path[64 + sizeof(((struct dirent *)0)->d_name)];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	d = opendir(path);
	cr_assert(d, "%s: %s", path, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		ssize_t k;

		if (de->d_name[0] == '.')
			continue;
		snprintf(fd_path, sizeof fd_path, "%s/%s", path, de->d_name);
		k = readlink(fd_path, link, sizeof link - 1);
		if (k <= 0)
			continue; /* closed meanwhile */
		link[k] = 0;
		if (strncmp(link, prefix, strlen(prefix)) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* busd kept the writer of a partition whose ring was truncated under it
 * open until it exited (the writer had no call that dropped the frames it
 * held, which may read as zeros): the log's descriptors stayed open, and
 * the dir's lock kept every other writer out (-EBUSY).  Now busd abandons
 * the writer (bus_seg_writer_abandon()): nothing of it written out, its
 * files closed, the log whole up to what was spilled before, and free for
 * another writer. */
Test(busd, a_ring_truncated_under_busd_releases_its_log)
{
	struct bus_seg_writer *w = NULL;
	char path[600], want[800], dir[512];
	int err;

	busd_start();
	mk_topic("cut", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("cut", 0, 0, 100, 100, 0, 0), 0);
	wait_spilled("cut", 1);
	snprintf(dir, sizeof dir, "%s/cut/0", e.data_dir);
	cr_assert_gt(fds_under(busd, dir), 0, "busd spills into %s", dir);
	ring_path("cut", path, sizeof(path));
	cr_assert_eq(truncate(path, 0), 0, "truncate %s: %s", path, strerror(errno));
	snprintf(want, sizeof want,
		 "ERROR topic 'cut' partition 0: its ring file %s was truncated under busd's "
		 "mapping",
		 path);
	wait_log(want, 10000); /* logged once the writer is let go */
	cr_expect_eq(fds_under(busd, dir), 0, "busd still holds files in %s", dir);
	err = bus_seg_writer_open(&w, dir, NULL);
	cr_assert_eq(err, 0, "a writer on the lost partition's log: %d (%s)", err,
		     bus_strerror(err));
	cr_assert_eq(bus_seg_writer_next_offset(w), 100u);
	cr_assert_eq(bus_seg_writer_close(w), 0);
	expect_log_holds("cut", 100);
	cr_assert(kill(busd, 0) == 0, "busd still runs");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* busd retries a topic.conf it could not write at every scan (100 ms),
 * and the retry made <data>/<topic> again (mkdir -p) when the folder was
 * gone.  bus_topic_delete() renames that folder away before busd notices
 * the deletion; a retry in between brought back a stray folder with a
 * topic.conf in it, which busd did not retire (not the folder it had
 * noted) and from which its next start re-created the deleted topic.
 * Here the folder goes by hand while the topic lives (the deletion's
 * rename, without the deletion), deterministically: busd must not make
 * it again, and says why once; the deletion then leaves nothing behind. */
Test(busd, a_topic_conf_retried_after_its_folder_went_does_not_make_the_folder_again)
{
	char tdir[512], conf[600], moved[512], want[700];
	struct bus_topic_info ti;
	int64_t deadline;
	int err;

	busd_start();
	snprintf(tdir, sizeof tdir, "%s/gone", e.data_dir);
	snprintf(conf, sizeof conf, "%s/topic.conf", tdir);
	snprintf(moved, sizeof moved, "%s/.moved", e.data_dir);
	/* topic.conf cannot be written: a folder holds its name. */
	cr_assert_eq(mkdir(tdir, 0750), 0);
	cr_assert_eq(mkdir(conf, 0750), 0);
	mk_topic("gone", 1, 64 * 1024, 0, 0);
	wait_log("topic 'gone': cannot write", 10000);
	cr_assert_eq(rename(tdir, moved), 0);
	snprintf(want, sizeof want, "topic 'gone': its folder %s is gone", tdir);
	deadline = tnow_ms() + 10000;
	while (!log_has(want) && access(tdir, F_OK) != 0) {
		cr_assert_lt(tnow_ms(), deadline, "busd neither retried nor said why (see %s)",
			     busd_log);
		sleep_ms(5);
	}
	cr_assert_neq(access(tdir, F_OK), 0, "busd made %s again (see %s)", tdir, busd_log);
	cr_assert_eq(log_count(want), 1, "said once (see %s)", busd_log);

	cr_assert_eq(bus_topic_delete(tb, "gone"), 0);
	wait_log("topic 'gone' was deleted", 10000);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	busd_start(); /* returns once busd published itself: after its recovery */
	err = bus_topic_describe(tb, "gone", &ti);
	cr_assert_eq(err, -ENOENT, "the deleted topic is back after a restart: %d", err);
	cr_assert_neq(access(tdir, F_OK), 0, "%s", tdir);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* The control region truncated under busd: busd died of SIGBUS (its
 * heartbeat writes there).  Read as zeros, the table would say every
 * topic was deleted, and busd would remove their logs.  Now busd logs one
 * ERROR naming the file, spills what the rings hold, keeps every log, and
 * exits 1. */
Test(busd, a_control_region_truncated_under_busd_stops_it_and_keeps_the_logs)
{
	char path[600];
	int st;

	busd_start();
	mk_topic("keep", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("keep", 0, 0, 100, 100, 0, 0), 0);
	wait_spilled("keep", 1);
	snprintf(path, sizeof path, "%s/bus.%s.ctl", e.shm_dir, e.name);
	cr_assert_eq(truncate(path, 0), 0, "truncate %s: %s", path, strerror(errno));
	st = busd_wait_exit(20000);
	cr_expect_eq(st, 1, "busd's exit status %d (see %s)", st, busd_log);
	cr_expect_eq(log_count("was truncated under busd's mapping"), 1, "one ERROR (see %s)",
		     busd_log);
	cr_expect(log_has(path), "the ERROR names %s", path);
	cr_expect(!log_has("logs are removed") && !log_has("removed "), "busd removed logs");
	expect_log_holds("keep", 100);
}

/* Start busd on the config written and expect it to exit 2 (a usage
 * error) without ever starting; @what names the config in messages.
 * Either it exits, or it started (then the teardown kills it). */
static void expect_busd_exit(const char *what, int status)
{
	int64_t deadline = tnow_ms() + 20000;
	int st = 0;

	busd = busd_spawn();
	while (waitpid(busd, &st, WNOHANG) == 0) {
		cr_assert(bus_daemon_pid(tb) != busd, "busd started with %s (see %s)", what,
			  busd_log);
		cr_assert(tnow_ms() < deadline, "busd neither started nor exited in 20 s");
		sleep_ms(2);
	}
	busd = -1;
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == status, "status %d, not exit %d (see %s)",
		  st, status, busd_log);
}

static void expect_busd_usage_exit(const char *what)
{
	expect_busd_exit(what, 2);
}

/* An fsync interval whose nanoseconds do not fit in 64 bits is refused at
 * start (it wrapped around to a sync every second or so, and overflowed a
 * signed product in the idle sync), as every other value out of range. */
Test(busd, an_fsync_interval_too_long_to_count_is_a_usage_error)
{
	write_conf("fsync = 213504d\n");
	expect_busd_usage_exit("fsync = 213504d");
	cr_assert(log_has("fsync"), "the error names the key");
}

/* A key given twice is refused, naming both lines: the last one used to
 * win unseen, so that a retention or fsync line pasted below the original
 * silently changed what busd kept or synced.  On SIGHUP the same file is
 * refused and the config in force kept. */
Test(busd, a_key_given_twice_in_the_config_is_a_usage_error)
{
	write_conf("fsync = always\nlog_level = info\n\n  fsync = never # again\n");
	expect_busd_usage_exit("fsync given twice");
	cr_assert(log_has(":4: fsync is set twice (first on line 1)"),
		  "the error names the key and both lines (see %s)", busd_log);
	write_conf("fsync = always\n");
	busd_start();
	write_conf("fsync = always\nsegment_bytes = 1M\nsegment_bytes = 2M\n");
	cr_assert_eq(kill(busd, SIGHUP), 0);
	wait_log("segment_bytes is set twice", 20000);
	cr_assert(log_has(":3: segment_bytes is set twice (first on line 2)"),
		  "the reload names the key and both lines (see %s)", busd_log);
	cr_assert(log_has("keeping the config in force"), "the reload says it kept the config");
	cr_assert_eq(bus_daemon_pid(tb), busd, "a bad reload does not stop it");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* SIGTERM while a partition's disk is full: the drain gives up after its
 * stated bound (10 s), says what stays in the ring, and exits 0; a busd
 * started once space is back spills it all, nothing lost or repeated. */
Test(busd, sigterm_on_a_full_disk_stops_within_the_drain_bound)
{
	char mnt[300];
	int64_t t0;
	pid_t pid;
	int rc;

	small_disk_mount(mnt, sizeof mnt);
	busd_start();
	mk_topic("full", 1, 256 * 1024, 0, 0);
	pid = tfork(full_child, NULL); /* 8 MiB into 2 MiB */
	wait_log("No space left on device", 30000);
	t0 = tnow_ms();
	rc = busd_stop(SIGTERM);
	cr_assert_lt(tnow_ms() - t0, 15000, "the stop took %lld ms", (long long)(tnow_ms() - t0));
	cr_assert_eq(rc, 0);
	cr_assert(log_has("stay in the ring"), "the stop says what it left");
	cr_assert_eq(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=64m"), 0, "remount: %s", strerror(errno));
	busd_start();
	cr_assert_eq(twait(pid, 60000), 0);
	wait_spilled("full", 1);
	consume_all("full", 1, 1, 8000, 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	small_disk_unmount(mnt);
}

/* Many topics: busd holds five descriptors per partition (the log dir, the
 * active segment, its two indexes, the offset floor), so a soft limit of
 * descriptors as low as the usual 1024 is reached by 200 partitions, well
 * within what a bus allows (256 topics of up to 256 partitions).  busd
 * raises its soft limit to the hard one; every partition is spilled. */
Test(busd, many_partitions_are_spilled_past_a_low_soft_descriptor_limit)
{
	enum { NT = 64 };
	struct rlimit old, low;
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_record r = { .value = "x", .value_len = 1 };
	bool done[NT] = { false };
	char name[16];
	int64_t deadline;
	unsigned left = NT;

	for (int i = 0; i < NT; i++) {
		snprintf(name, sizeof name, "many%d", i);
		mk_topic(name, 1, 64 * 1024, 0, 0);
	}
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 1024)
		cr_skip_test("the hard limit of descriptors is %llu", (unsigned long long)old.rlim_max);
	low = old;
	low.rlim_cur = 128; /* busd inherits it: 64 partitions need ~330 */
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	busd_start();
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	deadline = tnow_ms() + 20000;
	while (left) {
		for (int i = 0; i < NT; i++) {
			struct bus_producer *p;
			int err;

			if (done[i])
				continue;
			snprintf(name, sizeof name, "many%d", i);
			cr_assert_eq(bus_producer_open(tb, name, &po, &p), 0);
			err = bus_produce(p, 0, &r, NULL, NULL);
			bus_producer_close(p);
			cr_assert(err == 0 || err == -EAGAIN, "%s: %s", name, bus_strerror(err));
			if (err == 0) {
				done[i] = true;
				left--;
			}
		}
		cr_assert(tnow_ms() < deadline, "%u of %d topics have no spiller after 20 s (see %s)",
			  left, NT, busd_log);
		sleep_ms(5);
	}
	for (int i = 0; i < NT; i++) {
		snprintf(name, sizeof name, "many%d", i);
		wait_spilled(name, 1);
	}
	cr_assert(!log_has("Too many open files"), "busd ran out of descriptors");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* Garbage after a value hidden behind a NUL byte is a bad config, not a
 * value cut short: busd exits 2 naming the line. */
Test(busd, a_nul_byte_in_a_config_line_is_a_usage_error)
{
	static const char text[] = "log_level = info\nsegment_bytes = 1K\0 and garbage\n";
	FILE *f = fopen(busd_conf, "w");

	cr_assert(f);
	cr_assert_eq(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
	fclose(f);
	expect_busd_usage_exit("a NUL in its config");
	cr_assert(log_has(":2"), "the error names the line");
}

/* SIGHUP with a config whose relative data_dir is too long to be made
 * absolute (against the folder busd was started in): the reload fails,
 * busd says so and runs on with the config in force, as for any bad
 * file.  It used to exit 2 at once, without spilling what the rings held
 * nor letting go of its partitions. */
Test(busd, a_reload_with_a_data_dir_too_long_keeps_the_config)
{
	char *text = malloc(PATH_MAX + 32);
	int n;

	cr_assert(text);
	write_conf("log_level = info\n");
	busd_start();
	mk_topic("hup", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("hup", 0, 0, 100, 100, 0, 0), 0);
	/* PATH_MAX - 1 bytes: a valid value, but not once the folder busd
	 * was started in goes in front of it. */
	n = snprintf(text, PATH_MAX + 32, "data_dir = ");
	memset(text + n, 'd', PATH_MAX - 1);
	snprintf(text + n + PATH_MAX - 1, 32, "\n");
	write_conf(text);
	free(text);
	kill(busd, SIGHUP);
	wait_log("path too long", 10000);
	cr_assert(log_has("keeping the config in force"), "the reload says it kept the config");
	cr_assert_eq(produce_n("hup", 0, 100, 100, 100, 0, 0), 0);
	wait_spilled("hup", 1);
	cr_assert_eq(bus_daemon_pid(tb), busd, "busd runs on");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* The bytes of the .log files in @dir (a file retention deletes
 * meanwhile counts 0). */
static uint64_t log_bytes(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t sum = 0;

	cr_assert(d, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		struct stat st;

		if (n > 4 && strcmp(de->d_name + n - 4, ".log") == 0 &&
		    fstatat(dirfd(d), de->d_name, &st, 0) == 0)
			sum += (uint64_t)st.st_size;
	}
	closedir(d);
	return sum;
}

/* A retention in bytes below the segment size (1 GiB by default): the
 * active segment is never deleted, so unless busd rolls segments below
 * the retention the log grew to a whole segment (1 GiB per partition for
 * a topic kept to a few MiB), and a quiet topic stayed there.  The log's
 * .log files stay within the retention (plus one record), and the
 * earliest records go first. */
Test(busd, a_retention_in_bytes_below_the_segment_size_bounds_the_log)
{
	const uint64_t keep = 128 * 1024;
	int64_t deadline;
	struct bus_partition_info pi;

	write_conf("retention_check_ms = 20\n"); /* segment_bytes: the default, 1G */
	busd_start();
	mk_topic("small", 1, 64 * 1024, 0, keep);
	cr_assert_eq(produce_n("small", 0, 0, 2000, 1000, 0, 0), 0); /* ~2 MiB */
	wait_spilled("small", 1);
	deadline = tnow_ms() + 15000;
	for (;;) {
		char dir[600];
		uint64_t logs;

		pi = pinfo("small", 0);
		snprintf(dir, sizeof dir, "%s/small/0", e.data_dir);
		logs = log_bytes(dir);
		if (pi.disk_first_offset > 0 && logs <= keep + 1100)
			break;
		cr_assert(tnow_ms() < deadline,
			  "the log keeps %" PRIu64 " bytes in %u segments from offset %" PRIu64
			  " for a retention of %" PRIu64,
			  logs, pi.disk_segments, pi.disk_first_offset, keep);
		sleep_ms(5);
	}
	cr_assert_eq(pi.disk_next_offset, 2000, "the newest records stay");
	cr_assert_gt(pi.disk_next_offset - pi.disk_first_offset, 30, "not everything went");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* cachestat(2) (Linux 6.5), for the dirty pages of a file: the C library's
 * headers may not have it yet. */
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct t_cachestat_range {
	uint64_t off, len;
};
struct t_cachestat {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* The dirty or in-writeback pages of @path, or -1 when the kernel cannot
 * say (no cachestat). */
static int64_t dirty_pages(const char *path)
{
	struct t_cachestat_range r = { 0, 0 }; /* 0: to the end */
	struct t_cachestat cs;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	long rc;

	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	rc = syscall(__NR_cachestat, fd, &r, &cs, 0);
	close(fd);
	return rc ? -1 : (int64_t)(cs.nr_dirty + cs.nr_writeback);
}

/* Skip a test of syncs when the data dir is on tmpfs (nothing to sync). */
static void skip_if_data_dir_on_tmpfs(void)
{
	struct statfs sf;

	cr_assert_eq(statfs(e.data_dir, &sf), 0);
	if (sf.f_type == 0x01021994) /* TMPFS_MAGIC */
		cr_skip_test("the data dir is on tmpfs");
}

/* Wait until the log file @path has no dirty page, failing @limit_ms after
 * @t0 (ms) with @what in the message; skip without cachestat(2). */
static void wait_log_clean(const char *path, int64_t t0, int64_t limit_ms, const char *what)
{
	int64_t dirty;

	if (dirty_pages(path) < 0)
		cr_skip_test("no cachestat(2) in this kernel");
	while ((dirty = dirty_pages(path)) != 0) {
		cr_assert(tnow_ms() < t0 + limit_ms,
			  "%" PRId64 " pages of the log still unsynced %" PRId64 " ms after %s", dirty,
			  tnow_ms() - t0, what);
		sleep_ms(5);
	}
}

/* fsync = DURATION promises that nothing written stays unsynced longer
 * than that.  busd's sync of a quiet log counted from its last write-out
 * instead of from its oldest unsynced record, so a record written right
 * after a sync, followed by others less than the interval apart, stayed
 * unsynced for up to twice the interval (here 3.8 s for 2 s).  The records
 * are paced (the point is their spacing); the check waits for the log's
 * pages to be clean with a deadline. */
Test(busd, an_fsync_interval_bounds_how_long_a_record_stays_unsynced)
{
	struct bus_producer_opts po = { .block_timeout_ns = 10 * 1000000000ll };
	struct bus_producer *p;
	char v[100] = { 0 }, path[600];
	struct bus_record r = { .value = v, .value_len = sizeof v };
	int64_t t0;

	skip_if_data_dir_on_tmpfs();
	write_conf("fsync = 2s\n");
	busd_start();
	mk_topic("fs", 1, 64 * 1024, 0, 0);
	cr_assert_eq(bus_producer_open(tb, "fs", &po, &p), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	t0 = tnow_ms();
	/* Nine more, 200 ms apart: each write-out is less than 2 s after the
	 * sync at the log's open, so none syncs by itself. */
	for (int i = 1; i < 10; i++) {
		int64_t at = t0 + 200 * i;
		if (tnow_ms() < at)
			sleep_ms((int)(at - tnow_ms()));
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	bus_producer_close(p);
	wait_spilled("fs", 1);
	seg_path("fs", 0, path, sizeof path);
	/* The first record is synced 2 s after it was written (busd notices
	 * within a pass): 1.4 s of slack for a loaded machine, and still 0.4 s
	 * before the old code's sync, 2 s after the last record (3.8 s). */
	wait_log_clean(path, t0, 3400, "its first record was written (fsync = 2s)");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* The same promise when busd naps deeply: idle for a second, it slept
 * idle_sleep_ms at a time, and synced a quiet log only when such a nap
 * ended.  With fsync = 1100ms and idle_sleep_ms = 1s its first deep nap
 * starts about 1 s after the record's write-out and ran to 2 s: 0.9 s
 * late, every time.  It now ends when the sync is due. */
Test(busd, a_deep_idle_nap_ends_when_a_quiet_log_is_due_its_sync)
{
	struct bus_producer_opts po = { .block_timeout_ns = 10 * 1000000000ll };
	struct bus_producer *p;
	char v[100] = { 0 }, path[600];
	struct bus_record r = { .value = v, .value_len = sizeof v };
	int64_t t0;

	skip_if_data_dir_on_tmpfs();
	write_conf("fsync = 1100ms\nidle_sleep_ms = 1s\n");
	busd_start();
	mk_topic("deep", 1, 64 * 1024, 0, 0);
	cr_assert_eq(bus_producer_open(tb, "deep", &po, &p), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	bus_producer_close(p);
	wait_spilled("deep", 1);
	t0 = tnow_ms(); /* at or after the write-out */
	seg_path("deep", 0, path, sizeof path);
	/* Due 1.1 s after the write-out: 0.5 s of slack for a loaded
	 * machine, and still 0.4 s before the old code's sync. */
	wait_log_clean(path, t0, 1600,
		       "its record was written out (fsync = 1100ms, idle_sleep_ms = 1s)");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* A busd killed while it wrote a topic.conf leaves its temporary file
 * (".topic.conf.<pid>") in the topic's folder; the next busd removes it
 * when it starts, and recovers the topic from topic.conf as before. */
Test(busd, a_topic_conf_temporary_left_by_a_killed_busd_is_removed_at_start)
{
	char tmp[600];
	int fd;

	spill_and_reboot("tmpconf", 10);
	snprintf(tmp, sizeof tmp, "%s/tmpconf/.topic.conf.99999", e.data_dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	cr_assert(fd >= 0, "%s: %s", tmp, strerror(errno));
	cr_assert_eq(write(fd, "partitions = ", 13), 13);
	close(fd);
	busd_start(); /* returns once busd published itself: after its recovery */
	cr_assert_neq(access(tmp, F_OK), 0, "%s is still there (see %s)", tmp, busd_log);
	consume_all("tmpconf", 1, 1, 10, 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* A log that ends past what the ring holds (a longer log put in its place
 * by hand while busd was stopped): busd stops that partition with an
 * ERROR, and its producers, once the ring is full, are told
 * (-BUS_ECORRUPT) instead of waiting for a spiller that never moves, as
 * after a frame busd cannot take. */
Test(busd, a_log_past_the_ring_stops_its_partition_and_producers_are_told)
{
	struct bus_producer_opts po = { .block_timeout_ns = 10 * 1000000000ll };
	struct bus_producer *p;
	char cmd[2048], v[100] = { 0 };
	struct bus_record r = { .value = v, .value_len = sizeof v };
	int err = 0, n;

	busd_start();
	mk_topic("ahead", 1, 64 * 1024, 0, 0);
	mk_topic("longer", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("ahead", 0, 0, 5, 100, 0, 0), 0);
	cr_assert_eq(produce_n("longer", 0, 0, 20, 100, 0, 0), 0);
	wait_spilled("ahead", 1);
	wait_spilled("longer", 1);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	/* ahead's ring says 5 records were spilled; its log now holds 20. */
	snprintf(cmd, sizeof cmd, "rm -f %s/ahead/0/* && cp -p %s/longer/0/* %s/ahead/0/",
		 e.data_dir, e.data_dir, e.data_dir);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	busd_start();
	wait_log("past what the ring holds", 10000);
	cr_assert_eq(bus_producer_open(tb, "ahead", &po, &p), 0);
	for (n = 0; n < 2000 && (err = bus_produce(p, 0, &r, NULL, NULL)) == 0; n++)
		;
	cr_assert_eq(err, -BUS_ECORRUPT, "after %d records: %s", n, bus_strerror(err));
	cr_assert(n > 300 && n < 500, "the ring took %d records", n);
	bus_producer_close(p);
	/* The other topic is still spilled. */
	cr_assert_eq(produce_n("longer", 0, 20, 5, 100, 0, 0), 0);
	wait_spilled("longer", 1);
	cr_assert(kill(busd, 0) == 0, "busd still runs");
	busd_stop(SIGTERM);
	cr_assert(log_has("stopped after an error"), "the stop names the partition left behind");
}

/* The number of the first line of busd_log that contains @needle, or -1. */
static int log_line_of(const char *needle)
{
	char line[4096];
	FILE *f = fopen(busd_log, "r");
	int n = 0, at = -1;

	while (f && at < 0 && fgets(line, sizeof line, f)) {
		if (strstr(line, needle))
			at = n;
		n++;
	}
	if (f)
		fclose(f);
	return at;
}

/* One record of @len bytes of value into @topic's partition 0. */
static void produce_one(const char *topic, uint32_t len)
{
	struct bus_producer *p;
	uint8_t *v = calloc(1, len);
	struct bus_record r = { .value = v, .value_len = len };

	cr_assert(v);
	cr_assert_eq(bus_producer_open(tb, topic, NULL, &p), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	bus_producer_close(p);
	free(v);
}

/* fsync = DURATION: busd's sync of a quiet log fails (EIO: ext4 through a
 * loop device whose tmpfs is full, so that the write-back of a block never
 * written fails; as test_segment's failed fdatasync does).  That failure
 * episode lasts until a retry goes through: it was ended in the very pass
 * that logged it ("spilling resumed after 0.0 s (0 retries)"), its backoff
 * skipped.  Needs root, a loop device and mkfs.ext4 (skipped otherwise). */
Test(busd, a_failed_idle_sync_is_retried_before_spilling_is_said_to_resume)
{
	char small[300], mnt[320], filler[320], cmd[2048], dir[400];
	static uint8_t blk[65536];
	struct bus_seg_bounds sb;
	int fd;

	if (geteuid() != 0)
		cr_skip_test("needs root to mount a loop device");
	/* Private mounts: they go with this process whatever happens. */
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		cr_skip_test("cannot make a private mount namespace: %s", strerror(errno));
	snprintf(small, sizeof small, "%s/small", e.data_dir);
	snprintf(mnt, sizeof mnt, "%s/mnt", small);
	snprintf(filler, sizeof filler, "%s/filler", small);
	cr_assert_eq(mkdir(small, 0700), 0);
	if (mount("tmpfs", small, "tmpfs", 0, "size=24m"))
		cr_skip_test("cannot mount tmpfs here: %s", strerror(errno));
	snprintf(cmd, sizeof cmd,
		 "mkdir %s && truncate -s 64M %s/img && mkfs.ext4 -q -F -b 4096 -N 64 "
		 "-O ^has_journal -E lazy_itable_init=0 %s/img >/dev/null 2>&1 && "
		 "mount -o loop,errors=continue %s/img %s 2>/dev/null",
		 mnt, small, small, small, mnt);
	if (system(cmd) != 0)
		cr_skip_test("no ext4 through a loop device here (mkfs.ext4, losetup)");
	bus_close(tb);
	e.opts.data_dir = mnt;
	setenv("BUS_DATA_DIR", mnt, 1);
	tb = tenv_bus(&e);
	write_conf("fsync = 1s\npreallocate = 0\n");
	busd_start();
	mk_topic("isync", 1, 64 * 1024, 0, 0);
	/* A frame of 4032 bytes after the segment's 64-byte header: the next
	 * one starts on a block of its own. */
	produce_one("isync", 4032 - BUS_FRAME_HDR);
	wait_spilled("isync", 1);
	cr_assert_eq(busd_stop(SIGTERM), 0); /* synced at close */
	/* From now on the device fails every block not written before. */
	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0, "%s: %s", filler, strerror(errno));
	memset(blk, 1, sizeof blk);
	while (write(fd, blk, sizeof blk) > 0)
		;
	close(fd);
	/* A block of a record in the ring (busd is away: the ring has room).
	 * busd writes it out in the pass that opens the log, which synced it:
	 * the sync is the idle one, a second later. */
	produce_one("isync", 4096 - BUS_FRAME_HDR);
	busd_start();
	wait_spilled("isync", 1);
	while (!log_has("cannot sync its log")) {
		if (log_has("cannot write to its log"))
			cr_skip_test("the write-out synced, not the idle sync (a pass took 1 s)");
		cr_assert(kill(busd, 0) == 0, "busd died (see %s)", busd_log);
		sleep_ms(5);
	}
	/* Space again: the retry (the log opened again, the record written
	 * again from the ring) goes through, and only then is spilling said
	 * to resume. */
	cr_assert_eq(unlink(filler), 0);
	wait_log("spilling resumed", 20000);
	wait_log("were spilled: writing offsets", 20000);
	cr_assert_gt(log_line_of("spilling resumed"), log_line_of("were spilled: writing offsets"),
		     "spilling said to resume before the log was opened again (see %s)", busd_log);
	/* Both records are in the log: the second written again from the ring. */
	cr_assert_eq(busd_stop(SIGTERM), 0);
	snprintf(dir, sizeof dir, "%s/isync/0", mnt);
	cr_assert_eq(bus_seg_bounds(dir, &sb), 0);
	cr_assert_eq(sb.next, 2);
	bus_close(tb);
	tb = NULL;
	cr_assert_eq(umount2(mnt, 0), 0, "umount %s: %s", mnt, strerror(errno));
	umount2(small, MNT_DETACH);
	e.opts.data_dir = e.data_dir;
	setenv("BUS_DATA_DIR", e.data_dir, 1);
	tb = tenv_bus(&e);
}

/* busd wakes the producers asleep for the space its spill frees (spill.c,
 * after each spill publish; wait.c, "Space"): without that wake every
 * such sleep ran to the producer's own recheck timeout (20 ms), since no
 * consumer gates this topic.  Three times over: busd is stopped (SIGSTOP)
 * until the producer is seen asleep in FUTEX_WAIT, then let go until the
 * producer has gone on; then the producer is told to finish. */
struct spillwake {
	_Atomic int quit, done;
	_Atomic uint64_t produced;
	int err;
	struct bus_producer_stats st;
};

static int produce_behind_the_spill(void *arg)
{
	struct spillwake *sw = arg;
	struct bus_producer_opts po = { .block_timeout_ns = 30000000000ll };
	struct bus_producer *p;
	static uint8_t v[1000];
	int err;

	if ((err = bus_producer_open(tb, "spillwake", &po, &p)) == 0) {
		for (uint64_t i = 0; !atomic_load(&sw->quit) && !err; i++) {
			struct bus_record r = { .value = v, .value_len = sizeof(v) };
			fill(v, sizeof(v), 0, i);
			if ((err = bus_produce(p, 0, &r, NULL, NULL)) == 0)
				atomic_fetch_add(&sw->produced, 1);
		}
		bus_producer_stats(p, &sw->st);
		bus_producer_close(p);
	}
	sw->err = err;
	atomic_store(&sw->done, 1);
	return 0;
}

Test(busd, busd_wakes_the_producer_asleep_for_its_spill)
{
	struct spillwake *sw;
	int64_t deadline;
	uint64_t before;
	pid_t pid;

	sw = mmap(NULL, sizeof(*sw), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sw, MAP_FAILED);
	memset(sw, 0, sizeof(*sw));
	busd_start();
	mk_topic("spillwake", 1, 64 * 1024, 0, 0);
	cr_assert_eq(produce_n("spillwake", 0, 0, 1, 100, 0, 0), 0);
	wait_spilled("spillwake", 1); /* busd took the ring: its floor is down */
	pid = tfork(produce_behind_the_spill, sw);
	deadline = tnow_ms() + 60000;
	for (int stop = 0; stop < 3; stop++) {
		cr_assert_eq(kill(busd, SIGSTOP), 0);
		/* busd stopped: the producer fills the ring and goes to sleep. */
		while (!tin_futex_wait(pid)) {
			cr_assert(!atomic_load(&sw->done), "the producer ended: %s",
				  bus_strerror(sw->err));
			cr_assert(tnow_ms() < deadline, "the producer never slept (stop %d)", stop);
			usleep(100);
		}
		before = atomic_load(&sw->produced);
		cr_assert_eq(kill(busd, SIGCONT), 0);
		while (atomic_load(&sw->produced) == before) {
			cr_assert(tnow_ms() < deadline, "the producer never went on (stop %d)", stop);
			usleep(100);
		}
	}
	atomic_store(&sw->quit, 1);
	cr_assert_eq(twait(pid, 40000), 0);
	cr_assert_eq(sw->err, 0, "produce: %s", bus_strerror(sw->err));
	cr_assert_geq(sw->st.woken, 1u, "%" PRIu64 " sleeps, none ended by busd's wake",
		      sw->st.sleeps);
	wait_spilled("spillwake", 1);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	munmap(sw, sizeof(*sw));
}

/* Write @len bytes of @text to @path (replacing it). */
static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	cr_assert(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(text, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

/* Every file under @dir with its size, sorted, into @buf. */
static void tree_list(const char *dir, char *buf, size_t len)
{
	char cmd[700];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof cmd, "cd %s && find . -printf '%%p %%s\\n' | sort", dir);
	f = popen(cmd, "r");
	cr_assert(f);
	n = fread(buf, 1, len - 1, f);
	buf[n] = 0;
	cr_assert_eq(pclose(f), 0, "%s", cmd);
	cr_assert_gt(n, 0);
}

/* A topic.conf cut short, with a key given twice, a NUL byte or a line too
 * long is refused at recovery as a whole, with an ERROR naming the file
 * and what is wrong, and its logs stay as they are.  Each of these was
 * half parsed into another topic than the one whose logs lie there: the
 * keys up to the cut (retention_ms 6, not a week; a private topic
 * re-created as shared), the last of two values, the text up to the NUL,
 * or a long line's first 1023 bytes (retention_bytes 1).  Put back whole,
 * the file re-creates the topic with every record. */
Test(busd, a_damaged_topic_conf_is_refused_at_recovery_and_its_logs_kept)
{
	static const char whole[] = "partitions = 1\nring_size = 65536\nretention_ms = 0\n"
				    "retention_bytes = 0\noverflow = block\nnuma_node = -1\n"
				    "private = false\n";
	static const char nul[] = "partitions = 1\0 and garbage\nring_size = 65536\n"
				  "retention_ms = 0\nretention_bytes = 0\noverflow = block\n"
				  "numa_node = -1\nprivate = false\n";
	static char text[4096];
	static char before[8192], after[8192];
	struct {
		const char *text;
		size_t len;
		const char *why;
	} cases[] = {
		{ "partitions = 1\nring_size = 65536\nretention_ms = 6", 0,
		  "conf: cut short: retention_bytes missing" },
		{ "partitions = 1\nring_size = 65536\nretention_ms = 0\nretention_bytes = 0\n"
		  "overflow = block\nnuma_node = -1\n",
		  0, "conf: cut short: private missing" },
		{ "partitions = 1\nring_size = 65536\nretention_ms = 0\nretention_bytes = 0\n"
		  "overflow = block\nnuma_node = -1\nprivate = false",
		  0, "conf:7: cut short: the last line has no newline" },
		{ text, 0, "conf:2: partitions is set twice (first on line 1)" },
		{ nul, sizeof nul - 1, "conf:1: a NUL byte in the line" },
		{ text + 1024, 0, "conf:1: line too long" },
	};
	char dir[400], conf[450], want[700];
	struct bus_topic_info ti;
	int err, n;

	n = snprintf(text, 1024, "partitions = 1\npartitions = 2\n%s", whole + 15);
	cr_assert_lt(n, 1024);
	/* retention_bytes = 1 and blanks: its first 1023 bytes are a line of
	 * their own to fgets(), the rest a comment. */
	n = snprintf(text + 1024, 2048, "retention_bytes = 1%*s# x\n", 1100, "");
	snprintf(text + 1024 + n, 3072 - (size_t)n, "%s", "partitions = 1\nring_size = 65536\n"
		 "retention_ms = 0\noverflow = block\nnuma_node = -1\nprivate = false\n");
	spill_and_reboot("dmg", 10);
	snprintf(dir, sizeof dir, "%s/dmg", e.data_dir);
	snprintf(conf, sizeof conf, "%s/topic.conf", dir);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		write_file(conf, cases[i].text, cases[i].len ? cases[i].len : strlen(cases[i].text));
		tree_list(dir, before, sizeof before);
		busd_start(); /* returns once busd published itself: after its recovery */
		snprintf(want, sizeof want, "topic 'dmg' not recovered: %s/topic.%s", dir,
			 cases[i].why);
		cr_expect(log_has(want), "case %zu: no ERROR \"%s\" (see %s)", i, want, busd_log);
		err = bus_topic_describe(tb, "dmg", &ti);
		cr_expect_eq(err, -ENOENT, "case %zu: the topic was re-created from a bad file",
			     i);
		cr_assert_eq(busd_stop(SIGTERM), 0);
		if (err == 0)
			reboot();
		tree_list(dir, after, sizeof after);
		cr_assert_str_eq(after, before, "case %zu: the topic's folder changed", i);
	}
	write_file(conf, whole, strlen(whole));
	busd_start();
	consume_all("dmg", 1, 1, 10, 0);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* A ".deleted.*" folder whose name does not parse as
 * ".deleted.<topic>.<generation>.<pid>" (made by hand or by another tool)
 * is removed like the others, and the line that says so names no topic:
 * it named one from a buffer the parse had not filled (uninitialised). */
Test(busd, a_deleted_folder_with_a_junk_name_is_removed_without_naming_a_topic)
{
	char dir[400], file[450], want[500];

	snprintf(dir, sizeof dir, "%s/.deleted.junk", e.data_dir);
	snprintf(file, sizeof file, "%s/0.log", dir);
	cr_assert_eq(mkdir(dir, 0750), 0);
	write_file(file, "x", 1);
	busd_start(); /* returns once busd published itself: after its recovery */
	cr_assert_neq(access(dir, F_OK), 0, "%s is still there (see %s)", dir, busd_log);
	snprintf(want, sizeof want, "removed %s (1 files): a deleted topic's logs", dir);
	cr_assert(log_has(want), "no \"%s\" (see %s)", want, busd_log);
	snprintf(want, sizeof want, "removed %s: the logs of deleted topic", dir);
	cr_assert(!log_has(want), "a topic named (see %s)", busd_log);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* Folders (and files) of the data dir that busd recovers no topic from: a
 * name that is no valid topic name, a topic's logs without topic.conf, a
 * file.  Each is named in a WARN at start (they were passed over unseen:
 * logs put there by hand, or a topic's folder renamed, were never
 * spilled nor replayed, and nobody was told), and left as it is. */
Test(busd, entries_of_the_data_dir_that_are_no_topic_are_named_and_left_alone)
{
	static const char *const entries[] = { "bad name", ".hidden", "nolog", "afile" };
	static char before[8192], after[8192];
	char path[600], want[700];

	snprintf(path, sizeof path, "%s/bad name", e.data_dir);
	cr_assert_eq(mkdir(path, 0750), 0);
	snprintf(path, sizeof path, "%s/.hidden", e.data_dir);
	cr_assert_eq(mkdir(path, 0750), 0);
	snprintf(path, sizeof path, "%s/nolog", e.data_dir);
	cr_assert_eq(mkdir(path, 0750), 0);
	snprintf(path, sizeof path, "%s/nolog/0", e.data_dir);
	cr_assert_eq(mkdir(path, 0750), 0);
	snprintf(path, sizeof path, "%s/nolog/0/00000000000000000000.log", e.data_dir);
	write_file(path, "log", 3);
	snprintf(path, sizeof path, "%s/afile", e.data_dir);
	write_file(path, "x", 1);
	/* busd's lock, as busd leaves it (empty) at a clean stop. */
	snprintf(path, sizeof path, "%s/.busd.lock", e.data_dir);
	write_file(path, "", 0);
	tree_list(e.data_dir, before, sizeof before);
	busd_start(); /* returns once busd published itself: after its recovery */
	for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
		snprintf(want, sizeof want, "WARN %s/%s", e.data_dir, entries[i]);
		cr_expect(log_has(want), "no \"%s\" (see %s)", want, busd_log);
	}
	cr_expect(log_has("has no topic.conf: topic 'nolog' is not re-created"),
		  "the WARN of nolog says why (see %s)", busd_log);
	cr_expect_eq(bus_topic_describe(tb, "nolog", &(struct bus_topic_info){ 0 }), -ENOENT);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	tree_list(e.data_dir, after, sizeof after);
	cr_assert_str_eq(after, before, "the data dir changed");
}

/* Drop the capabilities that let root read any folder (busd is then bound
 * by the mode bits, as any other user). */
static void drop_dac(void)
{
	if (prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) ||
	    prctl(PR_CAPBSET_DROP, CAP_DAC_READ_SEARCH, 0, 0, 0))
		_exit(99);
}

/* A data dir busd can write (its lock) but not read: busd exits 1 with a
 * message naming it, rather than running on with nothing recovered and no
 * deleted topic's logs removed (an ERROR busd went past). */
Test(busd, an_unreadable_data_dir_stops_busd_at_start)
{
	int st;
	pid_t pid;

	if (geteuid() == 0) {
		/* Root reads any folder: busd runs without that right. */
		pid = fork();
		cr_assert(pid >= 0);
		if (pid == 0) {
			drop_dac();
			_exit(0);
		}
		cr_assert_eq(twait_status(pid, 5000, &st), 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			cr_skip_test("cannot drop CAP_DAC_OVERRIDE here (no CAP_SETPCAP)");
		busd_spawn_hook = drop_dac;
	}
	cr_assert_eq(chmod(e.data_dir, 0300), 0);
	expect_busd_exit("an unreadable data dir", 1);
	chmod(e.data_dir, 0700);
	cr_assert(log_has("cannot read the data dir"), "no message (see %s)", busd_log);
	cr_assert(log_has(e.data_dir), "the message does not name %s (see %s)", e.data_dir,
		  busd_log);
	cr_assert(log_has("Permission denied"), "the message does not say why (see %s)", busd_log);
}

/* A SIGHUP that shortens retention_check_ms takes effect at once: the
 * next check came only once the interval in force before (here a day)
 * had elapsed, so that retention did not run for that long. */
Test(busd, a_reload_that_shortens_the_retention_check_takes_effect_at_once)
{
	int64_t deadline;
	struct bus_partition_info pi;

	write_conf("segment_bytes = 64K\nretention_check_ms = 1d\n");
	busd_start();
	mk_topic("rcheck", 1, 64 * 1024, 0, 256 * 1024);
	cr_assert_eq(produce_n("rcheck", 0, 0, 2000, 1000, 0, 0), 0); /* ~2 MiB */
	wait_spilled("rcheck", 1);
	cr_assert_eq(pinfo("rcheck", 0).disk_first_offset, 0, "retention ran already");
	write_conf("segment_bytes = 64K\nretention_check_ms = 20\n");
	cr_assert_eq(kill(busd, SIGHUP), 0);
	wait_log("retention_check_ms 20,", 10000);
	deadline = tnow_ms() + 20000;
	for (;;) {
		pi = pinfo("rcheck", 0);
		if (pi.disk_first_offset > 0 && pi.disk_bytes < 512 * 1024)
			break;
		cr_assert(tnow_ms() < deadline,
			  "retention did not run within 20 s of the reload: first on disk %" PRIu64
			  ", %" PRIu64 " bytes (see %s)",
			  pi.disk_first_offset, pi.disk_bytes, busd_log);
		sleep_ms(5);
	}
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

static char nap_so[320], nap_mark[320];

/* busd's child: run busd with the nap shim. */
static void nap_shim_env(void)
{
	setenv("LD_PRELOAD", nap_so, 1);
	setenv("NAP_SHIM_MARK", nap_mark, 1);
	/* The sanitizers' runtime wants to come first; the shim only wraps. */
	setenv("ASAN_OPTIONS", "verify_asan_link_order=0", 1);
}

/* A SIGTERM that comes after busd looked at its stop flag and before it
 * fell asleep ends the nap at once: the signals are blocked in between and
 * unblocked by ppoll() with its sleep.  It was handled there and noticed
 * only after the whole nap (idle_sleep_ms, up to 1 s).  The shim
 * (tests/preload_nap.c) widens that window to 200 ms before each deep nap
 * and says when it is in it. */
Test(busd, a_sigterm_just_before_a_deep_nap_ends_it_at_once)
{
	char cmd[1024];
	int64_t deadline, t0, took;
	int st;

	/* In the data dir: removed with it whatever happens (busd warns
	 * about them, and leaves them alone). */
	snprintf(nap_so, sizeof nap_so, "%s/.nap.so", e.data_dir);
	snprintf(nap_mark, sizeof nap_mark, "%s/.nap.mark", e.data_dir);
	snprintf(cmd, sizeof cmd, "cc -shared -fPIC -O2 -o %s tests/preload_nap.c -ldl 2>&1", nap_so);
	if (system(cmd) != 0)
		cr_skip_test("cannot build the LD_PRELOAD shim (%s)", cmd);
	write_conf("idle_sleep_ms = 1s\n");
	busd_spawn_hook = nap_shim_env;
	busd_start();
	deadline = tnow_ms() + 20000;
	while (access(nap_mark, F_OK) != 0) {
		cr_assert(tnow_ms() < deadline, "busd never took a deep nap (see %s)", busd_log);
		sleep_ms(1);
	}
	t0 = tnow_ms();
	cr_assert_eq(kill(busd, SIGTERM), 0);
	cr_assert_eq(twait_status(busd, 30000, &st), 0);
	took = tnow_ms() - t0;
	busd = -1;
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d (see %s)", st, busd_log);
	/* The shim's 200 ms, then at once; not the 1 s nap after them. */
	cr_assert_lt(took, 800, "busd stopped %lld ms after SIGTERM (see %s)", (long long)took,
		     busd_log);
}
