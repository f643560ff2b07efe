/* topic.c - the topic table in the control region, and this process's cache
 * of opened topics.
 *
 * Table protocol (no lock, no daemon).  Slots are probed linearly from
 * hash(name) % BUS_TOPICS_MAX; a FREE slot ends the probe, tombstones
 * (DELETED) do not.  A creator claims the first FREE or DELETED slot with a
 * CAS on its state word (FREE/DELETED -> CLAIMED(pid)), writes name and
 * config, publishes them with a release store (-> CREATING), creates the
 * rings, and publishes the topic with a release store (-> READY).  Readers
 * load the state word with acquire before reading name or config.
 *
 * Two creators of one name can claim different slots (one of them a
 * tombstone ahead of the other's).  So, once CREATING and before making any
 * ring, a creator issues a seq_cst fence (F1) and scans the whole probe
 * chain for a rival of the same name: of two creators at least one sees the
 * other.  A rival READY, or CREATING from a lower probe position, wins: the
 * creator withdraws (no ring exists yet) and adopts the rival's topic.  A
 * rival CREATING from a higher position is waited for: it withdraws, or it
 * missed us and becomes READY, and we yield.  A slot of the same name
 * being deleted is waited for too (in the probe, before claiming): its logs
 * are retired only at the end of the delete, and a topic created before
 * that would continue them.  Generations carry the slot index in their low
 * 8 bits, so two slots never name the same ring files.
 * A slot CLAIMED, CREATING or DELETING by a process that died is turned
 * into a tombstone by whoever meets it; a dead deleter's delete is finished
 * (its rings removed, its logs retired).  A CREATING slot also records its
 * creator's start time, so that a creator that died is known even once
 * its pid went to another process (slot_gone()).
 *
 * The cache maps names to struct bus_topic handles in an RCU lock-free
 * hash table (liburcu, bulletproof flavour: callers need not register).
 * Handles are reference-counted; the table holds one reference.
 */
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "segment.h"

#define BUS_SLOT_CLAIMED 5 /* claimed by pid, name not yet written */

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

uint32_t bus_partition_for_key(const void *key, size_t key_len, uint32_t partitions)
{
	const uint8_t *k = key;
	uint64_t h = 14695981039346656037ull;

	if (!partitions)
		return 0;
	for (size_t i = 0; i < key_len; i++) {
		h ^= k[i];
		h *= 1099511628211ull;
	}
	return (uint32_t)(h % partitions);
}

void bus_topic_config_init(struct bus_topic_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->partitions = 1;
	cfg->ring_size = BUS_RING_DEFAULT;
	cfg->overflow = BUS_OVERFLOW_BLOCK;
	cfg->numa_node = -1;
}

void bus_cfg_to_disk(const struct bus_topic_config *c, struct bus_topic_cfg_disk *d)
{
	memset(d, 0, sizeof(*d));
	d->partitions = c->partitions;
	d->flags = c->flags;
	d->ring_size = c->ring_size;
	d->retention_ms = c->retention_ms;
	d->retention_bytes = c->retention_bytes;
	d->overflow = c->overflow;
	d->numa_node = c->numa_node;
}

void bus_cfg_from_disk(const struct bus_topic_cfg_disk *d, struct bus_topic_config *c)
{
	memset(c, 0, sizeof(*c));
	c->partitions = d->partitions;
	c->flags = d->flags;
	c->ring_size = d->ring_size;
	c->retention_ms = d->retention_ms;
	c->retention_bytes = d->retention_bytes;
	c->overflow = d->overflow;
	c->numa_node = d->numa_node;
}

static bool cfg_valid(const struct bus_topic_cfg_disk *c)
{
	return c->partitions >= 1 && c->partitions <= BUS_PARTITIONS_MAX &&
	       c->ring_size >= BUS_RING_MIN && c->ring_size <= BUS_RING_MAX &&
	       (c->ring_size & (c->ring_size - 1)) == 0 && (c->flags & ~(BUS_TOPIC_EPHEMERAL | BUS_TOPIC_PRIVATE)) == 0 &&
	       c->overflow <= BUS_OVERFLOW_OVERWRITE && c->numa_node >= -1 && c->numa_node < 1024;
}

/* Name and config of a slot are copied in and out word by word with
 * relaxed atomics: a reader may race with a process reusing the slot, and
 * re-checks the state word afterwards (a seqlock whose version is the state
 * word with its generation). */
static void words_load(void *dst, const void *src, size_t n)
{
	const _Atomic uint64_t *s = src;
	uint64_t *d = dst;

	for (size_t i = 0; i < n / 8; i++)
		d[i] = ld_relaxed(&s[i]);
}

static void words_store(void *dst, const void *src, size_t n)
{
	_Atomic uint64_t *d = dst;
	const uint64_t *s = src;

	for (size_t i = 0; i < n / 8; i++)
		st_relaxed(&d[i], s[i]);
}
_Static_assert(sizeof(((struct bus_topic_slot *)0)->name) % 8 == 0, "name in words");
_Static_assert(sizeof(struct bus_topic_cfg_disk) % 8 == 0, "config in words");
_Static_assert(offsetof(struct bus_topic_slot, cfg) % 8 == 0, "config aligned");

/* Copy name and config of slot @ts, which was seen in state word @w.
 * Returns 0, -EAGAIN when the slot changed meanwhile (look again), or
 * -BUS_ECORRUPT when the name is not a valid, terminated name (a corrupt or
 * hostile control region).  @cfg may be NULL. */
static int slot_read(const struct bus_topic_slot *ts, uint64_t w, char *name,
		     struct bus_topic_cfg_disk *cfg)
{
	char buf[BUS_NAME_MAX + 1];
	struct bus_topic_cfg_disk c;

	words_load(buf, ts->name, sizeof(buf));
	words_load(&c, &ts->cfg, sizeof(c));
	/* A5: the copies above before the re-check of the version. */
	atomic_thread_fence(memory_order_acquire);
	if (ld_relaxed(&ts->state) != w)
		return -EAGAIN;
	if (memchr(buf, 0, sizeof(buf)) == NULL || !bus_name_valid(buf))
		return -BUS_ECORRUPT;
	memcpy(name, buf, sizeof(buf));
	if (cfg)
		*cfg = c;
	return 0;
}

static void unlink_rings(struct bus *b, const char *name, uint32_t gen, uint32_t parts)
{
	char path[4200];

	for (uint32_t p = 0; p < parts && p < BUS_PARTITIONS_MAX; p++) {
		bus_ring_path(b, name, gen, p, path, sizeof(path));
		unlink(path);
	}
}

static void retire_logs(struct bus *b, const char *topic, uint32_t gen);

/* Wake the consumers asleep on a topic that was just deleted (its slot's
 * DELETED stored), so that each returns -BUS_ESTALE now rather than when
 * its wait ends by itself (BUS_WAIT_RECHECK_NS, or its deadline).  Called
 * whether or not `sleepers` reads 0: a consumer checks the topic
 * (bus_topic_check()) before it announces itself, so a delete between its
 * check and its announcement would see no sleeper, yet it is about to
 * sleep.
 * ORDERING: the DELETED store (release) comes before the wake_seq bump and
 * FUTEX_WAKE; a sleeper whose FUTEX_WAIT returns through that wake, or
 * fails because wake_seq moved, observes the DELETED word (the futex calls
 * order the waker's earlier stores before the waiter's later loads:
 * kernel/futex, "smp_mb (A)/(B)").  A consumer that checked the topic
 * before the DELETED store and loads wake_seq after the bump checks the
 * topic again in its last look before FUTEX_WAIT (consumer.c, any_ready()),
 * after its WA1 acquire read the bump: it sees DELETED.  Deletes are rare:
 * the system call is paid whether or not one sleeps. */
static void wake_stale(struct bus_topic_slot *ts)
{
	bus_wake_slow(ts);
}

/* Whether the owner of slot @ts, read as @w (acquire), is gone: its pid
 * is dead, or, for CREATING, now names a process that started at another
 * time than the creator (the pid was reused: waiting for it would last as
 * long as that unrelated process; bus_owner_gone()).  owner_start is
 * stored before R4, so the value read goes with @w, unless the slot
 * changed since, which the caller's CAS or re-read of the state finds.  A start time that cannot
 * be read (0: unknown, as an older creator's) counts as alive. */
static bool slot_gone(const struct bus_topic_slot *ts, uint64_t w)
{
	uint32_t start = BUS_SLOT_STATE(w) == BUS_SLOT_CREATING ? ld_relaxed(&ts->owner_start) : 0;

	return bus_owner_gone(BUS_OWNER(BUS_SLOT_PID(w), start));
}

/* A creator's move of its slot @ts out of CREATING: from @mine, its own
 * word, to @next, with release (R5 and the withdrawals: what the creator
 * wrote before is visible with @next).  A CAS, not a store: a creator
 * reaped meanwhile (taken for dead: slot_gone()) must not overwrite what
 * the reaper, or a creator after it, put there.  Returns false when the
 * slot no longer holds @mine. */
static bool slot_leave(struct bus_topic_slot *ts, uint64_t mine, uint64_t next)
{
	return atomic_compare_exchange_strong_explicit(&ts->state, &mine, next,
						       memory_order_release, memory_order_relaxed);
}

/* A slot held by a dead process in a transient state becomes a tombstone.
 * A dead creator's rings are removed; a dead deleter's delete is finished
 * as bus_topic_delete() would have: its rings removed and, for a persistent
 * topic, its logs retired, so that the name created again starts a new log
 * instead of continuing (and showing) the deleted one.
 * Returns true when the caller should re-read the slot. */
static bool slot_reap(struct bus *b, struct bus_topic_slot *ts, uint64_t w)
{
	uint32_t st = BUS_SLOT_STATE(w);
	char name[BUS_NAME_MAX + 1];
	struct bus_topic_cfg_disk cfg;

	if (st != BUS_SLOT_CLAIMED && st != BUS_SLOT_CREATING && st != BUS_SLOT_DELETING)
		return false;
	if (!slot_gone(ts, w))
		return false;
	if (!atomic_compare_exchange_strong(&ts->state, &w,
					    BUS_SLOT_WORD(BUS_SLOT_DELETING, BUS_SLOT_GEN(w), getpid())))
		return true;
	w = BUS_SLOT_WORD(BUS_SLOT_DELETING, BUS_SLOT_GEN(w), getpid());
	if (st != BUS_SLOT_CLAIMED && slot_read(ts, w, name, &cfg) == 0) {
		unlink_rings(b, name, BUS_SLOT_GEN(w), cfg.partitions);
		if (st == BUS_SLOT_DELETING && !(cfg.flags & BUS_TOPIC_EPHEMERAL))
			retire_logs(b, name, BUS_SLOT_GEN(w));
	}
	st_release(&ts->state, BUS_SLOT_WORD(BUS_SLOT_DELETED, BUS_SLOT_GEN(w), 0));
	if (st == BUS_SLOT_DELETING)
		wake_stale(ts);
	return true;
}

/* How long a creator waits for a slot CLAIMED by a live process. */
#define BUS_CLAIMED_WAIT_NS 2000000000ll

/* Wait while slot @ts keeps state word @w and its owner lives.  Returns 0
 * once it changed, or -EBUSY when it stayed CLAIMED for
 * BUS_CLAIMED_WAIT_NS: a creator holds that state only for the few stores
 * between its claim and CREATING, so a live pid still there is a stopped
 * process, a reused pid or a forged word, and waiting on would hang the
 * caller for as long as that pid lives.  CREATING and DELETING are waited
 * for without a limit: making big rings takes as long as it takes (a
 * CREATING slot whose pid went to another process ends the wait:
 * slot_gone()). */
static int slot_wait(const struct bus_topic_slot *ts, uint64_t w)
{
	int64_t deadline = bus_mono_ns() + BUS_CLAIMED_WAIT_NS;

	while (ld_acquire(&ts->state) == w && !slot_gone(ts, w)) {
		if (BUS_SLOT_STATE(w) == BUS_SLOT_CLAIMED && bus_mono_ns() > deadline)
			return -EBUSY;
		usleep(200);
	}
	return 0;
}

enum find_mode { FIND_LOOKUP, FIND_CREATE };

/* Probe for @name.  Returns the index of its READY slot (>= 0); or, when
 * absent, -ENOENT with *reuse set to the first claimable slot (or -1).  In
 * FIND_CREATE mode it waits out slots whose name is not yet known or that
 * are being created or deleted under the same name (-EBUSY: slot_wait()). */
static int slot_find(struct bus *b, const char *name, enum find_mode mode, int *reuse,
		     uint64_t *word)
{
	uint32_t home = name_hash(name) % BUS_TOPICS_MAX;
	char sname[BUS_NAME_MAX + 1];

	*reuse = -1;
	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++) {
		uint32_t idx = (home + i) % BUS_TOPICS_MAX;
		struct bus_topic_slot *ts = bus_slot(b, idx);
		uint64_t w = ld_acquire(&ts->state); /* A4: pairs with R4/R5 */
		uint32_t st = BUS_SLOT_STATE(w);

		switch (st) {
		case BUS_SLOT_FREE:
			if (*reuse < 0)
				*reuse = (int)idx;
			return -ENOENT;
		case BUS_SLOT_DELETED:
			if (*reuse < 0)
				*reuse = (int)idx;
			continue;
		case BUS_SLOT_READY: {
			int err = slot_read(ts, w, sname, NULL);
			if (err == -EAGAIN) {
				i--; /* re-read this slot */
				continue;
			}
			if (err)
				return err;
			if (strcmp(sname, name) == 0) {
				*word = w;
				return (int)idx;
			}
			continue;
		}
		case BUS_SLOT_CLAIMED:
		case BUS_SLOT_CREATING:
		case BUS_SLOT_DELETING:
			if (slot_reap(b, ts, w)) {
				i--; /* re-read this slot */
				continue;
			}
			if (mode == FIND_LOOKUP)
				continue;
			if (st != BUS_SLOT_CLAIMED) {
				/* CREATING and DELETING slots hold their name. */
				int err = slot_read(ts, w, sname, NULL);
				if (err == -EAGAIN) {
					i--;
					continue;
				}
				if (err || strcmp(sname, name) != 0)
					continue;
			}
			/* Unknown name yet, or our name being created, or being
			 * deleted (a create before the deleter has retired the
			 * logs would continue them, and lose its own logs to
			 * the deleter's rename): wait. */
			if (slot_wait(ts, w))
				return -EBUSY;
			i--;
			continue;
		default:
			return -BUS_ECORRUPT;
		}
	}
	return -ENOENT;
}

/* 0 when READY slot @idx (state word @w) holds config @d, -BUS_ECONFIG when
 * another, -EAGAIN when the slot changed meanwhile. */
static int cfg_check_same(struct bus *b, uint32_t idx, uint64_t w, const struct bus_topic_cfg_disk *d)
{
	char name[BUS_NAME_MAX + 1];
	struct bus_topic_cfg_disk have;
	int err = slot_read(bus_slot(b, idx), w, name, &have);

	if (err)
		return err;
	return memcmp(&have, d, sizeof(*d)) == 0 ? 0 : -BUS_ECONFIG;
}

static void log_memory(struct bus *b, const char *name, const struct bus_ring *r)
{
	if (r->map.huge == 1)
		bus_log(b, BUS_LOG_INFO, "topic '%s': rings on hugetlbfs huge pages in %s", name,
			b->shm_dir);
	else if (r->map.huge == 2)
		bus_log(b, BUS_LOG_INFO,
			"topic '%s': rings on shmem with transparent huge pages requested (madvise) in %s",
			name, b->shm_dir);
	else
		bus_log(b, BUS_LOG_INFO,
			"topic '%s': rings on normal pages in %s (no usable hugetlbfs mount, shmem THP off)",
			name, b->shm_dir);
}

/* Called by a creator whose slot @own is CREATING for @name: look for
 * another slot of @name in the whole probe chain (home up to the first FREE
 * slot; a creator's slot always lies before it).  Returns -1 to go on
 * creating, or >= 0 when the caller must withdraw and start over: another
 * slot is READY with @name, or is CREATING it from a lower probe position.
 * One CREATING it from a higher position is waited for: it either withdraws
 * (having seen us) or becomes READY (having missed us, so we yield).
 * Returns -EBUSY when a slot stays CLAIMED by a live process (slot_wait()):
 * the caller withdraws and fails. */
static int slot_rival(struct bus *b, const char *name, uint32_t home, uint32_t own)
{
	uint32_t own_i = (own + BUS_TOPICS_MAX - home) % BUS_TOPICS_MAX;
	char oname[BUS_NAME_MAX + 1];

	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++) {
		uint32_t j = (home + i) % BUS_TOPICS_MAX;
		struct bus_topic_slot *o = bus_slot(b, j);
		uint64_t ow;
		uint32_t st;
		int err;

		if (i == own_i)
			continue;
		ow = ld_acquire(&o->state);
		st = BUS_SLOT_STATE(ow);
		if (st == BUS_SLOT_FREE)
			return -1;
		if (slot_reap(b, o, ow)) {
			i--;
			continue;
		}
		if (st == BUS_SLOT_CLAIMED) {
			if (slot_wait(o, ow))
				return -EBUSY;
			i--;
			continue;
		}
		if (st != BUS_SLOT_READY && st != BUS_SLOT_CREATING)
			continue;
		err = slot_read(o, ow, oname, NULL);
		if (err == -EAGAIN) {
			i--;
			continue;
		}
		if (err || strcmp(oname, name) != 0)
			continue;
		if (st == BUS_SLOT_READY || i < own_i)
			return (int)j;
		(void)slot_wait(o, ow); /* CREATING: no limit */
		i--;
	}
	return -1;
}

/* The offset @topic's partition @part continues at (0 when it has no log):
 * the end of its log on disk, or its durable offset floor when that is
 * higher (see "offset floor" in segment.h), so that a topic re-created over
 * its logs (after a reboot) gives out no offset twice. */
static int disk_next_offset(struct bus *b, const char *topic, uint32_t part, uint64_t *next)
{
	char dir[4200];
	struct bus_seg_bounds sb;
	uint64_t floor = 0;
	int err = bus_part_dir(b, topic, part, dir, sizeof(dir));

	*next = 0;
	if (err)
		return err;
	err = bus_seg_bounds(dir, &sb);
	if (err == -ENOENT)
		return 0;
	if (err) {
		bus_log(b, BUS_LOG_ERROR, "topic '%s' partition %u: cannot read its log in %s: %s",
			topic, part, dir, bus_strerror(err));
		return err;
	}
	err = bus_seg_floor_read(dir, &floor);
	if (err) {
		/* Without the floor the log's end is all we know: go on from
		 * there, and say what that risks. */
		bus_log(b, BUS_LOG_ERROR,
			"topic '%s' partition %u: cannot read its offset floor in %s: %s; "
			"continuing at the end of the log (offsets handed out before the restart "
			"and not in the log may be given out again)",
			topic, part, dir, bus_strerror(err));
		floor = 0;
	}
	if (sb.segments)
		*next = sb.next;
	if (floor > *next) {
		bus_log(b, BUS_LOG_INFO,
			"topic '%s' partition %u: continues at its offset floor %llu (the log ends "
			"at %llu; the offsets in between may have been handed out before the "
			"restart, and are skipped)",
			topic, part, (unsigned long long)floor, (unsigned long long)*next);
		*next = floor;
	} else if (sb.segments) {
		bus_log(b, BUS_LOG_INFO, "topic '%s' partition %u: continues its log at offset %llu",
			topic, part, (unsigned long long)sb.next);
	}
	return 0;
}

/* Move a deleted persistent topic's logs out of the way (busd removes
 * them): a topic re-created with that name starts a new log. */
static void retire_logs(struct bus *b, const char *topic, uint32_t gen)
{
	char from[4200], to[4200];
	int n;

	if (bus_topic_dir(b, topic, from, sizeof(from)))
		return;
	n = snprintf(to, sizeof(to), "%s/" BUS_DELETED_PREFIX "%s.%u.%d", b->data_dir, topic, gen,
		     (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(to))
		return;
	if (rename(from, to) && errno != ENOENT)
		bus_log(b, BUS_LOG_WARN, "topic '%s' deleted, but its logs in %s stay: %s", topic,
			from, strerror(errno));
}

static int topic_create(struct bus *b, const char *name, const struct bus_topic_config *cfg)
{
	struct bus_topic_cfg_disk d;
	uint32_t home;
	int idx, reuse, err;
	uint64_t w;

	bus_cfg_to_disk(cfg, &d);
	if (b->flags & BUS_F_PRIVATE)
		d.flags |= BUS_TOPIC_PRIVATE;
	if (!cfg_valid(&d))
		return -EINVAL;
	home = name_hash(name) % BUS_TOPICS_MAX;
	for (;;) {
		struct bus_topic_slot *ts;
		uint32_t gen;
		struct bus_ring r;

		idx = slot_find(b, name, FIND_CREATE, &reuse, &w);
		if (idx >= 0) {
			err = cfg_check_same(b, (uint32_t)idx, w, &d);
			if (err == -EAGAIN)
				continue; /* deleted meanwhile: start over */
			return err;
		}
		if (idx != -ENOENT)
			return idx;
		if (reuse < 0)
			return -ENOMEM;
		ts = bus_slot(b, (uint32_t)reuse);
		w = ld_acquire(&ts->state);
		if (BUS_SLOT_STATE(w) != BUS_SLOT_FREE && BUS_SLOT_STATE(w) != BUS_SLOT_DELETED)
			continue;
		/* The low bits name the slot, so that two slots never hand
		 * out the same (name, generation) and so the same ring files. */
		gen = (((BUS_SLOT_GEN(w) | (BUS_TOPICS_MAX - 1)) + 1) | (uint32_t)reuse) & 0xffffffu;
		if (!atomic_compare_exchange_strong(&ts->state, &w,
						    BUS_SLOT_WORD(BUS_SLOT_CLAIMED, gen, getpid())))
			continue;
		{
			char nbuf[BUS_NAME_MAX + 1] = { 0 };
			memcpy(nbuf, name, strlen(name));
			words_store(ts->name, nbuf, sizeof(nbuf));
			words_store(&ts->cfg, &d, sizeof(d));
		}
		ts->name_hash = name_hash(name);
		st_relaxed(&ts->created_ns, bus_now_ns()); /* published by R4 */
		st_relaxed(&ts->owner_start, bus_pid_start(getpid())); /* likewise */
		/* `sleepers` and `wake_seq` are left as they are: consumers of
		 * the slot's previous topic may still be asleep on them (or
		 * about to sleep), and a cleared flag would leave them
		 * unwoken until their recheck (wait.c). */
		/* R4: name and config visible before anyone reads them. */
		st_release(&ts->state, BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, getpid()));

		/* F1: our CREATING before our reads of the other slots; pairs
		 * with F1 of any other creator, so that of two creators of one
		 * name at least one sees the other. */
		atomic_thread_fence(memory_order_seq_cst);
		err = slot_rival(b, name, home, (uint32_t)reuse);
		/* Our slot and the probe were zeros: no ring files for that. */
		if (err == -1 && bus_ctl_lost(b))
			return -BUS_ECORRUPT;
		if (err >= 0 || err == -EBUSY) {
			/* No ring made yet: withdraw, then find the other's
			 * (or fail).  A failed CAS: reaped meanwhile, which
			 * withdrew us already. */
			(void)slot_leave(ts, BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, getpid()),
					 BUS_SLOT_WORD(BUS_SLOT_DELETED, gen, 0));
			if (err == -EBUSY)
				return err;
			continue;
		}

		err = 0;
		for (uint32_t p = 0; p < d.partitions; p++) {
			uint64_t start = 0;
			if (!(d.flags & BUS_TOPIC_EPHEMERAL))
				err = disk_next_offset(b, name, p, &start);
			if (!err)
				err = bus_ring_create(b, name, gen, p, &d, start, &r);
			if (err)
				break;
			if (p == 0)
				log_memory(b, name, &r);
			bus_ring_detach(&r);
		}
		if (!err)
			err = bus_ctl_lost(b); /* truncated meanwhile: the files go */
		if (err) {
			if (err == -EEXIST) /* left over by a crashed creator */
				err = -BUS_ECORRUPT;
			unlink_rings(b, name, gen, d.partitions);
			(void)slot_leave(ts, BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, getpid()),
					 BUS_SLOT_WORD(BUS_SLOT_DELETED, gen, 0));
			return err;
		}
		/* R5: rings complete before the topic is visible. */
		if (!slot_leave(ts, BUS_SLOT_WORD(BUS_SLOT_CREATING, gen, getpid()),
				BUS_SLOT_WORD(BUS_SLOT_READY, gen, 0))) {
			/* Taken for dead and reaped (a stop of seconds and a
			 * pid seen differently, say): the reaper removed our
			 * rings, or will, and the slot may hold another topic
			 * now.  Start over. */
			unlink_rings(b, name, gen, d.partitions);
			continue;
		}
		return 0;
	}
}

static int topic_delete(struct bus *b, const char *name)
{
	int reuse, idx;
	uint64_t w;
	struct bus_topic_slot *ts;

	for (;;) {
		idx = slot_find(b, name, FIND_LOOKUP, &reuse, &w);
		if (idx < 0)
			return idx;
		ts = bus_slot(b, (uint32_t)idx);
		if (atomic_compare_exchange_strong(
			    &ts->state, &w, BUS_SLOT_WORD(BUS_SLOT_DELETING, BUS_SLOT_GEN(w), getpid())))
			break;
	}
	{
		struct bus_topic_cfg_disk cfg;
		char sname[BUS_NAME_MAX + 1];
		w = BUS_SLOT_WORD(BUS_SLOT_DELETING, BUS_SLOT_GEN(w), getpid());
		if (slot_read(ts, w, sname, &cfg) == 0) { /* ours now: cannot change */
			unlink_rings(b, name, BUS_SLOT_GEN(w), cfg.partitions);
			if (!(cfg.flags & BUS_TOPIC_EPHEMERAL))
				retire_logs(b, name, BUS_SLOT_GEN(w));
		}
	}
	st_release(&ts->state, BUS_SLOT_WORD(BUS_SLOT_DELETED, BUS_SLOT_GEN(w), 0));
	wake_stale(ts);
	return 0;
}

/* The calls on the topic table read the control region, and a truncated
 * one reads as zeros: free slots, no topic.  So each checks, after its
 * last access, that it did not read zeros (bus_ctl_lost()), and returns
 * -BUS_ECORRUPT rather than "no such topic" or an empty list. */
int bus_topic_create(struct bus *b, const char *name, const struct bus_topic_config *cfg)
{
	int err, lost;

	if (!b || !cfg || !bus_name_valid(name))
		return -EINVAL;
	if ((err = bus_ctl_lost(b)) != 0)
		return err;
	err = topic_create(b, name, cfg);
	lost = bus_ctl_lost(b);
	return lost ? lost : err;
}

int bus_topic_delete(struct bus *b, const char *name)
{
	int err, lost;

	if (!b || !bus_name_valid(name))
		return -EINVAL;
	if ((err = bus_ctl_lost(b)) != 0)
		return err;
	err = topic_delete(b, name);
	lost = bus_ctl_lost(b);
	return lost ? lost : err;
}

static int slot_info(struct bus *b, uint32_t idx, uint64_t w, struct bus_topic_info *out)
{
	struct bus_topic_cfg_disk d;
	int err = slot_read(bus_slot(b, idx), w, out->name, &d);

	if (err)
		return err;
	if (!cfg_valid(&d))
		return -BUS_ECORRUPT;
	bus_cfg_from_disk(&d, &out->config);
	out->generation = BUS_SLOT_GEN(w);
	return 0;
}

int bus_topic_describe(struct bus *b, const char *name, struct bus_topic_info *out)
{
	int reuse, idx, lost;
	uint64_t w;

	if (!b || !out || !bus_name_valid(name))
		return -EINVAL;
	idx = slot_find(b, name, FIND_LOOKUP, &reuse, &w);
	if (idx >= 0) {
		idx = slot_info(b, (uint32_t)idx, w, out);
		if (idx == -EAGAIN)
			idx = -ENOENT;
	}
	lost = bus_ctl_lost(b);
	return lost ? lost : idx;
}

int bus_topic_list(struct bus *b, int (*fn)(void *ctx, const struct bus_topic_info *ti), void *ctx)
{
	int bad = 0, lost;

	if (!b || !fn)
		return -EINVAL;
	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++) {
		uint64_t w = ld_acquire(&bus_slot(b, i)->state);
		struct bus_topic_info ti;
		int err;

		if (BUS_SLOT_STATE(w) != BUS_SLOT_READY)
			continue;
		err = slot_info(b, i, w, &ti);
		/* Before the call: no zeros are handed out as a topic. */
		if (bus_ctl_lost(b))
			break;
		if (err == -EAGAIN)
			continue; /* deleted while we looked */
		if (err) {
			/* One damaged slot must not hide the topics after
			 * it: they are listed, and the damage is told at
			 * the end. */
			bad = err;
			continue;
		}
		err = fn(ctx, &ti);
		if (err)
			return err;
	}
	lost = bus_ctl_lost(b);
	return lost ? lost : bad;
}

/* ---------------------------------------------------------------- cache */

static void topic_free(struct bus_topic *t)
{
	if (t->rings)
		for (uint32_t p = 0; p < t->cfg.partitions; p++)
			bus_ring_detach(&t->rings[p]);
	free(t->rings);
	free(t);
}

void bus_topic_put(struct bus_topic *t)
{
	if (t && atomic_fetch_sub(&t->refs, 1) == 1)
		topic_free(t);
}

static bool topic_get_unless_zero(struct bus_topic *t)
{
	long r = ld_relaxed(&t->refs);
	while (r > 0)
		if (atomic_compare_exchange_weak(&t->refs, &r, r + 1))
			return true;
	return false;
}

/* The node is the first member of struct bus_topic. */
static inline struct bus_topic *topic_of(struct cds_lfht_node *node)
{
	_Static_assert(offsetof(struct bus_topic, node) == 0, "node first");
	return (struct bus_topic *)(void *)node;
}

static int match_name(struct cds_lfht_node *node, const void *key)
{
	const struct bus_topic *t = topic_of(node);

	BUS_TSAN_ACQUIRE(t); /* rcu_dereference of the node (see internal.h) */
	return strcmp(t->name, key) == 0;
}

static int topic_open(struct bus *b, const char *name, struct bus_topic **out)
{
	int reuse, idx, err;
	uint64_t w;
	struct bus_topic *t;

	idx = slot_find(b, name, FIND_LOOKUP, &reuse, &w);
	if (idx < 0)
		return idx;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	cds_lfht_node_init(&t->node);
	t->bus = b;
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->slot = (uint32_t)idx;
	t->gen = BUS_SLOT_GEN(w);
	t->ready_word = w;
	t->ts = bus_slot(b, (uint32_t)idx);
	/* Before slot_read()'s A5 fence and re-check: the creation time of the
	 * topic whose state word is @w. */
	t->created_ns = ld_relaxed(&t->ts->created_ns);
	err = slot_read(t->ts, w, t->name, &t->cfg);
	if (!err && !cfg_valid(&t->cfg))
		err = -BUS_ECORRUPT;
	if (err) {
		free(t);
		return err == -EAGAIN ? -ENOENT : err; /* deleted meanwhile */
	}
	atomic_init(&t->refs, 1);
	t->rings = calloc(t->cfg.partitions, sizeof(*t->rings));
	if (!t->rings) {
		free(t);
		return -ENOMEM;
	}
	for (uint32_t p = 0; p < t->cfg.partitions; p++) {
		err = bus_ring_attach(b, name, t->gen, p, &t->cfg, &t->rings[p]);
		if (err) {
			struct bus_topic_slot *ts = t->ts;
			topic_free(t);
			/* Deleted between the lookup and the attach. */
			if (err == -BUS_ECORRUPT && ld_acquire(&ts->state) != w)
				return -ENOENT;
			return err;
		}
	}
	*out = t;
	return 0;
}

/* TSan stand-in for the grace period: readers release it when they leave
 * their read-side section, the updater acquires it after synchronize_rcu. */
static char rcu_gp_token;

static int topic_get(struct bus *b, const char *name, struct bus_topic **out)
{
	unsigned long hash = name_hash(name);

	for (;;) {
		struct cds_lfht_iter iter;
		struct cds_lfht_node *node, *ret;
		struct bus_topic *t, *stale = NULL;
		int err;

		rcu_read_lock();
		cds_lfht_lookup(b->topics, hash, match_name, name, &iter);
		node = cds_lfht_iter_get_node(&iter);
		if (node) {
			t = topic_of(node);
			if (bus_topic_check(t) == 0 && topic_get_unless_zero(t)) {
				BUS_TSAN_RELEASE(&rcu_gp_token);
				rcu_read_unlock();
				*out = t;
				return 0;
			}
			if (cds_lfht_del(b->topics, node) == 0)
				stale = t;
		}
		BUS_TSAN_RELEASE(&rcu_gp_token);
		rcu_read_unlock();
		if (stale) {
			synchronize_rcu(); /* no reader still looks at it */
			BUS_TSAN_ACQUIRE(&rcu_gp_token);
			bus_topic_put(stale);
		}

		err = topic_open(b, name, &t);
		if (err)
			return err;
		atomic_store(&t->refs, 2); /* the table's and the caller's */
		BUS_TSAN_RELEASE(t); /* rcu_assign_pointer in add_unique */
		rcu_read_lock();
		ret = cds_lfht_add_unique(b->topics, hash, match_name, name, &t->node);
		BUS_TSAN_RELEASE(&rcu_gp_token);
		rcu_read_unlock();
		if (ret == &t->node) {
			*out = t;
			return 0;
		}
		topic_free(t); /* another thread won; use its handle */
	}
}

int bus_topic_get(struct bus *b, const char *name, struct bus_topic **out)
{
	struct bus_topic *t = NULL;
	int err, lost;

	if (!bus_name_valid(name))
		return -EINVAL;
	if ((err = bus_ctl_lost(b)) != 0)
		return err;
	err = topic_get(b, name, &t);
	/* The table read as zeros: "no such topic" is not the answer. */
	lost = bus_ctl_lost(b);
	if (lost) {
		if (!err)
			bus_topic_put(t);
		return lost;
	}
	if (!err)
		*out = t;
	return err;
}

void bus_topics_fini(struct bus *b)
{
	struct cds_lfht_iter iter;
	struct cds_lfht_node *node;

	rcu_read_lock();
	cds_lfht_first(b->topics, &iter);
	while ((node = cds_lfht_iter_get_node(&iter)) != NULL) {
		struct bus_topic *t = topic_of(node);
		cds_lfht_next(b->topics, &iter);
		if (cds_lfht_del(b->topics, node) == 0)
			bus_topic_put(t);
	}
	rcu_read_unlock();
	cds_lfht_destroy(b->topics, NULL);
	b->topics = NULL;
}

int bus_partition_describe(struct bus *b, const char *topic, uint32_t partition,
			   struct bus_partition_info *out)
{
	struct bus_topic *t;
	struct bus_ring *r;
	struct bus_ring_hdr *h;
	int err;

	if (!b || !out)
		return -EINVAL;
	err = bus_topic_get(b, topic, &t);
	if (err)
		return err;
	if (partition >= t->cfg.partitions) {
		bus_topic_put(t);
		return -ENOENT;
	}
	r = &t->rings[partition];
	h = r->hdr;
	memset(out, 0, sizeof(*out));
	for (int tries = 0; tries < 1000; tries++) {
		uint64_t pos;
		err = bus_ring_earliest(r, &pos, &out->first_offset);
		if (err != -EAGAIN)
			break;
	}
	out->next_offset = ld_acquire(&h->tail.off) & ~BUS_TAIL_EXCL;
	out->spilled_offset = ld_acquire(&h->spill_off);
	out->replicated_offset = ld_acquire(&h->replicated_off);
	out->write_pos = ld_acquire(&h->tail.pos);
	out->repaired = ld_acquire(&h->repaired);
	out->ring_size = r->size;
	out->hugepages = r->map.huge == 1;
	{
		/* As producers see it (producer.c, spiller_gone()): a busd
		 * left a zombie, or whose pid went to another process since
		 * (busd's owner word in the control region says), spills
		 * nothing: 0, not a pid that kill(2) still answers for. */
		int32_t pid = ld_acquire(&h->spiller_pid);
		out->spiller_pid = bus_spiller_gone(b, pid) ? 0 : pid;
	}
	if (!err && !(t->cfg.flags & BUS_TOPIC_EPHEMERAL)) {
		char dir[4200];
		struct bus_seg_bounds sb;
		if (bus_part_dir(b, topic, partition, dir, sizeof(dir)) == 0 &&
		    bus_seg_bounds(dir, &sb) == 0 && sb.segments) {
			out->disk_segments = sb.segments;
			out->disk_first_offset = sb.first;
			out->disk_next_offset = sb.next;
			out->disk_bytes = sb.disk_bytes;
		}
	}
	{
		/* The header read above may have been zeros. */
		int lost = bus_ring_lost(t, r);
		if (lost)
			err = lost;
	}
	bus_topic_put(t);
	return err;
}
