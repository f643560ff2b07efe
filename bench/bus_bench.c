/* bench/bus_bench.c - round trip and throughput of libbus between two pinned
 * processes, for comparison with bare_pingpong and bare_ring.
 *
 * usage: bus_bench rtt    [SIZE [ROUND_TRIPS [WARMUP]]]   (64 1000000 100000)
 *        bus_bench tput   [SIZE [RECORDS [RING_BYTES]]]   (64 10000000 4 MiB)
 *        bus_bench fanout N [SIZE [RECORDS [RING_BYTES]]] (N 1..8; 64 2000000)
 *        bus_bench idle   [SECONDS]                        (10)
 *
 * rtt   Topics "ping" and "pong": ephemeral, overwrite, 1 partition, 1 MiB
 *       ring.  The pinger (CPU $BENCH_CPU_A, default 0) appends a SIZE-byte
 *       value carrying a sequence number to "ping" with an exclusive
 *       producer, then waits on "pong" (BUS_WAIT_SPIN, no timeout: the
 *       library's busy-spin, a pause between polls) until the echo arrives; the ponger (CPU $BENCH_CPU_B, default 1)
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
 *       Each side's CPU time over the measured phase (getrusage: user +
 *       system) and its peak RSS (VmHWM, which counts the ring pages it
 *       touched) are reported.
 *       Prints: bus_tput size=.. records=.. recs_per_s=.. bytes_per_s=..
 *               lost=0 errors=0 hugepages=0|1 prod_cpu_s=.. cons_cpu_s=..
 *               prod_hwm_kb=.. cons_hwm_kb=..
 * fanout As tput, with N gating consumer processes reading every record
 *       (BUS_OVERFLOW_BLOCK: nothing is lost; each consumer checks every
 *       record as tput's does).  When the producer and the consumers fit on
 *       the online CPUs (N + 1 <= CPUs) the consumers busy-spin
 *       (BUS_WAIT_SPIN), pinned one per CPU other than the producer's;
 *       otherwise they use BUS_WAIT_SLEEP and are not pinned.  Each
 *       consumer is timed from the start signal to its last record; the
 *       delivered rate is N * RECORDS over the slowest consumer's time.
 *       Prints: bus_fanout consumers=N wait=spin|sleep size=.. records=..
 *               delivered_per_s=.. slowest_per_s=.. lost=0 errors=0
 *               prod_cpu_s=.. cons_cpu_s=.. (sum of the consumers)
 *               prod_hwm_kb=.. cons_hwm_kb=.. (largest)
 * idle  One BUS_WAIT_SLEEP consumer (CPU B) waits with bus_consumer_poll(
 *       timeout -1) on an empty topic while the producer (CPU A) sleeps for
 *       SECONDS, then appends one record carrying its CLOCK_MONOTONIC time.
 *       Prints: bus_idle secs=.. cons_cpu_s=.. cpu_pct=.. wake_ns=..
 *       (the CPU the consumer used while idle, and the delay from the
 *       append to the consumer's return from poll).
 *
 * Each run uses its own bus ("bench-<pid>") in private directories made
 * with mkdtemp(): $BUS_BENCH_SHM_BASE (default: bus_default_shm_dir(), i.e.
 * a hugetlbfs mount when one is usable, else /dev/shm) and /tmp; both are
 * removed at exit.  The parent process never calls libbus: a short-lived
 * child creates the topics, then the two pinned workers attach.
 *
 * Environment: BUS_BENCH_API=claim (tput: zero-copy claim/commit instead of
 * bus_produce), BUS_BENCH_TS=fixed (pass a timestamp instead of 0 = "now"),
 * BUS_BENCH_LOWLAT=0 (rtt: producers without BUS_PRODUCER_LOW_LATENCY),
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

#define FANOUT_MAX BUS_GATING_MAX

struct cons_result {
	double secs, cpu;
	long hwm;
	uint64_t lost, errors, got;
	int done;
};

struct shared {
	_Alignas(128) _Atomic uint32_t ready;
	_Atomic uint32_t go;
	int hugepages;
	double prod_cpu;
	long prod_hwm;
	int prod_done;
	uint64_t wake_ns;
	struct cons_result cons[FANOUT_MAX];
};

static struct shared *shm;
static char shm_dir[PATH_MAX], data_dir[PATH_MAX], bus_nm[BUS_NAME_MAX + 1];
static size_t size;
static uint64_t count, warmup, ring_bytes;
static int use_claim, verbose;
static unsigned fanout_n = 1;
static enum bus_wait fanout_wait = BUS_WAIT_SPIN;
static double idle_secs = 10;
static int64_t ts_value; /* 0: the library stamps "now" */
static unsigned rtt_flags; /* extra producer flags for rtt */
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
	} else { /* tput, fanout, idle */
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

static struct bus_consumer *open_consumer_wait(struct bus *b, const char *topic, unsigned flags,
					       enum bus_wait wait)
{
	struct bus_consumer_opts co;
	memset(&co, 0, sizeof(co));
	co.partition = 0;
	co.wait = wait;
	co.start = BUS_SEEK_EARLIEST;
	co.flags = flags;
	struct bus_consumer *c = NULL;
	check(bus_consumer_open(b, topic, &co, &c), "bus_consumer_open");
	return c;
}

static struct bus_consumer *open_consumer(struct bus *b, const char *topic, unsigned flags)
{
	return open_consumer_wait(b, topic, flags, BUS_WAIT_SPIN);
}

static struct bus_producer *open_producer(struct bus *b, const char *topic, unsigned flags)
{
	struct bus_producer_opts po;
	memset(&po, 0, sizeof(po));
	po.flags = BUS_PRODUCER_EXCLUSIVE | flags;
	struct bus_producer *p = NULL;
	check(bus_producer_open(b, topic, &po, &p), "bus_producer_open");
	return p;
}

/* Waits for one record in the library's busy-spin (BUS_WAIT_SPIN, no
 * timeout: it polls with a pause between tries). */
static void poll_one(struct bus_consumer *c, struct bus_view *v)
{
	for (;;) {
		int n = bus_consumer_poll(c, v, 1, -1);
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
	struct bus_producer *p = open_producer(b, "pong", rtt_flags);
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
	struct bus_producer *p = open_producer(b, "ping", rtt_flags);
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
	struct bus_producer *p = open_producer(b, "tput", 0);
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
	double c0 = bench_cpu_seconds();
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
	shm->prod_cpu = bench_cpu_seconds() - c0;
	shm->prod_hwm = bench_hwm_kb();
	shm->prod_done = 1;
	free(src);
	bus_producer_close(p);
	bus_close(b);
	return 0;
}

#define TPUT_BATCH 256

/* Consumer @arg (0..N-1) of tput and fanout: reads and checks every record,
 * stores its result in shm->cons[i]. */
static int consumer(void *arg)
{
	unsigned idx = (unsigned)(uintptr_t)arg;
	struct bus *b = open_bus();
	struct bus_consumer *c = open_consumer_wait(b, "tput", BUS_CONSUMER_GATING, fanout_wait);
	static struct bus_view views[TPUT_BATCH];
	uint64_t k = bench_pattern_sum(size);
	uint64_t got = 0, lost = 0, errors = 0, next_seq = 0, next_off = 0;
	start_barrier();
	double c0 = bench_cpu_seconds();
	uint64_t t0 = bench_now_ns();
	while (got < count) {
		int n = bus_consumer_poll(c, views, TPUT_BATCH, -1);
		check(n, "bus_consumer_poll");
		for (int i = 0; i < n; i++) {
			const struct bus_view *v = &views[i];
			if (got == 0)
				next_off = v->offset;
			lost += v->lost_before;
			uint64_t seq = v->value_len >= 8 ? bench_load_seq(v->value) : UINT64_MAX;
			if (v->value_len != size || bench_checksum(v->value, size) != seq + k ||
			    seq != next_seq + v->lost_before || v->offset != next_off + v->lost_before) {
				if (errors < 5)
					fprintf(stderr,
						"bus_bench: consumer %u: bad record: offset %llu "
						"(expected %llu) len %u seq %llu (expected %llu)\n",
						idx, (unsigned long long)v->offset,
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
	struct cons_result *res = &shm->cons[idx];
	res->cpu = bench_cpu_seconds() - c0;
	res->hwm = bench_hwm_kb();
	res->secs = (double)(t1 - t0) / 1e9;
	res->lost = lost;
	res->errors = errors;
	res->got = got;
	res->done = 1;
	bus_consumer_close(c);
	bus_close(b);
	return lost || errors ? 1 : 0;
}

/* ----------------------------------------------------------------- idle */

static int idle_producer(void *arg)
{
	(void)arg;
	struct bus *b = open_bus();
	struct bus_producer *p = open_producer(b, "tput", 0);
	uint64_t buf[8];
	memset(buf, 0, sizeof(buf));
	struct bus_record r;
	memset(&r, 0, sizeof(r));
	r.value = buf;
	r.value_len = sizeof(buf);
	start_barrier();
	struct timespec ts = { (time_t)idle_secs,
			       (long)((idle_secs - (double)(time_t)idle_secs) * 1e9) };
	while (nanosleep(&ts, &ts) != 0)
		if (errno != EINTR)
			bench_die("bus_bench: nanosleep: %s", strerror(errno));
	buf[0] = bench_now_ns();
	check(bus_produce(p, 0, &r, NULL, NULL), "bus_produce");
	shm->prod_done = 1;
	bus_producer_close(p);
	bus_close(b);
	return 0;
}

static int idle_consumer(void *arg)
{
	(void)arg;
	struct bus *b = open_bus();
	struct bus_consumer *c = open_consumer_wait(b, "tput", 0, BUS_WAIT_SLEEP);
	struct bus_view v;
	start_barrier();
	double c0 = bench_cpu_seconds();
	uint64_t t0 = bench_now_ns();
	int n;
	while ((n = bus_consumer_poll(c, &v, 1, -1)) == 0)
		;
	uint64_t t1 = bench_now_ns();
	check(n, "bus_consumer_poll");
	struct cons_result *res = &shm->cons[0];
	res->cpu = bench_cpu_seconds() - c0;
	res->secs = (double)(t1 - t0) / 1e9;
	uint64_t sent;
	if (v.value_len != 64)
		bench_die("bus_bench: idle: record of %u bytes", v.value_len);
	memcpy(&sent, v.value, 8);
	shm->wake_ns = t1 > sent ? t1 - sent : 0;
	res->hwm = bench_hwm_kb();
	res->got = 1;
	res->done = 1;
	bus_consumer_close(c);
	bus_close(b);
	return 0;
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

/* The CPU consumer @i of @n runs on: the i-th online CPU after B other than
 * A, when the producer and all consumers fit on the online CPUs; else -1
 * (not pinned). */
static int consumer_cpu(unsigned i, unsigned n)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 1 || (long)n + 1 > ncpu)
		return -1;
	int a = bench_cpu(0), cpu = bench_cpu(1);
	for (unsigned k = 0;; cpu = (cpu + 1) % (int)ncpu) {
		if (cpu == a)
			continue;
		if (k++ == i)
			return cpu;
	}
}

static void print_result(const char *mode)
{
	if (strcmp(mode, "rtt") == 0)
		return; /* the pinger printed its histogram */
	if (strcmp(mode, "idle") == 0) {
		const struct cons_result *r = &shm->cons[0];
		printf("bus_idle secs=%.3f cons_cpu_s=%.6f cpu_pct=%.4f wake_ns=%llu cons_hwm_kb=%ld\n",
		       r->secs, r->cpu, 100.0 * r->cpu / r->secs,
		       (unsigned long long)shm->wake_ns, r->hwm);
		return;
	}
	double slowest = 0, cpu = 0;
	uint64_t lost = 0, errors = 0;
	long hwm = 0;
	for (unsigned i = 0; i < fanout_n; i++) {
		const struct cons_result *r = &shm->cons[i];
		if (r->secs > slowest)
			slowest = r->secs;
		cpu += r->cpu;
		lost += r->lost;
		errors += r->errors;
		if (r->hwm > hwm)
			hwm = r->hwm;
	}
	if (strcmp(mode, "tput") == 0)
		printf("bus_tput size=%zu records=%llu api=%s recs_per_s=%.0f bytes_per_s=%.0f "
		       "lost=%llu errors=%llu hugepages=%d ring=%llu prod_cpu_s=%.3f "
		       "cons_cpu_s=%.3f prod_hwm_kb=%ld cons_hwm_kb=%ld\n",
		       size, (unsigned long long)count, use_claim ? "claim" : "produce",
		       (double)count / slowest, (double)count * (double)size / slowest,
		       (unsigned long long)lost, (unsigned long long)errors, shm->hugepages,
		       (unsigned long long)ring_bytes, shm->prod_cpu, cpu, shm->prod_hwm, hwm);
	else
		printf("bus_fanout consumers=%u wait=%s size=%zu records=%llu delivered_per_s=%.0f "
		       "slowest_per_s=%.0f lost=%llu errors=%llu hugepages=%d prod_cpu_s=%.3f "
		       "cons_cpu_s=%.3f prod_hwm_kb=%ld cons_hwm_kb=%ld\n",
		       fanout_n, fanout_wait == BUS_WAIT_SPIN ? "spin" : "sleep", size,
		       (unsigned long long)count, (double)count * fanout_n / slowest,
		       (double)count / slowest, (unsigned long long)lost,
		       (unsigned long long)errors, shm->hugepages, shm->prod_cpu, cpu,
		       shm->prod_hwm, hwm);
}

static int run(const char *mode)
{
	bench_spawn(setup, (void *)(uintptr_t)mode, -1);
	if (bench_wait_all("bus_bench setup") != 0)
		return -1;
	unsigned workers = 2;
	if (strcmp(mode, "rtt") == 0) {
		bench_spawn(ponger, NULL, bench_cpu(1));
		bench_spawn(pinger, NULL, bench_cpu(0));
	} else if (strcmp(mode, "idle") == 0) {
		bench_spawn(idle_consumer, NULL, bench_cpu(1));
		bench_spawn(idle_producer, NULL, bench_cpu(0));
	} else {
		for (unsigned i = 0; i < fanout_n; i++)
			bench_spawn(consumer, (void *)(uintptr_t)i,
				    strcmp(mode, "tput") == 0 ? bench_cpu(1)
							      : consumer_cpu(i, fanout_n));
		bench_spawn(producer, NULL, bench_cpu(0));
		workers = fanout_n + 1;
	}
	if (bench_wait_ready(&shm->ready, workers, &shm->go, "bus_bench") != 0)
		return -1;
	if (bench_wait_all("bus_bench") != 0)
		return -1;
	if (strcmp(mode, "rtt") != 0) {
		for (unsigned i = 0; i < fanout_n; i++)
			if (!shm->cons[i].done) {
				fprintf(stderr, "bus_bench: consumer %u reported nothing\n", i);
				return -1;
			}
	}
	print_result(mode);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: bus_bench rtt    [SIZE [ROUND_TRIPS [WARMUP]]]\n"
			"       bus_bench tput   [SIZE [RECORDS [RING_BYTES]]]\n"
			"       bus_bench fanout N [SIZE [RECORDS [RING_BYTES]]]\n"
			"       bus_bench idle   [SECONDS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	int rtt = strcmp(mode, "rtt") == 0;
	int fanout = strcmp(mode, "fanout") == 0;
	int idle = strcmp(mode, "idle") == 0;
	if (!rtt && !fanout && !idle && strcmp(mode, "tput") != 0)
		usage();
	if (fanout) {
		if (argc < 3)
			usage();
		uint64_t n = bench_parse_u64(argv[2], "consumers");
		if (n < 1 || n > FANOUT_MAX)
			bench_die("bus_bench: fanout: 1 to %d consumers", FANOUT_MAX);
		fanout_n = (unsigned)n;
		argv++;
		argc--;
	}
	if (argc > 5 || (idle && argc > 3))
		usage();
	if (idle) {
		char *end;
		idle_secs = argc > 2 ? strtod(argv[2], &end) : 10.0;
		if (argc > 2 && (*end || idle_secs <= 0 || idle_secs > 3600))
			bench_die("bus_bench: bad seconds '%s'", argv[2]);
		size = 64;
		count = 1;
		ring_bytes = 1u << 20;
	} else {
		size = argc > 2 ? (size_t)bench_parse_u64(argv[2], "size") : 64;
		count = argc > 3 ? bench_parse_u64(argv[3], "count")
			: rtt	 ? 1000000
			: fanout ? 2000000
				 : 10000000;
		if (rtt) {
			warmup = argc > 4 ? bench_parse_u64(argv[4], "warmup") : 100000;
			ring_bytes = 1u << 20;
		} else {
			ring_bytes = argc > 4 ? bench_parse_u64(argv[4], "ring bytes")
					      : BUS_RING_DEFAULT;
		}
	}
	if (size < 8 || size % 8 || count == 0)
		bench_die("bus_bench: SIZE must be a multiple of 8 (>= 8), the count > 0");
	if (fanout && consumer_cpu(0, fanout_n) < 0)
		fanout_wait = BUS_WAIT_SLEEP;
	const char *s = getenv("BUS_BENCH_API");
	use_claim = s && strcmp(s, "claim") == 0;
	s = getenv("BUS_BENCH_TS");
	ts_value = s && strcmp(s, "fixed") == 0 ? 1700000000000000000ll : 0;
	s = getenv("BUS_BENCH_LOWLAT");
	rtt_flags = s && strcmp(s, "0") == 0 ? 0 : BUS_PRODUCER_LOW_LATENCY;
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
