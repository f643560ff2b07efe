/* bench/bare_pingpong.c - the physical limit of a round trip between two
 * cores: two processes ping-pong a counter through shared memory.
 *
 * usage: bare_pingpong [ROUND_TRIPS [WARMUP]]     (default 1000000 100000)
 *
 * The pinger (CPU $BENCH_CPU_A, default 0) stores i into its line and
 * busy-spins until the ponger (CPU $BENCH_CPU_B, default 1) has copied i
 * into the other line.  Each line is written by one side only; the two are
 * 128 bytes apart so the adjacent-line prefetcher does not pair them.  No
 * pause instruction in the spin loops: this is the floor, not a polite
 * spinner.  Each round trip is timed with clock_gettime(CLOCK_MONOTONIC)
 * (vDSO); the clock's own cost is inside every figure, as it is inside
 * bus_bench's.
 *
 * Prints: bare_pingpong rtt_p50_ns=.. p90=.. p99=.. p999=.. p9999=.. max=..
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "bench_util.h"
#include "hist.h"

struct pingpong {
	_Alignas(128) _Atomic uint64_t ping; /* written by the pinger only */
	_Alignas(128) _Atomic uint64_t pong; /* written by the ponger only */
	_Alignas(128) _Atomic uint32_t ready;
	_Atomic uint32_t go;
};

static struct pingpong *shm;
static uint64_t rounds, warmup;
static struct hist lat;

static void start_barrier(void)
{
	atomic_fetch_add_explicit(&shm->ready, 1, memory_order_acq_rel);
	while (!atomic_load_explicit(&shm->go, memory_order_acquire))
		bench_cpu_relax();
}

static int ponger(void *arg)
{
	(void)arg;
	uint64_t total = rounds + warmup;
	start_barrier();
	for (uint64_t i = 1; i <= total; i++) {
		/* A1: pairs with R1; nothing but the counter is published. */
		while (atomic_load_explicit(&shm->ping, memory_order_acquire) != i)
			;
		/* R2: pairs with A2. */
		atomic_store_explicit(&shm->pong, i, memory_order_release);
	}
	return 0;
}

static int pinger(void *arg)
{
	(void)arg;
	uint64_t total = rounds + warmup;
	hist_init(&lat);
	start_barrier();
	for (uint64_t i = 1; i <= total; i++) {
		uint64_t t0 = bench_now_ns();
		/* R1: pairs with A1. */
		atomic_store_explicit(&shm->ping, i, memory_order_release);
		/* A2: pairs with R2. */
		while (atomic_load_explicit(&shm->pong, memory_order_acquire) != i)
			;
		uint64_t t1 = bench_now_ns();
		if (i > warmup)
			hist_record(&lat, t1 - t0);
	}
	hist_print(stdout, "bare_pingpong", &lat);
	return 0;
}

int main(int argc, char **argv)
{
	rounds = argc > 1 ? bench_parse_u64(argv[1], "round trips") : 1000000;
	warmup = argc > 2 ? bench_parse_u64(argv[2], "warmup") : 100000;
	if (argc > 3 || rounds == 0) {
		fprintf(stderr, "usage: bare_pingpong [ROUND_TRIPS [WARMUP]]\n");
		return 2;
	}
	shm = bench_shared(sizeof(*shm));
	bench_arm_watchdog();
	bench_spawn(ponger, NULL, bench_cpu(1));
	bench_spawn(pinger, NULL, bench_cpu(0));
	if (bench_wait_ready(&shm->ready, 2, &shm->go, "bare_pingpong") != 0)
		return 1;
	return bench_wait_all("bare_pingpong") == 0 ? 0 : 1;
}
