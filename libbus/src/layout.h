/* layout.h - the shared-memory layout of a bus: control region, partition
 * ring files and frames.  Written once, here; the library, busd and the tools
 * all include it.  Every struct is fixed-width, holds offsets (never
 * pointers), and is checked by _Static_assert.
 *
 * Files (under the bus's shm dir):
 *   bus.<bus>.ctl                    control region
 *   bus.<bus>.<topic>.<gen>.<part>   one ring per partition
 *
 * Versioning: a magic that also reveals byte order, a layout version, and a
 * signature computed from the sizes and hot offsets of these structs, so a
 * build with another layout refuses to attach.  The creator stores `ready`
 * (= BUS_LAYOUT_VERSION) last, with release; attachers wait for it.
 */
#ifndef BUS_LAYOUT_H
#define BUS_LAYOUT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <bus/bus.h>

#define BUS_CACHELINE 64
/* 2: owners of gating slots, producer slots and the exclusive mark are
 * {pid, start time} words (BUS_OWNER), no longer bare pids. */
#define BUS_LAYOUT_VERSION 3u
/* "BUSCTL" + 0x00 0x01 read as a little-endian u64: a byte-swapped host
 * sees another value and refuses. */
#define BUS_CTL_MAGIC 0x01004c5443535542ull
#define BUS_RING_MAGIC 0x0100474e49525542ull /* "BURING" 0 1 */

/* ------------------------------------------------------- control region */

enum bus_slot_state {
	BUS_SLOT_FREE = 0,     /* never used: ends a probe sequence */
	BUS_SLOT_CREATING = 1, /* claimed by `pid`, rings being made */
	BUS_SLOT_READY = 2,    /* published: name and config immutable */
	BUS_SLOT_DELETING = 3, /* being deleted by `pid` */
	BUS_SLOT_DELETED = 4,  /* tombstone: reusable, does not end a probe */
};

/* Slot state word: state (8 bits) | generation (24 bits) | pid (32 bits).
 * The pid is the creator or deleter (0 when READY); the generation bumps
 * on each claim, so ring file names and handles of a re-created topic
 * differ from the old one's. */
#define BUS_SLOT_WORD(st, gen, pid) \
	((uint64_t)(st) | ((uint64_t)((gen)&0xffffffu) << 8) | ((uint64_t)(uint32_t)(pid) << 32))
#define BUS_SLOT_STATE(w) ((uint32_t)((w)&0xffu))
#define BUS_SLOT_GEN(w) ((uint32_t)(((w) >> 8) & 0xffffffu))
#define BUS_SLOT_PID(w) ((int32_t)(uint32_t)((w) >> 32))

/* A topic's config as stored in shared memory and on disk. */
struct bus_topic_cfg_disk {
	uint32_t partitions;
	uint32_t flags;
	uint64_t ring_size;
	uint64_t retention_ms;
	uint64_t retention_bytes;
	uint32_t overflow;
	int32_t numa_node;
};

struct bus_topic_slot {
	/* Line 0: written by creators and deleters only. */
	alignas(BUS_CACHELINE) _Atomic uint64_t state; /* BUS_SLOT_WORD */
	uint32_t name_hash;
	/* The creator's bus_pid_start(), stored before R4 (CREATING); 0:
	 * unknown.  Tells a creator that died from a live process that was
	 * given its pid since (topic.c, slot_gone()).  Relaxed. */
	_Atomic uint32_t owner_start;
	/* Set by the creator before R4; with the state word, tells a handle
	 * that the slot holds another topic although the word came round to
	 * its value again (the generation's 16 counting bits wrap after 65,536
	 * re-creations in the slot).  Relaxed: see bus_topic_check(). */
	_Atomic int64_t created_ns;
	struct bus_topic_cfg_disk cfg; /* 40 bytes */
	/* Line 1: the name. */
	alignas(BUS_CACHELINE) char name[BUS_NAME_MAX + 1];
	/* Line 2: the topic's futex, shared by its partitions.  Sleeping
	 * consumers announce themselves in `sleepers` and wait on `wake_seq`;
	 * a producer that finds an announcement bumps `wake_seq`, calls
	 * FUTEX_WAKE, then clears it (see wait.c for the orderings).  Both
	 * outlive the topic: a re-creation in the slot leaves them, so that
	 * the previous topic's sleepers are woken as before (the new topic's
	 * first record pays at most one wake for them). */
	alignas(BUS_CACHELINE) _Atomic uint32_t wake_seq;
	_Atomic uint32_t sleepers;
	char pad[BUS_CACHELINE - 8];
};
_Static_assert(sizeof(struct bus_topic_slot) == 3 * BUS_CACHELINE, "topic slot size");
_Static_assert(offsetof(struct bus_topic_slot, wake_seq) == 2 * BUS_CACHELINE, "futex line");

struct bus_ctl_hdr {
	/* Line 0: identity, written once by the creator before `ready`. */
	uint64_t magic;
	uint32_t layout_version;
	uint32_t hdr_size;   /* sizeof(struct bus_ctl_hdr) */
	uint64_t signature;  /* bus_layout_signature() */
	uint64_t file_size;
	uint64_t topics_off; /* from the start of the file */
	uint32_t topics_max;
	uint32_t topic_slot_size;
	int32_t creator_pid;
	_Atomic uint32_t ready; /* BUS_LAYOUT_VERSION, stored last (release) */
	/* Line 1: the daemon (busd) publishes itself here: its BUS_OWNER word
	 * (pid and start time, so that a busd that died is told from a
	 * process given its pid since), 0 when none runs. */
	alignas(BUS_CACHELINE) _Atomic uint64_t daemon_owner;
	_Atomic uint64_t daemon_heartbeat_ns;
	/* Line 2: the bus name, for tools. */
	alignas(BUS_CACHELINE) char bus_name[BUS_NAME_MAX + 1];
};
_Static_assert(sizeof(struct bus_ctl_hdr) == 3 * BUS_CACHELINE, "ctl header size");

#define BUS_CTL_TOPICS_OFF 4096u
#define BUS_CTL_SIZE (BUS_CTL_TOPICS_OFF + BUS_TOPICS_MAX * sizeof(struct bus_topic_slot))

/* ----------------------------------------------------------------- ring
 *
 * A partition ring file is the ring data (ring_size bytes, a power of two,
 * at offset 0 so that it is huge-page aligned) followed by the ring header.
 *
 * Positions are free-running byte counters (never masked in shared memory;
 * the byte of position p lives at data[p & (ring_size - 1)]).  Offsets are
 * free-running record counters.  tail.pos is the end of the last claim and
 * tail.off the offset the next record gets; both only grow.
 *
 * Producers write only below `horizon`, an upper bound that they advance
 * (in steps of ring_size >> BUS_HZ_STEP_SHIFT, capped by the low-water mark
 * on gated topics) before they write beyond it: after a commit that comes
 * within ring_size >> BUS_HZ_AHEAD_SHIFT of it, and otherwise, when a claim
 * would pass it, before writing the frame (producer.c, raise_ahead()).  A
 * frame starting at p is whole as long as
 *     horizon <= p + ring_size                                 (I1)
 * since every write to the data (a claimed frame, or the zeroing of the
 * commit word just past a frame, see ring.c) lands below the horizon.
 * Readers check I1 after reading (seqlock).  The horizon lives on a line
 * of its own that changes about once per 1/16 ring, so this check costs
 * readers a cache hit, where checking tail.pos would pull the producer's
 * hottest line on every record.
 */
/* The highest tail position a producer claims from: 2^63 bytes take 29
 * years at 10 GB/s into one partition, so a tail beyond was written by no
 * producer (-BUS_ECORRUPT), and positions plus a ring never overflow. */
#define BUS_POS_MAX (1ull << 63)
#define BUS_HZ_STEP_SHIFT 4  /* a raise: 1/16 ring past the claim */
#define BUS_HZ_AHEAD_SHIFT 5 /* raised after a commit within 1/32 ring of it */

/* Frame alignment; also the size of a commit word. */
#define BUS_FRAME_ALIGN 8u

enum bus_frame_type {
	BUS_FRAME_DATA = 1, /* a record; consumes an offset */
	BUS_FRAME_PAD = 2,  /* fills to the end of the ring; no offset */
	BUS_FRAME_LOST = 3, /* an aborted or repaired claim; consumes an offset */
};

/* Commit word: tag (low 32 bits of the offset; for PAD the offset of the
 * next record) | length (30 bits) | type (2 bits).  Zero means "nothing
 * published here in this lap".  Stored last, with release. */
#define BUS_COMMIT(type, len, tag) \
	((uint64_t)(uint32_t)(tag) | ((uint64_t)((len)&0x3fffffffu) << 32) | ((uint64_t)(type) << 62))
#define BUS_COMMIT_TAG(w) ((uint32_t)(w))
#define BUS_COMMIT_LEN(w) ((uint32_t)(((w) >> 32) & 0x3fffffffu))
#define BUS_COMMIT_TYPE(w) ((uint32_t)((w) >> 62))

/* Claim word: tag | pid << 32.  Stored (release) right after the claim and
 * the sizes, so that whoever finds the frame unpublished knows its owner
 * and its length.  A pid is positive and below 2^31: a word whose pid half
 * is not is no claim.
 *
 * Summed form (persistent topics): once the frame is whole, right before
 * its commit, the producer replaces its claim by the frame's CRC as a
 * segment log stores it (bus_seg_frame_crc()), with bit 63 set and the
 * offset's low 31 bits as tag (release, R2 again: a reader that sees the
 * sum with its tag sees the whole frame, sizes and zeroed padding
 * included).  busd's writer then takes the CRC from there instead of
 * reading the payload (bus_seg_append_inplace()).  The pid is gone: a
 * producer that stops between the sum and the commit (a window of a few
 * instructions) is repaired only after the stuck-claim timeout, as a live
 * stalled one (bus_ring_repair()).
 *
 * Dead once the frame is published: nobody reads it as a claim while the
 * commit word carries the frame's offset, and busd then stores the frame's
 * plain CRC there (pid half 0: neither a claim nor a sum; segment.h). */
#define BUS_CLAIM(pid, tag) ((uint64_t)(uint32_t)(tag) | ((uint64_t)(uint32_t)(pid) << 32))
#define BUS_CLAIM_TAG(w) ((uint32_t)(w))
#define BUS_CLAIM_PID(w) ((int32_t)(uint32_t)((w) >> 32))
#define BUS_CLAIM_SUM(tag, crc) \
	((1ull << 63) | ((uint64_t)((uint32_t)(tag)&0x7fffffffu) << 32) | (uint64_t)(uint32_t)(crc))
/* @w is the sum of the frame of offset @tag (its low 31 bits). */
#define BUS_CLAIM_IS_SUM(w, tag) \
	((uint32_t)((w) >> 32) == (0x80000000u | ((uint32_t)(tag)&0x7fffffffu)))
#define BUS_CLAIM_CRC(w) ((uint32_t)(w))

struct bus_frame {
	_Atomic uint64_t commit; /* BUS_COMMIT, release-stored last */
	_Atomic uint64_t claim;  /* BUS_CLAIM */
	uint64_t offset;
	int64_t timestamp;
	uint32_t key_len;
	uint32_t headers_len;
	uint32_t value_len;
	uint16_t header_count;
	uint16_t slack; /* bytes after the padded record: see below */
	/* key, headers, value follow; the frame is padded to BUS_FRAME_ALIGN,
	 * then has slack more bytes (padding and slack are zeroed where the
	 * frame is summed and stored: persistent topics, segment logs) */
};
#define BUS_FRAME_HDR ((uint32_t)sizeof(struct bus_frame))
_Static_assert(sizeof(struct bus_frame) == 48, "frame header size");
_Static_assert(BUS_FRAME_HDR % BUS_FRAME_ALIGN == 0, "frame header alignment");

/* Slack: a BUS_PRODUCER_LOW_LATENCY producer lengthens its frame by up to
 * BUS_SLACK_MAX bytes so that it ends, and the next frame starts, on a
 * cache line.  A reader waiting for the next record then polls a line that
 * holds nothing of this one, and a 64 B record (a 112-byte frame) takes two
 * lines instead of three every other time: rtt of 64 B values on the Intel
 * VM of 2026-12-03 (far vCPUs), p50 405-413 -> 345-347 ns; 32 B 433 ->
 * 359, 1 KiB 935-939 -> 819.  Streams keep dense frames (slack 0): the
 * space is theirs to spend on records.
 *
 * The slack is part of the frame (its commit length, its CRC on disk), so
 * that whoever knows only the header (a repairer turning a dead claim into
 * a LOST frame, busd, a segment reader) knows the frame's length:
 * bus_frame_len().  The field took the upper half of what was a 32-bit
 * header_count (little-endian: frames written before have slack 0). */
#define BUS_SLACK_MAX (BUS_CACHELINE - BUS_FRAME_ALIGN)
#define BUS_HEADER_COUNT_MAX 0xffffu

/* The exclusive bit of tail.off: a single-writer producer owns the
 * partition; concurrent producers' CAS sees it and refuses. */
#define BUS_TAIL_EXCL (1ull << 63)

struct bus_tail {
	_Atomic uint64_t pos;
	_Atomic uint64_t off; /* | BUS_TAIL_EXCL */
};

/* Owner word: who holds a gating slot, a producer slot or the exclusive
 * mark, as one 64-bit value taken and given back by CAS: the pid in the low
 * half, the process's start time (bus_pid_start(), 0: unknown) in the high
 * half.  The start time tells a dead owner from a live process that was
 * given its pid since (pid_max may be as low as 32768, and a busy box
 * cycles through that in minutes): without it, such a process kept a dead
 * gating consumer's cursor holding producers back, or a dead exclusive
 * producer's partition closed to others, for as long as it lived
 * (bus_owner_gone(), internal.h).  Both halves come and go together: no
 * reader ever pairs one owner's pid with another's start time.  0 is "no
 * owner". */
#define BUS_OWNER(pid, start) ((uint64_t)(uint32_t)(pid) | ((uint64_t)(uint32_t)(start) << 32))
#define BUS_OWNER_PID(w) ((int32_t)(uint32_t)(w))
#define BUS_OWNER_START(w) ((uint32_t)((w) >> 32))

struct bus_gating {
	alignas(BUS_CACHELINE) _Atomic uint64_t pos; /* consumed up to here */
	_Atomic uint64_t owner;                      /* BUS_OWNER; 0: slot free */
};

/* Producer slots: each concurrent (not exclusive) producer handle that
 * appends to a partition takes one, a line of its own, and says in it which
 * claim it is making or holding (its intent): before its claim CAS it
 * stores off and end (relaxed), then pos (release), the tail pair it tries
 * to move and where to; after the commit it stores pos = BUS_INTENT_IDLE.
 * The CAS (a full barrier) orders the intent before the claim, so a claim
 * always has an intent that names its length, even when its owner dies
 * before it wrote the frame's claim word.  A reader of a slot loads pos
 * (acquire), then end, then off (acquire): off equal to the expected
 * offset proves that end came with that intent (off is stored first and
 * only grows).  A failed CAS leaves the loser's intent until its next try;
 * a repairer tells the winner's from such a leftover (ring.c, intent_of()).
 *
 * Raisers of the horizon read every slot's pos: a claim in flight is never
 * lapped (producer.c, raise_ahead(); ring.c, bus_ring_intents_floor()).
 *
 * A free slot has owner 0 and pos BUS_INTENT_IDLE (so at creation too). */
#define BUS_INTENT_IDLE UINT64_MAX
struct bus_pslot {
	alignas(BUS_CACHELINE) _Atomic uint64_t owner; /* BUS_OWNER; 0: free */
	_Atomic uint64_t pos;
	_Atomic uint64_t end;
	_Atomic uint64_t off;
};

/* Checkpoints: the ring is cut into BUS_CKPT_N chunks; the producer whose
 * frame ends in a new chunk records where the next frame starts and its
 * offset.  Lapped readers and seeks start from them instead of scanning.
 * One writer at a time per checkpoint: a shared producer writes it before
 * its intent goes idle (producer.c, CK), so the next lap's writer cannot
 * claim until it is done; a torn pair is rejected by its readers. */
#define BUS_CKPT_N 256u
#define BUS_CKPT_EMPTY UINT64_MAX
struct bus_ckpt {
	_Atomic uint64_t pos;
	_Atomic uint64_t off;
};

struct bus_ring_hdr {
	/* Line 0: identity, written once by the creator before `ready`. */
	alignas(BUS_CACHELINE) uint64_t magic;
	uint32_t layout_version;
	uint32_t hdr_size;
	uint64_t signature;
	uint64_t ring_size;
	uint32_t partition;
	uint32_t topic_gen;
	int32_t creator_pid;
	_Atomic uint32_t ready;
	/* Line 1: the tail, written by producers (16-byte CAS, or plain stores
	 * by the exclusive producer). */
	alignas(BUS_CACHELINE) struct bus_tail tail;
	/* Who holds BUS_TAIL_EXCL, a BUS_OWNER word: 0 nobody; pid > 0 its
	 * exclusive producer; pid < 0 process -pid clearing a dead owner's
	 * bit (producer.c). */
	_Atomic uint64_t excl_owner;
	/* The exclusive producer's latest claim: its start and offset, stored
	 * before the tail moves over it, so that whoever frees a partition
	 * whose owner died knows the claim it may have left half-made
	 * (producer.c, excl_settle()). */
	_Atomic uint64_t excl_start;
	_Atomic uint64_t excl_soff;
	/* Line 2: the write horizon (I1), and the futex of producers blocked
	 * for space (wait.c, "Space"): they announce themselves in
	 * `space_sleepers` and wait on `space_seq`; whoever raises the
	 * low-water mark loads `space_sleepers` and, if set, bumps
	 * `space_seq`, calls FUTEX_WAKE and clears it.  On the horizon's line:
	 * gating consumers read the horizon at every record (I1), so their
	 * load of `space_sleepers` after a publish costs no miss; the words
	 * are written only when a producer sleeps, which is rare. */
	alignas(BUS_CACHELINE) _Atomic uint64_t horizon;
	_Atomic uint32_t space_seq;
	_Atomic uint32_t space_sleepers;
	/* Line 3: the spiller (busd): the spill cursor, a pair read and
	 * written with a 16-byte CAS (bus_spill_read/publish, internal.h):
	 * every frame below spill_pos is written out to the log, and the frame
	 * at spill_pos has offset spill_off. */
	alignas(BUS_CACHELINE) _Atomic uint64_t spill_pos;
	_Atomic uint64_t spill_off;
	_Atomic int32_t spiller_pid;
	/* 1 once a spiller has made the log's offset floor durable for this
	 * ring (segment.h, "offset floor"); until then producers of a
	 * persistent topic hand out no offset (producer.c, wait_space()).
	 * Stored with release by busd, never cleared. */
	_Atomic uint32_t floor_ok;
	/* Line 4: counters. */
	alignas(BUS_CACHELINE) _Atomic uint64_t repaired;
	_Atomic uint64_t replicated_off;
	/* Gating consumers, a line each. */
	struct bus_gating gating[BUS_GATING_MAX];
	/* Concurrent producers, a line each. */
	struct bus_pslot pslot[BUS_PRODUCERS_MAX];
	struct bus_ckpt ckpt[BUS_CKPT_N];
};
_Static_assert(offsetof(struct bus_ring_hdr, tail) == BUS_CACHELINE, "tail line");
_Static_assert(offsetof(struct bus_ring_hdr, tail) % 16 == 0, "16-byte CAS alignment");
_Static_assert(offsetof(struct bus_ring_hdr, horizon) == 2 * BUS_CACHELINE, "horizon line");
_Static_assert(offsetof(struct bus_ring_hdr, space_sleepers) ==
		       offsetof(struct bus_ring_hdr, space_seq) + 4,
	       "space futex words (the signature names space_seq)");
_Static_assert(offsetof(struct bus_ring_hdr, spill_pos) == 3 * BUS_CACHELINE, "spill line");
/* {spill_pos, spill_off} is read and written as one pair (16-byte CAS). */
_Static_assert(offsetof(struct bus_ring_hdr, spill_off) ==
		       offsetof(struct bus_ring_hdr, spill_pos) + 8,
	       "spill pair");

#define BUS_RING_HDR_SIZE 8192u
_Static_assert(sizeof(struct bus_ring_hdr) <= BUS_RING_HDR_SIZE, "ring header fits");

/** bus_layout_signature() - a hash of the sizes and offsets above. */
static inline uint64_t bus_layout_signature(void)
{
	const uint64_t parts[] = {
		sizeof(struct bus_ctl_hdr), sizeof(struct bus_topic_slot),
		sizeof(struct bus_topic_cfg_disk), sizeof(struct bus_ring_hdr),
		sizeof(struct bus_frame), offsetof(struct bus_ring_hdr, tail),
		offsetof(struct bus_ring_hdr, gating), offsetof(struct bus_ring_hdr, ckpt),
		offsetof(struct bus_ring_hdr, horizon), offsetof(struct bus_ring_hdr, space_seq),
		offsetof(struct bus_ring_hdr, pslot), offsetof(struct bus_ring_hdr, excl_start),
		BUS_PRODUCERS_MAX,
		offsetof(struct bus_topic_slot, name), offsetof(struct bus_frame, slack),
		BUS_CKPT_N, BUS_GATING_MAX,
		BUS_TOPICS_MAX, BUS_NAME_MAX,
	};
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		h ^= parts[i];
		h *= 1099511628211ull;
	}
	return h;
}

static inline uint32_t bus_align8(uint64_t n)
{
	return (uint32_t)((n + BUS_FRAME_ALIGN - 1) & ~(uint64_t)(BUS_FRAME_ALIGN - 1));
}

/* The length of a DATA frame whose header holds these sizes and slack, in
 * 64 bits (hostile sizes cannot wrap it), or 0 when the slack is not one a
 * producer writes (a multiple of BUS_FRAME_ALIGN up to BUS_SLACK_MAX). */
static inline uint64_t bus_frame_len(uint32_t key_len, uint32_t headers_len, uint32_t value_len,
				     uint32_t slack)
{
	uint64_t n = (uint64_t)BUS_FRAME_HDR + key_len + headers_len + value_len;

	if (slack % BUS_FRAME_ALIGN || slack > BUS_SLACK_MAX)
		return 0;
	return ((n + BUS_FRAME_ALIGN - 1) & ~(uint64_t)(BUS_FRAME_ALIGN - 1)) + slack;
}

#endif
