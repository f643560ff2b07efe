/* bench/hist.h - a log-linear latency histogram in the style of HdrHistogram.
 *
 * Values are unsigned 64-bit (nanoseconds here).  Values below 256 have a
 * bucket each.  Above, each power of two [2^k, 2^(k+1)) is split into 128
 * equal buckets, so a bucket is at most 1/128 (0.78 %) of its lowest value
 * wide.  The whole 64-bit range is covered (58 * 128 buckets, 59 KiB), so
 * nothing is ever clamped.
 *
 * Index arithmetic: for v >= 256 let m = msb(v) - 7 (m >= 1); the top eight
 * bits s = v >> m lie in [128, 255] and the index is m * 128 + s.  For
 * v < 256 (m = 0) the same formula gives index v, so the two ranges join.
 * Bucket i >= 256 holds [s << m, (s + 1) << m) with m = i / 128 - 1 and
 * s = i - m * 128.
 *
 * Percentiles are reported as HdrHistogram reports them: the highest value
 * equivalent to the bucket holding the requested rank (clamped to the
 * exact maximum).  The struct is plain data: not thread-safe, one writer.
 */
#ifndef BUS_BENCH_HIST_H
#define BUS_BENCH_HIST_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (58u * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t min;
	uint64_t max;
	double sum;
	uint64_t counts[HIST_BUCKETS];
};

static inline void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

static inline unsigned hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	unsigned m = (unsigned)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
	return m * HIST_SUB + (unsigned)(v >> m);
}

/* Lowest and highest value that land in bucket @i. */
static inline uint64_t hist_bucket_low(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned m = i / HIST_SUB - 1;
	return (uint64_t)(i - m * HIST_SUB) << m;
}

static inline uint64_t hist_bucket_high(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned m = i / HIST_SUB - 1;
	return hist_bucket_low(i) + ((uint64_t)1 << m) - 1;
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->counts[hist_index(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

/* hist_merge() - add every sample of @src to @dst. */
static inline void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

/* hist_percentile() - value at percentile @p (0 < p <= 100); 0 when empty. */
static inline uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	if (p >= 100.0)
		return h->max;
	uint64_t rank = (uint64_t)(p / 100.0 * (double)h->count + 0.5);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			uint64_t v = hist_bucket_high(i);
			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}

static inline uint64_t hist_max(const struct hist *h)
{
	return h->max;
}

static inline double hist_mean(const struct hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}

/* hist_print() - one machine-readable line: "<prefix> rtt_p50_ns=.. p90=..
 * p99=.. p999=.. p9999=.. max=.. min=.. mean=.. n=..". */
static inline void hist_print(FILE *f, const char *prefix, const struct hist *h)
{
	fprintf(f,
		"%s rtt_p50_ns=%llu p90=%llu p99=%llu p999=%llu p9999=%llu max=%llu min=%llu "
		"mean=%.1f n=%llu\n",
		prefix, (unsigned long long)hist_percentile(h, 50.0),
		(unsigned long long)hist_percentile(h, 90.0),
		(unsigned long long)hist_percentile(h, 99.0),
		(unsigned long long)hist_percentile(h, 99.9),
		(unsigned long long)hist_percentile(h, 99.99), (unsigned long long)h->max,
		(unsigned long long)(h->count ? h->min : 0), hist_mean(h),
		(unsigned long long)h->count);
}

#endif
