/* segment.h - segment logs: a partition's records on disk, as busd spills
 * them from the ring and consumers replay them.  This comment is the one
 * definition of the on-disk format; the writer, the reader, busd and the
 * tools all follow it.  Internal to libbus (see libbus.map).
 *
 * FILES.  A partition's log is a directory (BUS_DATA_DIR/<topic>/<partition>/
 * for busd) of segments, each three files named by the segment's base
 * offset (the offset of its first record) in 20 decimal digits, as Kafka:
 *
 *   00000000000000000000.log        the frames
 *   00000000000000000000.index      sparse offset index
 *   00000000000000000000.timeindex  sparse time index
 *
 * A segment exists when its .log does; the two index files are derived from
 * it and rebuilt when missing or corrupt.  Every file of a log is a regular
 * file: under one of these names (offset.floor too), a symlink is never
 * followed, and it, a FIFO or a directory is a corrupt file (-BUS_ECORRUPT;
 * readers ignore such an index file, the writer refuses to open).  The segment with the highest base
 * is the active one (the only one written to); the others are sealed.
 * Offsets are dense within a segment (base, base + 1, ...), and the next
 * segment's base is the offset that follows the last record of the previous
 * one, or higher: a gap between segments holds offsets skipped by a
 * recovery at the offset floor (see "offset floor" below), or records lost
 * with a sealed segment's torn tail (see bus_seg_writer_open()), which
 * readers report as lost; a segment that was active and empty at such a
 * skip stays, sealed and empty.  All integers are in the byte order of the
 * host that wrote them; the magic reveals it.
 *
 * .log.  A 64-byte header (struct bus_seg_hdr: magic "BUSSEG" 0x00 0x01 read
 * as a little-endian u64, a format version, the base offset, the frame
 * header size and alignment, the creation time, and a CRC32C of the header)
 * followed by frames from file position 64 on.  A frame is laid out exactly
 * as in the ring (struct bus_frame, layout.h: commit word {tag, len, type},
 * claim word, offset, timestamp, key_len, headers_len, value_len,
 * header_count (16 bits), slack (16 bits), then key, headers, value,
 * zero-padded to 8 bytes, then slack zero bytes), except
 * that the 8-byte claim word holds the frame's CRC32C (crc32c.h; upper 32
 * bits zero), computed over the whole frame (its `len` bytes, padding
 * included) with that word taken as zero.  On disk:
 *   - type is DATA or LOST; PAD frames are never stored;
 *   - len == align8(48 + key_len + headers_len + value_len) + slack, where
 *     slack is a multiple of 8 up to 56 (a low-latency producer's line
 *     alignment, kept as the ring had it: layout.h; 0 in files written
 *     before the field, whose header_count was 32 bits and small); tag is
 *     the low 32 bits of `offset`; `offset` is base + the frame's index in
 *     the file;
 *   - a LOST frame (a record lost in the ring, kept so that offsets stay
 *     dense and a replay can report the loss) is a bare 48-byte header:
 *     sizes, header_count, slack and timestamp are 0.
 * A frame is valid when all of this holds and its CRC matches.  A .log ends
 * with the last valid frame; anything after it (a frame cut by a crash, or
 * garbage) is a torn tail, which the writer truncates when it opens.  A
 * .log whose first 4 KiB (all of it when shorter) are zeros is one whose
 * header was never written out (a block allocated and not written before
 * a power loss, segment.c UNWRITTEN HEADS): it holds no record, as one
 * shorter than its header; a header that fails its check otherwise is
 * damage (-BUS_ECORRUPT).
 *
 * .index: entries struct bus_seg_idx {rel, pos}, 8 bytes each, no header:
 * the frame of offset base + rel starts at file position pos.  The first
 * frame of a segment (rel 0, pos 64) is implied and has no entry.  The frame
 * that would end more than index_interval bytes (opts, default 4096) past
 * the last entry (or past the header) gets an entry, its checkpoint, so a
 * frame is at most index_interval bytes after the checkpoint before it
 * (unless one frame alone is larger).  rel and pos strictly increase.
 *
 * .timeindex: entries struct bus_seg_tidx {max_ts, rel, pos}, 16 bytes
 * each, no header.  max_ts is the largest timestamp of the DATA frames
 * before offset base + rel in the segment (LOST frames carry no time).  An
 * entry is added at a checkpoint when max_ts has grown since the last entry
 * (Kafka's sparse "max timestamp so far" index), and once more when the
 * segment is sealed (rel = its record count, pos = its size: the seal
 * entry, whose max_ts is the segment's largest timestamp, INT64_MIN when it
 * holds no DATA frame).  max_ts never
 * decreases, rel and pos strictly increase, and every entry but the seal
 * entry sits at a checkpoint.  So at a checkpoint without a time entry, the
 * frames before it are no later than the last time entry before it: seeking
 * to the first record with timestamp >= T finds the last entry with
 * max_ts < T, and scans from it or from the checkpoint before the next
 * entry, whichever is later: at most index_interval bytes.
 *
 * The writer writes a batch of frames to the .log, then the time entries
 * of the frames it wrote, then their offset entries.  So an index entry
 * never points past what the .log holds, and an offset entry that a reader
 * sees has its time entry (if any) already in the .timeindex when the
 * reader loads the .index first.  (A power loss can break this order for
 * what was not synced; the writer repairs the active segment when it
 * opens, and readers check the entry a scan starts from against the frame
 * it points to.)  A .log holds at most 2 GiB plus one frame: positions fit in
 * 32 bits, and so do relative offsets.  A longer one is no writer's (a
 * damaged or hostile file): a writer that recovers it as its active
 * segment writes no index entry past what 32 bits hold, nor a seal entry
 * when it seals it; readers read it correctly, scanning from the last
 * entry it has.
 *
 * CONCURRENCY.  One writer per directory (the writer holds an flock on the
 * directory; a second one gets -EBUSY).  A writer handle is used by one
 * thread at a time.  Readers, bus_seg_bounds(), bus_seg_earliest() and
 * bus_seg_retain() may run in any number of threads and processes,
 * concurrently with the writer and with each other; each reader handle is
 * used by one thread at a time.  Readers see what the writer has written
 * out (bus_seg_flush(), or a full buffer), never a partial frame.
 * Readers read the active segment with pread(2).  Sealed segments they
 * read or map (read-only, 4 MiB windows), whichever the process measured
 * to be faster on its first sealed window (seg_io in segment.c has the
 * method and the figures); BUS_REPLAY=read or BUS_REPLAY=map in the
 * environment (read at bus_seg_reader_open()) forces one.  Sealed segments
 * are not truncated (only the active one is cut, by a recovering writer;
 * retention unlinks whole files; the one exception, a writer opened with
 * verify_all after a power loss, cuts a sealed segment's torn tail: bytes
 * that never held a whole frame), so a mapping never outlives a byte a
 * reader could use.  A sealed segment truncated by hand under a mapping reader
 * would raise SIGBUS; the reader registers its windows with mapguard.h,
 * which installs a SIGBUS handler (once per process, chained to the one
 * before) that maps zeros over the lost pages, and the reader reports
 * -BUS_ECORRUPT there, as it does after a short read.
 *
 * ERRORS.  Every call returns 0 (or a count) on success, else -errno or
 * -BUS_ECORRUPT (a file is not a segment or not a regular file, or a sealed
 * segment holds a bad frame) or -BUS_EVERSION (another format version or
 * byte order).
 */
#ifndef BUS_SEGMENT_H
#define BUS_SEGMENT_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout.h"

/* "BUSSEG" 0x00 0x01 read as a little-endian u64. */
#define BUS_SEG_MAGIC 0x0100474553535542ull
#define BUS_SEG_VERSION 1u
#define BUS_SEG_HDR_SIZE 64u

/* Names: 20 digits, a dot, an extension, a NUL. */
#define BUS_SEG_NAME_MAX 32u

/* The largest next offset of a log: records have offsets below it.  A
 * ring made over a log starts at the log's next offset (bus_topic_create()),
 * and a ring's tail keeps bit 63 for a flag (BUS_TAIL_EXCL, layout.h), so
 * no offset reaches 2^63 - 1.  A file named with a larger base is not a
 * segment (listings pass over it), a frame of offset BUS_SEG_OFFSET_MAX or
 * more is not valid (as a bad CRC), nor is a floor slot above it. */
#define BUS_SEG_OFFSET_MAX (BUS_TAIL_EXCL - 1)

#define BUS_SEG_BYTES_DEFAULT (1ull << 30)
#define BUS_SEG_BYTES_MIN 1024ull
#define BUS_SEG_BYTES_MAX (1ull << 31) /* file positions are u32 in indexes */
#define BUS_SEG_INTERVAL_DEFAULT 4096u
#define BUS_SEG_BUF_DEFAULT (256u * 1024)
#define BUS_SEG_WRITE_DEFAULT (1024u * 1024)
#define BUS_SEG_PREALLOC_DEFAULT (16ll << 20)

struct bus_seg_hdr {
	uint64_t magic;       /* BUS_SEG_MAGIC */
	uint32_t version;     /* BUS_SEG_VERSION */
	uint32_t hdr_size;    /* BUS_SEG_HDR_SIZE */
	uint64_t base_offset; /* equals the number in the file name */
	uint32_t frame_hdr;   /* BUS_FRAME_HDR */
	uint32_t frame_align; /* BUS_FRAME_ALIGN */
	int64_t created_ns;   /* CLOCK_REALTIME when the segment was created */
	uint32_t hdr_crc;     /* CRC32C of these 64 bytes with hdr_crc = 0 */
	uint32_t reserved0;
	uint64_t reserved[2];
};
_Static_assert(sizeof(struct bus_seg_hdr) == BUS_SEG_HDR_SIZE, "segment header size");

/* struct bus_frame as stored in a .log: plain integers, and the claim word
 * replaced by the CRC. */
struct bus_seg_fhdr {
	uint64_t commit; /* BUS_COMMIT(type, len, offset) */
	uint64_t crc;    /* CRC32C of the frame with this word zero */
	uint64_t offset;
	int64_t timestamp;
	uint32_t key_len;
	uint32_t headers_len;
	uint32_t value_len;
	uint16_t header_count;
	uint16_t slack;
};
_Static_assert(sizeof(struct bus_seg_fhdr) == sizeof(struct bus_frame), "disk frame header");
_Static_assert(offsetof(struct bus_seg_fhdr, crc) == offsetof(struct bus_frame, claim), "crc");
_Static_assert(offsetof(struct bus_seg_fhdr, offset) == offsetof(struct bus_frame, offset), "off");
_Static_assert(offsetof(struct bus_seg_fhdr, timestamp) == offsetof(struct bus_frame, timestamp),
	       "timestamp");
_Static_assert(offsetof(struct bus_seg_fhdr, key_len) == offsetof(struct bus_frame, key_len),
	       "sizes");
_Static_assert(offsetof(struct bus_seg_fhdr, header_count) ==
		       offsetof(struct bus_frame, header_count),
	       "header count");
_Static_assert(offsetof(struct bus_seg_fhdr, slack) == offsetof(struct bus_frame, slack), "slack");

struct bus_seg_idx {
	uint32_t rel; /* offset - base */
	uint32_t pos; /* file position of the frame in the .log */
};
_Static_assert(sizeof(struct bus_seg_idx) == 8, "index entry");

struct bus_seg_tidx {
	int64_t max_ts; /* largest DATA timestamp before offset base + rel */
	uint32_t rel;
	uint32_t pos;
};
_Static_assert(sizeof(struct bus_seg_tidx) == 16, "time index entry");

/* ------------------------------------------------------------- writer */

enum bus_seg_fsync {
	BUS_SEG_FSYNC_NEVER = 0, /* leave it to the kernel (and to rolls: none) */
	BUS_SEG_FSYNC_MS = 1,    /* at a write-out fsync_ms or more after the last */
	BUS_SEG_FSYNC_BYTES = 2, /* at a write-out fsync_bytes or more after it */
};

/* Writer options.  Zero fields take the defaults. */
struct bus_seg_opts {
	uint64_t segment_bytes;  /* roll before a frame would take the active
	                            segment past this; 0: 1 GiB; 1 KiB..2 GiB */
	uint64_t segment_ms;     /* roll before appending to a segment whose
	                            first append (after a restart: whose
	                            creation) is this old (checked at the
	                            first append after a flush); 0: never */
	uint32_t index_interval; /* bytes between checkpoints; 0: 4096 */
	uint32_t buf_bytes;      /* write buffer (copied frames); 0: 256 KiB;
	                            min 4 KiB */
	uint32_t write_bytes;    /* a write-out once this much is pending
	                            (frames in place included); 0: 1 MiB;
	                            at least buf_bytes */
	enum bus_seg_fsync fsync;
	uint64_t fsync_ms;       /* BUS_SEG_FSYNC_MS: 0 syncs every write-out */
	uint64_t fsync_bytes;    /* BUS_SEG_FSYNC_BYTES */
	uint64_t first_offset;   /* base of the first segment of an empty dir;
	                            at most BUS_SEG_OFFSET_MAX */
	uint32_t file_mode;      /* 0: 0640 (directories get x where r) */
	int64_t prealloc_bytes;  /* reserve the .log's blocks this far ahead
	                            of the writes (fallocate, the size
	                            unchanged; see PREALLOCATION in
	                            segment.c); 0: 16 MiB; < 0: never */
	uint32_t verify_all;     /* 1: recovery checks every frame of the
	                            active segment, not only those after its
	                            last checkpoint, and the tail of every
	                            sealed segment whose seal entry does not
	                            match its .log (see bus_seg_writer_open()) */
	uint32_t no_parents;     /* 1: make @dir itself if it is missing, never
	                            its parents: a missing parent is -ENOENT
	                            (busd: a topic's dir gone means the topic
	                            was deleted, and must not come back) */
	bus_log_fn log;          /* recovery and write errors; NULL: none */
	void *log_ctx;
};

struct bus_seg_writer_stats {
	uint64_t next_offset;    /* offset the next append must carry */
	uint64_t written_offset; /* frames below it are in the .log files:
	                            visible to readers, safe from a crash of
	                            this process */
	uint64_t synced_offset;  /* frames below it were fdatasync'ed (what
	                            the writer found at open counts) */
	uint64_t active_base;    /* base of the active segment */
	uint64_t rolls;
	uint64_t syncs;          /* fdatasync calls on the active .log */
	uint64_t write_errors;   /* failed write-outs */
	uint64_t recovered_scanned_bytes; /* frames validated at open */
	uint64_t recovered_dropped_bytes; /* torn tail cut at open */
	uint32_t recovered_index_rebuilt; /* 1: indexes rebuilt from the start */
	uint32_t sync_failed;    /* 1: an fdatasync failed; the writer is
	                            poisoned (see bus_seg_flush()); written_
	                            offset is then back at synced_offset */
	uint64_t floor;          /* the durable offset floor (0: none) */
	uint64_t floor_syncs;    /* floor writes (each with an fdatasync) */
};

struct bus_seg_writer;

/*
 * bus_seg_writer_open() - open (creating it, and unless o->no_parents its
 * parents, if needed) the log in @dir for appending.
 * @w:   receives the handle; untouched on failure.
 * @o:   options, NULL for the defaults; copied.
 *
 * Takes the directory's lock, removes index files left without their .log
 * (an interrupted retention), then recovers the active segment: its index
 * entries are checked against each other and the log, and every frame from
 * the last consistent index entry on is validated (from the start of the
 * segment, rebuilding both indexes, when they are missing or corrupt).  A
 * torn tail is truncated and reported (log callback, WARN; the stats count
 * the bytes dropped); nothing before it is touched.  An active segment
 * whose header was never written out (shorter than a header, or its first
 * block zeros: see the format) gets its header again and no record, WARN.  With o->verify_all,
 * every frame from the segment's start is checked: a bad one anywhere is
 * where the log is cut (the valid frames after it go with it: offsets
 * stay dense).  Only a power loss (the kernel wrote some unsynced pages
 * of the log and not others) or damage to the disk leaves a bad frame
 * before a checkpoint: busd asks for it when it takes a partition over a
 * ring that never spilled (after a reboot), not when it adopts one after
 * its own crash, where the page cache kept every byte it wrote and the
 * scan of a 1 GiB segment would hold the producers up.  Unless the fsync
 * policy is "never", the active segment is then fdatasync'ed; when that
 * fails (a write-back failed since the last sync, and the writer that made
 * it died before it could cut the log: see bus_seg_flush()), the segment's
 * pages are dropped from the page cache (POSIX_FADV_DONTNEED) and it is
 * recovered again, every frame checked as the disk holds it (ERROR from
 * the log callback); and the dir is fsync'ed, so that the active segment's
 * name is as durable as what a sync of its .log covers (a failure fails
 * the open).  With verify_all,
 * each sealed segment's seal entry is also checked against its .log's
 * size (one stat and one read each): a power loss with fsync "never" can
 * cut a sealed segment inside a frame, or lose its seal entry.  Where they
 * disagree, the .log is cut after its last whole frame (WARN; counted in
 * recovered_dropped_bytes), its indexes cut to match and the seal entry
 * written again; readers then go on from there to the next segment, and
 * report the offsets in between as lost (records that were never synced).
 * Before that, or without verify_all, such a tail is a bad frame to
 * readers (-BUS_ECORRUPT).  A sealed segment whose header was never written
 * out (its first block zeros: see the format) is emptied the same way
 * (WARN, its bytes counted), whatever its seal entry says.  An empty dir gets a
 * first segment with base o->first_offset.  Index writes that fail (a full
 * disk) are retried by later write-outs.
 *
 * Returns 0, -EINVAL (bad option), -EBUSY (another writer holds @dir),
 * -ENOENT (o->no_parents and the parent of @dir does not exist),
 * -BUS_ECORRUPT / -BUS_EVERSION (the active segment's header), -ENOMEM, or
 * -errno from the file system (-EACCES, -ENOSPC, -EIO, ...).
 */
int bus_seg_writer_open(struct bus_seg_writer **w, const char *dir, const struct bus_seg_opts *o);

/*
 * bus_seg_mkdir() - make the folder @path with @mode, and with @parents its
 * missing parents too (mkdir -p), durably: after each mkdir that makes a
 * folder, the folder holding its entry is fsynced, so that a power loss
 * cannot lose a folder (and the files synced in it, such as an offset
 * floor) that its maker went on to rely on.  Folders that exist are left
 * as they are (also a non-folder under the name: the caller's open of
 * it says -ENOTDIR).  Returns 0, -ENOENT (a parent is missing and not
 * @parents), -ENOMEM, or -errno of mkdir(2), open(2) or fsync(2).
 * Thread- and process-safe: makers racing for a folder all succeed, and
 * the one whose mkdir made it syncs its entry.
 */
int bus_seg_mkdir(const char *path, mode_t mode, bool parents);

/* The offset the next bus_seg_append() must carry. */
uint64_t bus_seg_writer_next_offset(const struct bus_seg_writer *w);

void bus_seg_writer_stats(const struct bus_seg_writer *w, struct bus_seg_writer_stats *st);

/*
 * bus_seg_append() - append one record.
 * @f: a frame laid out as in the ring (header, then key, headers, value);
 *     its length is the commit word's.  DATA frames are stored with their
 *     payload, LOST frames as a bare header (see the format).  Only the
 *     header and the payload bytes are read, once; the caller keeps the
 *     frame stable during the call.
 * @expected_offset: the frame's offset: must equal the writer's next offset,
 *     the commit word's tag, and (DATA) the frame's offset field.
 *
 * Rolls first when the active segment is full or old (see the options).
 * Unless the fsync policy is "never", a roll syncs the sealed segment, then
 * makes the new one and fsyncs the dir, so that the new file's name is
 * durable before any sync of its .log counts (synced_offset); when that
 * fsync of the dir fails, the roll is done but for it: the next append
 * and the next sync retry it first, and fail while it does.
 * The frame is copied into the write buffer (256 KiB); a full buffer, or
 * write_bytes pending (1 MiB, frames in place included), is written out
 * first, as bus_seg_flush() does (fsync policy included).
 * Nothing is visible to readers before it is written out.
 *
 * Returns 0 (the frame is taken: the next offset advanced), -EINVAL (wrong
 * offset, a PAD frame, or sizes that do not add up to the length),
 * -EOVERFLOW (the next offset is BUS_SEG_OFFSET_MAX: the log is full), -ENOMEM,
 * or an error from the write-out or the roll it needed (-ENOSPC, -EIO,
 * ...): then the frame is not taken, the files hold whole frames only, and
 * the same call may be retried later, unless the writer is poisoned (a
 * failed fdatasync, see bus_seg_flush()): then it returns that error, as
 * does every later call.
 */
int bus_seg_append(struct bus_seg_writer *w, const struct bus_frame *f, uint64_t expected_offset);

/*
 * bus_seg_append_inplace() - bus_seg_append() without the copy: a DATA
 * frame is written out from where it lies.  The writer first makes it what
 * the log stores: when its claim word holds the producer's sum for
 * @expected_offset (BUS_CLAIM_IS_SUM(): a producer of a persistent topic
 * computed the CRC and zeroed the padding), it takes the CRC from there and
 * reads nothing past the header; otherwise it zeroes the padding after the
 * payload and computes the CRC.  Either way it then stores the plain CRC
 * in the claim word (relaxed; the upper half 0, so that it never reads as
 * a claim or a sum).  The sum is trusted: a producer's wrong sum is stored
 * as it is, and the frame fails its CRC when read.  So @f must be a
 * published frame, whose claim word nobody needs any more (the ring's
 * protocol: ring.c, consumer.c, bus_ring_repair() read a claim word only
 * while the commit word does not yet carry the frame's offset).  A LOST
 * frame, or one whose commit word differs from the log's, is copied as by
 * bus_seg_append().
 *
 * The caller keeps every byte of the frame unchanged and mapped until the
 * writer has written it out: until a later bus_seg_flush() returns 0, or
 * bus_seg_writer_close() returns.  (busd: frames above the spill cursor,
 * which it publishes only after a flush that returned 0.)  A frame changed
 * in between is written out as it is then, and fails its CRC when read.
 * Returns as bus_seg_append().  Not thread-safe (one writer per log, as
 * for every writer call).
 */
int bus_seg_append_inplace(struct bus_seg_writer *w, struct bus_frame *f,
			   uint64_t expected_offset);

/*
 * bus_seg_frame_crc() - the CRC of a frame as a log stores it: the commit
 * word @commit, the claim word as zero, then bytes 16 to @len of @frame
 * (the header's other fields, the payload and the padding, all read as
 * they are).  @len is the frame's length (>= BUS_FRAME_HDR).  Producers
 * of persistent topics store it in the summed claim word (layout.h);
 * writers and readers of logs compare it with the stored one.
 * Thread-safe; reads only; never fails.
 */
uint32_t bus_seg_frame_crc(uint64_t commit, const void *frame, uint32_t len);

/*
 * bus_seg_flush() - write out the buffered frames, then their time and
 * offset index entries, then fdatasync the .log if the fsync policy says
 * it is time (the policy is evaluated here only: call it at least every
 * fsync_ms).
 *
 * A write that fails or falls short (-ENOSPC, -EIO, -EDQUOT, ...) keeps the
 * frames written whole and truncates the .log back to the end of the last
 * of them, so the files never end in a partial frame; the rest stays
 * buffered and the next flush or append retries it.  The frames written
 * before the error count (written_offset in the stats), also when the
 * error came from an index file.
 *
 * An fdatasync error (-EIO, -ENOSPC, ...; at a flush, a roll, or close)
 * poisons the writer.  The kernel keeps the pages it could not write in
 * the page cache, clean: reads still find them, and a later fdatasync
 * succeeds without writing them, so neither a retry nor a recovery that
 * reads the file can tell what the disk lacks.  So the writer cuts the
 * .log back to what its last successful fdatasync covered (synced_offset
 * in the stats; written_offset falls back to it) and empties the indexes
 * (the next recovery rebuilds them), with an ERROR from the log callback;
 * and every later call (append, flush, skip, close) returns the error
 * (stats.sync_failed is set).  Close the writer and open the log again
 * once the disk works: it ends at synced_offset, and the caller writes
 * again whatever followed (busd: from the ring; as LOST records what the
 * ring no longer holds).  Records past synced_offset were never reported
 * synced; readers that had read them read on where the records are
 * written again (bus_seg_next()).  A writer that dies before it can cut
 * leaves the error to the next fdatasync of the file: recovery's, which
 * then reads the segment again from the disk (bus_seg_writer_open()).
 * (segment.c, SYNC ERRORS, says why not rewrite or re-read in place.)
 *
 * Returns 0 or -errno.
 */
int bus_seg_flush(struct bus_seg_writer *w);

/*
 * bus_seg_writer_close() - flush, fdatasync unless the policy is "never",
 * close, free.  The handle is freed even when the flush fails; frames it
 * could not write are dropped (the next writer's next offset tells where
 * the log ends).  A poisoned writer (see bus_seg_flush()) writes nothing,
 * cuts the log back to its last sync if that failed before, and returns
 * the fdatasync's error.  Returns 0, the flush's or the fdatasync's
 * error.  NULL is a no-op.
 */
int bus_seg_writer_close(struct bus_seg_writer *w);

/*
 * bus_seg_writer_abandon() - free @w without writing anything more: the
 * frames it buffers (copied, or appended in place) and the index entries
 * it has not written yet are dropped without being read, and nothing is
 * fdatasync'ed.  For a writer whose pending frames must not reach the log:
 * busd abandons the writer of a ring truncated under it, whose frames in
 * place may now read as zeros (and bus_seg_writer_close() would write
 * them out under the CRCs computed before).
 *
 * The log keeps what earlier write-outs put in its files, whole frames
 * only (written_offset in the stats, as unsynced as the fsync policy left
 * it), and a next writer continues it from there; the index entries not
 * written are rebuilt by that writer's recovery.  The files are closed,
 * the dir's lock released (another writer may open the log at once), and
 * the blocks reserved ahead of the .log's end given back (PREALLOCATION in
 * segment.c; the size is unchanged).  A poisoned writer (a failed
 * fdatasync, see bus_seg_flush()) cuts the log back to its last sync if
 * that is still to do, as bus_seg_writer_close() does.  The handle is
 * freed whatever the result, and the caller may then reuse or unmap the
 * memory of frames appended in place.  An INFO from the log callback names
 * the records dropped, when there are any.
 *
 * Returns 0, or a poisoned writer's fdatasync error.  NULL is a no-op (0).
 * Not thread-safe, as every writer call: no other call on @w may run
 * concurrently; readers of the log may.
 */
int bus_seg_writer_abandon(struct bus_seg_writer *w);

/* ------------------------------------------------------- offset floor
 *
 * WHY.  Offsets are handed out by producers in shared memory, before busd
 * writes them out; with fsync "never" the last of what busd wrote may also
 * be lost with the page cache.  After a host reboot (the shared memory is
 * gone) the log alone would say to continue at its end, and offsets that
 * producers had handed out, and consumers had seen, would be given to new
 * records: DESIGN.md forbids that ("never reused, not across ... host
 * reboots").  So each partition's dir holds a durable floor: an offset
 * above every offset that may have been handed out.  Recovery continues at
 * max(end of the log, floor) (bus_topic_create() over existing logs); the
 * offsets in between are skipped, and readers see them as a gap (lost).
 *
 * HOW.  Producers of a persistent topic write only below spill_pos +
 * ring_size, and every frame that takes an offset is at least
 * BUS_FRAME_HDR bytes long, so offsets handed out stay below spill_off +
 * ring_size / BUS_FRAME_HDR + 1.  busd raises the floor above that bound
 * (with bus_seg_writer_floor_raise(), in steps, so that it syncs rarely)
 * before it publishes a spill cursor, and when it takes a partition.
 *
 * FILE.  "offset.floor" in the log's dir: two 32-byte slots, at 0 and 512
 * (separate sectors), written in turn with pwrite + fdatasync; a slot is
 * {magic, version, crc, seq, floor}, little-endian, its CRC32C over the
 * slot with crc = 0.  The valid slot with the newer seq holds the floor,
 * so a write torn by a power loss leaves the previous floor readable.
 * Seqs are compared in serial-number order (RFC 1982: a is newer than b
 * when a - b, as a signed 64-bit number, is positive; slot 0 on a tie),
 * and a writer writes seq + 1 to the slot the floor was not read from, so
 * the slot it wrote is the newer one whatever seqs the file held (seq 0
 * follows 2^64 - 1).
 */

/* "BUSFLOOR" read as a little-endian u64. */
#define BUS_SEG_FLOOR_MAGIC 0x524f4f4c46535542ull
#define BUS_SEG_FLOOR_VERSION 1u
#define BUS_SEG_FLOOR_FILE "offset.floor"
#define BUS_SEG_FLOOR_SLOT 512u

struct bus_seg_floor_slot {
	uint64_t magic;   /* BUS_SEG_FLOOR_MAGIC */
	uint32_t version; /* BUS_SEG_FLOOR_VERSION */
	uint32_t crc;     /* CRC32C of the slot with crc = 0 */
	uint64_t seq;     /* larger: newer */
	uint64_t floor;
};
_Static_assert(sizeof(struct bus_seg_floor_slot) == 32, "floor slot size");

/*
 * bus_seg_floor_read() - the durable offset floor of the log in @dir.
 * Sets *floor to 0 when the dir or its floor file does not exist, or the
 * file never held a slot (empty, or its slots zeros: a first raise cut
 * before its slot was synced, which no one relied on).  Safe in
 * any thread or process, concurrently with the writer (a slot being
 * written fails its CRC; the other one is read).  Returns 0, -BUS_ECORRUPT
 * (the file exists but holds no valid slot, or is not a regular file;
 * *floor = 0), -BUS_EVERSION
 * (another version), -EINVAL, or -errno.
 */
int bus_seg_floor_read(const char *dir, uint64_t *floor);

/*
 * bus_seg_writer_floor_raise() - make the durable floor at least @need:
 * when it is below, write need + @step (at most BUS_SEG_OFFSET_MAX; @need
 * beyond it is -EINVAL) and fdatasync the floor file
 * (creating it with the writer's file mode).  No system call when the
 * floor is already high enough.  Returns 0, -BUS_ECORRUPT (the floor
 * file is not a regular file: see FILES), or -errno (-ENOSPC, -EIO...):
 * then the floor is unchanged and the caller must not hand out the
 * offsets it wanted to cover (busd does not publish its cursor).  The
 * writer starts from the floor its dir holds (a corrupt file counts as
 * none, with an ERROR from the log callback, and is overwritten if it is
 * a regular file).
 */
int bus_seg_writer_floor_raise(struct bus_seg_writer *w, uint64_t need, uint64_t step);

/* The durable floor as the writer knows it (0: none). */
uint64_t bus_seg_writer_floor(const struct bus_seg_writer *w);

/*
 * bus_seg_writer_skip() - the next record gets offset @to (> the next
 * offset): offsets in between are never written (they were skipped by a
 * recovery at the floor).  Writes out what is buffered, seals the active
 * segment (an empty one stays, sealed empty) and starts a segment with
 * base @to, as a roll does (fsync policy included); readers see the
 * skipped offsets as a gap between segments.  Returns 0, -EINVAL (@to
 * below the next offset, or equal to it with no skip pending, or above
 * BUS_SEG_OFFSET_MAX), or the
 * error of the write-out, of the new segment's creation or of the fsync of
 * the dir after it: then the next offset is already @to and the segment is
 * made (or its name synced) by the next append, or by calling this again
 * with the same @to (a poisoned writer returns its fdatasync's error and
 * does nothing).
 */
int bus_seg_writer_skip(struct bus_seg_writer *w, uint64_t to);

/* ------------------------------------------------------------- reader */

/* A record read from a segment: a view into the reader's buffer, valid
 * until the next call on that reader (next, seek, close). */
struct bus_seg_record {
	uint64_t offset;
	int64_t timestamp;    /* 0 for LOST */
	uint32_t type;        /* BUS_FRAME_DATA or BUS_FRAME_LOST */
	uint32_t key_len;
	uint32_t headers_len; /* encoded headers, as in the ring */
	uint32_t value_len;
	uint32_t header_count;
	uint32_t frame_len;
	const void *key;
	const void *headers;
	const void *value;
	const struct bus_seg_fhdr *frame; /* the frame as stored */
	uint64_t segment_base;
	uint64_t pos; /* file position of the frame in its .log */
};

struct bus_seg_reader_stats {
	uint64_t reads;      /* pread calls on .log files */
	uint64_t read_bytes;
	uint64_t maps;       /* windows of sealed .log files mapped instead */
	uint64_t map_faults; /* mapped windows whose file was cut under them:
				the lost pages read as zeros (mapguard.h) */
	uint64_t index_reads; /* pread calls on index files */
	uint64_t seek_scan_bytes; /* bytes of frames the last seek passed over */
	uint64_t segments_opened;
	uint64_t buf_bytes;  /* the read buffer's size now (see
				bus_seg_reader_open()) */
};

struct bus_seg_reader;

/*
 * bus_seg_reader_open() - a reader of the log in @dir, positioned at its
 * earliest record (or, while @dir holds no segment, at the first one to
 * appear).  Reads with pread(2) into a buffer of its own (256 KiB, grown for
 * larger frames; grown past 1 MiB, it shrinks back to 256 KiB at the first
 * read that fits in that), or maps sealed segments in 4 MiB windows (see
 * CONCURRENCY above for which, and what a truncation under a mapping
 * does).  Returns 0, -ENOENT (no such dir), -ENOMEM, -errno.
 */
int bus_seg_reader_open(struct bus_seg_reader **r, const char *dir);
void bus_seg_reader_close(struct bus_seg_reader *r);

/*
 * bus_seg_replay_method() - what this process's readers do with sealed
 * segments when BUS_REPLAY does not say: "read" or "map" once a reader has
 * measured both (on its first sealed window with 1.5 MiB left after its
 * position), NULL before.  With @cost non-NULL and a method chosen, fills
 * it with the fastest of the three measurements of each, in ns per 256 KiB
 * read and CRC'd: [0] pread, [1] map.  Thread-safe.
 */
const char *bus_seg_replay_method(uint64_t cost[2]);
void bus_seg_reader_stats(const struct bus_seg_reader *r, struct bus_seg_reader_stats *st);
/* The offset of the record the next bus_seg_next() returns. */
uint64_t bus_seg_reader_position(const struct bus_seg_reader *r);

/*
 * bus_seg_reader_relist() - list the dir's segments again.  A reader finds
 * the segment that follows its own by name (the next offset) and learns
 * of later ones only when it lists the dir; a segment after a gap (offsets
 * skipped, see "offset floor") is found by the next bus_seg_next() after
 * this call.  Returns 0 or -errno.
 */
int bus_seg_reader_relist(struct bus_seg_reader *r);

/*
 * bus_seg_next() - the next record, its CRC checked.
 *
 * Returns 1 and fills @out; 0 at the end of the log (nothing written out
 * yet after the position: call again later; frames flushed meanwhile, in
 * this segment or after a roll in the next, are then found; the file size
 * is re-checked at every call at the end); -BUS_ECORRUPT when a sealed
 * segment holds a bad or partial frame (a bad frame at the end of the active
 * segment reads as the end: it is being written, or is a torn tail the next
 * writer truncates); -ERANGE when retention deleted the records that follow
 * the position, or the segment it is in (an empty one too, sealed at a
 * skip, which expires at once): seek again, it stays -ERANGE until then;
 * -errno on an I/O error.  When the active segment holds no valid frame
 * at the position, or ends before it, the position's offset is looked up
 * again (a seek): a recovering writer may have cut the segment below it
 * and written the records again as other frames; the reader reads on
 * from where the offset is now, or returns 0 until it is written.  A gap between segments (offsets skipped at the
 * floor, or lost with a sealed segment's torn tail: see the format) is
 * skipped: the offsets of the records show it.  A sealed segment that ends
 * inside a frame, or whose .log is shorter than its header, is
 * -BUS_ECORRUPT until a writer opened with verify_all cuts that tail or
 * writes the header again (busd does after a reboot); the next call then
 * goes on with the next segment.  (The active segment's header may be
 * short only while it is being made: 0.)  A segment removed by a roll that failed
 * (before anything was written to it) is left for wherever the position's
 * records are then written.
 */
int bus_seg_next(struct bus_seg_reader *r, struct bus_seg_record *out);

/*
 * bus_seg_next_buffered() - the next record if it is whole, valid and
 * already in the reader's buffer; else 0 and nothing changes.  It never
 * reads the file, so the records returned since the last bus_seg_next()
 * stay valid: a batch is one bus_seg_next() followed by calls of this one.
 * Returns 1 or 0.
 */
int bus_seg_next_buffered(struct bus_seg_reader *r, struct bus_seg_record *out);

/*
 * bus_seg_rewind() - move the reader back to offset @off, one of the
 * records it returned since its last bus_seg_next() (that call's record,
 * or one bus_seg_next_buffered() returned after it), or to its position
 * (the offset after them): no I/O, no listing, no index search.  The frames
 * are still in the reader's window (pread buffer or mapping), where the
 * reader walks their headers from the record bus_seg_next() returned; the
 * records returned stay valid, and the next bus_seg_next() returns the
 * record of @off again, its CRC checked again.  For a consumer that polled
 * a batch and took only its first records (bus_consumer_read() with a
 * small buffer).
 *
 * Returns 0, -ERANGE when @off is not such a record (before them, after
 * the position, or the last bus_seg_next() returned none, or a seek came
 * after it: use bus_seg_seek_offset()), -EINVAL (@r NULL).  On failure the
 * position is unchanged.  One thread at a time, as every reader call.
 */
int bus_seg_rewind(struct bus_seg_reader *r, uint64_t off);

/*
 * bus_seg_seek_offset() - position the reader at offset @off: the segment
 * by binary search over the bases, then the last checkpoint at or before
 * @off by binary search in its .index, then a scan of at most
 * index_interval bytes.  @off may be the log's next offset (the end).
 * An @off in a gap between segments (offsets skipped, see "offset floor",
 * or lost with a segment's end) positions the reader at the next segment's
 * first record.
 * Returns 0, -ERANGE (before the earliest record, after the end, or no
 * segment at all), -BUS_ECORRUPT (a bad frame of a sealed segment before
 * @off, or a sealed segment whose .log is shorter than its header, @off
 * past its base), -errno; on failure the position is unchanged.  Indexes
 * that disagree with the log are ignored (the segment is scanned from its
 * start).
 */
int bus_seg_seek_offset(struct bus_seg_reader *r, uint64_t off);

/*
 * bus_seg_seek_time() - position the reader at the first DATA record (in
 * offset order) whose timestamp is >= @ts_ns, or at the end of the log when
 * there is none.  Sealed segments whose largest timestamp is < @ts_ns are
 * skipped on their seal entry; in the segment that holds the record, the
 * time and offset indexes bound the scan to about index_interval bytes (see
 * the format).  *@off_out (may be NULL) receives the offset found.
 * Returns 0, -ERANGE (no segment at all), -BUS_ECORRUPT (a bad frame, or
 * a .log shorter than its header, in a sealed segment the search must
 * read), -errno; on failure the position is unchanged.
 */
int bus_seg_seek_time(struct bus_seg_reader *r, int64_t ts_ns, uint64_t *off_out);

/* ------------------------------------------------- whole-log queries */

struct bus_seg_bounds {
	uint64_t first;      /* earliest offset on disk */
	uint64_t next;       /* offset after the last whole record */
	uint64_t log_bytes;  /* sum of the .log sizes */
	uint64_t disk_bytes; /* .log, .index and .timeindex together */
	uint32_t segments;
	uint32_t reserved;
};

/* bus_seg_earliest() - the base of the oldest segment.  Returns 0,
 * -ENOENT (no dir, or no segment), -errno. */
int bus_seg_earliest(const char *dir, uint64_t *first);

/* bus_seg_bounds() - first and next offset and sizes, a snapshot (the next
 * offset from the active segment's last checkpoint and a scan after it;
 * its base when its header was never written out, see the format).
 * An empty dir gives segments == 0 and zero offsets.  Returns 0, -ENOENT
 * (no dir), -BUS_ECORRUPT, -errno. */
int bus_seg_bounds(const char *dir, struct bus_seg_bounds *b);

/*
 * bus_seg_retain() - delete whole segments, oldest first, while the oldest
 * is expired: its largest timestamp (its seal entry) is older than
 * @now_ns - @retention_ms, or the .log files together exceed
 * @retention_bytes.  0 disables either limit.  Never deletes the active
 * (newest) segment, so the log keeps its next offset.  Deletes a segment's
 * .log first, then its indexes; readers that hold it open read on.
 * *@earliest (may be NULL) receives the earliest offset left.
 * Returns the number of segments deleted, -ENOENT (no dir, no segment),
 * -errno.
 */
int bus_seg_retain(const char *dir, int64_t now_ns, uint64_t retention_ms,
		   uint64_t retention_bytes, uint64_t *earliest);

#endif
