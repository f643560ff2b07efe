/* test_ring.c - appends and reads: density, ordering, keys, headers,
 * zero copy, seeks, exclusive mode, back-pressure, lapping. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "segment.h"
#include "util.h"

TestSuite(ring, .init = tsuite_setup, .fini = tsuite_teardown, .timeout = 120);

static void mk_topic(const char *name, uint32_t parts, uint64_t ring, uint32_t overflow)
{
	struct bus_topic_config cfg;
	int err;

	bus_topic_config_init(&cfg);
	cfg.partitions = parts;
	cfg.ring_size = ring;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.overflow = overflow;
	err = bus_topic_create(b, name, &cfg);
	cr_assert_eq(err, 0, "create %s: %s", name, bus_strerror(err));
}

static int produce_str(struct bus_producer *p, int32_t part, const char *key, const char *val,
		       uint32_t *op, uint64_t *oo)
{
	struct bus_record r = { .key = key, .key_len = key ? (uint32_t)strlen(key) : 0,
				.value = val, .value_len = (uint32_t)strlen(val) };
	return bus_produce(p, part, &r, op, oo);
}

Test(ring, produce_then_poll_returns_records_with_dense_offsets)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[16];
	char val[32];

	mk_topic("t", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "t", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "t", NULL, &c), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 16, 0), 0, "empty topic polls nothing");
	for (int i = 0; i < 10; i++) {
		uint64_t off;
		uint32_t part;
		snprintf(val, sizeof(val), "value-%d", i);
		cr_assert_eq(produce_str(p, BUS_PARTITION_ANY, NULL, val, &part, &off), 0);
		cr_assert_eq(off, (uint64_t)i);
		cr_assert_eq(part, 0u);
	}
	cr_assert_eq(bus_consumer_poll(c, v, 16, 0), 10);
	for (int i = 0; i < 10; i++) {
		snprintf(val, sizeof(val), "value-%d", i);
		cr_assert_eq(v[i].offset, (uint64_t)i);
		cr_assert_eq(v[i].value_len, strlen(val));
		cr_assert(memcmp(v[i].value, val, strlen(val)) == 0);
		cr_assert_eq(v[i].lost_before, 0u);
		cr_assert(v[i].timestamp > 0);
	}
	cr_assert_eq(bus_consumer_check(c, v, 10), 10);
	bus_consumer_close(c);
	bus_producer_close(p);
}

Test(ring, producer_flags_are_checked)
{
	struct bus_producer_opts po = { .flags = 0x80u };
	struct bus_producer *p = NULL;
	struct bus_consumer *c;
	struct bus_view v[4];

	mk_topic("f", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "f", &po, &p), -EINVAL, "an unknown flag is refused");
	cr_assert_null(p);
	po.flags = BUS_PRODUCER_EXCLUSIVE | BUS_PRODUCER_LOW_LATENCY;
	cr_assert_eq(bus_producer_open(b, "f", &po, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "f", NULL, &c), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "small", NULL, NULL), 0);
	char big[600];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	cr_assert_eq(produce_str(p, 0, NULL, big, NULL, NULL), 0, "large frames are not demoted");
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 2);
	cr_assert_eq(v[0].value_len, 5u);
	cr_assert(memcmp(v[0].value, "small", 5) == 0);
	cr_assert_eq(v[1].value_len, strlen(big));
	cr_assert_eq(bus_consumer_check(c, v, 2), 2);
	bus_consumer_close(c);
	bus_producer_close(p);
}

Test(ring, headers_and_keys_round_trip)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_header hs[2] = { { "trace", 5, "abc", 3 }, { "empty", 5, "", 0 } };
	struct bus_record r = { .key = "k1", .key_len = 2, .value = "v", .value_len = 1,
				.timestamp = 12345, .headers = hs, .header_count = 2 };
	struct bus_view v;
	struct bus_header h;

	mk_topic("h", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "h", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "h", NULL, &c), 0);
	cr_assert_eq(bus_produce(p, BUS_PARTITION_ANY, &r, NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, &v, 1, 0), 1);
	cr_assert_eq(v.timestamp, 12345);
	cr_assert_eq(v.key_len, 2u);
	cr_assert(memcmp(v.key, "k1", 2) == 0);
	cr_assert_eq(v.header_count, 2u);
	cr_assert_eq(bus_view_header(&v, 0, &h), 0);
	cr_assert_eq(h.name_len, 5);
	cr_assert(memcmp(h.name, "trace", 5) == 0);
	cr_assert_eq(h.value_len, 3u);
	cr_assert(memcmp(h.value, "abc", 3) == 0);
	cr_assert_eq(bus_view_header(&v, 1, &h), 0);
	cr_assert_eq(h.value_len, 0u);
	cr_assert_eq(bus_view_header(&v, 2, &h), -EINVAL);
	bus_consumer_close(c);
	bus_producer_close(p);
}

Test(ring, keyed_records_land_in_one_partition_in_order)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_msg m[64];
	char buf[1 << 16], key[16], val[32];
	int last[8];
	int32_t kpart[8];
	int total = 0;

	mk_topic("k", 5, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "k", NULL, &p), 0);
	for (int i = 0; i < 800; i++) {
		uint32_t part;
		snprintf(key, sizeof(key), "key%d", i % 8);
		snprintf(val, sizeof(val), "%d", i / 8);
		cr_assert_eq(produce_str(p, BUS_PARTITION_ANY, key, val, &part, NULL), 0);
		cr_assert_eq(part, bus_partition_for_key(key, strlen(key), 5));
	}
	for (int i = 0; i < 8; i++) {
		last[i] = -1;
		kpart[i] = -1;
	}
	cr_assert_eq(bus_consumer_open(b, "k", NULL, &c), 0);
	for (;;) {
		int n = bus_consumer_read(c, m, 64, buf, sizeof(buf), 0);
		cr_assert(n >= 0);
		if (!n)
			break;
		for (int i = 0; i < n; i++) {
			int k = ((char *)m[i].key)[3] - '0';
			int seq = atoi((char *)m[i].value);
			cr_assert(kpart[k] < 0 || kpart[k] == (int32_t)m[i].partition,
				  "key %d in two partitions", k);
			kpart[k] = (int32_t)m[i].partition;
			cr_assert_eq(seq, last[k] + 1, "key %d out of order", k);
			last[k] = seq;
			total++;
		}
	}
	cr_assert_eq(total, 800);
	bus_consumer_close(c);
	bus_producer_close(p);
}

Test(ring, unkeyed_records_go_round_robin)
{
	struct bus_producer *p;
	uint32_t counts[4] = { 0 };

	mk_topic("rr", 4, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "rr", NULL, &p), 0);
	for (int i = 0; i < 400; i++) {
		uint32_t part;
		cr_assert_eq(produce_str(p, BUS_PARTITION_ANY, NULL, "x", &part, NULL), 0);
		counts[part]++;
	}
	for (int i = 0; i < 4; i++)
		cr_assert_eq(counts[i], 100u);
	bus_producer_close(p);
}

Test(ring, zero_copy_claim_commit_and_abort)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_claim cl;
	struct bus_view v[4];

	mk_topic("zc", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "zc", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "zc", NULL, &c), 0);
	cr_assert_eq(bus_producer_claim(p, 0, "key", 3, 5, &cl), 0);
	cr_assert_eq(cl.offset, 0u);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 0, "a claim is invisible before commit");
	memcpy(cl.value, "hello", 5);
	cr_assert_eq(bus_producer_commit(p, &cl, 777), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 8, &cl), 0);
	cr_assert_eq(bus_producer_abort(p, &cl), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "after", NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 2);
	cr_assert_eq(v[0].offset, 0u);
	cr_assert(memcmp(v[0].value, "hello", 5) == 0);
	cr_assert_eq(v[0].timestamp, 777);
	cr_assert_eq(v[1].offset, 2u, "the aborted claim consumed offset 1");
	cr_assert_eq(v[1].lost_before, 1u);
	bus_consumer_close(c);
	bus_producer_close(p);
}

/* Produces rounds of records of every padding length (with keys and
 * headers now and then) through @p, and through @dense in between when
 * given; polls each round and checks every record whole and in order, and
 * that each of @p's frames ends on a cache line (and so starts on one when
 * the frame before was @p's too).  The rounds wrap the ring some times. */
static void check_line_aligned(const char *topic, struct bus_producer *p,
			       struct bus_producer *dense)
{
	struct bus_consumer *c;
	struct bus_consumer_opts co = { .flags = BUS_CONSUMER_GATING };
	struct bus_header hs[1] = { { "h", 1, "vv", 2 } };
	struct bus_view v[64];
	char val[300];
	uint64_t off = 0, aligned_starts = 0, slacked = 0;

	cr_assert_eq(bus_consumer_open(b, topic, &co, &c), 0);
	for (int round = 0; round < 60; round++) {
		bool by_p[40];
		int n = 0;
		for (int i = 0; i < 40; i++, n++) {
			uint32_t len = (uint32_t)((round * 40 + i) * 7 % 300);
			struct bus_record r = { .value = val, .value_len = len };
			memset(val, 'a' + (int)((off + (uint64_t)i) % 26), len);
			if (i % 3 == 1) {
				r.key = "key";
				r.key_len = 3;
			}
			if (i % 5 == 2) {
				r.headers = hs;
				r.header_count = 1;
			}
			by_p[i] = !dense || i % 4 != 3;
			cr_assert_eq(bus_produce(by_p[i] ? p : dense, 0, &r, NULL, NULL), 0);
		}
		cr_assert_eq(bus_consumer_poll(c, v, 64, 0), n);
		for (int i = 0; i < n; i++, off++) {
			const struct bus_frame *f =
				(const struct bus_frame *)((const uint8_t *)v[i].key - BUS_FRAME_HDR);
			uint32_t flen = BUS_COMMIT_LEN(ld_acquire(&f->commit));
			uint32_t need = bus_align8((uint64_t)BUS_FRAME_HDR + v[i].key_len +
						   v[i].headers_len + v[i].value_len);
			cr_assert_eq(v[i].offset, off);
			cr_assert_eq(v[i].value_len, (uint32_t)((round * 40 + i) * 7 % 300));
			for (uint32_t k = 0; k < v[i].value_len; k++)
				cr_assert_eq(((const uint8_t *)v[i].value)[k], 'a' + (int)(off % 26));
			cr_assert_eq(v[i].header_count, i % 5 == 2 ? 1u : 0u);
			cr_assert_eq(flen, need + f->slack, "the slack is the frame's");
			if (!by_p[i]) {
				cr_assert_eq(f->slack, 0, "a dense producer's frame");
				continue;
			}
			cr_assert_eq(((uintptr_t)f + flen) % BUS_CACHELINE, 0,
				     "offset %llu: ends on a line", (unsigned long long)off);
			cr_assert_eq(f->slack % BUS_FRAME_ALIGN, 0);
			cr_assert_leq(f->slack, BUS_SLACK_MAX);
			aligned_starts += (uintptr_t)f % BUS_CACHELINE == 0;
			slacked += f->slack != 0;
		}
		cr_assert_eq(bus_consumer_check(c, v, (unsigned)n), n);
	}
	cr_assert_gt(aligned_starts, off / 2);
	cr_assert_gt(slacked, off / 2);
	bus_consumer_close(c);
}

Test(ring, low_latency_frames_end_on_cache_lines_and_read_back_whole)
{
	struct bus_producer *p, *dense;
	struct bus_producer_opts ll = { .flags = BUS_PRODUCER_LOW_LATENCY };
	struct bus_producer_opts llx = { .flags = BUS_PRODUCER_LOW_LATENCY |
						  BUS_PRODUCER_EXCLUSIVE };

	/* Shared producers: a low-latency one and a dense one in turn. */
	mk_topic("lines", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "lines", &ll, &p), 0);
	cr_assert_eq(bus_producer_open(b, "lines", NULL, &dense), 0);
	check_line_aligned("lines", p, dense);
	bus_producer_close(dense);
	bus_producer_close(p);
	/* An exclusive one: every frame starts on a line. */
	mk_topic("lines-x", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "lines-x", &llx, &p), 0);
	check_line_aligned("lines-x", p, NULL);
	bus_producer_close(p);
}

Test(ring, more_than_65535_headers_are_refused)
{
	struct bus_producer *p;
	struct bus_header h = { "k", 1, "v", 1 };
	struct bus_record r = { .value = "x", .value_len = 1, .headers = &h,
				.header_count = BUS_HEADER_COUNT_MAX + 1 };

	mk_topic("hdrs", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "hdrs", NULL, &p), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), -EINVAL);
	bus_producer_close(p);
}

Test(ring, seek_by_offset_time_latest_and_out_of_range)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[8];
	uint64_t pos;

	mk_topic("s", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_producer_open(b, "s", NULL, &p), 0);
	for (int i = 0; i < 100; i++) {
		struct bus_record r = { .value = &i, .value_len = sizeof(i),
					.timestamp = 1000 + (int64_t)i * 10 };
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	cr_assert_eq(bus_consumer_open(b, "s", NULL, &c), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 42), 0);
	cr_assert_eq(bus_consumer_position(c, 0, &pos), 0);
	cr_assert_eq(pos, 42u);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 1);
	cr_assert_eq(v[0].offset, 42u);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_TIME, 1505), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 1);
	cr_assert_eq(v[0].offset, 51u, "first record at or after the time");
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_LATEST, 0), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 101), -ERANGE);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_EARLIEST, 0), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 1);
	cr_assert_eq(v[0].offset, 0u);
	/* Wrap the ring many times: early offsets fall out of range. */
	for (int i = 0; i < 5000; i++) {
		struct bus_record r = { .value = &i, .value_len = sizeof(i) };
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 3), -ERANGE);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 4900), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 1);
	cr_assert_eq(v[0].offset, 4900u);
	bus_consumer_close(c);
	bus_producer_close(p);
}

Test(ring, exclusive_producer_excludes_other_writers)
{
	struct bus_producer *x, *y, *z;
	struct bus_producer_opts xo = { .flags = BUS_PRODUCER_EXCLUSIVE };
	struct bus_consumer *c;
	struct bus_view v[8];

	mk_topic("x", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "x", NULL, &y), 0);
	cr_assert_eq(produce_str(y, 0, NULL, "before", NULL, NULL), 0);
	cr_assert_eq(bus_producer_open(b, "x", &xo, &x), 0);
	cr_assert_eq(bus_producer_open(b, "x", &xo, &z), 0);
	cr_assert_eq(produce_str(x, 0, NULL, "mine", NULL, NULL), 0);
	cr_assert_eq(produce_str(y, 0, NULL, "refused", NULL, NULL), -BUS_EBUSY);
	cr_assert_eq(produce_str(z, 0, NULL, "refused", NULL, NULL), -BUS_EBUSY);
	bus_producer_close(x);
	cr_assert_eq(produce_str(y, 0, NULL, "after", NULL, NULL), 0);
	cr_assert_eq(bus_consumer_open(b, "x", NULL, &c), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 8, 0), 3);
	cr_assert(memcmp(v[1].value, "mine", 4) == 0);
	cr_assert_eq(v[2].offset, 2u);
	bus_consumer_close(c);
	bus_producer_close(y);
	bus_producer_close(z);
}

Test(ring, block_policy_holds_producer_behind_gating_consumer)
{
	struct bus_producer *p;
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_consumer *c;
	struct bus_view v[64];
	char val[1000];
	int written = 0, err, seen = 0;

	memset(val, 'x', sizeof(val));
	mk_topic("g", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_consumer_open(b, "g", &co, &c), 0);
	cr_assert_eq(bus_producer_open(b, "g", &po, &p), 0);
	for (;;) {
		struct bus_record r = { .value = val, .value_len = sizeof(val) };
		err = bus_produce(p, 0, &r, NULL, NULL);
		if (err)
			break;
		written++;
	}
	cr_assert_eq(err, -EAGAIN, "full ring says would-block: %s", bus_strerror(err));
	cr_assert(written > 50 && written <= (int)(BUS_RING_MIN / sizeof(val)));
	/* The consumer loses nothing and, once it moves, frees room. */
	for (int n; (n = bus_consumer_poll(c, v, 64, 0)) > 0;) {
		for (int i = 0; i < n; i++) {
			cr_assert_eq(v[i].offset, (uint64_t)seen);
			cr_assert_eq(v[i].lost_before, 0u);
			seen++;
		}
	}
	cr_assert_eq(seen, written);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 0); /* releases the last views */
	{
		struct bus_record r = { .value = val, .value_len = sizeof(val) };
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	bus_consumer_close(c);
	bus_producer_close(p);
}

/* After each commit the horizon leads the tail by at least 1/32 ring (it
 * was raised then, not before the next frame: producer.c, raise_ahead())
 * and by at most 3/32; on a gated topic it never passes the gating
 * consumer's lap, and a raise asked with a lower limit never lowers it. */
Test(ring, horizon_is_raised_ahead_after_each_commit_and_never_past_the_limit)
{
	static const unsigned flags[] = { 0, BUS_PRODUCER_EXCLUSIVE,
					  BUS_PRODUCER_EXCLUSIVE | BUS_PRODUCER_LOW_LATENCY };
	const uint64_t size = BUS_RING_MIN;
	const uint64_t ahead = size >> BUS_HZ_AHEAD_SHIFT, step = size >> BUS_HZ_STEP_SHIFT;
	char val[200], name[16];

	memset(val, 'h', sizeof(val));
	for (unsigned k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
		struct bus_producer_opts po = { .flags = flags[k] };
		struct bus_producer *p;
		struct bus_topic *t;
		snprintf(name, sizeof(name), "hz%u", k);
		mk_topic(name, 1, size, BUS_OVERFLOW_OVERWRITE);
		cr_assert_eq(bus_topic_get(b, name, &t), 0);
		cr_assert_eq(bus_producer_open(b, name, &po, &p), 0);
		for (int i = 0; i < 3000; i++) {
			struct bus_record r = { .value = val, .value_len = 1 + (uint32_t)(i * 37) % 200 };
			cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
			uint64_t tail = ld_acquire(&t->rings[0].hdr->tail.pos);
			uint64_t hz = ld_acquire(&t->rings[0].hdr->horizon);
			cr_assert_geq(hz, tail + BUS_FRAME_ALIGN + ahead,
				      "flags %#x, record %d: horizon %lu, tail %lu", flags[k], i,
				      (unsigned long)hz, (unsigned long)tail);
			cr_assert_leq(hz, tail + BUS_FRAME_ALIGN + ahead + step,
				      "flags %#x, record %d: horizon %lu, tail %lu", flags[k], i,
				      (unsigned long)hz, (unsigned long)tail);
		}
		bus_producer_close(p);
		bus_topic_put(t);
	}

	/* Gated: the consumer stays at 0, so the horizon stays within a lap. */
	{
		struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
		struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
		struct bus_producer *p;
		struct bus_consumer *c;
		struct bus_topic *t;
		uint64_t hz, cached;
		int err, written = 0;
		mk_topic("hzg", 1, size, BUS_OVERFLOW_BLOCK);
		cr_assert_eq(bus_topic_get(b, "hzg", &t), 0);
		cr_assert_eq(bus_consumer_open(b, "hzg", &co, &c), 0);
		cr_assert_eq(bus_producer_open(b, "hzg", &po, &p), 0);
		for (;;) {
			struct bus_record r = { .value = val, .value_len = sizeof(val) };
			if ((err = bus_produce(p, 0, &r, NULL, NULL)) != 0)
				break;
			written++;
			hz = ld_acquire(&t->rings[0].hdr->horizon);
			cr_assert_leq(hz, size, "record %d: horizon %lu past the gating lap",
				      written, (unsigned long)hz);
		}
		cr_assert_eq(err, -EAGAIN, "%s", bus_strerror(err));
		cr_assert_gt(written, (int)(size / 2 / sizeof(val)));
		hz = ld_acquire(&t->rings[0].hdr->horizon);
		bus_ring_raise_horizon(&t->rings[0], hz + size / 8, hz / 2, &cached);
		cr_assert_eq(ld_acquire(&t->rings[0].hdr->horizon), hz, "a lower limit lowered it");
		cr_assert_eq(cached, hz);
		bus_consumer_close(c);
		bus_producer_close(p);
		bus_topic_put(t);
	}
}

Test(ring, persistent_topic_without_daemon_says_start_busd)
{
	struct bus_topic_config cfg;
	struct bus_producer *p;
	char val[1000];
	int err = 0;

	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cr_assert_eq(bus_topic_create(b, "persist", &cfg), 0);
	cr_assert_eq(bus_producer_open(b, "persist", NULL, &p), 0);
	memset(val, 'p', sizeof(val));
	for (int i = 0; i < 1000 && !err; i++) {
		struct bus_record r = { .value = val, .value_len = sizeof(val) };
		err = bus_produce(p, 0, &r, NULL, NULL);
	}
	cr_assert_eq(err, -BUS_ENODAEMON, "got %s", bus_strerror(err));
	cr_assert(strstr(bus_strerror(err), "busd"));
	bus_producer_close(p);
}

/* A persistent topic's ring of one partition, without a daemon: the
 * offset floor is marked durable by hand, as busd does when it takes the
 * partition, and the records below fit in the first lap (nobody waits for
 * the spiller).  busd's own path is test_busd.c's. */
static struct bus_topic *mk_persistent(const char *name)
{
	struct bus_topic_config cfg;
	struct bus_topic *t;

	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cr_assert_eq(bus_topic_create(b, name, &cfg), 0);
	cr_assert_eq(bus_topic_get(b, name, &t), 0);
	st_release(&t->rings[0].hdr->floor_ok, 1);
	return t;
}

static const struct bus_frame *frame_at_pos(struct bus_topic *t, uint64_t pos)
{
	struct bus_ring *r = &t->rings[0];
	return (const struct bus_frame *)(r->data + (pos & r->mask));
}

/* Walks the published frames from position 0; checks each DATA frame's
 * claim word: the producer's sum when @summed (its CRC that of the frame as
 * a log stores it, padding zeroed), else the claim.  Returns the count. */
static uint64_t check_sums(struct bus_topic *t, bool summed, int32_t pid)
{
	uint64_t pos = 0, off = 0, tail = ld_acquire(&t->rings[0].hdr->tail.pos);

	while (pos < tail) {
		const struct bus_frame *f = frame_at_pos(t, pos);
		uint64_t w = ld_acquire(&f->commit);
		uint64_t cl = ld_relaxed(&f->claim);
		uint32_t len = BUS_COMMIT_LEN(w);
		uint32_t plen = BUS_FRAME_HDR + f->key_len + f->headers_len + f->value_len;

		cr_assert_eq(BUS_COMMIT_TAG(w), (uint32_t)off, "frame at %llu",
			     (unsigned long long)pos);
		if (BUS_COMMIT_TYPE(w) == BUS_FRAME_DATA && summed) {
			cr_assert(BUS_CLAIM_IS_SUM(cl, off), "offset %llu: claim word %llx",
				  (unsigned long long)off, (unsigned long long)cl);
			cr_assert_lt(BUS_CLAIM_PID(cl), 0, "a sum never reads as a claim");
			for (uint32_t i = plen; i < len; i++)
				cr_assert_eq(((const uint8_t *)f)[i], 0, "padding zeroed");
			cr_assert_eq(BUS_CLAIM_CRC(cl), bus_seg_frame_crc(w, f, len),
				     "offset %llu: the sum is the frame's CRC",
				     (unsigned long long)off);
		} else if (BUS_COMMIT_TYPE(w) == BUS_FRAME_DATA) {
			cr_assert_eq(cl, BUS_CLAIM(pid, off), "no sum on an ephemeral topic");
		}
		pos += len;
		off++;
	}
	return off;
}

Test(ring, producers_of_persistent_topics_store_each_frames_crc)
{
	struct bus_topic *t = mk_persistent("summed");
	struct bus_producer *p;
	struct bus_claim cl;
	char key[16], val[300];
	struct bus_header hs[2] = { { "h", 1, "v", 1 }, { "trace", 5, "abcdefg", 7 } };
	uint64_t n = 0;

	cr_assert_eq(bus_producer_open(b, "summed", NULL, &p), 0);
	/* Every padding length (values of 0..299 bytes), keys, headers, and
	 * padding full of old bytes, as a lapped ring has it. */
	memset(t->rings[0].data, 0xA5, 64 << 10);
	memset(val, 'x', sizeof(val));
	for (uint32_t i = 0; i < 300; i += 7, n++) {
		struct bus_record r = { .value = val, .value_len = i };
		snprintf(key, sizeof(key), "k%u", i);
		if (i % 3 == 1) {
			r.key = key;
			r.key_len = (uint32_t)strlen(key);
		}
		if (i % 5 == 2) {
			r.headers = hs;
			r.header_count = 2;
		}
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	/* The zero-copy path, with a value written after the claim. */
	cr_assert_eq(bus_producer_claim(p, 0, "zk", 2, 13, &cl), 0);
	memcpy(cl.value, "thirteen byte", 13);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 8, &cl), 0);
	cr_assert_eq(bus_producer_abort(p, &cl), 0);
	n += 2;
	cr_assert_eq(check_sums(t, true, 0), n);
	bus_producer_close(p);

	/* The same with an exclusive producer. */
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_EXCLUSIVE };
	cr_assert_eq(bus_producer_open(b, "summed", &po, &p), 0);
	for (uint32_t i = 0; i < 40; i++, n++) {
		struct bus_record r = { .value = val, .value_len = i * 3 };
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	cr_assert_eq(check_sums(t, true, 0), n);
	bus_producer_close(p);

	/* Low-latency producers, shared and exclusive: the slack that ends
	 * their frames on a line is zeroed and summed with the frame. */
	for (int x = 0; x < 2; x++) {
		po.flags = BUS_PRODUCER_LOW_LATENCY | (x ? BUS_PRODUCER_EXCLUSIVE : 0);
		cr_assert_eq(bus_producer_open(b, "summed", &po, &p), 0);
		for (uint32_t i = 0; i < 40; i++, n++) {
			struct bus_record r = { .value = val, .value_len = i * 5 };
			cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
		}
		cr_assert_eq(bus_producer_claim(p, 0, "zk", 2, 13, &cl), 0);
		memcpy(cl.value, "thirteen byte", 13);
		cr_assert_eq(bus_producer_commit(p, &cl, 0), 0);
		n++;
		cr_assert_eq(check_sums(t, true, 0), n);
		bus_producer_close(p);
	}
	bus_topic_put(t);

	/* An ephemeral topic never spills: its producers pay for no CRC. */
	mk_topic("unsummed", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "unsummed", &t), 0);
	cr_assert_eq(bus_producer_open(b, "unsummed", NULL, &p), 0);
	for (uint32_t i = 0; i < 10; i++)
		cr_assert_eq(produce_str(p, 0, NULL, "plain", NULL, NULL), 0);
	cr_assert_eq(check_sums(t, false, (int32_t)getpid()), 10u);
	bus_producer_close(p);
	bus_topic_put(t);
}

Test(ring, a_frame_summed_but_never_published_is_repaired_only_after_the_timeout)
{
	struct bus_topic *t = mk_persistent("halfway");
	struct bus_ring *r = &t->rings[0];
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_claim cl;
	struct bus_view v[4];
	struct bus_frame *f;

	cr_assert_eq(bus_producer_open(b, "halfway", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "halfway", NULL, &c), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 24, &cl), 0);
	cr_assert_eq(bus_ring_repair(r, cl.priv_pos, cl.offset, false), 0,
		     "a live claimant is repaired only when forced");
	/* Its producer stops where publish() has stored the sum and not yet
	 * the commit word: the pid is gone from the claim word. */
	f = (struct bus_frame *)(r->data + (cl.priv_pos & r->mask));
	memset(cl.value, 's', 24);
	st_release(&f->claim, BUS_CLAIM_SUM(cl.offset, 0x1234));
	cr_assert_eq(bus_ring_repair(r, cl.priv_pos, cl.offset, false), 0,
		     "without force a sum is left alone: its producer publishes next");
	cr_assert_eq(bus_ring_repair(r, cl.priv_pos, cl.offset, true), 1,
		     "forced (stalled past the timeout): repaired");
	cr_assert_eq(BUS_COMMIT_TYPE(ld_acquire(&f->commit)), BUS_FRAME_LOST);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), -BUS_EREPAIRED,
		     "its producer learns that its record was lost");
	cr_assert_eq(produce_str(p, 0, NULL, "next", NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 1);
	cr_assert_eq(v[0].offset, 1u);
	cr_assert_eq(v[0].lost_before, 1u, "exactly the one record is missing");
	bus_consumer_close(c);
	bus_producer_close(p);

	/* Under a live exclusive producer even a forced repair waits: its
	 * plain commit store cannot be fenced. */
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_EXCLUSIVE };
	cr_assert_eq(bus_producer_open(b, "halfway", &po, &p), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 24, &cl), 0);
	f = (struct bus_frame *)(r->data + (cl.priv_pos & r->mask));
	st_release(&f->claim, BUS_CLAIM_SUM(cl.offset, 0x1234));
	cr_assert_eq(bus_ring_repair(r, cl.priv_pos, cl.offset, true), 0);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), 0);
	bus_producer_close(p);
	bus_topic_put(t);
}

/* A gating consumer that registers after the producer started (when no
 * cursor gated it, so its limit was "never") holds it back from then on:
 * the producer takes its limit again before each raise of the horizon. */
Test(ring, a_gating_consumer_that_joins_late_holds_the_producer_back)
{
	struct bus_producer *p;
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_consumer *c;
	struct bus_view v[64];
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	int written = 0, err, seen = 0;

	mk_topic("late", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "late", &po, &p), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0, "no gating consumer yet");
	cr_assert_eq(bus_consumer_open(b, "late", &co, &c), 0);
	while ((err = bus_produce(p, 0, &r, NULL, NULL)) == 0 && written < 1000)
		written++;
	cr_assert_eq(err, -EAGAIN, "the late gating consumer holds the producer back after %d: %s",
		     written, bus_strerror(err));
	cr_assert_leq(written + 1, (int)(BUS_RING_MIN / sizeof(val)));
	for (int n; (n = bus_consumer_poll(c, v, 64, 0)) > 0;) {
		for (int i = 0; i < n; i++) {
			cr_assert_eq(v[i].offset, (uint64_t)seen);
			cr_assert_eq(v[i].lost_before, 0u, "nothing lost at offset %d", seen);
			seen++;
		}
	}
	cr_assert_eq(seen, written + 1);
	bus_consumer_close(c);
	bus_producer_close(p);
}

/* The owner of a claim that has no claim word yet may be a live exclusive
 * producer between its tail store and its header: even a forced repair
 * leaves it alone (its commit is a plain store), and its record arrives. */
Test(ring, a_claim_without_its_claim_word_is_not_repaired_under_a_live_exclusive_producer)
{
	struct bus_producer *p;
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_EXCLUSIVE };
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_claim cl;
	struct bus_view v[4];
	struct bus_frame *f;

	mk_topic("exr", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b, "exr", &t), 0);
	cr_assert_eq(bus_producer_open(b, "exr", &po, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "exr", NULL, &c), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 8, &cl), 0);
	/* As if it had stopped before frame_fill(). */
	f = (struct bus_frame *)(t->rings[0].data + (cl.priv_pos & t->rings[0].mask));
	st_release(&f->claim, 0);
	cr_assert_eq(bus_ring_repair(&t->rings[0], cl.priv_pos, cl.offset, true), 0);
	cr_assert_eq(ld_acquire(&t->rings[0].hdr->repaired), 0u);
	memcpy(cl.value, "whole!!!", 8);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 1);
	cr_assert_eq(v[0].lost_before, 0u);
	cr_assert(memcmp(v[0].value, "whole!!!", 8) == 0);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_topic_put(t);
}

/* A pid that is surely not running: a child that exited and was reaped. */
static int32_t dead_pid(void)
{
	pid_t ch = fork();

	cr_assert_neq(ch, -1);
	if (ch == 0)
		_exit(0);
	cr_assert_eq(waitpid(ch, NULL, 0), ch);
	return (int32_t)ch;
}

/* Forge, in a child that then dies, what reserve() leaves when its process
 * is killed right after the claim CAS: an intent in producer slot @slot
 * ({@pos, @off} to @end), the claim if @win, the raise.  Returns the pid. */
static int32_t die_after_claim(struct bus_ring *r, unsigned slot, uint64_t pos, uint64_t off,
			       uint64_t end, bool win)
{
	pid_t ch = fork();

	cr_assert_neq(ch, -1);
	if (ch == 0) {
		struct bus_pslot *sl = &r->hdr->pslot[slot];
		uint64_t p0 = pos, o0 = off, hz;
		uint64_t zero = 0;
		if (!atomic_compare_exchange_strong(&sl->owner, &zero, BUS_OWNER(getpid(), 0)))
			_exit(4);
		st_relaxed(&sl->off, off);
		st_relaxed(&sl->end, end);
		st_release(&sl->pos, pos);
		if (win) {
			if (!bus_tail_cas(&r->hdr->tail, &p0, &o0, end, o0 + 1))
				_exit(3);
			bus_ring_raise_horizon(r, end, UINT64_MAX, &hz);
		}
		_exit(0);
	}
	cr_assert_eq(waitpid(ch, NULL, 0), ch);
	return (int32_t)ch;
}

/* A producer that dies right after its claim CAS, when the claim wraps
 * (padding to the lap's end, then its frame at the lap's start), before it
 * published the padding: it is repaired as padding plus a LOST frame, and
 * readers go on past it with the one record counted. */
Test(ring, a_dead_claim_that_wraps_is_repaired_as_padding_and_a_lost_record)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_ring *r;
	struct bus_view v[64];
	static char val[1000];
	struct bus_record rec = { .value = val, .value_len = sizeof(val) };
	uint64_t pos, off, seen = 0, lost = 0, flen = bus_align8(BUS_FRAME_HDR + sizeof(val));
	uint64_t last = 0;
	int64_t deadline;

	mk_topic("wrapdead", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "wrapdead", &t), 0);
	r = &t->rings[0];
	cr_assert_eq(bus_producer_open(b, "wrapdead", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "wrapdead", NULL, &c), 0);
	/* Fill until the room left before the lap's end is less than a frame. */
	while (r->size - (ld_acquire(&r->hdr->tail.pos) & r->mask) >= flen) {
		cr_assert_eq(bus_produce(p, 0, &rec, NULL, NULL), 0);
		int n = bus_consumer_poll(c, v, 64, 0);
		for (int i = 0; i < n; i++)
			seen++;
	}
	bus_tail_read(&r->hdr->tail, &pos, &off);
	/* reserve(), concurrent path, up to and not including the padding's
	 * stores, then death. */
	die_after_claim(r, BUS_PRODUCERS_MAX - 1, pos, off, pos + (r->size - (pos & r->mask)) + flen,
			true);
	/* Another producer appends after it: the dead claim is not the last
	 * one, and only its slot tells its length. */
	cr_assert_eq(produce_str(p, 0, NULL, "after", NULL, NULL), 0);
	/* The consumer finds the claim dead and repairs it (its slot names
	 * its owner, gone: no timeout needed), then reads on. */
	deadline = bus_mono_ns() + 10000000000ll;
	while (last < off + 1 && bus_mono_ns() < deadline) {
		int n = bus_consumer_poll(c, v, 64, 10000000);
		cr_assert_geq(n, 0, "%s", bus_strerror(n));
		for (int i = 0; i < n; i++) {
			lost += v[i].lost_before;
			last = v[i].offset;
			seen++;
		}
	}
	cr_assert_eq(last, off + 1, "the record after the dead claim arrives");
	cr_assert_eq(lost, 1u, "exactly the dead claim's record is missing");
	cr_assert_eq(seen, off + 1);
	cr_assert_eq(ld_acquire(&r->hdr->repaired), 1u);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_topic_put(t);
}

/* The repair of a dead claim that wraps is two stores (ring.c,
 * repair_wrap()): the LOST frame at the lap's start, then the padding that
 * sends readers to it.  A repairer killed between the two (a consumer, a
 * producer or busd: any reader repairs) leaves the LOST frame and no
 * padding.  The next repairer completes the padding, so readers go on
 * with the one record counted (once), rather than wait at the padding's
 * place for ever (the LOST frame made every later repair take the claim
 * for published).  The dead repairer's first half is forged here, as
 * repair_wrap() makes it. */
Test(ring, a_repairer_killed_inside_the_repair_of_a_wrapping_claim_leaves_it_to_the_next)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_ring *r;
	struct bus_view v[64];
	static char val[1000];
	struct bus_record rec = { .value = val, .value_len = sizeof(val) };
	uint64_t pos, off, end, q, hz, seen = 0, lost = 0;
	uint64_t flen = bus_align8(BUS_FRAME_HDR + sizeof(val)), last = 0;
	struct bus_frame *qf;
	int64_t deadline;

	mk_topic("wrapkill", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "wrapkill", &t), 0);
	r = &t->rings[0];
	cr_assert_eq(bus_producer_open(b, "wrapkill", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "wrapkill", NULL, &c), 0);
	while (r->size - (ld_acquire(&r->hdr->tail.pos) & r->mask) >= flen) {
		cr_assert_eq(bus_produce(p, 0, &rec, NULL, NULL), 0);
		int n = bus_consumer_poll(c, v, 64, 0);
		cr_assert_geq(n, 0);
		seen += (uint64_t)n;
	}
	bus_tail_read(&r->hdr->tail, &pos, &off);
	q = pos + (r->size - (pos & r->mask));
	end = q + flen;
	die_after_claim(r, BUS_PRODUCERS_MAX - 1, pos, off, end, true);
	/* The killed repairer's first half: raise, zero ahead, LOST frame,
	 * count. */
	bus_ring_raise_horizon(r, end, end + BUS_FRAME_ALIGN, &hz);
	bus_ring_zero_ahead(r, end, off + 1);
	qf = (struct bus_frame *)(r->data + (q & r->mask));
	st_release(&qf->commit, BUS_COMMIT(BUS_FRAME_LOST, flen, off));
	atomic_fetch_add(&r->hdr->repaired, 1);
	cr_assert_eq(produce_str(p, 0, NULL, "after", NULL, NULL), 0);
	deadline = bus_mono_ns() + 5000000000ll;
	while (last < off + 1 && bus_mono_ns() < deadline) {
		int n = bus_consumer_poll(c, v, 64, 10000000);
		cr_assert_geq(n, 0, "%s", bus_strerror(n));
		for (int i = 0; i < n; i++) {
			lost += v[i].lost_before;
			last = v[i].offset;
			seen++;
		}
	}
	cr_assert_eq(last, off + 1, "the record after the half-repaired claim arrives");
	cr_assert_eq(lost, 1u, "exactly the dead claim's record is missing");
	cr_assert_eq(seen, off + 1);
	cr_assert_eq(ld_acquire(&r->hdr->repaired), 1u, "the repair is counted once");
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_topic_put(t);
}

/* A producer killed between its claim CAS and its claim word, with records
 * of others claimed after it: its slot says how long its claim is (the
 * tail no longer does), so it is repaired at once (its owner is dead), and
 * exactly its record is missing.  A producer that lost the CAS for the
 * same claim and died before its next try left an intent that names the
 * claim too, with another length: the record after tells which is right. */
Test(ring, a_dead_claim_without_its_claim_word_is_repaired_though_others_claimed_after_it)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_ring *r;
	struct bus_view v[16];
	uint64_t pos, off, flen = bus_align8(BUS_FRAME_HDR + 5);
	int n;

	mk_topic("deadclaim", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "deadclaim", &t), 0);
	r = &t->rings[0];
	cr_assert_eq(bus_producer_open(b, "deadclaim", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "deadclaim", NULL, &c), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(produce_str(p, 0, NULL, "early", NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 16, 0), 3);
	bus_tail_read(&r->hdr->tail, &pos, &off);
	die_after_claim(r, BUS_PRODUCERS_MAX - 2, pos, off, pos + 3 * flen, false); /* lost */
	die_after_claim(r, BUS_PRODUCERS_MAX - 1, pos, off, pos + flen, true);      /* won */
	cr_assert_eq(produce_str(p, 0, NULL, "after", NULL, NULL), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "later", NULL, NULL), 0);
	n = bus_consumer_poll(c, v, 16, 1000000000);
	cr_assert_eq(n, 2, "the claim is repaired and the records after it read: %d (%s)", n,
		     n < 0 ? bus_strerror(n) : "");
	cr_assert_eq(v[0].offset, off + 1);
	cr_assert_eq(v[0].lost_before, 1u);
	cr_assert(memcmp(v[0].value, "after", 5) == 0);
	cr_assert_eq(v[1].lost_before, 0u);
	cr_assert_eq(ld_acquire(&r->hdr->repaired), 1u);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_topic_put(t);
}

/* Two producers die in one claim race: the winner claimed lenW bytes, the
 * loser's intent names the same claim with a length that ends exactly at
 * the lap's end.  The next record then wraps: its padding starts at the
 * winner's end and its frame at the lap's start, so both ends "start" the
 * next offset.  The repair takes the smaller verified end (the winner's),
 * and readers read both records after the dead claim with exactly one
 * record counted lost.  (Before 5c59271 no end won, and the partition
 * stalled until the stuck-claim timeout, then lost more.) */
Test(ring, two_dead_claimants_whose_ends_both_start_the_next_record_resolve_to_the_smaller)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_consumer_opts co = { .flags = BUS_CONSUMER_GATING };
	struct bus_topic *t;
	struct bus_ring *r;
	struct bus_view v[16];
	static char val[1000];
	struct bus_record rec = { .value = val, .value_len = sizeof(val) };
	uint64_t pos, off, room, lost = 0, got = 0;
	int64_t deadline;

	memset(val, 'p', sizeof(val));
	mk_topic("ambig", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "ambig", &t), 0);
	r = &t->rings[0];
	cr_assert_eq(bus_producer_open(b, "ambig", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "ambig", &co, &c), 0);
	/* Fill until less than 3 frames' room is left before the lap's end. */
	while (r->size - (ld_acquire(&r->hdr->tail.pos) & r->mask) >= 3000) {
		cr_assert_eq(bus_produce(p, 0, &rec, NULL, NULL), 0);
		while (bus_consumer_poll(c, v, 16, 0) > 0)
			;
	}
	bus_tail_read(&r->hdr->tail, &pos, &off);
	room = r->size - (pos & r->mask);
	cr_assert_gt(room, 512 + BUS_FRAME_HDR);
	die_after_claim(r, BUS_PRODUCERS_MAX - 2, pos, off, pos + room, false);   /* lost */
	die_after_claim(r, BUS_PRODUCERS_MAX - 1, pos, off, pos + room - 512, true); /* won */
	/* 512 bytes are left after the winner's claim: the next frame wraps. */
	cr_assert_eq(bus_produce(p, 0, &rec, NULL, NULL), 0);
	cr_assert_eq(bus_produce(p, 0, &rec, NULL, NULL), 0);
	deadline = bus_mono_ns() + 10000000000ll;
	while (got < 2 && bus_mono_ns() < deadline) {
		int n = bus_consumer_poll(c, v, 16, 10000000);
		cr_assert_geq(n, 0, "%s", bus_strerror(n));
		for (int i = 0; i < n; i++) {
			cr_assert_eq(v[i].offset, off + 1 + got);
			cr_assert_eq(v[i].value_len, sizeof(val));
			cr_assert(memcmp(v[i].value, val, sizeof(val)) == 0);
			lost += v[i].lost_before;
			got++;
		}
	}
	cr_assert_eq(got, 2, "both records after the dead claim are read");
	cr_assert_eq(lost, 1u, "exactly the dead claim's record is missing");
	cr_assert_eq(ld_acquire(&r->hdr->repaired), 1u);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_topic_put(t);
}

/* A raiser reads a stalled producer's slot without a lock: its position,
 * then its offset.  In between, the owner may publish that claim and store
 * its next intent, so the pair read is {old position, new offset}.  A
 * forced repair with that pair must leave the published record alone (it
 * is whole, with the offset before), and the owner's next claim still
 * commits: nothing is lost. */
Test(ring, a_repair_with_a_position_and_an_offset_of_different_claims_changes_nothing)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_ring *r;
	struct bus_pslot *sl = NULL;
	struct bus_claim cl;
	struct bus_view v[16];
	const struct bus_frame *f;
	const char *want[] = { "zero", "B-record", "C-record", "after" };
	uint64_t pos_read, off_read, w;
	int rc, n;

	mk_topic("mispair", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b, "mispair", &t), 0);
	r = &t->rings[0];
	cr_assert_eq(bus_producer_open(b, "mispair", NULL, &p), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "zero", NULL, NULL), 0);
	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++)
		if (BUS_OWNER_PID(ld_acquire(&r->hdr->pslot[i].owner)) == getpid())
			sl = &r->hdr->pslot[i];
	cr_assert(sl, "the producer holds a slot");
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 8, &cl), 0);
	pos_read = ld_acquire(&sl->pos); /* the raiser reads the position ... */
	memcpy(cl.value, "B-record", 8);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), 0); /* the owner publishes */
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 8, &cl), 0); /* and claims again */
	off_read = ld_acquire(&sl->off); /* ... then the offset */
	cr_assert_eq(off_read, 2u);
	rc = bus_ring_repair(r, pos_read, off_read, true);
	cr_assert_neq(rc, 1, "a record already published must not be repaired");
	f = (const struct bus_frame *)(r->data + (pos_read & r->mask));
	w = ld_acquire(&f->commit);
	cr_assert_eq(BUS_COMMIT_TYPE(w), BUS_FRAME_DATA);
	cr_assert_eq(BUS_COMMIT_TAG(w), 1u, "the record at the position is still offset 1");
	memcpy(cl.value, "C-record", 8);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), 0, "the owner's next claim still commits");
	cr_assert_eq(produce_str(p, 0, NULL, "after", NULL, NULL), 0);
	cr_assert_eq(bus_consumer_open(b, "mispair", NULL, &c), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_EARLIEST, 0), 0);
	n = bus_consumer_poll(c, v, 16, 1000000000);
	cr_assert_eq(n, 4, "%d (%s)", n, n < 0 ? bus_strerror(n) : "");
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(v[i].offset, (uint64_t)i);
		cr_assert_eq(v[i].lost_before, 0u);
		cr_assert_eq(v[i].value_len, strlen(want[i]));
		cr_assert(memcmp(v[i].value, want[i], strlen(want[i])) == 0, "record %d", i);
	}
	cr_assert_eq(ld_acquire(&r->hdr->repaired), 0u);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_topic_put(t);
}

/* A producer holding a claim (zero copy, or stalled) while others produce
 * more than a ring after it on an overwrite topic: they never lap its frame
 * before the stuck-claim timeout (its late writes would land on their newer
 * records, and its commit would publish them torn).  Past the timeout they
 * repair it, it learns so at commit, and readers count its record lost. */
static void never_lap_a_claim_in_flight(const char *topic, bool wrap)
{
	struct bus_opts o = env.opts;
	struct bus *b2;
	struct bus_producer *a, *p;
	struct bus_consumer *c;
	struct bus_claim cl;
	struct bus_view v[64];
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	uint64_t seen = 0, lost = 0, next = 0;
	int64_t t0, waited;
	int n, err;

	memset(val, 'p', sizeof(val));
	o.stuck_claim_ns = 200000000; /* 200 ms */
	cr_assert_eq(bus_open(&b2, &o), 0);
	mk_topic(topic, 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_producer_open(b2, topic, NULL, &a), 0);
	cr_assert_eq(bus_producer_open(b2, topic, NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b2, topic, NULL, &c), 0);
	if (wrap) {
		/* Its claim wraps: the padding to the lap's end is published
		 * at once (reserve()), its frame at the lap's start is not. */
		struct bus_topic *t;
		cr_assert_eq(bus_topic_get(b2, topic, &t), 0);
		while (t->rings[0].size - (ld_acquire(&t->rings[0].hdr->tail.pos) & t->rings[0].mask) >=
		       BUS_FRAME_HDR + sizeof(val))
			cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
		bus_topic_put(t);
		cr_assert_eq(bus_producer_claim(a, 0, NULL, 0, sizeof(val), &cl), 0);
	} else {
		cr_assert_eq(bus_producer_claim(a, 0, NULL, 0, 8, &cl), 0);
	}
	memset(cl.value, 'a', 8); /* its value, before it stalls */
	memset(val, 'p', sizeof(val));
	t0 = tnow_ms();
	for (int i = 0; i < 2 * (int)(BUS_RING_MIN / sizeof(val)); i++)
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	waited = tnow_ms() - t0;
	cr_assert_geq(waited, 200, "lapped the claim after %lld ms, before the timeout",
		      (long long)waited);
	/* It resumes late and commits. */
	err = bus_producer_commit(a, &cl, 0);
	cr_assert_eq(err, -BUS_EREPAIRED, "a late commit must not publish: %s", bus_strerror(err));
	/* Every record a reader gets is whole, and what it missed is counted. */
	while ((n = bus_consumer_poll(c, v, 64, 0)) > 0) {
		for (int i = 0; i < n; i++) {
			cr_assert_eq(v[i].value_len, sizeof(val));
			for (size_t k = 0; k < sizeof(val); k++)
				cr_assert_eq(((const char *)v[i].value)[k], 'p', "torn record %llu",
					     (unsigned long long)v[i].offset);
			cr_assert_geq(v[i].offset, next);
			lost += v[i].lost_before;
			next = v[i].offset + 1;
			seen++;
		}
		cr_assert_eq(bus_consumer_check(c, v, (unsigned)n), n);
	}
	cr_assert_geq(n, 0, "%s", bus_strerror(n));
	cr_assert_eq(seen + lost, next, "every offset read or counted lost");
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_producer_close(a);
	bus_close(b2);
}

Test(ring, producers_never_lap_a_claim_in_flight_before_the_stuck_timeout)
{
	never_lap_a_claim_in_flight("inflight", false);
}

/* The same for a claim that wraps the ring: its padding is published while
 * its frame is not, and the claim is still in flight. */
Test(ring, producers_never_lap_a_wrapping_claim_in_flight_before_the_stuck_timeout)
{
	never_lap_a_claim_in_flight("inflightwrap", true);
}

/* A concurrent producer killed right after its claim, then an exclusive
 * producer takes the partition: the dead claim is older than anything the
 * exclusive producer writes, so it is repaired at once all the same (only
 * the last claim can be the live exclusive producer's own). */
Test(ring, a_dead_concurrent_claim_is_repaired_under_a_live_exclusive_producer)
{
	struct bus_producer *x;
	struct bus_producer_opts xo = { .flags = BUS_PRODUCER_EXCLUSIVE };
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_ring *r;
	struct bus_view v[16];
	uint64_t pos, off, flen = bus_align8(BUS_FRAME_HDR + 5);
	int n;

	mk_topic("exdead", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "exdead", &t), 0);
	r = &t->rings[0];
	cr_assert_eq(bus_consumer_open(b, "exdead", NULL, &c), 0);
	bus_tail_read(&r->hdr->tail, &pos, &off);
	die_after_claim(r, 0, pos, off, pos + flen, true);
	cr_assert_eq(bus_producer_open(b, "exdead", &xo, &x), 0);
	cr_assert_eq(produce_str(x, 0, NULL, "after", NULL, NULL), 0);
	n = bus_consumer_poll(c, v, 16, 1000000000);
	cr_assert_eq(n, 1, "the dead claim is repaired under the live exclusive producer: %d", n);
	cr_assert_eq(v[0].offset, off + 1);
	cr_assert_eq(v[0].lost_before, 1u);
	bus_consumer_close(c);
	bus_producer_close(x);
	bus_topic_put(t);
}

static void *excl_open_and_produce(void *arg)
{
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_EXCLUSIVE };
	_Atomic int *done = arg;
	struct bus_producer *x;
	int err;

	err = bus_producer_open(b, "reap", &po, &x);
	if (!err)
		err = produce_str(x, 0, NULL, "x", NULL, NULL);
	atomic_store(done, err ? err : 1);
	if (!err)
		bus_producer_close(x);
	return NULL;
}

/* excl_owner's pid < 0: a process clears the exclusive bit of a dead owner.  An
 * exclusive producer waits for it to finish (were it to take the
 * partition in between, the reaper would clear the new owner's bit and let
 * concurrent producers claim beside it); a reaper that died is taken over. */
Test(ring, an_exclusive_producer_waits_for_a_reaper_and_takes_over_from_a_dead_one)
{
	struct bus_producer *y;
	struct bus_topic *t;
	struct bus_ring_hdr *h;
	pthread_t th;
	_Atomic int done = 0;
	uint64_t pos, off;

	mk_topic("reap", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b, "reap", &t), 0);
	h = t->rings[0].hdr;
	cr_assert_eq(bus_producer_open(b, "reap", NULL, &y), 0);
	cr_assert_eq(produce_str(y, 0, NULL, "y", NULL, NULL), 0);

	/* A live reaper (this process) in the middle of its work. */
	st_release(&h->excl_owner, BUS_OWNER(-(int32_t)getpid(), 0));
	cr_assert_eq(pthread_create(&th, NULL, excl_open_and_produce, &done), 0);
	usleep(50000);
	cr_assert_eq(atomic_load(&done), 0, "no exclusive producer while a reaper works");
	st_release(&h->excl_owner, 0); /* the reaper is done (the bit was clear) */
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(atomic_load(&done), 1);
	cr_assert_eq(ld_acquire(&h->excl_owner), 0, "closed: given back");

	/* A reaper that died with the bit still set: a concurrent producer
	 * takes its work over, and so does an exclusive one. */
	bus_tail_read(&h->tail, &pos, &off);
	cr_assert(bus_tail_cas(&h->tail, &pos, &off, pos, off | BUS_TAIL_EXCL));
	st_release(&h->excl_owner, BUS_OWNER(-dead_pid(), 0));
	cr_assert_eq(produce_str(y, 0, NULL, "y", NULL, NULL), 0);
	cr_assert_eq(ld_acquire(&h->excl_owner), 0);
	cr_assert_eq(ld_acquire(&h->tail.off) & BUS_TAIL_EXCL, 0u);
	bus_tail_read(&h->tail, &pos, &off);
	cr_assert(bus_tail_cas(&h->tail, &pos, &off, pos, off | BUS_TAIL_EXCL));
	st_release(&h->excl_owner, BUS_OWNER(-dead_pid(), 0));
	atomic_store(&done, 0);
	excl_open_and_produce(&done);
	cr_assert_eq(atomic_load(&done), 1);
	cr_assert_eq(produce_str(y, 0, NULL, "y", NULL, NULL), 0);
	bus_producer_close(y);
	bus_topic_put(t);
}

Test(ring, oversized_record_is_emsgsize)
{
	struct bus_producer *p;
	static char big[BUS_RING_MIN];
	struct bus_record r = { .value = big, .value_len = sizeof(big) };

	mk_topic("big", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_producer_open(b, "big", NULL, &p), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), -EMSGSIZE);
	cr_assert_eq(bus_produce(p, 7, &r, NULL, NULL), -ENOENT);
	bus_producer_close(p);
}

/* Lapping: a consumer that stalls on an overwrite topic is told exactly how
 * much it lost, and never gets a torn record. */
Test(ring, stalled_consumer_on_overwrite_topic_gets_exact_gap)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[64];
	uint64_t expect = 0, lost = 0, got = 0;
	uint32_t payload[60];

	mk_topic("lap", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_producer_open(b, "lap", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "lap", NULL, &c), 0);
	for (uint32_t i = 0; i < 20000; i++) {
		for (int j = 0; j < 60; j++)
			payload[j] = i;
		struct bus_record r = { .value = payload, .value_len = sizeof(payload) };
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	for (int n; (n = bus_consumer_poll(c, v, 64, 0)) > 0;) {
		for (int i = 0; i < n; i++) {
			const uint32_t *pl = v[i].value;
			expect += v[i].lost_before;
			lost += v[i].lost_before;
			cr_assert_eq(v[i].offset, expect, "offset %lu, expected %lu",
				     (unsigned long)v[i].offset, (unsigned long)expect);
			for (int j = 0; j < 60; j++)
				cr_assert_eq(pl[j], (uint32_t)v[i].offset, "torn record");
			expect++;
			got++;
		}
		cr_assert_eq(bus_consumer_check(c, v, (unsigned)n), n);
	}
	cr_assert_eq(expect, 20000u);
	cr_assert_eq(lost + got, 20000u);
	cr_assert(lost > 15000, "the ring holds far fewer than 20000 records");
	bus_consumer_close(c);
	bus_producer_close(p);
}

/* The producer raised the horizon past the consumer's next frame (it may
 * write over it) and then fell idle before it did.  The frame still looks
 * whole by its commit word; the consumer must count it lapped and move on,
 * not re-read it for ever. */
Test(ring, consumer_behind_the_horizon_moves_on_when_producers_fall_idle)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_view v[64];
	uint64_t next = 0, produced = 0, lost = 0;
	uint32_t payload[16] = { 0 };
	struct bus_record r = { .value = payload, .value_len = sizeof(payload) };
	int n = 0;

	mk_topic("idle", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b, "idle", &t), 0);
	cr_assert_eq(bus_producer_open(b, "idle", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "idle", NULL, &c), 0);
	while (ld_acquire(&t->rings[0].hdr->horizon) <= BUS_RING_MIN) {
		payload[0] = (uint32_t)produced++;
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	/* Nothing is overwritten yet: the first lap is not full. */
	cr_assert_leq(ld_acquire(&t->rings[0].hdr->tail.pos), (uint64_t)BUS_RING_MIN);
	for (int polls = 0; polls < 1000 && next < produced; polls++) {
		n = bus_consumer_poll(c, v, 64, 0);
		cr_assert_geq(n, 0, "poll: %s", bus_strerror(n));
		for (int i = 0; i < n; i++) {
			lost += v[i].lost_before;
			next += v[i].lost_before;
			cr_assert_eq(v[i].offset, next);
			cr_assert_eq(*(const uint32_t *)v[i].value, (uint32_t)next);
			next++;
		}
	}
	cr_assert_eq(next, produced, "the consumer stopped at offset %lu of %lu",
		     (unsigned long)next, (unsigned long)produced);
	cr_assert_gt(lost, 0, "the records behind the horizon are counted lost");
	cr_assert_eq(bus_consumer_poll(c, v, 64, 0), 0);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_topic_put(t);
}

Test(ring, numa_node_binds_rings_or_is_refused_when_absent)
{
	struct bus_topic_config cfg;
	struct bus_producer *p;
	int err;

	if (numa_available() < 0)
		cr_skip("libnuma reports no NUMA support on this machine");
	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.numa_node = numa_max_node();
	err = bus_topic_create(b, "numa", &cfg);
	cr_assert_eq(err, 0, "bind to node %d: %s", cfg.numa_node, bus_strerror(err));
	cr_assert_eq(bus_producer_open(b, "numa", NULL, &p), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "on node", NULL, NULL), 0);
	bus_producer_close(p);
	cfg.numa_node = numa_max_node() + 1;
	cr_assert_eq(bus_topic_create(b, "numa2", &cfg), -ENODEV);
	cr_assert_eq(bus_topic_describe(b, "numa2", &(struct bus_topic_info){ 0 }), -ENOENT,
		     "a refused topic leaves nothing behind");
}

/* ------------------------------------------- the producer API's edges */

static atomic_int edge_done;

struct edge_job {
	struct bus_producer *p;
	struct bus_consumer *c;
	int err;
};

static void *edge_poll(void *arg)
{
	struct edge_job *j = arg;
	struct bus_view v[1];

	j->err = bus_consumer_poll(j->c, v, 1, INT64_MAX);
	if (j->err == 1 && bus_consumer_check(j->c, v, 1) != 1)
		j->err = -1000;
	atomic_store(&edge_done, 1);
	return NULL;
}

/* A timeout of INT64_MAX ns waits (as long as it takes): the deadline
 * saturates, where now + timeout overflowed (undefined behaviour, which
 * make asan test aborts on). */
Test(ring, a_poll_timeout_of_int64_max_waits_for_the_record)
{
	struct bus_consumer_opts co = { .partition = 0, .wait = BUS_WAIT_SLEEP, .spin_count = 1 };
	struct bus_producer *p;
	struct bus_topic *t;
	struct edge_job j = { 0 };
	pthread_t th;
	int64_t deadline;

	mk_topic("pollmax", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "pollmax", &t), 0);
	cr_assert_eq(bus_consumer_open(b, "pollmax", &co, &j.c), 0);
	cr_assert_eq(bus_producer_open(b, "pollmax", NULL, &p), 0);
	atomic_store(&edge_done, 0);
	cr_assert_eq(pthread_create(&th, NULL, edge_poll, &j), 0);
	/* Asleep: past its deadline's computation. */
	deadline = tnow_ms() + 10000;
	while (ld_acquire(&t->ts->sleepers) == 0 && !atomic_load(&edge_done))
		cr_assert(tnow_ms() < deadline, "the consumer never slept");
	cr_assert_eq(produce_str(p, 0, NULL, "late", NULL, NULL), 0);
	pthread_join(th, NULL);
	cr_assert_eq(j.err, 1, "poll: %d", j.err);
	bus_consumer_close(j.c);
	bus_producer_close(p);
	bus_topic_put(t);
}

static void *edge_produce_one(void *arg)
{
	struct edge_job *j = arg;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };

	j->err = bus_produce(j->p, 0, &r, NULL, NULL);
	atomic_store(&edge_done, 1);
	return NULL;
}

/* The same for a producer's block_timeout_ns: INT64_MAX waits for room.
 * The producer is known to be waiting (past its deadline's computation)
 * once it has freed, in two turns of its wait, a gating slot planted
 * with a dead pid. */
Test(ring, a_block_timeout_of_int64_max_waits_for_room)
{
	struct bus_producer_opts po = { .block_timeout_ns = INT64_MAX };
	struct bus_producer_opts nb = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_producer *fill;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_gating *g;
	struct bus_view v[64];
	struct edge_job j = { 0 };
	char val[1000] = { 0 };
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	pthread_t th;
	int64_t deadline;
	int err, n;

	mk_topic("blockmax", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "blockmax", &t), 0);
	cr_assert_eq(bus_consumer_open(b, "blockmax", &co, &c), 0);
	cr_assert_eq(bus_producer_open(b, "blockmax", &nb, &fill), 0);
	while ((err = bus_produce(fill, 0, &r, NULL, NULL)) == 0)
		;
	cr_assert_eq(err, -EAGAIN);
	cr_assert_eq(bus_producer_open(b, "blockmax", &po, &j.p), 0);
	g = &t->rings[0].hdr->gating[BUS_GATING_MAX - 1];
	cr_assert_eq(ld_acquire(&g->owner), 0);
	atomic_store(&edge_done, 0);
	cr_assert_eq(pthread_create(&th, NULL, edge_produce_one, &j), 0);
	for (int turn = 0; turn < 2; turn++) {
		st_relaxed(&g->pos, 0);
		st_release(&g->owner, BUS_OWNER(dead_pid(), 0));
		deadline = tnow_ms() + 10000;
		while (ld_acquire(&g->owner) != 0 && !atomic_load(&edge_done))
			cr_assert(tnow_ms() < deadline, "the producer does not wait for room");
	}
	cr_assert_eq(atomic_load(&edge_done), 0, "produced into a full ring: %d", j.err);
	/* Room: the gating consumer reads on. */
	deadline = tnow_ms() + 10000;
	while (!atomic_load(&edge_done)) {
		n = bus_consumer_poll(c, v, 64, 0);
		cr_assert_geq(n, 0);
		cr_assert(tnow_ms() < deadline, "the producer did not take the room");
	}
	pthread_join(th, NULL);
	cr_assert_eq(j.err, 0, "produce: %s", bus_strerror(j.err));
	bus_consumer_close(c);
	bus_producer_close(j.p);
	bus_producer_close(fill);
	bus_topic_put(t);
}

static void *edge_produce_ring(void *arg)
{
	struct edge_job *j = arg;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };

	memset(val, 'p', sizeof(val));
	for (int i = 0; i < 2 * (int)(BUS_RING_MIN / sizeof(val)) && !j->err; i++)
		j->err = bus_produce(j->p, 0, &r, NULL, NULL);
	atomic_store(&edge_done, 1);
	return NULL;
}

/* stuck_claim_ns of 2^63 ns or more means "never" for a live claimant:
 * the producers that need to lap its claim wait for it (here until it
 * commits) rather than take the huge timeout for a negative one and
 * repair the claim at once. */
Test(ring, a_stuck_claim_timeout_of_2_63_ns_or_more_never_repairs_a_live_claim)
{
	struct bus_opts o = env.opts;
	struct bus *b2;
	struct bus_producer *a;
	struct bus_topic *t;
	struct bus_claim cl;
	struct edge_job j = { 0 };
	pthread_t th;
	int64_t deadline;
	int err;

	o.stuck_claim_ns = UINT64_MAX;
	cr_assert_eq(bus_open(&b2, &o), 0);
	mk_topic("forever", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b2, "forever", &t), 0);
	cr_assert_eq(bus_producer_open(b2, "forever", NULL, &a), 0);
	cr_assert_eq(bus_producer_open(b2, "forever", NULL, &j.p), 0);
	cr_assert_eq(bus_producer_claim(a, 0, NULL, 0, 8, &cl), 0);
	atomic_store(&edge_done, 0);
	cr_assert_eq(pthread_create(&th, NULL, edge_produce_ring, &j), 0);
	/* The other producer claims a lap past the open claim, then waits to
	 * raise the horizon over it... */
	deadline = tnow_ms() + 10000;
	while (ld_acquire(&t->rings[0].hdr->tail.pos) + BUS_FRAME_ALIGN <= cl.priv_pos + BUS_RING_MIN &&
	       !atomic_load(&edge_done))
		cr_assert(tnow_ms() < deadline, "the producer did not come a lap past the claim");
	/* ... and does not repair it (a live claim, no timeout): give it
	 * 200 ms to show it would. */
	deadline = tnow_ms() + 200;
	while (tnow_ms() < deadline && ld_acquire(&t->rings[0].hdr->repaired) == 0)
		sched_yield();
	cr_assert_eq(ld_acquire(&t->rings[0].hdr->repaired), 0,
		     "a live claim was repaired under a timeout of 2^64 - 1 ns");
	memset(cl.value, 'a', 8);
	err = bus_producer_commit(a, &cl, 0);
	cr_assert_eq(err, 0, "commit: %s", bus_strerror(err));
	pthread_join(th, NULL);
	cr_assert_eq(j.err, 0, "produce: %s", bus_strerror(j.err));
	bus_producer_close(j.p);
	bus_producer_close(a);
	bus_topic_put(t);
	bus_close(b2);
}

/* A claim repaired past the stuck-claim timeout and lapped since: its late
 * commit (or abort) writes nothing into the ring, its timestamp included,
 * for the place is newer records' (their readers validated them, and a
 * persistent topic's producer summed them).  It used to store the
 * timestamp into the frame that now starts there. */
static void late_end(const char *topic, bool abort)
{
	struct bus_opts o = env.opts;
	struct bus *b2;
	struct bus_producer *a, *p;
	struct bus_consumer *c;
	struct bus_claim cl;
	struct bus_view v[64];
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val), .timestamp = 12345 };
	uint64_t seen = 0;
	int n, err;

	memset(val, 'p', sizeof(val));
	o.stuck_claim_ns = 20000000; /* 20 ms */
	cr_assert_eq(bus_open(&b2, &o), 0);
	mk_topic(topic, 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_producer_open(b2, topic, NULL, &a), 0);
	cr_assert_eq(bus_producer_open(b2, topic, NULL, &p), 0);
	cr_assert_eq(bus_producer_claim(a, 0, NULL, 0, 8, &cl), 0);
	/* More than two rings: the frames of the last lap start where the
	 * claim did (each lap's first frame at the lap's start). */
	for (int i = 0; i < 2 * (int)(BUS_RING_MIN / sizeof(val)) + 8; i++)
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	err = abort ? bus_producer_abort(a, &cl) : bus_producer_commit(a, &cl, 777);
	cr_assert_eq(err, -BUS_EREPAIRED, "%s", bus_strerror(err));
	cr_assert_eq(bus_consumer_open(b2, topic, NULL, &c), 0);
	while ((n = bus_consumer_poll(c, v, 64, 0)) > 0) {
		for (int i = 0; i < n; i++) {
			cr_assert_eq(v[i].timestamp, 12345, "record %" PRIu64 " has timestamp %" PRId64,
				     v[i].offset, v[i].timestamp);
			cr_assert_eq(v[i].value_len, sizeof(val));
			seen++;
		}
		cr_assert_eq(bus_consumer_check(c, v, (unsigned)n), n);
	}
	cr_assert_geq(n, 0, "%s", bus_strerror(n));
	cr_assert_gt(seen, 0);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_producer_close(a);
	bus_close(b2);
}

Test(ring, a_late_commit_writes_nothing_into_the_newer_records_that_lapped_it)
{
	late_end("latecommit", false);
}

Test(ring, a_late_abort_writes_nothing_into_the_newer_records_that_lapped_it)
{
	late_end("lateabort", true);
}

/* A claim still open when its producer is closed is aborted there: readers
 * go on past it at once, its offset counted as one lost record, instead of
 * waiting for the stuck-claim timeout (here a minute) to repair it. */
static void close_with_a_claim_open(const char *topic, unsigned flags)
{
	struct bus_opts o = env.opts;
	struct bus_producer_opts po = { .flags = flags };
	struct bus *b2;
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_consumer_stats st;
	struct bus_claim cl;
	struct bus_view v[4];
	uint64_t pos;
	int64_t deadline;
	int n = 0;

	o.stuck_claim_ns = 60000000000ull;
	cr_assert_eq(bus_open(&b2, &o), 0);
	mk_topic(topic, 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_consumer_open(b2, topic, NULL, &c), 0);
	cr_assert_eq(bus_producer_open(b2, topic, &po, &p), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "before", NULL, NULL), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 16, &cl), 0);
	cr_assert_eq(cl.offset, 1u);
	memset(cl.value, 'c', 16);
	bus_producer_close(p); /* the claim still open */
	cr_assert_eq(bus_producer_open(b2, topic, &po, &p), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "after", NULL, NULL), 0);
	deadline = tnow_ms() + 5000;
	while (n < 2 && tnow_ms() < deadline) {
		int got = bus_consumer_poll(c, v + n, (unsigned)(2 - n), 100000000);
		cr_assert_geq(got, 0, "poll: %s", bus_strerror(got));
		n += got;
	}
	cr_assert_eq(n, 2, "the reader waits at the claim left open by a closed producer");
	cr_assert_eq(v[0].offset, 0u);
	cr_assert_eq(v[1].offset, 2u);
	cr_assert_eq(v[1].lost_before, 1u, "the aborted claim is one lost record");
	cr_assert(v[1].value_len == 5 && memcmp(v[1].value, "after", 5) == 0);
	cr_assert_eq(bus_consumer_check(c, v, 2), 2);
	bus_consumer_stats(c, &st);
	cr_assert_eq(st.records, 2u);
	cr_assert_eq(st.lost, 1u);
	cr_assert_eq(bus_consumer_position(c, 0, &pos), 0);
	cr_assert_eq(pos, 3u);
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_close(b2);
}

Test(ring, closing_a_producer_aborts_its_open_claim)
{
	close_with_a_claim_open("openclaim", 0);
}

Test(ring, closing_an_exclusive_producer_aborts_its_open_claim)
{
	close_with_a_claim_open("openclaimx", BUS_PRODUCER_EXCLUSIVE);
}

/* What bus.h says of a claim's end: a claim is ended once, by a commit or
 * an abort; another claim, or a bus_produce(), while one is open is
 * -EINVAL and changes nothing; a failed commit ends it all the same. */
Test(ring, a_claim_ends_once_and_blocks_other_appends_of_its_producer)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_claim cl, cl2, copy;
	struct bus_view v[4];
	struct bus_record r = { .value = "r", .value_len = 1 };

	mk_topic("once", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "once", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "once", NULL, &c), 0);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), -EINVAL, "no claim yet");
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 1, &cl), 0);
	copy = cl;
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 1, &cl2), -EINVAL);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), -EINVAL);
	memcpy(cl.value, "c", 1);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), 0);
	cr_assert_eq(bus_producer_commit(p, &cl, 0), -EINVAL, "committed twice");
	cr_assert_eq(bus_producer_abort(p, &cl), -EINVAL, "aborted after its commit");
	cr_assert_eq(bus_producer_abort(p, &copy), -EINVAL, "a copy of an ended claim");
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 2);
	cr_assert_eq(v[0].offset, 0u);
	cr_assert_eq(v[1].offset, 1u);
	cr_assert_eq(v[1].lost_before, 0u);
	bus_consumer_close(c);
	bus_producer_close(p);
}

/* A stale copy of a claim already ended, passed while another claim of the
 * same producer is open, is -EINVAL as bus.h says ("committed or aborted
 * already"): it neither rewrites the published record (its timestamp) nor
 * ends the open claim, which then commits as usual. */
static void stale_copy_while_another_is_open(const char *topic, unsigned flags, bool abort_it)
{
	struct bus_producer_opts po = { .flags = flags };
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_claim cl, copy, cl2;
	struct bus_view v[4];

	mk_topic(topic, 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, topic, &po, &p), 0);
	cr_assert_eq(bus_consumer_open(b, topic, NULL, &c), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 1, &cl), 0);
	copy = cl;
	memcpy(cl.value, "a", 1);
	cr_assert_eq(bus_producer_commit(p, &cl, 111), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 1, &cl2), 0);
	memcpy(cl2.value, "b", 1);
	if (abort_it)
		cr_assert_eq(bus_producer_abort(p, &copy), -EINVAL, "an ended claim's copy");
	else
		cr_assert_eq(bus_producer_commit(p, &copy, 999), -EINVAL, "an ended claim's copy");
	cr_assert_eq(bus_producer_commit(p, &cl2, 222), 0, "the open claim is still open");
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 2);
	cr_assert_eq(v[0].offset, 0u);
	cr_assert_eq(v[0].timestamp, 111, "the published record is left as it was");
	cr_assert_eq(v[1].offset, 1u);
	cr_assert_eq(v[1].lost_before, 0u);
	cr_assert_eq(v[1].timestamp, 222);
	cr_assert(v[1].value_len == 1 && memcmp(v[1].value, "b", 1) == 0);
	cr_assert_eq(bus_consumer_check(c, v, 2), 2);
	bus_consumer_close(c);
	bus_producer_close(p);
}

Test(ring, a_copy_of_an_ended_claim_is_einval_while_another_claim_is_open)
{
	stale_copy_while_another_is_open("stalecopy", 0, false);
}

Test(ring, an_abort_of_an_ended_claims_copy_is_einval_while_another_claim_is_open)
{
	stale_copy_while_another_is_open("stalecopya", 0, true);
}

Test(ring, an_exclusive_producers_ended_claims_copy_is_einval_while_another_is_open)
{
	stale_copy_while_another_is_open("stalecopyx", BUS_PRODUCER_EXCLUSIVE, false);
}

/* The library's wall clock (clock.c): extrapolated from the TSC where the
 * kernel keeps time with it (clocksource tsc, or kvm-clock read by the
 * vDSO), it stays within a few µs of CLOCK_REALTIME
 * (100 µs allowed: NTP may slew it by up to 25 µs between anchors), and it
 * does take the fast path there once calibrated (10 ms). */
static int64_t realtime_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}

Test(ring, wall_clock_tracks_clock_realtime)
{
	const int64_t slack = 100000;
	int64_t start = realtime_ns(), worst = 0;
	uint64_t n = 0;
	char cs[32] = "";
	FILE *f;

	while (realtime_ns() - start < 150000000ll) {
		int64_t lo = realtime_ns(), t = bus_now_ns(), hi = realtime_ns();
		cr_assert(t >= lo - slack && t <= hi + slack,
			  "sample %llu: %lld ns outside [%lld, %lld]", (unsigned long long)n,
			  (long long)t, (long long)lo, (long long)hi);
		if (t < lo && lo - t > worst)
			worst = lo - t;
		if (t > hi && t - hi > worst)
			worst = t - hi;
		n++;
	}
	cr_log_info("%llu samples, worst %lld ns off", (unsigned long long)n, (long long)worst);
#ifdef BUS_TSC_CLOCK
	f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
	if (f && fgets(cs, sizeof cs, f) && strcmp(cs, "tsc\n") == 0 && !getenv("BUS_CLOCK"))
		cr_assert(bus_clock_tsc(), "the kernel keeps time with the TSC: so do we");
	/* kvm-clock: the TSC when the vDSO reads it (clock.c). */
	if (bus_clock_tsc())
		cr_assert(bus_tclock.span > 0, "the TSC path is in use once calibrated");
	cs[strcspn(cs, "\n")] = 0;
	cr_log_info("clocksource %s: %s", cs, bus_clock_tsc() ? "TSC extrapolation" : "clock_gettime");
	if (f)
		fclose(f);
#else
	(void)f;
	(void)cs;
#endif
}

#ifdef BUS_TSC_CLOCK
/* BUS_CLOCK=syscall: every timestamp from clock_gettime(), no anchor. */
Test(ring, bus_clock_syscall_turns_the_tsc_off)
{
	int64_t lo, t, hi;

	setenv("BUS_CLOCK", "syscall", 1);
	for (int i = 0; i < 1000; i++) {
		lo = realtime_ns();
		t = bus_now_ns();
		hi = realtime_ns();
		cr_assert(t >= lo && t <= hi, "%lld outside [%lld, %lld]", (long long)t, (long long)lo,
			  (long long)hi);
	}
	cr_assert_not(bus_clock_tsc());
	cr_assert_eq(bus_tclock.span, 0, "no anchor");
}

/* An anchor that no longer predicts CLOCK_MONOTONIC_RAW (here: its TSC
 * moved by a second, as after a VM migration) is a strike; three in a row
 * turn the TSC off for the process, and timestamps stay right throughout. */
Test(ring, a_tsc_that_stops_agreeing_with_the_clock_is_dropped)
{
	const int64_t slack = 100000;
	int64_t start = realtime_ns();
	int strikes = 0;

	if (!bus_clock_tsc()) {
		cr_log_info("skipped: this process does not use the TSC (clock.c)");
		return;
	}
	while (bus_clock_tsc()) {
		int64_t lo = realtime_ns(), t = bus_now_ns(), hi = realtime_ns();

		cr_assert(t >= lo - slack && t <= hi + slack, "%lld outside [%lld, %lld]", (long long)t,
			  (long long)lo, (long long)hi);
		cr_assert(realtime_ns() - start < 10000000000ll, "still on the TSC after %d strikes",
			  strikes);
		if (bus_tclock.span > 1) {
			/* A calibrated anchor: shift it by 1e9 ticks and make
			 * the next call take a new one. */
			bus_tclock.tsc -= 1000000000ull;
			bus_tclock.ns -= (int64_t)(((unsigned __int128)1000000000ull * bus_tclock.mult) >> 32);
			bus_tclock.span = 1;
			strikes++;
		}
	}
	cr_assert_eq(strikes, 3, "dropped after %d strikes", strikes);
	cr_assert_eq(bus_tclock.span, 0);
	for (int i = 0; i < 1000; i++) {
		int64_t lo = realtime_ns(), t = bus_now_ns(), hi = realtime_ns();
		cr_assert(t >= lo && t <= hi, "from clock_gettime() now");
	}
}
#endif

/* ------------------------------------------- owners whose pid was reused
 *
 * An owner that died without giving its slot back, whose pid the kernel
 * has since given to another process (pid_max may be 32768: a busy box
 * goes round in minutes).  kill(2) finds the pid alive; only the start
 * time in the owner word tells.  The other process here is a child that
 * waits to be killed, and the word names its pid with a start time ten
 * seconds before its own: the dead owner's. */

static int wait_for_kill(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

struct other {
	pid_t pid;
	uint64_t reused; /* its pid, a dead owner's start */
	uint64_t itself; /* its pid and its own start */
};

static struct other other_start(void)
{
	struct other o;
	uint32_t st;

	o.pid = tfork(wait_for_kill, NULL);
	st = bus_pid_start(o.pid);
	cr_assert_neq(st, 0u, "the child's start time cannot be read");
	o.reused = BUS_OWNER(o.pid, st - 1000u);
	o.itself = BUS_OWNER(o.pid, st);
	return o;
}

static void other_stop(struct other *o)
{
	kill(o->pid, SIGKILL);
	cr_assert_eq(twait(o->pid, 10000), -1, "killed");
}

Test(ring, owner_words_tell_a_reused_pid_from_its_live_owner)
{
	struct other o = other_start();

	cr_assert(bus_owner_gone(o.reused), "a start ten seconds off is another process");
	cr_assert(!bus_owner_gone(o.itself));
	cr_assert(!bus_owner_gone(BUS_OWNER(o.pid, 0)), "an unknown start is not compared");
	cr_assert(!bus_owner_gone(o.itself + (1ull << 32)), "a tick apart is the same process");
	cr_assert(!bus_owner_gone(o.itself - (1ull << 32)), "a tick apart is the same process");
	cr_assert(!bus_owner_gone(bus_owner_self()));
	cr_assert_eq(BUS_OWNER_PID(bus_owner_self()), getpid());
	other_stop(&o);
	cr_assert(bus_owner_gone(o.itself), "dead");
}

/* A gating consumer's slot under a reused pid held block-policy producers
 * back for as long as the other process lived (to the block timeout:
 * for ever by default); under its live owner's own word it still does. */
Test(ring, a_gating_slot_under_a_reused_pid_holds_no_producer_back)
{
	struct bus_producer_opts po = { .block_timeout_ns = 20000000000ll };
	struct bus_producer *p;
	struct bus_topic *t;
	struct bus_gating *g;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	struct other o = other_start();
	int err = 0, i;

	mk_topic("reusegate", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "reusegate", &t), 0);
	g = &t->rings[0].hdr->gating[0];
	st_relaxed(&g->pos, 0);
	st_release(&g->owner, o.reused);
	cr_assert_eq(bus_producer_open(b, "reusegate", &po, &p), 0);
	for (i = 0; i < 3 * (int)(BUS_RING_MIN / sizeof(val)) && !err; i++)
		err = bus_produce(p, 0, &r, NULL, NULL);
	cr_assert_eq(err, 0, "record %d: %s", i, bus_strerror(err));
	cr_assert_eq(ld_acquire(&g->owner), 0, "the slot was freed");
	bus_producer_close(p);

	/* The live owner's own word holds the producer back. */
	po.block_timeout_ns = 50000000;
	st_relaxed(&g->pos, ld_acquire(&t->rings[0].hdr->tail.pos));
	st_release(&g->owner, o.itself);
	cr_assert_eq(bus_producer_open(b, "reusegate", &po, &p), 0);
	for (i = 0; i < 3 * (int)(BUS_RING_MIN / sizeof(val)) && !err; i++)
		err = bus_produce(p, 0, &r, NULL, NULL);
	cr_assert_eq(err, -ETIMEDOUT, "%s", bus_strerror(err));
	cr_assert_eq(ld_acquire(&g->owner), o.itself, "a live owner's slot is kept");
	st_release(&g->owner, 0);
	bus_producer_close(p);
	bus_topic_put(t);
	other_stop(&o);
}

/* Nor does it keep its slot from a new gating consumer: with every slot
 * under a reused pid, none could open (-ENOSPC). */
Test(ring, gating_slots_under_reused_pids_are_taken_by_new_consumers)
{
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_consumer *c;
	struct bus_topic *t;
	struct other o = other_start();

	mk_topic("reuseslots", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "reuseslots", &t), 0);
	for (int i = 0; i < BUS_GATING_MAX; i++)
		st_release(&t->rings[0].hdr->gating[i].owner, o.reused);
	cr_assert_eq(bus_consumer_open(b, "reuseslots", &co, &c), 0);
	bus_consumer_close(c);
	for (int i = 0; i < BUS_GATING_MAX; i++)
		st_release(&t->rings[0].hdr->gating[i].owner, o.itself);
	cr_assert_eq(bus_consumer_open(b, "reuseslots", &co, &c), -ENOSPC, "live owners' slots");
	bus_topic_put(t);
	other_stop(&o);
}

/* An exclusive producer that died under a pid given to another process
 * since: the partition stayed closed (-BUS_EBUSY) to every producer. */
Test(ring, an_exclusive_mark_under_a_reused_pid_is_taken_over)
{
	struct bus_producer_opts xo = { .flags = BUS_PRODUCER_EXCLUSIVE };
	struct bus_producer *p;
	struct bus_topic *t;
	struct bus_ring_hdr *h;
	struct other o = other_start();
	uint64_t pos, off;

	mk_topic("reusex", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b, "reusex", &t), 0);
	h = t->rings[0].hdr;
	for (int kind = 0; kind < 2; kind++) {
		bus_tail_read(&h->tail, &pos, &off);
		cr_assert(bus_tail_cas(&h->tail, &pos, &off, pos, off | BUS_TAIL_EXCL));
		st_release(&h->excl_owner, o.reused);
		cr_assert_eq(bus_producer_open(b, "reusex", kind ? &xo : NULL, &p), 0);
		cr_assert_eq(produce_str(p, 0, NULL, "x", NULL, NULL), 0, "%s producer",
			     kind ? "exclusive" : "shared");
		bus_producer_close(p);
		cr_assert_eq(ld_acquire(&h->excl_owner), 0);
		cr_assert_eq(ld_acquire(&h->tail.off) & BUS_TAIL_EXCL, 0u);
	}
	/* Its live owner keeps it. */
	bus_tail_read(&h->tail, &pos, &off);
	cr_assert(bus_tail_cas(&h->tail, &pos, &off, pos, off | BUS_TAIL_EXCL));
	st_release(&h->excl_owner, o.itself);
	cr_assert_eq(bus_producer_open(b, "reusex", &xo, &p), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "x", NULL, NULL), -BUS_EBUSY);
	bus_producer_close(p);
	cr_assert_eq(ld_acquire(&h->excl_owner), o.itself);
	bus_topic_put(t);
	other_stop(&o);
}

/* Producer slots of producers that died under pids given to others since
 * were never freed: with all of them so held, no producer could append
 * (-EUSERS). */
Test(ring, producer_slots_under_reused_pids_are_taken_by_new_producers)
{
	struct bus_producer *p;
	struct bus_topic *t;
	struct bus_ring_hdr *h;
	struct other o = other_start();

	mk_topic("reusep", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b, "reusep", &t), 0);
	h = t->rings[0].hdr;
	for (int i = 0; i < BUS_PRODUCERS_MAX; i++)
		st_release(&h->pslot[i].owner, o.itself);
	cr_assert_eq(bus_producer_open(b, "reusep", NULL, &p), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "x", NULL, NULL), -EUSERS, "live owners' slots");
	bus_producer_close(p);
	for (int i = 0; i < BUS_PRODUCERS_MAX; i++)
		st_release(&h->pslot[i].owner, o.reused);
	cr_assert_eq(bus_producer_open(b, "reusep", NULL, &p), 0);
	cr_assert_eq(produce_str(p, 0, NULL, "x", NULL, NULL), 0);
	bus_producer_close(p);
	bus_topic_put(t);
	other_stop(&o);
}

/* A claim whose producer died, under a pid given to another process since,
 * waited out the stuck-claim timeout (here a minute) as a live stalled
 * one's: its slot's owner word tells, and it is repaired at once. */
Test(ring, a_claim_of_a_producer_whose_pid_was_reused_is_repaired_at_once)
{
	struct bus_opts bo = env.opts;
	struct bus *b2;
	struct bus_producer *p, *q;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_ring_hdr *h;
	struct bus_claim cl;
	struct bus_view v[4];
	struct bus_pslot *sl = NULL;
	struct bus_frame *f;
	struct other o = other_start();
	int64_t deadline;
	int n = 0;

	bo.stuck_claim_ns = 60000000000ull;
	cr_assert_eq(bus_open(&b2, &bo), 0);
	mk_topic("reuseclaim", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_topic_get(b2, "reuseclaim", &t), 0);
	h = t->rings[0].hdr;
	cr_assert_eq(bus_consumer_open(b2, "reuseclaim", NULL, &c), 0);
	cr_assert_eq(bus_producer_open(b2, "reuseclaim", NULL, &p), 0);
	cr_assert_eq(bus_producer_claim(p, 0, NULL, 0, 16, &cl), 0);
	memset(cl.value, 'c', 16);
	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++)
		if (BUS_OWNER_PID(ld_acquire(&h->pslot[i].owner)) == getpid())
			sl = &h->pslot[i];
	cr_assert(sl, "the producer holds a slot");
	/* Make the claim the other process's, as a producer that died and
	 * whose pid went to it would have left it. */
	f = (struct bus_frame *)(t->rings[0].data + 0);
	st_release(&f->claim, BUS_CLAIM(o.pid, 0));
	st_release(&sl->owner, o.reused);
	cr_assert_eq(bus_producer_open(b2, "reuseclaim", NULL, &q), 0);
	cr_assert_eq(produce_str(q, 0, NULL, "after", NULL, NULL), 0);
	deadline = tnow_ms() + 10000;
	while (n < 1 && tnow_ms() < deadline) {
		int got = bus_consumer_poll(c, v, 1, 10000000);
		cr_assert_geq(got, 0, "poll: %s", bus_strerror(got));
		n += got;
	}
	cr_assert_eq(n, 1, "the reader waits at the dead producer's claim");
	cr_assert_eq(v[0].offset, 1u);
	cr_assert_eq(v[0].lost_before, 1u, "the dead claim is one lost record");
	cr_assert_eq(ld_acquire(&h->repaired), 1u);
	bus_consumer_close(c);
	/* Closing the producer aborts its claim, which was repaired: it
	 * writes nothing, and counts nothing again. */
	st_release(&sl->owner, bus_owner_self());
	bus_producer_close(p);
	cr_assert_eq(ld_acquire(&h->repaired), 1u);
	bus_producer_close(q);
	bus_topic_put(t);
	bus_close(b2);
	other_stop(&o);
}

/* A busd that died and was not reaped (a zombie, under a supervisor that
 * does not wait for it), or whose pid went to another process since,
 * answers kill(2): a producer of a persistent topic waited for its spill
 * to its block timeout (for ever by default) instead of saying "no
 * daemon".  The daemon here is forged: its owner word in the control
 * region and the spiller pid of the ring, as busd stores them. */
static int exit_now(void *arg)
{
	(void)arg;
	return 0;
}

static void producer_waits_for_a_gone_busd(const char *topic, uint32_t overflow, bool zombie)
{
	struct bus_producer_opts po = { .block_timeout_ns = 20000000000ll };
	struct bus_topic_config cfg;
	struct bus_producer *p;
	struct bus_topic *t;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	struct other o = { 0 };
	int64_t t0;
	int err = 0, i;
	int32_t pid;

	if (zombie) {
		pid = tfork(exit_now, NULL);
		cr_assert_eq(tzombie(pid, 10000), 0);
		st_release(&b->ctl->daemon_owner, BUS_OWNER(pid, bus_pid_start(pid)));
	} else {
		o = other_start();
		pid = o.pid;
		st_release(&b->ctl->daemon_owner, o.reused);
	}
	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cfg.overflow = overflow;
	cr_assert_eq(bus_topic_create(b, topic, &cfg), 0);
	cr_assert_eq(bus_topic_get(b, topic, &t), 0);
	st_release(&t->rings[0].hdr->spiller_pid, pid);
	st_release(&t->rings[0].hdr->floor_ok, 1);
	cr_assert_eq(bus_producer_open(b, topic, &po, &p), 0);
	t0 = tnow_ms();
	for (i = 0; i < 3 * (int)(BUS_RING_MIN / sizeof(val)) && !err; i++)
		err = bus_produce(p, 0, &r, NULL, NULL);
	cr_assert_eq(err, -BUS_ENODAEMON, "record %d: %s after %ld ms", i, bus_strerror(err),
		     (long)(tnow_ms() - t0));
	cr_assert_eq(bus_daemon_pid(b), 0);
	{
		struct bus_partition_info pi;
		cr_assert_eq(bus_partition_describe(b, topic, 0, &pi), 0);
		cr_assert_eq(pi.spiller_pid, 0, "describe names spiller %d", pi.spiller_pid);
	}
	bus_producer_close(p);
	bus_topic_put(t);
	st_release(&b->ctl->daemon_owner, 0);
	if (zombie)
		cr_assert_eq(twait(pid, 10000), 0);
	else
		other_stop(&o);
}

Test(ring, a_producer_does_not_wait_for_a_busd_left_unreaped)
{
	producer_waits_for_a_gone_busd("zbusd", BUS_OVERFLOW_BLOCK, true);
	producer_waits_for_a_gone_busd("zbusdow", BUS_OVERFLOW_OVERWRITE, true);
}

Test(ring, a_producer_does_not_wait_for_a_busd_whose_pid_was_reused)
{
	producer_waits_for_a_gone_busd("rbusd", BUS_OVERFLOW_BLOCK, false);
	producer_waits_for_a_gone_busd("rbusdow", BUS_OVERFLOW_OVERWRITE, false);
}

/* A producer blocked by a full ring sleeps on the ring's space futex
 * (wait.c, "Space"): before, it napped 20 us at a time, about 8,500
 * wake-ups and a fifth of a core a second for as long as the consumer
 * stayed behind.  The child fills the ring, then blocks for its 400 ms
 * block timeout behind a gating consumer that does not read; its CPU time
 * and voluntary context switches over that one call are the kernel's
 * count (getrusage() around it), reported through shared memory. */
struct blockcost {
	int err;
	long cpu_us, nvcsw;
	struct bus_producer_stats st;
};

static long tv_us(struct timeval tv)
{
	return tv.tv_sec * 1000000L + tv.tv_usec;
}

static int blocked_until_timeout(void *arg)
{
	struct blockcost *bc = arg;
	struct bus_producer_opts nb = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_producer_opts po = { .block_timeout_ns = 400000000 };
	struct bus_producer *fill, *p;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	struct rusage r0, r1;
	int err;

	if (bus_producer_open(b, "idleblk", &nb, &fill) || bus_producer_open(b, "idleblk", &po, &p))
		return 10;
	while ((err = bus_produce(fill, 0, &r, NULL, NULL)) == 0)
		;
	if (err != -EAGAIN)
		return 11;
	getrusage(RUSAGE_SELF, &r0);
	bc->err = bus_produce(p, 0, &r, NULL, NULL);
	getrusage(RUSAGE_SELF, &r1);
	bc->cpu_us = tv_us(r1.ru_utime) - tv_us(r0.ru_utime) + tv_us(r1.ru_stime) -
		     tv_us(r0.ru_stime);
	bc->nvcsw = r1.ru_nvcsw - r0.ru_nvcsw;
	bus_producer_stats(p, &bc->st);
	bus_producer_close(p);
	bus_producer_close(fill);
	return 0;
}

Test(ring, a_blocked_producer_sleeps_without_using_the_cpu)
{
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_consumer *c, *busy;
	struct blockcost *bc;
	int64_t deadline;
	int status = 0;
	pid_t pid, w;

	bc = mmap(NULL, sizeof(*bc), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(bc, MAP_FAILED);
	memset(bc, 0, sizeof(*bc));
	mk_topic("idleblk", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_consumer_open(b, "idleblk", &co, &c), 0);
	cr_assert_eq(bus_consumer_open(b, "idleblk", &co, &busy), 0);
	pid = tfork(blocked_until_timeout, bc);
	/* A second gating consumer reads all there is and polls on, without
	 * waiting, as a consumer that keeps up does: its polls publish a
	 * cursor that does not move, which frees nothing and must not wake
	 * the producer (it did: a membarrier and a FUTEX_WAKE per poll, the
	 * producer at 100% of a core). */
	deadline = tnow_ms() + 20000;
	while ((w = waitpid(pid, &status, WNOHANG)) == 0) {
		struct bus_view v[64];
		cr_assert_geq(bus_consumer_poll(busy, v, 64, 0), 0);
		cr_assert(tnow_ms() < deadline, "the blocked producer never timed out");
	}
	cr_assert_eq(w, pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %#x", status);
	cr_assert_eq(bc->err, -ETIMEDOUT, "blocked produce: %s", bus_strerror(bc->err));
	cr_assert_eq(bc->st.blocked, 1u);
	cr_assert_geq(bc->st.blocked_ns, 400000000u);
	cr_assert_geq(bc->st.sleeps, 1u);
	cr_assert_eq(bc->st.woken, 0u, "nobody freed space, yet %" PRIu64 " wakes",
		     bc->st.woken);
	/* Napping, it spent about 70 ms and 3,400 switches here; asleep,
	 * about 1 ms and 21 (one per 20 ms recheck). */
	cr_assert_lt(bc->cpu_us, 20000, "the blocked producer used %ld us of CPU in 400 ms",
		     bc->cpu_us);
	cr_assert_lt(bc->nvcsw, 100, "the blocked producer woke %ld times in 400 ms", bc->nvcsw);
	bus_consumer_close(busy);
	bus_consumer_close(c);
	munmap(bc, sizeof(*bc));
}

/* The gating consumer that frees space wakes the producer asleep for it
 * (gating_publish()): each sleep ends by a wake, not by the producer's
 * own recheck timeout.  The parent reads only while the producer is
 * asleep in FUTEX_WAIT with its announcement up, so all the space it gets
 * comes through a wake; with the wake left out every sleep ran to its
 * timeout (woken 0). */
struct spacewake {
	_Atomic int done;
	int err;
	struct bus_producer_stats st;
};

static int produce_through_sleeps(void *arg)
{
	struct spacewake *sw = arg;
	struct bus_producer_opts po = { .block_timeout_ns = 20000000000ll };
	struct bus_producer *p;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	int err = 0;

	if ((err = bus_producer_open(b, "wakeblk", &po, &p)) == 0) {
		for (int i = 0; i < 8 * (int)(BUS_RING_MIN / sizeof(val)) && !err; i++)
			err = bus_produce(p, 0, &r, NULL, NULL);
		bus_producer_stats(p, &sw->st);
		bus_producer_close(p);
	}
	sw->err = err;
	atomic_store(&sw->done, 1);
	return 0;
}

Test(ring, a_gating_consumer_wakes_the_producer_asleep_for_space)
{
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct spacewake *sw;
	struct bus_consumer *c;
	struct bus_topic *t;
	struct bus_ring_hdr *h;
	struct bus_view v[64];
	unsigned cycles = 0;
	uint64_t seen = 0;
	int64_t deadline;
	pid_t pid;
	int n;

	sw = mmap(NULL, sizeof(*sw), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sw, MAP_FAILED);
	memset(sw, 0, sizeof(*sw));
	mk_topic("wakeblk", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_topic_get(b, "wakeblk", &t), 0);
	h = t->rings[0].hdr;
	cr_assert_eq(bus_consumer_open(b, "wakeblk", &co, &c), 0);
	pid = tfork(produce_through_sleeps, sw);
	deadline = tnow_ms() + 60000;
	while (!atomic_load(&sw->done)) {
		uint64_t tail;

		cr_assert(tnow_ms() < deadline, "the producer did not finish: %u cycles", cycles);
		if (ld_acquire(&h->space_sleepers) == 0 || !tin_futex_wait(pid)) {
			usleep(50); /* not asleep (yet) */
			continue;
		}
		cycles++;
		/* Read what it wrote before it slept, no more: the poll that
		 * publishes the first of that space must wake it, and the next
		 * cycle starts from a full ring again.  At least one poll: it
		 * publishes the views of the last cycle's last batch. */
		tail = ld_acquire(&h->tail.off) & ~BUS_TAIL_EXCL;
		do {
			n = bus_consumer_poll(c, v, 64, 0);
			cr_assert_geq(n, 0);
			for (int i = 0; i < n; i++)
				cr_assert_eq(v[i].offset, seen++);
		} while (seen < tail);
	}
	cr_assert_eq(twait(pid, 10000), 0);
	cr_assert_eq(sw->err, 0, "produce: %s", bus_strerror(sw->err));
	/* A cycle may catch the announcement of a sleep that its own
	 * re-check ended (the space came first): cycles >= sleeps. */
	cr_assert_geq(cycles, 6u);
	cr_assert_geq(sw->st.sleeps, 4u, "%" PRIu64 " sleeps in %u cycles", sw->st.sleeps, cycles);
	cr_assert_geq(sw->st.woken, sw->st.sleeps - sw->st.sleeps / 4,
		      "%" PRIu64 " of %" PRIu64 " sleeps ended by a wake in %u cycles", sw->st.woken,
		      sw->st.sleeps, cycles);
	bus_consumer_close(c);
	bus_topic_put(t);
	munmap(sw, sizeof(*sw));
}
