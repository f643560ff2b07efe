/* producer.c - appending records: claim, write, commit (see ring.c for the
 * protocol and its orderings R1-R3). */
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "segment.h"

struct bus_pstate {
	struct bus_ring *r;
	uint64_t limit; /* claims may end at or below limit - BUS_FRAME_ALIGN */
	uint64_t hz;    /* the horizon as last seen: claims below it need no raise */
	bool excl;      /* exclusive ownership held */
	uint64_t pos;   /* exclusive mode: our copy of the tail */
	uint64_t off;
	struct bus_pslot *sl; /* concurrent mode: our producer slot, once taken */
};

struct bus_producer {
	struct bus *b;
	struct bus_topic *t;
	unsigned flags;
	int64_t block_timeout_ns;
	int64_t reaped_ns; /* last bus_ring_reap_gating() (wait_space()) */
	bool gated;       /* block policy, or persistent (spill cursor) */
	bool persistent;
	bool fenced;      /* no membarrier: fence before checking sleepers */
	bool claim_open;
	int32_t pid;
	uint32_t rr;
	struct bus_pstate *parts;
	/* Cold, after the fields of the hot paths: */
	uint64_t owner; /* bus_owner_self() at open: {pid, start} */
	struct bus_producer_stats stats;
	struct bus_claim open_claim; /* while claim_open: for bus_producer_close() */
};

int bus_producer_open(struct bus *b, const char *topic, const struct bus_producer_opts *opts,
		      struct bus_producer **out)
{
	struct bus_producer *p;
	int err;

	if (!b || !out ||
	    (opts && (opts->flags & ~(BUS_PRODUCER_EXCLUSIVE | BUS_PRODUCER_NONBLOCK |
				      BUS_PRODUCER_LOW_LATENCY))))
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	err = bus_topic_get(b, topic, &p->t);
	if (err) {
		free(p);
		return err;
	}
	p->b = b;
	if (opts) {
		p->flags = opts->flags;
		p->block_timeout_ns = opts->block_timeout_ns;
	}
	p->persistent = !(p->t->cfg.flags & BUS_TOPIC_EPHEMERAL);
	p->gated = p->persistent || p->t->cfg.overflow == BUS_OVERFLOW_BLOCK;
	p->fenced = !bus_wait_register_waker();
	p->pid = getpid();
	p->owner = bus_owner_self();
	p->parts = calloc(p->t->cfg.partitions, sizeof(*p->parts));
	if (!p->parts) {
		bus_topic_put(p->t);
		free(p);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < p->t->cfg.partitions; i++) {
		p->parts[i].r = &p->t->rings[i];
		p->parts[i].limit = 0; /* computed at the first append */
	}
	*out = p;
	return 0;
}

/* Clear the exclusive bit of a dead (or our own departing) owner. */
static void excl_clear(struct bus_ring_hdr *h)
{
	uint64_t pos = ld_relaxed(&h->tail.pos), off = ld_relaxed(&h->tail.off);

	while (off & BUS_TAIL_EXCL)
		if (bus_tail_cas(&h->tail, &pos, &off, pos, off & ~BUS_TAIL_EXCL))
			break;
}

/* excl_owner (layout.h, ring header line 1), a BUS_OWNER word, says who
 * holds the exclusive bit of tail.off, by its pid half:
 *   0    nobody: the bit is clear (whoever stores 0 clears the bit first);
 *   P>0  the exclusive producer of process P (the bit is set, or about to);
 *   -R   process R is clearing the bit of an owner that died (excl_reap()).
 * The start half goes with the pid (R's for a reaper), so that an owner
 * or reaper that died is told from a process given its pid since.  The
 * reaper takes excl_owner before it clears the bit and gives it back only
 * after: were excl_owner 0 while it clears, a new exclusive producer could
 * take the partition and set the bit in between, and the reaper would then
 * clear that new owner's bit, letting concurrent producers claim beside it
 * (duplicate offsets, a tail moved back).  A reaper that dies leaves -R,
 * which the next one (or an acquirer) takes over as it would a dead owner. */

/* Free a partition whose exclusive owner died (also after a reaper died, or
 * a bit left set under excl_owner 0, which no honest sequence leaves).
 * Returns false when a live owner holds it (the caller gives up with
 * -BUS_EBUSY); true when the caller should look at the tail again. */
/* Before a reaper clears a dead exclusive owner's bit: the owner's last
 * claim (excl_start, excl_soff) may be half made, and once concurrent
 * producers claim after it, nothing would tell its length any more.
 * Nobody else claims meanwhile (the bit), and the owner is dead.
 *   - It died between the tail's two stores: the offset is completed.
 *   - Its claim is not published: it is repaired now (ring.c).
 * A stale excl_start (an owner that died before any claim of its own)
 * names a claim that is not the last one, or is published: nothing done. */
static void excl_settle(struct bus_ring *r)
{
	struct bus_ring_hdr *h = r->hdr;
	uint64_t s = ld_acquire(&h->excl_start), so = ld_acquire(&h->excl_soff);
	uint64_t tp, to;

	bus_tail_read(&h->tail, &tp, &to);
	if (tp <= s || !(to & BUS_TAIL_EXCL))
		return;
	if ((to & ~BUS_TAIL_EXCL) == so) {
		uint64_t want = (so + 1) | BUS_TAIL_EXCL;
		if (!bus_tail_cas(&h->tail, &tp, &to, tp, want))
			return;
		to = want;
	}
	if ((to & ~BUS_TAIL_EXCL) == so + 1)
		(void)bus_ring_repair(r, s, so, true);
}

/* The reaper's own word that mark @o (pid < 0) stands for: its pid made
 * positive, with its start.  Pid 0 (no process: gone) for INT32_MIN, which
 * no reaper writes and whose negation does not fit an int32_t. */
static inline uint64_t excl_reaper(uint64_t o)
{
	int32_t pid = BUS_OWNER_PID(o);

	return BUS_OWNER(pid == INT32_MIN ? 0 : -pid, BUS_OWNER_START(o));
}

/* The reaper mark of process @self (its BUS_OWNER word). */
static inline uint64_t excl_mark(uint64_t self)
{
	return BUS_OWNER(-BUS_OWNER_PID(self), BUS_OWNER_START(self));
}

static bool excl_reap(struct bus_producer *p, struct bus_pstate *ps)
{
	struct bus_ring_hdr *h = ps->r->hdr;
	uint64_t o = ld_acquire(&h->excl_owner);
	int32_t pid = BUS_OWNER_PID(o);

	if (pid > 0 && !bus_owner_gone(o))
		return false;
	if (pid < 0 && !bus_owner_gone(excl_reaper(o))) {
		sched_yield(); /* a reap in progress: a few instructions */
		return true;
	}
	if (!atomic_compare_exchange_strong(&h->excl_owner, &o, excl_mark(p->owner)))
		return true; /* someone else changed it: look again */
	excl_settle(ps->r);
	excl_clear(h);
	st_release(&h->excl_owner, 0); /* the bit is clear: see above */
	return true;
}

static int excl_acquire(struct bus_producer *p, struct bus_pstate *ps)
{
	struct bus_ring_hdr *h = ps->r->hdr;
	uint64_t pos, off;

	for (;;) {
		uint64_t o = ld_acquire(&h->excl_owner);
		int32_t pid = BUS_OWNER_PID(o);
		if (pid == p->pid || (pid > 0 && !bus_owner_gone(o)))
			return -BUS_EBUSY;
		if (pid < 0 && !bus_owner_gone(excl_reaper(o))) {
			sched_yield(); /* a reaper clears the bit: wait for it */
			continue;
		}
		if (o == 0) {
			/* The bit is clear. */
			if (atomic_compare_exchange_strong(&h->excl_owner, &o, p->owner))
				break;
			continue;
		}
		/* A dead owner or reaper (or a word with pid 0 and a start,
		 * which nobody writes): settle its last claim as a reaper
		 * does (under the reaper's mark, so that the repair does not
		 * take us for a live owner), then take the bit as it is. */
		if (!atomic_compare_exchange_strong(&h->excl_owner, &o, excl_mark(p->owner)))
			continue;
		excl_settle(ps->r);
		st_release(&h->excl_owner, p->owner);
		break;
	}
	pos = ld_relaxed(&h->tail.pos);
	off = ld_relaxed(&h->tail.off);
	while (!bus_tail_cas(&h->tail, &pos, &off, pos, off | BUS_TAIL_EXCL))
		;
	/* From here on no concurrent producer's CAS can succeed: they all see
	 * the bit.  A claim made before it completes on its own. */
	if (BUS_UNLIKELY(pos % BUS_FRAME_ALIGN || pos > BUS_POS_MAX ||
			 ld_acquire(&h->horizon) > pos + ps->r->size)) {
		/* No producer leaves the tail unaligned (reserve()), or a
		 * lifetime of writes from the end of the counter (layout.h),
		 * or the horizon more than a ring past it (nobody claims
		 * beside us now: this tail is the last claim's end):
		 * give the partition back and say so, rather than write
		 * frames there. */
		excl_clear(h);
		st_release(&h->excl_owner, 0);
		return -BUS_ECORRUPT;
	}
	ps->pos = pos;
	ps->off = off & ~BUS_TAIL_EXCL;
	ps->excl = true;
	return 0;
}

static int claim_end(struct bus_producer *p, struct bus_claim *c, uint32_t type, int64_t ts);

void bus_producer_close(struct bus_producer *p)
{
	if (!p)
		return;
	/* A claim left open is aborted, as bus_producer_abort() would: left
	 * unpublished, it held every reader of its partition (and, through
	 * gating readers, its producers) until the stuck-claim timeout. */
	if (p->claim_open)
		(void)claim_end(p, &p->open_claim, BUS_FRAME_LOST, 0);
	for (uint32_t i = 0; i < p->t->cfg.partitions; i++) {
		struct bus_pstate *ps = &p->parts[i];
		if (ps->excl) {
			uint64_t self = p->owner;
			excl_clear(ps->r->hdr);
			atomic_compare_exchange_strong(&ps->r->hdr->excl_owner, &self, 0);
		}
		if (ps->sl) {
			/* No claim is open (aborted above): the intent is idle. */
			st_release(&ps->sl->pos, BUS_INTENT_IDLE);
			st_release(&ps->sl->owner, 0);
		}
	}
	bus_topic_put(p->t);
	free(p->parts);
	free(p);
}

/* Take a producer slot in @ps's ring (layout.h, producer slots): a free one,
 * or one whose owner died and left no claim in flight (an intent whose
 * frame is published or repaired, or none).  A dead owner's unresolved
 * intent is what a repairer needs to know that claim's length: left alone.
 * Returns 0 or -EUSERS. */
static int pslot_take(struct bus_producer *p, struct bus_pstate *ps)
{
	struct bus_ring *r = ps->r;

	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++) {
		struct bus_pslot *sl = &r->hdr->pslot[i];
		uint64_t o = ld_acquire(&sl->owner);

		if (o && !bus_owner_gone(o))
			continue;
		if (o) {
			uint64_t pos = ld_acquire(&sl->pos), off = ld_acquire(&sl->off);
			uint64_t hz = ld_acquire(&r->hdr->horizon);
			/* Resolved: published (or repaired), or so old that
			 * the horizon is a lap past it. */
			if (pos != BUS_INTENT_IDLE && hz <= pos + r->size &&
			    !bus_ring_claim_resolved(r, pos, off))
				continue;
		}
		if (!atomic_compare_exchange_strong(&sl->owner, &o, p->owner)) {
			i--; /* raced: look at this slot again */
			continue;
		}
		st_release(&sl->pos, BUS_INTENT_IDLE);
		ps->sl = sl;
		return 0;
	}
	return -EUSERS;
}

/* Whether the spiller of @ps's ring, which gates the producer, is gone:
 * by kill(2) alone, or with @deep (at most once a millisecond: it reads
 * /proc) also when it exited unreaped (a zombie busd, under a supervisor
 * that does not wait for it) or its pid went to another process since,
 * which busd's owner word in the control region tells.  Without the deep
 * look, either kept the producer waiting for a spill that never comes (to
 * its block timeout: for ever by default) instead of -BUS_ENODAEMON. */
static bool spiller_gone(struct bus_producer *p, struct bus_pstate *ps, bool deep)
{
	int32_t pid = ld_acquire(&ps->r->hdr->spiller_pid);

	if (!bus_pid_alive(pid))
		return true;
	return deep && bus_spiller_gone(p->b, pid);
}

/* A gated producer's limit from the gating cursors as they are now: claims
 * may end at or below ps->limit - BUS_FRAME_ALIGN.  With @reap (wait_space(),
 * when a claim does not fit) dead gating consumers are freed and *nodaemon
 * says whether the spiller that gates is gone (spiller_gone(), @deep);
 * without (refresh_limit()) no system call is made and a dead consumer's
 * slot still counts. */
static void compute_limit(struct bus_producer *p, struct bus_pstate *ps, bool reap, bool deep,
			  bool *nodaemon)
{
	uint64_t lw = bus_ring_low_water(ps->r, p->persistent, reap, nodaemon);

	/* Overwrite topics are gated only by the spiller. */
	if (p->t->cfg.overflow == BUS_OVERFLOW_OVERWRITE && p->persistent) {
		lw = ld_acquire(&ps->r->hdr->spill_pos);
		*nodaemon = reap && spiller_gone(p, ps, deep);
	} else if (deep && !*nodaemon && p->persistent && lw == ld_acquire(&ps->r->hdr->spill_pos)) {
		/* The spill cursor gates (bus_ring_low_water() looked by
		 * kill(2) only). */
		*nodaemon = spiller_gone(p, ps, true);
	}
	ps->limit = lw > UINT64_MAX - ps->r->size ? UINT64_MAX : lw + ps->r->size;
	/* No durable offset floor covers this ring yet (busd has not taken it
	 * since it was made): no offset may be handed out, or a reboot could
	 * give it out again ("offset floor" in segment.h).  The acquire pairs
	 * with busd's release store after the floor's fdatasync; the flag is
	 * never cleared, so a limit computed after seeing it stays good. */
	if (p->persistent && !ld_acquire(&ps->r->hdr->floor_ok)) {
		ps->limit = 0;
		*nodaemon = reap && spiller_gone(p, ps, deep);
	}
}

/* Before a gated producer raises the horizon (once per ring_size >>
 * BUS_HZ_STEP_SHIFT bytes), it takes its limit again, so that a consumer
 * that registered as gating after the limit was computed (or a gating
 * consumer that seeked back) holds it back from then on.  Without this a
 * producer that had found no gating consumer kept a limit of "never" for
 * good, and lapped a gating consumer that came later.
 *
 * What this guarantees: a gating cursor published before a producer's
 * refresh bounds every horizon that producer raises afterwards.  A raise
 * already under way when a consumer registers may still pass its position
 * (by at most one raise); that consumer then finds itself lapped by I1, as
 * any reader does, and the records it missed are counted, never handed out
 * torn (consumer.c).  No system call: dead consumers' slots still count
 * here, and wait_space() frees them when they hold the producer back. */
static inline void refresh_limit(struct bus_producer *p, struct bus_pstate *ps)
{
	bool nodaemon;

	compute_limit(p, ps, false, false, &nodaemon);
}

/* @err, or -BUS_ECORRUPT when what the call read or wrote was zeros: the
 * control region, or the ring of @ps (NULL: none chosen yet), truncated
 * under this process's mapping.  Out of line: error paths only. */
static __attribute__((noinline, cold)) int produce_err(struct bus_producer *p,
							 struct bus_pstate *ps, int err)
{
	int lost = bus_ring_lost(p->t, ps ? ps->r : NULL);

	return lost ? lost : err;
}

struct space_arg {
	struct bus_producer *p;
	struct bus_pstate *ps;
	uint64_t end;
};

/* A blocked producer's last look before it sleeps (bus_futex_sleep()):
 * whether the claim fits now.  No system call (no reap): the loop of
 * wait_space() does those when the sleep ends. */
static bool space_ready(void *arg)
{
	struct space_arg *a = arg;
	bool nodaemon;

	compute_limit(a->p, a->ps, false, false, &nodaemon);
	return a->end + BUS_FRAME_ALIGN <= a->ps->limit;
}

/* Wait until a claim ending at @end fits under the low-water mark: a
 * hundred turns with sched_yield() (a consumer a few records behind frees
 * space within microseconds), then asleep on the ring's space futex
 * (wait.c, "Space"), woken by whoever raises the low-water mark, and at
 * least every BUS_SPACE_RECHECK_NS to look for what wakes nobody. */
static int wait_space(struct bus_producer *p, struct bus_pstate *ps, uint64_t end)
{
	int64_t deadline = -1, t0 = 0;
	unsigned spins = 0;
	bool deep = false;
	int err;

	for (;;) {
		bool nodaemon;

		/* A truncated ring reads as zeros: a spill cursor at 0, no
		 * floor, no spiller; nothing would end this wait. */
		bus_ring_probe(ps->r);
		if ((err = bus_ring_lost(p->t, ps->r)) != 0)
			break;
		compute_limit(p, ps, true, deep, &nodaemon);
		if (end + BUS_FRAME_ALIGN <= ps->limit)
			break;
		/* A busd that runs but has not taken this partition yet (a
		 * topic created a moment ago, or busd starting) takes it within
		 * milliseconds: wait for it rather than fail. */
		if (nodaemon && bus_daemon_pid(p->t->bus) == 0) {
			err = -BUS_ENODAEMON;
			break;
		}
		/* busd stopped spilling this partition (a frame or a log it
		 * cannot take: its log says which): do not wait forever. */
		if (nodaemon && p->persistent && ld_acquire(&ps->r->hdr->spiller_pid) < 0) {
			err = -BUS_ECORRUPT;
			break;
		}
		/* A consumer or busd that exited unreaped (a zombie), or whose
		 * pid went to another process, still answers kill(2), so
		 * compute_limit()'s reap keeps its slot: once a millisecond at
		 * most (a read of /proc per gating consumer, and of busd's)
		 * look closer, or it would hold this producer back for good;
		 * before the non-blocking return, which a caller retries. */
		if (BUS_UNLIKELY(bus_mono_ns() - p->reaped_ns >= 1000000)) {
			p->reaped_ns = bus_mono_ns();
			bus_ring_reap_gating(ps->r);
			deep = true;
			continue;
		}
		deep = false;
		if (p->flags & BUS_PRODUCER_NONBLOCK) {
			err = -EAGAIN;
			break;
		}
		if (bus_topic_check(p->t)) {
			err = -BUS_ESTALE;
			break;
		}
		if (!t0)
			t0 = bus_mono_ns();
		if (deadline < 0 && p->block_timeout_ns > 0)
			deadline = bus_deadline_ns(p->block_timeout_ns);
		if (deadline >= 0 && bus_mono_ns() > deadline) {
			err = -ETIMEDOUT;
			break;
		}
		if (++spins < 100) {
			sched_yield();
		} else {
			struct space_arg a = { p, ps, end };
			int rc = bus_futex_sleep(&ps->r->hdr->space_seq, &ps->r->hdr->space_sleepers,
						 space_ready, &a, deadline, BUS_SPACE_RECHECK_NS);
			p->stats.sleeps += rc != 0;
			p->stats.woken += rc > 0;
		}
	}
	if (t0) {
		p->stats.blocked++;
		p->stats.blocked_ns += (uint64_t)(bus_mono_ns() - t0);
	}
	return err;
}

/* The highest horizon this producer may raise to: a gated one's limit. */
static inline uint64_t raise_limit(const struct bus_producer *p, const struct bus_pstate *ps)
{
	return p->gated ? ps->limit : UINT64_MAX;
}

/* ... and never a lap past a claim in flight (layout.h, producer slots).
 *
 * Why: a producer stalled between its claim and its commit (preempted, or
 * holding a zero-copy claim) writes its frame whenever it resumes.  Had
 * other producers raised the horizon a lap past it meanwhile (an overwrite
 * topic gates nothing else), those writes would land on newer frames whose
 * readers had validated them (I1 holds: the late writes are below the
 * horizon), and its commit would publish garbage over them.  So every raise
 * stops at the oldest unpublished intent + ring_size, and a producer whose
 * own claim needs more waits for that claim (raise_over()).  This is read
 * once per raise (1/16 ring), a line per taken slot: nothing per record. */
static inline uint64_t raise_cap(const struct bus_producer *p, const struct bus_pstate *ps)
{
	uint64_t lim = raise_limit(p, ps);
	uint64_t fl = bus_ring_intents_floor(ps->r, ld_acquire(&ps->r->hdr->horizon), UINT64_MAX);

	if (fl < UINT64_MAX - ps->r->size && fl + ps->r->size < lim)
		lim = fl + ps->r->size;
	return lim;
}

/* Claims in flight a lap behind @need (the horizon this producer needs)
 * stand in the way: their owners are given until the stuck-claim timeout
 * (counted from *@since) to publish; a dead owner's claim is repaired at
 * once (its intent tells its length) and its intent dropped, a live one's
 * after the timeout, as readers repair stalled claims (ring.c). */
static bool unblock_intents(struct bus_producer *p, struct bus_pstate *ps, uint64_t need,
			    int64_t *since, unsigned *spins)
{
	struct bus_ring *r = ps->r;
	uint64_t fl = need > r->size ? bus_ring_intents_floor(r, ld_acquire(&r->hdr->horizon),
							       need - r->size)
				     : BUS_INTENT_IDLE;

	if (fl == BUS_INTENT_IDLE)
		return false; /* nothing in the way any more */
	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++) {
		struct bus_pslot *sl = &r->hdr->pslot[i];
		uint64_t o = ld_acquire(&sl->owner);
		uint64_t pos, off;

		if (!o || (pos = ld_acquire(&sl->pos)) != fl)
			continue; /* not the oldest in the way */
		bool late;
		int rc = 0;

		off = ld_acquire(&sl->off);
		if (!*since)
			*since = bus_mono_ns();
		/* Unsigned: a timeout of 2^63 ns or more is "never", not a
		 * negative one. */
		late = (uint64_t)(bus_mono_ns() - *since) > p->b->stuck_claim_ns;
		if (late || bus_owner_gone(o))
			rc = bus_ring_repair(r, pos, off, late);
		/* An intent whose claim is repaired has served; past the
		 * timeout, one that no repair resolves (it names no real
		 * claim: a damaged slot) is dropped too, so that no intent
		 * holds producers back longer than the timeout. */
		if (rc == 1 || late)
			atomic_compare_exchange_strong(&sl->pos, &pos, BUS_INTENT_IDLE);
	}
	/* Its owner may be waiting for this core (more producers than
	 * cores): give it the core, for real after a few tries (a yield lets
	 * only this core's other tasks run). */
	if (++*spins < 16) {
		sched_yield();
	} else {
		struct timespec ts = { 0, 20000 };
		nanosleep(&ts, NULL);
	}
	return true;
}

/* Raise the horizon over a claim ending at @end (reserve()), as far as
 * raise_cap() lets it, and wait until it lets it that far. */
static void raise_over(struct bus_producer *p, struct bus_pstate *ps, uint64_t end)
{
	int64_t since = 0;
	unsigned spins = 0;

	for (;;) {
		uint64_t lim = raise_cap(p, ps);

		/* Zeros (a truncated ring): publish() says so. */
		if (BUS_UNLIKELY(bus_mapguard_hits() != 0) && bus_ring_hit(ps->r))
			return;
		if (end + BUS_FRAME_ALIGN <= lim) {
			bus_ring_raise_horizon(ps->r, end, lim, &ps->hz);
			return;
		}
		/* False: what stood in the way was resolved meanwhile; the
		 * cap is taken again.  (The two reads agree on a still ring:
		 * an intent below need - ring_size is what both find.  Each
		 * wait ends: intents are dropped at the timeout.) */
		(void)unblock_intents(p, ps, end + BUS_FRAME_ALIGN, &since, &spins);
	}
}

/* The length of a frame of @flen bytes placed at @pos (after @pad bytes of
 * padding), lengthened by its slack to end on a cache line when @line.  The
 * lap's end (the ring's size is a multiple of lines) never comes before
 * that line's end: a frame that fits before it still fits. */
static inline uint32_t slacked(bool line, uint64_t pos, uint64_t pad, uint32_t flen)
{
	return line ? flen + (uint32_t)(-(pos + pad + flen) & (BUS_CACHELINE - 1)) : flen;
}

/* Claim *@flenp bytes in partition @ps: returns the frame position in *fpos
 * and its offset in *off.  Writes the padding frame when the claim wraps.
 * A BUS_PRODUCER_LOW_LATENCY producer's frame is lengthened to end on a
 * cache line (its slack, layout.h): *@flenp is then the length claimed.
 * Inlined, as publish() is, into both append paths: the calls' prologues,
 * epilogues and arguments were 50 of the 573 instructions of a produce,
 * poll and check of a 64 B record (callgrind). */
static inline __attribute__((always_inline)) int
reserve(struct bus_producer *p, struct bus_pstate *ps, uint32_t *flenp, uint64_t *fpos,
	uint64_t *off)
{
	struct bus_ring *r = ps->r;
	struct bus_ring_hdr *h = r->hdr;
	const uint32_t base = *flenp;
	const bool line = p->flags & BUS_PRODUCER_LOW_LATENCY;
	uint32_t flen = base;
	uint64_t pos, o, end, pad;
	int err;

	if (BUS_UNLIKELY(base > r->size / 2))
		return -EMSGSIZE;
	if (p->flags & BUS_PRODUCER_EXCLUSIVE) {
		if (BUS_UNLIKELY(!ps->excl) && (err = excl_acquire(p, ps)) != 0)
			return err;
		pos = ps->pos;
		o = ps->off;
		pad = r->size - (pos & r->mask);
		pad = flen > pad ? pad : 0;
		flen = slacked(line, pos, pad, base);
		end = pos + pad + flen;
		if (p->gated && BUS_UNLIKELY(end + BUS_FRAME_ALIGN > ps->hz))
			refresh_limit(p, ps); /* a raise comes */
		if (p->gated && BUS_UNLIKELY(end + BUS_FRAME_ALIGN > ps->limit) &&
		    (err = wait_space(p, ps, end)) != 0)
			return err;
		/* The claim's start and offset, then the tail (release: in
		 * this order, for excl_settle()); all on the tail's line,
		 * which this producer holds anyway. */
		st_relaxed(&h->excl_start, pos);
		st_relaxed(&h->excl_soff, o);
		st_release(&h->tail.pos, end);
		st_release(&h->tail.off, (o + 1) | BUS_TAIL_EXCL);
		if (BUS_UNLIKELY(end + BUS_FRAME_ALIGN > ps->hz))
			raise_over(p, ps, end);
		/* R1: the horizon before any byte of the frame (seqlock, I1). */
		atomic_thread_fence(memory_order_release);
		ps->pos = end;
		ps->off = o + 1;
		/* Zero ahead (step 3) now rather than just before the commit:
		 * the reader may hold that line, and its transfer then overlaps
		 * the writing of the frame instead of delaying the commit
		 * (stores become visible in order).  Sole writer: nobody else
		 * touches that word. */
		st_relaxed(&((struct bus_frame *)(r->data + (end & r->mask)))->commit, 0);
	} else {
		struct bus_pslot *sl = ps->sl;

		if (BUS_UNLIKELY(!sl)) {
			if ((err = pslot_take(p, ps)) != 0)
				return err;
			sl = ps->sl;
		}
		/* A pair the tail really held: every claim moves pos on, so
		 * an equal pos read after off means off is pos's.  An intent
		 * then always names a real tail state, even one this CAS
		 * loses (ring.c relies on it); a failed CAS hands back the
		 * current pair whole. */
		do {
			pos = ld_acquire(&h->tail.pos);
			o = ld_acquire(&h->tail.off);
		} while (BUS_UNLIKELY(ld_acquire(&h->tail.pos) != pos));
		for (;;) {
			/* Every frame length is aligned, so is every tail a
			 * producer leaves: an unaligned one was written by none
			 * (and the frame would straddle words others read). */
			if (BUS_UNLIKELY(pos % BUS_FRAME_ALIGN || pos > BUS_POS_MAX)) {
				st_release(&sl->pos, BUS_INTENT_IDLE);
				return -BUS_ECORRUPT;
			}
			if (BUS_UNLIKELY(o & BUS_TAIL_EXCL)) {
				st_release(&sl->pos, BUS_INTENT_IDLE);
				if (!excl_reap(p, ps))
					return -BUS_EBUSY;
				pos = ld_relaxed(&h->tail.pos);
				o = ld_relaxed(&h->tail.off);
				continue;
			}
			pad = r->size - (pos & r->mask);
			pad = base > pad ? pad : 0;
			flen = slacked(line, pos, pad, base);
			end = pos + pad + flen;
			if (p->gated && BUS_UNLIKELY(end + BUS_FRAME_ALIGN > ps->hz))
				refresh_limit(p, ps); /* a raise may come */
			if (p->gated && BUS_UNLIKELY(end + BUS_FRAME_ALIGN > ps->limit)) {
				st_release(&sl->pos, BUS_INTENT_IDLE);
				if ((err = wait_space(p, ps, end)) != 0)
					return err;
			}
			/* The intent (layout.h, producer slots), then the
			 * claim: the CAS's lock orders the stores before it. */
			st_relaxed(&sl->off, o);
			st_relaxed(&sl->end, end);
			st_release(&sl->pos, pos);
			if (bus_tail_cas(&h->tail, &pos, &o, end, o + 1))
				break;
		}
		if (BUS_UNLIKELY(end + BUS_FRAME_ALIGN > ps->hz)) {
			ps->hz = ld_relaxed(&h->horizon);
			if (end + BUS_FRAME_ALIGN > ps->hz)
				raise_over(p, ps, end);
		}
		/* R1: the horizon before any byte of the frame (seqlock, I1). */
		atomic_thread_fence(memory_order_release);
	}
	if (pad) {
		struct bus_frame *pf = (struct bus_frame *)(r->data + (pos & r->mask));
		struct bus_frame *nf = (struct bus_frame *)r->data;
		/* Our frame starts the next lap: clear its stale commit word
		 * before the padding sends readers there.  A concurrent
		 * producer leaves a LOST frame of its own offset in place: a
		 * repairer that found this claim stalled wrote it (ring.c,
		 * repair_wrap()), and the commit then says -BUS_EREPAIRED. */
		if (p->flags & BUS_PRODUCER_EXCLUSIVE)
			st_relaxed(&nf->commit, 0);
		else
			bus_ring_zero_ahead(r, pos + pad, o);
		st_release(&pf->commit, BUS_COMMIT(BUS_FRAME_PAD, pad, o)); /* R3 */
		bus_ring_checkpoint(r, pos, pos + pad, o);
	}
	*fpos = pos + pad;
	*off = o;
	*flenp = flen;
	return 0;
}

/* BUS_PRODUCER_LOW_LATENCY: push a small published frame's lines from this
 * core's private caches to the shared cache (CLDEMOTE, a hint; a NOP where
 * unsupported).
 *
 * Why: a consumer waiting for the frame takes the commit line from this
 * core, and only then asks for the lines after it.  With those already in
 * the shared cache, the second miss is an L3 hit instead of a second
 * core-to-core transfer: rtt of 64 B values on this VM, p50 559-607 ->
 * 509-539 ns (alternating runs).  But each demote costs some 20 ns here,
 * which a stream pays on every record while its consumer, behind anyway,
 * gains nothing: hence a flag (telling a stream from a ping-pong by the
 * time between publishes needs an rdtsc per record, which alone cost a
 * stream of 64 B records a third of its rate).  Only frames of up to
 * DEMOTE_MAX bytes (it was 256: raised after rtt on the Intel VM, far,
 * alternating runs: 256 B values 719-751 -> 647-691 ns, 1 KiB 1095-1143 ->
 * 1039-1087, 4 KiB 1543-1567 -> 1455-1479; 2 KiB unchanged).  Every line from
 * the frame's head up to, not including, one holding its tail and the next
 * frame's head, which is written next (demoting that one gained the round
 * trip nothing and cost a stream of 64 B records three quarters of its
 * rate).  Since the frames of such a producer end on a line (their slack,
 * reserve()), that is every line of the frame.  (The head's line may hold
 * the previous frame's tail, if another producer wrote it: published
 * already, nobody writes it again this lap.) */
#define DEMOTE_MAX 8192u

#if defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 9)
__attribute__((target("cldemote"))) static void demote(const void *f, uint32_t flen)
{
	uintptr_t a = (uintptr_t)f & ~(uintptr_t)(BUS_CACHELINE - 1);
	uintptr_t e = (uintptr_t)f + flen;

	for (; a + BUS_CACHELINE <= e; a += BUS_CACHELINE)
		__builtin_ia32_cldemote((const void *)a);
}
#define BUS_TARGET_PREFETCHW __attribute__((target("prfchw")))
#else
static void demote(const void *f, uint32_t flen)
{
	(void)f;
	(void)flen;
}
#define BUS_TARGET_PREFETCHW
#endif

/* BUS_PRODUCER_LOW_LATENCY, after demote(): take the lines the next frame
 * will fill, guessed as long as this one, for writing now (PREFETCHW: a
 * hint, never faults; a NOP on x86 CPUs without it), all but its head's
 * line, which a waiting reader polls and would only take back.  They hold
 * the frames of a lap ago, which a reader keeps in its cache: without
 * this the next record's stores would each wait for that copy to be
 * invalidated, and the commit (stored after them) with them; now that
 * happens while the producer waits for its reply.  rtt on the Intel VM,
 * alternating runs: 64 B p50 341-347 -> 337-341 ns, p90 425-437 ->
 * 397-413; 256 B p50 431-443 -> 359-363; 1 KiB p50 743-759 -> 711-723,
 * p99.9 1423-1479 -> 1271-1295. */
BUS_TARGET_PREFETCHW static void own_ahead(const struct bus_ring *r, uint64_t end, uint32_t flen)
{
	for (uint64_t q = (end | (BUS_CACHELINE - 1)) + 1; q < end + flen; q += BUS_CACHELINE)
		__builtin_prefetch(r->data + (q & r->mask), 1);
}

/* How far past a published frame the horizon is raised ahead of need:
 * ring_size >> BUS_HZ_AHEAD_SHIFT bytes (1/32 ring, layout.h).
 *
 * Why: a raise is a CAS on the horizon's line, which every reader of the
 * ring holds (each poll and check reads it, I1).  Made in reserve(), just
 * before the frame is written, the CAS waited for that line to be taken
 * from the readers and drained the store buffer, and the waiting reader
 * then missed on the line it had just lost, all between claim and commit:
 * on the Intel VM the 0.2% of 64 B round trips with a raise took 850 ns
 * against 345 at p50, which was the whole of rtt's p99.9.  Raised after
 * the commit instead (publish()), the transfer overlaps the wait for the
 * reply, and reserve() raises only when this did not run (a frame that
 * jumps further than 1/32 ring, or a gated producer at its limit).  The
 * cost: the horizon now leads the tail by up to 3/32 ring instead of 1/16,
 * so a reader counts as lapped 1/32 ring sooner (I1 stays as it was).
 * rtt, old and new binaries in turn: 64 B p50 357-361 -> 357-359 ns, p99
 * 603-619 -> 563-583, p99.9 843-847 -> 723-751; p99.9 of 256 B 903-931 ->
 * 799-819, of 1 KiB 1303-1327 -> 1239-1247.  tput 64 B: unchanged. */
static inline void raise_ahead(struct bus_producer *p, struct bus_pstate *ps, uint64_t end)
{
	uint64_t to = end + (ps->r->size >> BUS_HZ_AHEAD_SHIFT);
	uint64_t limit;

	if (p->gated)
		refresh_limit(p, ps);
	limit = raise_cap(p, ps);

	/* A gated producer near its limit: reserve() raises, as far as the
	 * limit lets it, when it must. */
	if (to + BUS_FRAME_ALIGN > limit)
		return;
	bus_ring_raise_horizon(ps->r, to, limit, &ps->hz);
}

/* A concurrent producer's claim at @fpos found lapped (the horizon more
 * than a ring past it): -BUS_EREPAIRED, its claim having been repaired
 * past the stuck-claim timeout, unless the horizon is more than a ring past
 * the tail too, which no producer leaves (bus_ring_earliest()): a damaged
 * or hostile header, under which every claim would be "repaired" and a
 * caller that retries would spend offsets for ever.  The tail is read
 * after the horizon, with a fence between (as there): it then reflects at
 * least the claims before the raise that was read.  Cold. */
static __attribute__((noinline, cold)) int lapped(struct bus_ring *r, struct bus_pslot *sl)
{
	uint64_t hz = ld_acquire(&r->hdr->horizon), tail;

	st_release(&sl->pos, BUS_INTENT_IDLE);
	atomic_thread_fence(memory_order_seq_cst);
	tail = ld_acquire(&r->hdr->tail.pos);
	return hz > tail && hz - tail > r->size ? -BUS_ECORRUPT : -BUS_EREPAIRED;
}

/* Publish the frame at @fpos: its timestamp *@ts first when given (a
 * claim's), zero ahead, then the commit word; then raise the horizon ahead
 * when it comes near (raise_ahead()). */
static inline __attribute__((always_inline)) int
publish(struct bus_producer *p, struct bus_pstate *ps, uint64_t fpos, uint32_t flen, uint64_t off,
	uint32_t type, const int64_t *ts)
{
	struct bus_ring *r = ps->r;
	struct bus_frame *f = (struct bus_frame *)(r->data + (fpos & r->mask));
	uint64_t end = fpos + flen;
	uint64_t cw = BUS_COMMIT(type, flen, off);

	if (ts) {
		/* A claim's end (claim_end()), which may come late: the claim
		 * repaired and lapped (see below) before any store of this
		 * call, the timestamp, the sum and its padding, lands on the
		 * newer records that hold the place now.  (bus_produce() wrote
		 * its frame just now: no such check before the sum.)  An
		 * exclusive producer's claim is never repaired while it lives. */
		if (!(p->flags & BUS_PRODUCER_EXCLUSIVE) &&
		    BUS_UNLIKELY(ld_acquire(&r->hdr->horizon) > fpos + r->size))
			return lapped(r, ps->sl);
		f->timestamp = *ts;
	}
	if (p->persistent && type == BUS_FRAME_DATA) {
		/* The sum (layout.h): the frame as the log stores it, padding
		 * zeroed, CRC computed here while its lines are in this core's
		 * cache, so that busd's writer reads only the header and hands
		 * the rest to write(2) (bus_seg_append_inplace()).  R2 again:
		 * release, after every byte of the frame. */
		uint64_t plen = (uint64_t)BUS_FRAME_HDR + f->key_len + f->headers_len + f->value_len;
		if (BUS_LIKELY(plen <= flen)) /* sizes this producer wrote */
			memset((uint8_t *)f + plen, 0, flen - plen);
		st_release(&f->claim, BUS_CLAIM_SUM(off, bus_seg_frame_crc(cw, f, flen)));
	}
	if (p->flags & BUS_PRODUCER_EXCLUSIVE) {
		/* The next commit word was zeroed in reserve(). */
		st_release(&f->commit, cw); /* R3: pairs with A3 in readers */
		bus_ring_checkpoint(r, fpos, end, off + 1);
	} else {
		uint64_t w;
		/* Repaired past the stuck-claim timeout and lapped since (the
		 * horizon a lap past the frame: raisers wait for a claim in
		 * flight only that long, raise_cap()): the place is newer
		 * records' now, and so would the zeroing ahead be.  The CAS
		 * below catches a repair not yet lapped.  What this producer
		 * wrote into its frame after it was lapped is beyond help: a
		 * claim must not be held past the timeout (bus.h). */
		if (BUS_UNLIKELY(ld_acquire(&r->hdr->horizon) > fpos + r->size))
			return lapped(r, ps->sl);
		bus_ring_zero_ahead(r, end, off + 1);
		w = ld_relaxed(&f->commit);
		do {
			if (BUS_COMMIT_TYPE(w) == BUS_FRAME_LOST && BUS_COMMIT_TAG(w) == (uint32_t)off) {
				st_release(&ps->sl->pos, BUS_INTENT_IDLE);
				return -BUS_EREPAIRED;
			}
			/* R3 (CAS with release): a repair in between fails it. */
		} while (!atomic_compare_exchange_weak_explicit(&f->commit, &w, cw,
								memory_order_release,
								memory_order_relaxed));
		/* CK: the checkpoint while our intent still holds every
		 * raise of the horizon within a ring of our claim (raise_cap()).
		 * The next writer of the same checkpoint is the frame that
		 * crosses into the same chunk a lap later, whose claim needs
		 * the horizon past ours + ring: so no two producers' three
		 * stores (bus_ring_checkpoint()) interleave, which could leave
		 * one lap's position paired with the other's offset, whole to
		 * ckpt_read(): a seek or lapped reader sent to a frame that
		 * never carries that offset.  (Written after the intent went
		 * idle, a producer preempted there for a lap did just that.)
		 * An exclusive producer is the only writer: no rival stores. */
		bus_ring_checkpoint(r, fpos, end, off + 1);
		/* Published: no claim in flight (after the commit, release). */
		st_release(&ps->sl->pos, BUS_INTENT_IDLE);
	}
	if ((p->flags & BUS_PRODUCER_LOW_LATENCY) && flen <= DEMOTE_MAX) {
		demote(f, flen);
		own_ahead(r, end, flen);
	}
	/* Not R1's concern: the next reserve() fences before writing. */
	if (BUS_UNLIKELY(end + BUS_FRAME_ALIGN + (r->size >> BUS_HZ_AHEAD_SHIFT) > ps->hz))
		raise_ahead(p, ps, end);
	bus_wake(p->t->ts, p->fenced);
	/* The acknowledgement's check, after the last access of the record
	 * (the commit above) and of the ring and control region.  INVARIANT:
	 * a produce returns 0 only if every store it made to the ring file
	 * reached the file's pages while the file had them.  A store that
	 * missed them (a page truncated away, or the zeros that replaced the
	 * window) comes after the handler's increment of the count of hits,
	 * in this thread or made visible to it (mapguard.c, ORDERING: x86-64
	 * TSO and the TLB-shootdown interrupt; on arm64 this would need a
	 * full fence before the load), so this relaxed load returns non-zero
	 * and the window is looked at.  A truncation after the commit reached
	 * the file loses the record as one after the return would: readers
	 * are told then (-BUS_ECORRUPT), nothing is handed out as zeros.
	 * Cost: one load of a line nobody writes, a branch never taken. */
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0))
		return bus_ring_lost_slow(p->t, ps->r);
	return 0;
}

static int pick_partition(struct bus_producer *p, int32_t partition, const void *key,
			  uint32_t key_len, uint32_t *out)
{
	uint32_t n = p->t->cfg.partitions;

	if (partition >= 0) {
		if ((uint32_t)partition >= n)
			return -ENOENT;
		*out = (uint32_t)partition;
	} else if (partition != BUS_PARTITION_ANY) {
		return -EINVAL;
	} else if (key_len) {
		*out = bus_partition_for_key(key, key_len, n);
	} else {
		*out = p->rr++ % n;
	}
	return 0;
}

static void frame_fill(struct bus_producer *p, struct bus_frame *f, uint64_t off, uint32_t key_len,
		       uint32_t headers_len, uint32_t value_len, uint32_t header_count,
		       uint32_t slack)
{
	f->offset = off;
	f->key_len = key_len;
	f->headers_len = headers_len;
	f->value_len = value_len;
	f->header_count = (uint16_t)header_count;
	f->slack = (uint16_t)slack;
	/* R2: sizes and slack before the claim word; pairs with A2 in the
	 * repairer, which takes the frame's length from them. */
	st_release(&f->claim, BUS_CLAIM(p->pid, off));
}

/* Encoded headers: per header u16 name_len, u32 value_len, name, value. */
/* Encoded size of @n headers, or UINT64_MAX when one of them has a NULL
 * name or value with a length (bus_produce() says -EINVAL).  Only records
 * with headers pay the check, one test per header. */
static uint64_t headers_size(const struct bus_header *hs, uint32_t n)
{
	uint64_t sz = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (BUS_UNLIKELY((hs[i].name_len && !hs[i].name) ||
				 (hs[i].value_len && !hs[i].value)))
			return UINT64_MAX;
		sz += 6 + (uint64_t)hs[i].name_len + hs[i].value_len;
	}
	return sz;
}

static void headers_encode(uint8_t *dst, const struct bus_header *hs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		memcpy(dst, &hs[i].name_len, 2);
		memcpy(dst + 2, &hs[i].value_len, 4);
		/* An empty name or value may be NULL: no memcpy() from it. */
		if (hs[i].name_len)
			memcpy(dst + 6, hs[i].name, hs[i].name_len);
		if (hs[i].value_len)
			memcpy(dst + 6 + hs[i].name_len, hs[i].value, hs[i].value_len);
		dst += 6 + hs[i].name_len + hs[i].value_len;
	}
}

int bus_produce(struct bus_producer *p, int32_t partition, const struct bus_record *rec,
		uint32_t *out_partition, uint64_t *out_offset)
{
	struct bus_pstate *ps;
	struct bus_frame *f;
	uint64_t hlen, flen64, fpos, off;
	int64_t ts;
	uint32_t part, flen;
	uint8_t *payload;
	int err;

	if (BUS_UNLIKELY(!p || !rec || (rec->key_len && !rec->key) ||
			 (rec->value_len && !rec->value) || (rec->header_count && !rec->headers) ||
			 rec->header_count > BUS_HEADER_COUNT_MAX || p->claim_open))
		return -EINVAL;
	/* A truncated control region reads a zero state word: "stale". */
	if (BUS_UNLIKELY((err = bus_topic_check(p->t)) != 0))
		return produce_err(p, NULL, err);
	err = pick_partition(p, partition, rec->key, rec->key_len, &part);
	if (BUS_UNLIKELY(err))
		return err;
	ps = &p->parts[part];
	/* The clock is read before the claim: between the first store to the
	 * frame's line and the commit a spinning reader must find as little
	 * time as possible to pull the line back. */
	ts = rec->timestamp ? rec->timestamp : bus_now_ns();
	hlen = rec->header_count ? headers_size(rec->headers, rec->header_count) : 0;
	if (BUS_UNLIKELY(hlen == UINT64_MAX))
		return -EINVAL;
	flen64 = (uint64_t)BUS_FRAME_HDR + rec->key_len + hlen + rec->value_len;
	if (BUS_UNLIKELY(flen64 > ps->r->size / 2))
		return -EMSGSIZE;
	flen = bus_align8(flen64);
	err = reserve(p, ps, &flen, &fpos, &off);
	if (BUS_UNLIKELY(err))
		return produce_err(p, ps, err);
	f = (struct bus_frame *)(ps->r->data + (fpos & ps->r->mask));
	/* The timestamp with the rest of the header, before the payload: the
	 * header's line is the one a waiting reader polls (the commit word's),
	 * and a store to it after the payload's lines found it pulled back by
	 * that reader, one more transfer before the commit (rtt of 64 B
	 * records on the Intel VM, alternating runs: 555-599 -> 449-515 ns).
	 * Writing the payload's other lines first did worse (the header line's
	 * transfer then starts last), and so did prefetching them for writing
	 * (no gain). */
	f->timestamp = ts;
	frame_fill(p, f, off, rec->key_len, (uint32_t)hlen, rec->value_len, rec->header_count,
		   flen - bus_align8(flen64));
	payload = (uint8_t *)(f + 1);
	if (rec->key_len)
		memcpy(payload, rec->key, rec->key_len);
	if (hlen)
		headers_encode(payload + rec->key_len, rec->headers, rec->header_count);
	if (rec->value_len)
		memcpy(payload + rec->key_len + hlen, rec->value, rec->value_len);
	err = publish(p, ps, fpos, flen, off, BUS_FRAME_DATA, NULL);
	if (BUS_UNLIKELY(err))
		return produce_err(p, ps, err);
	if (out_partition)
		*out_partition = part;
	if (out_offset)
		*out_offset = off;
	return 0;
}

int bus_producer_claim(struct bus_producer *p, int32_t partition, const void *key,
		       uint32_t key_len, uint32_t value_len, struct bus_claim *c)
{
	struct bus_pstate *ps;
	struct bus_frame *f;
	uint64_t flen64, fpos, off;
	uint32_t part, flen;
	int err;

	if (BUS_UNLIKELY(!p || !c || (key_len && !key) || p->claim_open))
		return -EINVAL;
	if (BUS_UNLIKELY((err = bus_topic_check(p->t)) != 0))
		return produce_err(p, NULL, err);
	err = pick_partition(p, partition, key, key_len, &part);
	if (BUS_UNLIKELY(err))
		return err;
	ps = &p->parts[part];
	flen64 = (uint64_t)BUS_FRAME_HDR + key_len + value_len;
	if (BUS_UNLIKELY(flen64 > ps->r->size / 2))
		return -EMSGSIZE;
	flen = bus_align8(flen64);
	err = reserve(p, ps, &flen, &fpos, &off);
	if (BUS_UNLIKELY(err))
		return produce_err(p, ps, err);
	f = (struct bus_frame *)(ps->r->data + (fpos & ps->r->mask));
	frame_fill(p, f, off, key_len, 0, value_len, 0, flen - bus_align8(flen64));
	if (key_len)
		memcpy(f + 1, key, key_len);
	c->value = (uint8_t *)(f + 1) + key_len;
	c->value_len = value_len;
	c->partition = part;
	c->offset = off;
	c->priv_frame = f;
	c->priv_pos = fpos;
	c->priv_commit = flen;
	p->open_claim = *c;
	p->claim_open = true;
	return 0;
}

static int claim_end(struct bus_producer *p, struct bus_claim *c, uint32_t type, int64_t ts)
{
	struct bus_pstate *ps;
	int64_t stamp;
	int err;

	/* @c must be the open claim itself (or a copy of it), not a copy of
	 * one ended already: committed, it would rewrite a published record
	 * (its timestamp, its sum) and end the open claim in its place, whose
	 * record then waited for the stuck-claim timeout and was lost.  The
	 * fields are the caller's memory: only those of the open claim, kept
	 * here, are trusted. */
	if (!p || !c || !p->claim_open || c->priv_frame != p->open_claim.priv_frame ||
	    c->priv_pos != p->open_claim.priv_pos || c->priv_commit != p->open_claim.priv_commit ||
	    c->offset != p->open_claim.offset || c->partition != p->open_claim.partition)
		return -EINVAL;
	c->priv_frame = NULL;
	c = &p->open_claim;
	stamp = ts ? ts : bus_now_ns();
	p->claim_open = false;
	ps = &p->parts[c->partition];
	/* The timestamp is stored by publish(), once it knows the frame is
	 * still this claim's. */
	err = publish(p, ps, c->priv_pos, (uint32_t)c->priv_commit, c->offset, type, &stamp);
	return BUS_UNLIKELY(err) ? produce_err(p, ps, err) : 0;
}

int bus_producer_commit(struct bus_producer *p, struct bus_claim *c, int64_t timestamp)
{
	return claim_end(p, c, BUS_FRAME_DATA, timestamp);
}

int bus_producer_abort(struct bus_producer *p, struct bus_claim *c)
{
	return claim_end(p, c, BUS_FRAME_LOST, 0);
}

void bus_producer_stats(const struct bus_producer *p, struct bus_producer_stats *out)
{
	if (p && out)
		*out = p->stats;
}
