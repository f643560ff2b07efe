/* clock.c - the library's wall clock (bus_now_ns(), internal.h): record
 * timestamps without a clock_gettime() per record.
 *
 * WHY.  Every record gets a CLOCK_REALTIME timestamp.  clock_gettime()
 * through the vDSO costs ~20 ns here and its ordered TSC read (lfence;
 * rdtsc) stalls the core until every load before it is done, so the copy
 * of the value just before it no longer overlaps anything: one-way
 * throughput of 1 KiB records 5.0 GB/s with a clock read per record, 5.8-7.6
 * with a fixed timestamp (bus_bench tput 1024, same minute).
 *
 * HOW.  Where the kernel itself keeps time with the TSC (clocksource "tsc",
 * which it picks only for an invariant TSC synchronised across CPUs), each
 * thread extrapolates CLOCK_REALTIME from the TSC:
 *     now = ns + ((rdtsc() - tsc) * mult) >> 32
 * from an anchor {tsc, ns} that it takes again every RESYNC_NS (one
 * clock_gettime() per 50 ms), with mult (ns per tick, 32.32 fixed point)
 * measured against CLOCK_MONOTONIC_RAW (no NTP slewing, no steps) over
 * everything since the thread's first call, so it only gets more precise.
 * A thread's first CAL_MIN_NS use clock_gettime() while the baseline
 * grows.  The extrapolation drifts from CLOCK_REALTIME by at most the
 * NTP slew over 50 ms (500 ppm: 25 µs; usually well below a µs), and a
 * step of the clock is followed within 50 ms.  Like CLOCK_REALTIME itself,
 * timestamps are not strictly monotonic.
 *
 * Under KVM the kernel may keep time with kvm-clock instead (Firecracker
 * guests boot with tsc=unstable and clocksource=kvm-clock, so the "tsc"
 * clocksource is not even registered).  kvm-clock is the TSC too, scaled
 * by parameters the host publishes; the kernel lets the vDSO read it in
 * user space only while the host sets PVCLOCK_TSC_STABLE_BIT, its promise
 * that every vCPU's TSC runs in step (arch/x86/kernel/kvmclock.c; the
 * vDSO falls back to the system call the moment the bit goes away).  So
 * the TSC is as good for us as it is for the vDSO exactly when the vDSO
 * serves clock_gettime() without a system call, which vdso_reads_tsc()
 * tells by timing: the fastest of 32 vDSO calls against the fastest of 32
 * system calls (63 against 2,350 TSC ticks on the AMD EPYC VM of 2026-12;
 * a vDSO that falls back costs at least the system call).  There a
 * clock_gettime() costs 28 ns and the extrapolation 12 (one rdtsc): 64 B
 * records one-way 14.6-15.0 -> 25.6-27.1 M/s (bus_bench tput 64 2000000
 * 4194304), round trip p50 250-261 -> 201-210 ns (bus_bench rtt 64).
 *
 * CHECKS.  A promise can be withdrawn (a migration or a snapshot restore
 * of the VM), so every new anchor is also a test: the TSC's prediction of
 * CLOCK_MONOTONIC_RAW (which NTP neither slews nor steps) since the last
 * anchor must be within 50 us + 500 ppm of it.  A miss starts the
 * calibration again; MAX_STRIKES misses in a row turn the TSC off for the
 * whole process (clock_gettime() from then on).
 *
 * SAMPLES.  A sample is {TSC, CLOCK_REALTIME, CLOCK_MONOTONIC_RAW}: two
 * clock reads between two TSC reads, dated at the TSC's midpoint, so its
 * error is up to half the window between the TSC reads.  Two vDSO reads
 * take 150-300 ticks (60-120 ns), but an interrupt or a preemption in
 * between stretches the window to tens of microseconds; such a sample
 * anchored every timestamp of the next 50 ms off by half of it, and as a
 * calibration point put mult off by that over 10 ms (0.1%: 50 us more by
 * the end of the anchor).  So a sample whose TSC reads are more than
 * SAMPLE_MAX_TICKS apart is taken again, up to SAMPLE_TRIES times, and is
 * never used as an anchor or a calibration point (that call returns the
 * clock as read; the next tries again).
 *
 * Elsewhere (another clocksource, not x86-64, BUS_CLOCK=syscall in the
 * environment), bus_now_ns() is clock_gettime(CLOCK_REALTIME).  BUS_CLOCK
 * unset, empty or "auto" is the default; any other value is taken as
 * "syscall": whoever sets it distrusts the TSC, and a misspelt escape
 * hatch must not keep what it was set to escape (the library cannot
 * print, and bus_now_ns() cannot fail).  Read once per process, at its
 * first timestamp.
 *
 * THREADS.  All state is thread-local (bus_tclock): no sharing, no locks.
 * A forked child inherits its thread's anchor, which stays valid (same
 * TSC). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define CAL_MIN_NS 10000000ll /* first baseline: 10 ms */
#define RESYNC_NS 50000000ull /* anchor again every 50 ms */
#define SAMPLE_MAX_TICKS 4000u /* 1.5 us at 2.6 GHz: two vDSO reads take ~150 */
#define SAMPLE_TRIES 4
#define MAX_STRIKES 3u

#ifdef BUS_TSC_CLOCK
__thread struct bus_tclock bus_tclock __attribute__((tls_model("initial-exec")));

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool tsc_ok;
/* Set (relaxed: a late reader only extrapolates one anchor longer) when a
 * thread found the TSC off MAX_STRIKES anchors in a row. */
static _Atomic bool tsc_off;

/* True when clock_gettime() is served by the vDSO, not by a system call
 * (see above): the fastest vDSO call takes less than a quarter of the
 * fastest system call.  Minima, so that a preemption in either loop does
 * not decide it; a wrong "no" only costs speed. */
static bool vdso_reads_tsc(void)
{
	uint64_t best_vdso = UINT64_MAX, best_sys = UINT64_MAX;
	struct timespec ts;

	for (int i = 0; i < 32; i++) {
		uint64_t t0 = __rdtsc(), t1;
		clock_gettime(CLOCK_REALTIME, &ts);
		t1 = __rdtsc();
		if (t1 > t0 && t1 - t0 < best_vdso)
			best_vdso = t1 - t0;
	}
	for (int i = 0; i < 32; i++) {
		uint64_t t0 = __rdtsc(), t1;
		syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts);
		t1 = __rdtsc();
		if (t1 > t0 && t1 - t0 < best_sys)
			best_sys = t1 - t0;
	}
	return best_sys != UINT64_MAX && best_vdso < best_sys / 4;
}

static void tsc_check(void)
{
	char cs[32] = "";
	const char *env = getenv("BUS_CLOCK");
	unsigned a, b, c, d;
	FILE *f;

	if (env && *env && strcmp(env, "auto") != 0)
		return; /* "syscall", or a value we do not know: see above */
	/* Invariant TSC: CPUID 0x80000007, EDX bit 8. */
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000000u), "c"(0));
	if (a < 0x80000007u)
		return;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000007u), "c"(0));
	if (!(d & (1u << 8)))
		return;
	/* The kernel keeps time with it: it checked that the TSCs agree. */
	f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
	if (!f)
		return;
	if (!fgets(cs, sizeof cs, f))
		cs[0] = 0;
	fclose(f);
	tsc_ok = strcmp(cs, "tsc\n") == 0 || (strcmp(cs, "kvm-clock\n") == 0 && vdso_reads_tsc());
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000ll + t->tv_nsec;
}

bool bus_clock_tsc(void)
{
	pthread_once(&once, tsc_check);
	return tsc_ok && !atomic_load_explicit(&tsc_off, memory_order_relaxed);
}

/* The anchor this thread had predicts CLOCK_MONOTONIC_RAW at TSC @t to
 * within 50 us + 500 ppm of @raw (see CHECKS). */
static bool anchor_held(const struct bus_tclock *k, uint64_t t, int64_t raw)
{
	int64_t act = raw - k->raw, pred, diff;

	if (t <= k->tsc || act <= 0)
		return false;
	pred = (int64_t)(((unsigned __int128)(t - k->tsc) * k->mult) >> 32);
	diff = pred > act ? pred - act : act - pred;
	return diff <= 50000 + act / 2000;
}

int64_t bus_now_slow(void)
{
	struct bus_tclock *k = &bus_tclock;
	struct timespec rt, raw;
	uint64_t t0, t1, t, dt;
	int64_t draw;
	unsigned __int128 m;

	pthread_once(&once, tsc_check);
	if (!tsc_ok || atomic_load_explicit(&tsc_off, memory_order_relaxed)) {
		k->span = 0;
		clock_gettime(CLOCK_REALTIME, &rt);
		return ts_ns(&rt);
	}
	for (unsigned i = 0;; i++) {
		t0 = __rdtsc();
		clock_gettime(CLOCK_REALTIME, &rt);
		clock_gettime(CLOCK_MONOTONIC_RAW, &raw);
		t1 = __rdtsc();
		if (t1 < t0 || t1 - t0 <= SAMPLE_MAX_TICKS)
			break;
		/* Interrupted between the reads (see SAMPLES): again, or no
		 * anchor from this call (the current one, if any, stays). */
		if (i + 1 == SAMPLE_TRIES)
			return ts_ns(&rt);
	}
	t = t0 + (t1 - t0) / 2;
	if (k->span) {
		/* A new anchor tests the old one (see CHECKS). */
		if (anchor_held(k, t, ts_ns(&raw))) {
			k->strikes = 0;
		} else if (++k->strikes >= MAX_STRIKES) {
			atomic_store_explicit(&tsc_off, true, memory_order_relaxed);
			k->span = 0;
			return ts_ns(&rt);
		} else {
			k->cal_tsc = 0; /* calibrate again, from here */
		}
	}
	k->span = 0; /* until a valid anchor is set below */
	if (!k->cal_tsc || t1 < t0 || t <= k->cal_tsc || ts_ns(&raw) <= k->cal_raw) {
		/* The first sample, or the TSC went back (a bad core): start
		 * the baseline here. */
		k->cal_tsc = t;
		k->cal_raw = ts_ns(&raw);
		return ts_ns(&rt);
	}
	dt = t - k->cal_tsc;
	draw = ts_ns(&raw) - k->cal_raw;
	if (draw < CAL_MIN_NS)
		return ts_ns(&rt);
	m = ((unsigned __int128)(uint64_t)draw << 32) / dt;
	/* A TSC between 100 MHz and 20 GHz, or something is wrong: stay on
	 * the system clock and measure again. */
	if (m < ((unsigned __int128)1 << 32) / 20 || m > ((unsigned __int128)10 << 32)) {
		k->cal_tsc = 0;
		return ts_ns(&rt);
	}
	k->mult = (uint64_t)m;
	k->tsc = t;
	k->ns = ts_ns(&rt);
	k->raw = ts_ns(&raw);
	k->span = (uint64_t)(((unsigned __int128)RESYNC_NS << 32) / m);
	return k->ns;
}
#endif
