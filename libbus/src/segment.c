/* segment.c - segment logs on disk: writer (append, roll, recovery), reader
 * (scan, seek by offset and by time), bounds and retention.  The format and
 * the contracts are in segment.h.
 *
 * The writer keeps, for the active segment, two sizes: log_size (bytes of
 * whole frames in the file) and end (log_size plus the buffered frames), and
 * the checkpoint state (last_ckpt, max_ts, last_m) that decides the index
 * entries.  Index entries wait in `pending` arrays until their frames are in
 * the file, and are written time index first (see segment.h, the reader's
 * seek by time relies on it).
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "internal.h"
#include "mapguard.h"
#include "segment.h"

#define HDR ((uint64_t)BUS_SEG_HDR_SIZE)
#define IO_CHUNK (256u * 1024) /* reads of a sequential reader */
#define SEEK_CHUNK (16u * 1024) /* reads of a seek: a checkpoint's stretch */
#define MAP_WINDOW (4u << 20)   /* mappings of a sequential reader */
#define PREFETCH_AHEAD 4096u    /* of a sequential reader */
/* A read buffer grown past this for a large frame goes back to IO_CHUNK
 * at the first read that fits in IO_CHUNK (io_get()). */
#define BUF_KEEP (4u * IO_CHUNK)

/* ------------------------------------------------------------ helpers */

static void seg_name(char *buf, uint64_t base, const char *ext)
{
	snprintf(buf, BUS_SEG_NAME_MAX, "%020" PRIu64 ".%s", base, ext);
}

static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t pos)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = pread(fd, (char *)buf + done, n - done, (off_t)(pos + done));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		done += (size_t)k;
	}
	return (ssize_t)done;
}

/* Write all of @buf at @pos.  Returns 0 or -errno; *done receives the
 * bytes written either way (a short write is followed by the next call's
 * error, -ENOSPC typically). */
static int pwrite_full(int fd, const void *buf, size_t n, uint64_t pos, size_t *done)
{
	*done = 0;
	while (*done < n) {
		ssize_t k = pwrite(fd, (const char *)buf + *done, n - *done, (off_t)(pos + *done));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			return -EIO;
		*done += (size_t)k;
	}
	return 0;
}

/* Parse "<20 digits>.<ext>", a base up to BUS_SEG_OFFSET_MAX. */
static bool parse_name(const char *name, const char *ext, uint64_t *base)
{
	uint64_t v = 0;

	if (strlen(name) != 21 + strlen(ext) || name[20] != '.' || strcmp(name + 21, ext) != 0)
		return false;
	for (int i = 0; i < 20; i++) {
		unsigned d = (unsigned)(name[i] - '0');
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (v > BUS_SEG_OFFSET_MAX)
		return false;
	*base = v;
	return true;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The bases of the files "<base>.<ext>" in @dfd, sorted; *out is malloc'ed
 * (NULL when there are none).  Returns 0 or -errno: a readdir() that fails
 * is an error, never a shorter listing (the writer would take an older
 * segment for the active one, and remove the indexes of those it missed). */
static int seg_list_ext(int dfd, const char *ext, uint64_t **out, size_t *n)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t *v = NULL, base;
	size_t cap = 0, cnt = 0;
	struct dirent *de;
	DIR *d;

	*out = NULL;
	*n = 0;
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		int err = -errno;
		close(fd);
		return err;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			int err = -errno;
			if (!err)
				break;
			free(v);
			closedir(d);
			return err;
		}
		if (!parse_name(de->d_name, ext, &base))
			continue;
		if (cnt == cap) {
			uint64_t *nv = realloc(v, (cap ? cap * 2 : 16) * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
			cap = cap ? cap * 2 : 16;
		}
		v[cnt++] = base;
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), cmp_u64);
	*out = v;
	*n = cnt;
	return 0;
}

static int seg_list(int dfd, uint64_t **out, size_t *n)
{
	return seg_list_ext(dfd, "log", out, n);
}

static int open_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Open @name in @dfd, a regular file only: anything else under the name
 * of one of ours is -BUS_ECORRUPT.  O_NOFOLLOW: a symlink is not followed
 * (the writer would cut or write over its target, outside the dir, and
 * O_CREAT would make a dangling one's target); O_NONBLOCK: the open of a
 * FIFO does not wait for a peer forever (the flag does nothing to a
 * regular file's I/O, open(2)).  Returns the fd or -errno. */
static int open_reg(int dfd, const char *name, int flags, mode_t mode)
{
	struct stat st;
	int fd = openat(dfd, name, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, mode);

	if (fd < 0) /* a symlink; O_RDWR on a dir; a socket */
		return errno == ELOOP || errno == EISDIR || errno == ENXIO ? -BUS_ECORRUPT : -errno;
	if (fstat(fd, &st)) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -BUS_ECORRUPT;
	}
	return fd;
}

static int open_seg_file(int dfd, uint64_t base, const char *ext, int flags, mode_t mode)
{
	char name[BUS_SEG_NAME_MAX];

	seg_name(name, base, ext);
	return open_reg(dfd, name, flags, mode);
}

static void hdr_make(struct bus_seg_hdr *h, uint64_t base)
{
	memset(h, 0, sizeof(*h));
	h->magic = BUS_SEG_MAGIC;
	h->version = BUS_SEG_VERSION;
	h->hdr_size = BUS_SEG_HDR_SIZE;
	h->base_offset = base;
	h->frame_hdr = BUS_FRAME_HDR;
	h->frame_align = BUS_FRAME_ALIGN;
	h->created_ns = bus_now_ns();
	h->hdr_crc = bus_crc32c(0, h, sizeof(*h));
}

static int hdr_check(const uint8_t *p, uint64_t base, int64_t *created)
{
	struct bus_seg_hdr h;
	uint32_t crc;

	memcpy(&h, p, sizeof(h));
	if (h.magic == __builtin_bswap64(BUS_SEG_MAGIC))
		return -BUS_EVERSION; /* written on a host of the other byte order */
	if (h.magic != BUS_SEG_MAGIC)
		return -BUS_ECORRUPT;
	if (h.version != BUS_SEG_VERSION || h.hdr_size != BUS_SEG_HDR_SIZE ||
	    h.frame_hdr != BUS_FRAME_HDR || h.frame_align != BUS_FRAME_ALIGN)
		return -BUS_EVERSION;
	crc = h.hdr_crc;
	h.hdr_crc = 0;
	if (bus_crc32c(0, &h, sizeof(h)) != crc || h.base_offset != base)
		return -BUS_ECORRUPT;
	if (created)
		*created = h.created_ns;
	return 0;
}

/*
 * UNWRITTEN HEADS.  A segment's first block can read as zeros after a
 * power loss with fsync "never" (or before a segment's first sync): ext4
 * with delayed allocation commits a file's size once a later block of it
 * is written back, and the earlier block, allocated but never written,
 * reads as zeros (so do blocks reserved by fallocate and never written).
 * Such a header was never written out, as one cut shorter than itself:
 * the segment holds nothing that can be read in order from its start (its
 * first frames lay in that block), and is taken as empty.  Only by a
 * writer whose fsync policy is "never": under any other, a segment's
 * records were synced, first block included, before they counted as
 * durable, so zeros there are damage and stay -BUS_ECORRUPT, as does a
 * header that is not zeros but fails its check.  (A segment not synced
 * yet when the power went, under an interval, is reported so too.)
 * Retention does not take such a segment for an old one.
 * Whether the first HEAD_BLOCK bytes of the .log @fd of @size bytes (all
 * of it when shorter, and at least a header) are zeros: 1, 0, or -errno.
 */
#define HEAD_BLOCK 4096u
static int head_unwritten(int fd, uint64_t size)
{
	uint8_t b[HEAD_BLOCK];
	size_t n = size < HEAD_BLOCK ? (size_t)size : HEAD_BLOCK;
	ssize_t got;

	if (size < HDR)
		return 0;
	got = pread_full(fd, b, n, 0);
	if (got < 0)
		return (int)got;
	if ((size_t)got < HDR)
		return 0; /* cut meanwhile: not ours to judge here */
	for (ssize_t i = 0; i < got; i++)
		if (b[i])
			return 0;
	return 1;
}

uint32_t bus_seg_frame_crc(uint64_t commit, const void *frame, uint32_t len)
{
	uint8_t head[16];

	/* Two calls, not three: each costs a few ns before any byte, which
	 * is a tenth of a 1 KiB frame's CRC on the AVX-512 path. */
	memcpy(head, &commit, 8);
	memset(head + 8, 0, 8);
	return bus_crc32c(bus_crc32c(0, head, 16), (const uint8_t *)frame + 16, len - 16);
}

/* CRC of a frame as stored: the claim word (bytes 8..15) counts as zero. */
static uint32_t frame_crc(const uint8_t *p, uint32_t len)
{
	uint64_t commit;

	memcpy(&commit, p, 8);
	return bus_seg_frame_crc(commit, p, len);
}

/* Length of the stored frame whose header is @h, or 0 if the header does
 * not describe a valid stored frame (see the format). */
static uint32_t fhdr_len(const struct bus_seg_fhdr *h)
{
	uint32_t type = BUS_COMMIT_TYPE(h->commit), len = BUS_COMMIT_LEN(h->commit);
	uint64_t want = bus_frame_len(h->key_len, h->headers_len, h->value_len, h->slack);

	if ((type != BUS_FRAME_DATA && type != BUS_FRAME_LOST) || (h->crc >> 32) || want != len ||
	    BUS_COMMIT_TAG(h->commit) != (uint32_t)h->offset || h->offset >= BUS_SEG_OFFSET_MAX)
		return 0;
	if (type == BUS_FRAME_LOST && (len != BUS_FRAME_HDR || h->slack))
		return 0;
	return len;
}

/* ------------------------------------------------- buffered file reads */

/* A window over a file: read with pread(2) into buf, or, for a sealed
 * segment read in sequence (map_ok), mapped (MAP_WINDOW bytes at a time).
 * Pointers it hands out are valid until the next io_get() on it.
 *
 * Read or map.  Which of the two is faster depends on what a page fault
 * costs, and that differs between machines by more than either method's
 * own cost.  Replay of 1 KiB records from the page cache (spill_bench
 * replay):
 *   - Intel VM (Sapphire Rapids, KVM, ext4): mapped 6.7-7.3 GB/s, read
 *     4.2-5.4 (cat 6.2-6.8; 2026-12, 1 GiB): pread copies every byte out of
 *     the page cache and the CRC reads the copy; mapped, the CRC reads the
 *     page cache itself, once, and a 4 MiB window costs ~40 us per MiB to
 *     map (MAP_POPULATE) and unmap, where pread copies a MiB in ~150 us.
 *   - AMD EPYC under PVM (2026-12, shadow page tables; 512 MiB): mapped
 *     1.7-2.2 GB/s, read 4.6-7.7 (cat 6.6-8.5): every page of a mapping
 *     costs ~2 us whatever the window (4 MiB or a whole 128 MiB segment,
 *     MAP_POPULATE or not), while read(2) copies through the kernel's own
 *     mapping.
 * So by default (BUS_REPLAY unset or "auto") the process measures both,
 * once, on the first sealed window it reads (replay_calibrate()), and
 * maps unless mapping measured more than 1.5 times the cost of reading.
 * On the Intel VM the two measure alike (read 35-50 us per 256 KiB, map
 * 32-46), yet mapped replay runs 35% faster: reading costs a replay more
 * than the measurement sees (not pinned down; the copy's 256 KiB of
 * stores through the reader's caches is the likely part); under PVM, ~2 us
 * per page (128 us per 256 KiB before the CRC) puts mapping far past the
 * bar.  BUS_REPLAY=read or map forces one.
 *
 * A mapping must not fault.  Only sealed segments are mapped: busd never
 * truncates them (the writer cuts only the active segment, retention
 * removes whole files, and an unlinked file stays mapped).  A sealed
 * segment truncated by hand under a mapping would raise SIGBUS in the
 * reader; each window is registered with mapguard.h, whose handler maps
 * zeros over the lost pages instead, and zeros are no valid frame, so the
 * reader reports -BUS_ECORRUPT as it does when a read comes back short. */
struct seg_io {
	int fd;
	uint8_t *buf;
	size_t cap;
	const uint8_t *win; /* the byte at wpos: in buf, or in map */
	uint64_t wpos;      /* file position of the window */
	size_t wlen;        /* valid bytes in the window */
	uint64_t size;      /* file size at the last fstat */
	size_t chunk;       /* bytes to read at once, at least */
	uint64_t *reads, *read_bytes; /* counters, or NULL */
	bool map_ok;        /* a sealed segment: map instead of read */
	bool map_auto;      /* ... if replay_calibrate() says so */
	uint64_t *maps;     /* counter of windows mapped, or NULL */
	uint64_t *lost;     /* counter of windows hit (io_lost()), or NULL */
	uint8_t *map;       /* the mapped window, or NULL */
	size_t map_len;
	int guard;          /* its mapguard slot */
};

static void io_unmap(struct seg_io *io)
{
	if (io->map) {
		if (io->lost && bus_mapguard_hit(io->guard))
			(*io->lost)++;
		bus_mapguard_del(io->guard);
		io->guard = -1;
		munmap(io->map, io->map_len);
		io->map = NULL;
		io->wlen = 0;
	}
}

/* Whether the window holds bytes that were lost under it (a sealed
 * segment truncated by hand) and now read as zeros. */
static bool io_lost(const struct seg_io *io)
{
	return io->map && bus_mapguard_hit(io->guard);
}

/* (buf and cap are kept: the buffer is reused across files; a mapping
 * must be gone, io_unmap().) */
static void io_init(struct seg_io *io, int fd, uint64_t *reads, uint64_t *read_bytes)
{
	io->map = NULL;
	io->map_ok = false;
	io->map_auto = false;
	io->maps = NULL;
	io->lost = NULL;
	io->guard = -1;
	io->fd = fd;
	io->win = NULL;
	io->wpos = 0;
	io->wlen = 0;
	io->size = 0;
	io->chunk = IO_CHUNK;
	io->reads = reads;
	io->read_bytes = read_bytes;
}

static int io_stat(struct seg_io *io, uint64_t *nlink)
{
	struct stat st;

	if (fstat(io->fd, &st))
		return -errno;
	io->size = (uint64_t)st.st_size;
	if (nlink)
		*nlink = (uint64_t)st.st_nlink;
	return 0;
}

/* The process's choice for BUS_REPLAY unset (seg_io); REPLAY_BUSY while a
 * reader stores what it measured. */
enum { REPLAY_AUTO, REPLAY_READ, REPLAY_MAP, REPLAY_BUSY };
static atomic_int replay_choice; /* REPLAY_AUTO: not measured yet */
static uint64_t replay_cost[2]; /* ns: [0] pread, [1] map; see replay_calibrate() */

#define CAL_BYTES (256u * 1024)

static uint64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Measure read against map on @io's file from @pos (see seg_io) and
 * settle the process's choice, unless another reader settled it first.
 * Each method does what the reader does with a window, pread or map, then
 * the CRC of every byte, on a stretch of CAL_BYTES of its own that nothing
 * read before (so from memory, as a replay finds it, not from the CPU's
 * caches: on a stretch just read, pread took 11 us where it takes 33 from
 * memory), three times each, alternating; the fastest of each counts.
 * Returns the choice, or REPLAY_AUTO (read this window) when the file is
 * too short past @pos to tell or a call failed. */
static int replay_measure(struct seg_io *io, uint64_t start);

static int replay_calibrate(struct seg_io *io, uint64_t pos)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), start = pos / pg * pg;
	int want = REPLAY_AUTO, got;

	if (start + 6 * (uint64_t)CAL_BYTES > io->size)
		return REPLAY_AUTO;
	/* One reader measures at a time: the winner of the CAS to
	 * REPLAY_BUSY, while the others read their windows (two measurements
	 * at once would slow each other's mappings, mmap_lock and TLB
	 * shootdowns, and bias the choice).  It stores the costs, then
	 * publishes the choice with release; bus_seg_replay_method() loads it
	 * with acquire.  A measurement that says nothing (a call failed, the
	 * file was cut meanwhile) puts REPLAY_AUTO back for the next window. */
	if (!atomic_compare_exchange_strong(&replay_choice, &want, REPLAY_BUSY))
		return want == REPLAY_BUSY ? REPLAY_AUTO : want;
	got = replay_measure(io, start);
	atomic_store_explicit(&replay_choice, got, memory_order_release);
	return got;
}

/* The measurement of replay_calibrate() from @start (6 * CAL_BYTES of the
 * file there): stores the costs and returns the choice, or REPLAY_AUTO. */
static int replay_measure(struct seg_io *io, uint64_t start)
{
	uint64_t best[2] = { UINT64_MAX, UINT64_MAX };
	int got;
	volatile uint32_t sink; /* the CRCs are the work measured */

	io->wlen = 0; /* the buffer is reused below */
	if (io->cap < CAL_BYTES) {
		uint8_t *nb = realloc(io->buf, CAL_BYTES);
		if (!nb)
			return REPLAY_AUTO;
		io->buf = nb;
		io->cap = CAL_BYTES;
	}
	for (int i = 0; i < 6; i++) {
		uint64_t at = start + (uint64_t)i * CAL_BYTES, t0 = mono_ns(), t1;
		const uint8_t *p = io->buf;
		void *m = NULL;
		int guard = -1;
		bool lost;

		if (i % 2 == 0) {
			if (pread_full(io->fd, io->buf, CAL_BYTES, at) != (ssize_t)CAL_BYTES)
				return REPLAY_AUTO;
		} else {
			m = mmap(NULL, CAL_BYTES, PROT_READ, MAP_SHARED | MAP_POPULATE, io->fd,
				 (off_t)at);
			if (m == MAP_FAILED)
				return REPLAY_AUTO;
			guard = bus_mapguard_add(m, CAL_BYTES);
			if (guard < 0) {
				munmap(m, CAL_BYTES);
				/* No handler (sigaction failed): never map.  No
				 * free slot: ask again later. */
				return guard == -EAGAIN ? REPLAY_AUTO : REPLAY_READ;
			}
			p = m;
		}
		sink = bus_crc32c(0, p, CAL_BYTES);
		if (m) {
			lost = bus_mapguard_hit(guard);
			bus_mapguard_del(guard);
			munmap(m, CAL_BYTES);
			if (lost)
				return REPLAY_AUTO; /* truncated meanwhile */
		}
		t1 = mono_ns();
		if (t1 - t0 < best[i % 2])
			best[i % 2] = t1 - t0;
	}
	/* Map unless it is clearly slower: the measurement misses part of
	 * what reading costs a replay (see seg_io), so a tie means map. */
	got = best[1] * 2 <= best[0] * 3 ? REPLAY_MAP : REPLAY_READ;
	(void)sink;
	replay_cost[0] = best[0];
	replay_cost[1] = best[1];
	return got;
}

const char *bus_seg_replay_method(uint64_t cost[2])
{
	int c = atomic_load_explicit(&replay_choice, memory_order_acquire);

	if (c != REPLAY_READ && c != REPLAY_MAP)
		return NULL;
	if (cost) {
		cost[0] = replay_cost[0];
		cost[1] = replay_cost[1];
	}
	return c == REPLAY_MAP ? "map" : "read";
}

/* Make [pos, pos + n) available in *out.  Returns 1, 0 when the file (its
 * size re-checked) does not hold it, -ENOMEM or -errno. */
static int io_get(struct seg_io *io, uint64_t pos, size_t n, const uint8_t **out)
{
	size_t want;
	ssize_t got;

	if (pos >= io->wpos && pos + n <= io->wpos + io->wlen) {
		*out = io->win + (pos - io->wpos);
		return 1;
	}
	io_unmap(io);
	if (pos + n > io->size || io->map_ok) {
		/* A mapping must not pass the end of the file: re-check it. */
		int err = io_stat(io, NULL);
		if (err)
			return err;
		if (pos + n > io->size)
			return 0;
	}
	if (io->map_ok && io->map_auto) {
		int c = atomic_load_explicit(&replay_choice, memory_order_relaxed);

		if (c == REPLAY_AUTO) {
			c = replay_calibrate(io, pos);
			/* Too little of this (sealed) segment left to measure
			 * on: read the rest of it, measure on a later one. */
			if (c == REPLAY_AUTO && pos + 6 * (uint64_t)CAL_BYTES > io->size)
				io->map_ok = false;
		} else if (c == REPLAY_BUSY) { /* another reader is measuring */
			c = REPLAY_AUTO;
		}
		if (c != REPLAY_AUTO) /* else read this window, ask again */
			io->map_auto = false;
		if (c == REPLAY_READ)
			io->map_ok = false;
	}
	if (io->map_ok && !io->map_auto && n <= MAP_WINDOW) {
		uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
		uint64_t start = pos / pg * pg, end = start + MAP_WINDOW;
		void *m;

		/* The window starts on the page of @pos: it must reach past
		 * the n bytes asked for, which may end in the page after
		 * start + MAP_WINDOW (pos + n <= io->size, checked above). */
		if (end < pos + n)
			end = (pos + n + pg - 1) / pg * pg;
		if (end > io->size)
			end = io->size;
		m = mmap(NULL, (size_t)(end - start), PROT_READ, MAP_SHARED | MAP_POPULATE, io->fd,
			 (off_t)start);
		if (m != MAP_FAILED) {
			/* The guard takes whole pages (mapguard.h): the
			 * mapping covers the last one whole, past the file's
			 * end included. */
			io->guard = bus_mapguard_add(m, (size_t)((end - start + pg - 1) / pg * pg));
			if (io->guard >= 0) {
				if (io->maps)
					(*io->maps)++;
				io->map = m;
				io->map_len = (size_t)(end - start);
				io->win = io->map + (pos - start);
				io->wpos = pos;
				io->wlen = (size_t)(end - pos);
				*out = io->win;
				return 1;
			}
			/* No slot (or no handler): an unguarded mapping could
			 * fault, so this segment is read. */
			munmap(m, (size_t)(end - start));
		}
		io->map_ok = false; /* out of address space, or unguarded: read */
	}
	want = n > io->chunk ? n : io->chunk;
	if (want > io->size - pos)
		want = (size_t)(io->size - pos);
	if (want > io->cap) {
		uint8_t *nb = realloc(io->buf, want);
		if (!nb)
			return -ENOMEM;
		io->buf = nb;
		io->cap = want;
	} else if (io->cap > BUF_KEEP && want <= IO_CHUNK) {
		/* Grown for one large frame: not held for the reader's life.
		 * (Up to BUF_KEEP stays: frames of that size among small ones
		 * would cost an allocation, and its page faults, each.)  The
		 * window is read again below: no view into it is kept. */
		uint8_t *nb = malloc(IO_CHUNK);
		if (nb) {
			free(io->buf);
			io->buf = nb;
			io->cap = IO_CHUNK;
		}
	}
	io->wlen = 0;
	got = pread_full(io->fd, io->buf, want, pos);
	if (io->reads) {
		(*io->reads)++;
		*io->read_bytes += got > 0 ? (uint64_t)got : 0;
	}
	if (got < 0)
		return (int)got;
	io->win = io->buf;
	io->wpos = pos;
	io->wlen = (size_t)got;
	if ((size_t)got < n)
		return 0; /* truncated meanwhile */
	*out = io->buf;
	return 1;
}

/* The frame at @pos, expected to carry offset @off.  Returns 1 (*p, *len
 * set), 0 when the file ends inside or before it, -BUS_ECORRUPT when it is
 * not a valid frame of that offset, or an I/O error. */
static int frame_at(struct seg_io *io, uint64_t pos, uint64_t off, const uint8_t **p,
		    uint32_t *len)
{
	struct bus_seg_fhdr h;
	int rc = io_get(io, pos, BUS_FRAME_HDR, p);

	if (rc <= 0)
		return rc;
	memcpy(&h, *p, sizeof(h));
	*len = fhdr_len(&h);
	if (!*len)
		return -BUS_ECORRUPT;
	rc = io_get(io, pos, *len, p);
	if (rc <= 0)
		return rc;
	if (frame_crc(*p, *len) != (uint32_t)h.crc || h.offset != off || io_lost(io))
		return -BUS_ECORRUPT;
	return 1;
}

static const struct bus_seg_fhdr *fhdr_view(const uint8_t *p)
{
	return (const struct bus_seg_fhdr *)(const void *)p;
}

/* ------------------------------------------------------ index lookups */

/* Index files of one segment, for readers (read-only, by binary search
 * with pread: nothing is loaded whole). */
struct seg_ix {
	int fd;
	uint64_t n;
	size_t esz;
	uint64_t *reads;
};

static void ix_open(struct seg_ix *x, int dfd, uint64_t base, const char *ext, size_t esz,
		    uint64_t *reads)
{
	struct stat st;

	x->esz = esz;
	x->n = 0;
	x->reads = reads;
	x->fd = open_seg_file(dfd, base, ext, O_RDONLY, 0);
	if (x->fd >= 0 && fstat(x->fd, &st) == 0)
		x->n = (uint64_t)st.st_size / esz;
}

static void ix_close(struct seg_ix *x)
{
	if (x->fd >= 0)
		close(x->fd);
	x->fd = -1;
}

static bool ix_get(struct seg_ix *x, uint64_t i, void *e)
{
	if (x->reads)
		(*x->reads)++;
	return pread_full(x->fd, e, x->esz, i * x->esz) == (ssize_t)x->esz;
}

/* Both kinds of entry end with their position. */
_Static_assert(offsetof(struct bus_seg_idx, pos) + 4 == sizeof(struct bus_seg_idx), "idx pos");
_Static_assert(offsetof(struct bus_seg_tidx, pos) + 4 == sizeof(struct bus_seg_tidx), "tidx pos");

/* The last entry of @x whose position is below @lim, into @e, and its
 * index into *@i (entries are sorted by position; the last one is tried
 * first, the usual answer).  Returns false when there is none or a read
 * fails. */
static bool ix_last_below(struct seg_ix *x, uint64_t lim, void *e, uint64_t *i)
{
	uint64_t lo = 0, hi;
	uint32_t pos;

	if (!x->n || !ix_get(x, x->n - 1, e))
		return false;
	memcpy(&pos, (const uint8_t *)e + x->esz - 4, 4);
	if (pos < lim) {
		*i = x->n - 1;
		return true;
	}
	hi = x->n - 1; /* first entry at or past lim */
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (!ix_get(x, mid, e))
			return false;
		memcpy(&pos, (const uint8_t *)e + x->esz - 4, 4);
		if (pos < lim)
			lo = mid + 1;
		else
			hi = mid;
	}
	*i = lo - 1;
	return lo > 0 && ix_get(x, lo - 1, e);
}

/* A place to start scanning a segment from: a checkpoint (or the start). */
struct seg_pt {
	uint64_t pos;
	uint64_t off;
	int64_t max_ts; /* largest DATA timestamp before it (INT64_MIN: none) */
};

/* ------------------------------------------------ in-segment searches */

/* One segment as readers see it: its .log through @io (header checked). */
struct seg_ctx {
	int dfd;
	uint64_t base;
	struct seg_io *io;
	uint64_t *index_reads;
	uint64_t scanned; /* bytes of frames passed over */
};

static struct seg_pt seg_start_pt(const struct seg_ctx *c)
{
	return (struct seg_pt){ .pos = HDR, .off = c->base, .max_ts = INT64_MIN };
}

/* Start at @pt if the frame there is the one the index says, else at the
 * start of the segment (an index that disagrees with the log is ignored).
 * An entry at the first frame (position HDR) is taken as the start itself,
 * offset base and no timestamp before it, whatever it says: the format
 * gives that frame no entry, so one there is damage (an offset other than
 * the base would label every frame after it wrongly). */
static int seg_verify_pt(struct seg_ctx *c, struct seg_pt *pt)
{
	const uint8_t *p;
	uint32_t len;
	int rc;

	if (pt->pos == HDR) {
		*pt = seg_start_pt(c);
		return 0;
	}
	rc = frame_at(c->io, pt->pos, pt->off, &p, &len);
	if (rc < 0 && rc != -BUS_ECORRUPT)
		return rc;
	if (rc != 1)
		*pt = seg_start_pt(c);
	return 0;
}

/* Position of offset @off in the segment: scans from the last checkpoint
 * at or before it.  Returns 1 (*pos: its frame, or the end when @off is the
 * segment's next offset), 0 when the segment ends before @off (*pos, *o: its
 * end), -BUS_ECORRUPT at a bad frame before it, or an I/O error. */
static int seg_find_offset(struct seg_ctx *c, uint64_t off, uint64_t *pos, uint64_t *o)
{
	struct seg_pt pt = seg_start_pt(c);
	struct seg_ix x;
	const uint8_t *p;
	uint32_t len;
	/* Past every entry's rel (a u32) when @off lies 2^32 or more past the
	 * base, beyond the segment's end: from the last checkpoint then, not
	 * from the start. */
	uint64_t rel = off - c->base > UINT32_MAX ? UINT32_MAX : off - c->base;
	int rc;

	ix_open(&x, c->dfd, c->base, "index", sizeof(struct bus_seg_idx), c->index_reads);
	if (x.n) {
		uint64_t lo = 0, hi = x.n; /* first entry with rel > target */
		struct bus_seg_idx e;
		bool ok = true;
		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;
			if (!ix_get(&x, mid, &e)) {
				ok = false;
				break;
			}
			if (e.rel <= rel)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (ok && lo > 0 && ix_get(&x, lo - 1, &e)) {
			pt.pos = e.pos;
			pt.off = c->base + e.rel;
		}
	}
	ix_close(&x);
	rc = seg_verify_pt(c, &pt);
	if (rc)
		return rc;
	*pos = pt.pos;
	*o = pt.off;
	while (*o < off) {
		rc = frame_at(c->io, *pos, *o, &p, &len);
		if (rc != 1)
			return rc;
		*pos += len;
		(*o)++;
		c->scanned += len;
	}
	return 1;
}

/* Whether time entry @t can be the seal entry of segment @c (its .log's
 * size in c->io): at the end of the .log, counting no more frames than fit
 * before it, and none exactly when the segment is empty.  Plausible only:
 * proving it would take reading the log, which the seal entry is there to
 * spare. */
static bool seal_plausible(const struct seg_ctx *c, const struct bus_seg_tidx *t)
{
	uint64_t size = c->io->size;

	return size >= HDR && t->pos == size && (uint64_t)t->rel * BUS_FRAME_HDR <= size - HDR &&
	       (t->rel == 0) == (size == HDR);
}

/* Where to scan for the first timestamp >= @ts (see the format: the last
 * time entry below @ts, or the checkpoint before the next time entry,
 * whichever is later), or *sealed_skip when the segment's seal entry says
 * nothing in it reaches @ts (then *pt is its end). */
static void seg_time_start(struct seg_ctx *c, int64_t ts, struct seg_pt *pt, bool *sealed_skip)
{
	struct seg_ix xi, xt;
	struct bus_seg_tidx t, tn;
	struct bus_seg_idx e;
	uint64_t lo = 0, hi, limit = UINT64_MAX;
	bool ok = true;

	*pt = seg_start_pt(c);
	*sealed_skip = false;
	/* The .index first: its entries' time entries are then all in the
	 * .timeindex we look at next (the writer writes that one first). */
	ix_open(&xi, c->dfd, c->base, "index", sizeof(e), c->index_reads);
	ix_open(&xt, c->dfd, c->base, "timeindex", sizeof(t), c->index_reads);
	if (xt.n && ix_get(&xt, xt.n - 1, &t) && seal_plausible(c, &t) && t.max_ts < ts) {
		pt->pos = t.pos;
		pt->off = c->base + t.rel;
		pt->max_ts = t.max_ts;
		*sealed_skip = true;
		goto out;
	}
	hi = xt.n; /* first entry with max_ts >= ts */
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (!ix_get(&xt, mid, &t)) {
			ok = false;
			break;
		}
		if (t.max_ts < ts)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!ok)
		goto out;
	if (lo > 0 && ix_get(&xt, lo - 1, &t)) {
		pt->pos = t.pos;
		pt->off = c->base + t.rel;
		pt->max_ts = t.max_ts;
	}
	if (lo < xt.n && ix_get(&xt, lo, &tn))
		limit = tn.pos;
	/* The last checkpoint before `limit`. */
	lo = 0;
	hi = xi.n;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (!ix_get(&xi, mid, &e)) {
			ok = false;
			break;
		}
		if (e.pos < limit)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (ok && lo > 0 && ix_get(&xi, lo - 1, &e) && e.pos > pt->pos) {
		pt->pos = e.pos;
		pt->off = c->base + e.rel;
		/* max_ts: no time entry between, so no later timestamp before */
	}
out:
	ix_close(&xi);
	ix_close(&xt);
}

/* The first DATA record with timestamp >= @ts in the segment.  Returns 1
 * (*pos, *o: it), 0 when there is none (*pos, *o: the segment's end),
 * -BUS_ECORRUPT, or an I/O error. */
static int seg_find_time(struct seg_ctx *c, int64_t ts, uint64_t *pos, uint64_t *o)
{
	struct seg_pt pt;
	bool skip;
	const uint8_t *p;
	uint32_t len;
	int rc;

	seg_time_start(c, ts, &pt, &skip);
	*pos = pt.pos;
	*o = pt.off;
	if (skip)
		return 0;
	rc = seg_verify_pt(c, &pt);
	if (rc)
		return rc;
	*pos = pt.pos;
	*o = pt.off;
	for (;;) {
		struct bus_seg_fhdr h;
		rc = frame_at(c->io, *pos, *o, &p, &len);
		if (rc != 1)
			return rc;
		memcpy(&h, p, sizeof(h));
		if (BUS_COMMIT_TYPE(h.commit) == BUS_FRAME_DATA && h.timestamp >= ts)
			return 1;
		*pos += len;
		(*o)++;
		c->scanned += len;
	}
}

/* End of the segment (the position and offset after its last valid frame)
 * and its largest timestamp: from the seal entry when the last time entry
 * is one (seal_plausible()), else by a scan from the last checkpoint whose
 * frame the .log holds whole and valid (the last one inside the .log, or
 * up to three before it: a torn tail may end inside the last one's frame,
 * or have left a seal entry past the end; failing those, the start), with
 * the largest timestamp of the last time entry at or before it.
 * Returns 0 or an I/O error (a bad frame ends the scan). */
#define TAIL_TRIES 4
static int seg_tail(struct seg_ctx *c, uint64_t *end_pos, uint64_t *end_off, int64_t *max_ts)
{
	struct seg_ix xi, xt;
	struct bus_seg_tidx t;
	struct bus_seg_idx e;
	struct seg_pt pt = seg_start_pt(c);
	const uint8_t *p;
	uint64_t i;
	uint32_t len;
	int rc;

	rc = io_stat(c->io, NULL);
	if (rc)
		return rc;
	ix_open(&xi, c->dfd, c->base, "index", sizeof(e), c->index_reads);
	ix_open(&xt, c->dfd, c->base, "timeindex", sizeof(t), c->index_reads);
	if (xt.n && ix_get(&xt, xt.n - 1, &t) && seal_plausible(c, &t)) {
		ix_close(&xi);
		ix_close(&xt);
		*end_pos = t.pos;
		*end_off = c->base + t.rel;
		*max_ts = t.max_ts;
		return 0;
	}
	if (ix_last_below(&xi, c->io->size, &e, &i)) {
		for (int k = 0; k < TAIL_TRIES && e.pos > HDR; k++) {
			rc = frame_at(c->io, e.pos, c->base + e.rel, &p, &len);
			if (rc < 0 && rc != -BUS_ECORRUPT)
				goto out;
			if (rc == 1) {
				pt.pos = e.pos;
				pt.off = c->base + e.rel;
				break;
			}
			if (i == 0 || !ix_get(&xi, --i, &e))
				break;
		}
	}
	/* No time entry between the last one at or before pt and pt: its
	 * max_ts covers every frame before pt (see the format). */
	if (pt.pos > HDR && ix_last_below(&xt, pt.pos + 1, &t, &i) && t.pos > HDR)
		pt.max_ts = t.max_ts;
	for (;;) {
		struct bus_seg_fhdr h;
		rc = frame_at(c->io, pt.pos, pt.off, &p, &len);
		if (rc < 0 && rc != -BUS_ECORRUPT)
			goto out;
		if (rc != 1)
			break;
		memcpy(&h, p, sizeof(h));
		if (BUS_COMMIT_TYPE(h.commit) == BUS_FRAME_DATA && h.timestamp > pt.max_ts)
			pt.max_ts = h.timestamp;
		pt.pos += len;
		pt.off++;
	}
	*end_pos = pt.pos;
	*end_off = pt.off;
	*max_ts = pt.max_ts;
	rc = 0;
out:
	ix_close(&xi);
	ix_close(&xt);
	return rc;
}

/* ------------------------------------------------------------- writer */

struct bus_seg_writer {
	char *dir;
	int dfd; /* holds the flock */
	struct bus_seg_opts o;

	/* The active segment. */
	int log_fd, idx_fd, tidx_fd;
	uint64_t base;
	uint64_t log_size;    /* whole frames in the .log */
	uint64_t end;         /* log_size + buffered bytes */
	uint64_t idx_n, tidx_n; /* entries in the index files */
	uint64_t last_ckpt;   /* position of the last checkpoint (HDR at start) */
	int64_t max_ts;       /* largest DATA timestamp so far */
	int64_t last_m;       /* max_ts of the last time entry */
	int64_t first_ns;     /* CLOCK_REALTIME of the first append (0: none) */
	bool sealed;          /* a roll wrote the seal entry; the next segment
	                         is still to be created */
	uint64_t prealloc_end; /* the .log's blocks are reserved up to here
	                          (see PREALLOCATION) */
	bool prealloc_off;     /* the file system cannot (EOPNOTSUPP) */

	/* The pending write-out (see PIECES above bus_seg_append()): the
	 * pieces, in file order, point into the arena buf (copied frames)
	 * or at frames left in place. */
	uint8_t *buf;
	size_t buf_len, buf_cap; /* arena bytes used, allocated */
	uint64_t buf_frames;     /* frames pending */
	size_t pend;             /* bytes pending: what the pieces add up to */
	struct iovec *pc;        /* PIECES_MAX */
	size_t pc_n;

	struct bus_seg_idx *pidx;
	size_t pidx_n, pidx_cap;
	struct bus_seg_tidx *ptidx;
	size_t ptidx_n, ptidx_cap;

	uint64_t next_off;
	uint64_t written_off;
	uint64_t synced_off;
	uint64_t synced_pos;  /* the active .log's bytes that the last
	                         fdatasync covered (0: none, not even the
	                         header of a segment a roll made) */
	int64_t last_sync_ns; /* CLOCK_MONOTONIC */
	uint64_t unsynced;    /* bytes written since the last sync */
	bool failing;         /* the last write-out failed */
	struct bus_seg_writer_stats st;
	bool dir_unsynced; /* the active segment's name is not durable yet:
	                      the fsync of the dir after a roll failed
	                      (sync_dir()) */
	int sync_err;    /* a failed fdatasync: the writer is poisoned (see
	                    SYNC ERRORS), every call but close returns it */
	bool cut_pending; /* poisoned, and the cut to synced_pos is not done */
	/* The offset floor (see segment.h): durable value, the seq of its
	 * slot and the slot's index (seq_newer()), whether this writer or
	 * the open synced the file and the dir's entry of it, the file
	 * (opened at the first raise; -1 before). */
	uint64_t floor, floor_seq;
	uint32_t floor_slot;
	bool floor_written;
	int floor_fd;
};

static void wlog(const struct bus_seg_writer *w, enum bus_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void wlog(const struct bus_seg_writer *w, enum bus_log_level lvl, const char *fmt, ...)
{
	char msg[512];
	int n;
	va_list ap;

	if (!w->o.log)
		return;
	n = snprintf(msg, sizeof(msg), "segment %s: ", w->dir);
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	w->o.log(w->o.log_ctx, lvl, msg);
}

static int opts_resolve(struct bus_seg_opts *d, const struct bus_seg_opts *o)
{
	if (o)
		*d = *o;
	else
		memset(d, 0, sizeof(*d));
	if (!d->segment_bytes)
		d->segment_bytes = BUS_SEG_BYTES_DEFAULT;
	if (d->segment_bytes < BUS_SEG_BYTES_MIN || d->segment_bytes > BUS_SEG_BYTES_MAX)
		return -EINVAL;
	if (!d->index_interval)
		d->index_interval = BUS_SEG_INTERVAL_DEFAULT;
	if (!d->buf_bytes)
		d->buf_bytes = BUS_SEG_BUF_DEFAULT;
	if (d->buf_bytes < 4096)
		return -EINVAL;
	if (!d->write_bytes)
		d->write_bytes = BUS_SEG_WRITE_DEFAULT;
	if (d->write_bytes < d->buf_bytes)
		d->write_bytes = d->buf_bytes;
	if (d->fsync != BUS_SEG_FSYNC_NEVER && d->fsync != BUS_SEG_FSYNC_MS &&
	    d->fsync != BUS_SEG_FSYNC_BYTES)
		return -EINVAL;
	if (d->first_offset > BUS_SEG_OFFSET_MAX)
		return -EINVAL;
	if (d->segment_ms > 1000000000000ull)
		d->segment_ms = 0; /* over 30 years: never */
	if (!d->file_mode)
		d->file_mode = 0640;
	d->file_mode &= 0777;
	if (!d->prealloc_bytes)
		d->prealloc_bytes = BUS_SEG_PREALLOC_DEFAULT;
	return 0;
}

/* fsync the folder that holds @path's last component (its entry). */
static int sync_parent(const char *path)
{
	char *tmp = strdup(path), *slash;
	int fd, err = 0;

	if (!tmp)
		return -ENOMEM;
	slash = strrchr(tmp, '/');
	if (slash == tmp)
		slash[1] = '\0'; /* "/x": the root */
	else if (slash)
		*slash = '\0';
	fd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd))
		err = -errno;
	if (fd >= 0)
		close(fd);
	free(tmp);
	return err;
}

int bus_seg_mkdir(const char *path, mode_t mode, bool parents)
{
	char *tmp;
	int err = 0;

	if (!*path)
		return -ENOENT; /* as mkdir("") */
	tmp = strdup(path);
	if (!tmp)
		return -ENOMEM;
	for (char *p = tmp + 1;; p++) {
		if (*p && *p != '/')
			continue;
		char c = *p;
		bool last = !p[strspn(p, "/")]; /* only slashes after it */

		*p = 0;
		if ((parents || last) && p[-1] != '/') {
			if (mkdir(tmp, mode) == 0)
				err = sync_parent(tmp);
			else if (errno != EEXIST)
				err = -errno; /* -ENOENT: a parent is missing */
		}
		*p = c;
		if (err || !c)
			break;
	}
	free(tmp);
	return err;
}

/* Room for one more pending entry of each kind. */
static int pend_reserve(struct bus_seg_writer *w)
{
	if (w->pidx_n == w->pidx_cap) {
		size_t cap = w->pidx_cap ? w->pidx_cap * 2 : 64;
		struct bus_seg_idx *v = realloc(w->pidx, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		w->pidx = v;
		w->pidx_cap = cap;
	}
	if (w->ptidx_n == w->ptidx_cap) {
		size_t cap = w->ptidx_cap ? w->ptidx_cap * 2 : 64;
		struct bus_seg_tidx *v = realloc(w->ptidx, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		w->ptidx = v;
		w->ptidx_cap = cap;
	}
	return 0;
}

/* Record the checkpoint at @pos (offset @off) if the frame of @len bytes
 * there would end more than index_interval bytes past the last one.
 * Capacity was reserved. */
static void checkpoint(struct bus_seg_writer *w, uint64_t pos, uint64_t off, uint32_t len)
{
	uint32_t rel = (uint32_t)(off - w->base);

	if (pos <= w->last_ckpt || pos + len - w->last_ckpt <= w->o.index_interval)
		return;
	/* Past what an entry holds (32 bits: see the format), which only a
	 * .log this writer did not make reaches (recovered as the active
	 * segment, damaged or hostile): no entry, rather than one that wraps
	 * and that readers and the next recovery would find wrong.  Readers
	 * scan from the last checkpoint. */
	if (pos > UINT32_MAX || off - w->base > UINT32_MAX)
		return;
	if (w->max_ts > w->last_m) {
		w->ptidx[w->ptidx_n++] = (struct bus_seg_tidx){ w->max_ts, rel, (uint32_t)pos };
		w->last_m = w->max_ts;
	}
	w->pidx[w->pidx_n++] = (struct bus_seg_idx){ rel, (uint32_t)pos };
	w->last_ckpt = pos;
}

/* Append the first @k of the @*pending entries (@esize bytes each) in @buf
 * to index file @fd, which holds @*in_file entries, and drop them from the
 * buffer.  A failed write is cut back to whole entries (what is left over
 * is rewritten by the retry, or dropped by recovery). */
static int flush_entries(int fd, void *buf, size_t esize, size_t k, uint64_t *in_file,
			 size_t *pending)
{
	size_t done;
	int err;

	if (!k)
		return 0;
	err = pwrite_full(fd, buf, k * esize, *in_file * esize, &done);
	if (err) {
		if (done && ftruncate(fd, (off_t)(*in_file * esize))) {
			/* the retry rewrites it; recovery drops a partial entry */
		}
		return err;
	}
	*in_file += k;
	*pending -= k;
	memmove(buf, (char *)buf + k * esize, *pending * esize);
	return 0;
}

/* Write the pending index entries whose frames are in the file: time
 * entries first, then offset entries.  A failed write is cut back to whole
 * entries and retried by the next call. */
static int write_index(struct bus_seg_writer *w)
{
	uint64_t wrel = w->written_off - w->base;
	size_t k = 0;
	int err;

	/* A checkpoint's frame is written when its rel is below wrel; the seal
	 * entry (rel == wrel) is queued only once everything is written. */
	while (k < w->ptidx_n && (w->ptidx[k].rel < wrel || (w->sealed && w->ptidx[k].rel == wrel)))
		k++;
	err = flush_entries(w->tidx_fd, w->ptidx, sizeof(*w->ptidx), k, &w->tidx_n, &w->ptidx_n);
	if (err)
		return err;
	k = 0;
	while (k < w->pidx_n && w->pidx[k].rel < wrel)
		k++;
	return flush_entries(w->idx_fd, w->pidx, sizeof(*w->pidx), k, &w->idx_n, &w->pidx_n);
}

/* Write the pieces out at the end of the .log, in calls of at most
 * PIECES_MAX vectors.  Returns 0 or -errno; *done receives the bytes
 * written either way. */
static int write_pieces(struct bus_seg_writer *w, size_t *done)
{
	struct iovec *v = w->pc;
	size_t n = w->pc_n, skip = 0;
	int err = 0;

	*done = 0;
	while (n) {
		struct iovec first = v[0];
		ssize_t k;

		/* A short write left part of the first piece: write the rest
		 * (the array is restored below). */
		v[0].iov_base = (uint8_t *)v[0].iov_base + skip;
		v[0].iov_len -= skip;
		k = pwritev(w->log_fd, v, (int)n, (off_t)(w->log_size + *done));
		v[0] = first;
		if (k < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (k == 0) {
			err = -EIO;
			break;
		}
		*done += (size_t)k;
		k += (ssize_t)skip;
		while (n && (size_t)k >= v[0].iov_len) {
			k -= (ssize_t)v[0].iov_len;
			v++;
			n--;
		}
		skip = (size_t)k;
	}
	return err;
}

/* Bytes of whole frames in the first @n bytes of the pieces, and their
 * count.  A frame's header is always in one piece of the arena. */
static size_t whole_frames(const struct bus_seg_writer *w, size_t n, uint64_t *frames)
{
	size_t start = 0, fp = 0;

	*frames = 0;
	for (size_t i = 0; i < w->pc_n; start += w->pc[i].iov_len, i++) {
		while (fp >= start && fp + BUS_FRAME_HDR <= start + w->pc[i].iov_len) {
			uint64_t commit;
			memcpy(&commit, (const uint8_t *)w->pc[i].iov_base + (fp - start), 8);
			if (fp + BUS_COMMIT_LEN(commit) > n || BUS_COMMIT_LEN(commit) == 0)
				return fp;
			fp += BUS_COMMIT_LEN(commit);
			(*frames)++;
		}
	}
	return fp;
}

/* Drop the first @n pending bytes (whole frames) from the pieces. */
static void pieces_drop(struct bus_seg_writer *w, size_t n)
{
	size_t i = 0;

	w->pend -= n;
	if (!w->pend) {
		/* The usual case: everything went out. */
		w->pc_n = 0;
		w->buf_len = 0;
		return;
	}
	while (n && n >= w->pc[i].iov_len)
		n -= w->pc[i++].iov_len;
	w->pc[i].iov_base = (uint8_t *)w->pc[i].iov_base + n;
	w->pc[i].iov_len -= n;
	memmove(w->pc, w->pc + i, (w->pc_n - i) * sizeof(*w->pc));
	w->pc_n -= i;
}

/*
 * PREALLOCATION.  Before a write-out would pass the blocks reserved so far,
 * the writer reserves the .log's blocks up to prealloc_bytes past it (but
 * not past segment_bytes), with fallocate(FALLOC_FL_KEEP_SIZE): the size,
 * and so what readers see, is unchanged.  Why: ext4's buffered writes into
 * blocks already allocated skip part of delayed allocation's per-block
 * work: busd spilled 1 KiB records 6-8% faster (Intel VM of 2026-12-03,
 * alternating runs of spill_bench, 2 GiB, three each: 3.70-3.94 GB/s
 * without, 3.98-4.16 with 16 MiB ahead; 4 MiB and 128 MiB ahead did as
 * well), busd's CPU 0.25-0.27 s per GB without, 0.23-0.25 with.  What is
 * reserved past the end is given back when the segment is sealed and when
 * the writer closes (ftruncate to the size frees it), so a partition holds
 * at most prealloc_bytes it has not written.  A file system that cannot
 * (EOPNOTSUPP) is not asked again; a failure (ENOSPC) is not an error: the
 * write that follows reports what it meets.  (Write-outs cut on page
 * boundaries were tried too: no gain measured, alternating runs.)
 */
static void prealloc(struct bus_seg_writer *w, uint64_t need)
{
	uint64_t from = w->prealloc_end > w->log_size ? w->prealloc_end : w->log_size;
	uint64_t to, cap = w->o.segment_bytes > need ? w->o.segment_bytes : need;

	if (w->o.prealloc_bytes < 0 || w->prealloc_off || need <= from)
		return;
	to = need + (uint64_t)w->o.prealloc_bytes;
	if (to > cap)
		to = cap;
	if (fallocate(w->log_fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)(to - from)) == 0)
		w->prealloc_end = to;
	else if (errno == EOPNOTSUPP || errno == ENOSYS)
		w->prealloc_off = true;
}

/* Give back the blocks reserved past the .log's end (ftruncate to its own
 * size frees them).  Best effort: they only cost space. */
static void prealloc_trim(struct bus_seg_writer *w)
{
	if (w->prealloc_end > w->log_size && w->log_fd >= 0 &&
	    ftruncate(w->log_fd, (off_t)w->log_size) == 0)
		w->prealloc_end = w->log_size;
}

/* Write the pending frames, then the index entries.  On a failed or short
 * write, the frames written whole stay (the file is cut back to the end of
 * the last one) and the rest stays pending. */
static int write_out(struct bus_seg_writer *w)
{
	size_t done = 0;
	uint64_t frames = w->buf_frames;
	int err = 0;

	if (w->sync_err)
		return w->sync_err; /* poisoned: see SYNC ERRORS */
	if (w->pend) {
		prealloc(w, w->log_size + w->pend);
		err = write_pieces(w, &done);
		if (err) {
			size_t whole = whole_frames(w, done, &frames);
			if (whole < done && ftruncate(w->log_fd, (off_t)(w->log_size + whole))) {
				/* The retry overwrites the partial frame; if none
				 * comes, recovery cuts it by its CRC. */
			}
			w->prealloc_end = 0; /* a cut gives the reserve back */
			done = whole;
		}
		w->log_size += done;
		w->written_off += frames;
		w->unsynced += done;
		w->buf_frames -= frames;
		pieces_drop(w, done);
		if (err)
			return err;
	}
	return write_index(w);
}

/*
 * SYNC ERRORS.  An fdatasync that fails poisons the writer, for good.  The
 * kernel keeps the pages it could not write in the page cache, marked
 * clean: reads (a recovery's, a reader's) still find every frame, a later
 * fdatasync passes over them and succeeds, and a power loss then takes
 * them.  So nothing written after the last successful sync can be trusted
 * to reach the disk by being left where it is, and:
 *   - the .log is cut back to synced_pos, what the last successful
 *     fdatasync covered, and both indexes are emptied (the next writer's
 *     recovery rebuilds them from the log): truncation frees those blocks,
 *     so the frames written again later go to new ones.  The caller writes
 *     again whatever the log no longer holds (busd: from the ring, as LOST
 *     records what the ring no longer holds); those records were never
 *     reported synced.
 *   - every later call (append, flush, skip, roll) returns the error, and
 *     so does close, which retries the cut if it failed.
 * Rejected: rewriting the same bytes in place, read back from the cache:
 * on ext4 (Linux 6.18, a loop device failing the writes) the blocks of the
 * failed write-back stayed an unwritten extent through the rewrite and its
 * successful fdatasync, and read as zeros after a remount.  Dropping the
 * pages (POSIX_FADV_DONTNEED) and reading the log again would keep the
 * frames that did reach the disk, but the call is advisory and the read
 * costs up to a segment from the disk, where the writer that saw the error
 * knows what was synced; recover() does it only when that writer died.
 * O_DIRECT reads: not on every file system (tmpfs), and aligned only.
 */
static int poison(struct bus_seg_writer *w, int err);

static void cut_unsynced(struct bus_seg_writer *w)
{
	if (!w->cut_pending || w->log_fd < 0)
		return;
	if (ftruncate(w->log_fd, (off_t)w->synced_pos) || ftruncate(w->idx_fd, 0) ||
	    ftruncate(w->tidx_fd, 0)) {
		wlog(w, BUS_LOG_ERROR,
		     "cannot cut the log back to offset %" PRIu64 " after a failed fdatasync: %s; "
		     "its records from there on may be missing on disk",
		     w->synced_off, strerror(errno));
		return;
	}
	w->cut_pending = false;
	if (w->written_off > w->synced_off)
		wlog(w, BUS_LOG_ERROR,
		     "the log is cut back to offset %" PRIu64 " (what the last successful "
		     "fdatasync covered): records %" PRIu64 "..%" PRIu64 " must be written again",
		     w->synced_off, w->synced_off, w->written_off - 1);
	w->log_size = w->end = w->synced_pos;
	w->written_off = w->synced_off;
	w->idx_n = w->tidx_n = 0;
}

static int poison(struct bus_seg_writer *w, int err)
{
	wlog(w, BUS_LOG_ERROR, "fdatasync failed: %s; the writer stops", strerror(-err));
	w->sync_err = err;
	w->st.sync_failed = 1;
	w->cut_pending = true;
	cut_unsynced(w);
	return err;
}

/* Make the active segment's name durable, if a roll left that to do: an
 * fsync of the dir, which the roll did and which failed.  Until it
 * succeeds, every append retries it first (maybe_roll()), and no sync of
 * the segment's .log counts (sync_log()): its records would be reported
 * synced while a power loss could still take the file.  A failed fsync
 * of the dir is an error to retry, not poison (its pages are the file
 * system's metadata, which a journal either commits or stops at). */
static int sync_dir(struct bus_seg_writer *w)
{
	if (!w->dir_unsynced)
		return 0;
	if (fsync(w->dfd))
		return -errno;
	w->dir_unsynced = false;
	return 0;
}

static int sync_log(struct bus_seg_writer *w, bool force)
{
	int64_t now;
	int err;

	if (w->written_off == w->synced_off)
		return 0;
	if (!force) {
		if (w->o.fsync == BUS_SEG_FSYNC_NEVER)
			return 0;
		if (w->o.fsync == BUS_SEG_FSYNC_MS &&
		    (uint64_t)(bus_mono_ns() - w->last_sync_ns) < w->o.fsync_ms * 1000000ull)
			return 0;
		if (w->o.fsync == BUS_SEG_FSYNC_BYTES && w->unsynced < w->o.fsync_bytes)
			return 0;
	}
	err = sync_dir(w);
	if (err)
		return err;
	now = bus_mono_ns();
	if (fdatasync(w->log_fd))
		return poison(w, -errno);
	w->synced_off = w->written_off;
	w->synced_pos = w->log_size;
	w->unsynced = 0;
	w->last_sync_ns = now;
	w->st.syncs++;
	return 0;
}

static void note_result(struct bus_seg_writer *w, int err)
{
	if (err) {
		w->st.write_errors++;
		if (!w->failing && !w->sync_err) /* poison() logged that one */
			wlog(w, BUS_LOG_ERROR, "write failed at offset %" PRIu64 ": %s; will retry",
			     w->written_off, strerror(-err));
		w->failing = true;
	} else if (w->failing) {
		wlog(w, BUS_LOG_INFO, "writes resumed at offset %" PRIu64, w->written_off);
		w->failing = false;
	}
}

static int flush(struct bus_seg_writer *w)
{
	int err;

	if (w->sync_err)
		return w->sync_err;
	err = write_out(w);

	if (!err)
		err = sync_log(w, false);
	note_result(w, err);
	return err;
}

/* Create segment @base: the .log (exclusively) with its header, then the
 * index files.  Leaves nothing behind on failure. */
static int seg_create(struct bus_seg_writer *w, uint64_t base, int fds[3])
{
	static const char *const ext[3] = { "log", "index", "timeindex" };
	struct bus_seg_hdr h;
	char name[BUS_SEG_NAME_MAX];
	size_t done;
	int err = 0, i;

	fds[0] = fds[1] = fds[2] = -1;
	for (i = 0; i < 3 && !err; i++) {
		fds[i] = open_seg_file(w->dfd, base, ext[i],
				       O_RDWR | O_CREAT | (i == 0 ? O_EXCL : O_TRUNC),
				       (mode_t)w->o.file_mode);
		if (fds[i] < 0) {
			err = fds[i];
			fds[i] = -1;
			if (err == -BUS_ECORRUPT)
				wlog(w, BUS_LOG_ERROR, "%020" PRIu64 ".%s is not a regular file",
				     base, ext[i]);
			break;
		}
		if (i == 0) {
			hdr_make(&h, base);
			err = pwrite_full(fds[0], &h, sizeof(h), 0, &done);
		}
	}
	if (!err)
		return 0;
	/* Every name this call may have made goes, also one whose open failed
	 * after the file was made (open_reg()'s fstat): a .log left behind
	 * would fail every retry with -EEXIST.  The .log did not exist before
	 * (O_EXCL; one writer per dir), so neither did its indexes, but for
	 * an orphan that remove_orphans() would remove anyway.  What stays is
	 * the name whose open failed because something was there: a .log
	 * (-EEXIST), or a name that is no regular file (-BUS_ECORRUPT). */
	for (int j = 0; j < 3 && j <= i; j++) {
		if (fds[j] >= 0)
			close(fds[j]);
		fds[j] = -1;
		if (j == i && (err == -EEXIST || err == -BUS_ECORRUPT))
			continue;
		seg_name(name, base, ext[j]);
		unlinkat(w->dfd, name, 0);
	}
	return err;
}

static void seg_activate(struct bus_seg_writer *w, uint64_t base, const int fds[3])
{
	w->log_fd = fds[0];
	w->idx_fd = fds[1];
	w->tidx_fd = fds[2];
	w->base = base;
	w->log_size = w->end = HDR;
	w->synced_pos = 0;
	w->idx_n = w->tidx_n = 0;
	w->last_ckpt = HDR;
	w->max_ts = w->last_m = INT64_MIN;
	w->first_ns = 0;
	w->sealed = false;
	w->prealloc_end = 0;
}

static void seg_close_fds(struct bus_seg_writer *w)
{
	if (w->log_fd >= 0)
		close(w->log_fd);
	if (w->idx_fd >= 0)
		close(w->idx_fd);
	if (w->tidx_fd >= 0)
		close(w->tidx_fd);
	w->log_fd = w->idx_fd = w->tidx_fd = -1;
}

/* Write out what is buffered, then the seal entry of the active segment
 * (its largest timestamp and end), once. */
static int seal(struct bus_seg_writer *w)
{
	int err = write_out(w);

	if (err || w->sealed)
		return err;
	err = pend_reserve(w);
	if (err)
		return err;
	/* None past what an entry holds (see checkpoint()): readers then find
	 * the segment's end by a scan, as for a lost seal entry. */
	if (w->end <= UINT32_MAX && w->next_off - w->base <= UINT32_MAX)
		w->ptidx[w->ptidx_n++] = (struct bus_seg_tidx){
			w->max_ts, (uint32_t)(w->next_off - w->base), (uint32_t)w->end
		};
	w->sealed = true;
	err = write_out(w);
	if (!err)
		prealloc_trim(w);
	return err;
}

static int roll(struct bus_seg_writer *w)
{
	int fds[3], err;

	err = seal(w);
	if (err)
		return err;
	if (w->o.fsync != BUS_SEG_FSYNC_NEVER) {
		err = sync_log(w, true);
		/* Index pages lost as a .log's would be: the same remedy. */
		if (!err && (fdatasync(w->idx_fd) || fdatasync(w->tidx_fd)))
			err = poison(w, -errno);
		if (err)
			return err;
	}
	err = seg_create(w, w->next_off, fds);
	if (err)
		return err;
	wlog(w, BUS_LOG_DEBUG, "rolled: segment %" PRIu64 " sealed at %" PRIu64 " bytes",
	     w->base, w->end);
	seg_close_fds(w);
	seg_activate(w, w->next_off, fds);
	w->st.rolls++;
	/* The segment is in place; a failure leaves only its name to make
	 * durable, which the next append or sync retries (sync_dir()). */
	w->dir_unsynced = w->o.fsync != BUS_SEG_FSYNC_NEVER;
	return sync_dir(w);
}

static int maybe_roll(struct bus_seg_writer *w, uint32_t len)
{
	int err = sync_dir(w);

	if (err)
		return err;
	if (!w->sealed) {
		if (w->next_off == w->base)
			return 0; /* never roll an empty segment */
		/* The age only at the first frame of a batch (the buffer is
		 * empty after every flush): a clock read per frame was 5% of
		 * busd's time spilling 1 KiB records. */
		if (w->end + len <= w->o.segment_bytes &&
		    (!w->o.segment_ms || w->pend ||
		     bus_now_ns() - w->first_ns < (int64_t)(w->o.segment_ms * 1000000ull)))
			return 0;
	}
	return roll(w);
}

/*
 * PIECES.  What waits to be written is a list of pieces (an iovec each),
 * written with pwritev(2): runs of the arena buf, where bus_seg_append()
 * copies frames, and runs of frames that bus_seg_append_inplace() leaves
 * where they lie (busd: in the ring, which producers do not overwrite
 * before the spill cursor passes them, after the write-out).  A frame's
 * header is always whole in one piece.
 *
 * Why in place: a copy of every frame into the arena, which the kernel
 * then copies again into the page cache, cost the spill a fifth of its
 * rate.  Measured on the Intel VM of 2026-12-02 with a stand-in (a
 * producer process filling a 16 MiB ring with 1 KiB records, a writer
 * process pwrite()ing 256 KiB at a time to ext4, no CRC): straight from
 * the ring 3.28-3.51 GB/s, through a copy 2.57-2.64 GB/s (dd 3.85-4.36).
 * In place, contiguous frames make one piece: the kernel copies a run of
 * the ring as it would a buffer.  (Writing only the payloads from the
 * ring, with the headers from the arena, gained nothing for 1 KiB
 * records: two small pieces per frame cost the kernel's copy as much.)
 *
 * The arena never moves while pieces point into it (it is grown or shrunk
 * only when nothing is pending).
 */
#define PIECES_MAX 1024u /* IOV_MAX on Linux */

/* Add @n bytes at @p to the pieces (capacity was checked); bytes that
 * continue the last piece in memory extend it (whatever holds them: the
 * iovec writes the same bytes). */
static void piece_add(struct bus_seg_writer *w, const uint8_t *p, size_t n)
{
	struct iovec *last = w->pc_n ? &w->pc[w->pc_n - 1] : NULL;

	if (last && (const uint8_t *)last->iov_base + last->iov_len == p) {
		last->iov_len += n;
		return;
	}
	w->pc[w->pc_n].iov_base = (void *)(uintptr_t)p;
	w->pc[w->pc_n].iov_len = n;
	w->pc_n++;
}

static int append(struct bus_seg_writer *w, struct bus_frame *f, uint64_t expected_offset,
		  bool inplace)
{
	struct bus_seg_fhdr h;
	uint64_t plen = 0, len64, pos, commit;
	uint32_t type, len, crc, arena;
	uint8_t *dst;
	int err;

	if (!w || !f)
		return -EINVAL;
	if (w->sync_err)
		return w->sync_err; /* poisoned: see SYNC ERRORS */
	memcpy(&h, (const void *)f, sizeof(h)); /* one read of the header */
	commit = h.commit;
	type = BUS_COMMIT_TYPE(h.commit);
	if (expected_offset != w->next_off || BUS_COMMIT_TAG(h.commit) != (uint32_t)expected_offset)
		return -EINVAL;
	if (expected_offset >= BUS_SEG_OFFSET_MAX)
		return -EOVERFLOW;
	if (type == BUS_FRAME_DATA) {
		plen = (uint64_t)h.key_len + h.headers_len + h.value_len;
		len64 = bus_frame_len(h.key_len, h.headers_len, h.value_len, h.slack);
		if (h.offset != expected_offset || !len64 || len64 != BUS_COMMIT_LEN(h.commit))
			return -EINVAL;
	} else if (type == BUS_FRAME_LOST) {
		len64 = BUS_FRAME_HDR;
		h.timestamp = 0;
		h.key_len = h.headers_len = h.value_len = h.header_count = h.slack = 0;
	} else {
		return -EINVAL;
	}
	len = (uint32_t)len64;
	h.offset = expected_offset;
	h.commit = BUS_COMMIT(type, len, expected_offset);
	h.crc = 0;
	/* In place only when the frame is, but for its CRC, what the log
	 * stores: a DATA frame whose commit word is the log's. */
	inplace = inplace && type == BUS_FRAME_DATA && commit == h.commit;
	arena = inplace ? 0 : len;

	err = maybe_roll(w, len);
	if (err) {
		note_result(w, err);
		return err;
	}
	/* Write-outs of write_bytes, not of the arena's size: frames in place
	 * take no arena, and fewer, larger writes cost busd less: spilling
	 * 1 KiB records, alternating runs on the Intel VM of 2026-12-03,
	 * 4.18-4.32 GB/s with 256 KiB, 4.52-4.69 with 1 MiB, 4.65 with 4 MiB
	 * (dd: 5.5 GB/s with 256 KiB or 1 MiB writes, 4.7 with 4 MiB). */
	if (w->buf_len + arena > w->buf_cap ||
	    (w->pend && w->pend + len > (w->buf_cap > w->o.write_bytes ? w->buf_cap
								     : w->o.write_bytes)) ||
	    w->pc_n + 1 > PIECES_MAX) {
		err = flush(w);
		if (err)
			return err;
		if (arena > w->buf_cap) {
			/* A frame larger than the arena: grow it for this one
			 * (nothing is pending: no piece points into it). */
			uint8_t *nb = realloc(w->buf, arena);
			if (!nb)
				return -ENOMEM;
			w->buf = nb;
			w->buf_cap = arena;
		}
	}
	err = pend_reserve(w);
	if (err)
		return err;

	pos = w->end;
	if (inplace) {
		dst = (uint8_t *)(void *)f;
		/* The padding as the log stores it (zeros), then the CRC in
		 * the claim word, which is dead once the frame is published
		 * (see bus_seg_append_inplace()).  A producer's sum has both
		 * done: the payload's lines are then read by the kernel's
		 * copy alone.  Its release store came before the commit
		 * word, which the caller read with acquire (A3). */
		uint64_t cl = atomic_load_explicit(&f->claim, memory_order_relaxed);
		if (BUS_CLAIM_IS_SUM(cl, expected_offset)) {
			crc = BUS_CLAIM_CRC(cl);
		} else {
			memset(dst + BUS_FRAME_HDR + plen, 0, len - BUS_FRAME_HDR - plen);
			crc = frame_crc(dst, len);
		}
		atomic_store_explicit(&f->claim, crc, memory_order_relaxed);
		piece_add(w, dst, len);
	} else {
		const uint8_t *payload = (const uint8_t *)(const void *)f + BUS_FRAME_HDR;
		dst = w->buf + w->buf_len;
		memcpy(dst, &h, sizeof(h));
		if (plen)
			memcpy(dst + BUS_FRAME_HDR, payload, plen);
		memset(dst + BUS_FRAME_HDR + plen, 0, len - BUS_FRAME_HDR - plen);
		crc = frame_crc(dst, len);
		h.crc = crc;
		memcpy(dst + offsetof(struct bus_seg_fhdr, crc), &h.crc, sizeof(h.crc));
		piece_add(w, dst, len);
	}

	checkpoint(w, pos, expected_offset, len);
	if (type == BUS_FRAME_DATA && h.timestamp > w->max_ts)
		w->max_ts = h.timestamp;
	if (!w->first_ns)
		w->first_ns = bus_now_ns();
	w->buf_len += arena;
	w->pend += len;
	w->buf_frames++;
	w->end += len;
	w->next_off++;
	if (w->buf_cap > w->o.buf_bytes && w->pend == len) {
		/* The large frame goes out now, and the arena shrinks back. */
		err = flush(w);
		if (!err) {
			uint8_t *nb = malloc(w->o.buf_bytes);
			if (nb) {
				free(w->buf);
				w->buf = nb;
				w->buf_cap = w->o.buf_bytes;
			}
		}
		/* The frame is taken either way; a failed write is retried. */
	}
	return 0;
}

int bus_seg_append(struct bus_seg_writer *w, const struct bus_frame *f, uint64_t expected_offset)
{
	/* Only read: the copy path never writes to @f. */
	return append(w, (struct bus_frame *)(uintptr_t)f, expected_offset, false);
}

int bus_seg_append_inplace(struct bus_seg_writer *w, struct bus_frame *f, uint64_t expected_offset)
{
	return append(w, f, expected_offset, true);
}

int bus_seg_flush(struct bus_seg_writer *w)
{
	if (!w)
		return -EINVAL;
	return flush(w);
}

uint64_t bus_seg_writer_next_offset(const struct bus_seg_writer *w)
{
	return w->next_off;
}

void bus_seg_writer_stats(const struct bus_seg_writer *w, struct bus_seg_writer_stats *st)
{
	*st = w->st;
	st->next_offset = w->next_off;
	st->written_offset = w->written_off;
	st->synced_offset = w->synced_off;
	st->active_base = w->base;
	st->floor = w->floor;
}

/* ------------------------------------------------------- offset floor */

static uint32_t floor_crc(const struct bus_seg_floor_slot *sl)
{
	struct bus_seg_floor_slot c = *sl;

	c.crc = 0;
	return bus_crc32c(0, &c, sizeof(c));
}

/* Whether seq @a is newer than seq @b: serial-number order (RFC 1982), so
 * that seq 0 follows 2^64 - 1.  Each raise writes seq + 1 to the slot the
 * floor was not read from, so the slot just written is always the newer
 * one, whatever seqs the file held before (a plain comparison let a slot
 * at 2^64 - 1, damaged or hostile, hide the raise after it). */
static bool seq_newer(uint64_t a, uint64_t b)
{
	return (int64_t)(a - b) > 0;
}

/* The floor in the dir @dfd: *floor, the *seq of its slot and *slot, the
 * slot's index (0, 0, 0 when there is no file).  On a tie (two slots
 * neither newer, which no writer leaves) slot 0 counts.  Returns 1 (a
 * valid slot), 0 (no file), -BUS_ECORRUPT, -BUS_EVERSION, -errno. */
static int floor_load(int dfd, uint64_t *floor, uint64_t *seq, uint32_t *slot)
{
	static const struct bus_seg_floor_slot zero;
	struct bus_seg_floor_slot sl;
	bool any = false, other_version = false, blank = true;
	int fd = open_reg(dfd, BUS_SEG_FLOOR_FILE, O_RDONLY, 0);

	*floor = *seq = 0;
	*slot = 0;
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	for (uint32_t i = 0; i < 2; i++) {
		ssize_t got = pread_full(fd, &sl, sizeof(sl), (uint64_t)i * BUS_SEG_FLOOR_SLOT);

		if (got < 0) {
			close(fd);
			return (int)got;
		}
		if ((size_t)got == sizeof(sl) && memcmp(&sl, &zero, sizeof(sl)) != 0)
			blank = false;
		else if (got > 0 && (size_t)got < sizeof(sl))
			blank = false; /* part of a slot: not what a raise leaves */
		if ((size_t)got < sizeof(sl) || sl.magic != BUS_SEG_FLOOR_MAGIC ||
		    sl.crc != floor_crc(&sl) || sl.floor > BUS_SEG_OFFSET_MAX)
			continue;
		if (sl.version != BUS_SEG_FLOOR_VERSION) {
			other_version = true;
			continue;
		}
		if (!any || seq_newer(sl.seq, *seq)) {
			*floor = sl.floor;
			*seq = sl.seq;
			*slot = i;
		}
		any = true;
	}
	close(fd);
	if (any)
		return 1;
	/* Empty, or slots of zeros: the first raise made the file and was
	 * cut before its slot was written and synced (killed, or a power
	 * loss).  No raise returned, so no floor was relied on: none. */
	if (blank)
		return 0;
	return other_version ? -BUS_EVERSION : -BUS_ECORRUPT;
}

int bus_seg_floor_read(const char *dir, uint64_t *floor)
{
	uint64_t seq;
	uint32_t slot;
	int dfd, err;

	if (!dir || !floor)
		return -EINVAL;
	*floor = 0;
	dfd = open_dir(dir);
	if (dfd < 0)
		return dfd == -ENOENT ? 0 : dfd;
	err = floor_load(dfd, floor, &seq, &slot);
	close(dfd);
	return err < 0 ? err : 0;
}

int bus_seg_writer_floor_raise(struct bus_seg_writer *w, uint64_t need, uint64_t step)
{
	struct bus_seg_floor_slot sl;
	size_t done;
	int err;

	if (!w || need > BUS_SEG_OFFSET_MAX)
		return -EINVAL;
	if (need <= w->floor)
		return 0;
	if (w->floor_fd < 0) {
		int fd = open_reg(w->dfd, BUS_SEG_FLOOR_FILE, O_RDWR | O_CREAT,
				  (mode_t)w->o.file_mode);
		if (fd < 0)
			return fd;
		w->floor_fd = fd;
	}
	memset(&sl, 0, sizeof(sl));
	sl.magic = BUS_SEG_FLOOR_MAGIC;
	sl.version = BUS_SEG_FLOOR_VERSION;
	sl.seq = w->floor_seq + 1;
	sl.floor = step > BUS_SEG_OFFSET_MAX - need ? BUS_SEG_OFFSET_MAX : need + step;
	sl.crc = floor_crc(&sl);
	/* The slot the current floor is not in: a torn write leaves it (and
	 * the seq just above its own makes this one the newer: seq_newer()). */
	err = pwrite_full(w->floor_fd, &sl, sizeof(sl),
			  (uint64_t)(w->floor_slot ^ 1) * BUS_SEG_FLOOR_SLOT, &done);
	if (!err && fdatasync(w->floor_fd))
		err = -errno;
	if (err)
		return err; /* the caller reports it (busd: once per episode) */
	/* A new file's name must be durable too (once). */
	if (!w->floor_written && fsync(w->dfd))
		return -errno;
	w->floor = sl.floor;
	w->floor_seq = sl.seq;
	w->floor_slot ^= 1;
	w->floor_written = true;
	w->st.floor_syncs++;
	return 0;
}

uint64_t bus_seg_writer_floor(const struct bus_seg_writer *w)
{
	return w ? w->floor : 0;
}

int bus_seg_writer_skip(struct bus_seg_writer *w, uint64_t to)
{
	uint64_t old;
	int err;

	if (!w)
		return -EINVAL;
	/* The retry of a skip whose new segment was made, but whose name the
	 * fsync of the dir could not make durable. */
	if (to == w->next_off && !w->sealed && w->base == to && w->dir_unsynced)
		return w->sync_err ? w->sync_err : sync_dir(w);
	/* to == next offset: the retry of a skip whose new segment could not
	 * be made (sealed, next_off already moved). */
	if (to < w->next_off || (to == w->next_off && !w->sealed) || to > BUS_SEG_OFFSET_MAX)
		return -EINVAL;
	old = w->next_off;
	/* The seal entry at the segment's real end (an empty segment stays,
	 * sealed empty: readers pass over it to the next). */
	err = seal(w);
	if (err)
		return err;
	/* Every frame is written out: the skipped offsets count as written
	 * (there is nothing of them to write); roll() syncs the sealed
	 * segment per the policy and makes the new one at next_off (a
	 * failure is retried by the next append's roll, or by this call). */
	w->next_off = to;
	w->written_off = to;
	if (w->synced_off == old)
		w->synced_off = to;
	err = roll(w);
	if (err)
		return err;
	if (old < to)
		wlog(w, BUS_LOG_INFO,
		     "offsets %" PRIu64 "..%" PRIu64 " skipped: the log goes on at %" PRIu64, old,
		     to - 1, to);
	return 0;
}

/* Load an index file whole (recovery only), at most @max entries: more
 * cannot be valid (a file grown past that, by damage or by hand, would
 * cost its size in memory and reads; what is past them is cut with the
 * invalid entries).  *n receives the number of whole entries loaded. */
static int load_file(int fd, size_t esz, uint64_t max, void **out, size_t *n)
{
	struct stat st;
	ssize_t got;

	*out = NULL;
	*n = 0;
	if (fstat(fd, &st))
		return -errno;
	*n = (size_t)((uint64_t)st.st_size / esz < max ? (uint64_t)st.st_size / esz : max);
	if (!*n)
		return 0;
	*out = malloc(*n * esz);
	if (!*out)
		return -ENOMEM;
	got = pread_full(fd, *out, *n * esz, 0);
	if (got < 0)
		return (int)got;
	*n = (size_t)got / esz;
	return 0;
}

static bool idx_entry_ok(uint32_t rel, uint32_t pos, uint32_t prel, uint32_t ppos)
{
	return rel > prel && pos > ppos && pos % BUS_FRAME_ALIGN == 0 &&
	       pos >= HDR + (uint64_t)rel * BUS_FRAME_HDR;
}

/* Cut @fd to @size unless it has that size already. */
static int truncate_to(int fd, uint64_t size)
{
	struct stat st;

	if (fstat(fd, &st))
		return -errno;
	if ((uint64_t)st.st_size != size && ftruncate(fd, (off_t)size))
		return -errno;
	return 0;
}

/* Find the offset entry at @pos (entries sorted by pos). */
static bool idx_has(const struct bus_seg_idx *oi, size_t n, uint32_t rel, uint32_t pos)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (oi[mid].pos < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && oi[lo].pos == pos && oi[lo].rel == rel;
}

/* Recover the active segment @base (see bus_seg_writer_open()).  With
 * @distrust, drop the segment's pages from the page cache first
 * (POSIX_FADV_DONTNEED) and check every frame from the start, as with
 * verify_all: after the fdatasync at the end of a first pass failed, the
 * cache may hold pages that a failed write-back left clean (see SYNC
 * ERRORS), written by a writer that died before it could cut them; read
 * from the disk, they fail their CRC and the log is cut there.  (Advisory:
 * a page mapped or locked stays; none is, after that fdatasync.)  Sets
 * *@sync_failed (may be NULL) when that fdatasync is what failed. */
static int recover(struct bus_seg_writer *w, uint64_t base, bool distrust, bool *sync_failed)
{
	struct bus_seg_idx *oi = NULL;
	struct bus_seg_tidx *ti = NULL;
	size_t no = 0, nt = 0, vo, vt, j;
	struct seg_io io = { .fd = -1 };
	struct seg_pt s = { .pos = HDR, .off = base, .max_ts = INT64_MIN };
	int64_t created = 0;
	const uint8_t *p;
	uint32_t len;
	bool corrupt = false, fresh = false, verify_all = w->o.verify_all || distrust;
	int fds[3] = { -1, -1, -1 };
	int rc;

	w->pidx_n = w->ptidx_n = 0; /* a second pass starts over */
	rc = open_seg_file(w->dfd, base, "log", O_RDWR, 0);
	if (rc == -BUS_ECORRUPT)
		wlog(w, BUS_LOG_ERROR, "segment %" PRIu64 ": its .log is not a regular file", base);
	if (rc < 0)
		return rc;
	fds[0] = rc;
	if (distrust)
		(void)posix_fadvise(fds[0], 0, 0, POSIX_FADV_DONTNEED);
	io_init(&io, fds[0], NULL, NULL);
	rc = io_stat(&io, NULL);
	if (rc)
		goto out;
	if (io.size < HDR) {
		/* Cut while being created: nothing was in it yet. */
		wlog(w, BUS_LOG_WARN, "segment %" PRIu64 ": header cut short (%" PRIu64
				      " bytes), rewritten", base, io.size);
		fresh = true;
	} else {
		rc = io_get(&io, 0, HDR, &p);
		if (rc == 1)
			rc = hdr_check(p, base, &created);
		else if (rc == 0)
			rc = -BUS_ECORRUPT;
		if (rc == -BUS_ECORRUPT) {
			/* Only where nothing was synced (UNWRITTEN HEADS). */
			int z = w->o.fsync == BUS_SEG_FSYNC_NEVER ? head_unwritten(fds[0], io.size) : 0;
			if (z < 0) {
				rc = z;
				goto out;
			}
			if (z) { /* see UNWRITTEN HEADS */
				w->st.recovered_dropped_bytes += io.size - HDR;
				wlog(w, BUS_LOG_WARN,
				     "segment %" PRIu64 ": its first block reads as zeros (never "
				     "written out before a power loss): its %" PRIu64 " bytes are "
				     "dropped, the header written again", base, io.size);
				rc = 0;
				fresh = true;
			}
		}
		if (rc) {
			wlog(w, BUS_LOG_ERROR, "segment %" PRIu64 ": bad header: %s", base,
			     bus_strerror(rc));
			goto out;
		}
	}
	if (fresh) {
		struct bus_seg_hdr h;
		size_t done;
		hdr_make(&h, base);
		if (ftruncate(fds[0], 0) ||
		    (rc = pwrite_full(fds[0], &h, sizeof(h), 0, &done)) != 0) {
			rc = rc ? rc : -errno;
			goto out;
		}
		io.size = HDR;
		io.wlen = 0; /* the window held what was cut */
		created = h.created_ns;
	}
	for (int i = 1; i < 3; i++) {
		rc = open_seg_file(w->dfd, base, i == 1 ? "index" : "timeindex", O_RDWR | O_CREAT,
				   (mode_t)w->o.file_mode);
		if (rc == -BUS_ECORRUPT)
			wlog(w, BUS_LOG_ERROR, "segment %" PRIu64 ": its .%s is not a regular file",
			     base, i == 1 ? "index" : "timeindex");
		if (rc < 0)
			goto out;
		fds[i] = rc;
		if (distrust)
			(void)posix_fadvise(fds[i], 0, 0, POSIX_FADV_DONTNEED);
	}
	{
		void *ob = NULL, *tb = NULL;
		/* Entries inside the log: rel and pos rise, pos >= HDR + rel *
		 * BUS_FRAME_HDR (idx_entry_ok()); one more for a seal entry. */
		uint64_t max = (io.size - HDR) / BUS_FRAME_HDR + 1;
		rc = load_file(fds[1], sizeof(*oi), max, &ob, &no);
		if (!rc)
			rc = load_file(fds[2], sizeof(*ti), max, &tb, &nt);
		oi = ob;
		ti = tb;
		if (rc)
			goto out;
	}

	/* Indexes: each a valid sequence; the entries past the log's end are
	 * dropped (the log lost its tail); every time entry up to the last
	 * checkpoint is also a checkpoint.  Otherwise rebuild from the start. */
	for (vo = 0; vo < no; vo++)
		if (!idx_entry_ok(oi[vo].rel, oi[vo].pos, vo ? oi[vo - 1].rel : 0,
				  vo ? oi[vo - 1].pos : (uint32_t)HDR))
			break;
	for (vt = 0; vt < nt; vt++)
		if (!idx_entry_ok(ti[vt].rel, ti[vt].pos, vt ? ti[vt - 1].rel : 0,
				  vt ? ti[vt - 1].pos : (uint32_t)HDR) ||
		    (vt && ti[vt].max_ts < ti[vt - 1].max_ts))
			break;
	corrupt = vo < no || vt < nt;
	while (vo && oi[vo - 1].pos >= io.size)
		vo--;
	while (vt && ti[vt - 1].pos >= io.size)
		vt--;
	for (j = 0; j < vt && !corrupt; j++)
		if (vo && ti[j].pos <= oi[vo - 1].pos && !idx_has(oi, vo, ti[j].rel, ti[j].pos))
			corrupt = true;
	/* Start at the last time entry that is also a written checkpoint: the
	 * state there (position, offset, max timestamp) is exact. */
	j = corrupt ? 0 : vt;
	while (j && (!vo || ti[j - 1].pos > oi[vo - 1].pos))
		j--;
	if (j) {
		s = (struct seg_pt){ ti[j - 1].pos, base + ti[j - 1].rel, ti[j - 1].max_ts };
		rc = frame_at(&io, s.pos, s.off, &p, &len);
		if (rc < 0 && rc != -BUS_ECORRUPT)
			goto out;
		if (rc != 1) {
			corrupt = true;
			j = 0;
			s = (struct seg_pt){ HDR, base, INT64_MIN };
		}
	}
	if (verify_all && s.pos > HDR) {
		/* Every frame before the start point too (see verify_all in
		 * segment.h): one that fails cuts the log there, as a torn
		 * tail, and the indexes are rebuilt up to it. */
		struct seg_pt v = { HDR, base, INT64_MIN };
		while (v.pos < s.pos) {
			rc = frame_at(&io, v.pos, v.off, &p, &len);
			if (rc != 1)
				break;
			w->st.recovered_scanned_bytes += len;
			v.pos += len;
			v.off++;
		}
		if (rc < 0 && rc != -BUS_ECORRUPT)
			goto out;
		if (v.pos != s.pos || v.off != s.off) {
			wlog(w, BUS_LOG_WARN, "segment %" PRIu64 ": bad frame at position %" PRIu64
					      " (offset %" PRIu64 "), before the last checkpoint",
			     base, v.pos, v.off);
			corrupt = true;
			j = 0;
			s = (struct seg_pt){ HDR, base, INT64_MIN };
		}
		rc = 0;
	}
	if (corrupt) {
		wlog(w, BUS_LOG_WARN, "segment %" PRIu64 ": indexes disagree with the log: "
				      "rebuilding them", base);
		w->st.recovered_index_rebuilt = 1;
	}
	vt = j;
	while (vo && (!j || oi[vo - 1].pos > s.pos))
		vo--;
	rc = truncate_to(fds[1], vo * sizeof(*oi));
	if (!rc)
		rc = truncate_to(fds[2], vt * sizeof(*ti));
	if (rc)
		goto out;

	/* Validate every frame from there, and queue the checkpoints again. */
	seg_activate(w, base, fds);
	w->idx_n = vo;
	w->tidx_n = vt;
	w->last_ckpt = s.pos;
	w->max_ts = w->last_m = s.max_ts;
	for (;;) {
		struct bus_seg_fhdr h;
		rc = frame_at(&io, s.pos, s.off, &p, &len);
		if (rc != 1)
			break;
		memcpy(&h, p, sizeof(h));
		rc = pend_reserve(w);
		if (rc)
			goto out_active;
		checkpoint(w, s.pos, s.off, len);
		if (BUS_COMMIT_TYPE(h.commit) == BUS_FRAME_DATA && h.timestamp > w->max_ts)
			w->max_ts = h.timestamp;
		w->st.recovered_scanned_bytes += len;
		s.pos += len;
		s.off++;
	}
	if (rc < 0 && rc != -BUS_ECORRUPT)
		goto out_active;
	rc = 0;
	if (!j && w->pidx_n && !corrupt) {
		wlog(w, BUS_LOG_INFO, "segment %" PRIu64 ": indexes missing: rebuilt", base);
		w->st.recovered_index_rebuilt = 1;
	}
	if (s.pos < io.size) {
		w->st.recovered_dropped_bytes += io.size - s.pos;
		if (ftruncate(fds[0], (off_t)s.pos)) {
			rc = -errno;
			goto out_active;
		}
		wlog(w, BUS_LOG_WARN, "segment %" PRIu64 ": torn tail at position %" PRIu64
				      " (offset %" PRIu64 "): %" PRIu64 " bytes dropped",
		     base, s.pos, s.off, io.size - s.pos);
	}
	w->log_size = w->end = s.pos;
	w->next_off = w->written_off = w->synced_off = s.off;
	w->synced_pos = s.pos;
	w->first_ns = s.off > base ? created : 0;
	if (w->o.fsync != BUS_SEG_FSYNC_NEVER && fdatasync(fds[0])) {
		rc = -errno;
		if (sync_failed)
			*sync_failed = true;
		goto out_active;
	}
	rc = write_out(w);
	if (rc) {
		/* The entries stay queued; the next write-out retries them. */
		wlog(w, BUS_LOG_WARN, "segment %" PRIu64 ": index write failed: %s", base,
		     strerror(-rc));
		rc = 0;
	}
	free(io.buf);
	free(oi);
	free(ti);
	return 0;
out_active:
	w->log_fd = w->idx_fd = w->tidx_fd = -1;
out:
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(io.buf);
	free(oi);
	free(ti);
	return rc;
}

/* Cut index file @ext of segment @base to its entries (@esz bytes each)
 * below position @lim; then, when @seal is not NULL, append it.  Returns 0
 * or -errno. */
static int ix_cut(struct bus_seg_writer *w, uint64_t base, const char *ext, size_t esz,
		  uint64_t lim, const struct bus_seg_tidx *seal)
{
	struct seg_ix x;
	uint8_t e[sizeof(struct bus_seg_tidx)];
	uint64_t i, keep = 0;
	size_t done;
	int fd, err;

	ix_open(&x, w->dfd, base, ext, esz, NULL);
	if (ix_last_below(&x, lim, e, &i))
		keep = i + 1;
	ix_close(&x);
	fd = open_seg_file(w->dfd, base, ext, O_RDWR | O_CREAT, (mode_t)w->o.file_mode);
	if (fd < 0)
		return fd;
	err = truncate_to(fd, keep * esz);
	if (!err && seal)
		err = pwrite_full(fd, seal, sizeof(*seal), keep * esz, &done);
	if (!err && w->o.fsync != BUS_SEG_FSYNC_NEVER && fdatasync(fd))
		err = -errno;
	close(fd);
	return err;
}

/*
 * TORN SEALED SEGMENTS.  With fsync "never", a roll syncs nothing: a power
 * loss can cut a sealed segment's .log short (inside a frame, typically:
 * the file systems keep a prefix of what was written) and lose its seal
 * entry, or keep the seal entry, which then lies past the .log's end.
 * Readers would stop there for good (a partial frame in a sealed segment is
 * -BUS_ECORRUPT to them: the same bytes as damage).  So a writer opened
 * with verify_all (busd: after a reboot) checks every sealed segment's seal
 * entry against its .log's size (a stat and one read per segment), and
 * where they disagree finds the last whole frame (seg_tail(): from the last
 * checkpoint the .log holds, about index_interval bytes to read), cuts the
 * .log there (WARN, counted in recovered_dropped_bytes), cuts the indexes
 * to it and writes the seal entry again.  The records cut were never
 * reported durable (fsync "never"); readers see them as a gap before the
 * next segment (offsets skipped, reported lost), as after a floor skip.
 * A segment whose seal entry matches its size is taken as whole: a bad
 * frame inside it is damage, -BUS_ECORRUPT to readers.
 */
static int seal_repair(struct bus_seg_writer *w, uint64_t base)
{
	struct seg_io io = { .fd = -1 };
	struct seg_ctx c = { .dfd = w->dfd, .base = base, .io = &io };
	struct seg_ix xt;
	struct bus_seg_tidx t, seal;
	const uint8_t *p;
	uint64_t end_pos = HDR, end_off = base, size;
	int64_t max_ts = INT64_MIN;
	int fd, rc;
	bool ok, zeroed;

	fd = open_seg_file(w->dfd, base, "log", O_RDWR, 0);
	if (fd == -BUS_ECORRUPT) {
		/* Not a segment: readers report it, as a bad header below. */
		wlog(w, BUS_LOG_ERROR, "sealed segment %" PRIu64 ": its .log is not a regular file; "
		     "left as it is", base);
		return 0;
	}
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd; /* deleted by retention meanwhile */
	io_init(&io, fd, NULL, NULL);
	rc = io_stat(&io, NULL);
	if (rc)
		goto out;
	size = io.size;
	/* Before the seal entry, which a zeroed head leaves plausible. */
	rc = w->o.fsync == BUS_SEG_FSYNC_NEVER ? head_unwritten(fd, size) : 0;
	if (rc < 0)
		goto out;
	zeroed = rc == 1;
	rc = 0;
	ix_open(&xt, w->dfd, base, "timeindex", sizeof(t), NULL);
	ok = !zeroed && xt.n && ix_get(&xt, xt.n - 1, &t) && seal_plausible(&c, &t);
	ix_close(&xt);
	if (ok)
		goto out;
	if (size > UINT32_MAX) {
		/* No seal entry holds its end (see checkpoint()); larger than
		 * any segment a writer makes, it is no log of ours to repair:
		 * readers scan it, and report a bad frame in it. */
		wlog(w, BUS_LOG_WARN, "sealed segment %" PRIu64 ": its .log of %" PRIu64 " bytes is "
		     "larger than a segment can be; left as it is", base, size);
		goto out;
	}
	if (size < HDR || zeroed) {
		/* Cut before its header was written out, or its first block
		 * never written (UNWRITTEN HEADS): empty, header again. */
		struct bus_seg_hdr h;
		size_t done;
		hdr_make(&h, base);
		if (ftruncate(fd, 0) || (rc = pwrite_full(fd, &h, sizeof(h), 0, &done)) != 0) {
			rc = rc ? rc : -errno;
			goto out;
		}
	} else {
		rc = io_get(&io, 0, HDR, &p);
		if (rc == 1)
			rc = hdr_check(p, base, NULL);
		if (rc) {
			/* Not a segment: readers report it (-BUS_ECORRUPT). */
			wlog(w, BUS_LOG_ERROR, "sealed segment %" PRIu64 ": bad header: %s; left as it is",
			     base, bus_strerror(rc < 0 ? rc : -BUS_ECORRUPT));
			rc = 0;
			goto out;
		}
		rc = seg_tail(&c, &end_pos, &end_off, &max_ts);
		if (rc)
			goto out;
		if (end_pos < size && ftruncate(fd, (off_t)end_pos)) {
			rc = -errno;
			goto out;
		}
	}
	if (size < HDR) {
		wlog(w, BUS_LOG_WARN,
		     "sealed segment %" PRIu64 ": header cut short (%" PRIu64 " bytes), written "
		     "again; readers see the offsets from %" PRIu64 " to the next segment as lost",
		     base, size, base);
	} else if (zeroed) {
		w->st.recovered_dropped_bytes += size - HDR;
		wlog(w, BUS_LOG_WARN,
		     "sealed segment %" PRIu64 ": its first block reads as zeros (never written "
		     "out before a power loss): its %" PRIu64 " bytes are dropped, the header "
		     "written again; readers see the offsets from %" PRIu64 " to the next segment "
		     "as lost", base, size, base);
	} else if (end_pos < size) {
		w->st.recovered_dropped_bytes += size - end_pos;
		wlog(w, BUS_LOG_WARN,
		     "sealed segment %" PRIu64 ": torn tail at position %" PRIu64 " (offset %" PRIu64
		     "): %" PRIu64 " bytes dropped; readers see the offsets from %" PRIu64
		     " to the next segment as lost", base, end_pos, end_off, size - end_pos, end_off);
	} else {
		wlog(w, BUS_LOG_INFO, "sealed segment %" PRIu64 ": seal entry written again", base);
	}
	if (w->o.fsync != BUS_SEG_FSYNC_NEVER && fdatasync(fd)) {
		rc = -errno;
		goto out;
	}
	seal = (struct bus_seg_tidx){ max_ts, (uint32_t)(end_off - base), (uint32_t)end_pos };
	rc = ix_cut(w, base, "index", sizeof(struct bus_seg_idx), end_pos, NULL);
	if (!rc)
		rc = ix_cut(w, base, "timeindex", sizeof(struct bus_seg_tidx), end_pos, &seal);
out:
	close(fd);
	free(io.buf);
	return rc;
}

/* Remove index files whose .log is gone (a retention cut short). */
static void remove_orphans(struct bus_seg_writer *w, const uint64_t *segs, size_t n)
{
	static const char *const ext[2] = { "index", "timeindex" };
	char name[BUS_SEG_NAME_MAX];

	for (int e = 0; e < 2; e++) {
		uint64_t *v;
		size_t m;
		if (seg_list_ext(w->dfd, ext[e], &v, &m))
			continue;
		for (size_t i = 0; i < m; i++) {
			if (bsearch(&v[i], segs, n, sizeof(*segs), cmp_u64))
				continue;
			seg_name(name, v[i], ext[e]);
			if (unlinkat(w->dfd, name, 0) == 0)
				wlog(w, BUS_LOG_INFO, "removed %s, left without its log", name);
		}
		free(v);
	}
}

/* Close every file of @w (the dir's too: its lock goes) and free it. */
static void writer_free(struct bus_seg_writer *w)
{
	seg_close_fds(w);
	if (w->dfd >= 0)
		close(w->dfd);
	if (w->floor_fd >= 0)
		close(w->floor_fd);
	free(w->buf);
	free(w->pc);
	free(w->pidx);
	free(w->ptidx);
	free(w->dir);
	free(w);
}

int bus_seg_writer_open(struct bus_seg_writer **out, const char *dir, const struct bus_seg_opts *o)
{
	struct bus_seg_writer *w;
	uint64_t *segs = NULL;
	size_t n = 0;
	mode_t dmode;
	int err;

	if (!out || !dir || !dir[0])
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->dfd = w->log_fd = w->idx_fd = w->tidx_fd = w->floor_fd = -1;
	err = opts_resolve(&w->o, o);
	if (err)
		goto fail;
	w->dir = strdup(dir);
	w->buf_cap = w->o.buf_bytes;
	w->buf = malloc(w->buf_cap);
	w->pc = malloc(PIECES_MAX * sizeof(*w->pc));
	if (!w->dir || !w->buf || !w->pc) {
		err = -ENOMEM;
		goto fail;
	}
	dmode = (mode_t)(w->o.file_mode | ((w->o.file_mode & 0444) >> 2));
	/* -ENOENT with no_parents: the parent is gone, and stays gone */
	err = bus_seg_mkdir(dir, dmode, !w->o.no_parents);
	if (err)
		goto fail;
	err = open_dir(dir);
	if (err < 0)
		goto fail;
	w->dfd = err;
	if (flock(w->dfd, LOCK_EX | LOCK_NB)) {
		err = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto fail;
	}
	err = seg_list(w->dfd, &segs, &n);
	if (err)
		goto fail;
	remove_orphans(w, segs, n);
	err = floor_load(w->dfd, &w->floor, &w->floor_seq, &w->floor_slot);
	if (err > 0) {
		/* The floor we found may be a write a killed writer did not
		 * sync yet (the page cache has it, the disk may not): make it
		 * durable, name included, before anything relies on it. */
		int ffd = open_reg(w->dfd, BUS_SEG_FLOOR_FILE, O_RDWR, 0);
		if (ffd < 0)
			err = ffd;
		else if (fdatasync(ffd) || fsync(w->dfd))
			err = -errno;
		else
			err = 0;
		if (ffd >= 0)
			close(ffd);
		if (err)
			goto fail;
		w->floor_written = true;
	}
	if (err == -BUS_ECORRUPT || err == -BUS_EVERSION) {
		wlog(w, BUS_LOG_ERROR,
		     "%s holds no valid offset floor (%s): it is written again at the next "
		     "raise; until then offsets are only known from the log",
		     BUS_SEG_FLOOR_FILE, bus_strerror(err));
		w->floor = w->floor_seq = 0;
		w->floor_slot = 0;
	} else if (err) {
		goto fail;
	}
	for (size_t i = 0; w->o.verify_all && i + 1 < n; i++) {
		err = seal_repair(w, segs[i]);
		if (err)
			goto fail;
	}
	if (n == 0) {
		int fds[3];
		err = seg_create(w, w->o.first_offset, fds);
		if (err)
			goto fail;
		seg_activate(w, w->o.first_offset, fds);
		w->next_off = w->written_off = w->synced_off = w->o.first_offset;
	} else {
		bool sync_failed = false;
		err = recover(w, segs[n - 1], false, &sync_failed);
		if (err && sync_failed) {
			wlog(w, BUS_LOG_ERROR,
			     "segment %" PRIu64 ": fdatasync failed at open: %s; a write-back of "
			     "it failed since its last sync: checking it again as the disk holds it",
			     segs[n - 1], strerror(-err));
			err = recover(w, segs[n - 1], true, NULL);
		}
		if (err)
			goto fail;
	}
	/* The active segment's name durable before a sync of its .log counts
	 * (synced_offset): the one just made, or one that a writer which died
	 * made at a roll before its fsync of the dir.  (A failure leaves the
	 * segment; the next open syncs again.) */
	if (w->o.fsync != BUS_SEG_FSYNC_NEVER && fsync(w->dfd)) {
		err = -errno;
		wlog(w, BUS_LOG_ERROR, "fsync of the dir failed: %s", strerror(-err));
		goto fail;
	}
	free(segs);
	w->last_sync_ns = bus_mono_ns();
	*out = w;
	return 0;
fail:
	free(segs);
	writer_free(w);
	return err;
}

int bus_seg_writer_close(struct bus_seg_writer *w)
{
	int err;

	if (!w)
		return 0;
	err = write_out(w);
	if (!err && w->o.fsync != BUS_SEG_FSYNC_NEVER)
		err = sync_log(w, true);
	if (!err)
		prealloc_trim(w);
	if (w->sync_err)
		cut_unsynced(w); /* again, if it failed before */
	if (err)
		wlog(w, BUS_LOG_ERROR, "closing with %" PRIu64 " records unwritten: %s",
		     w->next_off - w->written_off, strerror(-err));
	writer_free(w);
	return err;
}

int bus_seg_writer_abandon(struct bus_seg_writer *w)
{
	int err;

	if (!w)
		return 0;
	/* Nothing here reads the pieces: frames appended in place may lie in
	 * pages that are gone (busd: a ring truncated under it). */
	err = w->sync_err;
	if (err)
		cut_unsynced(w); /* if it failed before */
	else
		prealloc_trim(w); /* the size stays: the file ends at log_size */
	if (w->next_off > w->written_off)
		wlog(w, BUS_LOG_INFO,
		     "abandoned: records %" PRIu64 "..%" PRIu64 " dropped unwritten; the log ends "
		     "at offset %" PRIu64,
		     w->written_off, w->next_off - 1, w->written_off);
	writer_free(w);
	return err;
}

/* ------------------------------------------------------------- reader */

struct bus_seg_reader {
	int dfd;
	uint64_t *segs; /* the last listing */
	size_t nsegs;
	bool cur;       /* a segment is open in io */
	bool hdr_ok;
	uint64_t base;
	struct seg_io io;
	uint64_t pos;      /* of the next frame */
	uint64_t next_off; /* its offset */
	uint64_t pf;       /* prefetched up to here (bus_seg_next_buffered) */
	/* The frame the last bus_seg_next() returned (mark_ok): it and the
	 * frames returned after it by bus_seg_next_buffered() lie back to
	 * back in the window up to pos (bus_seg_rewind()).  Cleared by every
	 * call that may move or refill the window. */
	bool mark_ok;
	uint64_t mark_pos, mark_off;
	int replay;        /* BUS_REPLAY: REPLAY_AUTO, _READ or _MAP (seg_io) */
	struct bus_seg_reader_stats st;
};

static int relist(struct bus_seg_reader *r);
static int open_switch(struct bus_seg_reader *r, uint64_t base);
static bool seg_sealed(const struct bus_seg_reader *r, uint64_t base);

/* BUS_REPLAY in the environment: "read", "map", else (unset, "auto" or
 * anything else) REPLAY_AUTO (see seg_io). */
static int replay_env(void)
{
	const char *e = getenv("BUS_REPLAY");

	if (e && strcmp(e, "map") == 0)
		return REPLAY_MAP;
	if (e && strcmp(e, "read") == 0)
		return REPLAY_READ;
	return REPLAY_AUTO;
}

/* Whether sealed segment @base may be mapped, and whether only if the
 * process's measurement says so. */
static void io_replay(struct seg_io *io, const struct bus_seg_reader *r, uint64_t base)
{
	io->map_ok = r->replay != REPLAY_READ && seg_sealed(r, base);
	io->map_auto = r->replay == REPLAY_AUTO;
}

int bus_seg_reader_open(struct bus_seg_reader **out, const char *dir)
{
	struct bus_seg_reader *r;
	int err;

	if (!out || !dir)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->io.fd = -1;
	err = open_dir(dir);
	if (err < 0) {
		free(r);
		return err;
	}
	r->dfd = err;
	r->replay = replay_env();
	/* At the earliest record, if there is one yet. */
	if (relist(r) == 0 && r->nsegs)
		open_switch(r, r->segs[0]);
	*out = r;
	return 0;
}

void bus_seg_reader_close(struct bus_seg_reader *r)
{
	if (!r)
		return;
	if (r->io.fd >= 0)
		close(r->io.fd);
	io_unmap(&r->io);
	close(r->dfd);
	free(r->io.buf);
	free(r->segs);
	free(r);
}

void bus_seg_reader_stats(const struct bus_seg_reader *r, struct bus_seg_reader_stats *st)
{
	*st = r->st;
	st->buf_bytes = r->io.cap;
}

uint64_t bus_seg_reader_position(const struct bus_seg_reader *r)
{
	return r->next_off;
}

/* Segment @base is sealed: the reader knows of a later one.  (A list
 * older than a roll says no: the segment is then read, not mapped.) */
static bool seg_sealed(const struct bus_seg_reader *r, uint64_t base)
{
	return r->nsegs && r->segs[r->nsegs - 1] > base;
}

static int relist(struct bus_seg_reader *r)
{
	free(r->segs);
	r->segs = NULL;
	r->nsegs = 0;
	return seg_list(r->dfd, &r->segs, &r->nsegs);
}

int bus_seg_reader_relist(struct bus_seg_reader *r)
{
	return r ? relist(r) : -EINVAL;
}

/* Make segment @base (open as @fd) the current one, at its start. */
static void switch_to(struct bus_seg_reader *r, uint64_t base, int fd)
{
	if (r->io.fd >= 0)
		close(r->io.fd);
	io_unmap(&r->io);
	io_init(&r->io, fd, &r->st.reads, &r->st.read_bytes);
	io_replay(&r->io, r, base);
	r->io.maps = &r->st.maps;
	r->io.lost = &r->st.map_faults;
	r->cur = true;
	r->hdr_ok = false;
	r->base = base;
	r->pos = HDR;
	r->pf = 0;
	r->mark_ok = false;
	r->next_off = base;
	r->st.segments_opened++;
}

static int open_switch(struct bus_seg_reader *r, uint64_t base)
{
	int fd = open_seg_file(r->dfd, base, "log", O_RDONLY, 0);

	if (fd < 0)
		return fd;
	switch_to(r, base, fd);
	return 0;
}

/* What a segment whose .log is shorter than a header is to a reader: 0
 * (empty, the header being written) while it is the active one, else
 * -BUS_ECORRUPT.  A roll writes a segment's header before it makes the
 * next segment, so a sealed one was cut short after (a power loss with
 * fsync "never", or by hand), as a sealed segment cut inside a frame is,
 * and stays corrupt until a writer opened with verify_all writes its
 * header again (seal_repair()).  From the reader's last listing. */
static int hdr_short(const struct bus_seg_reader *r, uint64_t base)
{
	return seg_sealed(r, base) ? -BUS_ECORRUPT : 0;
}

/* 1 when the current segment's header is in and valid, 0 while it is not
 * written yet, else an error. */
static int reader_hdr(struct bus_seg_reader *r)
{
	const uint8_t *p;
	int rc;

	if (r->hdr_ok)
		return 1;
	rc = io_get(&r->io, 0, HDR, &p);
	if (rc <= 0)
		return rc;
	rc = hdr_check(p, r->base, NULL);
	if (rc)
		return rc;
	r->hdr_ok = true;
	return 1;
}

/* The segment after the current one, opened: 1 (*fd, *base), 0 when there
 * is none yet, 2 when the current one was deleted before anything was read
 * from it (a roll that failed, or retention: seek to the position again,
 * which tells the two apart) or when the next one starts below the
 * position (segments that overlap, made by hand: seek to the position,
 * where a seek finds it, rather than read offsets again), -ERANGE when
 * retention deleted the current segment and the records after it, else an
 * error. */
static int next_segment(struct bus_seg_reader *r, int *fd, uint64_t *base)
{
	uint64_t nlink = 1;
	bool look;
	int rc;

	/* A roll by size or age never leaves an empty segment, so the next
	 * one's base is above this one's; an empty one (sealed at a skip) is
	 * followed after a gap, which only the listing below finds. */
	*fd = r->next_off > r->base ? open_seg_file(r->dfd, r->next_off, "log", O_RDONLY, 0)
				    : -ENOENT;
	if (*fd >= 0) {
		*base = r->next_off;
		return 1;
	}
	if (*fd != -ENOENT)
		return *fd;
	rc = io_stat(&r->io, &nlink);
	if (rc)
		return rc;
	if (nlink == 0 && r->next_off == r->base)
		return 2;
	look = nlink == 0 || (r->nsegs && r->segs[r->nsegs - 1] > r->base);
	if (!look)
		return 0;
	rc = relist(r);
	if (rc)
		return rc;
	for (size_t i = 0; i < r->nsegs; i++) {
		if (r->segs[i] < r->base)
			continue;
		if (r->segs[i] == r->base)
			continue;
		if (nlink == 0)
			return -ERANGE; /* records from next_off on were deleted */
		if (r->segs[i] < r->next_off)
			return 2;
		/* A gap (a power loss lost the end of this segment): go on. */
		*fd = open_seg_file(r->dfd, r->segs[i], "log", O_RDONLY, 0);
		if (*fd < 0)
			return *fd == -ENOENT ? -ERANGE : *fd;
		*base = r->segs[i];
		return 1;
	}
	return 0;
}

static void fill_record(const struct bus_seg_reader *r, const uint8_t *p, uint32_t len,
			struct bus_seg_record *out)
{
	struct bus_seg_fhdr h;

	memcpy(&h, p, sizeof(h));
	out->offset = h.offset;
	out->timestamp = h.timestamp;
	out->type = BUS_COMMIT_TYPE(h.commit);
	out->key_len = h.key_len;
	out->headers_len = h.headers_len;
	out->value_len = h.value_len;
	out->header_count = h.header_count;
	out->frame_len = len;
	out->key = p + BUS_FRAME_HDR;
	out->headers = p + BUS_FRAME_HDR + h.key_len;
	out->value = p + BUS_FRAME_HDR + h.key_len + h.headers_len;
	out->frame = fhdr_view(p);
	out->segment_base = r->base;
	out->pos = r->pos;
}

int bus_seg_next(struct bus_seg_reader *r, struct bus_seg_record *out)
{
	const uint8_t *p;
	uint32_t len;
	int rc, frc;

	if (!r || !out)
		return -EINVAL;
	r->mark_ok = false;
	for (;;) {
		int nfd;
		uint64_t nbase = 0;

		if (!r->cur) {
			rc = relist(r);
			if (rc)
				return rc;
			if (!r->nsegs)
				return 0;
			rc = open_switch(r, r->segs[0]);
			if (rc)
				return rc == -ENOENT ? 0 : rc; /* deleted meanwhile: retry */
		}
		rc = reader_hdr(r);
		if (rc < 0)
			return rc;
		if (rc == 0) {
			/* Being created; or removed by a roll that failed (then
			 * the position is in another segment, or not yet); or
			 * sealed, and cut short (hdr_short()).  The dir is
			 * listed again only while the header is short. */
			uint64_t nlink = 1;
			if (io_stat(&r->io, &nlink) == 0 && nlink == 0)
				goto reseek;
			if (!seg_sealed(r, r->base)) {
				rc = relist(r);
				if (rc)
					return rc;
			}
			return hdr_short(r, r->base);
		}
		rc = frame_at(&r->io, r->pos, r->next_off, &p, &len);
		if (rc == 1)
			goto found;
		if (rc < 0 && rc != -BUS_ECORRUPT)
			return rc;
		/* The end of what this segment holds, a frame being written, or a
		 * torn tail that a recovering writer will cut and write over: the
		 * next call reads the file again, not the bytes seen now.  If a
		 * newer segment exists, this one is sealed and whole: read it
		 * again to tell its end from a bad frame. */
		r->io.wlen = 0;
		frc = rc;
		rc = next_segment(r, &nfd, &nbase);
		if (rc == 2)
			goto reseek;
		if (rc == 0 && (frc == -BUS_ECORRUPT || r->pos > r->io.size)) {
			/* The active segment holds no valid frame at the
			 * position, or ends before it: a recovering writer may
			 * have cut it there or below (a torn tail; a failed
			 * fdatasync, segment.c SYNC ERRORS) and written other
			 * frames since, of other lengths (LOST records).  Look
			 * the position's offset up again; if it lies elsewhere
			 * now, read on from there, else this is the end. */
			uint64_t was_pos = r->pos, was_base = r->base;
			rc = bus_seg_seek_offset(r, r->next_off);
			if (rc == 0 && (r->pos != was_pos || r->base != was_base))
				continue;
			if (rc < 0 && rc != -ERANGE && rc != -BUS_ECORRUPT)
				return rc;
			r->io.wlen = 0; /* the seek's window: read again */
			return 0;
		}
		if (rc <= 0)
			return rc;
		rc = frame_at(&r->io, r->pos, r->next_off, &p, &len);
		if (rc == 1) {
			close(nfd);
			goto found;
		}
		if (rc < 0 && rc != -BUS_ECORRUPT) {
			close(nfd);
			return rc;
		}
		if (rc == 0 && r->pos == r->io.size) {
			switch_to(r, nbase, nfd);
			continue;
		}
		close(nfd);
		return -BUS_ECORRUPT;
	reseek:
		/* The segment is gone with nothing read from it.  Removed by a
		 * roll that failed: its records are written later, to a segment
		 * of the same base (0 until then).  Deleted by retention (an
		 * empty segment, sealed at a skip, expires at once): the position
		 * is now below the earliest segment, and the records that
		 * followed it may be gone too: -ERANGE, as for any segment that
		 * retention deleted under the reader. */
		rc = bus_seg_seek_offset(r, r->next_off);
		if (rc == -ERANGE && r->nsegs && r->next_off < r->segs[0])
			return -ERANGE;
		if (rc)
			return rc == -ERANGE ? 0 : rc;
	}
found:
	fill_record(r, p, len, out);
	r->mark_ok = true;
	r->mark_pos = r->pos;
	r->mark_off = r->next_off;
	r->pos += len;
	r->next_off++;
	return 1;
}

int bus_seg_next_buffered(struct bus_seg_reader *r, struct bus_seg_record *out)
{
	const struct seg_io *io = &r->io;
	struct bus_seg_fhdr h;
	const uint8_t *p;
	uint32_t len;

	/* Only bytes already in the window: no read, so the records returned
	 * before stay where they are. */
	if (!r->cur || !r->hdr_ok || r->pos < io->wpos ||
	    r->pos + BUS_FRAME_HDR > io->wpos + io->wlen)
		return 0;
	p = io->win + (r->pos - io->wpos);
	/* Every line up to PREFETCH_AHEAD bytes on, once, for the CRCs to
	 * come: a mapped replay streams from memory, and the CRC's own loads
	 * keep too few misses in flight (CRC of 1 KiB records in a 1 GiB
	 * buffer: 7 -> 12.7 GB/s).  Not for a window read into the buffer:
	 * read(2) has just written it, it is in this core's cache, and the
	 * hints cost a sixth of the reader's instructions (1 KiB records). */
	if (io->map) {
		uint64_t lim = r->pos + PREFETCH_AHEAD, wend = io->wpos + io->wlen;

		if (lim > wend)
			lim = wend;
		if (r->pf < r->pos)
			r->pf = r->pos;
		for (; r->pf < lim; r->pf += 64)
			__builtin_prefetch(io->win + (r->pf - io->wpos));
	}
	memcpy(&h, p, sizeof(h));
	len = fhdr_len(&h);
	if (!len || r->pos + len > io->wpos + io->wlen)
		return 0;
	/* A bad frame is left to bus_seg_next(), which tells a torn end from
	 * corruption. */
	if (frame_crc(p, len) != (uint32_t)h.crc || h.offset != r->next_off || io_lost(io))
		return 0;
	fill_record(r, p, len, out);
	r->pos += len;
	r->next_off++;
	return 1;
}

int bus_seg_rewind(struct bus_seg_reader *r, uint64_t off)
{
	const struct seg_io *io;
	uint64_t pos, o;

	if (!r)
		return -EINVAL;
	io = &r->io;
	/* The frames from the mark up to pos are in the window, untouched
	 * since they were returned (nothing read the file meanwhile: every
	 * call that does clears the mark). */
	if (!r->mark_ok || off < r->mark_off || off > r->next_off || r->mark_pos < io->wpos ||
	    r->pos > io->wpos + io->wlen)
		return -ERANGE;
	pos = r->mark_pos;
	for (o = r->mark_off; o < off; o++) {
		struct bus_seg_fhdr h;
		uint32_t len;

		memcpy(&h, io->win + (pos - io->wpos), sizeof(h));
		len = fhdr_len(&h);
		/* Frames this reader returned: anything else is a bug or a
		 * window changed under it (a mapped file cut by hand). */
		if (!len || h.offset != o || len > r->pos - pos)
			return -ERANGE;
		pos += len;
	}
	r->pos = pos;
	r->next_off = off;
	return 0;
}

/* Seeks look at a segment through a view of their own, which borrows the
 * reader's buffer, and install it only on success: a failed seek leaves
 * the position as it was. */
struct seg_view {
	struct seg_io io;
	uint64_t base;
	bool hdr_ok;
};

static void view_drop(struct bus_seg_reader *r, struct seg_view *v)
{
	close(v->io.fd);
	r->io.buf = v->io.buf;
	r->io.cap = v->io.cap;
	r->io.wlen = 0;
}

/* Returns 0, -ENOENT (deleted meanwhile), or an error (bad header). */
static int view_open(struct bus_seg_reader *r, uint64_t base, struct seg_view *v)
{
	const uint8_t *p;
	int fd = open_seg_file(r->dfd, base, "log", O_RDONLY, 0), rc;

	if (fd < 0)
		return fd;
	io_init(&v->io, fd, &r->st.reads, &r->st.read_bytes);
	v->io.buf = r->io.buf;
	v->io.cap = r->io.cap;
	r->io.buf = NULL;
	r->io.cap = 0;
	r->io.wlen = 0;
	v->base = base;
	v->hdr_ok = false;
	v->io.chunk = HDR;
	rc = io_get(&v->io, 0, HDR, &p);
	if (rc == 1) {
		rc = hdr_check(p, base, NULL);
		v->hdr_ok = rc == 0;
	}
	v->io.chunk = SEEK_CHUNK;
	if (rc < 0)
		view_drop(r, v);
	return rc < 0 ? rc : 0;
}

static void view_install(struct bus_seg_reader *r, struct seg_view *v, uint64_t pos,
			 uint64_t off)
{
	if (r->io.fd >= 0)
		close(r->io.fd);
	io_unmap(&r->io);
	free(r->io.buf);
	r->io = v->io;
	r->io.chunk = IO_CHUNK;
	io_replay(&r->io, r, v->base);
	r->io.maps = &r->st.maps;
	r->io.lost = &r->st.map_faults;
	r->cur = true;
	r->hdr_ok = v->hdr_ok;
	r->base = v->base;
	r->pos = pos;
	r->pf = 0;
	r->mark_ok = false;
	r->next_off = off;
	r->st.segments_opened++;
}

static struct seg_ctx view_ctx(struct bus_seg_reader *r, struct seg_view *v)
{
	return (struct seg_ctx){ .dfd = r->dfd, .base = v->base, .io = &v->io,
				 .index_reads = &r->st.index_reads };
}

int bus_seg_seek_offset(struct bus_seg_reader *r, uint64_t off)
{
	struct seg_view v;
	struct seg_ctx c;
	uint64_t pos = 0, o = 0;
	size_t lo = 0, hi;
	int rc;

	if (!r)
		return -EINVAL;
	r->mark_ok = false; /* view_open() takes the window's buffer */
	r->st.seek_scan_bytes = 0;
	rc = relist(r);
	if (rc)
		return rc;
	if (!r->nsegs || off < r->segs[0])
		return -ERANGE;
	hi = r->nsegs; /* first base > off */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r->segs[mid] <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	rc = view_open(r, r->segs[lo - 1], &v);
	if (rc)
		return rc == -ENOENT ? -ERANGE : rc; /* deleted by retention meanwhile */
	if (!v.hdr_ok) {
		/* Being created: empty; sealed: cut short (hdr_short()).  Its
		 * base is a position either way, as a bad first frame's is. */
		rc = off == v.base ? 1 : hdr_short(r, v.base) ? -BUS_ECORRUPT : -ERANGE;
		pos = HDR;
	} else {
		c = view_ctx(r, &v);
		rc = seg_find_offset(&c, off, &pos, &o);
		r->st.seek_scan_bytes = c.scanned;
	}
	if (rc == 1) {
		view_install(r, &v, pos, off);
		return 0;
	}
	view_drop(r, &v);
	if (rc < 0 && rc != -BUS_ECORRUPT)
		return rc;
	/* In a gap between segments (offsets skipped after a reboot, or lost
	 * with the end of a segment): the next record is the next segment's
	 * first; the reader reports the offsets in between as lost. */
	if (rc == 0 && lo < r->nsegs)
		return bus_seg_seek_offset(r, r->segs[lo]);
	/* The segment ends (or breaks) before @off: past the end of the log,
	 * or at a bad frame of a sealed segment. */
	return rc == -BUS_ECORRUPT && lo < r->nsegs ? -BUS_ECORRUPT : -ERANGE;
}

int bus_seg_seek_time(struct bus_seg_reader *r, int64_t ts_ns, uint64_t *off_out)
{
	uint64_t scanned = 0;
	int rc;

	if (!r)
		return -EINVAL;
	r->mark_ok = false; /* view_open() takes the window's buffer */
	r->st.seek_scan_bytes = 0;
	rc = relist(r);
	if (rc)
		return rc;
	for (size_t i = 0; i < r->nsegs; i++) {
		bool last = i + 1 == r->nsegs;
		uint64_t pos = HDR, o = r->segs[i];
		struct seg_view v;
		struct seg_ctx c;

		rc = view_open(r, r->segs[i], &v);
		if (rc == -ENOENT && !last)
			continue; /* deleted by retention meanwhile */
		if (rc)
			return rc == -ENOENT ? -ERANGE : rc;
		rc = hdr_short(r, r->segs[i]); /* being created: empty */
		if (v.hdr_ok) {
			c = view_ctx(r, &v);
			rc = seg_find_time(&c, ts_ns, &pos, &o);
			scanned += c.scanned;
			r->st.seek_scan_bytes = scanned;
		}
		/* Found, or the end of the log; a bad frame ends the active
		 * segment as it ends its readers. */
		if (rc == 1 || (last && (rc == 0 || rc == -BUS_ECORRUPT))) {
			view_install(r, &v, pos, o);
			if (off_out)
				*off_out = o;
			return 0;
		}
		view_drop(r, &v);
		if (rc < 0)
			return rc;
	}
	return -ERANGE;
}

/* ------------------------------------------------- whole-log queries */

int bus_seg_earliest(const char *dir, uint64_t *first)
{
	uint64_t *segs;
	size_t n;
	int dfd, rc;

	if (!dir || !first)
		return -EINVAL;
	dfd = open_dir(dir);
	if (dfd < 0)
		return dfd;
	rc = seg_list(dfd, &segs, &n);
	close(dfd);
	if (rc)
		return rc;
	if (!n)
		rc = -ENOENT;
	else
		*first = segs[0];
	free(segs);
	return rc;
}

static uint64_t file_size(int dfd, uint64_t base, const char *ext, bool *exists)
{
	char name[BUS_SEG_NAME_MAX];
	struct stat st;

	seg_name(name, base, ext);
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		if (exists)
			*exists = false;
		return 0;
	}
	if (exists)
		*exists = true;
	return (uint64_t)st.st_size;
}

/* End offset and largest timestamp of segment @base (opened here).  With
 * @zeros_empty, a segment whose first block reads as zeros is empty
 * (UNWRITTEN HEADS), as the writer's recovery under fsync "never" leaves
 * it; without, it is unreadable (-BUS_ECORRUPT), as damage would be. */
static int seg_tail_at(int dfd, uint64_t base, uint64_t *end_off, int64_t *max_ts,
		       bool zeros_empty)
{
	struct seg_io io = { .fd = -1 };
	struct seg_ctx c = { .dfd = dfd, .base = base, .io = &io };
	const uint8_t *p;
	uint64_t end_pos;
	int fd, rc;

	*end_off = base;
	*max_ts = INT64_MIN;
	fd = open_seg_file(dfd, base, "log", O_RDONLY, 0);
	if (fd < 0)
		return fd;
	io_init(&io, fd, NULL, NULL);
	rc = io_get(&io, 0, HDR, &p);
	if (rc == 1) {
		rc = hdr_check(p, base, NULL);
		/* Empty, as the writer's recovery leaves it (UNWRITTEN HEADS). */
		if (rc == -BUS_ECORRUPT && zeros_empty && head_unwritten(fd, io.size) == 1)
			rc = 0;
		else if (!rc)
			rc = seg_tail(&c, &end_pos, end_off, max_ts);
	}
	close(fd);
	free(io.buf);
	return rc;
}

int bus_seg_bounds(const char *dir, struct bus_seg_bounds *b)
{
	uint64_t *segs;
	size_t n;
	int64_t mts;
	bool have_first = false;
	int dfd, rc;

	if (!dir || !b)
		return -EINVAL;
	memset(b, 0, sizeof(*b));
	dfd = open_dir(dir);
	if (dfd < 0)
		return dfd;
	rc = seg_list(dfd, &segs, &n);
	if (rc || !n)
		goto out;
	for (size_t i = 0; i < n; i++) {
		bool exists;
		uint64_t ls = file_size(dfd, segs[i], "log", &exists);
		if (!exists)
			continue; /* deleted by retention meanwhile */
		if (!have_first) {
			b->first = segs[i];
			have_first = true;
		}
		b->segments++;
		b->log_bytes += ls;
		b->disk_bytes += ls + file_size(dfd, segs[i], "index", NULL) +
				 file_size(dfd, segs[i], "timeindex", NULL);
	}
	/* The next offset of a log whose active segment's head was never
	 * written: its base (the floor keeps offsets from being given twice),
	 * so that the topic can be made again after the power loss. */
	rc = seg_tail_at(dfd, segs[n - 1], &b->next, &mts, true);
out:
	free(segs);
	close(dfd);
	return rc;
}

int bus_seg_retain(const char *dir, int64_t now_ns, uint64_t retention_ms,
		   uint64_t retention_bytes, uint64_t *earliest)
{
	static const char *const ext[3] = { "log", "timeindex", "index" };
	char name[BUS_SEG_NAME_MAX];
	uint64_t *segs, total = 0, *sizes = NULL;
	int64_t cutoff = INT64_MIN;
	size_t n, i;
	int dfd, rc, deleted = 0;

	if (!dir)
		return -EINVAL;
	dfd = open_dir(dir);
	if (dfd < 0)
		return dfd;
	rc = seg_list(dfd, &segs, &n);
	if (rc)
		goto out_dir;
	if (!n) {
		rc = -ENOENT;
		goto out;
	}
	sizes = calloc(n, sizeof(*sizes));
	if (!sizes) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		sizes[i] = file_size(dfd, segs[i], "log", NULL);
		total += sizes[i];
	}
	if (retention_ms && retention_ms <= (uint64_t)INT64_MAX / 1000000u &&
	    now_ns > INT64_MIN + (int64_t)(retention_ms * 1000000u))
		cutoff = now_ns - (int64_t)(retention_ms * 1000000u);
	for (i = 0; i + 1 < n; i++) {
		bool del = retention_bytes && total > retention_bytes;
		if (!del && cutoff != INT64_MIN) {
			uint64_t end_off;
			int64_t mts;
			/* An unreadable segment is not expired by time, nor one
			 * whose head reads as zeros: its records' times are
			 * unknown, however young. */
			if (seg_tail_at(dfd, segs[i], &end_off, &mts, false) == 0)
				del = mts < cutoff;
		}
		if (!del)
			break;
		for (int e = 0; e < 3; e++) {
			seg_name(name, segs[i], ext[e]);
			if (unlinkat(dfd, name, 0) && errno != ENOENT && e == 0) {
				rc = -errno;
				goto out;
			}
		}
		total -= sizes[i];
		deleted++;
	}
	if (earliest)
		*earliest = segs[i];
	rc = deleted;
out:
	free(sizes);
	free(segs);
out_dir:
	close(dfd);
	return rc;
}
