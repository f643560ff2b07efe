/* spill.c - the spiller: streams each persistent partition's committed
 * frames from its ring to its segment log, publishes the spill cursor,
 * repairs claims that stay unpublished, survives full disks, and applies
 * retention.
 *
 * THE CURSOR.  A ring's spill cursor {spill_pos, spill_off} (layout.h, ring
 * header line 3) says that every frame below spill_pos is written out to
 * the log, and that spill_off is the offset of the record at spill_pos.
 * Producers of a persistent topic write only below spill_pos + ring_size
 * (bus_ring_low_water(), producer.c wait_space()), so the frames between
 * the published spill_pos and the tail are stable: busd reads them in
 * place and hands them to the writer without a copy.  busd publishes the
 * cursor only after a bus_seg_flush() that succeeded, so spill_pos never
 * passes what is in the files: a crash of busd loses nothing that the
 * cursor released.
 *
 * ORDERINGS (the A/R labels of ring.c; ours are RS*):
 *   A3   the commit word at the read position, loaded with acquire; pairs
 *        with the producers' release R3: the frame's bytes are visible.
 *   A2   the claim word (only to name its owner in a message); pairs with R2.
 *   A1   in copy mode, a fence after copying a frame and before loading
 *        the horizon: the seqlock check of I1 (layout.h).
 *   RS0  spiller_pid, release, when busd takes a partition (topics.c).
 *   RS1  spill_off, release, before RS2: a reader that sees the new
 *        spill_pos (acquire) sees an offset at least as new.
 *   RS2  spill_pos, release: the producers' licence to overwrite what lies
 *        below it + ring_size.  Pairs with the acquire loads of spill_pos in
 *        bus_ring_low_water() and wait_space(); the release orders busd's
 *        reads of those frames (the writer's copies and CRCs, and the
 *        kernel's copies into the page cache in the pwritev() of a flush,
 *        done when it returns) before any producer's overwrite of them.
 *   RS3  spiller_pid back to 0 (CAS, so that only our own pid is cleared)
 *        when busd lets go of a partition.
 *
 * RESUME.  When busd takes a partition (start, restart after a crash, or
 * after a reopen), the writer's next offset N is compared with the ring's
 * cursor S = spill_off at P = spill_pos:
 *   N == S  start at P (the usual case; also a ring that bus_topic_create()
 *           made over an existing log, which starts at N with P = 0);
 *   N >  S  the log has records the cursor did not yet release (busd died
 *           between a write-out and the publication): walk the committed
 *           frames from P up to offset N, publish, go on;
 *   N <  S  the log lost records it had (removed by hand, or a power loss
 *           with fsync "never"): records still in the ring are written again
 *           from the earliest one; those no longer there become LOST frames
 *           (with an ERROR), so that offsets stay dense.  Frames below P are
 *           not protected from producers any more, so in this "copy mode"
 *           each frame is copied and checked (I1) before the writer gets it,
 *           and a lap is met by a resync, as a lapped consumer does.
 *
 * FLOOR.  Before each publication (and when busd takes a partition) the
 * log's durable offset floor is raised above every offset producers may
 * hand out under the new cursor (part_floor(); segment.h, "offset floor"),
 * so that a host reboot, which loses the ring and with fsync "never" the
 * end of the log, never gives an offset out twice: recovery starts the
 * ring at the floor, and part_open() then skips the log to it.
 *
 * DEAD PRODUCERS.  A frame claimed but not published at the read position
 * is repaired with bus_ring_repair() as consumer.c's stalled() does: after
 * about 1 ms when its owner is dead, after stuck_claim_ms (forced) when
 * it is alive.  The frame becomes LOST and is spilled as such: one record.
 *
 * FAILURES.  An append or flush that fails (-ENOSPC, -EIO, -EDQUOT...) keeps
 * the files whole (the writer's guarantee) and stops the cursor, so
 * producers feel back-pressure; it is logged once, retried with backoff
 * from 10 ms doubling to 1 s, and its end is logged.  A frame that does not
 * parse stops its partition for good (ERROR) instead of crashing busd.
 *
 * TRUNCATION.  A ring file truncated under busd's mapping (by hand or a
 * hostile process) reads as zeros from the first fault on (mapguard.h).
 * busd then stops the partition with one ERROR naming the file
 * (part_lost()) and serves the others.  The writer may hold frames
 * appended in place that point into the lost pages: written out, they
 * would be zeros under the CRCs of the records that were there.  So busd
 * checks after its reads of a ring and before every writer call that may
 * write out (append, flush), and abandons the writer of a lost partition
 * (bus_seg_writer_abandon(): its files closed and its dir unlocked, nothing
 * it holds written out).  Between that check and
 * the write-out, busd touches no page of the ring (the kernel's copy in
 * pwritev() does, and gets EFAULT for a page truncated meanwhile: a failed
 * write-out, retried, and the next pass finds the truncation: it probes
 * the ring's last page first, which any truncation takes).
 */
#include <string.h>

#include <unistd.h>

#include "busd.h"

#define BACKOFF_MIN (10 * BUSD_MS)
#define BACKOFF_MAX (1000 * BUSD_MS)
/* Largest batch of one partition between two flushes (and publications),
 * on top of the ring_size / 2 bound. */
#define BATCH_MAX (16ull << 20)

/* The spiller reads the ring in order, lines that the producers' cores
 * wrote: each is a miss, and the first reader of a frame (the writer's CRC,
 * or, when the producer left its sum, the kernel's copy in the flush's
 * pwritev()) waits for them one after the other; the hardware prefetchers
 * do not run far enough ahead across the ring's pages.  So part_read()
 * asks for the lines up to PREFETCH_AHEAD bytes past the frame it reads
 * (bus_ring_prefetch()).  Measured spilling 1 KiB records (spill_bench
 * spill, 1 GiB, alternating runs): see commit 84c0cae; with producers'
 * sums (68e6e70) it still gave 2.87 GB/s on average against 2.76 without
 * it (four rounds each). */
#define PREFETCH_AHEAD 8192u

/* The frame at free-running position @pos. */
static inline struct bus_frame *frame_at(const struct bus_ring *r, uint64_t pos)
{
	return (struct bus_frame *)(r->data + (pos & r->mask));
}

/* I1 of layout.h fails for a frame at @pos: the ring lapped it.  The
 * acquire orders the load before the reads that follow (consumer.c does
 * the same when it finds no frame). */
static inline bool ring_lapped(const struct bus_ring *r, uint64_t pos)
{
	return ld_acquire(&r->hdr->horizon) > pos + r->size;
}

/*
 * frame_len() - the length of the frame whose commit word @w (tag already
 * checked) was loaded at @pos, or 0 when it does not make a frame: a length
 * that is not a multiple of 8, does not fit before the end of the ring, a
 * record shorter than its header or whose sizes do not add up to it, a
 * padding frame that does not run exactly to the end of the ring, a DATA
 * frame whose offset field is not @off, or an unknown type.
 */
static uint32_t frame_len(const struct bus_ring *r, uint64_t pos, uint64_t w, uint64_t off)
{
	const struct bus_frame *f = frame_at(r, pos);
	uint32_t len = BUS_COMMIT_LEN(w);
	uint64_t room = r->size - (pos & r->mask);

	if (len < BUS_FRAME_ALIGN || len % BUS_FRAME_ALIGN || len > room)
		return 0;
	switch (BUS_COMMIT_TYPE(w)) {
	case BUS_FRAME_PAD:
		/* Padding fills a lap to its end and never starts one. */
		return (pos & r->mask) != 0 && len == room ? len : 0;
	case BUS_FRAME_LOST:
		return len >= BUS_FRAME_HDR ? len : 0;
	case BUS_FRAME_DATA: {
		/* In 64 bits: hostile sizes must not wrap around to the length. */
		uint64_t n = bus_frame_len(f->key_len, f->headers_len, f->value_len, f->slack);

		if (len < BUS_FRAME_HDR || f->offset != off || n != len)
			return 0;
		return len;
	}
	default:
		return 0;
	}
}

/* Earliest whole frame of the ring, retrying while producers race it. */
static int ring_earliest(struct bus_ring *r, uint64_t *pos, uint64_t *off)
{
	int err = -EAGAIN;

	for (int tries = 0; tries < 1000 && err == -EAGAIN; tries++)
		err = bus_ring_earliest(r, pos, off);
	return err;
}

/* The writer options for @dp from the config in force.  Retention never
 * deletes the active segment, so a topic's retention bounds its segments:
 * a retention time rolls them at least that often (so that retention can
 * work on a quiet topic too), and a retention in bytes rolls them at half
 * of it (at least BUS_SEG_BYTES_MIN), so that the log keeps between half
 * the retention and the retention, instead of growing to a whole segment
 * (1 GiB by default) whatever the retention. */
static void writer_opts(const struct busd *d, const struct dpart *dp, uint64_t first,
			struct bus_seg_opts *o)
{
	uint64_t rms = dp->dt->cfg.retention_ms, rbytes = dp->dt->cfg.retention_bytes;

	memset(o, 0, sizeof(*o));
	o->segment_bytes = d->cfg.segment_bytes;
	if (rbytes && rbytes / 2 < o->segment_bytes)
		o->segment_bytes = rbytes / 2 > BUS_SEG_BYTES_MIN ? rbytes / 2 : BUS_SEG_BYTES_MIN;
	o->segment_ms = d->cfg.segment_ms;
	if (rms && (!o->segment_ms || rms < o->segment_ms))
		o->segment_ms = rms;
	o->index_interval = (uint32_t)d->cfg.index_interval;
	o->fsync = d->cfg.fsync;
	if (d->cfg.fsync == BUS_SEG_FSYNC_MS)
		o->fsync_ms = d->cfg.fsync_arg;
	else if (d->cfg.fsync == BUS_SEG_FSYNC_BYTES)
		o->fsync_bytes = d->cfg.fsync_arg;
	o->first_offset = first;
	o->prealloc_bytes = d->cfg.preallocate ? (int64_t)d->cfg.preallocate : -1;
	o->file_mode = (dp->dt->cfg.flags & BUS_TOPIC_PRIVATE) ? 0600 : 0; /* 0: 0640 */
	/* The topic's dir is made when busd takes the topic (conf_sync());
	 * gone, it was renamed by bus_topic_delete(): making it again would
	 * leave a stray log that a topic created later under the name would
	 * continue (its offsets, its floor).  The open then fails (-ENOENT)
	 * until the next scan drops the topic. */
	o->no_parents = 1;
	o->log = busd_lib_log;
}

/* Whether @dp's ring was truncated under busd's mapping (see TRUNCATION
 * above).  The first time: one ERROR naming the file, the partition
 * stopped, its writer abandoned without a write-out, and the topic's
 * sleeping consumers woken (they find the truncation in turn).  One
 * relaxed load while nothing was ever truncated. */
static bool part_lost(struct dpart *dp)
{
	struct bus_topic *t = dp->dt->t;
	char path[PATH_MAX];
	uint64_t have = dp->pub_off;

	if (BUS_LIKELY(bus_mapguard_hits() == 0) || !bus_ring_hit(dp->r))
		return false;
	if (dp->lost)
		return true;
	if (dp->w) {
		struct bus_seg_writer_stats st;

		bus_seg_writer_stats(dp->w, &st);
		/* Frames in place may be zeros now: none is written out.  The
		 * writer logs a poisoning's cut itself. */
		have = st.sync_failed ? st.synced_offset : st.written_offset;
		(void)bus_seg_writer_abandon(dp->w);
		dp->w = NULL;
		dp->appended = false;
	}
	dp->lost = dp->stopped = true;
	bus_ring_path(t->bus, t->name, t->gen, dp->idx, path, sizeof(path));
	busd_log(BUS_LOG_ERROR,
		 "topic '%s' partition %u: its ring file %s was truncated under busd's mapping "
		 "(SIGBUS caught): spilling of this partition stops; its log ends at offset %llu, "
		 "and the records the ring held past it are lost (delete and re-create the topic)",
		 dp->dt->name, dp->idx, path, (unsigned long long)have);
	/* Their futex is in the control region, which is whole. */
	if (!bus_mapguard_hit(t->bus->ctl_guard))
		bus_wake_slow(t->ts);
	return true;
}

/* Stop @dp for good, its ERROR logged by the caller: its spiller_pid
 * becomes -pid, so that producers that would have to wait for the spiller
 * get -BUS_ECORRUPT (wait_space() in producer.c) instead of waiting
 * forever for a cursor that no longer moves.  A restarted busd takes the
 * partition again (topics.c, RS0). */
static void part_halt(struct dpart *dp)
{
	dp->stopped = true;
	/* Release: pairs with the acquire load in wait_space(). */
	st_release(&dp->r->hdr->spiller_pid, -(int32_t)getpid());
	/* Producers asleep for this spill learn it now, not at their next
	 * recheck (wait.c, "Space"). */
	bus_space_wake(dp->r->hdr, true);
}

/* Stop @dp for good after a frame that does not parse: one ERROR, no
 * crash, producers told (part_halt()). */
static void part_stop(struct dpart *dp, const char *why)
{
	uint64_t w = ld_acquire(&frame_at(dp->r, dp->pos)->commit); /* for the message */

	if (part_lost(dp))
		return; /* it read zeros: that is the error */
	busd_log(BUS_LOG_ERROR,
		 "topic '%s' partition %u: %s at ring position %llu (offset %llu, commit word "
		 "%#llx): spilling of this partition stops; records from offset %llu on stay in "
		 "the ring",
		 dp->dt->name, dp->idx, why, (unsigned long long)dp->pos,
		 (unsigned long long)dp->off, (unsigned long long)w,
		 (unsigned long long)dp->pub_off);
	part_halt(dp);
}

/* Make the durable offset floor cover every offset producers may hand
 * out while the cursor is at offset @off (see "offset floor" in
 * segment.h): they write below spill_pos + ring_size, in frames of at
 * least BUS_FRAME_HDR bytes per offset.  Raised by a step of at least two
 * such bounds (a 16 MiB ring: ~700,000 records), doubled while raises come
 * less than FLOOR_MIN_NS apart, so that a fast partition syncs its floor
 * file at most about ten times a second (a 1 MiB ring at 20 M records/s
 * would otherwise sync 450 times), and halved back after idle seconds.
 * The skip after a reboot is at most one bound plus one step. */
#define FLOOR_MIN_NS (100 * BUSD_MS)
#define FLOOR_STEP_MAX (1ull << 40)
static int part_floor(struct dpart *dp, uint64_t off)
{
	uint64_t bound = dp->r->size / BUS_FRAME_HDR + 1;
	int64_t now;
	int err;

	if (off + bound <= bus_seg_writer_floor(dp->w))
		return 0; /* the usual case: no clock, no system call */
	now = bus_mono_ns();
	if (dp->floor_step < 2 * bound)
		dp->floor_step = 2 * bound;
	if (dp->floor_at && now - dp->floor_at < FLOOR_MIN_NS && dp->floor_step < FLOOR_STEP_MAX)
		dp->floor_step *= 2;
	else if (dp->floor_at && now - dp->floor_at > 10 * FLOOR_MIN_NS && dp->floor_step / 2 >= 2 * bound)
		dp->floor_step /= 2;
	err = bus_seg_writer_floor_raise(dp->w, off + bound, dp->floor_step);
	if (!err)
		dp->floor_at = now;
	return err;
}

/* Publish the cursor: everything below dp->pos is written out.  Returns 0,
 * or the error of the floor's write (the cursor then stays: producers are
 * held back, as by a failed write-out). */
static int part_publish(struct dpart *dp)
{
	struct bus_ring_hdr *h = dp->r->hdr;
	int err;

	/* Below the cursor a previous run published: it stays where it is. */
	if (dp->off < dp->prot_off || (dp->off == dp->pub_off && dp->pos == dp->pub_pos))
		return 0;
	/* FLOOR: durable before the cursor lets producers go further. */
	err = part_floor(dp, dp->off);
	if (err)
		return err;
	/* RS1+RS2 as one 16-byte CAS (a full barrier): the pair is what
	 * consumers leaving the log for the ring start from, and the position
	 * is the producers' licence to overwrite what lies below it +
	 * ring_size (pairs with the acquire load in bus_ring_low_water()). */
	bus_spill_publish(h, dp->pos, dp->off);
	/* Wake the producers this spill frees, if one sleeps (wait.c,
	 * "Space": the CAS above is the store of Dekker's pattern; the
	 * barrier after it membarrier(), or a fence where busd could not
	 * register: bus_wait_register_waker() answers from a cache). */
	bus_space_wake(h, !bus_wait_register_waker());
	dp->pub_off = dp->off;
	dp->pub_pos = dp->pos;
	return 0;
}

/* After a failed flush: a failed fdatasync poisons the writer, which cuts
 * the log back to what its last good sync covered (see bus_seg_flush()).
 * Close it; the next pass opens the log again (retried with backoff while
 * the disk fails), which ends at that sync, and the resume (see RESUME
 * above: N < S) writes again from the ring whatever followed (records the
 * cursor passed earlier included: as LOST frames once the ring no longer
 * holds them). */
static void part_check_sync(struct dpart *dp, int err)
{
	struct bus_seg_writer_stats st;

	if (!err || !dp->w)
		return;
	bus_seg_writer_stats(dp->w, &st);
	if (!st.sync_failed)
		return;
	busd_log(BUS_LOG_ERROR,
		 "topic '%s' partition %u: fdatasync of its log in %s failed: %s; the log is "
		 "cut back to its last good sync, opened again, and what followed is written "
		 "again from the ring",
		 dp->dt->name, dp->idx, dp->dir, bus_strerror(err));
	(void)bus_seg_writer_close(dp->w);
	dp->w = NULL;
	dp->appended = false;
}

/* The sync interval of fsync = DURATION in ns; 0 under any other policy. */
static int64_t fsync_interval_ns(const struct busd *d)
{
	return d->cfg.fsync == BUS_SEG_FSYNC_MS ? (int64_t)d->cfg.fsync_arg * BUSD_MS : 0;
}

/* With fsync = DURATION: note since when @dp's log holds records that no
 * sync covers (@now, the pass's start, is at or before the write-out of
 * the first of them), for part_idle_sync(). */
static void note_unsynced(const struct busd *d, struct dpart *dp, int64_t now)
{
	struct bus_seg_writer_stats st;

	if (!fsync_interval_ns(d) || !dp->w) {
		dp->unsynced_since = 0;
		return;
	}
	bus_seg_writer_stats(dp->w, &st);
	if (st.synced_offset == st.written_offset)
		dp->unsynced_since = 0;
	else if (!dp->unsynced_since)
		dp->unsynced_since = now;
}

/* Write out what was appended, then publish the cursor. */
static int part_flush(const struct busd *d, struct dpart *dp, int64_t now)
{
	int err = bus_seg_flush(dp->w);

	part_check_sync(dp, err);
	if (err)
		return err;
	dp->appended = false;
	note_unsynced(d, dp, now);
	return part_publish(dp);
}

/* An append, flush or open failed with @err: log the episode's start,
 * schedule the retry. */
static void part_fail(struct dpart *dp, int err, int64_t now, const char *what)
{
	if (!dp->err) {
		busd_log(BUS_LOG_ERROR,
			 "topic '%s' partition %u: cannot %s in %s: %s; its producers are held "
			 "back until this works again (retrying)",
			 dp->dt->name, dp->idx, what, dp->dir, bus_strerror(err));
		dp->fail_since = now;
		dp->backoff = BACKOFF_MIN;
		dp->retries = 0;
	} else {
		dp->backoff = dp->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : dp->backoff * 2;
		dp->retries++;
	}
	dp->err = err;
	dp->retry_at = now + dp->backoff;
}

/* A pass went through: end a failure episode, if any. */
static void part_ok(struct dpart *dp, int64_t now)
{
	if (!dp->err)
		return;
	busd_log(BUS_LOG_INFO,
		 "topic '%s' partition %u: spilling resumed after %.1f s (%llu retries)",
		 dp->dt->name, dp->idx, (double)(now - dp->fail_since) / 1e9,
		 (unsigned long long)dp->retries);
	dp->err = 0;
}

/* Walk the committed (protected) frames from the cursor up to offset @n,
 * which the log already holds.  Returns 0, or -BUS_ECORRUPT when the ring
 * does not hold them. */
static int resume_ahead(struct dpart *dp, uint64_t n)
{
	struct bus_ring *r = dp->r;
	uint64_t pos = dp->pos, off = dp->off;

	while (off < n) {
		/* A3: pairs with R3. */
		uint64_t w = ld_acquire(&frame_at(r, pos)->commit);
		uint32_t len;

		if (w == 0 || BUS_COMMIT_TAG(w) != (uint32_t)off)
			return -BUS_ECORRUPT;
		len = frame_len(r, pos, w, off);
		if (!len)
			return -BUS_ECORRUPT;
		pos += len;
		if (BUS_COMMIT_TYPE(w) != BUS_FRAME_PAD)
			off++;
	}
	busd_log(BUS_LOG_INFO,
		 "topic '%s' partition %u: the log already holds offsets %llu..%llu: spilling "
		 "goes on from %llu",
		 dp->dt->name, dp->idx, (unsigned long long)dp->off, (unsigned long long)n - 1,
		 (unsigned long long)n);
	dp->pos = pos;
	dp->off = off;
	dp->prot_off = off;
	dp->prot_pos = pos;
	/* A floor that cannot be written now is written by the next pass's
	 * publication (the cursor stays until then). */
	(void)part_publish(dp);
	return 0;
}

/* The log ends at @n, below the cursor S = dp->off: write what the ring
 * still has again, and LOST frames for what it has not. */
static int resume_behind(struct dpart *dp, uint64_t n)
{
	uint64_t s = dp->off, epos, e;
	int err = ring_earliest(dp->r, &epos, &e);

	if (err)
		return err;
	dp->skip_below = n;
	if (e >= s) {
		/* Nothing below the cursor can be read again. */
		dp->gap_to = s;
		dp->off = n;
	} else if (e > n) {
		dp->gap_to = e;
		dp->off = n;
		dp->pos = epos;
	} else {
		dp->off = e;
		dp->pos = epos;
	}
	if (dp->gap_to > n)
		busd_log(BUS_LOG_ERROR,
			 "topic '%s' partition %u: the log in %s ends at offset %llu but %llu were "
			 "spilled, and the ring no longer holds offsets %llu..%llu: they are lost, "
			 "and written as LOST records",
			 dp->dt->name, dp->idx, dp->dir, (unsigned long long)n,
			 (unsigned long long)s, (unsigned long long)n,
			 (unsigned long long)dp->gap_to - 1);
	if (dp->gap_to < s)
		busd_log(BUS_LOG_WARN,
			 "topic '%s' partition %u: the log in %s ends at offset %llu but %llu were "
			 "spilled: writing offsets %llu..%llu again from the ring",
			 dp->dt->name, dp->idx, dp->dir, (unsigned long long)n,
			 (unsigned long long)s,
			 (unsigned long long)(dp->gap_to > n ? dp->gap_to : n),
			 (unsigned long long)s - 1);
	return 0;
}

/*
 * cursor_valid() - check the spill cursor {@sp, @s} that a ring header
 * holds (the shared memory may be damaged, or written by a hostile
 * process) against what a spiller can have written: an aligned position
 * no further than the tail, which is at most a ring ahead of it (producers
 * of a persistent topic stay below spill_pos + ring_size), and an offset no
 * further than the tail's.  Reading frames from any other position would
 * read past the end of the ring (unaligned), or wait for records at a
 * position producers never write while they overwrite the records busd
 * never spilled.  Such a partition is stopped with an ERROR (its producers
 * are told, as after part_stop()); busd serves the others.
 */
static bool cursor_valid(struct dpart *dp, uint64_t sp, uint64_t s)
{
	struct bus_ring_hdr *h = dp->r->hdr;
	/* Acquire: the tail only grows, each half on its own, so halves
	 * read after the cursor are at least the cursor's (an exclusive
	 * producer stores them apart: no pair is needed). */
	uint64_t tp = ld_acquire(&h->tail.pos);
	uint64_t to = ld_acquire(&h->tail.off) & ~BUS_TAIL_EXCL;

	if (part_lost(dp))
		return false; /* zeros */
	if (sp % BUS_FRAME_ALIGN == 0 && sp <= tp && tp - sp <= dp->r->size && s <= to)
		return true;
	busd_log(BUS_LOG_ERROR,
		 "topic '%s' partition %u: its ring holds a spill cursor no spiller wrote "
		 "(position %llu, offset %llu; the tail is at position %llu, offset %llu): the "
		 "shared memory is damaged or another process wrote it; not spilling this "
		 "partition, its producers are told (delete and re-create the topic)",
		 dp->dt->name, dp->idx, (unsigned long long)sp, (unsigned long long)s,
		 (unsigned long long)tp, (unsigned long long)to);
	part_halt(dp);
	return false;
}

/* Open @dp's writer and position the partition (see RESUME above).
 * Returns 0 (possibly with dp->stopped set) or an error to retry. */
static int part_open(struct busd *d, struct dpart *dp)
{
	struct bus_ring_hdr *h = dp->r->hdr;
	struct bus_seg_opts o;
	uint64_t n, s, sp;
	int err;

	/* Only the spiller moves the cursor, and we are it: stable.  The
	 * acquires pair with RS1/RS2 of a previous busd. */
	bus_spill_read(h, &sp, &s);
	if (!cursor_valid(dp, sp, s))
		return 0;
	writer_opts(d, dp, s, &o);
	/* A ring that never spilled: a new topic (an empty log: free), or
	 * one re-created from its log after a reboot, which a power loss may
	 * have damaged anywhere in its unsynced part: check every frame of
	 * the active segment, and cut the torn tails of sealed segments
	 * (segment.h, verify_all). */
	o.verify_all = sp == 0;
	err = bus_seg_writer_open(&dp->w, dp->dir, &o);
	if (err)
		return err;
	n = bus_seg_writer_next_offset(dp->w);
	dp->pos = dp->pub_pos = dp->prot_pos = sp;
	dp->off = dp->pub_off = dp->prot_off = s;
	dp->skip_below = dp->gap_to = 0;
	dp->appended = false;
	dp->stall_since = 0;
	dp->unsynced_since = 0; /* the open synced the log, unless fsync = never */
	/* FLOOR: producers may already hold offsets up to the cursor's bound
	 * (a previous busd let them); then they may go on (floor_ok, release:
	 * after the floor's fdatasync; pairs with the acquire in
	 * wait_space()). */
	err = part_floor(dp, s);
	if (!err) {
		st_release(&h->floor_ok, 1);
		bus_space_wake(h, !bus_wait_register_waker()); /* as after a spill */
	}
	if (!err && n < s && sp == 0) {
		/* A ring that never spilled, made at offset s over a log that
		 * ends at n: recovery after a reboot started it at the floor
		 * (offsets n..s-1 may have been handed out before, and are
		 * skipped), or the log lost its end by hand.  No record below
		 * s was ever in this ring: the log goes on at s. */
		err = bus_seg_writer_skip(dp->w, s);
		if (!err)
			busd_log(BUS_LOG_WARN,
				 "topic '%s' partition %u: the log in %s ends at offset %llu and "
				 "the ring starts at %llu: offsets %llu..%llu are skipped (after a "
				 "restart of the host they may have been handed out before it); "
				 "readers see them as lost",
				 dp->dt->name, dp->idx, dp->dir, (unsigned long long)n,
				 (unsigned long long)s, (unsigned long long)n,
				 (unsigned long long)s - 1);
		n = s;
	}
	if (err) {
		bus_seg_writer_close(dp->w);
		dp->w = NULL;
		return err;
	}
	if (n == s) {
		busd_log(BUS_LOG_DEBUG, "topic '%s' partition %u: spilling from offset %llu to %s",
			 dp->dt->name, dp->idx, (unsigned long long)s, dp->dir);
		return 0;
	}
	if (n > s) {
		if (resume_ahead(dp, n) == 0 || part_lost(dp))
			return 0;
		busd_log(BUS_LOG_ERROR,
			 "topic '%s' partition %u: the log in %s ends at offset %llu, past what "
			 "the ring holds (spilled up to %llu, next offset %llu): not spilling "
			 "this partition (move that log away, or delete and re-create the topic)",
			 dp->dt->name, dp->idx, dp->dir, (unsigned long long)n,
			 (unsigned long long)s,
			 /* for the message only */
			 (unsigned long long)(ld_acquire(&h->tail.off) & ~BUS_TAIL_EXCL));
		/* Its producers are told once the ring is full, as after a
		 * frame busd cannot take (they waited forever before). */
		part_halt(dp);
		return 0;
	}
	err = resume_behind(dp, n);
	if (part_lost(dp))
		return 0; /* it read zeros: the writer is abandoned */
	if (err) {
		bus_seg_writer_close(dp->w);
		dp->w = NULL;
	}
	return err;
}

/* Append a LOST record for dp->off (a record gone before it was spilled). */
static int append_lost(struct dpart *dp)
{
	struct bus_frame f;
	int err;

	memset(&f, 0, sizeof(f));
	atomic_init(&f.commit, BUS_COMMIT(BUS_FRAME_LOST, BUS_FRAME_HDR, dp->off));
	atomic_init(&f.claim, 0);
	f.offset = dp->off;
	err = bus_seg_append(dp->w, &f, dp->off);
	if (err)
		return err;
	dp->appended = true;
	dp->off++;
	return 0;
}

/* Move a lapped copy-mode reader to the earliest whole frame; what it
 * skipped and the log lacks becomes a gap of LOST records.  Returns 0 or
 * -EAGAIN (try at the next pass). */
static int part_resync(struct dpart *dp)
{
	uint64_t epos, e, from = dp->off > dp->skip_below ? dp->off : dp->skip_below;

	if (ring_earliest(dp->r, &epos, &e) || e <= dp->off)
		return -EAGAIN;
	if (dp->off >= dp->prot_off)
		busd_log(BUS_LOG_ERROR,
			 "topic '%s' partition %u: the ring was overwritten below the spill cursor "
			 "(another process moved it?)",
			 dp->dt->name, dp->idx);
	if (e >= dp->prot_off && dp->off < dp->prot_off) {
		/* Back to the protected part, at the cursor. */
		e = dp->prot_off;
		epos = dp->prot_pos;
	}
	if (e > from) {
		busd_log(BUS_LOG_ERROR,
			 "topic '%s' partition %u: offsets %llu..%llu were overwritten in the ring "
			 "before they could be written: written as LOST records",
			 dp->dt->name, dp->idx, (unsigned long long)from,
			 (unsigned long long)e - 1);
		dp->off = from;
		dp->gap_to = e;
	} else {
		dp->off = e;
	}
	dp->pos = epos;
	return 0;
}

/* Copy mode: append the frame of @len bytes at dp->pos from a copy,
 * checked whole after the copy.  Returns 0, 1 when the ring lapped it,
 * or the writer's error. */
static int append_copy(struct busd *d, struct dpart *dp, uint32_t len)
{
	struct bus_ring *r = dp->r;

	if (len > d->scratch_len) {
		uint8_t *nb = realloc(d->scratch, len);
		if (!nb)
			return -ENOMEM;
		d->scratch = nb;
		d->scratch_len = len;
	}
	memcpy(d->scratch, frame_at(r, dp->pos), len);
	/* A1: the copy before the horizon load (seqlock check of I1). */
	atomic_thread_fence(memory_order_acquire);
	if (ld_relaxed(&r->hdr->horizon) > dp->pos + r->size)
		return 1;
	/* The copy may be of zeros; the append may write out (TRUNCATION). */
	if (part_lost(dp))
		return 0;
	/* The copy is the frame whose commit word and sizes were checked. */
	return bus_seg_append(dp->w, (const struct bus_frame *)(const void *)d->scratch, dp->off);
}

/* A claimed frame stays unpublished at dp->pos: repair it when its owner
 * is dead (tried every ~1 ms) or it is stuck past stuck_claim_ms, both
 * counted from when busd first saw it so.  Returns
 * 1 when repaired (the frame is now LOST), 0, or -BUS_ECORRUPT. */
static int part_stall(struct busd *d, struct dpart *dp, const struct bus_frame *f)
{
	int64_t stuck_ns = (int64_t)d->cfg.stuck_claim_ms * BUSD_MS;
	/* The clock now, not the pass's: a pass can take long (an fsync
	 * under load, or the floor's when a partition is taken), and a stale
	 * start would count that time against a producer that claimed a
	 * microsecond ago, and repair its live claim. */
	int64_t now = bus_mono_ns();
	uint64_t cl;
	int32_t pid;
	bool force;
	int rc;

	if (!dp->stall_since || dp->stall_pos != dp->pos) {
		dp->stall_pos = dp->pos;
		dp->stall_since = dp->stall_try = now;
		return 0;
	}
	if (now - dp->stall_try < BUSD_MS)
		return 0;
	dp->stall_try = now;
	force = now - dp->stall_since >= stuck_ns;
	cl = ld_acquire(&f->claim); /* A2: pairs with R2; for the message only */
	rc = bus_ring_repair(dp->r, dp->pos, dp->off, force);
	if (rc != 1)
		return rc;
	pid = BUS_CLAIM_TAG(cl) == (uint32_t)dp->off ? BUS_CLAIM_PID(cl) : 0;
	if (pid > 0 && !bus_pid_gone(pid))
		busd_log(BUS_LOG_WARN,
			 "topic '%s' partition %u: offset %llu stayed claimed by live pid %d for "
			 "%lld ms (stuck_claim_ms): repaired, its record is lost",
			 dp->dt->name, dp->idx, (unsigned long long)dp->off, (int)pid,
			 (long long)((now - dp->stall_since) / BUSD_MS));
	else if (pid > 0)
		busd_log(BUS_LOG_WARN,
			 "topic '%s' partition %u: offset %llu was claimed by pid %d, which died "
			 "before publishing it: repaired, its record is lost",
			 dp->dt->name, dp->idx, (unsigned long long)dp->off, (int)pid);
	else if (BUS_CLAIM_IS_SUM(cl, dp->off))
		busd_log(BUS_LOG_WARN,
			 "topic '%s' partition %u: offset %llu was written whole but not published "
			 "for %lld ms (stuck_claim_ms; its producer stopped or died right before "
			 "publishing): repaired, its record is lost",
			 dp->dt->name, dp->idx, (unsigned long long)dp->off,
			 (long long)((now - dp->stall_since) / BUSD_MS));
	else
		busd_log(BUS_LOG_WARN,
			 "topic '%s' partition %u: offset %llu was claimed by a producer that died "
			 "before naming itself: repaired, its record is lost",
			 dp->dt->name, dp->idx, (unsigned long long)dp->off);
	dp->stall_since = 0;
	return 1;
}

/* True when a claim sits unpublished at dp->pos.  The claim word is on the
 * line just polled; the tail (the producers' hottest line) is read only
 * when it says nothing, which happens once per pass at most. */
static bool claim_pending(const struct dpart *dp, const struct bus_frame *f)
{
	uint64_t cl = ld_acquire(&f->claim); /* A2: pairs with R2 */

	/* A claim word always holds its owner's pid: a zeroed one is no claim.
	 * A sum is a frame about to be published (layout.h). */
	if ((BUS_CLAIM_PID(cl) > 0 && BUS_CLAIM_TAG(cl) == (uint32_t)dp->off) ||
	    BUS_CLAIM_IS_SUM(cl, dp->off))
		return true;
	/* A claim exists (pairs with the claim's CAS); only a hint:
	 * bus_ring_repair() re-reads everything it decides on. */
	return ld_acquire(&dp->r->hdr->tail.pos) > dp->pos;
}

/*
 * part_read() - hand the frames from dp->pos on to the writer, up to
 * @budget bytes (*done counts them).  Stops at the first frame not yet
 * published.  Returns 0 or the writer's error (the frame at dp->pos is
 * then not taken); sets dp->stopped on a frame that does not parse.
 */
static int part_read(struct busd *d, struct dpart *dp, uint64_t budget, uint64_t *done)
{
	struct bus_ring *r = dp->r;
	uint64_t pf = dp->pos;
	int err;

	while (*done < budget) {
		struct bus_frame *f;
		uint64_t w;
		uint32_t len;
		bool copy;

		/* After the previous frame's reads (and its append's), before
		 * any writer call (TRUNCATION above). */
		if (part_lost(dp))
			return 0;
		bus_ring_prefetch(r, &pf, dp->pos, PREFETCH_AHEAD); /* see PREFETCH_AHEAD */

		if (dp->off < dp->gap_to) {
			err = append_lost(dp);
			if (err)
				return err;
			*done += BUS_FRAME_HDR;
			continue;
		}
		f = frame_at(r, dp->pos);
		w = ld_acquire(&f->commit); /* A3: pairs with R3 */
		copy = dp->off < dp->prot_off;
		if (w == 0 || BUS_COMMIT_TAG(w) != (uint32_t)dp->off) {
			if (ring_lapped(r, dp->pos)) {
				if (part_resync(dp) == 0)
					continue;
				return 0;
			}
			if (copy) {
				part_stop(dp, "no record below the spill cursor");
				return 0;
			}
			if (!claim_pending(dp, f)) {
				dp->stall_since = 0;
				return 0;
			}
			err = part_stall(d, dp, f);
			if (err > 0)
				continue;
			if (err < 0)
				part_stop(dp, "a claim that cannot be repaired");
			return 0;
		}
		dp->stall_since = 0;
		len = frame_len(r, dp->pos, w, dp->off);
		if (!len) {
			if (ring_lapped(r, dp->pos)) {
				if (part_resync(dp) == 0)
					continue;
				return 0;
			}
			part_stop(dp, "a frame that does not parse");
			return 0;
		}
		if (BUS_COMMIT_TYPE(w) == BUS_FRAME_PAD) {
			dp->pos += len;
			continue;
		}
		if (dp->off < dp->skip_below) {
			/* In the log already: only the commit word was needed. */
			dp->pos += len;
			dp->off++;
			continue;
		}
		if (copy) {
			err = append_copy(d, dp, len);
			if (err == 1) {
				if (part_resync(dp) == 0)
					continue;
				return 0;
			}
			if (dp->lost)
				return 0;
		} else {
			/* The frame's commit word and sizes were read from
			 * zeros, or the append may write out frames that were. */
			if (part_lost(dp))
				return 0;
			/* In place: the frame is protected (above the cursor,
			 * which moves only after the flush that writes it out),
			 * so the writer writes it straight from the ring, with
			 * its CRC in the claim word, dead since the commit
			 * (bus_seg_append_inplace()). */
			err = bus_seg_append_inplace(dp->w, f, dp->off);
		}
		if (err == -EINVAL) {
			part_stop(dp, "a frame the log refuses");
			return 0;
		}
		if (err)
			return err;
		dp->appended = true;
		dp->pos += len;
		dp->off++;
		*done += len;
		if (copy && dp->off == dp->prot_off)
			dp->pos = dp->prot_pos; /* the cursor's own pair: trust it */
	}
	return 0;
}

/* Sync a quiet partition whose oldest unsynced record was written out
 * fsync_ms ago or more (the writer evaluates its policy only when called,
 * at a write-out).  Counted from that record, not from the last
 * write-out: records written less than fsync_ms apart, none of them
 * synced by its own write-out, stayed unsynced for up to twice fsync_ms.
 * The writer syncs when fsync_ms have passed since its last sync, which
 * came before that record: at once, or (a sync during the pass that
 * wrote it) at a later pass.  Returns 0 or the sync's error (the writer
 * is then closed: part_check_sync()), for the caller's part_fail(). */
static int part_idle_sync(struct busd *d, struct dpart *dp, int64_t now)
{
	int64_t interval = fsync_interval_ns(d);
	int err;

	if (!interval || !dp->unsynced_since || now - dp->unsynced_since < interval)
		return 0;
	err = bus_seg_flush(dp->w);
	part_check_sync(dp, err);
	if (err)
		return err;
	note_unsynced(d, dp, now);
	return 0;
}

/* One pass over partition @dp.  Returns the work done (0: idle). */
static uint64_t part_pass(struct busd *d, struct dpart *dp, int64_t now)
{
	uint64_t budget = dp->r->size / 2, done = 0;
	int err;

	if (budget > BATCH_MAX)
		budget = BATCH_MAX;
	if (dp->stopped || (dp->err && now < dp->retry_at))
		return 0;
	/* A truncation takes the ring's last page: touched here, it faults if
	 * nothing else did (a quiet ring, or a write-out that got EFAULT). */
	bus_ring_probe(dp->r);
	if (part_lost(dp))
		return 0;
	if (!dp->w) {
		err = part_open(d, dp);
		if (err) {
			part_fail(dp, err, now, "open its log");
			return 0;
		}
		if (dp->stopped)
			return 0;
		done = 1; /* read at once, do not nap first */
		now = bus_mono_ns(); /* the open may have synced for long */
	} else if (dp->reopen && !dp->appended) {
		/* A safe point: nothing is buffered.  The next pass opens
		 * the log with the options now in force. */
		err = bus_seg_writer_close(dp->w);
		dp->w = NULL;
		dp->reopen = false;
		if (err)
			part_fail(dp, err, now, "close its log");
		return 1;
	}
	if (dp->appended) {
		/* A write-out failed: the same frames first. */
		err = part_flush(d, dp, now);
		if (err) {
			part_fail(dp, err, now, "write to its log or offset floor");
			return 0;
		}
	}
	err = part_read(d, dp, budget, &done);
	if (part_lost(dp))
		return done; /* nothing written out */
	if (dp->appended) {
		int ferr = part_flush(d, dp, now);
		if (!err)
			err = ferr;
	} else if (!err) {
		err = part_publish(dp); /* padding passed over */
		if (!err && (err = part_idle_sync(d, dp, now)) != 0) {
			/* An episode that this pass's part_ok() must not end
			 * at once: it lasts until a retry goes through. */
			part_fail(dp, err, now, "sync its log");
			return done;
		}
	}
	if (err) {
		/* An append's own write-out may have met the failed sync:
		 * the poisoned writer refuses every append after it. */
		part_check_sync(dp, err);
		part_fail(dp, err, now, "write to its log or offset floor");
		return done;
	}
	part_ok(dp, now);
	return done;
}

/* One pass over every partition busd holds, a batch each. */
uint64_t spill_pass(struct busd *d, int64_t now)
{
	int64_t interval = fsync_interval_ns(d);
	uint64_t work = 0;

	d->next_sync_ns = 0;
	for (uint32_t i = 0; i < d->ntopics; i++) {
		struct dtopic *dt = d->topics[i];

		if (!dt->t)
			continue;
		for (uint32_t p = 0; p < dt->cfg.partitions; p++) {
			struct dpart *dp = &dt->parts[p];

			work += part_pass(d, dp, now);
			/* When part_idle_sync() will sync it: a nap must end
			 * by then (busd.c), or a record stays unsynced for up
			 * to idle_sleep_ms past the interval.  Not a partition
			 * without a writer, stopped, or failing (it waits for
			 * its retry): its sync is not due, and a time past
			 * would keep busd from napping. */
			if (interval && dp->unsynced_since && dp->w && !dp->stopped && !dp->err &&
			    (!d->next_sync_ns || dp->unsynced_since + interval < d->next_sync_ns))
				d->next_sync_ns = dp->unsynced_since + interval;
		}
	}
	return work;
}

/* Flush and close @dp's writer, and give up being its spiller. */
void spill_part_close(struct busd *d, struct dpart *dp)
{
	int32_t self = d->pid;

	if (dp->w) {
		/* Publish what the close writes out only if a flush first
		 * succeeds; the close then has nothing left to lose. */
		if (dp->appended)
			(void)part_flush(d, dp, bus_mono_ns());
		(void)bus_seg_writer_close(dp->w); /* it logs its own failure */
		dp->w = NULL;
	}
	/* RS3: let go of the partition (a later busd takes it). */
	if (atomic_compare_exchange_strong(&dp->r->hdr->spiller_pid, &self, 0))
		bus_space_wake(dp->r->hdr, true); /* as part_halt() */
}

/* True when @dp spilled everything below its drain target, or cannot go
 * on (stopped). */
static bool part_drained(const struct dpart *dp)
{
	return dp->stopped || (dp->w && !dp->appended && dp->pub_off >= dp->drain_to);
}

/* Note every partition's drain target: its next offset now. */
void spill_drain_begin(struct busd *d)
{
	for (uint32_t i = 0; i < d->ntopics; i++) {
		struct dtopic *dt = d->topics[i];

		for (uint32_t p = 0; dt->t && p < dt->cfg.partitions; p++) {
			struct dpart *dp = &dt->parts[p];
			/* Every record claimed so far (a snapshot; pairs with
			 * the claims' CAS); a claim that stays unpublished is
			 * repaired on the way. */
			dp->drain_to = ld_acquire(&dp->r->hdr->tail.off) & ~BUS_TAIL_EXCL;
		}
	}
}

/* True when every partition reached its drain target. */
bool spill_drain_done(const struct busd *d)
{
	for (uint32_t i = 0; i < d->ntopics; i++) {
		const struct dtopic *dt = d->topics[i];

		for (uint32_t p = 0; dt->t && p < dt->cfg.partitions; p++)
			if (!part_drained(&dt->parts[p]))
				return false;
	}
	return true;
}

/* Say, per partition, what a drain cut short left unspilled. */
void spill_drain_report(const struct busd *d)
{
	for (uint32_t i = 0; i < d->ntopics; i++) {
		const struct dtopic *dt = d->topics[i];

		for (uint32_t p = 0; dt->t && p < dt->cfg.partitions; p++) {
			const struct dpart *dp = &dt->parts[p];

			if (dp->pub_off >= dp->drain_to)
				continue;
			if (dp->stopped)
				busd_log(BUS_LOG_WARN,
					 "topic '%s' partition %u: stopped after an error: offsets "
					 "%llu..%llu stay in the ring only",
					 dt->name, p, (unsigned long long)dp->pub_off,
					 (unsigned long long)dp->drain_to - 1);
			else if (!part_drained(dp))
				busd_log(BUS_LOG_WARN,
					 "topic '%s' partition %u: offsets %llu..%llu not "
					 "spilled: they stay in the ring, for the next busd "
					 "(unless the shared memory goes first)",
					 dt->name, p, (unsigned long long)dp->pub_off,
					 (unsigned long long)dp->drain_to - 1);
		}
	}
}

/* Ask every open writer to reopen with the options now in force. */
void spill_reopen_all(struct busd *d)
{
	for (uint32_t i = 0; i < d->ntopics; i++) {
		struct dtopic *dt = d->topics[i];

		for (uint32_t p = 0; dt->t && p < dt->cfg.partitions; p++)
			dt->parts[p].reopen = dt->parts[p].w != NULL;
	}
}

/* Apply each topic's retention to each of its partitions' logs. */
void spill_retention(struct busd *d)
{
	int64_t now = bus_now_ns();

	for (uint32_t i = 0; i < d->ntopics; i++) {
		struct dtopic *dt = d->topics[i];

		if (!dt->t || (!dt->cfg.retention_ms && !dt->cfg.retention_bytes))
			continue;
		for (uint32_t p = 0; p < dt->cfg.partitions; p++) {
			struct dpart *dp = &dt->parts[p];
			uint64_t earliest = 0;
			int rc = bus_seg_retain(dp->dir, now, dt->cfg.retention_ms,
						dt->cfg.retention_bytes, &earliest);

			if (rc > 0)
				busd_log(BUS_LOG_INFO,
					 "topic '%s' partition %u: retention deleted %d segment%s; "
					 "the earliest offset on disk is now %llu",
					 dt->name, p, rc, rc == 1 ? "" : "s",
					 (unsigned long long)earliest);
			else if (rc < 0 && rc != -ENOENT && rc != dp->retain_err)
				busd_log(BUS_LOG_WARN,
					 "topic '%s' partition %u: retention in %s: %s", dt->name,
					 p, dp->dir, bus_strerror(rc));
			dp->retain_err = rc < 0 && rc != -ENOENT ? rc : 0;
		}
	}
}
