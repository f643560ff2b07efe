/* ring.c - partition ring files and the protocol pieces that producers,
 * consumers and the repairer share.
 *
 * The append protocol (see also layout.h, invariant I1):
 *
 *   1. Claim.  A concurrent producer moves tail {pos, off} to
 *      {pos + len, off + 1} with one 16-byte CAS; an exclusive producer with
 *      plain stores.  If the claim (plus the zeroed word after it) reaches
 *      past the horizon, the producer first raises the horizon.  A release
 *      fence (R1) follows, so that any reader that sees a byte written in
 *      step 2 and then issues an acquire fence (A1) sees the raised
 *      horizon: the seqlock that makes I1 checkable.
 *   2. Write the header sizes, then the claim word {pid, tag} with release
 *      (R2; pairs with A2 in the repairer, who needs the sizes to know the
 *      length), then key, headers, value and timestamp.
 *   3. Zero ahead: the commit word at the frame's end is set to 0 unless it
 *      already holds the next record's commit (bus_ring_zero_ahead()).  So
 *      a reader that reaches the next position never mistakes stale bytes of
 *      an older lap for a commit word.
 *   4. Commit: the commit word {type, len, tag} is stored with release (R3;
 *      pairs with A3 in readers).  Concurrent producers use a CAS, so that a
 *      claim repaired meanwhile is noticed instead of overwritten.
 *
 * A reader at position p expecting offset o loads the commit word at p
 * (A3).  Zero, or a tag other than o, means "not published yet" unless the
 * reader was lapped (I1 fails: horizon > p + ring_size).  After using a
 * frame it issues A1 and re-checks I1.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void bus_ring_path(const struct bus *b, const char *topic, uint32_t gen, uint32_t part,
		   char *buf, size_t len)
{
	snprintf(buf, len, "%s/bus.%s.%s.%u.%u", b->shm_dir, b->name, topic, gen, part);
}

static uint64_t ring_file_size(const struct bus *b, uint64_t ring_size)
{
	return bus_shm_round(b, ring_size + BUS_RING_HDR_SIZE);
}

static void ring_bind(struct bus_ring *r, uint64_t ring_size)
{
	r->data = r->map.addr;
	r->hdr = (struct bus_ring_hdr *)((uint8_t *)r->map.addr + ring_size);
	r->size = ring_size;
	r->mask = ring_size - 1;
	/* Both are powers of two: the hot path shifts instead of dividing. */
	r->ckpt_shift = (unsigned)__builtin_ctzll(ring_size / BUS_CKPT_N);
}

int bus_ring_create(const struct bus *b, const char *topic, uint32_t gen, uint32_t part,
		    const struct bus_topic_cfg_disk *cfg, uint64_t start_off, struct bus_ring *r)
{
	char path[4200];
	struct bus_ring_hdr *h;
	int err;

	bus_ring_path(b, topic, gen, part, path, sizeof(path));
	memset(r, 0, sizeof(*r));
	err = bus_shm_create(b, path, ring_file_size(b, cfg->ring_size), cfg->numa_node,
			     (cfg->flags & BUS_TOPIC_PRIVATE) != 0, &r->map);
	if (err)
		return err;
	ring_bind(r, cfg->ring_size);
	h = r->hdr;
	h->magic = BUS_RING_MAGIC;
	h->layout_version = BUS_LAYOUT_VERSION;
	h->hdr_size = sizeof(*h);
	h->signature = bus_layout_signature();
	h->ring_size = cfg->ring_size;
	h->partition = part;
	h->topic_gen = gen;
	h->creator_pid = getpid();
	for (uint32_t i = 0; i < BUS_CKPT_N; i++) {
		st_relaxed(&h->ckpt[i].pos, BUS_CKPT_EMPTY);
		st_relaxed(&h->ckpt[i].off, 0);
	}
	st_relaxed(&h->ckpt[0].pos, 0);
	st_relaxed(&h->ckpt[0].off, start_off);
	for (uint32_t i = 0; i < BUS_PRODUCERS_MAX; i++)
		st_relaxed(&h->pslot[i].pos, BUS_INTENT_IDLE);
	st_relaxed(&h->tail.off, start_off);
	st_relaxed(&h->excl_soff, UINT64_MAX); /* no exclusive claim yet */
	/* Everything before start_off is on disk already. */
	st_relaxed(&h->spill_off, start_off);
	/* R0: publishes the header; pairs with A0 in bus_ring_attach(). */
	st_release(&h->ready, BUS_LAYOUT_VERSION);
	/* Truncated while we wrote it: what we wrote went to zeros. */
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0) && bus_ring_hit(r)) {
		bus_ring_detach(r);
		return -BUS_ECORRUPT;
	}
	return 0;
}

int bus_ring_attach(const struct bus *b, const char *topic, uint32_t gen, uint32_t part,
		    const struct bus_topic_cfg_disk *cfg, struct bus_ring *r)
{
	char path[4200];
	uint64_t fsize;
	struct bus_ring_hdr *h;
	int err;

	bus_ring_path(b, topic, gen, part, path, sizeof(path));
	memset(r, 0, sizeof(*r));
	err = bus_shm_attach(b, path, cfg->ring_size + BUS_RING_HDR_SIZE, &r->map, &fsize);
	if (err)
		return err == -ENOENT ? -BUS_ECORRUPT : err;
	ring_bind(r, cfg->ring_size);
	h = r->hdr;
	/* A0: the topic slot was READY, so the ring was fully created. */
	if (ld_acquire(&h->ready) != BUS_LAYOUT_VERSION || h->magic != BUS_RING_MAGIC) {
		err = h->magic == BUS_RING_MAGIC ? -BUS_EVERSION : -BUS_ECORRUPT;
		goto fail;
	}
	if (h->layout_version != BUS_LAYOUT_VERSION || h->signature != bus_layout_signature() ||
	    h->hdr_size != sizeof(*h)) {
		err = -BUS_EVERSION;
		goto fail;
	}
	if (h->ring_size != cfg->ring_size || h->partition != part || h->topic_gen != gen) {
		err = -BUS_ECORRUPT;
		goto fail;
	}
	/* Truncated since the size was checked: the header read as zeros. */
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0) && bus_ring_hit(r)) {
		err = -BUS_ECORRUPT;
		goto fail;
	}
	return 0;
fail:
	bus_shm_unmap(&r->map);
	return err;
}

void bus_ring_detach(struct bus_ring *r)
{
	bus_shm_unmap(&r->map);
}

int bus_ring_lost_slow(struct bus_topic *t, struct bus_ring *r)
{
	int err = bus_ctl_lost_slow(t->bus);
	char path[4200];
	uint32_t part;

	if (err)
		return err;
	if (!r || !bus_ring_hit(r))
		return 0;
	if (!atomic_exchange(&r->lost_said, true)) {
		part = (uint32_t)(r - t->rings);
		bus_ring_path(t->bus, t->name, t->gen, part, path, sizeof(path));
		bus_log(t->bus, BUS_LOG_ERROR,
			"ring file %s (topic '%s' partition %u) was truncated under this "
			"process's mapping (SIGBUS caught): its records not yet on disk are lost, "
			"and the partition's calls return -BUS_ECORRUPT in this process",
			path, t->name, part);
		/* The control region is whole: its futex wakes the sleepers. */
		bus_wake_slow(t->ts);
	}
	return -BUS_ECORRUPT;
}

uint64_t bus_ring_low_water(struct bus_ring *r, bool persistent, bool reap, bool *nodaemon)
{
	struct bus_ring_hdr *h = r->hdr;
	uint64_t lw = UINT64_MAX;

	*nodaemon = false;
	for (unsigned i = 0; i < BUS_GATING_MAX; i++) {
		uint64_t o = ld_acquire(&h->gating[i].owner);
		uint64_t pos;

		if (!o)
			continue;
		if (reap && !bus_pid_alive(BUS_OWNER_PID(o))) {
			/* A dead gating consumer must not hold producers back
			 * (zombies and reused pids: bus_ring_reap_gating()). */
			/* Other producers asleep on this ring gain from it
			 * too: wake them (wait.c, "Space"). */
			if (atomic_compare_exchange_strong(&h->gating[i].owner, &o, 0))
				bus_space_wake(h, true);
			continue;
		}
		pos = ld_acquire(&h->gating[i].pos);
		if (pos < lw)
			lw = pos;
	}
	if (persistent) {
		uint64_t sp = ld_acquire(&h->spill_pos);
		if (sp < lw) {
			lw = sp;
			*nodaemon = reap && !bus_pid_alive(ld_acquire(&h->spiller_pid));
		}
	}
	return lw;
}

void bus_ring_reap_gating(struct bus_ring *r)
{
	struct bus_ring_hdr *h = r->hdr;

	for (unsigned i = 0; i < BUS_GATING_MAX; i++) {
		uint64_t o = ld_acquire(&h->gating[i].owner);

		/* The CAS frees the slot only if it still names that owner:
		 * a consumer that took it meanwhile keeps it (its word holds
		 * its own start time, even under a reused pid). */
		if (o && bus_owner_gone(o) &&
		    atomic_compare_exchange_strong(&h->gating[i].owner, &o, 0))
			bus_space_wake(h, true); /* as in bus_ring_low_water() */
	}
}

/* Read checkpoint @i consistently: pos is re-read after off, and a lap
 * rewrites both, so equal reads of pos mean off belongs to it.  Inlined:
 * as a call (gcc's choice once it had two callers) it slowed the scan of
 * bus_ring_earliest() enough that, with two producers lapping a 64 KiB
 * ring, 99% of its calls found the horizon moved past their checkpoint
 * (-EAGAIN), against 65%. */
static inline __attribute__((always_inline)) bool ckpt_read(const struct bus_ckpt *c,
							   uint64_t *pos, uint64_t *off)
{
	uint64_t p1 = ld_acquire(&c->pos);
	uint64_t o = ld_acquire(&c->off);
	uint64_t p2 = ld_acquire(&c->pos);

	/* An unaligned position is not one a producer wrote: corrupt. */
	if (p1 != p2 || p1 == BUS_CKPT_EMPTY || p1 % BUS_FRAME_ALIGN)
		return false;
	*pos = p1;
	*off = o;
	return true;
}

void bus_ring_checkpoint(struct bus_ring *r, uint64_t start, uint64_t end, uint64_t next_off)
{
	struct bus_ckpt *c;

	if (BUS_LIKELY(start >> r->ckpt_shift == end >> r->ckpt_shift))
		return;
	c = &r->hdr->ckpt[(end & r->mask) >> r->ckpt_shift];
	/* Invalidate, write off, publish pos: readers see either the old pair
	 * with a changed pos (rejected) or the new one. */
	st_release(&c->pos, BUS_CKPT_EMPTY);
	st_release(&c->off, next_off);
	st_release(&c->pos, end);
}

/* The earliest whole frame of the ring, from the checkpoints.  Returns 0,
 * -EAGAIN (none could be read whole: producers moved on meanwhile, or the
 * only ones in the lap are of frames still being published; try again), or
 * -BUS_ECORRUPT: the header holds what no producer writes (a horizon more
 * than a ring past the tail, the earliest checkpoint's offset past the
 * tail's, or, when none is usable, a checkpoint past the tail), which a
 * caller would otherwise take as the truth or retry for ever.
 *
 * What producers guarantee (producer.c, reserve() and publish()):
 *   - a raise asks for at most a claim's end + 1/32 + 1/16 ring + 8, after
 *     that claim: the horizon leads the tail by less than a ring;
 *   - a checkpoint {end, next_off} is published (release) after the claim
 *     that took the tail to end and next_off, so a reader that sees it
 *     (acquire) and then reads the tail reads one at least as far.
 * So the tail is read after the horizon, and read again after the
 * checkpoints before one past it is called corrupt: under load many are
 * published after the first read.  The scan itself stays as lean as it
 * can: the earliest checkpoint is at the lap's edge, and the longer the
 * scan, the likelier a raise meanwhile makes it -EAGAIN (testing each
 * checkpoint's offset in the loop took the calls that did so, with two
 * producers lapping a 64 KiB ring, from 65% to 80%).  The re-read after
 * the horizon matters on weakly ordered machines only: a raise is a
 * relaxed CAS, which may become visible before the claim it follows. */
int bus_ring_earliest(struct bus_ring *r, uint64_t *pos, uint64_t *off)
{
	struct bus_ring_hdr *h = r->hdr;
	uint64_t hz = ld_acquire(&h->horizon);
	uint64_t tail = ld_acquire(&h->tail.pos);
	uint64_t tail_off = ld_acquire(&h->tail.off) & ~BUS_TAIL_EXCL;
	uint64_t bound = hz > r->size ? hz - r->size : 0;
	uint64_t best = UINT64_MAX, best_off = 0;

	if (BUS_UNLIKELY(hz > tail && hz - tail > r->size)) {
		atomic_thread_fence(memory_order_seq_cst);
		tail = ld_acquire(&h->tail.pos);
		if (hz > tail && hz - tail > r->size)
			return -BUS_ECORRUPT;
	}
	for (uint32_t i = 0; i < BUS_CKPT_N; i++) {
		uint64_t p, o;
		if (!ckpt_read(&h->ckpt[i], &p, &o))
			continue;
		if (p >= bound && p <= tail && p < best) {
			best = p;
			best_off = o;
		}
	}
	if (BUS_UNLIKELY(best == UINT64_MAX)) {
		/* None below the tail: one past it, published since the
		 * first read, is below it now (see above). */
		for (uint32_t i = 0; i < BUS_CKPT_N; i++) {
			uint64_t p, o;
			if (ckpt_read(&h->ckpt[i], &p, &o) && p >= bound &&
			    p > ld_acquire(&h->tail.pos))
				return -BUS_ECORRUPT;
		}
		return -EAGAIN;
	}
	/* Its frame was claimed before the tail was read (best <= tail), so
	 * its offset is at most the tail's, but for an exclusive producer's
	 * tail, whose off is stored after its pos and may lag: read again
	 * (after the checkpoint's acquire loads, as above). */
	if (BUS_UNLIKELY(best_off > tail_off) &&
	    best_off > (ld_acquire(&h->tail.off) & ~BUS_TAIL_EXCL))
		return -BUS_ECORRUPT;
	/* The checkpoint may be from a lap that ended meanwhile: re-check I1
	 * after A1. */
	atomic_thread_fence(memory_order_acquire);
	if (ld_relaxed(&h->horizon) > best + r->size)
		return -EAGAIN;
	*pos = best;
	*off = best_off;
	return 0;
}

void bus_ring_raise_horizon(struct bus_ring *r, uint64_t end, uint64_t limit, uint64_t *cached)
{
	struct bus_ring_hdr *h = r->hdr;
	uint64_t want = end + BUS_FRAME_ALIGN + (r->size >> BUS_HZ_STEP_SHIFT);
	uint64_t cur = ld_relaxed(&h->horizon);

	if (want > limit)
		want = limit; /* never past the slowest gating cursor's lap */
	/* cur < want: a horizon raised by a producer that saw a later limit
	 * is never pulled back to ours (an early raise, producer.c, may ask
	 * for more than its own limit allows). */
	while (cur < end + BUS_FRAME_ALIGN && cur < want) {
		/* Only ever raised: a CAS-max among concurrent producers. */
		if (atomic_compare_exchange_weak_explicit(&h->horizon, &cur, want,
							  memory_order_relaxed,
							  memory_order_relaxed)) {
			cur = want;
			break;
		}
	}
	*cached = cur;
}

bool bus_ring_claim_resolved(struct bus_ring *r, uint64_t pos, uint64_t off)
{
	const struct bus_frame *f = (const struct bus_frame *)(r->data + (pos & r->mask));
	uint64_t w = ld_acquire(&f->commit), q;

	if (w == 0 || BUS_COMMIT_TAG(w) != (uint32_t)off)
		return false;
	if (BUS_COMMIT_TYPE(w) != BUS_FRAME_PAD)
		return true;
	/* The padding of a claim that wraps (reserve()) is published before
	 * the claim's frame, at the lap's start, is written. */
	q = pos + (r->size - (pos & r->mask));
	f = (const struct bus_frame *)(r->data + (q & r->mask));
	w = ld_acquire(&f->commit);
	return w != 0 && BUS_COMMIT_TAG(w) == (uint32_t)off && BUS_COMMIT_TYPE(w) != BUS_FRAME_PAD;
}

uint64_t bus_ring_intents_floor(struct bus_ring *r, uint64_t hz, uint64_t below)
{
	struct bus_ring_hdr *h = r->hdr;
	uint64_t fl = BUS_INTENT_IDLE;

	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++) {
		struct bus_pslot *sl = &h->pslot[i];
		uint64_t pos, off;

		if (!ld_acquire(&sl->owner))
			continue;
		pos = ld_acquire(&sl->pos);
		/* Idle, not in the way, or a lap behind already: no claim in
		 * flight there (the leftover of a CAS lost long ago; a claim
		 * in flight is never lapped, so this one was not). */
		if (pos == BUS_INTENT_IDLE || pos >= fl || pos >= below || hz > pos + r->size)
			continue;
		off = ld_acquire(&sl->off);
		if (bus_ring_claim_resolved(r, pos, off))
			continue; /* published or repaired */
		fl = pos;
	}
	return fl;
}

void bus_ring_zero_ahead(struct bus_ring *r, uint64_t pos, uint64_t next_off)
{
	struct bus_frame *f = (struct bus_frame *)(r->data + (pos & r->mask));
	uint64_t w = ld_acquire(&f->commit);

	/* The only commit word that may legitimately sit at @pos in this lap
	 * is that of the record with offset next_off (or a padding frame
	 * announcing it).  Anything else is stale: replace it by 0 with a CAS,
	 * which fails harmlessly if that record's producer commits first. */
	if (w == 0 || BUS_COMMIT_TAG(w) == (uint32_t)next_off)
		return;
	atomic_compare_exchange_strong(&f->commit, &w, 0);
}

/* Length of the frame whose sizes are in @f, or 0 when they do not make a
 * frame that fits at @pos. */
static uint32_t frame_len_checked(const struct bus_ring *r, const struct bus_frame *f, uint64_t pos)
{
	uint64_t n = bus_frame_len(f->key_len, f->headers_len, f->value_len, f->slack);
	uint64_t room = r->size - (pos & r->mask);

	return n && n <= room ? (uint32_t)n : 0;
}

/* A live exclusive producer holds the partition: it is the only writer, and
 * its plain commit store cannot be fenced, so a repairer never races it. */
static bool excl_live(struct bus_ring_hdr *h, uint64_t tail_off, uint64_t off)
{
	/* Its claim in flight is the last one: older claims are those of
	 * concurrent producers made before it took the partition, which its
	 * plain stores never touch. */
	return (tail_off & BUS_TAIL_EXCL) && (tail_off & ~BUS_TAIL_EXCL) == off + 1 &&
	       !bus_owner_gone(ld_acquire(&h->excl_owner));
}

/* Whether {@pos, @off} is the exclusive producer's latest claim (excl_start,
 * excl_soff), at its start or, when it wraps, at the lap's start. */
static bool excl_claim(struct bus_ring *r, uint64_t pos, uint64_t off)
{
	uint64_t s = ld_acquire(&r->hdr->excl_start);

	if (ld_acquire(&r->hdr->excl_soff) != off)
		return false;
	return s == pos || (s < pos && s + (r->size - (s & r->mask)) == pos);
}

/* A claim of @len bytes at @pos whose owner may have died before raising
 * the horizon over it (the raise comes between its claim and its first
 * write, R1): raise it now, to the claim's end and no further, before
 * writing there.  The claim was admitted under its producer's limit, so a
 * gated topic's limit allows this much. */
static bool repair_raise(struct bus_ring *r, uint64_t end)
{
	uint64_t hz = ld_acquire(&r->hdr->horizon);
	uint64_t fl = bus_ring_intents_floor(r, hz, UINT64_MAX);

	/* Never a lap past an older claim in flight (the claim repaired here
	 * has its own intent, at or below its start: no bar to itself). */
	if (fl < UINT64_MAX - r->size && end + BUS_FRAME_ALIGN > fl + r->size)
		return false;
	bus_ring_raise_horizon(r, end, end + BUS_FRAME_ALIGN, &hz);
	/* R1, as a producer's: the horizon before the bytes written next. */
	atomic_thread_fence(memory_order_release);
	return true;
}

/* Slot @i's intent if it is the claim {@pos, @off}: *end and *owner (its
 * BUS_OWNER word), and true.  The read order (layout.h, producer slots):
 * owner, pos, end, off. */
static bool intent_read(struct bus_ring *r, unsigned i, uint64_t pos, uint64_t off,
			uint64_t *end, uint64_t *owner)
{
	struct bus_pslot *sl = &r->hdr->pslot[i];
	uint64_t sp;

	*owner = ld_acquire(&sl->owner);
	if (!*owner)
		return false;
	sp = ld_acquire(&sl->pos);
	/* Its claim starts at @pos, or wraps to it: padding from sp to the
	 * lap's end (published already: readers went on), then its frame. */
	if (sp != pos && !(sp < pos && sp + (r->size - (sp & r->mask)) == pos))
		return false;
	*end = ld_acquire(&sl->end);
	return ld_acquire(&sl->off) == off;
}

/* Whether a frame of offset @off starts at @pos: published there, or
 * claimed there by a producer that wrote its claim word or says so in its
 * slot, or the last claim ends there. */
static bool frame_starts_at(struct bus_ring *r, uint64_t pos, uint64_t off, uint64_t tail_pos,
			    uint64_t tail_off)
{
	const struct bus_frame *f = (const struct bus_frame *)(r->data + (pos & r->mask));
	uint64_t w = ld_acquire(&f->commit), cl = ld_acquire(&f->claim), e, o;

	if (pos == tail_pos)
		return (tail_off & ~BUS_TAIL_EXCL) == off;
	if ((w != 0 && BUS_COMMIT_TAG(w) == (uint32_t)off) ||
	    (BUS_CLAIM_PID(cl) > 0 && BUS_CLAIM_TAG(cl) == (uint32_t)off) ||
	    BUS_CLAIM_IS_SUM(cl, off))
		return true;
	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++)
		if (intent_read(r, i, pos, off, &e, &o))
			return true;
	return false;
}

/* The claim {@pos, @off} as its producer announced it in its slot: its end
 * in *end and whether an owner may still be alive in *alive.  Returns 1
 * when found, 0 when no slot names it (an exclusive producer's claim, or
 * the owner freed its slot: then it published), -1 when slots disagree
 * and nothing tells yet which is right.
 *
 * More than one slot names the claim when a producer lost the CAS for it
 * and has not yet stored its next intent (it may have died right after
 * the CAS): the winner's end is the one where the next record starts. */
static int intent_of(struct bus_ring *r, uint64_t pos, uint64_t off, uint64_t tail_pos,
		     uint64_t tail_off, uint64_t *end, bool *alive)
{
	uint64_t ends[BUS_PRODUCERS_MAX];
	uint64_t owners[BUS_PRODUCERS_MAX];
	unsigned n = 0, hits = 0;

	/* The exclusive producer's claim (excl_settle() in producer.c): it
	 * has no slot, and a concurrent producer that lost the same tail
	 * state to it may have left an intent naming it. */
	if (excl_claim(r, pos, off))
		return 0;
	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++)
		if (intent_read(r, i, pos, off, &ends[n], &owners[n]))
			n++;
	if (!n)
		return 0;
	*alive = false;
	for (unsigned i = 0; i < n; i++)
		*alive = *alive || !bus_owner_gone(owners[i]);
	unsigned same = 1;

	while (same < n && ends[same] == ends[0])
		same++;
	if (same == n) {
		*end = ends[0]; /* one end, whoever won */
		return 1;
	}
	/* Several ends where a frame of off + 1 starts: the next record
	 * wrapped, its padding at the winner's end and its frame at the lap's
	 * start, which a loser's end may name.  The winner's is the smaller. */
	for (unsigned i = 0; i < n; i++) {
		if (ends[i] > tail_pos || ends[i] <= pos ||
		    !frame_starts_at(r, ends[i], off + 1, tail_pos, tail_off))
			continue;
		if (!hits++ || ends[i] < *end)
			*end = ends[i];
	}
	return hits ? 1 : -1;
}

/* A claim at @pos near the lap's end, with no claim word, ending at
 * @tail_pos past the lap: it is a padding frame to the lap's end and then a
 * frame at the lap's start (reserve()), whose owner died (or stalls) before
 * it published the padding.  Readers wait at @pos.  Publish a LOST frame at the
 * lap's start, then the padding that sends readers to it (R3 order: the
 * LOST frame before the padding, so that no reader finds the start empty
 * and waits again).  @w is the commit word found at @pos.
 *
 * A live owner that resumes: its zeroing of the lap start's commit word
 * leaves a LOST frame of its own offset alone (bus_ring_zero_ahead(), in
 * reserve()), its padding store writes the same word as ours, and its
 * commit CAS finds the LOST frame and reports -BUS_EREPAIRED. */
static int repair_wrap(struct bus_ring *r, uint64_t pos, uint64_t off, uint64_t w,
		       uint64_t tail_pos)
{
	/* (@tail_pos: the claim's end.) */
	uint64_t room = r->size - (pos & r->mask);
	uint64_t q = pos + room; /* the lap's start */
	uint64_t flen = tail_pos - q;
	struct bus_frame *qf = (struct bus_frame *)(r->data + (q & r->mask));
	struct bus_frame *pf = (struct bus_frame *)(r->data + (pos & r->mask));
	uint64_t wq;

	/* reserve() wraps only a frame longer than the room left, of at
	 * most half a ring plus its slack. */
	if (flen <= room || flen < BUS_FRAME_HDR || flen % BUS_FRAME_ALIGN ||
	    flen > r->size / 2 + BUS_SLACK_MAX)
		return -BUS_ECORRUPT;
	if (!repair_raise(r, tail_pos))
		return 0; /* later: an older claim is in flight */
	bus_ring_zero_ahead(r, tail_pos, off + 1);
	wq = ld_acquire(&qf->commit);
	if (wq != 0 && BUS_COMMIT_TAG(wq) == (uint32_t)off) {
		/* The frame is published, or LOST.  Its owner stores the
		 * padding before either (reserve()), but a repairer killed
		 * between its two stores below left a LOST frame and no
		 * padding, and readers wait at @pos: store the padding it
		 * would have (the word the owner stores too; R3; a CAS from
		 * what was read at @pos, so a padding stored meanwhile is
		 * left alone).  Not counted, not reported: that repairer
		 * counted its repair (or is still making it). */
		if (BUS_COMMIT_TYPE(wq) == BUS_FRAME_LOST)
			(void)atomic_compare_exchange_strong(&pf->commit, &w,
							     BUS_COMMIT(BUS_FRAME_PAD, room, off));
		return 0;
	}
	if (!atomic_compare_exchange_strong(&qf->commit, &wq,
					    BUS_COMMIT(BUS_FRAME_LOST, flen, off)))
		return 0; /* its owner moved meanwhile: look again later */
	/* Counted as soon as the record is lost, before the padding: a
	 * repairer killed between the two stores leaves the padding to the
	 * next (above), which counts nothing. */
	atomic_fetch_add_explicit(&r->hdr->repaired, 1, memory_order_relaxed);
	/* R3.  A failed CAS means the owner, or a repairer completing this
	 * one (above), stored the same padding word. */
	(void)atomic_compare_exchange_strong(&pf->commit, &w, BUS_COMMIT(BUS_FRAME_PAD, room, off));
	return 1;
}

/* Whether the producer whose claim word at {@pos, @off} names @pid is gone.
 * The claim word has room for the pid only; the owner word that goes with
 * it (the exclusive mark, or the slot whose intent names the claim, which
 * stays until the claim is resolved) tells whether that pid still names
 * the producer or a process that was given it since.  Without one, the
 * pid decides. */
static bool claim_owner_gone(struct bus_ring *r, int32_t pid, uint64_t pos, uint64_t off,
			     uint64_t tail_off)
{
	uint64_t o, e;

	if (bus_pid_gone(pid))
		return true;
	o = ld_acquire(&r->hdr->excl_owner);
	if ((tail_off & BUS_TAIL_EXCL) && BUS_OWNER_PID(o) == pid && excl_claim(r, pos, off))
		return bus_owner_gone(o);
	for (unsigned i = 0; i < BUS_PRODUCERS_MAX; i++)
		if (intent_read(r, i, pos, off, &e, &o) && BUS_OWNER_PID(o) == pid)
			return bus_owner_gone(o);
	return false;
}

int bus_ring_repair(struct bus_ring *r, uint64_t pos, uint64_t off, bool force)
{
	struct bus_ring_hdr *h = r->hdr;
	struct bus_frame *f = (struct bus_frame *)(r->data + (pos & r->mask));
	uint64_t claim = ld_acquire(&f->claim); /* A2: pairs with R2 */
	uint64_t w = ld_acquire(&f->commit);
	uint64_t room = r->size - (pos & r->mask);
	uint64_t tail_off, tail_pos;
	uint32_t len;
	int32_t pid;

	if (w != 0 && BUS_COMMIT_TAG(w) == (uint32_t)off) {
		uint64_t q = pos + room;
		/* The padding of a claim that wraps is published before its
		 * frame: that frame, at the lap's start, is the one to look
		 * at (callers that hold the claim's start: raisers, reapers). */
		if (BUS_COMMIT_TYPE(w) != BUS_FRAME_PAD || !(pos & r->mask))
			return 0; /* published meanwhile (a padding at a lap's
				     start is no claim's: no second hop) */
		return bus_ring_repair(r, q, off, force);
	}
	/* One pair: two loads could pair one claim's position with the next
	 * claim's offset, and the length below would swallow that frame. */
	bus_tail_read(&h->tail, &tail_pos, &tail_off);
	if (tail_pos <= pos)
		return 0; /* nothing claimed here */
	/* A claim word always holds its owner's pid: one without (a new
	 * ring, a producer's sum, or the CRC that busd stores in a published
	 * frame's dead claim word: bus_seg_append_inplace()) is no claim,
	 * whatever its tag. */
	if (BUS_CLAIM_PID(claim) > 0 && BUS_CLAIM_TAG(claim) == (uint32_t)off) {
		pid = BUS_CLAIM_PID(claim);
		if (!claim_owner_gone(r, pid, pos, off, tail_off)) {
			if (!force || ((tail_off & BUS_TAIL_EXCL) &&
				       BUS_OWNER_PID(ld_relaxed(&h->excl_owner)) == pid))
				return 0;
		}
		len = frame_len_checked(r, f, pos);
		if (!len)
			return -BUS_ECORRUPT;
	} else if (BUS_CLAIM_IS_SUM(claim, off)) {
		/* The owner wrote the whole frame and its sum, and was about
		 * to publish it; who it was is no longer said.  Only when
		 * forced (stalled past the timeout, as a live claimant), and
		 * never under a live exclusive producer. */
		if (!force || excl_live(h, tail_off, off))
			return 0;
		len = frame_len_checked(r, f, pos);
		if (!len)
			return -BUS_ECORRUPT;
	} else {
		/* The owner died (or stalls) between its claim and its claim
		 * word.  Its slot says how long the claim is and whose it is;
		 * an exclusive producer has no slot, but its claim is the last
		 * one (nobody claims beside it).  Never under a live exclusive
		 * producer, which may be just about to write it. */
		uint64_t end = 0;
		bool alive = true;
		int found;

		if (excl_live(h, tail_off, off))
			return 0;
		found = intent_of(r, pos, off, tail_pos, tail_off, &end, &alive);
		if (found < 0)
			return 0;
		if (found == 0) {
			/* No intent names it: an exclusive producer's claim
			 * (no slot), whose length the tail tells while it is
			 * the last.  Anything else names no claim (a position
			 * paired with another claim's offset): left alone. */
			if (!excl_claim(r, pos, off) || (tail_off & ~BUS_TAIL_EXCL) != off + 1)
				return 0;
			end = tail_pos;
		}
		if (alive && !force)
			return 0;
		if (end <= pos || end > tail_pos)
			return -BUS_ECORRUPT;
		if (end - pos > room)
			return repair_wrap(r, pos, off, w, end);
		len = (uint32_t)(end - pos);
		if (len < BUS_FRAME_HDR || len % BUS_FRAME_ALIGN)
			return -BUS_ECORRUPT;
		if (!repair_raise(r, end))
			return 0; /* later: an older claim is in flight */
	}
	/* Zero ahead before publishing, as a producer does (step 3); harmless
	 * if the CAS below loses to the producer's own commit. */
	bus_ring_zero_ahead(r, pos + len, off + 1);
	if (!atomic_compare_exchange_strong(&f->commit, &w, BUS_COMMIT(BUS_FRAME_LOST, len, off)))
		return 0; /* its producer committed first */
	atomic_fetch_add_explicit(&h->repaired, 1, memory_order_relaxed);
	return 1;
}
