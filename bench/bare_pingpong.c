/* bench/bare_pingpong.c - the physical limit of a round trip between two
 * cores: two processes ping-pong a counter through shared memory.
 *
 * usage: bare_pingpong [ROUND_TRIPS [WARMUP]]     (default 1000000 100000)
 *        bare_pingpong msg SIZE [ROUND_TRIPS [WARMUP]]
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
 * msg: the floor for a message of SIZE bytes instead of a counter.  Each
 * direction has a 1 MiB ring of messages, each an 8-byte sequence word then
 * SIZE bytes, each starting on a cache line, as a BUS_PRODUCER_LOW_LATENCY
 * producer lays out its frames.  The sender copies its SIZE bytes in, stores
 * the sequence (release), and pushes the message's lines to the shared
 * cache (CLDEMOTE, a no-op where unsupported), as that producer does; the
 * receiver spins on the sequence (acquire) with a pause between tries, as
 * BUS_WAIT_SPIN does, and reads the bytes (the ponger copies them into its
 * reply, the pinger checks the number in them).  A 64 B value then spans
 * two lines, which cross between the cores one after the other (the
 * receiver learns that the value is there from the sequence word): no
 * header, no offsets, no clock, so the gap between this and bus_bench rtt
 * is what bus itself adds.  (Each of the three helps the bare message
 * too, on the Intel VM of 2026-12-03: p50 355-377 ns without any of them,
 * 371-373 with the alignment and the demote, 339 with all three.)
 *
 * Prints: bare_pingpong rtt_p50_ns=.. p90=.. p99=.. p999=.. p9999=.. max=..
 *     or  bare_msg size=.. rtt_p50_ns=.. ...
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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

/* msg mode */
#define MSG_RING (1u << 20)
static size_t msg_size;   /* 0: the counter ping-pong */
static size_t msg_stride; /* 8 + msg_size, in whole lines */
static uint8_t *ring_ping, *ring_pong;

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

/* Message i: its sequence word at ring + msg_at(i), its bytes after it. */
static size_t msg_at(uint64_t i)
{
	return (size_t)(i % (MSG_RING / msg_stride)) * msg_stride;
}

#if defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 9)
/* Up to 8 KiB, as bus's DEMOTE_MAX. */
__attribute__((target("cldemote"))) static void demote(const uint8_t *m)
{
	for (size_t a = 0; a < msg_stride && msg_stride <= 8192; a += 64)
		__builtin_ia32_cldemote(m + a);
}
#else
static void demote(const uint8_t *m)
{
	(void)m;
}
#endif

static void msg_send(uint8_t *ring, uint64_t i, const void *value)
{
	uint8_t *m = ring + msg_at(i);
	memcpy(m + 8, value, msg_size);
	/* R: the value before the sequence; pairs with A in msg_wait(). */
	atomic_store_explicit((_Atomic uint64_t *)(void *)m, i, memory_order_release);
	demote(m);
}

static const uint8_t *msg_wait(uint8_t *ring, uint64_t i)
{
	uint8_t *m = ring + msg_at(i);
	/* A: pairs with R.  A stale sequence is i - laps * slots, never i. */
	while (atomic_load_explicit((_Atomic uint64_t *)(void *)m, memory_order_acquire) != i)
		bench_cpu_relax();
	return m + 8;
}

static int msg_ponger(void *arg)
{
	(void)arg;
	uint64_t total = rounds + warmup;
	start_barrier();
	for (uint64_t i = 1; i <= total; i++)
		msg_send(ring_pong, i, msg_wait(ring_ping, i));
	return 0;
}

static int msg_pinger(void *arg)
{
	(void)arg;
	uint64_t total = rounds + warmup;
	uint8_t *buf = calloc(1, msg_size);
	if (!buf)
		bench_die("bare_pingpong: out of memory");
	bench_fill(buf, msg_size);
	hist_init(&lat);
	start_barrier();
	for (uint64_t i = 1; i <= total; i++) {
		bench_store_seq(buf, i);
		uint64_t t0 = bench_now_ns();
		msg_send(ring_ping, i, buf);
		const uint8_t *echo = msg_wait(ring_pong, i);
		uint64_t t1 = bench_now_ns();
		if (bench_load_seq(echo) != i)
			bench_die("bare_pingpong: bad echo at round trip %llu",
				  (unsigned long long)i);
		if (i > warmup)
			hist_record(&lat, t1 - t0);
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "bare_msg size=%zu", msg_size);
	hist_print(stdout, prefix, &lat);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int a = 1;
	if (argc > 1 && strcmp(argv[1], "msg") == 0) {
		if (argc < 3)
			goto usage;
		msg_size = bench_parse_u64(argv[2], "size");
		if (msg_size < 8 || msg_size > 65536)
			bench_die("bare_pingpong: msg SIZE must be 8 .. 65536");
		msg_stride = (8 + msg_size + 63) & ~(size_t)63; /* whole lines */
		a = 3;
	}
	rounds = argc > a ? bench_parse_u64(argv[a], "round trips") : 1000000;
	warmup = argc > a + 1 ? bench_parse_u64(argv[a + 1], "warmup") : 100000;
	if (argc > a + 2 || rounds == 0)
		goto usage;
	shm = bench_shared(sizeof(*shm));
	if (msg_size) {
		ring_ping = bench_shared(2 * (size_t)MSG_RING);
		ring_pong = ring_ping + MSG_RING;
	}
	bench_arm_watchdog();
	bench_spawn(msg_size ? msg_ponger : ponger, NULL, bench_cpu(1));
	bench_spawn(msg_size ? msg_pinger : pinger, NULL, bench_cpu(0));
	if (bench_wait_ready(&shm->ready, 2, &shm->go, "bare_pingpong") != 0)
		return 1;
	return bench_wait_all("bare_pingpong") == 0 ? 0 : 1;
usage:
	fprintf(stderr, "usage: bare_pingpong [ROUND_TRIPS [WARMUP]]\n"
			"       bare_pingpong msg SIZE [ROUND_TRIPS [WARMUP]]\n");
	return 2;
}
