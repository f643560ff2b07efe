/* wait.c - sleeping consumers and the producers that wake them.
 *
 * The topic slot holds a futex word `wake_seq` and a count of `sleepers`.
 *
 *   consumer (going to sleep)          producer (after each commit)
 *   s = load(wake_seq)                 store commit word (release, R3)
 *   sleepers += 1          (seq_cst)   [fence, only if not registered]
 *   membarrier(GLOBAL_EXPEDITED)       if load(sleepers) != 0:
 *   if nothing to read:                    wake_seq += 1; FUTEX_WAKE
 *       FUTEX_WAIT(wake_seq, s)
 *   sleepers -= 1
 *
 * This is Dekker's pattern: each side stores, then loads what the other
 * stored.  Both need a store-load barrier between the two; the producer's
 * would cost a fence per record, so it is moved to the consumer with the
 * membarrier system call (as liburcu's memb flavour does): after it
 * returns, every thread of every process registered for
 * MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED has executed a full barrier, so
 * either the consumer's re-check sees the commit, or the producer's load
 * sees sleepers != 0 and its wake bumps wake_seq, which makes FUTEX_WAIT
 * return at once.  A producer with no sleepers pays one load, no system
 * call.  Where membarrier is not available, producers fence instead, and
 * sleepers also wake every 10 ms as a safety net.
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
 */
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

bool bus_wait_register_producer(void)
{
	return membarrier_usable();
}

void bus_wake_slow(struct bus_topic_slot *ts)
{
	atomic_fetch_add_explicit(&ts->wake_seq, 1, memory_order_release);
	syscall(SYS_futex, &ts->wake_seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void bus_wait_sleep(struct bus_topic_slot *ts, bool (*check)(void *), void *arg,
		    int64_t deadline_ns)
{
	uint32_t seq = ld_acquire(&ts->wake_seq);
	bool mb = membarrier_usable();
	struct timespec tmo, *tp = NULL;
	int64_t wait = -1;

	atomic_fetch_add_explicit(&ts->sleepers, 1, memory_order_seq_cst);
	if (mb && syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0)
		mb = false;
	if (!check(arg)) {
		if (deadline_ns >= 0) {
			wait = deadline_ns - bus_mono_ns();
			if (wait < 0)
				wait = 0;
		}
		if (!mb && (wait < 0 || wait > 10000000))
			wait = 10000000;
		if (wait < 0 || wait > BUS_WAIT_RECHECK_NS)
			wait = BUS_WAIT_RECHECK_NS;
		if (wait >= 0) {
			tmo.tv_sec = wait / 1000000000;
			tmo.tv_nsec = wait % 1000000000;
			tp = &tmo;
		}
		syscall(SYS_futex, &ts->wake_seq, FUTEX_WAIT, seq, tp, NULL, 0);
	}
	atomic_fetch_sub_explicit(&ts->sleepers, 1, memory_order_relaxed);
}
