/* busd.h - the daemon's process-local structures and the functions its
 * sources share.  busd.c explains how the daemon fits together.
 *
 * Threads: everything here belongs to the main thread, except the fields
 * marked "atomic" (read by the heartbeat thread or by the logger, which
 * any thread may call).  There is no lock.
 */
#ifndef BUSD_H
#define BUSD_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <bus/bus.h>

#include "internal.h"
#include "layout.h"
#include "segment.h"

#define BUSD_MS 1000000ll /* nanoseconds per millisecond */

/* Exit statuses (as the `bus` command's). */
enum { BUSD_EXIT_OK = 0, BUSD_EXIT_FAIL = 1, BUSD_EXIT_USAGE = 2 };

/* ------------------------------------------------------------ config.c */

/* Bits of busd_config.set: which keys a file or the command line gave. */
enum {
	CFG_DATA_DIR = 1u << 0,
	CFG_FSYNC = 1u << 1,
	CFG_SEGMENT_BYTES = 1u << 2,
	CFG_SEGMENT_MS = 1u << 3,
	CFG_INDEX_INTERVAL = 1u << 4,
	CFG_RETENTION_CHECK_MS = 1u << 5,
	CFG_HEARTBEAT_MS = 1u << 6,
	CFG_STUCK_CLAIM_MS = 1u << 7,
	CFG_LOG_LEVEL = 1u << 8,
	CFG_IDLE_SLEEP_MS = 1u << 9,
	CFG_PREALLOCATE = 1u << 10,
};

/* The daemon's settings (busd.conf.example documents each key). */
struct busd_config {
	char data_dir[PATH_MAX];     /* "": $BUS_DATA_DIR, else the library's default */
	enum bus_seg_fsync fsync;
	uint64_t fsync_arg;          /* ms (BUS_SEG_FSYNC_MS) or bytes (BYTES) */
	uint64_t segment_bytes;
	uint64_t segment_ms;         /* 0: segments never roll by age */
	uint64_t index_interval;
	uint64_t preallocate;        /* bytes reserved ahead of the writes; 0: none */
	uint64_t retention_check_ms;
	uint64_t heartbeat_ms;
	uint64_t stuck_claim_ms;
	uint64_t idle_sleep_ms;      /* nap after 1 s of idleness */
	uint64_t log_level;          /* enum bus_log_level */
	uint32_t set;                /* CFG_* */
};

/* Value parsers, shared by the config file and the command line.  They
 * return 0 or -EINVAL (malformed) or -ERANGE (too large). */
int busd_parse_size(const char *s, uint64_t *out);
int busd_parse_ms(const char *s, uint64_t *out);
int busd_parse_fsync(const char *s, enum bus_seg_fsync *mode, uint64_t *arg);
/* The longest fsync interval (ms, 11574 days): its ns fit in an int64_t. */
#define BUSD_FSYNC_MS_MAX 1000000000000ull
int busd_parse_level(const char *s, uint64_t *out);

/* The largest config or topic.conf file read (bytes), and the longest line
 * of a config file (its newline included). */
#define BUSD_CONF_MAX (1 << 20)
#define BUSD_CONF_LINE_MAX 8191

/*
 * busd_fopen_small() - open @path for reading if it is a regular file of at
 * most BUSD_CONF_MAX bytes (not a FIFO, a device or a huge file: a hostile
 * file cannot hang or flood busd); a symbolic link only if @follow.
 * Returns the stream, or NULL with errno set (EINVAL: not a regular file,
 * EFBIG: too large, ELOOP: a link, or open's errno).
 */
FILE *busd_fopen_small(const char *path, bool follow);
/* busd_fopen_why() - what busd_fopen_small()'s errno @e means, in words
 * ("not a regular file", "larger than 1 MiB", "a symbolic link", else
 * strerror()).  The string is static or strerror()'s. */
const char *busd_fopen_why(int e);

/* The built-in defaults. */
void busd_config_defaults(struct busd_config *c);

/*
 * busd_config_set() - set key @key to @val (text) in @c, checking it.
 * Returns 0, or -ENOENT (no such key) or -EINVAL with a message (naming the
 * key, the value and what is expected) in @err.
 */
int busd_config_set(struct busd_config *c, const char *key, const char *val, char *err,
		    size_t errlen);

/*
 * busd_config_load() - read the `key = value` file @path into @c (which
 * holds the defaults, or what is to be overridden; it is left as it was
 * on any error).  Each key may be given once.  Returns 0, or -errno /
 * -EINVAL (a bad line, an unknown key, a key given twice, a bad value)
 * with a one-line message `FILE:LINE: what` (or `FILE: why`) in @err.
 * Not thread-safe on the same @c.
 */
int busd_config_load(struct busd_config *c, const char *path, char *err, size_t errlen);

/* busd_config_merge() - copy into @dst every key that @over sets. */
void busd_config_merge(struct busd_config *dst, const struct busd_config *over);

/* busd_fsync_str() - the fsync policy as the config file writes it. */
const char *busd_fsync_str(enum bus_seg_fsync mode, uint64_t arg, char *buf, size_t len);

/* busd_level_name() - "error", "warn", "info", "debug". */
const char *busd_level_name(uint64_t level);

/* --------------------------------------------------------------- log.c */

/* Route log lines to stderr (foreground) or to syslog (LOG_DAEMON). */
void busd_log_open(bool foreground);
/* Lines above @level are dropped.  Atomic: any thread. */
void busd_log_level(enum bus_log_level level);
bool busd_log_enabled(enum bus_log_level level);
/* One event, one line.  Thread-safe. */
void busd_log(enum bus_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The library's log callback (struct bus_opts.log, struct bus_seg_opts.log). */
void busd_lib_log(void *ctx, enum bus_log_level level, const char *msg);

/* ------------------------------------------------------------- spill.c */

struct dtopic;

/* One persistent partition that busd spills.  Positions and offsets are
 * those of the ring (layout.h): pos/off is the next frame to hand to the
 * writer; pub_pos/pub_off the spill cursor as last published in the ring
 * header (everything below it is written out to the log). */
struct dpart {
	struct dtopic *dt;
	uint32_t idx;
	struct bus_ring *r;
	char *dir;                  /* <data_dir>/<topic>/<idx> */
	struct bus_seg_writer *w;   /* NULL: (re)open at the next pass */
	uint64_t pos, off;
	uint64_t pub_pos, pub_off;
	/* Resume after the log lost records the ring had spilled (see
	 * spill.c): records below skip_below are on disk already; records
	 * up to gap_to are gone and written as LOST frames; records below
	 * prot_off (at positions below prot_pos) are no longer protected
	 * from producers, so they are copied and checked before use. */
	uint64_t skip_below, gap_to, prot_off, prot_pos;
	bool appended;              /* frames handed to the writer since the
	                               last flush that succeeded */
	bool stopped;               /* a bad frame: this partition stays stopped */
	bool lost;                  /* its ring was truncated under busd (spill.c,
	                               part_lost()): stopped, writer abandoned */
	bool reopen;                /* reopen the writer at the next safe point */
	/* Write failures (full disk...): one ERROR per episode, retries with
	 * exponential backoff, one INFO when it works again. */
	int err;
	int64_t fail_since, retry_at, backoff;
	uint64_t retries;
	/* A claimed frame that stays unpublished at stall_pos. */
	uint64_t stall_pos;
	int64_t stall_since, stall_try;
	int64_t unsynced_since;     /* monotonic ns: since when the log holds
	                               records no sync covers (fsync = DURATION
	                               only; 0: none; spill.c, part_idle_sync()) */
	int retain_err;             /* last retention error, logged once */
	uint64_t drain_to;          /* at a stop: the next offset when it began */
	/* The offset floor's step and the time of its last raise (spill.c,
	 * part_floor()). */
	uint64_t floor_step;
	int64_t floor_at;
};

/* A persistent topic busd holds. */
struct dtopic {
	struct bus_topic *t;        /* NULL: bus_topic_get() failed, retried */
	char name[BUS_NAME_MAX + 1];
	uint32_t gen;
	int get_err;
	struct bus_topic_cfg_disk cfg;
	bool seen;                  /* listed by the current table scan */
	bool conf_ok;               /* topic.conf matches the live config */
	int conf_err;               /* last error writing it, logged once */
	bool dir_known;
	bool dir_gone;              /* its "folder is gone" WARN logged */
	dev_t dir_dev;              /* the topic's log dir, as busd made it */
	ino_t dir_ino;
	struct dpart *parts;        /* cfg.partitions */
};

struct busd {
	struct bus *b;
	struct busd_config cfg;     /* in force: defaults, file, command line */
	struct busd_config cli;     /* the command line's keys, kept for reloads */
	char *config_path;          /* absolute, or NULL */
	int32_t pid;
	/* The topic registry: the main thread's alone. */
	struct dtopic *topics[BUS_TOPICS_MAX];
	uint32_t ntopics;
	uint64_t table_sig;         /* fingerprint of the slot state words */
	int64_t next_sync_ns;       /* monotonic ns: the earliest sync of a quiet
	                               log due (fsync = DURATION), 0: none.  Set
	                               by spill_pass(); bounds the main loop's
	                               naps */
	/* Copy of frames not protected from producers (resume only). */
	uint8_t *scratch;
	size_t scratch_len;
	/* Heartbeat thread. */
	_Atomic uint64_t hb_ms;     /* atomic: the heartbeat thread reads it */
	_Atomic bool hb_stop;       /* atomic */
	int hb_efd;                 /* eventfd that wakes the heartbeat thread */
	bool ctl_lost;              /* the control region was truncated under
	                               busd: it stops (busd_ctl_lost()) */
};

/* busd_ctl_lost() - whether the control region was truncated under busd's
 * mapping (mapguard.h: it reads as zeros now): logged once (ERROR), and
 * d->ctl_lost set, which ends the main loop (busd drains the rings, which
 * are whole, and exits 1).  Nothing that reads the topic table may act on
 * what it read (drop a "deleted" topic, retire its logs) without asking
 * this after the read.  One relaxed load while nothing was ever truncated. */
bool busd_ctl_lost(struct busd *d);

/* The spill pass: every partition of every held topic once.  Returns the
 * bytes (or frames) of work done: 0 means the pass was idle.  Sets
 * d->next_sync_ns. */
uint64_t spill_pass(struct busd *d, int64_t now);
/* Release partition @dp: close its writer (flushing what it can), and
 * clear the ring's spiller_pid if it is ours. */
void spill_part_close(struct busd *d, struct dpart *dp);
/* At a stop: note each partition's next offset, the drain's target. */
void spill_drain_begin(struct busd *d);
/* True when every partition spilled up to its target (or cannot go on). */
bool spill_drain_done(const struct busd *d);
/* Log (WARN) what the drain left in the rings. */
void spill_drain_report(const struct busd *d);
/* Mark every open writer for reopening (new segment or fsync options). */
void spill_reopen_all(struct busd *d);
/* Delete expired segments of every partition with a retention limit. */
void spill_retention(struct busd *d);

/* ------------------------------------------------------------ topics.c */

/*
 * topics_recover() - at start-up, before spilling: remove the .deleted.*
 * folders, then re-create the topics of <data_dir>/<topic>/topic.conf that
 * the table lacks.  A topic.conf that does not read whole is refused (an
 * ERROR naming it); an entry that is no topic's folder (no valid topic
 * name, not a folder, no topic.conf) gets a WARN naming it; both are left
 * as they are.  Returns 0, or -errno when the data dir cannot be read,
 * with a message naming it in @err (busd then exits 1).
 */
int topics_recover(struct busd *d, char *err, size_t errlen);
/* Scan the topic table: take new persistent topics, drop deleted ones.
 * Returns the number of topics held. */
uint32_t topics_scan(struct busd *d);
/* True when a slot's state word changed since the last scan. */
bool topics_table_changed(struct busd *d);
/* Drop every topic (closing its writers). */
void topics_release_all(struct busd *d);
/* Remove <data_dir>/.deleted.* directories of topics busd does not hold. */
void topics_sweep_deleted(struct busd *d);

#endif
