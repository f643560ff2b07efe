/* test_replay.c - a consumer's replay from the logs on disk and its way
 * back onto the ring: seeks to records past the log's end that the ring
 * holds before its earliest checkpoint, seeks by time over sealed
 * segments, the active one and the ring, a move back on disk without a
 * descriptor, views overwritten in use read again from the log, and reads
 * of a few records at a time over segments, gaps and LOST frames, read
 * and mapped.  Each test runs its own busd (build/bin/busd --foreground)
 * on a private bus and data dir. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util_busd.h"

TestSuite(replay, .init = busd_setup, .fini = busd_teardown, .timeout = 120);

/* ----------------------------------------------------------- helpers */

static void mk_topic(const char *name, uint64_t ring)
{
	struct bus_topic_config cfg;
	int err;

	bus_topic_config_init(&cfg);
	cfg.ring_size = ring;
	err = bus_topic_create(tb, name, &cfg);
	cr_assert_eq(err, 0, "create %s: %s", name, bus_strerror(err));
}

/* Record @i's value: its number, then filler derived from it. */
static void fill(uint8_t *v, uint32_t len, uint64_t i)
{
	memcpy(v, &i, 8);
	for (uint32_t k = 8; k < len; k++)
		v[k] = (uint8_t)(i * 131 + k);
}

static bool intact(const void *p, uint32_t len, uint64_t i)
{
	uint8_t want[4096];

	if (len < 8 || len > sizeof want)
		return false;
	fill(want, len, i);
	return memcmp(p, want, len) == 0;
}

/* Produce records with values fill(i) for i = its offset, timestamps from
 * @ts(i) (NULL: now), until @n are in or, with @until_full, until the
 * ring is full (-EAGAIN: the producer does not wait).  Returns how many. */
static uint64_t produce(struct bus_producer *p, uint64_t n, uint32_t len,
			int64_t (*ts)(uint64_t), bool until_full)
{
	int64_t deadline = tnow_ms() + 60000;
	uint64_t done = 0;

	cr_assert(len >= 8);
	while (done < n) {
		struct bus_claim cl;
		uint64_t off;
		int err;

		/* The offset the record gets, for its contents. */
		err = bus_producer_claim(p, 0, NULL, 0, len, &cl);
		if (err == -EAGAIN && until_full)
			break;
		if (err == -EAGAIN) {
			/* busd is a ring behind: give it a moment. */
			cr_assert(tnow_ms() < deadline, "busd spills nothing");
			sleep_ms(1);
			continue;
		}
		cr_assert_eq(err, 0, "claim: %s", bus_strerror(err));
		off = cl.offset;
		fill(cl.value, len, off);
		err = bus_producer_commit(p, &cl, ts ? ts(off) : 0);
		cr_assert_eq(err, 0, "commit: %s", bus_strerror(err));
		done++;
	}
	return done;
}

/* Poll one record of partition 0 (waiting up to 5 s). */
static struct bus_view poll1(struct bus_consumer *c)
{
	struct bus_view v;
	int n = bus_consumer_poll(c, &v, 1, 5000000000ll);

	cr_assert_eq(n, 1, "poll: %d (%s)", n, n < 0 ? bus_strerror(n) : "timeout");
	return v;
}

/* ------------------------------------------------------------- tests */

static int64_t ts_of(uint64_t i)
{
	return 1700000000000000000ll + (int64_t)i * 1000;
}

/* busd stalls (here: stopped) while producers fill the ring: the ring then
 * holds, whole, the records from the spill cursor on, which the log does
 * not have yet, and its earliest checkpoint may lie a few records past the
 * cursor.  A seek by offset or by time to a record the bus holds lands on
 * it, whether the log or the ring holds it ("offset out of range" is for
 * offsets held nowhere, and a seek by time returns no record older than
 * the time asked).  Small frames (several to a checkpoint's chunk), and
 * spill cursors at each place in a chunk. */
Test(replay, a_seek_to_a_record_past_the_logs_end_but_before_the_rings_checkpoints_lands_on_it)
{
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_LATEST };
	bool gap_seen = false;

	busd_start();
	for (int k = 0; k < 8; k++) {
		struct bus_partition_info pi;
		struct bus_producer *p;
		struct bus_consumer *c;
		char name[16];

		snprintf(name, sizeof name, "s%d", k);
		mk_topic(name, BUS_RING_MIN);
		cr_assert_eq(bus_producer_open(tb, name, &po, &p), 0);
		produce(p, 2000 + (uint64_t)k, 8, ts_of, false);
		wait_spilled(name, 1);
		/* busd stops spilling: the ring fills up to a ring past its
		 * cursor. */
		cr_assert_eq(kill(busd, SIGSTOP), 0);
		produce(p, UINT64_MAX, 8, ts_of, true);
		pi = pinfo(name, 0);
		cr_assert_eq(pi.disk_next_offset, pi.spilled_offset);
		cr_assert_lt(pi.spilled_offset, pi.next_offset);
		gap_seen |= pi.first_offset > pi.spilled_offset + 1;
		cr_assert_eq(bus_consumer_open(tb, name, &co, &c), 0);
		for (uint64_t o = pi.disk_first_offset; o < pi.next_offset; o++) {
			int err = bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, (int64_t)o);
			struct bus_view v;

			cr_assert_eq(err, 0,
				     "seek to %" PRIu64 ": %s (disk %" PRIu64 "..%" PRIu64
				     ", ring first %" PRIu64 ", next %" PRIu64 ")",
				     o, bus_strerror(err), pi.disk_first_offset, pi.disk_next_offset,
				     pi.first_offset, pi.next_offset);
			v = poll1(c);
			cr_assert_eq(v.offset, o, "seek to %" PRIu64 " gave %" PRIu64, o, v.offset);
			cr_assert_eq(v.lost_before, 0);
			cr_assert(intact(v.value, v.value_len, o), "record %" PRIu64 " damaged", o);
		}
		/* By time, around the seam (the whole log takes longer). */
		for (uint64_t o = pi.spilled_offset - 8; o < pi.next_offset; o++) {
			for (int64_t d = -1; d <= 0; d++) {
				int err = bus_consumer_seek(c, 0, BUS_SEEK_TIME, ts_of(o) + d * 500);
				struct bus_view v;

				cr_assert_eq(err, 0, "seek to the time of %" PRIu64 ": %s", o,
					     bus_strerror(err));
				v = poll1(c);
				cr_assert_eq(v.offset, o,
					     "seek to the time of %" PRIu64 " (%+d) gave %" PRIu64
					     " (disk ..%" PRIu64 ", ring first %" PRIu64 ")",
					     o, (int)d * 500, v.offset, pi.disk_next_offset,
					     pi.first_offset);
				cr_assert_eq(v.timestamp, ts_of(o));
			}
		}
		bus_consumer_close(c);
		bus_producer_close(p);
		cr_assert_eq(kill(busd, SIGCONT), 0);
	}
	/* The case this is about came up at least once. */
	cr_expect(gap_seen, "no ring's earliest checkpoint was past its spill cursor");
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* Timestamps that repeat and go back: the first record at or after a time
 * is the first in offset order, wherever it is (sealed segments, the
 * active one, the ring); a time before every record is the earliest, one
 * after every record the next one produced. */
#define TS_N 3000u
static int64_t ts_bumpy(uint64_t i)
{
	/* Runs of 7 equal times, every fifth record 3 runs back in time. */
	return 1700000000000000000ll + (int64_t)(i / 7) * 1000 - (i % 5 == 0 ? 3000 : 0);
}

Test(replay, a_seek_by_time_finds_the_first_record_at_or_after_it_across_segments_and_ring)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_LATEST };
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v;
	int64_t tmax = INT64_MIN;

	write_conf("segment_bytes = 16K\n");
	busd_start();
	mk_topic("t", BUS_RING_MIN);
	cr_assert_eq(bus_producer_open(tb, "t", NULL, &p), 0);
	produce(p, TS_N, 100, ts_bumpy, false);
	wait_spilled("t", 1);
	cr_assert_gt(pinfo("t", 0).first_offset, TS_N / 2, "the ring holds too much");
	cr_assert_gt(pinfo("t", 0).disk_segments, 4);
	cr_assert_eq(bus_consumer_open(tb, "t", &co, &c), 0);
	for (uint64_t i = 0; i < TS_N; i++)
		tmax = ts_bumpy(i) > tmax ? ts_bumpy(i) : tmax;
	for (int64_t t = ts_bumpy(0) - 5000; t <= tmax; t += 500) {
		uint64_t want = 0;
		int err;

		while (ts_bumpy(want) < t)
			want++;
		err = bus_consumer_seek(c, 0, BUS_SEEK_TIME, t);
		cr_assert_eq(err, 0, "seek to %" PRId64 ": %s", t, bus_strerror(err));
		v = poll1(c);
		cr_assert_eq(v.offset, want, "seek to %" PRId64 ": offset %" PRIu64 ", want %" PRIu64,
			     t, v.offset, want);
		cr_assert_eq(v.timestamp, ts_bumpy(want));
		cr_assert(intact(v.value, v.value_len, want));
	}
	/* After every record: the next one produced. */
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_TIME, tmax + 1), 0);
	cr_assert_eq(bus_consumer_poll(c, &v, 1, 0), 0);
	produce(p, 1, 100, NULL, false);
	v = poll1(c);
	cr_assert_eq(v.offset, TS_N);
	bus_consumer_close(c);
	bus_producer_close(p);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* bus_consumer_read() with a buffer that holds fewer records than it
 * polled moves the reader back to the first one not copied: on disk, back
 * within the reader's window (bus_seg_rewind()), which needs no descriptor
 * (here: none left to list the log's dir, as a seek would), so reads go on
 * without one.  Were the move a seek, and failed, the records would still
 * be on disk: the next read would return them, none reported lost, or,
 * while the seek kept failing, say why rather than skip them. */
Test(replay, a_read_whose_move_back_on_disk_fails_loses_nothing)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer_stats st;
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_msg m[64];
	uint8_t buf[3 * 100];
	struct rlimit rl, low;
	uint64_t expect = 0;
	int n, fd;

	busd_start();
	mk_topic("r", BUS_RING_MIN);
	cr_assert_eq(bus_producer_open(tb, "r", NULL, &p), 0);
	produce(p, 3000, 100, NULL, false);
	wait_spilled("r", 1);
	cr_assert_gt(pinfo("r", 0).first_offset, 100);
	cr_assert_eq(bus_consumer_open(tb, "r", &co, &c), 0);
	/* On disk, its segment open: a first read. */
	n = bus_consumer_read(c, m, 64, buf, sizeof buf, 0);
	cr_assert_eq(n, 3, "read: %d (%s)", n, n < 0 ? bus_strerror(n) : "");
	for (int i = 0; i < n; i++, expect++)
		cr_assert_eq(m[i].offset, expect);

	/* No descriptor left: the lowest free one is the limit. */
	fd = dup(0);
	cr_assert(fd >= 0);
	close(fd);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	low = rl;
	low.rlim_cur = (rlim_t)fd;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	/* The batches are read from the open segment, the moves back made
	 * in its window. */
	n = bus_consumer_read(c, m, 64, buf, sizeof buf, 0);
	{
		int n2 = bus_consumer_read(c, m + 3, 3, buf, sizeof buf, 0);
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
		cr_assert_eq(n2, 3, "second read without descriptors: %d (%s)", n2,
			     n2 < 0 ? bus_strerror(n2) : "");
	}
	cr_assert_eq(n, 3, "read without descriptors: %d (%s)", n, n < 0 ? bus_strerror(n) : "");
	for (int i = 0; i < 6; i++, expect++)
		cr_assert_eq(m[i].offset, expect);

	/* With descriptors again: every record, in order, none lost. */
	while (expect < 3000) {
		n = bus_consumer_read(c, m, 64, buf, sizeof buf, 1000000000ll);
		cr_assert(n > 0, "read at %" PRIu64 ": %d (%s)", expect, n, n < 0 ? bus_strerror(n) : "");
		for (int i = 0; i < n; i++, expect++) {
			cr_assert_eq(m[i].offset, expect, "offset %" PRIu64 " (lost before %" PRIu64
				     "), want %" PRIu64, m[i].offset, m[i].lost_before, expect);
			cr_assert_eq(m[i].lost_before, 0);
		}
	}
	bus_consumer_stats(c, &st);
	cr_assert_eq(st.lost, 0, "stats.lost %" PRIu64, st.lost);
	bus_consumer_close(c);
	bus_producer_close(p);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* A view of a persistent topic's ring overwritten while in use: the check
 * says so, and the next poll reads that record again, from the log (what
 * the ring lost is on disk), none reported lost. */
Test(replay, a_view_overwritten_in_use_is_read_again_from_the_log)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_LATEST };
	struct bus_consumer_stats st;
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[4];
	uint64_t first;
	int n;

	busd_start();
	mk_topic("o", BUS_RING_MIN);
	cr_assert_eq(bus_producer_open(tb, "o", NULL, &p), 0);
	produce(p, 10, 100, NULL, false);
	cr_assert_eq(bus_consumer_open(tb, "o", &co, &c), 0);
	produce(p, 4, 100, NULL, false);
	n = bus_consumer_poll(c, v, 4, 0);
	cr_assert_eq(n, 4);
	first = v[0].offset;
	cr_assert_eq(first, 10);
	/* Lapped while the views are in use. */
	produce(p, 3000, 100, NULL, false);
	wait_spilled("o", 1);
	cr_assert_gt(pinfo("o", 0).first_offset, first + 4);
	cr_assert_eq(bus_consumer_check(c, v, 4), 0);
	for (uint64_t want = first; want < first + 100; want++) {
		struct bus_view w = poll1(c);
		cr_assert_eq(w.offset, want, "offset %" PRIu64 " (lost before %" PRIu64 "), want %" PRIu64,
			     w.offset, w.lost_before, want);
		cr_assert_eq(w.lost_before, 0);
		cr_assert(intact(w.value, w.value_len, want));
	}
	bus_consumer_stats(c, &st);
	cr_assert_eq(st.lost, 0);
	bus_consumer_close(c);
	bus_producer_close(p);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

/* ------------------------------------- reads with a buffer of a few records */

/* A reboot: the shared memory is gone, the data dir stays. */
static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	return ftw->level ? remove(path) : 0;
}

static void reboot(void)
{
	bus_close(tb);
	tb = NULL;
	nftw(e.shm_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	tb = tenv_bus(&e);
}

/* Record @off of produce_varied(): a value of 8..707 bytes, a key on 1 of
 * 3, and on 1 of 53 no record at all (an aborted claim: a LOST frame). */
static uint32_t vlen_of(uint64_t off)
{
	return 8 + (uint32_t)((off * 2654435761u >> 7) % 700);
}

static uint32_t key_of(uint64_t off, char *k)
{
	return off % 3 ? (uint32_t)sprintf(k, "key-%" PRIu64, off) : 0;
}

static bool aborted(uint64_t off)
{
	return off % 53 == 17;
}

/* Produce the records of offsets @from..@to - 1 (the producer is the
 * partition's only one: offsets come in order). */
static void produce_varied(struct bus_producer *p, uint64_t from, uint64_t to)
{
	int64_t deadline = tnow_ms() + 60000;

	for (uint64_t off = from; off < to;) {
		struct bus_claim cl;
		char k[32];
		uint32_t kl = key_of(off, k);
		int err = bus_producer_claim(p, 0, k, kl, vlen_of(off), &cl);

		if (err == -EAGAIN) {
			cr_assert(tnow_ms() < deadline, "busd spills nothing");
			sleep_ms(1);
			continue;
		}
		cr_assert_eq(err, 0, "claim: %s", bus_strerror(err));
		cr_assert_eq(cl.offset, off);
		fill(cl.value, vlen_of(off), off);
		err = aborted(off) ? bus_producer_abort(p, &cl) : bus_producer_commit(p, &cl, 0);
		cr_assert_eq(err, 0, "commit: %s", bus_strerror(err));
		off++;
	}
}

/* Whether @m (@key, @value, @vl) is record @off, whole. */
static void expect_record(uint64_t off, uint64_t lost_before, uint64_t m_off, uint64_t m_lost,
			  const void *key, uint32_t kl, const void *value, uint32_t vl)
{
	char k[32];
	uint32_t want_kl = key_of(off, k);

	cr_assert_eq(m_off, off, "offset %" PRIu64 " (lost before %" PRIu64 "), want %" PRIu64,
		     m_off, m_lost, off);
	cr_assert_eq(m_lost, lost_before, "record %" PRIu64 ": lost before %" PRIu64 ", want %" PRIu64,
		     off, m_lost, lost_before);
	cr_assert_eq(kl, want_kl, "record %" PRIu64 ": key of %u bytes", off, kl);
	cr_assert(kl == 0 || memcmp(key, k, kl) == 0, "record %" PRIu64 ": key", off);
	cr_assert_eq(vl, vlen_of(off), "record %" PRIu64 ": value of %u bytes", off, vl);
	cr_assert(intact(value, vl, off), "record %" PRIu64 " damaged", off);
}

/* A log of records of varied sizes over many sealed segments, a gap (the
 * offsets a reboot skips) and LOST frames (aborted claims), its end in the
 * active segment and in the ring, replayed with BUS_REPLAY=@replay through
 * bus_consumer_read() with buffers of one to four records (each read
 * polls a batch and moves back to the first record it could not copy:
 * on disk, within the reader's window), now and then a poll of one to
 * three views or a read with room for the smallest records only
 * (-EMSGSIZE for the others): every record once, in order, whole, each lost offset
 * reported once in lost_before and counted once in stats.lost. */
static void read_few_at_a_time(const char *replay)
{
	struct bus_consumer_opts co = { .partition = 0, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer_stats st;
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_msg m[64];
	struct bus_view v[3];
	static uint8_t buf[4 * 720];
	const uint64_t n1 = 2500, n2 = 2500;
	uint64_t floor, end, next = 0, lost = 0, lost_total = 0, records = 0, calls = 0;
	uint64_t too_big = 0;

	write_conf("segment_bytes = 32K\n");
	busd_start();
	mk_topic("few", BUS_RING_MIN);
	cr_assert_eq(bus_producer_open(tb, "few", NULL, &p), 0);
	produce_varied(p, 0, n1);
	wait_spilled("few", 1);
	bus_producer_close(p);
	cr_assert_eq(busd_stop(SIGTERM), 0);
	/* After a reboot busd makes the topic again over its log, at the
	 * offset floor: the offsets from n1 up to it are a gap. */
	reboot();
	busd_start();
	wait_log("are skipped", 10000);
	floor = pinfo("few", 0).next_offset;
	cr_assert_gt(floor, n1);
	end = floor + n2;
	cr_assert_eq(bus_producer_open(tb, "few", NULL, &p), 0);
	produce_varied(p, floor, end);
	wait_spilled("few", 1);
	cr_assert_gt(pinfo("few", 0).disk_segments, 20);
	cr_assert_gt(pinfo("few", 0).first_offset, floor + n2 / 2, "the ring holds too much");
	for (uint64_t o = 0; o < end; o++)
		lost_total += aborted(o) || (o >= n1 && o < floor);

	setenv("BUS_REPLAY", replay, 1);
	cr_assert_eq(bus_consumer_open(tb, "few", &co, &c), 0);
	while (next < end) {
		size_t bl = 720 * (1 + calls % 4);
		int got;

		/* The next record expected, and the offsets lost before it. */
		while (next < end && (aborted(next) || (next >= n1 && next < floor))) {
			next++;
			lost++;
		}
		if (next == end)
			break;
		if (calls++ % 5 == 4) {
			got = bus_consumer_poll(c, v, 1 + (unsigned)(calls % 3), 1000000000ll);
			cr_assert(got > 0, "poll at %" PRIu64 ": %d (%s)", next, got,
				  got < 0 ? bus_strerror(got) : "timeout");
			for (int i = 0; i < got; i++) {
				while (i && (aborted(next) || (next >= n1 && next < floor))) {
					next++;
					lost++;
				}
				expect_record(next, lost, v[i].offset, v[i].lost_before, v[i].key,
					      v[i].key_len, v[i].value, v[i].value_len);
				next++;
				lost = 0;
			}
			records += (uint64_t)got;
			continue;
		}
		if (calls % 7 == 3) {
			/* Room for the smallest records only: the others are
			 * -EMSGSIZE, and stay the next one read. */
			char k[32];
			bl = 40;
			got = bus_consumer_read(c, m, 64, buf, bl, 1000000000ll);
			if (got == -EMSGSIZE) {
				cr_assert_eq(m[0].value_len, key_of(next, k) + vlen_of(next),
					     "record %" PRIu64 ": the size it needs", next);
				too_big++;
				continue;
			}
		} else {
			got = bus_consumer_read(c, m, 64, buf, bl, 1000000000ll);
		}
		cr_assert(got > 0, "read at %" PRIu64 ": %d (%s)", next, got,
			  got < 0 ? bus_strerror(got) : "timeout");
		for (int i = 0; i < got; i++) {
			while (i && (aborted(next) || (next >= n1 && next < floor))) {
				next++;
				lost++;
			}
			expect_record(next, lost, m[i].offset, m[i].lost_before, m[i].key,
				      m[i].key_len, m[i].value, m[i].value_len);
			next++;
			lost = 0;
		}
		records += (uint64_t)got;
	}
	cr_assert_eq(bus_consumer_read(c, m, 64, buf, sizeof buf, 0), 0, "nothing more");
	cr_assert_gt(too_big, 100);
	bus_consumer_stats(c, &st);
	cr_assert_eq(st.records, records, "stats.records %" PRIu64 ", returned %" PRIu64, st.records,
		     records);
	cr_assert_eq(st.lost, lost_total, "stats.lost %" PRIu64 ", want %" PRIu64, st.lost,
		     lost_total);
	bus_consumer_close(c);
	bus_producer_close(p);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(replay, a_read_of_a_few_records_at_a_time_returns_each_once_when_read)
{
	read_few_at_a_time("read");
}

Test(replay, a_read_of_a_few_records_at_a_time_returns_each_once_when_mapped)
{
	read_few_at_a_time("map");
}

/* bus_consumer_read() of a consumer of several partitions
 * on disk (disk_room shared by the partitions of one poll), with buffers
 * of one to four records, -EMSGSIZE now and then, and poll + check:
 * every record of every partition once, in order, whole, lost counted
 * once (the aborted claims), stats.records = records returned. */
static void multi_small_reads(const char *replay)
{
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY, .start = BUS_SEEK_EARLIEST };
	struct bus_consumer_stats st;
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_topic_config cfg;
	struct bus_msg m[64];
	struct bus_view v[8];
	static uint8_t buf[4 * 720];
	enum { NP = 3 };
	const uint64_t n = 2500;
	uint64_t next[NP] = { 0 }, lostp[NP] = { 0 }, records = 0, calls = 0, lost_total = 0;
	bool done;

	write_conf("segment_bytes = 32K\n");
	busd_start();
	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cfg.partitions = NP;
	cr_assert_eq(bus_topic_create(tb, "mp", &cfg), 0);
	cr_assert_eq(bus_producer_open(tb, "mp", NULL, &p), 0);
	for (uint64_t off = 0; off < n; off++) {
		for (int32_t part = 0; part < NP; part++) {
			int64_t deadline = tnow_ms() + 60000;
			for (;;) {
				struct bus_claim cl;
				char k[32];
				uint32_t kl = key_of(off, k);
				int err = bus_producer_claim(p, part, k, kl, vlen_of(off), &cl);
				if (err == -EAGAIN) {
					cr_assert(tnow_ms() < deadline);
					sleep_ms(1);
					continue;
				}
				cr_assert_eq(err, 0, "claim: %s", bus_strerror(err));
				cr_assert_eq(cl.offset, off);
				fill(cl.value, vlen_of(off), off);
				err = aborted(off) ? bus_producer_abort(p, &cl) : bus_producer_commit(p, &cl, 0);
				cr_assert_eq(err, 0);
				break;
			}
		}
		lost_total += aborted(off) ? NP : 0;
	}
	wait_spilled("mp", NP);
	for (uint32_t part = 0; part < NP; part++)
		cr_assert_gt(pinfo("mp", part).first_offset, n / 2);
	setenv("BUS_REPLAY", replay, 1);
	cr_assert_eq(bus_consumer_open(tb, "mp", &co, &c), 0);
	do {
		int got;
		bool viewed = false;
		size_t bl = 720 * (1 + calls % 4);

		if (calls % 5 == 4) {
			got = bus_consumer_poll(c, v, 1 + (unsigned)(calls % 7), 1000000000ll);
			viewed = true;
		} else {
			if (calls % 7 == 3)
				bl = 40;
			got = bus_consumer_read(c, m, 64, buf, bl, 1000000000ll);
		}
		calls++;
		if (got == -EMSGSIZE)
			goto next;
		cr_assert(got > 0, "call %" PRIu64 ": %d (%s)", calls, got,
			  got < 0 ? bus_strerror(got) : "timeout");
		if (viewed) {
			int ok = bus_consumer_check(c, v, (unsigned)got);
			cr_assert_eq(ok, got);
		}
		for (int i = 0; i < got; i++) {
			uint32_t part = viewed ? v[i].partition : m[i].partition;
			uint64_t off = viewed ? v[i].offset : m[i].offset;
			uint64_t lb = viewed ? v[i].lost_before : m[i].lost_before;
			const void *key = viewed ? v[i].key : m[i].key;
			const void *val = viewed ? v[i].value : m[i].value;
			uint32_t kl = viewed ? v[i].key_len : m[i].key_len;
			uint32_t vl = viewed ? v[i].value_len : m[i].value_len;

			cr_assert_lt(part, NP);
			while (aborted(next[part])) {
				next[part]++;
				lostp[part]++;
			}
			expect_record(next[part], lostp[part], off, lb, key, kl, val, vl);
			next[part]++;
			lostp[part] = 0;
		}
		records += (uint64_t)got;
next:
		done = true;
		for (int part = 0; part < NP; part++) {
			while (next[part] < n && aborted(next[part])) {
				/* the aborted tail is read as lost before nothing */
				break;
			}
			done = done && next[part] + (aborted(n - 1) ? 1 : 0) >= n;
		}
	} while (!done);
	bus_consumer_stats(c, &st);
	cr_assert_eq(st.records, records, "stats.records %" PRIu64 ", returned %" PRIu64, st.records,
		     records);
	cr_assert_eq(records, NP * n - lost_total, "records %" PRIu64, records);
	cr_assert_gt(calls, 1000);
	bus_consumer_close(c);
	bus_producer_close(p);
	cr_assert_eq(busd_stop(SIGTERM), 0);
}

Test(replay, a_multi_partition_read_of_a_few_records_returns_each_once_read)
{
	multi_small_reads("read");
}

Test(replay, a_multi_partition_read_of_a_few_records_returns_each_once_mapped)
{
	multi_small_reads("map");
}
