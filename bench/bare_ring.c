/* bench/bare_ring.c - bare single-producer single-consumer rings of fixed-size
 * slots between two processes: the throughput references.
 *
 * usage: bare_ring classic|cached|slot SIZE RECORDS [RING_BYTES]
 *        SIZE a multiple of 8, >= 8; RING_BYTES default 4 MiB (the bus's
 *        default ring size).  The slot count is RING_BYTES / SIZE rounded
 *        down to a power of two (at least 2), the same in both modes.
 *
 * The producer (CPU $BENCH_CPU_A, default 0) memcpy()s each payload into its
 * slot: word 0 is the sequence number, the rest a fixed pattern.  The
 * consumer (CPU $BENCH_CPU_B, default 1) reads every word, checks the sum
 * and the sequence number.  No headers, no offsets.
 *
 *   classic  Lamport's ring: free-running counters head (producer) and tail
 *            (consumer), on their own cache lines, each published after every
 *            record and read by the other side before every record.  The
 *            consumer's tail store is the producer's licence to reuse the
 *            slot; the producer's head store publishes the slot's contents.
 *            The reference the issue targets are ratios of.
 *   cached   The same, but each side keeps a copy of the other's counter and
 *            re-reads it only when the copy says full (producer) or empty
 *            (consumer).  Information only: its rate is bimodal (fast while
 *            the consumer lags, slow while it keeps up).
 *   slot     The commit marker is inside the slot: a word before the payload
 *            holding seq + 1, stored with release after the payload.  The
 *            consumer waits on the marker of the next slot, so no counter
 *            line travels per record; it publishes its tail (the producer's
 *            licence to reuse) once per quarter ring.  The ceiling.
 *
 * Spin loops use the pause instruction unless $BARE_PAUSE=0.
 * Timing: from the start signal to the consumer's last record, measured by
 * the consumer.
 *
 * Prints: bare_ring mode=classic size=64 records=.. recs_per_s=..
 *         bytes_per_s=.. (payload bytes)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bench_util.h"

struct ring_ctl {
	_Alignas(128) _Atomic uint64_t head; /* classic: written by the producer */
	_Alignas(128) _Atomic uint64_t tail; /* written by the consumer */
	_Alignas(128) _Atomic uint32_t ready;
	_Atomic uint32_t go;
	uint64_t errors;
	double secs;
};

_Static_assert(offsetof(struct ring_ctl, tail) - offsetof(struct ring_ctl, head) >= 128,
	       "head and tail must not share a cache-line pair");

enum mode { MODE_CLASSIC, MODE_CACHED, MODE_SLOT };

static const char *const mode_name[] = { "classic", "cached", "slot" };
static struct ring_ctl *ctl;
static char *ring;
static enum mode mode;
static size_t size, stride;
static uint64_t records, nslots, mask;
static int use_pause = 1;
static int cached;

static inline void spin(void)
{
	if (use_pause)
		bench_cpu_relax();
}

static void start_barrier(void)
{
	atomic_fetch_add_explicit(&ctl->ready, 1, memory_order_acq_rel);
	while (!atomic_load_explicit(&ctl->go, memory_order_acquire))
		bench_cpu_relax();
}

static _Atomic uint64_t *marker(uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)(ring + (pos & mask) * stride);
}

static int producer(void *arg)
{
	(void)arg;
	char *src = aligned_alloc(64, (size + 63) & ~(size_t)63);
	if (!src)
		bench_die("bare_ring: out of memory");
	bench_fill(src, size);
	uint64_t tail_cache = 0;
	start_barrier();
	if (mode != MODE_SLOT) {
		for (uint64_t pos = 0; pos < records; pos++) {
			/* A1: pairs with R2; the slot is free to reuse.  Cached
			 * mode reads the counter only when the cache says full. */
			if (!cached || pos - tail_cache >= nslots)
				tail_cache = atomic_load_explicit(&ctl->tail, memory_order_acquire);
			while (pos - tail_cache >= nslots) {
				spin();
				tail_cache = atomic_load_explicit(&ctl->tail, memory_order_acquire);
			}
			bench_store_seq(src, pos);
			memcpy(ring + (pos & mask) * stride, src, size);
			/* R1: pairs with A2; publishes the slot's contents. */
			atomic_store_explicit(&ctl->head, pos + 1, memory_order_release);
		}
	} else {
		for (uint64_t pos = 0; pos < records; pos++) {
			while (pos - tail_cache >= nslots) {
				/* A3: pairs with R4; the slot is free to reuse. */
				tail_cache = atomic_load_explicit(&ctl->tail, memory_order_acquire);
				if (pos - tail_cache >= nslots)
					spin();
			}
			bench_store_seq(src, pos);
			memcpy(ring + (pos & mask) * stride + 8, src, size);
			/* R3: pairs with A4; publishes the payload before it. */
			atomic_store_explicit(marker(pos), pos + 1, memory_order_release);
		}
	}
	free(src);
	return 0;
}

static int consumer(void *arg)
{
	(void)arg;
	uint64_t k = bench_pattern_sum(size), errors = 0;
	start_barrier();
	uint64_t t0 = bench_now_ns();
	if (mode != MODE_SLOT) {
		uint64_t head_cache = 0;
		for (uint64_t pos = 0; pos < records; pos++) {
			/* A2: pairs with R1.  Cached mode reads the counter only
			 * when the cache says empty. */
			if (!cached || pos == head_cache)
				head_cache = atomic_load_explicit(&ctl->head, memory_order_acquire);
			while (pos == head_cache) {
				spin();
				head_cache = atomic_load_explicit(&ctl->head, memory_order_acquire);
			}
			const char *p = ring + (pos & mask) * stride;
			if (bench_checksum(p, size) != pos + k || bench_load_seq(p) != pos)
				errors++;
			/* R2: pairs with A1; the slot may be reused. */
			atomic_store_explicit(&ctl->tail, pos + 1, memory_order_release);
		}
	} else {
		uint64_t batch = nslots / 4 ? nslots / 4 : 1;
		for (uint64_t pos = 0; pos < records; pos++) {
			/* A4: pairs with R3. */
			while (atomic_load_explicit(marker(pos), memory_order_acquire) != pos + 1)
				spin();
			const char *p = ring + (pos & mask) * stride + 8;
			if (bench_checksum(p, size) != pos + k || bench_load_seq(p) != pos)
				errors++;
			if ((pos + 1) % batch == 0)
				/* R4: pairs with A3; slots below pos + 1 may be reused. */
				atomic_store_explicit(&ctl->tail, pos + 1, memory_order_release);
		}
	}
	uint64_t t1 = bench_now_ns();
	double secs = (double)(t1 - t0) / 1e9;
	ctl->errors = errors;
	ctl->secs = secs;
	printf("bare_ring mode=%s size=%zu records=%llu slots=%llu recs_per_s=%.0f bytes_per_s=%.0f "
	       "errors=%llu\n",
	       mode_name[mode], size, (unsigned long long)records,
	       (unsigned long long)nslots, (double)records / secs,
	       (double)records * (double)size / secs, (unsigned long long)errors);
	return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: bare_ring classic|cached|slot SIZE RECORDS [RING_BYTES]\n");
		return 2;
	}
	if (strcmp(argv[1], "classic") == 0)
		mode = MODE_CLASSIC;
	else if (strcmp(argv[1], "cached") == 0)
		mode = MODE_CACHED;
	else if (strcmp(argv[1], "slot") == 0)
		mode = MODE_SLOT;
	else
		bench_die("bare_ring: unknown mode '%s'", argv[1]);
	size = (size_t)bench_parse_u64(argv[2], "size");
	records = bench_parse_u64(argv[3], "records");
	uint64_t ring_bytes = argc > 4 ? bench_parse_u64(argv[4], "ring bytes") : 4u << 20;
	if (size < 8 || size % 8 || records == 0)
		bench_die("bare_ring: SIZE must be a multiple of 8 (>= 8), RECORDS > 0");
	const char *p = getenv("BARE_PAUSE");
	use_pause = !(p && strcmp(p, "0") == 0);

	nslots = 2;
	while (nslots * 2 <= ring_bytes / size)
		nslots *= 2;
	mask = nslots - 1;
	stride = mode == MODE_SLOT ? size + 8 : size;
	cached = mode == MODE_CACHED;

	ctl = bench_shared(sizeof(*ctl));
	ring = bench_shared(nslots * stride);
	bench_arm_watchdog();
	bench_spawn(consumer, NULL, bench_cpu(1));
	bench_spawn(producer, NULL, bench_cpu(0));
	if (bench_wait_ready(&ctl->ready, 2, &ctl->go, "bare_ring") != 0)
		return 1;
	return bench_wait_all("bare_ring") == 0 ? 0 : 1;
}
