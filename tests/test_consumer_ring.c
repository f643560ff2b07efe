/* test_consumer_ring.c - a consumer on the ring while producers lap it:
 * records handed out whole or not at all, gaps counted exactly (padding,
 * slack, lost frames), seeks at the ring's edges, gating slots, and the
 * copying read at its size limits. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "util.h"

TestSuite(cring, .init = tsuite_setup, .fini = tsuite_teardown, .timeout = 120);

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

/* ------------------------------------------------------ lapping stress
 *
 * Producer threads append records whose key says who wrote them and their
 * sequence number, and whose value length and bytes follow from both, so
 * that a consumer can tell a whole record from a torn one on its own.
 * Every ABORT_EVERY-th append is a claim aborted (a LOST frame); one
 * producer writes low-latency frames (slack).  The consumer stalls now and
 * then so that it is lapped many times. */

#define NPROD 2
#define PER_PROD 60000u
#define ABORT_EVERY 37u
#define MAX_VAL 900u

struct rec_key {
	uint32_t prod;
	uint32_t seq;
};

static uint32_t val_len(uint32_t prod, uint32_t seq)
{
	return (seq * 2654435761u + prod * 97u) % MAX_VAL;
}

static uint8_t val_byte(uint32_t prod, uint32_t seq, uint32_t j)
{
	return (uint8_t)(seq * 131u + prod * 7u + j * 13u);
}

struct prod_arg {
	const char *topic;
	uint32_t id;
	unsigned flags;
	int err; /* first error, 0: none */
};

static _Atomic int go;
static _Atomic unsigned finished;

static void *prod_main(void *arg)
{
	struct prod_arg *a = arg;
	struct bus_producer_opts po = { .flags = a->flags };
	struct bus_producer *p;
	uint8_t val[MAX_VAL];
	int err;

	if ((err = bus_producer_open(b, a->topic, &po, &p)) != 0) {
		a->err = err;
		atomic_fetch_add(&finished, 1);
		return NULL;
	}
	while (!atomic_load(&go))
		;
	for (uint32_t s = 0; s < PER_PROD && !a->err; s++) {
		struct rec_key k = { a->id, s };
		uint32_t len = val_len(a->id, s);

		for (uint32_t j = 0; j < len; j++)
			val[j] = val_byte(a->id, s, j);
		if (s % ABORT_EVERY == ABORT_EVERY / 2) {
			struct bus_claim c;
			err = bus_producer_claim(p, 0, &k, sizeof(k), len, &c);
			if (!err)
				err = bus_producer_abort(p, &c);
		} else if (s % 3 == 0) {
			struct bus_claim c;
			err = bus_producer_claim(p, 0, &k, sizeof(k), len, &c);
			if (!err) {
				memcpy(c.value, val, len);
				err = bus_producer_commit(p, &c, 0);
			}
		} else {
			struct bus_record r = { .key = &k, .key_len = sizeof(k), .value = val,
						.value_len = len };
			err = bus_produce(p, 0, &r, NULL, NULL);
		}
		if (err)
			a->err = err;
	}
	bus_producer_close(p);
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* What the consumer knows of a record it got: returns NULL when whole,
 * else what is wrong. */
static const char *bad_record(const void *key, uint32_t key_len, const void *value,
			      uint32_t value_len, uint32_t *last_seq)
{
	struct rec_key k;
	const uint8_t *v = value;

	if (key_len != sizeof(k))
		return "key length";
	memcpy(&k, key, sizeof(k));
	if (k.prod >= NPROD || k.seq >= PER_PROD)
		return "key";
	if (value_len != val_len(k.prod, k.seq))
		return "value length";
	for (uint32_t j = 0; j < value_len; j++)
		if (v[j] != val_byte(k.prod, k.seq, j))
			return "value bytes";
	if (last_seq[k.prod] != UINT32_MAX && k.seq <= last_seq[k.prod])
		return "a producer's records out of order";
	last_seq[k.prod] = k.seq;
	return NULL;
}

static void spin_for(unsigned loops)
{
	for (volatile unsigned i = 0; i < loops; i++)
		;
}

/* The consumer side: @mode 0 polls and copies each view, then checks; 1
 * reads with buffers of changing sizes. */
static void lapped_consumer_run(const char *topic, int mode)
{
	struct prod_arg pa[NPROD];
	pthread_t th[NPROD];
	struct bus_consumer *c;
	struct bus_consumer_stats st;
	struct bus_topic *t;
	uint64_t expect = 0, lost = 0, got = 0, total;
	uint32_t last_seq[NPROD];
	unsigned rnd = 12345, idle = 0;
	static uint8_t copy[64][sizeof(struct rec_key) + MAX_VAL];
	static uint8_t buf[64 * (sizeof(struct rec_key) + MAX_VAL)];
	bool producing = true;

	memset(last_seq, 0xff, sizeof(last_seq));
	cr_assert_eq(bus_topic_get(b, topic, &t), 0);
	cr_assert_eq(bus_consumer_open(b, topic, NULL, &c), 0);
	for (uint32_t i = 0; i < NPROD; i++) {
		pa[i] = (struct prod_arg){ .topic = topic, .id = i,
					   .flags = i == 1 ? BUS_PRODUCER_LOW_LATENCY : 0 };
		cr_assert_eq(pthread_create(&th[i], NULL, prod_main, &pa[i]), 0);
	}
	atomic_store(&go, 1);
	for (;;) {
		unsigned max = 1 + (rnd = rnd * 1103515245u + 12345u) % 64;
		int n;

		if (producing && rnd % 7 == 0)
			spin_for((rnd >> 8) % 200000); /* stalled: lapped */
		if (mode == 0) {
			struct bus_view v[64];
			n = bus_consumer_poll(c, v, max, 0);
			cr_assert_geq(n, 0, "poll: %s", bus_strerror(n));
			for (int i = 0; i < n; i++) {
				cr_assert_leq(v[i].key_len, sizeof(struct rec_key));
				cr_assert_leq(v[i].value_len, MAX_VAL);
				memcpy(copy[i], v[i].key, v[i].key_len);
				memcpy(copy[i] + v[i].key_len, v[i].value, v[i].value_len);
			}
			if (rnd % 5 == 0)
				spin_for((rnd >> 12) % 50000); /* using the views */
			int ok = bus_consumer_check(c, v, (unsigned)n);
			cr_assert_geq(ok, 0);
			for (int i = 0; i < ok; i++) {
				const char *why = bad_record(copy[i], v[i].key_len,
							     copy[i] + v[i].key_len,
							     v[i].value_len, last_seq);
				cr_assert_null(why, "offset %" PRIu64 ": torn record (%s)",
					       v[i].offset, why);
				cr_assert_eq(v[i].offset, expect + v[i].lost_before,
					     "offset %" PRIu64 ", expected %" PRIu64
					     " + lost_before %" PRIu64,
					     v[i].offset, expect, v[i].lost_before);
				lost += v[i].lost_before;
				expect = v[i].offset + 1;
				got++;
			}
			n = ok;
		} else {
			struct bus_msg m[64];
			size_t len = (rnd >> 4) % sizeof(buf);
			n = bus_consumer_read(c, m, max, buf, len, 0);
			if (n == -EMSGSIZE) {
				cr_assert_gt(m[0].value_len, len);
				n = bus_consumer_read(c, m, max, buf, sizeof(buf), 0);
			}
			cr_assert_geq(n, 0, "read: %s", bus_strerror(n));
			for (int i = 0; i < n; i++) {
				const char *why = bad_record(m[i].key, m[i].key_len, m[i].value,
							     m[i].value_len, last_seq);
				cr_assert_null(why, "offset %" PRIu64 ": torn record (%s)",
					       m[i].offset, why);
				cr_assert_eq(m[i].offset, expect + m[i].lost_before,
					     "offset %" PRIu64 ", expected %" PRIu64
					     " + lost_before %" PRIu64,
					     m[i].offset, expect, m[i].lost_before);
				lost += m[i].lost_before;
				expect = m[i].offset + 1;
				got++;
			}
		}
		if (producing) {
			producing = atomic_load(&finished) < NPROD;
		} else if (n == 0 && ++idle > 3) {
			break;
		}
	}
	for (uint32_t i = 0; i < NPROD; i++)
		pthread_join(th[i], NULL);
	for (uint32_t i = 0; i < NPROD; i++)
		cr_assert_eq(pa[i].err, 0, "producer %u: %s", i, bus_strerror(pa[i].err));
	total = ld_acquire(&t->rings[0].hdr->tail.off) & ~BUS_TAIL_EXCL;
	cr_assert_eq(total, (uint64_t)NPROD * PER_PROD);
	/* The last appends are records (not aborts): every offset before them
	 * was either returned or reported lost. */
	cr_assert_eq(expect, total, "the consumer ended at %" PRIu64 " of %" PRIu64, expect, total);
	cr_assert_eq(got + lost, total, "got %" PRIu64 " + lost %" PRIu64 " != %" PRIu64, got,
		     lost, total);
	bus_consumer_stats(c, &st);
	cr_assert_eq(st.lost, lost, "stats.lost %" PRIu64 ", reported %" PRIu64, st.lost, lost);
	cr_assert_eq(st.records, got, "stats.records %" PRIu64 ", got %" PRIu64, st.records, got);
	cr_assert_gt(st.laps, 0, "never lapped: the test tests nothing");
	bus_consumer_close(c);
	bus_topic_put(t);
}

Test(cring, a_lapped_poller_gets_whole_records_and_exact_gaps)
{
	mk_topic("lapp", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	lapped_consumer_run("lapp", 0);
}

Test(cring, a_lapped_reader_gets_whole_records_and_exact_gaps)
{
	mk_topic("lapr", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	lapped_consumer_run("lapr", 1);
}

/* ------------------------------------------------------------- gating */

/* When set (in one thread), the next getpid() of that thread first runs
 * this hook (once): producers moving on at that very point of a call of
 * the library.  bus_consumer_open() asks for its pid when it takes a
 * gating slot, after it has chosen where the consumer starts. */
static __thread void (*getpid_hook)(void);

pid_t getpid(void)
{
	void (*h)(void) = getpid_hook;

	if (h) {
		getpid_hook = NULL;
		h();
	}
	return (pid_t)syscall(SYS_getpid);
}

static struct bus_producer *hook_p;
static uint64_t hook_produced;

/* A ring and a half of 1000-byte records: the producer, which no gating
 * consumer holds back yet, laps whatever the ring held. */
static void produce_a_lap(void)
{
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };

	for (unsigned i = 0; i < 3 * BUS_RING_MIN / 2 / sizeof(val); i++) {
		int err = bus_produce(hook_p, 0, &r, NULL, NULL);
		cr_assert_eq(err, 0, "produce: %s", bus_strerror(err));
		hook_produced++;
	}
}

/* A gating consumer holds block-policy producers back from what it has
 * not read, from the position bus_consumer_open() returns: producers that
 * lap the ring while the consumer takes its slot (after choosing its start,
 * before its cursor gates them) must not leave it at a position already
 * overwritten, which its first poll would report as records lost. */
Test(cring, a_gating_consumer_opened_while_producers_lap_loses_nothing_after_open)
{
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_consumer_stats st;
	struct bus_consumer *c;
	struct bus_view v[64];
	uint64_t expect = UINT64_MAX, after = 0;
	int err, n;

	mk_topic("gopen", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "gopen", &po, &hook_p), 0);
	produce_a_lap(); /* no gating consumer: the ring wraps freely */
	getpid_hook = produce_a_lap;
	err = bus_consumer_open(b, "gopen", &co, &c);
	cr_assert_eq(err, 0, "open: %s", bus_strerror(err));
	cr_assert_null(getpid_hook, "the hook did not run: the test tests nothing");
	/* From now on the consumer holds the producer back: fill the ring. */
	while ((err = bus_produce(hook_p, 0, &(struct bus_record){ .value = "x", .value_len = 1 },
				  NULL, NULL)) == 0)
		after++;
	cr_assert_eq(err, -EAGAIN, "produce: %s", bus_strerror(err));
	while ((n = bus_consumer_poll(c, v, 64, 0)) > 0) {
		for (int i = 0; i < n; i++) {
			cr_assert_eq(v[i].lost_before, 0,
				     "offset %" PRIu64 ": %" PRIu64 " lost before it, after open",
				     v[i].offset, v[i].lost_before);
			if (expect != UINT64_MAX)
				cr_assert_eq(v[i].offset, expect);
			expect = v[i].offset + 1;
		}
		cr_assert_eq(bus_consumer_check(c, v, (unsigned)n), n);
	}
	cr_assert_geq(n, 0, "poll: %s", bus_strerror(n));
	cr_assert_eq(expect, hook_produced + after, "the consumer ended at %" PRIu64, expect);
	bus_consumer_stats(c, &st);
	cr_assert_eq(st.lost, 0);
	cr_assert_eq(st.laps, 0);
	bus_consumer_close(c);
	bus_producer_close(hook_p);
}

/* ------------------------------------------------------ read at limits */

/* Records whose frame is exactly half the ring (the largest a producer
 * takes), with a key, headers and a value, from a dense and a low-latency
 * producer, wrap the ring with padding; bus_consumer_read() with a buffer
 * one byte short says -EMSGSIZE and how much it needs, and keeps the
 * record; with exactly that much it returns the record whole. */
Test(cring, records_of_half_a_ring_are_read_with_a_buffer_of_exactly_their_size)
{
	static uint8_t key[1000], hval[3000], val[BUS_RING_MIN / 2], buf[BUS_RING_MIN / 2];
	struct bus_producer_opts ll = { .flags = BUS_PRODUCER_LOW_LATENCY | BUS_PRODUCER_NONBLOCK };
	struct bus_producer_opts nb = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_view none;
	struct bus_producer *p[2];
	struct bus_consumer *c;
	struct bus_msg m[4];
	struct bus_header h = { .name = "hdr", .name_len = 3, .value = hval,
				.value_len = sizeof(hval) };
	uint32_t hl = 6 + 3 + sizeof(hval), vlen;
	size_t need;
	int n;

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 3);
	for (size_t i = 0; i < sizeof(hval); i++)
		hval[i] = (uint8_t)(i * 5);
	/* 48 + key + headers + value = half the ring. */
	vlen = BUS_RING_MIN / 2 - BUS_FRAME_HDR - (uint32_t)sizeof(key) - hl;
	cr_assert_eq(BUS_FRAME_HDR + sizeof(key) + hl + vlen, BUS_RING_MIN / 2);
	need = sizeof(key) + hl + vlen;
	mk_topic("half", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_producer_open(b, "half", &nb, &p[0]), 0);
	cr_assert_eq(bus_producer_open(b, "half", &ll, &p[1]), 0);
	{
		struct bus_record r = { .key = key, .key_len = sizeof(key), .value = val,
					.value_len = vlen + 1, .headers = &h, .header_count = 1 };
		cr_assert_eq(bus_produce(p[0], 0, &r, NULL, NULL), -EMSGSIZE);
	}
	cr_assert_eq(bus_consumer_open(b, "half", &(struct bus_consumer_opts){ .partition = 0,
		.flags = BUS_CONSUMER_GATING }, &c), 0);
	for (uint64_t off = 0; off < 9; off++) {
		struct bus_record r = { .key = key, .key_len = sizeof(key), .value = val,
					.value_len = vlen, .headers = &h, .header_count = 1 };
		struct bus_header got;
		uint64_t at;

		memset(val, (int)off + 1, vlen);
		/* A small record first, every other time: the big one then wraps
		 * with padding. */
		if (off % 2) {
			struct bus_record s = { .value = "s", .value_len = 1 };
			cr_assert_eq(bus_produce(p[off % 3 == 0], 0, &s, NULL, &at), 0);
			n = bus_consumer_read(c, m, 4, buf, 1, 0);
			cr_assert_eq(n, 1, "read: %s", bus_strerror(n));
			cr_assert_eq(m[0].offset, at);
		}
		/* The gating consumer releases what it read at its next poll. */
		cr_assert_eq(bus_consumer_poll(c, &none, 1, 0), 0);
		n = bus_produce(p[off % 3 == 0], 0, &r, NULL, &at);
		cr_assert_eq(n, 0, "produce %" PRIu64 ": %s", off, bus_strerror(n));
		n = bus_consumer_read(c, m, 4, buf, need - 1, 0);
		cr_assert_eq(n, -EMSGSIZE, "read: %d", n);
		cr_assert_eq(m[0].value_len, need);
		n = bus_consumer_read(c, m, 4, buf, need, 0);
		cr_assert_eq(n, 1, "read: %s", bus_strerror(n));
		cr_assert_eq(m[0].offset, at);
		cr_assert_eq(m[0].lost_before, 0);
		cr_assert_eq(m[0].key_len, sizeof(key));
		cr_assert_eq(m[0].headers_len, hl);
		cr_assert_eq(m[0].value_len, vlen);
		cr_assert_eq(memcmp(m[0].key, key, sizeof(key)), 0);
		for (uint32_t j = 0; j < vlen; j++)
			cr_assert_eq(((uint8_t *)m[0].value)[j], (uint8_t)(off + 1));
		{
			struct bus_view hv = { .header_count = m[0].header_count,
					       .headers = m[0].headers,
					       .headers_len = m[0].headers_len };
			cr_assert_eq(bus_view_header(&hv, 0, &got), 0);
			cr_assert_eq(got.value_len, sizeof(hval));
			cr_assert_eq(memcmp(got.value, hval, sizeof(hval)), 0);
		}
	}
	bus_consumer_close(c);
	bus_producer_close(p[0]);
	bus_producer_close(p[1]);
}

/* ---------------------------------------------------------- seek edges */

/* Seeks at the edges of what the ring holds: the earliest offset (and one
 * before it), the next offset (and one after it), the largest offsets an
 * int64_t holds, a negative one, and the latest on an empty ring. */
Test(cring, seeks_at_the_edges_of_the_ring)
{
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[4];
	uint64_t first, next, pos;
	uint32_t val[40] = { 0 };
	struct bus_record r = { .value = val, .value_len = sizeof(val) };

	mk_topic("edge", 1, BUS_RING_MIN, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_producer_open(b, "edge", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "edge", &(struct bus_consumer_opts){ .partition = 0,
		.start = BUS_SEEK_LATEST }, &c), 0);
	/* Empty: latest and earliest are offset 0, which is not written yet. */
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_EARLIEST, 0), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 0), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 1), -ERANGE);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_TIME, INT64_MAX), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 0);
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 1);
	cr_assert_eq(v[0].offset, 0);

	/* Many laps. */
	for (uint32_t i = 1; i < 20000; i++) {
		val[0] = i;
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_EARLIEST, 0), 0);
	cr_assert_eq(bus_consumer_position(c, 0, &first), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 1);
	cr_assert_eq(v[0].offset, first);
	cr_assert_eq(v[0].lost_before, 0);
	cr_assert_eq(*(const uint32_t *)v[0].value, (uint32_t)first);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, (int64_t)first), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 1, 0), 1);
	cr_assert_eq(v[0].offset, first);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, (int64_t)first - 1), -ERANGE);
	/* A failed seek leaves the position. */
	cr_assert_eq(bus_consumer_position(c, 0, &pos), 0);
	cr_assert_eq(pos, first + 1);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_LATEST, 0), 0);
	cr_assert_eq(bus_consumer_position(c, 0, &next), 0);
	cr_assert_eq(next, 20000);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 20000), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 0);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 20001), -ERANGE);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, INT64_MAX), -ERANGE);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, -1), -ERANGE);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, INT64_MIN), -ERANGE);
	cr_assert_eq(bus_consumer_position(c, 0, &pos), 0);
	cr_assert_eq(pos, 20000);
	val[0] = 20000;
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 1);
	cr_assert_eq(v[0].offset, 20000);
	cr_assert_eq(v[0].lost_before, 0);
	/* By time: everything is newer than 0, nothing as new as INT64_MAX. */
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_TIME, INT64_MIN), 0);
	cr_assert_eq(bus_consumer_position(c, 0, &pos), 0);
	cr_assert_eq(pos, first);
	cr_assert_eq(bus_consumer_seek(c, 0, BUS_SEEK_TIME, INT64_MAX), 0);
	cr_assert_eq(bus_consumer_position(c, 0, &pos), 0);
	cr_assert_eq(pos, 20001);
	bus_consumer_close(c);
	bus_producer_close(p);
}

/* A process that forked after opening a gating consumer has a copy of it;
 * the child closing its copy (an exit path that closes every handle) must
 * not free the parent's gating slot, which would let producers overwrite
 * what the parent has not read. */
static struct bus_consumer *fork_c;

static int close_copy(void *arg)
{
	(void)arg;
	bus_consumer_close(fork_c);
	return 0;
}

Test(cring, a_forked_child_closing_its_copy_leaves_the_parents_gating_slot)
{
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_producer *p;
	struct bus_view v[64];
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	uint64_t expect = 0;
	int err, written = 0, n;

	mk_topic("fork", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	cr_assert_eq(bus_consumer_open(b, "fork", &co, &fork_c), 0);
	cr_assert_eq(twait(tfork(close_copy, NULL), 10000), 0);
	cr_assert_eq(bus_producer_open(b, "fork", &po, &p), 0);
	while ((err = bus_produce(p, 0, &r, NULL, NULL)) == 0 && written < 1000)
		written++;
	cr_assert_eq(err, -EAGAIN, "the parent's consumer no longer gates: %d written, %s",
		     written, bus_strerror(err));
	while ((n = bus_consumer_poll(fork_c, v, 64, 0)) > 0)
		for (int i = 0; i < n; i++, expect++) {
			cr_assert_eq(v[i].offset, expect);
			cr_assert_eq(v[i].lost_before, 0);
		}
	cr_assert_eq(expect, (uint64_t)written);
	bus_consumer_close(fork_c);
	bus_producer_close(p);
}

/* ------------------------------------------------ a gating consumer's zombie */

/* A gating consumer that dies without closing: its process exits, and its
 * parent does not reap it (yet).  kill(pid, 0) still finds a zombie. */
static int gate_and_die(void *arg)
{
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_consumer *c;

	if (bus_consumer_open(b, (const char *)arg, &co, &c))
		return 1;
	raise(SIGKILL);
	return 2;
}

/* Its slot must not hold block-policy producers back for as long as the
 * parent leaves it unreaped (a parent that never waits, a container's PID
 * 1 that reaps nothing): it did, to the producer's block timeout. */
Test(cring, a_gating_consumer_killed_and_left_unreaped_does_not_hold_producers_back)
{
	struct bus_producer_opts po = { .block_timeout_ns = 20000000000ll };
	struct bus_producer *p;
	struct bus_topic *t;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	int64_t t0;
	pid_t pid;
	int err = 0, i;

	mk_topic("zgate", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	pid = tfork(gate_and_die, (char[]){ "zgate" });
	cr_assert_eq(tzombie(pid, 10000), 0, "the gating child did not die");
	cr_assert_eq(bus_topic_get(b, "zgate", &t), 0);
	cr_assert_eq(BUS_OWNER_PID(ld_acquire(&t->rings[0].hdr->gating[0].owner)), (int32_t)pid,
		     "the zombie's slot is taken");
	cr_assert_eq(bus_producer_open(b, "zgate", &po, &p), 0);
	t0 = tnow_ms();
	for (i = 0; i < 3 * (int)(BUS_RING_MIN / sizeof(val)) && !err; i++)
		err = bus_produce(p, 0, &r, NULL, NULL);
	cr_assert_eq(err, 0, "record %d: %s after %ld ms", i, bus_strerror(err),
		     (long)(tnow_ms() - t0));
	cr_assert_eq(ld_acquire(&t->rings[0].hdr->gating[0].owner), 0, "the slot was freed");
	cr_assert_eq(twait(pid, 10000), -1, "killed");
	bus_producer_close(p);
	bus_topic_put(t);
}

/* Nor do zombies keep the gating slots from new consumers: with every
 * slot a zombie's, a gating consumer could not open (-EUSERS). */
Test(cring, gating_slots_of_unreaped_dead_consumers_are_taken_by_new_ones)
{
	struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING };
	struct bus_consumer *c;
	pid_t pids[BUS_GATING_MAX];

	mk_topic("zslots", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	for (int i = 0; i < BUS_GATING_MAX; i++) {
		pids[i] = tfork(gate_and_die, (char[]){ "zslots" });
		cr_assert_eq(tzombie(pids[i], 10000), 0, "gating child %d did not die", i);
	}
	cr_assert_eq(bus_consumer_open(b, "zslots", &co, &c), 0);
	bus_consumer_close(c);
	for (int i = 0; i < BUS_GATING_MAX; i++)
		cr_assert_eq(twait(pids[i], 10000), -1);
}

/* The same with a non-blocking producer, which retries -EAGAIN: its
 * wait_space() returned before it ever looked closer at the slot. */
Test(cring, a_gating_consumer_killed_and_left_unreaped_does_not_hold_a_nonblocking_producer_back)
{
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_NONBLOCK };
	struct bus_producer *p;
	static char val[1000];
	struct bus_record r = { .value = val, .value_len = sizeof(val) };
	int64_t deadline;
	pid_t pid;
	int err = 0, i;

	mk_topic("zgnb", 1, BUS_RING_MIN, BUS_OVERFLOW_BLOCK);
	pid = tfork(gate_and_die, (char[]){ "zgnb" });
	cr_assert_eq(tzombie(pid, 10000), 0, "the gating child did not die");
	cr_assert_eq(bus_producer_open(b, "zgnb", &po, &p), 0);
	deadline = tnow_ms() + 20000;
	for (i = 0; i < 3 * (int)(BUS_RING_MIN / sizeof(val)); i++) {
		while ((err = bus_produce(p, 0, &r, NULL, NULL)) == -EAGAIN && tnow_ms() < deadline)
			sched_yield();
		if (err)
			break;
	}
	cr_assert_eq(err, 0, "record %d: %s after 20 s (the consumer is a zombie)", i,
		     bus_strerror(err));
	cr_assert_eq(twait(pid, 10000), -1, "killed");
	/* Once reaped, the same producer goes on at once. */
	err = bus_produce(p, 0, &r, NULL, NULL);
	cr_assert_eq(err, 0, "after the reap: %s", bus_strerror(err));
	bus_producer_close(p);
}
