/* internal.h - process-local structures of libbus, shared by its sources.
 * Nothing here is exported (see libbus.map). */
#ifndef BUS_INTERNAL_H
#define BUS_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "layout.h"
#include "mapguard.h"

#define BUS_LIKELY(x) __builtin_expect(!!(x), 1)
#define BUS_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Internal invariant broken (a bug, not bad input): abort with the place. */
#define BUS_DIE(msg)                                                               \
	do {                                                                       \
		fprintf(stderr, "libbus: fatal: %s at %s:%d\n", (msg), __FILE__, __LINE__); \
		abort();                                                           \
	} while (0)

/* ThreadSanitizer annotations.  liburcu 0.13 (Debian 12) publishes with
 * volatile accesses and inline-asm barriers that TSan does not see; these
 * annotations state the happens-before that liburcu provides
 * (rcu_assign_pointer is a release, rcu_dereference an acquire), so that
 * TSan checks our code rather than reporting the library's idiom. */
#if defined(__SANITIZE_THREAD__)
#define BUS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BUS_TSAN 1
#endif
#endif
#ifdef BUS_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define BUS_TSAN_ACQUIRE(p) __tsan_acquire((void *)(uintptr_t)(p))
#define BUS_TSAN_RELEASE(p) __tsan_release((void *)(uintptr_t)(p))
#else
#define BUS_TSAN_ACQUIRE(p) ((void)(p))
#define BUS_TSAN_RELEASE(p) ((void)(p))
#endif

/* ------------------------------------------------------------- atomics */

#define ld_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define ld_acquire(p) atomic_load_explicit((p), memory_order_acquire)
#define st_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define st_release(p, v) atomic_store_explicit((p), (v), memory_order_release)

/*
 * bus_tail_cas() - 16-byte compare-and-swap of {pos, off}: the one atomic
 * operation of a concurrent claim.  On failure *pos and *off receive the
 * current values.  Full barrier on x86 (lock prefix).
 */
static inline bool bus_tail_cas(struct bus_tail *t, uint64_t *pos, uint64_t *off, uint64_t npos,
				uint64_t noff)
{
#if defined(__x86_64__)
	bool ok;
	__asm__ __volatile__("lock cmpxchg16b %1"
			     : "=@ccz"(ok), "+m"(*t), "+a"(*pos), "+d"(*off)
			     : "b"(npos), "c"(noff)
			     : "memory");
	return ok;
#else
	unsigned __int128 exp = ((unsigned __int128)*off << 64) | *pos;
	unsigned __int128 des = ((unsigned __int128)noff << 64) | npos;
	bool ok = __atomic_compare_exchange_n((unsigned __int128 *)(void *)t, &exp, des, false,
					      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	*pos = (uint64_t)exp;
	*off = (uint64_t)(exp >> 64);
	return ok;
#endif
}

/*
 * bus_tail_read() - the tail {pos, off} as one pair: a 16-byte CAS that
 * compares with {0, 0} (and stores {0, 0} back only where it found that),
 * so a claim made between two plain loads cannot pair one claim's position
 * with another's offset.  A locked write: for rare paths (the repairer), never
 * a producer's or a reader's fast path.  Full barrier on x86.  An exclusive
 * producer stores the two halves with plain stores: read while it runs, the
 * pair may be between them (callers check it is gone first).
 */
static inline void bus_tail_read(struct bus_tail *t, uint64_t *pos, uint64_t *off)
{
	uint64_t p = 0, o = 0;

	(void)bus_tail_cas(t, &p, &o, 0, 0);
	*pos = p;
	*off = o;
}

/*
 * The spill cursor {spill_pos, spill_off} (layout.h, ring header line 3) is
 * published by busd and read by consumers as one 16-byte pair, with the
 * same CAS as the tail, so that a reader never pairs a position with the
 * offset of another frame.  busd is its only writer.  Both are full
 * barriers (lock cmpxchg16b): the publish orders the log writes before it,
 * the read orders it before what the reader does with the pair.
 */
static inline void bus_spill_read(struct bus_ring_hdr *h, uint64_t *pos, uint64_t *off)
{
	bus_tail_read((struct bus_tail *)(uintptr_t)&h->spill_pos, pos, off);
}

static inline void bus_spill_publish(struct bus_ring_hdr *h, uint64_t pos, uint64_t off)
{
	uint64_t p = ld_relaxed(&h->spill_pos), o = ld_relaxed(&h->spill_off);

	while (!bus_tail_cas((struct bus_tail *)(uintptr_t)&h->spill_pos, &p, &o, pos, off))
		;
}

/* The wall clock: CLOCK_REALTIME in ns since the epoch, for record
 * timestamps and segment ages.  Where the kernel keeps time with the TSC,
 * extrapolated from it per thread (a TSC read, a multiply) and anchored
 * again every 50 ms; else clock_gettime().  See clock.c. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BUS_TSC_CLOCK 1
#include <x86intrin.h>

struct bus_tclock {
	uint64_t tsc;  /* anchor: TSC ... */
	int64_t ns;    /* ... and CLOCK_REALTIME then */
	uint64_t mult; /* ns per tick, 32.32 fixed point */
	uint64_t span; /* ticks the anchor is good for; 0: none */
	uint64_t cal_tsc; /* calibration baseline: TSC ... */
	int64_t cal_raw;  /* ... and CLOCK_MONOTONIC_RAW then */
	int64_t raw;      /* CLOCK_MONOTONIC_RAW at the anchor */
	uint32_t strikes; /* anchors in a row that the TSC missed */
};
extern __thread struct bus_tclock bus_tclock __attribute__((tls_model("initial-exec")));

/* The slow path of bus_now_ns(): clock_gettime(), and a new anchor. */
int64_t bus_now_slow(void);
/* Whether this process extrapolates from the TSC (clock.c says when):
 * decided once per process, and turned off for good when the TSC stops
 * agreeing with the system clock; thread-safe. */
bool bus_clock_tsc(void);

static inline int64_t bus_now_ns(void)
{
	const struct bus_tclock *k = &bus_tclock;
	uint64_t d = __rdtsc() - k->tsc;

	if (BUS_LIKELY(d < k->span))
		return k->ns + (int64_t)(((unsigned __int128)d * k->mult) >> 32);
	return bus_now_slow();
}
#else
static inline int64_t bus_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}
#endif

static inline int64_t bus_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* The monotonic time @timeout_ns (> 0) from now, INT64_MAX when that is
 * past what an int64_t holds (a timeout of INT64_MAX: as good as none),
 * rather than a signed overflow. */
static inline int64_t bus_deadline_ns(int64_t timeout_ns)
{
	int64_t now = bus_mono_ns();

	return timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
}

/* --------------------------------------------------------------- bus */

struct bus {
	char name[BUS_NAME_MAX + 1];
	char *shm_dir;
	char *data_dir;
	unsigned flags;
	bus_log_fn log;
	void *log_ctx;
	uint64_t stuck_claim_ns;
	int ctl_fd;
	struct bus_ctl_hdr *ctl;
	size_t ctl_len; /* mapped length: BUS_CTL_SIZE rounded to the fs page */
	int ctl_guard;  /* its mapguard.h slot, or -1 */
	atomic_bool ctl_lost_said; /* its truncation was logged */
	struct cds_lfht *topics; /* name -> struct bus_topic, RCU */
};

void bus_log(const struct bus *b, enum bus_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline struct bus_topic_slot *bus_slot(const struct bus *b, uint32_t i)
{
	return (struct bus_topic_slot *)((char *)b->ctl + BUS_CTL_TOPICS_OFF) + i;
}

bool bus_name_valid(const char *name);

/* A persistent partition's segment log directory:
 * <data_dir>/<topic>/<partition> (the layout busd writes, see segment.h).
 * Returns -ENAMETOOLONG when @len is too small, else 0. */
int bus_part_dir(const struct bus *b, const char *topic, uint32_t part, char *buf, size_t len);
/* The directory of a topic's logs: <data_dir>/<topic>. */
int bus_topic_dir(const struct bus *b, const char *topic, char *buf, size_t len);
/* Prefix of the name a deleted topic's log directory is renamed to (in the
 * data dir) until busd removes it: ".deleted.<topic>.<gen>.<pid>". */
#define BUS_DELETED_PREFIX ".deleted."

/* Whether a process has @pid (kill(2) with signal 0; EPERM counts as
 * alive).  One system call.  A zombie, a process that exited but whose
 * parent has not reaped it yet, counts as alive: see bus_pid_gone().
 * Thread-safe. */
bool bus_pid_alive(int32_t pid);
/* Whether the owner @pid is gone: no process has it, or it exited and
 * waits, a zombie, for its parent to reap it (a parent that never waits,
 * a container's PID 1 that reaps nothing, would otherwise keep a dead
 * owner's claim, gating cursor or slot held for as long as it lives).  A
 * zombie leader whose other threads live (its main thread called
 * pthread_exit()) is not gone.  A /proc that cannot be read leaves
 * kill(2)'s answer.  Costs kill(2) plus, for a live pid, an open, read
 * and close of /proc/<pid>/stat: for the paths that look at an owner
 * because it holds others back, not for every turn of a wait loop.
 * Thread-safe. */
bool bus_pid_gone(int32_t pid);
/* The start time of process @pid (/proc/<pid>/stat, field 22: clock ticks
 * since boot, less the boottime offset of the caller's time namespace, so
 * that every namespace reads the same value) folded into a non-zero 32-bit
 * value, or 0 when it cannot be read (no such process, /proc not mounted
 * or hidden from us).  With the pid, it tells a live owner from a process
 * that was given its pid after the owner died (within one PID namespace,
 * which a bus needs anyway).  Two reads of /proc (the caller's own:
 * cached).  Thread-safe. */
uint32_t bus_pid_start(int32_t pid);
/* Whether the owner named by the BUS_OWNER word @owner (layout.h) is gone:
 * bus_pid_gone() of its pid, or its pid now names a process that started
 * at another time (more than a tick apart) than the start time the word
 * holds: the owner died and the pid was given to another process since.
 * A start of 0 (unknown) is not compared.  Costs as bus_pid_gone(): one
 * kill(2), and for a live pid one read of /proc/<pid>/stat.  Thread-safe. */
bool bus_owner_gone(uint64_t owner);
/* Whether @pid, read from a ring's spiller_pid, names no live busd: <= 0
 * (none, or a halted partition), or bus_pid_gone(), or, when busd's owner
 * word in @b's control region names that pid, bus_owner_gone() of it (its
 * pid went to another process since).  Costs as bus_owner_gone(): for
 * paths that look because a spill holds someone back, or describe.
 * Thread-safe. */
bool bus_spiller_gone(struct bus *b, int32_t pid);
/* This process's BUS_OWNER word: its pid and bus_pid_start() (cached after
 * the first call; a fork child computes its own).  Thread-safe. */
uint64_t bus_owner_self(void);

/* ---------------------------------------------------------------- shm */

struct bus_map {
	void *addr;
	size_t len;
	int huge;  /* 1: hugetlbfs; 2: THP requested; 0: normal pages */
	int guard; /* its mapguard.h slot (whole, writable), or -1: unprotected */
};

/* Create @path exclusively with @size bytes reserved (fallocate), bound to
 * @numa_node (-1: none), pre-faulted, mapped shared; mode 0600 when
 * @owner_only or the bus is BUS_F_PRIVATE, else 0660.  Removes the file on
 * failure.  Returns 0 or -errno (-EEXIST, -ENOSPC, -ENODEV, -EACCES...). */
int bus_shm_create(const struct bus *b, const char *path, uint64_t size, int numa_node,
		   bool owner_only, struct bus_map *m);
/* Map an existing file, checking that it holds at least @min bytes.
 * Returns 0, -ENOENT, -EACCES, -BUS_ECORRUPT (too short). */
int bus_shm_attach(const struct bus *b, const char *path, uint64_t min, struct bus_map *m,
		   uint64_t *size_out);
/* Unregister the guard, then unmap. */
void bus_shm_unmap(struct bus_map *m);
/* Register the mapping [@addr, @addr + @len) of @path (pages of @page
 * bytes; 0: the system's) with mapguard.h, whole and writable (see there
 * why), and return its slot; past the guard's capacity, or when its handler
 * cannot be installed, -errno, with a WARN through @b's log callback once
 * per process: the mapping then goes unprotected (a truncation of the file
 * kills the process with SIGBUS, as before the guard). */
int bus_shm_guard(const struct bus *b, const char *path, void *addr, size_t len, size_t page);
/* Size a file must have to hold @bytes on the file system of @dir. */
uint64_t bus_shm_round(const struct bus *b, uint64_t bytes);

/* -------------------------------------------------------------- rings */

struct bus_ring {
	struct bus_ring_hdr *hdr;
	uint8_t *data;
	uint64_t size;
	uint64_t mask;
	unsigned ckpt_shift; /* log2 of the checkpoint chunk (size / BUS_CKPT_N) */
	struct bus_map map;
	atomic_bool lost_said; /* its truncation was logged (bus_lost_slow()) */
};

/* Whether @r's file was truncated under this process's mapping, which then
 * reads as zeros (mapguard.h).  The slow path: after bus_mapguard_hits()
 * returned non-zero. */
static inline bool bus_ring_hit(const struct bus_ring *r)
{
	return bus_mapguard_hit(r->map.guard);
}

/* Load the last word of @r's file, so that a truncation of the file (which
 * always takes its last page) faults here if it has not yet faulted
 * elsewhere: bus_ring_hit() then tells.  For waits and daemons, whose
 * other loads may all fall on pages the truncation left. */
static inline void bus_ring_probe(const struct bus_ring *r)
{
	const volatile uint64_t *w =
		(const volatile uint64_t *)(const void *)((const uint8_t *)r->map.addr + r->map.len - 8);

	(void)__atomic_load_n(w, __ATOMIC_RELAXED);
}

void bus_ring_path(const struct bus *b, const char *topic, uint32_t gen, uint32_t part,
		   char *buf, size_t len);
/* Create a ring whose first record gets offset @start_off (the next offset
 * of the partition's log on disk, so that offsets never go back). */
int bus_ring_create(const struct bus *b, const char *topic, uint32_t gen, uint32_t part,
		    const struct bus_topic_cfg_disk *cfg, uint64_t start_off, struct bus_ring *r);
int bus_ring_attach(const struct bus *b, const char *topic, uint32_t gen, uint32_t part,
		    const struct bus_topic_cfg_disk *cfg, struct bus_ring *r);
void bus_ring_detach(struct bus_ring *r);

/* Low-water mark: producers may write below lw + ring_size.  Returns
 * UINT64_MAX when nothing gates.  With @reap, frees the gating slots of
 * dead consumers (a kill(pid, 0) per live slot) and sets *nodaemon when the
 * spiller gates but is not running; without, counts every taken slot and
 * makes no system call (*nodaemon false): a bound that may be lower than
 * need be, never higher. */
uint64_t bus_ring_low_water(struct bus_ring *r, bool persistent, bool reap, bool *nodaemon);
/* Free the gating slots whose consumer is gone by bus_pid_gone(): dead, or
 * a zombie that bus_ring_low_water()'s kill(2) still finds.  A read of
 * /proc per live gating consumer: a blocked producer calls it once every
 * few turns of its wait, not on each. */
void bus_ring_reap_gating(struct bus_ring *r);
/* Raise the horizon so that a claim ending at @end (and the word zeroed
 * after it) lies below it, by a step of ring/16 but never above @limit
 * (nor ever lowered).  *cached receives the horizon now in force, which is
 * below @end + BUS_FRAME_ALIGN only when @limit is.  Must be followed by
 * the producer's release fence R1 before it writes. */
void bus_ring_raise_horizon(struct bus_ring *r, uint64_t end, uint64_t limit, uint64_t *cached);
/* Earliest whole frame of the ring: its position and offset.  Returns 0,
 * -EAGAIN (the producers moved too fast; retry) or -BUS_ECORRUPT (a horizon
 * or checkpoint no producer could have written). */
int bus_ring_earliest(struct bus_ring *r, uint64_t *pos, uint64_t *off);
/* Repair the unpublished claim at @pos (expected offset @off) if its owner
 * is dead, or if @force (stalled past the timeout).  Returns 1 when
 * repaired, 0 when not (yet), negative on corruption. */
int bus_ring_repair(struct bus_ring *r, uint64_t pos, uint64_t off, bool force);
/* The lowest position below @below at which a claim is in flight, by the
 * intents in the producer slots (layout.h), or BUS_INTENT_IDLE: a horizon
 * must not pass it + ring_size, or that claim's late writes would land on
 * newer frames.  Skips intents whose frame is published or repaired, and
 * those a lap behind @hz (the horizon as read).  No system call; reads a
 * line per taken slot.  Any process, any time. */
uint64_t bus_ring_intents_floor(struct bus_ring *r, uint64_t hz, uint64_t below);
/* Whether the claim {@pos, @off} is published or repaired: its commit word
 * at @pos carries its tag, and when that is the padding of a claim that
 * wraps, the frame at the lap's start does too.  Any process, any time. */
bool bus_ring_claim_resolved(struct bus_ring *r, uint64_t pos, uint64_t off);
/* Zero the commit word at @pos unless it already holds a frame of offset
 * @next_off (see ring.c). */
void bus_ring_zero_ahead(struct bus_ring *r, uint64_t pos, uint64_t next_off);
void bus_ring_checkpoint(struct bus_ring *r, uint64_t start, uint64_t end, uint64_t next_off);

/* A reader going through the ring in order (a consumer that is behind,
 * busd's spiller): prefetch the lines from *@pf up to @ahead bytes past
 * @pos, and move *@pf on; a *@pf behind @pos (a resync moved the reader)
 * restarts at @pos's line.  Hints only: they never fault, and are masked
 * into the ring. */
static inline void bus_ring_prefetch(const struct bus_ring *r, uint64_t *pf, uint64_t pos,
				     uint64_t ahead)
{
	uint64_t p = *pf;

	if (BUS_UNLIKELY(p < pos))
		p = pos & ~(uint64_t)(BUS_CACHELINE - 1);
	for (; p < pos + ahead; p += BUS_CACHELINE)
		__builtin_prefetch(r->data + (p & r->mask));
	*pf = p;
}

/* ------------------------------------------------------------- topics */

struct bus_topic {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	struct bus *bus;
	char name[BUS_NAME_MAX + 1];
	uint32_t slot;
	uint32_t gen;
	uint64_t ready_word; /* the slot's state word while this handle is valid */
	int64_t created_ns;  /* and its created_ns */
	struct bus_topic_slot *ts;
	struct bus_topic_cfg_disk cfg;
	_Atomic long refs;
	struct bus_ring *rings; /* cfg.partitions */
};

/* Take a reference on the handle of topic @name (opening it on first use).
 * Returns 0, -ENOENT, -BUS_ECORRUPT, -ENOMEM. */
int bus_topic_get(struct bus *b, const char *name, struct bus_topic **out);
void bus_topic_put(struct bus_topic *t);
/* 0 while the topic is the one this handle opened, else -BUS_ESTALE.  The
 * state word alone came round to its value after 65,536 re-creations in
 * the slot (a handle left unused that long then produced into its topic's
 * unlinked ring: records acknowledged and lost); the creation time, on the
 * same cache line, tells them apart.  Both loads relaxed: the answer is a
 * snapshot either way (a delete can follow it at once), and a creator
 * stores created_ns before its state word (R4), so seeing the old time
 * with a word that came round is seeing the slot as it was before. */
static inline int bus_topic_check(const struct bus_topic *t)
{
	uint64_t d = (ld_relaxed(&t->ts->state) ^ t->ready_word) |
		     (uint64_t)(ld_relaxed(&t->ts->created_ns) ^ t->created_ns);

	return BUS_LIKELY(d == 0) ? 0 : -BUS_ESTALE;
}
void bus_topics_fini(struct bus *b);

/* ---------------------------------------------------------- truncation
 *
 * A ring file or the control region truncated under this process's
 * mapping reads (and takes writes) as zeros from then on (mapguard.h,
 * shm.c).  Every call that hands out or acknowledges data, or answers
 * from the topic table, checks after its last access to the file, with
 * bus_ctl_lost() / bus_ring_lost(): one relaxed load of a process-wide
 * count and a predictable branch while nothing was ever truncated
 * (mapguard.c, ORDERING, says why a check after the access suffices).
 *
 * bus_ctl_lost_slow() - -BUS_ECORRUPT when @b's control region was
 * truncated under this process's mapping, else 0; the first time, an
 * ERROR through @b's log callback names the file.
 * bus_ring_lost_slow() - the same for the control region, then for ring
 * @r of topic @t (NULL: none); the first time for a ring, an ERROR names
 * the file and the topic's sleeping consumers are woken (they fault on the
 * ring in turn, or find it truncated if they map it too). */
int bus_ctl_lost_slow(struct bus *b);
int bus_ring_lost_slow(struct bus_topic *t, struct bus_ring *r);

static inline int bus_ctl_lost(struct bus *b)
{
	return BUS_LIKELY(bus_mapguard_hits() == 0) ? 0 : bus_ctl_lost_slow(b);
}

static inline int bus_ring_lost(struct bus_topic *t, struct bus_ring *r)
{
	return BUS_LIKELY(bus_mapguard_hits() == 0) ? 0 : bus_ring_lost_slow(t, r);
}
void bus_cfg_to_disk(const struct bus_topic_config *c, struct bus_topic_cfg_disk *d);
void bus_cfg_from_disk(const struct bus_topic_cfg_disk *d, struct bus_topic_config *c);

/* --------------------------------------------------------------- wait */

/* The futex protocol of wait.c, on a futex word @wseq and its announcement
 * word @sleepers. */

/* Wake every sleeper on @wseq, whether or not one announced itself. */
void bus_futex_wake_slow(_Atomic uint32_t *wseq, _Atomic uint32_t *sleepers);
/* Sleep on @wseq until woken, @check() returns true, @deadline_ns
 * (monotonic; < 0: none), or @max_ns (>= 0) passed.  Announces the
 * sleeper, then re-checks (see wait.c).  Returns 0 when @check() said
 * ready before the sleep, 1 when woken (or a wake came first), -1 on a
 * timeout or a signal.  Any thread. */
int bus_futex_sleep(_Atomic uint32_t *wseq, _Atomic uint32_t *sleepers, bool (*check)(void *),
		    void *arg, int64_t deadline_ns, int64_t max_ns);
/* Register this process for asymmetric fences (membarrier).  Returns true
 * when a waker may skip the fence before it loads an announcement word. */
bool bus_wait_register_waker(void);

/* Wake every consumer sleeping on topic @ts, if any announced itself. */
static inline void bus_wake_slow(struct bus_topic_slot *ts)
{
	bus_futex_wake_slow(&ts->wake_seq, &ts->sleepers);
}
static inline void bus_wake(struct bus_topic_slot *ts, bool fenced)
{
	/* See wait.c: with membarrier registration the plain load suffices;
	 * without, a full fence orders the commit store before it. */
	if (BUS_UNLIKELY(fenced))
		atomic_thread_fence(memory_order_seq_cst);
	/* Registered: membarrier() makes the CPU's barrier, but the compiler
	 * may still hoist this relaxed load above the release store before
	 * it (C11 lets it): keep it below (no instruction). */
	atomic_signal_fence(memory_order_seq_cst);
	if (BUS_UNLIKELY(ld_relaxed(&ts->sleepers) != 0))
		bus_wake_slow(ts);
}
/* The longest sleep of a consumer, which then looks whether its files were
 * truncated under it (wait.c). */
#define BUS_WAIT_RECHECK_NS 1000000000ll
/* A consumer's sleep on topic @ts (bus_futex_sleep(), at most
 * BUS_WAIT_RECHECK_NS). */
static inline void bus_wait_sleep(struct bus_topic_slot *ts, bool (*check)(void *), void *arg,
				  int64_t deadline_ns)
{
	(void)bus_futex_sleep(&ts->wake_seq, &ts->sleepers, check, arg, deadline_ns,
			      BUS_WAIT_RECHECK_NS);
}

/* The longest sleep of a producer blocked for space, which then looks for
 * dead gating consumers, a dead busd, a deleted topic or a truncated ring
 * (wait.c, "Space"). */
#define BUS_SPACE_RECHECK_NS 20000000ll
/* Wake the producers blocked for space in ring @h, if any announced
 * itself: after a store that may raise the low-water mark or end their
 * wait (a gating cursor that moved, the spill cursor, floor_ok, a gating
 * slot given back or reaped, busd's spiller_pid halted or cleared).  @fenced:
 * this process is not registered (bus_wait_register_waker() said false). */
static inline void bus_space_wake(struct bus_ring_hdr *h, bool fenced)
{
	if (BUS_UNLIKELY(fenced))
		atomic_thread_fence(memory_order_seq_cst);
	atomic_signal_fence(memory_order_seq_cst); /* as in bus_wake() */
	if (BUS_UNLIKELY(ld_relaxed(&h->space_sleepers) != 0))
		bus_futex_wake_slow(&h->space_seq, &h->space_sleepers);
}

#endif
