/* wait.c - sleepers on a futex word, and those who wake them.
 *
 * Two waits use the protocol below: consumers with nothing to read, on
 * their topic slot's `wake_seq` and `sleepers`, woken by producers after
 * a commit; and producers blocked by a full ring (overflow `block`, or a
 * persistent topic's spill cursor), on the ring header's `space_seq` and
 * `space_sleepers`, woken by whoever moves the low-water mark: a gating
 * consumer's publish, busd's spill publish and floor, a gating slot given
 * back (see "Space" below).  The words are named for the first here.
 *
 * The topic slot holds a futex word `wake_seq` and a word `sleepers`: not
 * a count but an announcement, "someone went to sleep on wake_seq = s
 * since the last wake", tagged with s: TAG(s) = (s << 1) | 1, never 0,
 * and different for consecutive values of s.
 *
 *   consumer (going to sleep)          producer (after each commit)
 *   s = load(wake_seq)        (WA1)    store commit word (release, R3)
 *   xchg(sleepers, TAG(s))    (WR1)    [fence, only if not registered]
 *   membarrier(GLOBAL_EXPEDITED)       if load(sleepers) != 0:
 *   if nothing to read:                    v = load(sleepers)    (WA2)
 *       FUTEX_WAIT(wake_seq, s)            wake_seq += 1         (WR2)
 *                                          FUTEX_WAKE(all)
 *                                          CAS(sleepers, v -> 0) (WC2)
 *
 * This is Dekker's pattern: each side stores, then loads what the other
 * stored.  Both need a store-load barrier between the two; the producer's
 * would cost a fence per record, so it is moved to the consumer with the
 * membarrier system call (as liburcu's memb flavour does): after it
 * returns, every thread of every process registered for
 * MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED has executed a full barrier, so
 * either the consumer's re-check sees the commit, or the producer's load
 * sees the announcement (or a later value of the word: see below).  A
 * producer with no sleepers pays one load, no system call.  Where
 * membarrier is not available, producers fence instead, and sleepers also
 * wake every 10 ms as a safety net.
 *
 * INVARIANT: a consumer whose announcement WR1 is in `sleepers` is
 * woken by the next record committed (or its FUTEX_WAIT returns at once).
 * The announcement is cleared only after a wake (WC2 after WR2 and
 * FUTEX_WAKE), so a waker killed or preempted at any point leaves it for
 * the next producer.  A waker whose WA2 read TAG(s') takes every
 * announcement made before it (WR1 is an RMW: the announcements form one
 * release sequence that WA2, acquire, reads), and each such sleeper's WA1
 * happens before WR2, so its FUTEX_WAIT compares an older value and fails,
 * or is queued before the FUTEX_WAKE (the futex's own guarantee).  WC2
 * clears only the value WA2 read: a sleeper that announced after WA2 wrote
 * TAG(s) with s read before WR2 (woken as above; its tag may equal v) or
 * after it (s >= s' + 1: its tag differs from v, so WC2 fails and the
 * announcement stays; two tags of values less than 2^31 bumps apart never
 * agree).
 * The same holds for a producer asleep for space, with "a store that may
 * raise its limit, then the load of space_sleepers" in place of "the next
 * record committed": every such store is followed by that load
 * (bus_space_wake()), unless it left the value as it was (consumer.c,
 * gating_publish()), which then frees nothing the sleeper's re-check
 * did not already see.
 *
 * Why not a count of sleepers: a consumer killed in its sleep (SIGKILL, a
 * crash) never takes its count back, and every record of the topic would
 * then cost its producer a FUTEX_WAKE, for as long as the topic lives.  An
 * announcement is cleared by the first wake: a dead sleeper, or a live one
 * whose sleep ended by timeout or found a record in its re-check, costs
 * one FUTEX_WAKE (one per producer that saw it before it was cleared), not
 * one per record.  Sleepers never take their announcement back (another
 * may still sleep under it); they announce again at each sleep.
 *
 * Truncation.  A ring or control region truncated under the mapping
 * (mapguard.h) wakes nobody: a producer that faults on the ring wakes the
 * topic's sleepers (bus_ring_lost_slow()), but the control region's own
 * futex word may be what was cut, and a ring cut while no producer writes
 * is found only by touching it.  So a sleeper wakes at least every
 * BUS_WAIT_RECHECK_NS to look (consumer.c, poll_wait(): it probes its
 * rings' last pages), and @check() says "ready" once a truncation was
 * found, so that nobody sleeps on zeros.  The price: an idle consumer
 * makes one wake-up a second.
 *
 * Space.  A producer that finds no room waits first by sched_yield(),
 * then sleeps here (producer.c, wait_space()), its @check() the limit
 * computed again from the gating cursors and the spill cursor.  The roles
 * swap: the producer is the sleeper and issues the membarrier; the wakers
 * (a gating consumer after each gating publish, R6 in consumer.c; busd
 * after each spill publish and its floor store; a consumer giving back
 * its gating slot) register for it (bus_wait_register_waker()), or fence
 * before their load of `space_sleepers`.  A blocked producer also wakes
 * every BUS_SPACE_RECHECK_NS: dead gating consumers and a dead busd wake
 * nobody, and it must find them (reap, -BUS_ENODAEMON), as it must find a
 * deleted topic or a truncated ring.  Before this, a blocked producer
 * napped 20 us at a time: about 8,500 wake-ups and a fifth of a core a
 * second for as long as it stayed blocked.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

static _Atomic int membarrier_state; /* 0 unknown, 1 usable, 2 not */

static bool membarrier_usable(void)
{
	int st = ld_relaxed(&membarrier_state);

	if (st == 0) {
		long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
		st = (cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
		      syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0)
			     ? 1
			     : 2;
		st_relaxed(&membarrier_state, st);
	}
	return st == 1;
}

bool bus_wait_register_waker(void)
{
	return membarrier_usable();
}

/* The announcement of a sleeper that read @seq from wake_seq (see above). */
static inline uint32_t wait_tag(uint32_t seq)
{
	return (seq << 1) | 1u;
}

void bus_futex_wake_slow(_Atomic uint32_t *wseq, _Atomic uint32_t *sleepers)
{
	/* WA2: the announcements to take (acquire: pairs with WR1).  Called
	 * also with none (a delete, a truncation): wake all the same. */
	uint32_t v = ld_acquire(sleepers);

	/* WR2: after WA2 (release; pairs with WA1 of the next sleeper). */
	atomic_fetch_add_explicit(wseq, 1, memory_order_release);
	/* Not FUTEX_PRIVATE_FLAG: the sleepers are other processes. */
	syscall(SYS_futex, wseq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	/* WC2: only now, and only what WA2 read: a waker stopped before
	 * this leaves the announcement to the next waker. */
	if (v)
		(void)atomic_compare_exchange_strong_explicit(sleepers, &v, 0,
							      memory_order_relaxed,
							      memory_order_relaxed);
}

int bus_futex_sleep(_Atomic uint32_t *wseq, _Atomic uint32_t *sleepers, bool (*check)(void *),
		    void *arg, int64_t deadline_ns, int64_t max_ns)
{
	/* WA1: before WR1 (WR1 is a release RMW); pairs with WR2. */
	uint32_t seq = ld_acquire(wseq);
	bool mb = membarrier_usable();
	struct timespec tmo;
	int64_t wait = max_ns;

	/* WR1: announce (an RMW, so that one WA2 takes every announcement).
	 * Then the store-load barrier before @check() loads what the wakers
	 * store: the fence here, membarrier() on the wakers' side. */
	(void)atomic_exchange_explicit(sleepers, wait_tag(seq), memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (mb && syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0)
		mb = false;
	if (check(arg))
		return 0;
	if (deadline_ns >= 0) {
		int64_t left = deadline_ns - bus_mono_ns();
		if (left < wait)
			wait = left < 0 ? 0 : left;
	}
	/* Wakers that fence cannot be told from those that do not: without
	 * membarrier a lost wake-up costs at most 10 ms. */
	if (!mb && wait > 10000000)
		wait = 10000000;
	tmo.tv_sec = wait / 1000000000;
	tmo.tv_nsec = wait % 1000000000;
	/* Shared (not FUTEX_PRIVATE_FLAG); a relative timeout, on
	 * CLOCK_MONOTONIC.  0: woken (perhaps spuriously); EAGAIN: a wake
	 * came between WA1 and here.  The caller looks again either way. */
	if (syscall(SYS_futex, wseq, FUTEX_WAIT, seq, &tmo, NULL, 0) == 0 || errno == EAGAIN)
		return 1;
	return -1;
}
