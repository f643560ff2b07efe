/* consumer.c - reading partitions: zero-copy views validated after the
 * read, lap detection and resync, seeks, wait strategies, the copy API,
 * and replay from the segment logs on disk.  The orderings A1 and A3 are
 * those of ring.c.
 *
 * Replay.  A partition of a persistent topic is read from one of two
 * sources: the ring, or its log on disk (segment.h), which busd writes
 * from the ring in offset order.  The cursor's offset is the one truth;
 * the source only says where the record of that offset is read:
 *   - the disk, when the offset is older than the ring holds (a seek, the
 *     earliest position, or a reader lapped by the producers);
 *   - the ring again when the disk reader reaches the end of what busd has
 *     written: that end is at or after the spilled offset, which the ring
 *     still holds (producers of a persistent topic never overwrite what
 *     the spiller has not written out), so the switch is a seek to the same
 *     offset, with neither gap nor duplicate at the seam.
 * A record read from disk is a view into the partition's reader buffer,
 * valid until the next poll (or seek) on the consumer. */
#include <immintrin.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "segment.h"

/* priv_pos of a view read from disk. */
#define POS_DISK UINT64_MAX

struct bus_cpart {
	struct bus_ring *r;
	uint32_t idx;
	int gslot;             /* gating slot, or -1 */
	uint64_t pos, off;     /* next frame and the offset it must carry */
	uint64_t skip_below;   /* records below this offset are passed over */
	uint64_t lost_pending; /* lost since the last record returned */
	uint64_t lap_mark;     /* next_off() after the last lap counted */
	uint64_t stall_pos;    /* where a claimed frame stays unpublished */
	int64_t stall_since;   /* monotonic ns; 0: no stall seen */
	unsigned stall_polls;
	unsigned empty_polls;
	bool on_disk;                /* reading the log on disk (see the top) */
	bool out_of_range;           /* the log no longer holds off (retention) */
	bool disk_wait;              /* at the log's end, the ring not ready yet */
	bool behind;                 /* the last poll filled its batch: prefetch */
	bool disk_reseek;            /* the disk reader is not at off: seek it */
	bool fenced;                 /* gating, without membarrier: fence to wake */
	uint64_t gpub;               /* gating: the cursor last published */
	struct bus_seg_reader *disk; /* opened on first use */
};

struct bus_consumer {
	struct bus *b;
	struct bus_topic *t;
	enum bus_wait wait;
	uint32_t spin_count;
	uint32_t nparts;
	uint32_t rr;
	unsigned flags;       /* BUS_CONSUMER_* */
	bool persistent;      /* the topic has logs on disk */
	bool claimed_pending; /* a claimed, unpublished frame was seen */
	size_t disk_room;     /* bytes a poll from disk may still return: the
	                         room of bus_consumer_read()'s buffer; SIZE_MAX
	                         for bus_consumer_poll() (poll_disk()) */
	struct bus_consumer_stats stats;
	struct bus_cpart *parts;
};

static inline struct bus_frame *frame_at(const struct bus_ring *r, uint64_t pos)
{
	return (struct bus_frame *)(r->data + (pos & r->mask));
}

/* One read of a frame field that another process may write: a relaxed
 * atomic load is a plain move, but one the compiler may neither repeat nor
 * tear, so that the value checked is the value used. */
#define ld_once(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/* The next offset @cp returns: records below skip_below are passed over. */
static inline uint64_t next_off(const struct bus_cpart *cp)
{
	return cp->off > cp->skip_below ? cp->off : cp->skip_below;
}

/* A consumer that is behind reads frames back to back, and each frame's
 * commit word is a load whose address depends on the frame before: a chain
 * of misses to lines the producer's core wrote, one at a time, which the
 * hardware prefetchers do not run ahead of (frames do not keep a stride).
 * So when the last poll filled its batch, poll_part() prefetches the ring's
 * lines up to PREFETCH_AHEAD bytes past the frame it reads.  Measured with
 * bus_bench tput SIZE, 4 MiB ring, alternating runs (GB/s, mean of 3):
 * 256 B 3.9 -> 7.6, 1 KiB 5.5 -> 11.3, 64 B and 64 KiB unchanged (1.1-1.2,
 * 12.4-12.7).  Only when behind: a consumer that keeps up would pull lines
 * the producer is about to write, and a large frame (ahead counted from its
 * start, not its end) is left to the hardware's streaming prefetch, which
 * handles it better than a burst of a thousand hints (12.7 -> 8.6 GB/s for
 * 64 KiB values when counted from the end). */
#define PREFETCH_AHEAD 4096u

/* I1 of layout.h: a frame at @pos is whole while the horizon @hz is not
 * past its next lap. */
static inline bool whole(const struct bus_ring *r, uint64_t pos, uint64_t hz)
{
	return hz <= pos + r->size;
}

static inline uint64_t horizon(const struct bus_ring *r)
{
	return ld_acquire(&r->hdr->horizon);
}

static void gating_publish(struct bus_cpart *cp)
{
	uint64_t pos;

	if (cp->gslot < 0)
		return;
	/* A consumer reading the disk needs nothing of the ring that is
	 * spilled: it holds producers back no more than the spiller does (the
	 * acquire pairs with busd's release of spill_pos). */
	pos = cp->on_disk ? ld_acquire(&cp->r->hdr->spill_pos) : cp->pos;
	/* R6: everything below pos is released to producers; pairs with the
	 * acquire load in bus_ring_low_water(). */
	st_release(&cp->r->hdr->gating[cp->gslot].pos, pos);
	/* Then, if the cursor moved, wake the producers blocked for the
	 * space it frees, if one announced itself: Dekker's pattern with the
	 * producer's WR1 and re-check (wait.c, "Space"); the store-load
	 * barrier between R6 and this load is the producer's membarrier(),
	 * or the fence when this process could not register (cp->fenced).  A
	 * relaxed load of the horizon's line, which this reader holds (I1):
	 * nothing else per publish while no producer sleeps.  An unchanged
	 * cursor (a poll that found nothing, a reader on disk behind busd)
	 * frees nothing: a producer that announced itself after the last
	 * store saw it in its re-check, and waking it would only make it
	 * announce again, a membarrier and a FUTEX_WAKE per poll of a
	 * consumer that keeps up while another holds the producer back. */
	if (pos != cp->gpub) {
		cp->gpub = pos;
		bus_space_wake(cp->r->hdr, cp->fenced);
	}
}

/* ------------------------------------------------------------- disk */

static int disk_open(struct bus_consumer *c, struct bus_cpart *cp)
{
	char dir[4200];
	int err;

	if (cp->disk)
		return 0;
	err = bus_part_dir(c->b, c->t->name, cp->idx, dir, sizeof(dir));
	if (err)
		return err;
	return bus_seg_reader_open(&cp->disk, dir);
}

/* @n offsets of @cp are lost (lapped, repaired, deleted by retention):
 * reported in the next view's lost_before, and counted. */
static inline void lost(struct bus_consumer *c, struct bus_cpart *cp, uint64_t n)
{
	cp->lost_pending += n;
	c->stats.lost += n;
}

/* @cp, found lapped at offset @from, was moved on (the laps of the stats).
 * Found lapped again below where the last lap counted left it, it is the
 * same lap found again by a cursor moved back to a view that was
 * overwritten (rewind_to()): counted once.  A seek clears the mark. */
static void lapped_at(struct bus_consumer *c, struct bus_cpart *cp, uint64_t from)
{
	uint64_t to = next_off(cp);

	if (from >= cp->lap_mark)
		c->stats.laps++;
	if (to > cp->lap_mark)
		cp->lap_mark = to;
}

/* Offsets from @cp's position up to @to are lost (never to be read):
 * count them for the next view and the stats, and move on to @to. */
static void lost_to(struct bus_consumer *c, struct bus_cpart *cp, uint64_t to)
{
	lost(c, cp, to - cp->off);
	cp->off = to;
}

/* The reader of @cp found no record: if it stands past the consumer's
 * position, at the base of a segment that has no record yet, the offsets
 * in between are a gap (skipped after a reboot: "offset floor" in
 * segment.h), lost as for a gap before a record (poll_disk()). */
static void disk_gap(struct bus_consumer *c, struct bus_cpart *cp)
{
	uint64_t rp = bus_seg_reader_position(cp->disk);

	if (rp > cp->off)
		lost_to(c, cp, rp);
}

/* The log of @cp's partition holds no record at or after @off (it ends
 * there or before).  Lists the segments: for rare checks only. */
static bool log_ends_by(struct bus_consumer *c, struct bus_cpart *cp, uint64_t off)
{
	char dir[4200];
	struct bus_seg_bounds sb;

	if (bus_part_dir(c->b, c->t->name, cp->idx, dir, sizeof(dir)) ||
	    bus_seg_bounds(dir, &sb))
		return false;
	return sb.next <= off;
}

/* @cp reads from disk, where its reader stands: at offset @off. */
static void disk_at(struct bus_cpart *cp, uint64_t off)
{
	cp->on_disk = true;
	cp->out_of_range = false;
	cp->disk_reseek = false;
	cp->off = off;
	cp->skip_below = 0;
	cp->stall_since = 0;
	gating_publish(cp);
}

/* Read partition @cp from disk, at offset @off.  Returns 0, -ERANGE (the
 * log does not hold it), -ENOENT (no log), -errno. */
static int disk_seek(struct bus_consumer *c, struct bus_cpart *cp, uint64_t off)
{
	int err = disk_open(c, cp);

	if (err)
		return err;
	err = bus_seg_seek_offset(cp->disk, off);
	if (err)
		return err;
	disk_at(cp, off);
	return 0;
}

/* The earliest offset of the partition's log on disk, or -ENOENT. */
static int disk_earliest(struct bus_consumer *c, struct bus_cpart *cp, uint64_t *first)
{
	char dir[4200];
	int err = bus_part_dir(c->b, c->t->name, cp->idx, dir, sizeof(dir));

	return err ? err : bus_seg_earliest(dir, first);
}

static int seek_one(struct bus_consumer *c, struct bus_cpart *cp, enum bus_seek whence,
		    int64_t value);

/* The partition's offset is no longer held anywhere (retention deleted
 * it): reset by the consumer's policy, counting what is skipped, or report
 * -ERANGE until the caller seeks.  Returns 0 (reset), -ERANGE, or the
 * seek's error (the cursor then stays). */
static int out_of_range(struct bus_consumer *c, struct bus_cpart *cp)
{
	uint64_t from = next_off(cp), pending = cp->lost_pending, to;
	int err;

	if (!(c->flags & (BUS_CONSUMER_RESET_EARLIEST | BUS_CONSUMER_RESET_LATEST))) {
		cp->out_of_range = true;
		return -ERANGE;
	}
	err = seek_one(c, cp,
		       c->flags & BUS_CONSUMER_RESET_EARLIEST ? BUS_SEEK_EARLIEST : BUS_SEEK_LATEST, 0);
	/* A seek starts afresh (lost_pending 0); not this one: what was lost
	 * before (LOST frames not yet reported) still is. */
	cp->lost_pending = pending;
	if (err)
		return err;
	/* Where the seek left the cursor: in the ring, a seek stands at a
	 * checkpoint below its target and passes over the records up to it
	 * (skip_below) uncounted: they are skipped all the same. */
	to = next_off(cp);
	if (to > from)
		lost(c, cp, to - from);
	return 0;
}

static int ring_resync(struct bus_consumer *c, struct bus_cpart *cp);

/* Move a lapped cursor to the earliest record still held (on disk for a
 * persistent topic, else in the ring), counting what it lost.  Returns 1
 * (moved), 0 (not now: try again later; or out of range, cp->out_of_range
 * set), or an error: -BUS_ECORRUPT (ring_resync()), or the -errno of a log
 * that exists and cannot be read (-EMFILE, -EACCES, -EIO, ...): the cursor
 * then stays where it is, and the next poll tries again.  Only a log that
 * is not there yet (no directory, no segment: no busd has spilled this
 * partition) sends a persistent topic's reader to the ring, as an
 * ephemeral one's; any other failure taken so would report records that
 * are on disk as lost, or skip them.
 * Out of line: inlined into poll_part(), it cost the hot loop of a 64 B
 * stream 5% (alternating runs of bus_bench tput 64). */
static __attribute__((noinline, cold)) int resync(struct bus_consumer *c, struct bus_cpart *cp)
{
	if (c->persistent) {
		/* What the ring lost is on disk: read it from there. */
		uint64_t from = next_off(cp);
		uint64_t first;
		int err = disk_seek(c, cp, from);

		if (err == 0) {
			lapped_at(c, cp, from);
			return 1;
		}
		if (err == -ERANGE) {
			/* Not in the log: deleted by retention, or no segment
			 * yet (-ENOENT), or the log ends before it (cut by
			 * hand: the ring says what is lost). */
			err = disk_earliest(c, cp, &first);
			if (err == 0 && first > from) {
				cp->off = from;
				err = out_of_range(c, cp);
				if (err == 0 || err == -ERANGE)
					lapped_at(c, cp, from);
				return err == 0 ? 1 : err == -ERANGE || err == -EAGAIN ? 0 : err;
			}
		}
		if (err != 0 && err != -ENOENT)
			return err;
		/* No log yet (no busd has spilled this partition): as an
		 * ephemeral topic. */
	}
	return ring_resync(c, cp);
}

/* Move a lapped cursor to the earliest whole frame of the ring.  Returns
 * 1, 0 when no checkpoint could be read whole (producers moved on too
 * fast: try again), or -BUS_ECORRUPT when the ring header is (a horizon or
 * a checkpoint past the tail, bus_ring_earliest()) or the earliest
 * checkpoint is not ahead of the cursor.  A lapped cursor is behind the
 * horizon's lap (pos + size < horizon) and the earliest checkpoint is not
 * (pos >= horizon - size), so it lies further on, with an offset at least
 * the cursor's (equal only across padding): one that is not was written by
 * no producer, and going "back" to it again and again would never end.
 * The lost count is bounded by the tail: bus_ring_earliest() takes no
 * checkpoint past it, by position or by offset. */
static int ring_resync(struct bus_consumer *c, struct bus_cpart *cp)
{
	uint64_t pos, off;

	for (int tries = 0; tries < 100; tries++) {
		int err = bus_ring_earliest(cp->r, &pos, &off);
		uint64_t from = next_off(cp);

		if (err == -EAGAIN)
			continue;
		if (err)
			return err;
		if (off < cp->off || (off == cp->off && pos <= cp->pos))
			return -BUS_ECORRUPT;
		if (off > from)
			lost(c, cp, off - from);
		cp->pos = pos;
		cp->off = off;
		lapped_at(c, cp, from);
		gating_publish(cp);
		return 1;
	}
	return 0;
}

/* A claimed frame stays unpublished at cp->pos: repair it when its owner
 * is dead (checked after 1 ms) or it stalled past the timeout. */
static void stalled(struct bus_consumer *c, struct bus_cpart *cp)
{
	int64_t now;

	c->claimed_pending = true;
	if (cp->stall_since && cp->stall_pos == cp->pos && (++cp->stall_polls & 63))
		return;
	now = bus_mono_ns();
	if (!cp->stall_since || cp->stall_pos != cp->pos) {
		cp->stall_since = now;
		cp->stall_pos = cp->pos;
		cp->stall_polls = 0;
		return;
	}
	if (now - cp->stall_since >= 1000000)
		(void)bus_ring_repair(cp->r, cp->pos, cp->off,
				      (uint64_t)(now - cp->stall_since) >= c->b->stuck_claim_ns);
}

static int seek_offset(struct bus_cpart *cp, uint64_t target);

/* Where a reader of @r's ring starts to reach offset @target when the
 * ring's checkpoints do not reach back to it: the spill cursor.  The
 * checkpoints are sparse, and when busd is a whole ring behind (stalled,
 * slow, or stopped) the earliest one may lie a few records past the
 * cursor, while the ring still holds those records whole (producers of a
 * persistent topic stay a ring behind the cursor) and the log does not
 * have them yet.  The cursor is an exact frame boundary.  Returns 0 with
 * {*pos, *off} = the cursor (at or before @target: the records up to
 * @target are passed over), -EAGAIN when the cursor is past @target (busd
 * wrote it out meanwhile: the log has it), or -ERANGE when the cursor is
 * no start for @target: @target past the tail, or a cursor that no
 * spiller writes (unaligned, past the tail, or not whole).  The
 * acquires pair with busd's releases RS1/RS2 (daemon/spill.c) and the
 * producers' of the tail; a frame at the cursor overwritten after this
 * check (busd moved on, then producers) is found lapped by the poll, as
 * any other, and read from the log. */
static int spill_start(const struct bus_ring *r, uint64_t target, uint64_t *pos, uint64_t *off)
{
	uint64_t sp, so;

	bus_spill_read(r->hdr, &sp, &so);
	if (so > target)
		return -EAGAIN;
	if (sp % BUS_FRAME_ALIGN || sp > ld_acquire(&r->hdr->tail.pos) ||
	    target > (ld_acquire(&r->hdr->tail.off) & ~BUS_TAIL_EXCL) ||
	    !whole(r, sp, horizon(r)))
		return -ERANGE;
	*pos = sp;
	*off = so;
	return 0;
}

/* seek_offset() for a target the ring's checkpoints do not reach back to
 * (-ERANGE from it): from the spill cursor, spill_start().  Returns as
 * spill_start(); on failure @cp is unchanged. */
static int seek_spill(struct bus_cpart *cp, uint64_t target)
{
	uint64_t pos, off;
	int err = spill_start(cp->r, target, &pos, &off);

	if (err)
		return err;
	cp->pos = pos;
	cp->off = off;
	cp->skip_below = target;
	cp->lost_pending = 0;
	gating_publish(cp);
	return 0;
}

/* Back from the disk onto the ring at the same offset.  Returns 0, or
 * -ERANGE when the ring does not hold it either (then it was lost). */
static int disk_leave(struct bus_consumer *c, struct bus_cpart *cp)
{
	struct bus_ring *r = cp->r;
	uint64_t target = cp->off, lost = cp->lost_pending;
	int err;

	cp->on_disk = false;
	err = seek_offset(cp, target);
	if (err == -ERANGE) {
		/* At or before the target (the log ends at or after the
		 * spill cursor), the ring is read from the cursor; past it,
		 * busd has written more meanwhile: read on from the log. */
		err = seek_spill(cp, target);
		if (err == -EAGAIN) {
			cp->on_disk = true;
			return err;
		}
	}
	cp->lost_pending = lost; /* LOST frames read from disk, not reported yet */
	if (err == 0)
		return 0;
	cp->on_disk = true;
	if (err != -ERANGE)
		return err;
	/* Not in the ring either: the log ends before what the ring holds,
	 * which only a log lost or cut by hand (or a power loss with fsync
	 * "never") explains.  Go on from the ring, counting the gap. */
	{
		uint64_t pos, off;
		int e = bus_ring_earliest(r, &pos, &off);
		if (e == -BUS_ECORRUPT)
			return e;
		if (e == 0 && off > target) {
			cp->on_disk = false;
			int rs = ring_resync(c, cp);
			return rs > 0 ? 0 : rs < 0 ? rs : -EAGAIN;
		}
	}
	/* The ring is behind the log: only a ring re-created without its
	 * log explains it.  Wait on the disk. */
	return -EAGAIN;
}

/* Read up to @max views of partition @cp from its log on disk. */
static int poll_disk(struct bus_consumer *c, struct bus_cpart *cp, struct bus_view *v,
		     unsigned max)
{
	struct bus_seg_record rec;
	unsigned n = 0;
	int rc;

	if (BUS_UNLIKELY(cp->disk_reseek)) {
		/* rewind_to() could not move the reader back to the cursor:
		 * until it can, nothing is read (the records are on disk). */
		rc = disk_seek(c, cp, cp->off);
		if (rc == -ERANGE) {
			/* Retention deleted it meanwhile. */
			rc = out_of_range(c, cp);
			if (rc == 0 && !cp->on_disk)
				return 0; /* reset onto the ring: the caller reads it */
		}
		if (rc)
			return rc == -EAGAIN ? 0 : rc; /* see below */
	}
	gating_publish(cp);
	while (n < max) {
		/* The first read may refill the reader's buffer (the views of
		 * the previous poll expire); the others only take what it
		 * holds, so this poll's views stay valid together. */
		rc = n == 0 ? bus_seg_next(cp->disk, &rec) : bus_seg_next_buffered(cp->disk, &rec);
		if (rc == 0) {
			uint64_t sp, so;
			if (n)
				break;
			disk_gap(c, cp);
			/* The end of what busd has written, or a bad frame at the
			 * end of the active segment (being written, or torn).
			 * Once busd has published a spill offset past the
			 * position, the log holds that record whole (it publishes
			 * after the write-out; the CAS of the read orders it
			 * before the re-read): still no record is corruption. */
			bus_spill_read(cp->r->hdr, &sp, &so);
			if (so > cp->off && sp == 0 && log_ends_by(c, cp, cp->off)) {
				/* A ring that never spilled starts at so, above
				 * the end of the log: made at the floor after a
				 * reboot, before busd skipped the log to it.  The
				 * offsets in between are in neither: lost.  (The
				 * log's end is checked: a reader may also return
				 * nothing for a moment while retention moves it.) */
				lost_to(c, cp, so);
			}
			if (so > cp->off) {
				/* Listed again: the record may be in a segment
				 * after a gap, which a reader finds only so. */
				bus_seg_reader_relist(cp->disk);
				rc = bus_seg_next(cp->disk, &rec);
				if (rc > 0)
					goto got;
				if (rc < 0)
					continue; /* the error, handled below at the next turn */
				/* The re-read may have crossed into the segment
				 * busd's skip has just made. */
				disk_gap(c, cp);
				if (so > cp->off)
					return -BUS_ECORRUPT;
			}
			/* The ring has it. */
			rc = disk_leave(c, cp);
			cp->disk_wait = rc == -EAGAIN;
			if (rc)
				return rc == -EAGAIN ? 0 : rc;
			return 0; /* the caller reads the ring next */
		}
		if (rc < 0) {
			if (rc == -ERANGE) {
				/* Retention deleted what follows the position. */
				rc = out_of_range(c, cp);
				if (rc == 0 && cp->on_disk && !n)
					continue;
				/* -EAGAIN: the reset's seek met producers moving
				 * too fast (seek_ring()).  Nothing moved: the next
				 * poll meets the deletion again and retries; not
				 * an error for the caller (poll does not return
				 * -EAGAIN). */
				if (rc == -EAGAIN)
					return (int)n;
			}
			return n ? (int)n : rc;
		}
got:
		cp->disk_wait = false;
		if (BUS_UNLIKELY(rec.offset != cp->off)) {
			/* A gap between segments (a power loss with fsync
			 * "never"): the offsets tell how many were lost. */
			if (rec.offset < cp->off)
				return n ? (int)n : -BUS_ECORRUPT;
			lost_to(c, cp, rec.offset);
		}
		cp->off++;
		if (rec.type == BUS_FRAME_LOST) {
			lost(c, cp, 1);
			continue;
		}
		v[n].partition = cp->idx;
		v[n].header_count = rec.header_count;
		v[n].offset = rec.offset;
		v[n].timestamp = rec.timestamp;
		v[n].key = rec.key;
		v[n].headers = rec.headers;
		v[n].value = rec.value;
		v[n].key_len = rec.key_len;
		v[n].headers_len = rec.headers_len;
		v[n].value_len = rec.value_len;
		v[n].lost_before = cp->lost_pending;
		v[n].priv_pos = POS_DISK;
		cp->lost_pending = 0;
		n++;
		/* A record that bus_consumer_read()'s buffer cannot hold ends
		 * the batch: the read moves back to it (bus_seg_rewind()), and
		 * the records after it are not read and CRC'd for nothing.
		 * With room for one record of 100 B, a read CRC'd 64:
		 * spill_bench read, 0.6M -> 10.4M records/s. */
		if (c->disk_room != SIZE_MAX) { /* SIZE_MAX: a poll, no limit */
			size_t need = (size_t)rec.key_len + rec.headers_len + rec.value_len;
			if (BUS_UNLIKELY(need > c->disk_room)) {
				c->disk_room = 0;
				break;
			}
			c->disk_room -= need;
		}
	}
	return (int)n;
}

/* Move @cp back to view @v (of @cp), for the next poll to read it again;
 * @later views of @cp follow @v in its batch.  stats.lost counts each lost
 * offset once: every offset from v->offset + 1 up to the cursor was either
 * returned (in those @later views) or counted lost (lost(): each move of the
 * cursor, next_off(), past an offset not returned counts it), and the lost
 * ones are uncounted here, to be counted again when found again.  A lap
 * counted meanwhile stays counted (lap_mark). */
static void rewind_to(struct bus_consumer *c, struct bus_cpart *cp, const struct bus_view *v,
		      unsigned later)
{
	uint64_t now = next_off(cp), seen = v->offset + 1 + later;

	if (now > seen && c->stats.lost >= now - seen)
		c->stats.lost -= now - seen;
	/* A reset (out_of_range()) after @v may have set skip_below past it:
	 * from @v on, the offsets are found and counted again. */
	cp->skip_below = 0;
	if (v->priv_pos == POS_DISK) {
		/* Read from disk: read it there again.  The views of a poll
		 * of @cp are records its reader returned since its last
		 * bus_seg_next() (poll_disk()), still in its window: moving
		 * back to one is a walk over their headers
		 * (bus_seg_rewind()), not a seek (a listing, an open, an
		 * index search: with a buffer of a few records, a seek per
		 * bus_consumer_read() made replay 100 times slower).  Else
		 * (views of an earlier poll) a seek.  A seek that fails
		 * (-EMFILE, -ENOMEM, -ERANGE: retention deleted it...) leaves
		 * the reader past the cursor: the next poll seeks again, and
		 * reports the failure, or the loss, rather than take what the
		 * reader then returns for a gap. */
		cp->off = v->offset;
		if (cp->disk && bus_seg_rewind(cp->disk, v->offset) == 0)
			disk_at(cp, v->offset);
		else if (disk_seek(c, cp, v->offset) != 0)
			cp->disk_reseek = true;
	} else {
		cp->on_disk = false;
		cp->disk_reseek = false;
		cp->pos = v->priv_pos;
		cp->off = v->offset;
	}
	cp->lost_pending = v->lost_before;
}

/* Read up to @max views from one partition.  Returns the count, or
 * -BUS_ECORRUPT, -ERANGE (out of range) or the -errno of a log (resync()):
 * the cursor then stays. */
static int poll_part(struct bus_consumer *c, struct bus_cpart *cp, struct bus_view *v, unsigned max)
{
	struct bus_ring *r = cp->r;
	unsigned n = 0;
	uint64_t hz, pf;
	bool resynced = false;

again:
	if (BUS_UNLIKELY(cp->out_of_range))
		return -ERANGE;
	if (BUS_UNLIKELY(cp->on_disk)) {
		int got = poll_disk(c, cp, v, max);
		if (got != 0 || cp->on_disk)
			return got;
		/* Back on the ring: read on from there. */
	}
	gating_publish(cp);
	pf = (cp->pos | (BUS_CACHELINE - 1)) + 1;
	while (n < max) {
		struct bus_frame *f = frame_at(r, cp->pos);
		uint64_t w = ld_acquire(&f->commit); /* A3: pairs with R3 */
		uint32_t len, type, k, hl, vl;

		if (w == 0 || BUS_COMMIT_TAG(w) != (uint32_t)cp->off) {
			if (!whole(r, cp->pos, horizon(r)))
				goto lapped;
			/* Nothing yet.  A claim sitting here unpublished shows in
			 * the frame's claim word, on the line we poll anyway.  The
			 * tail (the producer's hottest line: reading it would put
			 * a cache-line transfer before its next commit) is read
			 * rarely, for a claimant that died before its claim word. */
			uint64_t cl = ld_acquire(&f->claim);
			/* A claim word always holds its owner's pid: a zeroed
			 * one (a new ring) is no claim, whatever its tag.  A
			 * sum is a frame about to be published (layout.h). */
			if ((BUS_CLAIM_PID(cl) > 0 && BUS_CLAIM_TAG(cl) == (uint32_t)cp->off) ||
			    BUS_CLAIM_IS_SUM(cl, cp->off) ||
			    ((++cp->empty_polls & 0xffff) == 0 &&
			     ld_acquire(&r->hdr->tail.pos) > cp->pos))
				stalled(c, cp);
			break;
		}
		cp->stall_since = 0;
		len = BUS_COMMIT_LEN(w);
		type = BUS_COMMIT_TYPE(w);
		if (cp->behind) {
			/* Lines up to PREFETCH_AHEAD past this frame's start
			 * (see PREFETCH_AHEAD; a hint: never faults, masked into
			 * the ring, read again and checked like any other). */
			bus_ring_prefetch(r, &pf, cp->pos, PREFETCH_AHEAD);
		}
		if (BUS_UNLIKELY(len < BUS_FRAME_ALIGN || len % BUS_FRAME_ALIGN ||
				 len > r->size - (cp->pos & r->mask) ||
				 (type != BUS_FRAME_PAD && len < BUS_FRAME_HDR)))
			goto bad;
		if (type == BUS_FRAME_PAD) {
			/* Padding fills a lap to its end and never starts one
			 * (producer.c, reserve()): any other is corrupt, and
			 * padding leading back to padding would never end. */
			if (BUS_UNLIKELY((cp->pos & r->mask) == 0 ||
					 len != r->size - (cp->pos & r->mask)))
				goto bad;
			cp->pos += len;
			continue;
		}
		if (type == BUS_FRAME_LOST) {
			if (cp->off >= cp->skip_below)
				lost(c, cp, 1);
			cp->pos += len;
			cp->off++;
			continue;
		}
		if (BUS_UNLIKELY(type != BUS_FRAME_DATA))
			goto bad;
		/* One load each (relaxed: plain moves), so that the sizes
		 * checked are the sizes used: plain reads of memory that
		 * another process may write can be made twice by the compiler
		 * (gcc -O2 loaded key_len once for the check and again for the
		 * view).  The 64-bit offset, on the line of the sizes or of the
		 * commit word (no new miss), says what the 32-bit tag cannot:
		 * that this is the record of offset cp->off and not one 2^32
		 * offsets away (a cursor come by a checkpoint of the wrong
		 * offset). */
		k = ld_once(&f->key_len);
		hl = ld_once(&f->headers_len);
		vl = ld_once(&f->value_len);
		if (BUS_UNLIKELY((uint64_t)BUS_FRAME_HDR + k + hl + vl > len || f->offset != cp->off))
			goto bad;
		if (BUS_UNLIKELY(cp->off < cp->skip_below)) {
			cp->pos += len;
			cp->off++;
			continue;
		}
		v[n].partition = cp->idx;
		v[n].header_count = f->header_count;
		v[n].offset = cp->off;
		v[n].timestamp = f->timestamp;
		v[n].key = f + 1;
		v[n].headers = (const uint8_t *)(f + 1) + k;
		v[n].value = (const uint8_t *)(f + 1) + k + hl;
		v[n].key_len = k;
		v[n].headers_len = hl;
		v[n].value_len = vl;
		v[n].lost_before = cp->lost_pending;
		v[n].priv_pos = cp->pos;
		cp->lost_pending = 0;
		cp->pos += len;
		cp->off++;
		n++;
		continue;
bad:
		/* A frame that does not parse is either being overwritten (we
		 * are lapped) or corrupt.  A1: the reads of the frame before
		 * the horizon load, so that a frame read torn is found lapped
		 * and not called corrupt. */
		atomic_thread_fence(memory_order_acquire);
		if (whole(r, cp->pos, ld_relaxed(&r->hdr->horizon))) {
			if (!n)
				return -BUS_ECORRUPT;
			break; /* the views so far, checked below; the error next poll */
		}
lapped:
		/* The views read so far are checked below (after the loop)
		 * like any others.  A resync that cannot move now (0) is
		 * tried again by the next poll. */
		{
			int rs = resync(c, cp);
			if (rs > 0)
				goto moved;
			if (!n && cp->out_of_range)
				return -ERANGE;
			if (!n && rs < 0)
				return rs;
			break;
		}
moved:
		if (BUS_UNLIKELY(cp->on_disk))
			break; /* the views so far are checked below; the disk next poll */
	}
	if (n) {
		/* A1: the reads above before the horizon load (seqlock check). */
		atomic_thread_fence(memory_order_acquire);
		hz = ld_relaxed(&r->hdr->horizon);
		for (unsigned i = 0; i < n; i++) {
			if (!whole(r, v[i].priv_pos, hz)) {
				/* Overwritten while read: re-read from there; the
				 * next poll finds itself lapped and reports it. */
				rewind_to(c, cp, &v[i], n - i - 1);
				n = i;
				break;
			}
		}
		/* The first frame itself is behind the horizon: producers may
		 * write over it, though its commit word still matches (they
		 * have not yet, and may stay idle for good).  Re-reading would
		 * find it the same again, for ever: it is lapped, so resync
		 * now (once per call: the next poll goes on from there). */
		if (n == 0 && !resynced) {
			int rs;
			resynced = true;
			rs = resync(c, cp);
			if (rs > 0)
				goto again;
			if (rs < 0)
				return rs;
		}
	}
	cp->behind = max > 1 && n == max;
	return (int)n;
}

/* -BUS_ECORRUPT when the control region or the ring of one of @c's
 * partitions was truncated under this process's mapping (internal.h,
 * truncation), else 0.  After bus_mapguard_hits() returned non-zero. */
static __attribute__((noinline, cold)) int consumer_lost(struct bus_consumer *c)
{
	int err = bus_ctl_lost_slow(c->b);

	for (uint32_t i = 0; !err && i < c->nparts; i++)
		err = bus_ring_lost_slow(c->t, c->parts[i].r);
	return err;
}

/* Touch the last page of each ring of @c: an idle consumer's polls touch
 * a line or two, which a truncation may leave, and would wait for ever
 * on a ring whose producers can no longer publish. */
static __attribute__((noinline, cold)) void consumer_probe(const struct bus_consumer *c)
{
	for (uint32_t i = 0; i < c->nparts; i++)
		bus_ring_probe(c->parts[i].r);
}

static bool any_ready(void *arg)
{
	struct bus_consumer *c = arg;

	/* Truncated: the caller's loop says so rather than sleep. */
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0) && consumer_lost(c))
		return true;
	/* Deleted: the same.  After WR1 and its barrier, so that a delete
	 * whose wake this sleep will not see (its bump read by WA1, or made
	 * before WA1) is seen here: the deleter stores DELETED before its
	 * bump (topic.c, wake_stale()). */
	if (BUS_UNLIKELY(bus_topic_check(c->t) != 0))
		return true;
	c->claimed_pending = false;
	for (uint32_t i = 0; i < c->nparts; i++) {
		struct bus_cpart *cp = &c->parts[i];
		uint64_t w, tail;
		if (cp->out_of_range || (cp->on_disk && !cp->disk_wait))
			return true;
		if (cp->on_disk) {
			/* Waiting for the ring to catch up with the log: nap. */
			c->claimed_pending = true;
			continue;
		}
		w = ld_acquire(&frame_at(cp->r, cp->pos)->commit);
		tail = ld_acquire(&cp->r->hdr->tail.pos);
		if ((w && BUS_COMMIT_TAG(w) == (uint32_t)cp->off) || !whole(cp->r, cp->pos, horizon(cp->r)))
			return true;
		if (tail > cp->pos)
			c->claimed_pending = true;
	}
	return false;
}

/* bus_consumer_poll() but for the final check of a truncation (its
 * callers make it).  Inlined into both, as it was into poll before: no
 * call more on the path of a record. */
static inline __attribute__((always_inline)) int
poll_wait(struct bus_consumer *c, struct bus_view *views, unsigned max, int64_t timeout_ns)
{
	int64_t deadline = -1;
	uint32_t spins = 0;
	int err;

	if (BUS_UNLIKELY((err = bus_topic_check(c->t)) != 0))
		return err;
	for (;;) {
		unsigned n = 0;

		if (BUS_LIKELY(c->nparts == 1)) {
			/* One partition (a latency-critical reader's usual case):
			 * no turns to take. */
			int got = poll_part(c, &c->parts[0], views, max);
			if (BUS_UNLIKELY(got < 0))
				return got;
			n = (unsigned)got;
		} else {
			/* Partitions in turn, starting one further each call. */
			for (uint32_t i = 0, j = c->rr; i < c->nparts && n < max; i++) {
				int got = poll_part(c, &c->parts[j], views + n, max - n);
				if (BUS_UNLIKELY(got < 0)) {
					/* The records so far now; the error at the
					 * next poll (or a later one: it is found
					 * again, the partition's cursor stays). */
					if (!n)
						return got;
					c->stats.records += n;
					c->rr = j; /* first in turn next time */
					return (int)n;
				}
				n += (unsigned)got;
				if (++j == c->nparts)
					j = 0;
			}
			if (++c->rr >= c->nparts)
				c->rr = 0;
		}
		if (n || timeout_ns == 0) {
			c->stats.records += n;
			return (int)n;
		}
		/* Idle.  A truncated ring or control region reads "nothing
		 * yet" for ever: each turn looks (one load while nothing was
		 * ever truncated), and the probes below make a truncation
		 * fault here however little of the ring the polls touch. */
		if (BUS_UNLIKELY(bus_mapguard_hits() != 0) && (err = consumer_lost(c)) != 0)
			return err;
		if (deadline < 0 && timeout_ns > 0)
			deadline = bus_deadline_ns(timeout_ns);
		if (deadline >= 0 && bus_mono_ns() >= deadline)
			return 0;
		if (++spins < c->spin_count || c->wait == BUS_WAIT_SPIN) {
			if (BUS_UNLIKELY((spins & 1023) == 0))
				consumer_probe(c);
			_mm_pause();
			continue;
		}
		consumer_probe(c);
		if (bus_topic_check(c->t))
			return -BUS_ESTALE;
		if (c->wait == BUS_WAIT_YIELD) {
			sched_yield();
		} else {
			int64_t until = deadline;
			/* A claimed frame may need repair: nap, do not sleep. */
			if (c->claimed_pending) {
				int64_t soon = bus_mono_ns() + 1000000;
				until = until < 0 || soon < until ? soon : until;
			}
			bus_wait_sleep(c->t->ts, any_ready, c, until);
		}
	}
}

/* The end of bus_consumer_poll(): @rc, unless a truncation was read. */
static inline int poll_end(struct bus_consumer *c, int rc)
{
	/* The batch's check, after the last read of the ring (the seqlock
	 * check of poll_part(), behind its acquire fence A1) and of the
	 * control region.  INVARIANT: no view is returned whose bytes were
	 * read from zeros that replaced a truncated ring (mapguard.h).  A
	 * load that read them came after the handler's increment of the
	 * count of hits, in this thread or made visible to it (mapguard.c,
	 * ORDERING), and A1 keeps this load after those loads: it returns
	 * non-zero, and the rings are looked at.  Bytes the caller reads
	 * later are bus_consumer_check()'s to vouch for.  Also turns the
	 * errors that zeros cause (a "stale" topic, a corrupt frame) into
	 * the truncation's -BUS_ECORRUPT.  Cost: one load of a line nobody
	 * writes, a branch never taken. */
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0)) {
		int lost = consumer_lost(c);
		if (lost)
			return lost;
	}
	return rc;
}

int bus_consumer_poll(struct bus_consumer *c, struct bus_view *views, unsigned max,
		      int64_t timeout_ns)
{
	if (BUS_UNLIKELY(!c || !views || !max))
		return -EINVAL;
	return poll_end(c, poll_wait(c, views, max, timeout_ns));
}

/* Move every partition that has a view at or after @from back to its first
 * such view, so that those records are read again. */
static void rewind_from(struct bus_consumer *c, const struct bus_view *v, unsigned n, unsigned from)
{
	bool done[BUS_PARTITIONS_MAX] = { false };

	for (unsigned i = from; i < n; i++) {
		uint32_t p = v[i].partition;
		unsigned later = 0;

		if (p >= c->t->cfg.partitions || done[p])
			continue;
		done[p] = true;
		for (unsigned k = i + 1; k < n; k++)
			later += v[k].partition == p;
		for (uint32_t j = 0; j < c->nparts; j++)
			if (c->parts[j].idx == p)
				rewind_to(c, &c->parts[j], &v[i], later);
	}
	c->stats.records -= n - from;
}

int bus_consumer_check(struct bus_consumer *c, const struct bus_view *views, unsigned n)
{
	if (!c || (!views && n))
		return -EINVAL;
	/* A1 again: the caller's reads of the views before the horizon loads. */
	atomic_thread_fence(memory_order_acquire);
	for (unsigned i = 0; i < n; i++) {
		const struct bus_view *v = &views[i];
		struct bus_ring *r;

		if (v->partition >= c->t->cfg.partitions)
			return -EINVAL;
		if (v->priv_pos == POS_DISK)
			continue; /* in the reader's buffer: nobody overwrites it */
		r = &c->t->rings[v->partition];
		if (!whole(r, v->priv_pos, ld_relaxed(&r->hdr->horizon))) {
			rewind_from(c, views, n, i);
			return (int)i;
		}
	}
	/* As the batch's check in bus_consumer_poll(): the caller's reads of
	 * the views are before A1 above, this load after it. */
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0)) {
		int lost = consumer_lost(c);
		if (lost)
			return lost;
	}
	return (int)n;
}

int bus_consumer_read(struct bus_consumer *c, struct bus_msg *msgs, unsigned max, void *buf,
		      size_t buf_len, int64_t timeout_ns)
{
	static uint8_t none; /* where a read without a buffer (NULL, 0) points */
	struct bus_view v[64];
	uint8_t *dst = buf ? buf : &none;
	size_t used;
	unsigned n, copied;
	int got, ok;

	if (!c || !msgs || !max || (!buf && buf_len))
		return -EINVAL;
	if (max > 64)
		max = 64;
again:
	used = 0;
	copied = 0;
	/* Records: bus_consumer_check() below makes the truncation's check,
	 * after the copies (one per call, as for poll). */
	c->disk_room = buf_len; /* poll_disk() */
	got = poll_wait(c, v, max, timeout_ns);
	c->disk_room = SIZE_MAX;
	if (got <= 0)
		return poll_end(c, got);
	n = (unsigned)got;
	for (; copied < n; copied++) {
		size_t need = (size_t)v[copied].key_len + v[copied].headers_len + v[copied].value_len;
		struct bus_msg *m = &msgs[copied];
		if (need > buf_len - used) {
			if (copied == 0) {
				rewind_from(c, v, n, 0);
				msgs[0].value_len = (uint32_t)need;
				return poll_end(c, -EMSGSIZE);
			}
			break;
		}
		m->partition = v[copied].partition;
		m->key_len = v[copied].key_len;
		m->value_len = v[copied].value_len;
		m->headers_len = v[copied].headers_len;
		m->header_count = v[copied].header_count;
		m->offset = v[copied].offset;
		m->timestamp = v[copied].timestamp;
		m->lost_before = v[copied].lost_before;
		m->key = dst + used;
		memcpy(m->key, v[copied].key, m->key_len);
		m->headers = dst + used + m->key_len;
		memcpy(m->headers, v[copied].headers, m->headers_len);
		m->value = dst + used + m->key_len + m->headers_len;
		memcpy(m->value, v[copied].value, m->value_len);
		used += need;
	}
	if (copied < n)
		rewind_from(c, v, n, copied);
	ok = bus_consumer_check(c, v, copied);
	if (ok == 0 && timeout_ns != 0) {
		/* Every record copied was overwritten during the copy (a
		 * reader lapped on an overwrite topic): the cursor is back on
		 * the first, which the next poll finds lost and counts.  0
		 * would say "nothing came in time", which is not so: read
		 * again, waiting no longer than asked (after a lap the records
		 * are there already: a wait of 0 finds them). */
		if (timeout_ns > 0)
			timeout_ns = 0;
		goto again;
	}
	return ok;
}

int bus_view_header(const struct bus_view *v, uint32_t i, struct bus_header *h)
{
	const uint8_t *p, *end;

	if (!v || !h || i >= v->header_count)
		return -EINVAL;
	p = v->headers;
	end = p + v->headers_len;
	for (uint32_t j = 0;; j++) {
		uint16_t nl;
		uint32_t vl;
		if (end - p < 6)
			return -BUS_ECORRUPT;
		memcpy(&nl, p, 2);
		memcpy(&vl, p + 2, 4);
		if ((uint64_t)(end - p - 6) < (uint64_t)nl + vl)
			return -BUS_ECORRUPT;
		if (j == i) {
			h->name = (const char *)p + 6;
			h->name_len = nl;
			h->value = p + 6 + nl;
			h->value_len = vl;
			return 0;
		}
		p += 6 + (size_t)nl + vl;
	}
}

/* ------------------------------------------------------------- seeking */

/* bus_ring_earliest(), retried while producers race it: 0, -EAGAIN or
 * -BUS_ECORRUPT. */
static int earliest(struct bus_cpart *cp, uint64_t *pos, uint64_t *off)
{
	int err = -EAGAIN;

	for (int tries = 0; tries < 1000 && err == -EAGAIN; tries++)
		err = bus_ring_earliest(cp->r, pos, off);
	return err;
}

/* Position @cp at the checkpoint nearest below @target and pass over the
 * records before it.  -ERANGE when @target is not in the ring. */
static int seek_offset(struct bus_cpart *cp, uint64_t target)
{
	struct bus_ring_hdr *h = cp->r->hdr;
	uint64_t epos, eoff, next, tail, bpos, boff;
	int err = earliest(cp, &epos, &eoff);

	if (err)
		return err;
	next = ld_acquire(&h->tail.off) & ~BUS_TAIL_EXCL;
	tail = ld_acquire(&h->tail.pos);
	if (target < eoff || target > next)
		return -ERANGE;
	bpos = epos;
	boff = eoff;
	/* Checkpoints between the earliest and the tail (one past the tail
	 * was published since, or is corrupt: either way not one to read
	 * from), of an offset between the earliest's and the target. */
	for (uint32_t i = 0; i < BUS_CKPT_N; i++) {
		uint64_t p1 = ld_acquire(&h->ckpt[i].pos);
		uint64_t o = ld_acquire(&h->ckpt[i].off);
		uint64_t p2 = ld_acquire(&h->ckpt[i].pos);
		if (p1 != p2 || p1 == BUS_CKPT_EMPTY || p1 % BUS_FRAME_ALIGN || p1 < epos ||
		    p1 > tail || o > target || o < boff)
			continue;
		bpos = p1;
		boff = o;
	}
	cp->pos = bpos;
	cp->off = boff;
	cp->skip_below = target;
	cp->lost_pending = 0;
	gating_publish(cp);
	return 0;
}

/* Walk committed frames from the earliest to the first record whose
 * timestamp is at or after @ts.  When the earliest checkpoint is past
 * @max_off, the walk starts at the spill cursor instead if that is at or
 * before @max_off (spill_start(): the ring holds the records from there,
 * and the log those before).  Returns 0, 1 when neither starts at or
 * before @max_off (a persistent topic's reader then reads from the log,
 * which holds the records before it: seek_disk()), -EAGAIN or
 * -BUS_ECORRUPT (earliest()).
 *
 * Each frame passed over is checked whole after its timestamp is read (A1
 * then I1): a timestamp read torn, from a frame being overwritten, could
 * otherwise pass over the record sought, which a persistent topic's log
 * still holds.  The walk then starts again from the new earliest. */
static int seek_time(struct bus_cpart *cp, int64_t ts, uint64_t max_off)
{
	for (int tries = 0; tries < 100; tries++) {
		struct bus_ring *r = cp->r;
		uint64_t pos, off;
		int err = earliest(cp, &pos, &off);

		if (err)
			return err;
		if (off > max_off && spill_start(r, max_off, &pos, &off) != 0)
			return 1;
		for (;;) {
			struct bus_frame *f = frame_at(r, pos);
			uint64_t w = ld_acquire(&f->commit);
			uint32_t len = BUS_COMMIT_LEN(w), type = BUS_COMMIT_TYPE(w);
			int64_t fts;

			if (w == 0 || BUS_COMMIT_TAG(w) != (uint32_t)off || len < BUS_FRAME_ALIGN ||
			    len % BUS_FRAME_ALIGN || len > r->size - (pos & r->mask))
				break; /* the end, or lapped (checked below) */
			if (type == BUS_FRAME_PAD) {
				if ((pos & r->mask) == 0 || len != r->size - (pos & r->mask))
					break; /* corrupt: the next poll reports it */
				pos += len;
				continue;
			}
			fts = ld_once(&f->timestamp);
			if (type == BUS_FRAME_DATA && fts >= ts)
				break;
			/* A1: the timestamp before the horizon load. */
			atomic_thread_fence(memory_order_acquire);
			if (!whole(r, pos, ld_relaxed(&r->hdr->horizon)))
				break; /* lapped: checked below */
			pos += len;
			off++;
		}
		atomic_thread_fence(memory_order_acquire);
		if (!whole(r, pos, ld_relaxed(&r->hdr->horizon)))
			continue;
		cp->pos = pos;
		cp->off = off;
		cp->skip_below = 0;
		cp->lost_pending = 0;
		gating_publish(cp);
		return 0;
	}
	return -EAGAIN;
}

/* The part of a seek that the log on disk answers: returns 0 (positioned,
 * on disk or in the ring), 1 (the ring answers alone: no log yet), or an
 * error, any failure to open or read a log that exists included (it may
 * hold what the seek is after).  The
 * ring is tried first at the target offset; the log only when the ring no
 * longer holds it, so that producers moving the ring on between the two
 * attempts cannot make the seek skip anything. */
static int seek_disk(struct bus_consumer *c, struct bus_cpart *cp, enum bus_seek whence,
		     int64_t value)
{
	uint64_t first, off;
	int err;

	switch (whence) {
	case BUS_SEEK_EARLIEST:
		/* Retention may delete the earliest segment meanwhile: the next
		 * is as good. */
		for (int tries = 0; tries < 10; tries++) {
			/* No log yet: the ring answers.  Any other failure is
			 * the caller's: the log may hold older records. */
			if ((err = disk_earliest(c, cp, &first)) != 0)
				return err == -ENOENT ? 1 : err;
			cp->on_disk = false;
			if (seek_offset(cp, first) == 0)
				return 0;
			err = disk_seek(c, cp, first);
			if (err != -ERANGE)
				return err == -ENOENT ? 1 : err;
		}
		return -EAGAIN;
	case BUS_SEEK_OFFSET:
		if (value < 0)
			return -ERANGE;
		cp->on_disk = false;
		err = seek_offset(cp, (uint64_t)value);
		if (err != -ERANGE)
			return err;
		if ((uint64_t)value > (ld_acquire(&cp->r->hdr->tail.off) & ~BUS_TAIL_EXCL))
			return -ERANGE; /* not written yet */
		/* Past the log's end, before the ring's earliest checkpoint. */
		if (seek_spill(cp, (uint64_t)value) == 0)
			return 0;
		err = disk_seek(c, cp, (uint64_t)value);
		return err == -ENOENT ? -ERANGE : err;
	case BUS_SEEK_TIME:
		if ((err = disk_open(c, cp)) != 0)
			return err == -ENOENT ? 1 : err; /* no log yet, or the caller's */
		err = bus_seg_seek_time(cp->disk, value, &off);
		if (err == -ERANGE)
			return 1; /* no log yet */
		if (err)
			return err;
		/* The records before off are older than the time; while the
		 * ring still holds off, its own walk finds the answer (the
		 * same record, or one published since). */
		cp->on_disk = false;
		if (seek_time(cp, value, off) == 0)
			return 0;
		/* The ring moved past off meanwhile (1), too fast to walk
		 * (-EAGAIN), or is corrupt (-BUS_ECORRUPT, said again when the
		 * reader comes to it): the log holds off, and the reader
		 * stands there already. */
		cp->lost_pending = 0;
		disk_at(cp, off);
		return 0;
	default:
		return 1;
	}
}

/* The part of a seek that the ring answers. */
static int seek_ring(struct bus_cpart *cp, enum bus_seek whence, int64_t value)
{
	uint64_t pos, off;
	int err;

	switch (whence) {
	case BUS_SEEK_EARLIEST:
		err = earliest(cp, &pos, &off);
		if (err)
			return err;
		cp->pos = pos;
		cp->off = off;
		cp->skip_below = 0;
		cp->lost_pending = 0;
		gating_publish(cp);
		return 0;
	case BUS_SEEK_LATEST:
		return seek_offset(cp, ld_acquire(&cp->r->hdr->tail.off) & ~BUS_TAIL_EXCL);
	case BUS_SEEK_OFFSET:
		if (value < 0)
			return -ERANGE;
		return seek_offset(cp, (uint64_t)value);
	case BUS_SEEK_TIME:
		return seek_time(cp, value, UINT64_MAX);
	}
	return -EINVAL;
}

/* Seek @cp.  On failure the cursor stays where it was: its ring position
 * and offset, or its disk reader (seek_offset(), seek_time(), disk_seek()
 * and the log's seeks change nothing when they fail); only where it reads
 * from, whether it is out of range, and whether its disk reader is still
 * to be moved back to it (rewind_to()), are put back. */
static int seek_place(struct bus_consumer *c, struct bus_cpart *cp, enum bus_seek whence,
		      int64_t value)
{
	bool on_disk = cp->on_disk, oor = cp->out_of_range, reseek = cp->disk_reseek;
	int err;

	cp->stall_since = 0;
	cp->out_of_range = false;
	cp->disk_reseek = false;
	cp->lap_mark = 0;
	err = c->persistent ? seek_disk(c, cp, whence, value) : 1;
	if (err == 1) {
		cp->on_disk = false;
		err = seek_ring(cp, whence, value);
	}
	if (err) {
		cp->on_disk = on_disk;
		cp->out_of_range = oor;
		cp->disk_reseek = reseek;
	}
	return err;
}

/* A gating cursor holds producers back from its publication on (R6 in
 * gating_publish()), not from the moment the consumer chose its position:
 * a raise of the horizon made meanwhile (while a seek walked the ring, or
 * a new consumer took its slot, whose old cursor may also be ahead of the
 * new one) may have lapped that position already, and the first poll
 * would report records lost that the consumer never had a chance to hold
 * back (a gating consumer opened at the earliest record of a ring that
 * producers lap found some lost most times).  So after the publication:
 * F1, a full fence (the release store of the cursor before the load of
 * the horizon: a store then a load, which only a full fence orders, on
 * x86 too), then I1 at the cursor.  Lapped: the seek is made again (it
 * publishes again), from what the ring holds now; once it holds, every
 * raise that takes its limit after the publication (producer.c,
 * refresh_limit(): acquire loads of the cursors, pairing with R6) stays
 * behind the cursor's lap.  A raise already under way (its limit taken
 * before the publication, its CAS after F1's load) may still pass it, by
 * that one raise: the poll then finds the lap, as any reader does.
 * Returns 0, or the error of the seek made again (-ERANGE: an offset
 * sought is no longer held), or -EAGAIN when producers lapped each new
 * position before it was published, 100 times. */
static int gating_settle(struct bus_consumer *c, struct bus_cpart *cp, enum bus_seek whence,
			 int64_t value)
{
	for (int tries = 0;; tries++) {
		int err;

		if (cp->gslot < 0 || cp->on_disk)
			return 0; /* on disk: the spill cursor gates, as ever */
		atomic_thread_fence(memory_order_seq_cst); /* F1 */
		if (whole(cp->r, cp->pos, ld_relaxed(&cp->r->hdr->horizon)))
			return 0;
		if (tries == 100)
			return -EAGAIN;
		if ((err = seek_place(c, cp, whence, value)) != 0)
			return err;
	}
}

/* Seek @cp (seek_place()), and hold a gating cursor there
 * (gating_settle()).  On failure the cursor is where it was; when the seek
 * itself succeeded and gating_settle() failed, it is put back whole (its
 * disk reader, which the seek may have moved, then seeks again before it
 * reads: disk_reseek) and published again. */
static int seek_one(struct bus_consumer *c, struct bus_cpart *cp, enum bus_seek whence,
		    int64_t value)
{
	struct bus_cpart saved = *cp;
	int err = seek_place(c, cp, whence, value);

	if (err)
		return err;
	err = gating_settle(c, cp, whence, value);
	if (err) {
		struct bus_seg_reader *disk = cp->disk; /* opened by the seek, maybe */
		*cp = saved;
		cp->disk = disk;
		cp->gpub = UINT64_MAX; /* the seek may have published another */
		if (cp->on_disk)
			cp->disk_reseek = true;
		gating_publish(cp);
	}
	return err;
}

int bus_consumer_seek(struct bus_consumer *c, int32_t partition, enum bus_seek whence,
		      int64_t value)
{
	int err;

	if (!c || (partition < 0 && partition != BUS_PARTITION_ANY))
		return -EINVAL;
	if ((err = bus_topic_check(c->t)) == 0) {
		err = partition == BUS_PARTITION_ANY ? 0 : -ENOENT;
		for (uint32_t i = 0; i < c->nparts; i++) {
			struct bus_cpart *cp = &c->parts[i];
			if (partition != BUS_PARTITION_ANY && cp->idx != (uint32_t)partition)
				continue;
			err = seek_one(c, cp, whence, value);
			if (err || partition != BUS_PARTITION_ANY)
				break;
		}
	}
	/* The seek may have read zeros (a truncated ring or table). */
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0)) {
		int lost = consumer_lost(c);
		if (lost)
			return lost;
	}
	return err;
}

int bus_consumer_position(struct bus_consumer *c, uint32_t partition, uint64_t *offset)
{
	if (!c || !offset)
		return -EINVAL;
	for (uint32_t i = 0; i < c->nparts; i++) {
		if (c->parts[i].idx == partition) {
			struct bus_cpart *cp = &c->parts[i];
			*offset = next_off(cp);
			return 0;
		}
	}
	return -ENOENT;
}

void bus_consumer_stats(const struct bus_consumer *c, struct bus_consumer_stats *out)
{
	if (c && out)
		*out = c->stats;
}

/* ------------------------------------------------------- open and close */

static int gating_claim(struct bus_cpart *cp)
{
	struct bus_ring_hdr *h = cp->r->hdr;
	uint64_t self = bus_owner_self();

	for (unsigned i = 0; i < BUS_GATING_MAX; i++) {
		uint64_t o = ld_relaxed(&h->gating[i].owner);
		/* A zombie's is free too, and a dead owner's whose pid went
		 * to another process. */
		if (o && !bus_owner_gone(o))
			continue;
		/* The slot's old pos may be read by a producer for a moment:
		 * it is older than ours, so it only makes the producer wait. */
		if (atomic_compare_exchange_strong(&h->gating[i].owner, &o, self)) {
			cp->gslot = (int)i;
			cp->fenced = !bus_wait_register_waker();
			cp->gpub = UINT64_MAX; /* nothing published yet */
			gating_publish(cp);
			return 0;
		}
		i--; /* raced: look at this slot again */
	}
	return -ENOSPC;
}

void bus_consumer_close(struct bus_consumer *c)
{
	if (!c)
		return;
	for (uint32_t i = 0; c->parts && i < c->nparts; i++) {
		struct bus_cpart *cp = &c->parts[i];
		if (cp->gslot >= 0) {
			/* Only the slot's owner frees it: a child forked after
			 * the open closes a copy of @c, whose slot is still its
			 * parent's (the parent's cursor in it).  Release: the
			 * reads of the ring before. */
			uint64_t self = bus_owner_self();
			/* The slot given back no longer holds producers:
			 * wake those it held (seq_cst CAS; the wake as after
			 * R6, gating_publish()). */
			if (atomic_compare_exchange_strong(&cp->r->hdr->gating[cp->gslot].owner,
							   &self, 0))
				bus_space_wake(cp->r->hdr, cp->fenced);
		}
		bus_seg_reader_close(cp->disk);
	}
	bus_topic_put(c->t);
	free(c->parts);
	free(c);
}

int bus_consumer_open(struct bus *b, const char *topic, const struct bus_consumer_opts *opts,
		      struct bus_consumer **out)
{
	struct bus_consumer_opts def = { .partition = BUS_PARTITION_ANY };
	struct bus_consumer *c;
	int err;

	if (!b || !out)
		return -EINVAL;
	if (!opts)
		opts = &def;
	if (opts->wait > BUS_WAIT_SLEEP || opts->start > BUS_SEEK_LATEST ||
	    (opts->flags & ~(BUS_CONSUMER_GATING | BUS_CONSUMER_RESET_EARLIEST |
			     BUS_CONSUMER_RESET_LATEST)) ||
	    ((opts->flags & BUS_CONSUMER_RESET_EARLIEST) && (opts->flags & BUS_CONSUMER_RESET_LATEST)))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->b = b;
	c->disk_room = SIZE_MAX;
	c->flags = opts->flags;
	c->wait = opts->wait;
	c->spin_count = opts->spin_count ? opts->spin_count : 1000;
	err = bus_topic_get(b, topic, &c->t);
	if (err) {
		free(c);
		return err;
	}
	if (opts->partition != BUS_PARTITION_ANY &&
	    (opts->partition < 0 || (uint32_t)opts->partition >= c->t->cfg.partitions)) {
		bus_topic_put(c->t);
		free(c);
		return opts->partition < 0 ? -EINVAL : -ENOENT;
	}
	c->persistent = !(c->t->cfg.flags & BUS_TOPIC_EPHEMERAL);
	c->nparts = opts->partition == BUS_PARTITION_ANY ? c->t->cfg.partitions : 1;
	c->parts = calloc(c->nparts, sizeof(*c->parts));
	if (!c->parts) {
		bus_topic_put(c->t);
		free(c);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < c->nparts; i++) {
		struct bus_cpart *cp = &c->parts[i];
		cp->idx = opts->partition == BUS_PARTITION_ANY ? i : (uint32_t)opts->partition;
		cp->r = &c->t->rings[cp->idx];
		cp->gslot = -1;
		err = seek_one(c, cp, opts->start, 0);
		if (!err && (opts->flags & BUS_CONSUMER_GATING)) {
			err = gating_claim(cp);
			/* The start was chosen before the slot was ours. */
			if (!err)
				err = gating_settle(c, cp, opts->start, 0);
		}
		if (err) {
			c->nparts = i + 1;
			/* The seek read zeros: a truncated ring (or table). */
			if (BUS_UNLIKELY(bus_mapguard_hits() != 0)) {
				int lost = consumer_lost(c);
				if (lost)
					err = lost;
			}
			bus_consumer_close(c);
			return err;
		}
	}
	if (BUS_UNLIKELY(bus_mapguard_hits() != 0)) {
		int lost = consumer_lost(c); /* as above */
		if (lost) {
			bus_consumer_close(c);
			return lost;
		}
	}
	*out = c;
	return 0;
}
