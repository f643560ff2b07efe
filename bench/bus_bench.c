/* bench/bus_bench.c - round trip and throughput of libbus between two pinned
 * processes, for comparison with bare_pingpong and bare_ring.
 *
 * usage: bus_bench rtt  [SIZE [ROUND_TRIPS [WARMUP]]]   (64 1000000 100000)
 *        bus_bench tput [SIZE [RECORDS [RING_BYTES]]]   (64 10000000 4 MiB)
 *
 * rtt   Topics "ping" and "pong": ephemeral, overwrite, 1 partition, 1 MiB
 *       ring.  The pinger (CPU $BENCH_CPU_A, default 0) appends a SIZE-byte
 *       value carrying a sequence number to "ping" with an exclusive
 *       producer, then polls "pong" (BUS_WAIT_SPIN, timeout 0, in a loop)
 *       until the echo arrives; the ponger (CPU $BENCH_CPU_B, default 1)
 *       polls "ping" the same way and appends the view's value to "pong".
 *       Both call bus_consumer_check() after using a view, as a reader of an
 *       overwrite topic must.  Each round trip is timed with
 *       clock_gettime(CLOCK_MONOTONIC), as in bare_pingpong.
 *       Prints: bus_rtt size=.. rtt_p50_ns=.. p90=.. p99=.. p999=.. p9999=..
 *               max=..
 * tput  Topic "tput": ephemeral, block, 1 partition, RING_BYTES ring.  One
 *       exclusive producer appends RECORDS values of SIZE bytes (word 0 the
 *       sequence number, the rest a fixed pattern, as in bare_ring); one
 *       gating consumer (BUS_WAIT_SPIN, poll of up to 256 views, timeout -1)
 *       sums every word of each value and checks the sum, the sequence, the
 *       offsets and lost_before (must be 0).  Timed by the consumer from the
 *       start signal to its last record.
 *       Prints: bus_tput size=.. records=.. recs_per_s=.. bytes_per_s=..
 *               lost=0 errors=0 hugepages=0|1
 *
 * Each run uses its own bus ("bench-<pid>") in private directories made
 * with mkdtemp(): $BUS_BENCH_SHM_BASE (default: bus_default_shm_dir(), i.e.
 * a hugetlbfs mount when one is usable, else /dev/shm) and /tmp; both are
 * removed at exit.  The parent process never calls libbus: a short-lived
 * child creates the topics, then the two pinned workers attach.
 *
 * Environment: BUS_BENCH_API=claim (tput: zero-copy claim/commit instead of
 * bus_produce), BUS_BENCH_TS=fixed (pass a timestamp instead of 0 = "now"),
 * BUS_BENCH_VERBOSE=1 (print the library's info events), BENCH_TIMEOUT,
 * BENCH_CPU_A, BENCH_CPU_B.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <bus/bus.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "hist.h"

struct shared {
	_Alignas(128) _Atomic uint32_t ready;
	_Atomic uint32_t go;
	int hugepages;
};

static struct shared *shm;
static char shm_dir[PATH_MAX], data_dir[PATH_MAX], bus_nm[BUS_NAME_MAX + 1];
static size_t size;
static uint64_t count, warmup, ring_bytes;
static int use_claim, verbose;
static int64_t ts_value; /* 0: the library stamps "now" */
static struct hist lat;

static void check(int rc, const char *what)
{
	if (rc < 0)
		bench_die("bus_bench: %s: %s (%d)", what, bus_strerror(rc), rc);
}

static void log_event(void *ctx, enum bus_log_level level, const char *msg)
{
	(void)ctx;
	static const char *const names[] = { "error", "warn", "info", "debug" };
	if (level <= BUS_LOG_WARN || verbose)
		fprintf(stderr, "bus_bench[%d]: libbus %s: %s\n", (int)getpid(),
			(unsigned)level < 4 ? names[level] : "?", msg);
}

static struct bus *open_bus(void)
{
	struct bus_opts o;
	memset(&o, 0, sizeof(o));
	o.name = bus_nm;
	o.shm_dir = shm_dir;
	o.data_dir = data_dir;
	o.flags = BUS_F_PRIVATE;
	o.log = log_event;
	struct bus *b = NULL;
	check(bus_open(&b, &o), "bus_open");
	return b;
}

static void start_barrier(void)
{
	atomic_fetch_add_explicit(&shm->ready, 1, memory_order_acq_rel);
	while (!atomic_load_explicit(&shm->go, memory_order_acquire))
		bench_cpu_relax();
}

/* Creates the topics of the run; exits. */
static int setup(void *arg)
{
	const char *mode = arg;
	struct bus *b = open_bus();
	struct bus_topic_config cfg;
	bus_topic_config_init(&cfg);
	cfg.partitions = 1;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.ring_size = ring_bytes;
	const char *probe;
	if (strcmp(mode, "rtt") == 0) {
		cfg.overflow = BUS_OVERFLOW_OVERWRITE;
		check(bus_topic_create(b, "ping", &cfg), "bus_topic_create(ping)");
		check(bus_topic_create(b, "pong", &cfg), "bus_topic_create(pong)");
		probe = "ping";
	} else {
		cfg.overflow = BUS_OVERFLOW_BLOCK;
		check(bus_topic_create(b, "tput", &cfg), "bus_topic_create(tput)");
		probe = "tput";
	}
	struct bus_partition_info pi;
	check(bus_partition_describe(b, probe, 0, &pi), "bus_partition_describe");
	shm->hugepages = pi.hugepages;
	bus_close(b);
	return 0;
}

static struct bus_consumer *open_consumer(struct bus *b, const char *topic, unsigned flags)
{
	struct bus_consumer_opts co;
	memset(&co, 0, sizeof(co));
	co.partition = 0;
	co.wait = BUS_WAIT_SPIN;
	co.start = BUS_SEEK_EARLIEST;
	co.flags = flags;
	struct bus_consumer *c = NULL;
	check(bus_consumer_open(b, topic, &co, &c), "bus_consumer_open");
	return c;
}

static struct bus_producer *open_producer(struct bus *b, const char *topic)
{
	struct bus_producer_opts po;
	memset(&po, 0, sizeof(po));
	po.flags = BUS_PRODUCER_EXCLUSIVE;
	struct bus_producer *p = NULL;
	check(bus_producer_open(b, topic, &po, &p), "bus_producer_open");
	return p;
}

/* Busy-polls (timeout 0) until one record arrives. */
static void poll_one(struct bus_consumer *c, struct bus_view *v)
{
	for (;;) {
		int n = bus_consumer_poll(c, v, 1, 0);
		if (n == 1)
			return;
		check(n, "bus_consumer_poll");
	}
}

/* ------------------------------------------------------------------ rtt */

static int ponger(void *arg)
{
	(void)arg;
	struct bus *b = open_bus();
	struct bus_consumer *c = open_consumer(b, "ping", 0);
	struct bus_producer *p = open_producer(b, "pong");
	uint64_t total = count + warmup;
	struct bus_view v;
	struct bus_record r;
	memset(&r, 0, sizeof(r));
	r.timestamp = ts_value;
	start_barrier();
	for (uint64_t i = 1; i <= total; i++) {
		poll_one(c, &v);
		if (v.lost_before)
			bench_die("bus_bench: ponger: %llu records lost before round trip %llu",
				  (unsigned long long)v.lost_before, (unsigned long long)i);
		r.value = v.value;
		r.value_len = v.value_len;
		check(bus_produce(p, 0, &r, NULL, NULL), "bus_produce(pong)");
		if (bus_consumer_check(c, &v, 1) != 1)
			bench_die("bus_bench: ponger: view overwritten at round trip %llu",
				  (unsigned long long)i);
	}
	bus_producer_close(p);
	bus_consumer_close(c);
	bus_close(b);
	return 0;
}

static int pinger(void *arg)
{
	(void)arg;
	struct bus *b = open_bus();
	struct bus_consumer *c = open_consumer(b, "pong", 0);
	struct bus_producer *p = open_producer(b, "ping");
	uint64_t total = count + warmup;
	char *buf = calloc(1, size);
	if (!buf)
		bench_die("bus_bench: out of memory");
	bench_fill(buf, size);
	struct bus_view v;
	struct bus_record r;
	memset(&r, 0, sizeof(r));
	r.value = buf;
	r.value_len = (uint32_t)size;
	r.timestamp = ts_value;
	hist_init(&lat);
	start_barrier();
	for (uint64_t i = 1; i <= total; i++) {
		bench_store_seq(buf, i);
		uint64_t t0 = bench_now_ns();
		check(bus_produce(p, 0, &r, NULL, NULL), "bus_produce(ping)");
		poll_one(c, &v);
		uint64_t t1 = bench_now_ns();
		if (v.value_len != size || bench_load_seq(v.value) != i || v.lost_before)
			bench_die("bus_bench: pinger: bad echo at round trip %llu: len %u seq %llu "
				  "lost_before %llu",
				  (unsigned long long)i, v.value_len,
				  v.value_len >= 8 ? (unsigned long long)bench_load_seq(v.value) : 0ull,
				  (unsigned long long)v.lost_before);
		if (bus_consumer_check(c, &v, 1) != 1)
			bench_die("bus_bench: pinger: view overwritten at round trip %llu",
				  (unsigned long long)i);
		if (i > warmup)
			hist_record(&lat, t1 - t0);
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "bus_rtt size=%zu", size);
	hist_print(stdout, prefix, &lat);
	free(buf);
	bus_producer_close(p);
	bus_consumer_close(c);
	bus_close(b);
	return 0;
}

/* ----------------------------------------------------------------- tput */

static int producer(void *arg)
{
	(void)arg;
	struct bus *b = open_bus();
	struct bus_producer *p = open_producer(b, "tput");
	char *src = aligned_alloc(64, (size + 63) & ~(size_t)63);
	if (!src)
		bench_die("bus_bench: out of memory");
	bench_fill(src, size);
	struct bus_record r;
	memset(&r, 0, sizeof(r));
	r.value = src;
	r.value_len = (uint32_t)size;
	r.timestamp = ts_value;
	start_barrier();
	if (use_claim) {
		for (uint64_t seq = 0; seq < count; seq++) {
			struct bus_claim cl;
			check(bus_producer_claim(p, 0, NULL, 0, (uint32_t)size, &cl),
			      "bus_producer_claim");
			bench_store_seq(src, seq);
			memcpy(cl.value, src, size);
			check(bus_producer_commit(p, &cl, ts_value), "bus_producer_commit");
		}
	} else {
		for (uint64_t seq = 0; seq < count; seq++) {
			bench_store_seq(src, seq);
			check(bus_produce(p, 0, &r, NULL, NULL), "bus_produce");
		}
	}
	free(src);
	bus_producer_close(p);
	bus_close(b);
	return 0;
}

#define TPUT_BATCH 256

static int consumer(void *arg)
{
	(void)arg;
	struct bus *b = open_bus();
	struct bus_consumer *c = open_consumer(b, "tput", BUS_CONSUMER_GATING);
	static struct bus_view views[TPUT_BATCH];
	uint64_t k = bench_pattern_sum(size);
	uint64_t got = 0, lost = 0, errors = 0, next_seq = 0, next_off = 0, first_off = 0;
	start_barrier();
	uint64_t t0 = bench_now_ns();
	while (got < count) {
		int n = bus_consumer_poll(c, views, TPUT_BATCH, -1);
		check(n, "bus_consumer_poll");
		for (int i = 0; i < n; i++) {
			const struct bus_view *v = &views[i];
			if (got == 0)
				first_off = next_off = v->offset;
			lost += v->lost_before;
			uint64_t seq = v->value_len >= 8 ? bench_load_seq(v->value) : UINT64_MAX;
			if (v->value_len != size || bench_checksum(v->value, size) != seq + k ||
			    seq != next_seq + v->lost_before || v->offset != next_off + v->lost_before) {
				if (errors < 5)
					fprintf(stderr,
						"bus_bench: consumer: bad record: offset %llu "
						"(expected %llu) len %u seq %llu (expected %llu)\n",
						(unsigned long long)v->offset,
						(unsigned long long)next_off, v->value_len,
						(unsigned long long)seq, (unsigned long long)next_seq);
				errors++;
			}
			next_seq = seq + 1;
			next_off = v->offset + 1;
			got++;
		}
	}
	uint64_t t1 = bench_now_ns();
	double secs = (double)(t1 - t0) / 1e9;
	struct bus_consumer_stats st;
	bus_consumer_stats(c, &st);
	printf("bus_tput size=%zu records=%llu api=%s recs_per_s=%.0f bytes_per_s=%.0f lost=%llu "
	       "errors=%llu laps=%llu first_offset=%llu hugepages=%d ring=%llu\n",
	       size, (unsigned long long)count, use_claim ? "claim" : "produce",
	       (double)count / secs, (double)count * (double)size / secs,
	       (unsigned long long)lost, (unsigned long long)errors,
	       (unsigned long long)st.laps, (unsigned long long)first_off, shm->hugepages,
	       (unsigned long long)ring_bytes);
	bus_consumer_close(c);
	bus_close(b);
	return lost || errors ? 1 : 0;
}

/* ----------------------------------------------------------------- main */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

static void rm_tree(const char *dir)
{
	if (dir[0] && nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "bus_bench: cannot remove %s: %s\n", dir, strerror(errno));
}

static int make_temp(char *out, size_t len, const char *base)
{
	snprintf(out, len, "%s/bus-bench.XXXXXX", base);
	if (!mkdtemp(out)) {
		fprintf(stderr, "bus_bench: mkdtemp(%s): %s\n", out, strerror(errno));
		out[0] = '\0';
		return -1;
	}
	return 0;
}

static int run(const char *mode)
{
	bench_spawn(setup, (void *)(uintptr_t)mode, -1);
	if (bench_wait_all("bus_bench setup") != 0)
		return -1;
	if (strcmp(mode, "rtt") == 0) {
		bench_spawn(ponger, NULL, bench_cpu(1));
		bench_spawn(pinger, NULL, bench_cpu(0));
	} else {
		bench_spawn(consumer, NULL, bench_cpu(1));
		bench_spawn(producer, NULL, bench_cpu(0));
	}
	if (bench_wait_ready(&shm->ready, 2, &shm->go, "bus_bench") != 0)
		return -1;
	return bench_wait_all("bus_bench");
}

static void usage(void)
{
	fprintf(stderr, "usage: bus_bench rtt  [SIZE [ROUND_TRIPS [WARMUP]]]\n"
			"       bus_bench tput [SIZE [RECORDS [RING_BYTES]]]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 5)
		usage();
	const char *mode = argv[1];
	int rtt = strcmp(mode, "rtt") == 0;
	if (!rtt && strcmp(mode, "tput") != 0)
		usage();
	size = argc > 2 ? (size_t)bench_parse_u64(argv[2], "size") : 64;
	count = argc > 3 ? bench_parse_u64(argv[3], "count") : rtt ? 1000000 : 10000000;
	if (rtt) {
		warmup = argc > 4 ? bench_parse_u64(argv[4], "warmup") : 100000;
		ring_bytes = 1u << 20;
	} else {
		ring_bytes = argc > 4 ? bench_parse_u64(argv[4], "ring bytes") : BUS_RING_DEFAULT;
	}
	if (size < 8 || size % 8 || count == 0)
		bench_die("bus_bench: SIZE must be a multiple of 8 (>= 8), the count > 0");
	const char *s = getenv("BUS_BENCH_API");
	use_claim = s && strcmp(s, "claim") == 0;
	s = getenv("BUS_BENCH_TS");
	ts_value = s && strcmp(s, "fixed") == 0 ? 1700000000000000000ll : 0;
	s = getenv("BUS_BENCH_VERBOSE");
	verbose = s && *s && strcmp(s, "0") != 0;
	snprintf(bus_nm, sizeof(bus_nm), "bench-%d", (int)getpid());

	s = getenv("BUS_BENCH_SHM_BASE");
	const char *shm_base = s && *s ? s : bus_default_shm_dir();
	shm = bench_shared(sizeof(*shm));
	bench_arm_watchdog();
	int rc = -1;
	if (make_temp(shm_dir, sizeof(shm_dir), shm_base) == 0 &&
	    make_temp(data_dir, sizeof(data_dir), "/tmp") == 0)
		rc = run(mode);
	rm_tree(shm_dir);
	rm_tree(data_dir);
	return rc == 0 ? 0 : 1;
}
