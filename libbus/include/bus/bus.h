/* bus/bus.h - the public API of libbus: a Kafka-style partitioned log in
 * shared memory for one host.
 *
 * Objects and ownership
 *   struct bus           an attached bus (control region + handle cache).
 *                        Opened by bus_open(), freed by bus_close().
 *   struct bus_producer  appends to one topic.  Opened by bus_producer_open()
 *                        on a bus, freed by bus_producer_close(); must be
 *                        closed before its bus.
 *   struct bus_consumer  reads one topic (all partitions or one).  Same
 *                        lifetime rules as a producer.
 *
 * Thread safety
 *   A struct bus may be used by many threads at once (its topic cache is an
 *   RCU hash table).  Producers and consumers are single-threaded objects:
 *   one thread at a time per handle; open one per thread.  Any number of
 *   producers and consumers, in any number of processes, may work on the
 *   same partition at the same time (except exclusive producers, below).
 *
 * Errors: see bus/error.h.  The library never prints; it reports events
 * (for example which kind of memory backs a ring) through an optional log
 * callback in struct bus_opts.
 *
 * Shared files truncated under a mapping
 *   A ring file or the control region truncated (ftruncate) by another
 *   process while this one has it mapped would kill this one with SIGBUS
 *   at its next access.  bus_open() installs a SIGBUS handler (see there)
 *   that turns such a fault into zeros, and from then on every call that
 *   would hand out or acknowledge data of that file returns -BUS_ECORRUPT
 *   ("file is corrupt, truncated or not a bus file"), the log callback
 *   naming the file once (ERROR).  No record is acknowledged that the
 *   truncation took, and no zeros are handed out as a record; records the
 *   truncation took after they were acknowledged (and before busd spilled
 *   them) are lost, and readers are told by the same error.  A partition's
 *   truncated ring fails that partition's calls only; a truncated control
 *   region fails every call on the bus.  The file stays unusable: delete
 *   and re-create the topic (or, for the control region, stop every
 *   process of the bus and remove the file).
 */
#ifndef BUS_BUS_H
#define BUS_BUS_H

#include <stddef.h>
#include <stdint.h>

#include <bus/error.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_VERSION_MAJOR 0
#define BUS_VERSION_MINOR 1
#define BUS_VERSION_PATCH 0
#define BUS_VERSION_STRING "0.1.0"

/** bus_version() - the library's version string, e.g. "0.1.0". */
const char *bus_version(void);

/** Longest bus or topic name, in bytes (without the terminating NUL).
 *  Names use [A-Za-z0-9._-] and do not start with '.'. */
#define BUS_NAME_MAX 63
/** Most partitions per topic. */
#define BUS_PARTITIONS_MAX 256
/** Most topics per bus. */
#define BUS_TOPICS_MAX 256
/** Ring size bounds (bytes, power of two). */
#define BUS_RING_MIN (64u * 1024)
#define BUS_RING_MAX (1ull << 30)
/** Default ring size. */
#define BUS_RING_DEFAULT (4u * 1024 * 1024)

/* ------------------------------------------------------------------ bus */

enum bus_log_level { BUS_LOG_ERROR, BUS_LOG_WARN, BUS_LOG_INFO, BUS_LOG_DEBUG };

/** Log callback: one event per call, @msg without a trailing newline. */
typedef void (*bus_log_fn)(void *ctx, enum bus_log_level level, const char *msg);

/** Files are created 0600 instead of 0660. */
#define BUS_F_PRIVATE 0x1u

struct bus_opts {
	const char *name;     /**< bus name; NULL: $BUS_NAME or "default" */
	const char *shm_dir;  /**< NULL: $BUS_SHM_DIR, else a usable hugetlbfs
	                           mount, else /dev/shm */
	const char *data_dir; /**< NULL: $BUS_DATA_DIR, else /var/lib/bus */
	unsigned flags;       /**< BUS_F_* */
	bus_log_fn log;       /**< NULL: events are not reported */
	void *log_ctx;
	/** Timeout after which a live producer's unpublished claim is repaired
	 *  (turned into a lost record: its offset is consumed, and readers are
	 *  told of it as of an aborted claim) by whoever waits on it: a reader,
	 *  busd, or a producer whose next raise of the write horizon would lap
	 *  it (until then producers wait rather than lap a claim in flight,
	 *  even on overwrite topics).  A claim of a dead process is repaired
	 *  at once.  A producer must not hold a claim longer than this: past
	 *  it, its commit returns -BUS_EREPAIRED, and what it still writes into
	 *  the claimed bytes after other producers lapped them lands on newer
	 *  records.  That holds for the claim inside bus_produce() too: a
	 *  process stopped there (SIGSTOP, a debugger, a frozen cgroup) longer
	 *  than this may, when it resumes, write into newer records that
	 *  readers then take as whole.  0: 1 second; 2^63 or more: never (a
	 *  live producer's claim is then waited for as long as it stays
	 *  open). */
	uint64_t stuck_claim_ns;
};

struct bus;

/**
 * bus_open() - attach to a bus, creating its control region on first use.
 * @out:  receives the handle on success; untouched on failure.
 * @opts: may be NULL (all defaults).  Strings are copied.
 *
 * The control region is validated (magic, layout version, build signature,
 * every size) before use.  Returns 0, or -EINVAL (bad name), -EACCES,
 * -ENOMEM, -BUS_ECORRUPT, -BUS_EVERSION, or another -errno from the file
 * system.  A control region refused as corrupt or of another layout is
 * named in an ERROR through opts->log, with, for -BUS_EVERSION, the file's
 * layout version (or build signature) and this library's.
 *
 * Thread-safe; process-safe (any number of processes may create the same
 * bus at once: exactly one initialises it).  The control region is
 * made whole under a temporary name beside it (".bus.<bus>.ctl.<pid>.<n>")
 * and renamed into place, so a process killed while creating it leaves
 * nothing that keeps the bus from being opened; the next creator removes
 * a dead creator's temporary file.  A control region at the bus's path
 * whose `ready` word stays 0 (made in place by an older build, or by hand)
 * is waited for up to 2 s, then refused with -BUS_ECORRUPT; one that is
 * not a regular file is refused at once.
 *
 * The first bus_open() of a process installs a SIGBUS handler with
 * sigaction(2) (once per process), which guards the mappings of the control
 * region and of every ring the process maps: a fault on a page the file
 * lost is turned into zeros and reported as above (the top of this file).
 * Any other SIGBUS is handed to the action installed before it (the default
 * action: the process dies as it would have; an SA_SIGINFO or plain handler:
 * called, without its sa_mask and flags applied).  An application that
 * installs its own SIGBUS action after bus_open() replaces the library's,
 * and a truncation is then its handler's to deal with.  A thread that
 * blocks SIGBUS is not covered (the kernel kills the process).  At most
 * 8192 mappings are guarded at once per process; past that a mapping goes
 * unguarded (a WARN through the log callback, once per process).
 */
int bus_open(struct bus **out, const struct bus_opts *opts);

/** bus_close() - detach; frees @b.  Producers and consumers opened on @b
 *  must be closed first.  NULL is accepted. */
void bus_close(struct bus *b);

/** bus_name(), bus_shm_dir(), bus_data_dir() - the resolved settings of @b,
 *  owned by @b. */
const char *bus_name(const struct bus *b);
const char *bus_shm_dir(const struct bus *b);
const char *bus_data_dir(const struct bus *b);

/**
 * bus_default_shm_dir() - the directory bus_open() picks when neither
 * opts->shm_dir nor $BUS_SHM_DIR is set: a hugetlbfs mount that this process
 * can write and that has free pages, else "/dev/shm".  Returns a static
 * string.  Thread-safe.
 */
const char *bus_default_shm_dir(void);

/**
 * bus_daemon_pid() - the pid of the busd serving @b (it publishes itself in
 * the control region, with its start time), or 0 when none is running:
 * none published itself, or the one that did has exited, also when its
 * parent has not reaped it yet (a zombie) or its pid has gone to another
 * process since.  Costs a kill(2) and a read of /proc/<pid>/stat.
 * Thread-safe.
 */
int32_t bus_daemon_pid(const struct bus *b);

/* --------------------------------------------------------------- topics */

enum bus_overflow {
	/** The producer waits (or gets -EAGAIN) when the slowest gating cursor
	 *  (gating consumers; for a persistent topic also the spiller) is a
	 *  whole ring behind.  Nothing is overwritten unread. */
	BUS_OVERFLOW_BLOCK = 0,
	/** The producer never waits; lapped readers are told what they lost. */
	BUS_OVERFLOW_OVERWRITE = 1,
};

/** The topic is ephemeral: never spilled to disk. */
#define BUS_TOPIC_EPHEMERAL 0x1u
/** The topic's files are its owner's only: rings 0600 (instead of 0660),
 *  and busd's topic folder, topic.conf and logs 0700/0600 (instead of
 *  0750/0640).  bus_topic_create() sets it when the bus was opened with
 *  BUS_F_PRIVATE.  busd keeps it in topic.conf, so a topic re-created from
 *  its logs after a reboot is private again.  Part of the config: creating
 *  an existing topic with another value fails with -BUS_ECONFIG. */
#define BUS_TOPIC_PRIVATE 0x2u

struct bus_topic_config {
	uint32_t partitions;      /**< 1..BUS_PARTITIONS_MAX */
	uint32_t flags;           /**< BUS_TOPIC_* */
	uint64_t ring_size;       /**< bytes per partition ring, power of two */
	uint64_t retention_ms;    /**< 0: keep forever (persistent topics) */
	uint64_t retention_bytes; /**< per partition; 0: no limit */
	uint32_t overflow;        /**< enum bus_overflow */
	int32_t numa_node;        /**< -1: no binding */
};

/** bus_topic_config_init() - defaults: 1 partition, BUS_RING_DEFAULT,
 *  persistent, block, no retention limit, no NUMA binding. */
void bus_topic_config_init(struct bus_topic_config *cfg);

/**
 * bus_topic_create() - create topic @name with @cfg, without a daemon and
 * without a lock: a table slot is claimed by compare-and-swap, the rings are
 * created, reserved (fallocate) and pre-faulted, then the slot is published
 * with a release store.
 *
 * Creating a topic that exists with an identical config returns 0
 * (idempotent).  A create or delete of the same name in progress in a live
 * process is waited for.  Returns -EINVAL (bad name or config), -BUS_ECONFIG
 * (exists with another config), -ENOMEM (no free slot), -ENOSPC (no room
 * for the rings in the shm dir or huge-page pool), -ENODEV (no such NUMA
 * node), -EBUSY (a table slot on the name's probe path stayed claimed by a
 * live process for 2 s: a creator stopped between its claim and writing the
 * name, or a forged slot), -EACCES, -BUS_ECORRUPT.  Thread- and
 * process-safe.
 */
int bus_topic_create(struct bus *b, const char *name, const struct bus_topic_config *cfg);

/**
 * bus_topic_delete() - delete topic @name and unlink its rings.  Processes
 * that have it open keep their mappings; their next producer or consumer
 * call returns -BUS_ESTALE, and a consumer asleep in bus_consumer_poll()
 * is woken to return it.  Returns 0, -ENOENT, -EINVAL.  Thread- and
 * process-safe.
 */
int bus_topic_delete(struct bus *b, const char *name);

struct bus_topic_info {
	char name[BUS_NAME_MAX + 1];
	struct bus_topic_config config;
	uint32_t generation; /**< bumps each time the slot is reused */
};

/**
 * bus_topic_list() - call @fn once per topic, in table order, with a
 * snapshot of its info.  Stops early and returns @fn's value when it is
 * non-zero.  Otherwise returns 0, or -BUS_ECORRUPT when a table slot could
 * not be read (damaged or hostile shared memory): @fn has then been called
 * for every topic whose slot reads, those after the damaged one included.
 * -EINVAL when @b or @fn is NULL.  Thread- and process-safe (a topic
 * created or deleted meanwhile may or may not be listed).
 */
int bus_topic_list(struct bus *b, int (*fn)(void *ctx, const struct bus_topic_info *ti), void *ctx);

/** bus_topic_describe() - info of @name into @out.  Returns 0, -ENOENT,
 *  -BUS_ECORRUPT (the control region was truncated under this process's
 *  mapping: see the top of this file; so for every call on the table). */
int bus_topic_describe(struct bus *b, const char *name, struct bus_topic_info *out);

struct bus_partition_info {
	uint64_t first_offset;   /**< oldest offset still whole in the ring */
	uint64_t next_offset;    /**< offset the next append gets */
	uint64_t spilled_offset; /**< offsets below are written to the log
	                              by busd (into the page cache: durable
	                              on disk only as busd's fsync setting
	                              says) */
	uint64_t replicated_offset;
	uint64_t write_pos;      /**< bytes claimed since creation */
	uint64_t repaired;       /**< claims of dead or stalled producers
	                              repaired into lost records (one each) */
	uint64_t ring_size;
	int hugepages;           /**< 1 when the ring is backed by huge pages */
	/** The log on disk (persistent topics; all 0 when there is none): */
	uint32_t disk_segments;
	uint64_t disk_first_offset; /**< earliest offset on disk */
	uint64_t disk_next_offset;  /**< offset after the last record on disk */
	uint64_t disk_bytes;        /**< segment and index files together */
	/** busd's pid when a daemon spills this partition, else 0 (also for
	 *  a busd that exited and was not reaped, or whose pid went to
	 *  another process since: looked up in /proc). */
	int32_t spiller_pid;
};

/** bus_partition_describe() - state of one partition.  Returns 0, -ENOENT,
 *  -BUS_ECORRUPT (also: its ring or the control region was truncated under
 *  this process's mapping), -BUS_ESTALE.  Thread-safe. */
int bus_partition_describe(struct bus *b, const char *topic, uint32_t partition,
			   struct bus_partition_info *out);

/**
 * bus_partition_for_key() - the partition a key maps to: FNV-1a 64 of the
 * key bytes, modulo @partitions.  Stable across versions and hosts.
 */
uint32_t bus_partition_for_key(const void *key, size_t key_len, uint32_t partitions);

/* ------------------------------------------------------------- records */

/** A header.  On the producer side @name and @value must point to
 *  @name_len and @value_len bytes (NULL only for a length of 0: not
 *  checked, as memcpy(3) does not check). */
struct bus_header {
	const char *name; /**< not NUL-terminated on the consumer side */
	uint16_t name_len;
	const void *value;
	uint32_t value_len;
};

/** A record to append (copy API). */
struct bus_record {
	const void *key;
	uint32_t key_len;
	const void *value;
	uint32_t value_len;
	/** ns since the epoch; 0: now, CLOCK_REALTIME as the library reads
	 *  it: extrapolated from the TSC where the kernel keeps time with it
	 *  (clocksource tsc, or kvm-clock read in user space by the vDSO;
	 *  anchored every 50 ms; within µs of clock_gettime()), or
	 *  clock_gettime() itself (also with BUS_CLOCK=syscall). */
	int64_t timestamp;
	const struct bus_header *headers;
	uint32_t header_count; /**< at most 65535 */
};

/** Any partition: keyed records by key hash, unkeyed round-robin. */
#define BUS_PARTITION_ANY (-1)

/* ------------------------------------------------------------ producer */

/** Single-writer mode: this producer is the only writer of each partition
 *  it appends to (claimed at first append; others get -BUS_EBUSY).  No
 *  atomic read-modify-write on the hot path: its commit is a plain store,
 *  which a repair could not fence, so its claims are never repaired while
 *  its process lives (stuck_claim_ns does not apply): a zero-copy claim it
 *  leaves open holds the partition's readers (and busd's spill) until it
 *  is committed or aborted, or the producer is closed.  Once its process
 *  is gone, its claim is repaired at once and the partition is free. */
#define BUS_PRODUCER_EXCLUSIVE 0x1u
/** Never wait for space: return -EAGAIN when the ring is full (block
 *  topics).  A producer may still wait, up to the bus's stuck_claim_ns,
 *  for another producer's claim a lap behind (see bus_opts). */
#define BUS_PRODUCER_NONBLOCK 0x2u
/** Latency over throughput, for producers that send one record at a time
 *  and wait (requests, ticks), not for streams.  Two things:
 *  - each record's frame is lengthened (by up to 56 bytes, zeros on disk)
 *    to end on a cache line, so that the next record starts on a fresh
 *    line and a small record spans as few lines as it can: a consumer
 *    waiting for it then misses on fewer lines (rtt of 64 B values on an
 *    Intel VM: some 60 ns less; 1 KiB: 130 ns);
 *  - after publishing a record of up to 8 KiB (frame included), its cache
 *    lines are pushed out of this core's private caches into the shared
 *    cache (x86 CLDEMOTE; nothing elsewhere), so that the consumer misses
 *    once instead of twice on this core (some 40-90 ns less round trip),
 *    and the lines the next record will fill are taken for writing
 *    (PREFETCHW) while the producer waits for its reply (256 B: 70 ns).
 *  A stream would pay for these (ring and log space, some 20 ns per small
 *  record) for nothing. */
#define BUS_PRODUCER_LOW_LATENCY 0x4u

/** At most this many producers that are not BUS_PRODUCER_EXCLUSIVE append
 *  to one partition at a time (each takes a slot in the partition's ring
 *  at its first append there, freed by bus_producer_close() or its
 *  process's death); one more gets -EUSERS. */
#define BUS_PRODUCERS_MAX 32

struct bus_producer_opts {
	unsigned flags;           /**< BUS_PRODUCER_* */
	int64_t block_timeout_ns; /**< longest wait when full; <= 0: forever */
};

struct bus_producer;

/**
 * bus_producer_open() - a producer on @topic.  @opts may be NULL.
 * Returns 0, -ENOENT (no such topic), -EINVAL (also: an unknown flag),
 * -BUS_ECORRUPT, -ENOMEM.
 * The producer is single-threaded; the bus may be shared.
 */
int bus_producer_open(struct bus *b, const char *topic, const struct bus_producer_opts *opts,
		      struct bus_producer **out);

/** bus_producer_close() - release exclusive ownership, free @p (NULL ok).
 *  A claim still open is aborted first, as bus_producer_abort() does: its
 *  offset reaches consumers as one lost record (the memory its value
 *  pointed to is no longer the caller's). */
void bus_producer_close(struct bus_producer *p);

/**
 * bus_produce() - append a copy of @r.
 * @partition: a partition number or BUS_PARTITION_ANY.
 * @out_partition, @out_offset: may be NULL; receive where it landed.
 *
 * The record is visible to consumers when this returns 0.  Returns 0,
 * -EAGAIN (full and BUS_PRODUCER_NONBLOCK), -ETIMEDOUT (full past
 * block_timeout_ns), -BUS_ENODAEMON (persistent partition's spiller a ring
 * behind, or busd never took this ring, and no busd runs), -BUS_ECORRUPT
 * (busd stopped spilling this partition: a corrupt frame or log, see its
 * log; or the ring's tail, or its write horizon, is one no producer
 * leaves: a damaged or hostile ring header, nothing published; or the
 * partition's ring or the control region was truncated under this
 * process's mapping: the record may or may not have reached readers, retry
 * elsewhere; see the top of this file),
 * -EMSGSIZE (the frame, 48 bytes plus the key, the value and the headers
 * (6 bytes each plus name and value), is more than half the ring),
 * -ENOENT (@partition is not one of the topic's), -EINVAL (a NULL @p or
 * @r, a NULL key, value or headers with a length, a header whose name
 * or value is NULL with a length, more than 65535 headers, a negative @partition other than BUS_PARTITION_ANY, or a claim
 * of @p still open), -BUS_EBUSY, -EUSERS (BUS_PRODUCERS_MAX producers
 * already append to that partition), -BUS_ESTALE, -BUS_EREPAIRED (a stalled
 * claim was repaired by another process).
 */
int bus_produce(struct bus_producer *p, int32_t partition, const struct bus_record *r,
		uint32_t *out_partition, uint64_t *out_offset);

/** A zero-copy claim: fill value[0..value_len) then commit or abort. */
struct bus_claim {
	void *value;       /**< in the ring; valid until commit/abort */
	uint32_t value_len;
	uint32_t partition;
	uint64_t offset;   /**< the offset the record will have */
	/* private */
	void *priv_frame;
	uint64_t priv_pos;
	uint64_t priv_commit;
};

/**
 * bus_producer_claim() - reserve a record of @value_len bytes with @key in
 * the ring and return a pointer to its value, to be built in place.
 * Headers are not available on this path.  Same returns as bus_produce().
 * At most one claim may be outstanding per producer: another claim, or a
 * bus_produce(), while one is open returns -EINVAL.
 */
int bus_producer_claim(struct bus_producer *p, int32_t partition, const void *key,
		       uint32_t key_len, uint32_t value_len, struct bus_claim *c);

/** bus_producer_commit() - publish claim @c with @timestamp (0: now).
 *  Ends the claim, also when it fails (but for -EINVAL).  Returns 0,
 *  -BUS_EREPAIRED (the claim was repaired meanwhile), -BUS_ECORRUPT (the
 *  ring or the control region was truncated under this process's mapping:
 *  as bus_produce()), or -EINVAL (@c is not @p's open claim, or a copy of
 *  it: never made, committed or aborted already (a copy of such a claim
 *  too, while another claim of @p is open), or its fields changed; the
 *  open claim, if any, stays open). */
int bus_producer_commit(struct bus_producer *p, struct bus_claim *c, int64_t timestamp);

/** bus_producer_abort() - give up claim @c: it is published as a lost
 *  frame, whose offset is consumed and reported to consumers as one lost
 *  record (lost_before, stats.lost).  Returns as bus_producer_commit(). */
int bus_producer_abort(struct bus_producer *p, struct bus_claim *c);

/** Per producer, all partitions together: the time its claims spent held
 *  back by a full ring (overflow `block`: the slowest gating consumer; a
 *  persistent topic: busd's spill cursor).  A blocked producer yields the
 *  CPU a hundred times, then sleeps on a futex of the ring until a gating
 *  consumer or busd frees space; its sleeps are at most 20 ms long (10 ms
 *  where membarrier(2) is missing), so that it finds a dead consumer or
 *  busd by itself: it uses next to no CPU while it waits.  Fields are only
 *  ever added at the end, with a new library version. */
struct bus_producer_stats {
	uint64_t blocked;    /**< claims that had to wait for space */
	uint64_t blocked_ns; /**< time they waited, all together */
	uint64_t sleeps;     /**< futex sleeps in those waits (and wakes that
				  came between the announcement and the sleep) */
	uint64_t woken;      /**< of those, ended by a wake or a wake that came
				  first (not the 20 ms bound or a signal); a wake
				  may have freed too little, and the claim sleeps
				  again */
};

/** bus_producer_stats() - @p's counters so far into *@out (nothing when
 *  either is NULL).  Reads only @p: one thread at a time, as every call on
 *  a producer. */
void bus_producer_stats(const struct bus_producer *p, struct bus_producer_stats *out);

/* ------------------------------------------------------------ consumer */

enum bus_wait {
	BUS_WAIT_SPIN = 0,  /**< busy-spin: lowest latency, one core */
	BUS_WAIT_YIELD = 1, /**< spin, then sched_yield() */
	BUS_WAIT_SLEEP = 2, /**< spin, then sleep on a futex in shared memory;
	                         an idle consumer uses no CPU but a wake-up a
	                         second (to find a ring truncated under it) */
};

enum bus_seek {
	BUS_SEEK_EARLIEST = 0, /**< oldest record still available */
	BUS_SEEK_LATEST = 1,   /**< the next record appended */
	BUS_SEEK_OFFSET = 2,   /**< value = offset */
	BUS_SEEK_TIME = 3,     /**< value = ns since epoch: first record at or
	                            after it */
};

/** The consumer is gating: block-policy producers never overwrite what
 *  it has not consumed, from the position bus_consumer_open() or
 *  bus_consumer_seek() returns on (a position lapped while the consumer
 *  took its slot or moved is sought again; only a producer's raise of its
 *  write horizon already under way at that moment may still lap it, and
 *  the poll then reports what it lost).  At most BUS_GATING_MAX per
 *  partition (-ENOSPC past that); a slot whose process is gone is taken
 *  over by the next gating consumer, or freed by a producer it holds
 *  back. */
#define BUS_CONSUMER_GATING 0x1u
/** When the consumer's position is no longer held anywhere (retention
 *  deleted it from disk), move to the earliest record and report what was
 *  skipped in lost_before, instead of returning -ERANGE (Kafka's
 *  auto.offset.reset=earliest). */
#define BUS_CONSUMER_RESET_EARLIEST 0x2u
/** The same, moving to the latest (auto.offset.reset=latest). */
#define BUS_CONSUMER_RESET_LATEST 0x4u
#define BUS_GATING_MAX 8

struct bus_consumer_opts {
	int32_t partition;    /**< one partition, or BUS_PARTITION_ANY: all */
	enum bus_wait wait;
	uint32_t spin_count;  /**< polls before yielding/sleeping; 0: 1000 */
	enum bus_seek start;  /**< EARLIEST or LATEST at open */
	unsigned flags;       /**< BUS_CONSUMER_* */
};

struct bus_consumer;

/**
 * bus_consumer_open() - a consumer on @topic, positioned at opts->start
 * (default: EARLIEST: on a persistent topic the oldest record on disk, read
 * through busd's logs in BUS_DATA_DIR).  @opts may be NULL.  Returns 0,
 * -ENOENT (no such topic, or opts->partition is not one of its partitions),
 * -EINVAL (bad options: also a negative partition other than
 * BUS_PARTITION_ANY; or both RESET flags), -ENOSPC (no free
 * gating slot), -BUS_ECORRUPT, -ENOMEM, -EAGAIN (producers moved the ring
 * on too fast: retry), or an -errno opening or reading a log (-EMFILE,
 * -EACCES, -EIO, ...: on a persistent topic only a log that does not exist
 * yet is taken for "no log").  The consumer is
 * single-threaded and holds, per partition read from disk, an open
 * directory, an open segment and a read buffer (256 KiB), or a read-only
 * mapping of 4 MiB of a sealed segment: by default the process measures
 * once, on the first sealed segment it reads, whether reading or mapping
 * is faster, and BUS_REPLAY=read|map in the environment forces one.  The
 * SIGBUS handler of bus_open() guards these mappings too, so that a
 * segment truncated by hand under a mapping is reported as -BUS_ECORRUPT
 * rather than killing the process (views already returned from the lost
 * pages then read as zeros; a thread that blocks SIGBUS is not covered);
 * with BUS_REPLAY=read no segment is mapped.  Returns -BUS_ECORRUPT also
 * when a ring of the topic or the control region was truncated under this
 * process's mapping.
 */
int bus_consumer_open(struct bus *b, const char *topic, const struct bus_consumer_opts *opts,
		      struct bus_consumer **out);

/** bus_consumer_close() - free @c (NULL ok), releasing any gating slot it
 *  holds; a copy of @c in a process forked after the open (closed there)
 *  leaves the slot to the process that opened it. */
void bus_consumer_close(struct bus_consumer *c);

/**
 * bus_consumer_seek() - move partition @partition (or every partition of the
 * consumer with BUS_PARTITION_ANY) to @whence/@value.
 *
 * On a persistent topic the position may be older than the ring holds: the
 * records are then read from the partition's log on disk (BUS_DATA_DIR,
 * written by busd), through the same poll calls, and the consumer moves
 * back onto the ring when it catches up, without gap or duplicate.
 * EARLIEST is the oldest record on disk or in the ring; OFFSET and TIME use
 * the logs' indexes (no scan of a whole log).  Returns 0, -ERANGE (the
 * offset is before the earliest record still held, or after the next
 * offset: "offset out of range"), -ENOENT (@partition is not one that @c
 * reads), -EINVAL (a NULL @c, an unknown @whence, a negative @partition
 * other than BUS_PARTITION_ANY), -EAGAIN (the producers
 * moved too fast: retry), -BUS_ECORRUPT (the ring's header holds what no
 * producer writes: a horizon or a checkpoint past its tail; or a segment
 * file on disk is damaged; or a ring of @c or the control region was
 * truncated under this process's mapping), -BUS_EVERSION (a segment file
 * of another format), or
 * an -errno opening or reading the log (as bus_consumer_open()).  On failure the
 * partition's position is unchanged (with BUS_PARTITION_ANY, partitions
 * before the failing one have moved).
 */
int bus_consumer_seek(struct bus_consumer *c, int32_t partition, enum bus_seek whence,
		      int64_t value);

/** bus_consumer_position() - the next offset @c reads in @partition, into
 *  *@offset.  Returns 0, -ENOENT (@partition is not one that @c reads) or
 *  -EINVAL (NULL @c or @offset). */
int bus_consumer_position(struct bus_consumer *c, uint32_t partition, uint64_t *offset);

/** A record as seen by a consumer: pointers into the ring (zero copy). */
struct bus_view {
	uint32_t partition;
	uint32_t header_count;
	uint64_t offset;
	int64_t timestamp;
	const void *key;
	const void *value;
	const void *headers;  /**< encoded; walk with bus_view_header() */
	uint32_t key_len;
	uint32_t value_len;
	uint32_t headers_len;
	/** Records lost (lapped or repaired) just before this one, in this
	 *  partition, since the previous record the consumer returned. */
	uint64_t lost_before;
	/* private */
	uint64_t priv_pos;
};

/** bus_view_header() - decode header @i of @v into @h.  Returns 0 or
 *  -EINVAL (i out of range) or -BUS_ECORRUPT. */
int bus_view_header(const struct bus_view *v, uint32_t i, struct bus_header *h);

/**
 * bus_consumer_poll() - up to @max records as views into the ring (or, for
 * records read from disk, into the consumer's read buffer or its mapping
 * of a sealed segment).
 * @max:        at least 1 (0: -EINVAL); @views holds @max.
 * @timeout_ns: 0 returns at once; < 0 waits forever; else waits up to it
 *              with the consumer's wait strategy (INT64_MAX: as forever).
 *              A signal does not end the wait.
 *
 * Every returned view was whole when poll returned (checked after the read,
 * as a seqlock reader does; records from disk are checked by their CRC).
 * On a topic that can overwrite, a view may be overwritten while the caller
 * uses it: call bus_consumer_check() after use to learn whether it was.
 * Views read from disk stay valid until the next poll, read or seek on @c.
 * A reader lapped on a persistent topic goes on from disk without loss.
 * Returns the number of views (0 on timeout), or -EINVAL (a NULL @c or
 * @views, or @max 0), -BUS_ESTALE,
 * -BUS_ECORRUPT (a frame or the ring's header holds what no producer
 * writes, or a segment file on disk is damaged; or a ring of @c or the
 * control region was truncated under this process's mapping, see the top
 * of this file: then no view is returned, and a wait ends, within a second,
 * with this error), -BUS_EVERSION (a segment file of another format),
 * -ERANGE (a partition's position is no longer held: the
 * retention deleted it; returned until the partition is sought again, unless
 * a BUS_CONSUMER_RESET_* flag resets it), or an -errno opening or reading a
 * log (-EMFILE, -EACCES, -EIO, -ENOMEM, ...): the partition's position then
 * stays, nothing is reported lost, and the next poll tries again.  A poll
 * over several partitions that fails in one after others gave records
 * returns those records; the error comes at the next poll.
 */
int bus_consumer_poll(struct bus_consumer *c, struct bus_view *views, unsigned max,
		      int64_t timeout_ns);

/**
 * bus_consumer_check() - after using the @n views of the last poll, check
 * they were not overwritten meanwhile.  Returns how many leading views are
 * still whole (== @n: all good).  When fewer, the consumer is moved back to
 * the first bad one (and each other partition to its first view after it):
 * on a persistent topic the next poll reads that record again, from the
 * log on disk, where what the ring lost is; on an ephemeral one it reports
 * it as lost.  Views read from disk are never bad.  Returns
 * -BUS_ECORRUPT when a ring of @c or the control region was truncated under
 * this process's mapping (the views may have read as zeros: none is good),
 * -EINVAL on bad arguments.  Pass the array the poll filled and the count
 * it returned: the cursor moves back right from any view, but stats.records
 * and stats.lost are kept exact only when the views after a bad one are all
 * there (with part of the batch, a bad view makes them off by the views
 * left out).
 */
int bus_consumer_check(struct bus_consumer *c, const struct bus_view *views, unsigned n);

/** A copied record: key and value copied into the caller's buffer. */
struct bus_msg {
	uint32_t partition;
	uint32_t key_len;
	uint32_t value_len;
	uint32_t headers_len;
	uint32_t header_count;
	uint64_t offset;
	int64_t timestamp;
	uint64_t lost_before;
	void *key;     /**< into @buf */
	void *value;   /**< into @buf */
	void *headers; /**< into @buf */
};

/**
 * bus_consumer_read() - the copying variant of poll: copies up to @max
 * records into @buf (of @buf_len bytes) and describes them in @msgs.  Every
 * record returned is guaranteed whole (validated after the copy); records
 * overwritten during the copy are counted in lost_before of the next one.
 * At most 64 records per call (a larger @max is taken as 64).  @buf may be
 * NULL when @buf_len is 0 (records with neither key, headers nor value).
 * Records from disk are read up to the first one @buf cannot hold; the
 * partition's next read takes it again from the consumer's read buffer or
 * mapping, with no I/O (with several partitions, the next call may serve
 * another partition first): a buffer of a few records costs a replay from
 * disk little.
 * A batch whose every record was overwritten during the copy (a reader
 * lapped on an overwrite topic) is not returned as 0: the call reads
 * again, and the next record reports them in lost_before.
 * Returns the number of records, 0 on timeout, -EMSGSIZE when @buf cannot
 * hold even the next record (the bytes its key, headers and value need are
 * then in msgs[0].value_len; the record stays the next one read, its
 * lost_before kept), -EINVAL (a NULL @c or @msgs, @max 0, or a NULL @buf
 * with a length), or the errors of bus_consumer_poll() and
 * bus_consumer_check().
 */
int bus_consumer_read(struct bus_consumer *c, struct bus_msg *msgs, unsigned max, void *buf,
		      size_t buf_len, int64_t timeout_ns);

/** Per consumer, all partitions together.  A record that
 *  bus_consumer_check() or bus_consumer_read() moves back over is taken
 *  out of records, and counted again when returned again; a record is
 *  counted lost once, however often it is found lost after such a move;
 *  a lap likewise (a seek starts afresh). */
struct bus_consumer_stats {
	uint64_t records; /**< returned so far */
	uint64_t lost;    /**< lapped, repaired or deleted records skipped */
	uint64_t laps;    /**< times the consumer found itself lapped */
};

/** bus_consumer_stats() - @c's counters so far into *@out (nothing when
 *  either is NULL).  Reads only @c: one thread at a time, as every call
 *  on a consumer. */
void bus_consumer_stats(const struct bus_consumer *c, struct bus_consumer_stats *out);

#ifdef __cplusplus
}
#endif
#endif
