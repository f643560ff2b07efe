/* bench/base_common.h - the driver shared by the baseline programs
 * (base_uds, base_pipe, base_zmq, base_iceoryx): the round-trip and
 * throughput loops of bus_bench, around a transport's four operations.
 * Header-only; each program includes it once and calls base_main().
 *
 * usage: base_X rtt  VARIANT [SIZE [ROUND_TRIPS [WARMUP]]]  (64 1000000 100000)
 *        base_X tput VARIANT [SIZE [RECORDS]]               (64 10000000)
 *
 * rtt   As bus_bench rtt: the pinger (CPU $BENCH_CPU_A, default 0) stores
 *       the round trip's sequence number into word 0 of a SIZE-byte value
 *       (the other words a fixed pattern), sends it and waits for the echo;
 *       the ponger (CPU $BENCH_CPU_B, default 1) receives it and sends the
 *       received bytes back.  Each round trip is timed with
 *       clock_gettime(CLOCK_MONOTONIC); the echo's length and sequence
 *       number are checked.
 *       Prints: <prog> variant=.. size=.. rtt_p50_ns=.. p90=.. p99=.. p999=..
 *               p9999=.. max=.. min=.. mean=.. n=..
 * tput  As bus_bench tput: the producer (CPU A) sends RECORDS values of
 *       SIZE bytes, one send per record; the consumer (CPU B) sums every
 *       word of every record and checks the sum and the sequence.  Timed by
 *       the consumer from the start signal to its last record.  The CPU
 *       time (getrusage, all threads of the process) of each side over the
 *       measured phase and its peak RSS (VmHWM) are reported.
 *       Prints: <prog> variant=.. size=.. records=.. recs_per_s=..
 *               bytes_per_s=.. errors=0 prod_cpu_s=.. cons_cpu_s=..
 *               prod_hwm_kb=.. cons_hwm_kb=..
 *
 * Every send copies the value once into the transport (the kernel, or a
 * loaned shared-memory chunk), as bus_produce() copies it into the ring;
 * every receive hands out the received bytes in place where the transport
 * allows it.  Failures exit non-zero with a message on stderr.
 */
#ifndef BUS_BENCH_BASE_COMMON_H
#define BUS_BENCH_BASE_COMMON_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "hist.h"

enum base_role {
	BASE_A = 0, /* pinger / producer, CPU A */
	BASE_B = 1, /* ponger / consumer, CPU B */
};

struct base_transport {
	const char *prog;            /* "base_uds" */
	const char *const *variants; /* NULL-terminated; index passed below */
	/* In the parent, before the workers are forked (socketpairs, pipes,
	 * names).  @rtt: 1 for rtt, 0 for tput.  May be NULL. */
	void (*prepare)(int variant, int rtt, size_t size);
	/* In a worker, after fork and pinning, before the start barrier: make
	 * the connection and wait until it is usable. */
	void (*open)(enum base_role role);
	/* Send @len bytes at @buf as one message (copied). */
	void (*send)(const void *buf, size_t len);
	/* Wait for data; return a pointer to @*n >= @len bytes holding whole
	 * messages of @len bytes (a stream may hand out several at once; a
	 * message transport exactly one).  Valid until release(). */
	const void *(*take)(size_t len, size_t *n);
	void (*release)(const void *p, size_t n);
	/* In the worker after its loop.  May be NULL. */
	void (*close)(enum base_role role);
	/* In the parent after the workers ended.  May be NULL. */
	void (*cleanup)(void);
	/* Workers end with exit() rather than _exit(), so that the library's
	 * static destructors run (iceoryx deregisters from RouDi there). */
	int exit_normally;
};

struct base_shared {
	_Alignas(128) _Atomic uint32_t ready;
	_Atomic uint32_t go;
	uint64_t errors;
	double secs;
	double prod_cpu, cons_cpu;
	long prod_hwm, cons_hwm;
	int done;
	struct hist lat;
};

static const struct base_transport *base_t;
static struct base_shared *base_shm;
static int base_variant;
static size_t base_size;
static uint64_t base_count, base_warmup;

static void base_start_barrier(void)
{
	atomic_fetch_add_explicit(&base_shm->ready, 1, memory_order_acq_rel);
	while (!atomic_load_explicit(&base_shm->go, memory_order_acquire))
		bench_cpu_relax();
}

static void *base_value(void)
{
	char *src = aligned_alloc(64, (base_size + 63) & ~(size_t)63);
	if (!src)
		bench_die("%s: out of memory", base_t->prog);
	memset(src, 0, base_size);
	bench_fill(src, base_size);
	return src;
}

/* ------------------------------------------------------------------ rtt */

/* A worker's end: through exit() when the transport asks for it. */
static int base_end(int rc)
{
	if (base_t->exit_normally) {
		fflush(stdout);
		fflush(stderr);
		exit(rc);
	}
	return rc;
}

static int base_ponger(void *arg)
{
	(void)arg;
	base_t->open(BASE_B);
	uint64_t total = base_count + base_warmup;
	base_start_barrier();
	for (uint64_t i = 1; i <= total; i++) {
		size_t n;
		const void *p = base_t->take(base_size, &n);
		if (n != base_size)
			bench_die("%s: ponger: %zu bytes at round trip %llu, expected %zu",
				  base_t->prog, n, (unsigned long long)i, base_size);
		base_t->send(p, base_size);
		base_t->release(p, n);
	}
	if (base_t->close)
		base_t->close(BASE_B);
	return base_end(0);
}

static int base_pinger(void *arg)
{
	(void)arg;
	base_t->open(BASE_A);
	char *buf = base_value();
	uint64_t total = base_count + base_warmup;
	struct hist *lat = &base_shm->lat;
	hist_init(lat);
	base_start_barrier();
	for (uint64_t i = 1; i <= total; i++) {
		bench_store_seq(buf, i);
		uint64_t t0 = bench_now_ns();
		base_t->send(buf, base_size);
		size_t n;
		const void *p = base_t->take(base_size, &n);
		uint64_t t1 = bench_now_ns();
		if (n != base_size || bench_load_seq(p) != i ||
		    bench_checksum(p, base_size) != i + bench_pattern_sum(base_size))
			bench_die("%s: pinger: bad echo at round trip %llu: %zu bytes, seq %llu",
				  base_t->prog, (unsigned long long)i, n,
				  (unsigned long long)bench_load_seq(p));
		base_t->release(p, n);
		if (i > base_warmup)
			hist_record(lat, t1 - t0);
	}
	base_shm->done = 1;
	free(buf);
	if (base_t->close)
		base_t->close(BASE_A);
	return base_end(0);
}

/* ----------------------------------------------------------------- tput */

static int base_producer(void *arg)
{
	(void)arg;
	base_t->open(BASE_A);
	char *src = base_value();
	base_start_barrier();
	double c0 = bench_cpu_seconds();
	for (uint64_t seq = 0; seq < base_count; seq++) {
		bench_store_seq(src, seq);
		base_t->send(src, base_size);
	}
	base_shm->prod_cpu = bench_cpu_seconds() - c0;
	base_shm->prod_hwm = bench_hwm_kb();
	free(src);
	if (base_t->close)
		base_t->close(BASE_A);
	return base_end(0);
}

static int base_consumer(void *arg)
{
	(void)arg;
	base_t->open(BASE_B);
	uint64_t k = bench_pattern_sum(base_size), errors = 0, got = 0;
	base_start_barrier();
	double c0 = bench_cpu_seconds();
	uint64_t t0 = bench_now_ns();
	while (got < base_count) {
		size_t n;
		const char *p = base_t->take(base_size, &n);
		if (n == 0 || n % base_size)
			bench_die("%s: consumer: %zu bytes, not whole records of %zu", base_t->prog,
				  n, base_size);
		for (size_t off = 0; off < n; off += base_size) {
			uint64_t seq = bench_load_seq(p + off);
			if (seq != got || bench_checksum(p + off, base_size) != seq + k) {
				if (errors < 5)
					fprintf(stderr,
						"%s: consumer: bad record %llu (seq %llu)\n",
						base_t->prog, (unsigned long long)got,
						(unsigned long long)seq);
				errors++;
			}
			got++;
		}
		base_t->release(p, n);
	}
	uint64_t t1 = bench_now_ns();
	base_shm->cons_cpu = bench_cpu_seconds() - c0;
	base_shm->cons_hwm = bench_hwm_kb();
	base_shm->secs = (double)(t1 - t0) / 1e9;
	base_shm->errors = errors;
	base_shm->done = 1;
	if (got != base_count)
		bench_die("%s: consumer: %llu records, expected %llu", base_t->prog,
			  (unsigned long long)got, (unsigned long long)base_count);
	if (base_t->close)
		base_t->close(BASE_B);
	return base_end(errors ? 1 : 0);
}

/* ----------------------------------------------------------------- main */

static void base_usage(void)
{
	fprintf(stderr,
		"usage: %s rtt  VARIANT [SIZE [ROUND_TRIPS [WARMUP]]]\n"
		"       %s tput VARIANT [SIZE [RECORDS]]\n"
		"variants:",
		base_t->prog, base_t->prog);
	for (const char *const *v = base_t->variants; *v; v++)
		fprintf(stderr, " %s", *v);
	fputc('\n', stderr);
	exit(2);
}

static int base_main(const struct base_transport *t, int argc, char **argv)
{
	base_t = t;
	if (argc < 3 || argc > 6)
		base_usage();
	int rtt = strcmp(argv[1], "rtt") == 0;
	if (!rtt && strcmp(argv[1], "tput") != 0)
		base_usage();
	if (!rtt && argc > 5)
		base_usage();
	base_variant = -1;
	for (int i = 0; t->variants[i]; i++)
		if (strcmp(argv[2], t->variants[i]) == 0)
			base_variant = i;
	if (base_variant < 0)
		base_usage();
	base_size = argc > 3 ? (size_t)bench_parse_u64(argv[3], "size") : 64;
	base_count = argc > 4 ? bench_parse_u64(argv[4], "count") : rtt ? 1000000 : 10000000;
	base_warmup = rtt && argc > 5 ? bench_parse_u64(argv[5], "warmup") : rtt ? 100000 : 0;
	if (base_size < 8 || base_size % 8 || base_count == 0)
		bench_die("%s: SIZE must be a multiple of 8 (>= 8), the count > 0", t->prog);

	base_shm = bench_shared(sizeof(*base_shm));
	if (t->prepare)
		t->prepare(base_variant, rtt, base_size);
	bench_arm_watchdog();
	if (rtt) {
		bench_spawn(base_ponger, NULL, bench_cpu(1));
		bench_spawn(base_pinger, NULL, bench_cpu(0));
	} else {
		bench_spawn(base_consumer, NULL, bench_cpu(1));
		bench_spawn(base_producer, NULL, bench_cpu(0));
	}
	int rc = bench_wait_ready(&base_shm->ready, 2, &base_shm->go, t->prog);
	if (rc == 0)
		rc = bench_wait_all(t->prog);
	if (t->cleanup)
		t->cleanup();
	if (rc != 0 || !base_shm->done)
		return 1;
	char prefix[160];
	snprintf(prefix, sizeof(prefix), "%s variant=%s size=%zu", t->prog,
		 t->variants[base_variant], base_size);
	if (rtt) {
		hist_print(stdout, prefix, &base_shm->lat);
	} else {
		double s = base_shm->secs;
		printf("%s records=%llu recs_per_s=%.0f bytes_per_s=%.0f errors=%llu "
		       "prod_cpu_s=%.3f cons_cpu_s=%.3f prod_hwm_kb=%ld cons_hwm_kb=%ld\n",
		       prefix, (unsigned long long)base_count, (double)base_count / s,
		       (double)base_count * (double)base_size / s,
		       (unsigned long long)base_shm->errors, base_shm->prod_cpu,
		       base_shm->cons_cpu, base_shm->prod_hwm, base_shm->cons_hwm);
	}
	return 0;
}

#endif
