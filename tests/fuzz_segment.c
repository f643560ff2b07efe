/* fuzz_segment.c - segment logs from hostile bytes: the reader, the seeks,
 * the whole-log queries and the writer's recovery must give an error or
 * good records, never a crash, a hang or a record that is not whole.
 *
 * One input is one partition dir:
 *   byte 0        flags (FL_*)
 *   bytes 1-2     n_idx, little-endian: the .index is the next n_idx bytes
 *   bytes 3-4     n_tidx: then the .timeindex
 *   the rest      the .log
 * named after the base offset in the .log's header (0 when it is shorter
 * than a header).  FL_SEALED adds a valid empty active segment after it, so
 * that it is read as a sealed one (mapped with FL_MAP, else read).  FL_FIX
 * rewrites the header's CRC and every frame's CRC that fits, so that a
 * mutation reaches what comes after the CRC checks.  FL_RECOVER opens a
 * writer on the dir (recovery: the torn tail is cut), appends a record and
 * reads the log again; with FL_VERIFY (every frame checked, as busd after a
 * reboot), an active segment recovered must then read whole from its start.
 * FL_FLOOR also makes the .index bytes the offset.floor file (FL_FIX: with
 * each slot's CRC right); with FL_RECOVER, a raise of the floor must then
 * read back, whatever the slots held.
 *
 * Built two ways.  make fuzz: with clang's libFuzzer (-fsanitize=fuzzer),
 * which calls LLVMFuzzerTestOneInput().  make test: with main() below,
 * which runs every file of the dirs given (tests/fuzz/segment: seeds made
 * by --seeds from the real writer, and inputs that once failed) and fails
 * on the first one that does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fuzz_util.h"
#include "segment.h"

#define FL_FIX 0x01u
#define FL_SEALED 0x02u
#define FL_MAP 0x04u
#define FL_RECOVER 0x08u
#define FL_VERIFY 0x10u
#define FL_FLOOR 0x20u  /* the .index bytes are also the offset.floor file */
#define FL_RETAIN 0x40u /* then retention by bytes: all but the active segment go */

#define MAX_RECORDS 20000 /* a log of 48-byte frames in a 1 MiB input */

static char dir[PATH_MAX];

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void rm_dir(void)
{
	fuzz_rm_dir(dir);
}

static void make_dir(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/bus-fuzz-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(dir))
		die("mkdtemp");
	atexit(rm_dir);
}

static void put_file(const char *name, const void *p, size_t n)
{
	char path[PATH_MAX + BUS_SEG_NAME_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open");
	if (n && write(fd, p, n) != (ssize_t)n)
		die("write");
	close(fd);
}

static void seg_name(char *out, uint64_t base, const char *ext)
{
	snprintf(out, BUS_SEG_NAME_MAX, "%020" PRIu64 ".%s", base, ext);
}

static uint32_t hdr_crc(const struct bus_seg_hdr *h)
{
	struct bus_seg_hdr c = *h;

	c.hdr_crc = 0;
	return bus_crc32c(0, &c, sizeof(c));
}

/* FL_FIX: the CRCs right, where the header's sizes leave a frame in the
 * file. */
static void fix_crcs(uint8_t *log, size_t n)
{
	struct bus_seg_hdr h;
	size_t pos = BUS_SEG_HDR_SIZE;

	if (n < BUS_SEG_HDR_SIZE)
		return;
	memcpy(&h, log, sizeof(h));
	h.hdr_crc = hdr_crc(&h);
	memcpy(log, &h, sizeof(h));
	while (pos + BUS_FRAME_HDR <= n) {
		struct bus_seg_fhdr f;
		uint32_t len;

		memcpy(&f, log + pos, sizeof(f));
		len = BUS_COMMIT_LEN(f.commit);
		if (len < BUS_FRAME_HDR || len % BUS_FRAME_ALIGN || len > n - pos)
			break;
		f.crc = 0;
		memcpy(log + pos, &f, sizeof(f));
		f.crc = bus_seg_frame_crc(f.commit, log + pos, len);
		memcpy(log + pos, &f, sizeof(f));
		pos += len;
	}
}

/* Every byte of a record's views, so that a view past its buffer is
 * caught (AddressSanitizer, or a fault). */
static uint64_t touch(const struct bus_seg_record *rec)
{
	const uint8_t *k = rec->key, *h = rec->headers, *v = rec->value;
	uint64_t s = 0;

	check(rec->type == BUS_FRAME_DATA || rec->type == BUS_FRAME_LOST, "type %u", rec->type);
	check(rec->frame_len >= BUS_FRAME_HDR && rec->frame_len % BUS_FRAME_ALIGN == 0,
	      "frame_len %u", rec->frame_len);
	check((uint64_t)rec->key_len + rec->headers_len + rec->value_len + BUS_FRAME_HDR <=
		      rec->frame_len,
	      "sizes %u %u %u in a frame of %u", rec->key_len, rec->headers_len, rec->value_len,
	      rec->frame_len);
	for (uint32_t i = 0; i < rec->key_len; i++)
		s += k[i];
	for (uint32_t i = 0; i < rec->headers_len; i++)
		s += h[i];
	for (uint32_t i = 0; i < rec->value_len; i++)
		s += v[i];
	return s;
}

/* Read from where @r stands to the end or an error; offsets must rise.
 * Returns the last result of bus_seg_next(); *n counts the records. */
static int read_all(struct bus_seg_reader *r, unsigned *n)
{
	struct bus_seg_record rec;
	uint64_t last = 0;
	bool any = false;
	int rc = 0;

	*n = 0;
	while (*n < MAX_RECORDS) {
		rc = bus_seg_next(r, &rec);
		if (rc <= 0)
			break;
		do {
			check(!any || rec.offset > last, "offset %" PRIu64 " after %" PRIu64,
			      rec.offset, last);
			any = true;
			last = rec.offset;
			touch(&rec);
			(*n)++;
		} while (*n < MAX_RECORDS && bus_seg_next_buffered(r, &rec) == 1);
	}
	return rc;
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static void seeks(struct bus_seg_reader *r, uint64_t base, const uint8_t *log, size_t n)
{
	struct bus_seg_record rec;
	uint64_t offs[] = {base, base + 1, base + 7, base + 100, UINT64_MAX, 0,
			   n >= 24 ? rd64(log + n - 24) : 1};
	int64_t times[] = {INT64_MIN, 0, 1, INT64_MAX, n >= 16 ? (int64_t)rd64(log + n - 16) : -1};

	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		int rc = bus_seg_seek_offset(r, offs[i]);

		if (rc == 0 && bus_seg_next(r, &rec) == 1) {
			touch(&rec);
			check(rec.offset >= offs[i], "seek to %" PRIu64 " read %" PRIu64, offs[i],
			      rec.offset);
		}
	}
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		uint64_t at = 0;
		int rc = bus_seg_seek_time(r, times[i], &at);

		if (rc == 0 && bus_seg_next(r, &rec) == 1) {
			touch(&rec);
			check(rec.offset >= at, "seek_time gave %" PRIu64 ", read %" PRIu64, at,
			      rec.offset);
		}
	}
}

/* A record at the writer's next offset. */
static int append_one(struct bus_seg_writer *w)
{
	struct {
		struct bus_frame f;
		uint8_t v[16];
	} fr;
	uint64_t off = bus_seg_writer_next_offset(w);

	memset(&fr, 0, sizeof(fr));
	fr.f.offset = off;
	fr.f.timestamp = 1000;
	fr.f.value_len = 13;
	memcpy(fr.v, "after fuzzing", 13);
	atomic_store_explicit(&fr.f.commit,
			      BUS_COMMIT(BUS_FRAME_DATA, BUS_FRAME_HDR + 16, off),
			      memory_order_relaxed);
	return bus_seg_append(w, &fr.f, off);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[BUS_SEG_NAME_MAX];
	struct bus_seg_reader *r;
	struct bus_seg_bounds b;
	struct bus_seg_hdr h;
	uint64_t base = 0, first;
	size_t n_idx, n_tidx, n_log;
	uint8_t flags, *log;
	unsigned n = 0;
	int rc;

	if (!dir[0])
		make_dir();
	if (size < 5)
		return 0;
	flags = data[0];
	n_idx = (size_t)data[1] | (size_t)data[2] << 8;
	n_tidx = (size_t)data[3] | (size_t)data[4] << 8;
	data += 5;
	size -= 5;
	if (n_idx > size)
		n_idx = size;
	if (n_tidx > size - n_idx)
		n_tidx = size - n_idx;
	n_log = size - n_idx - n_tidx;
	log = malloc(n_log ? n_log : 1);
	if (!log)
		die("malloc");
	memcpy(log, data + n_idx + n_tidx, n_log);
	if (flags & FL_FIX)
		fix_crcs(log, n_log);
	if (n_log >= BUS_SEG_HDR_SIZE) {
		memcpy(&h, log, sizeof(h));
		base = h.base_offset;
	}

	fuzz_empty_dir(dir);
	seg_name(name, base, "log");
	put_file(name, log, n_log);
	seg_name(name, base, "index");
	put_file(name, data, n_idx);
	seg_name(name, base, "timeindex");
	put_file(name, data + n_idx, n_tidx);
	if ((flags & FL_SEALED) && base < UINT64_MAX - (1u << 24)) {
		/* The active segment after it: a header alone, a gap of offsets
		 * between (read as lost). */
		memset(&h, 0, sizeof(h));
		h.magic = BUS_SEG_MAGIC;
		h.version = BUS_SEG_VERSION;
		h.hdr_size = BUS_SEG_HDR_SIZE;
		h.base_offset = base + (1u << 24);
		h.frame_hdr = BUS_FRAME_HDR;
		h.frame_align = BUS_FRAME_ALIGN;
		h.hdr_crc = hdr_crc(&h);
		seg_name(name, h.base_offset, "log");
		put_file(name, &h, sizeof(h));
	} else {
		flags &= (uint8_t)~FL_SEALED;
	}
	if (flags & FL_FLOOR) {
		uint8_t fl[2 * BUS_SEG_FLOOR_SLOT];
		size_t n_fl = n_idx < sizeof(fl) ? n_idx : sizeof(fl);
		uint64_t floor;

		memcpy(fl, data, n_fl);
		for (size_t at = 0; (flags & FL_FIX) && at + sizeof(struct bus_seg_floor_slot) <= n_fl;
		     at += BUS_SEG_FLOOR_SLOT) {
			struct bus_seg_floor_slot sl;

			memcpy(&sl, fl + at, sizeof(sl));
			sl.crc = 0;
			sl.crc = bus_crc32c(0, &sl, sizeof(sl));
			memcpy(fl + at, &sl, sizeof(sl));
		}
		put_file(BUS_SEG_FLOOR_FILE, fl, n_fl);
		(void)bus_seg_floor_read(dir, &floor);
	}
	setenv("BUS_REPLAY", flags & FL_MAP ? "map" : "read", 1);

	rc = bus_seg_bounds(dir, &b);
	if (rc == 0)
		check(b.next >= b.first || b.segments == 0, "bounds %" PRIu64 "..%" PRIu64, b.first,
		      b.next);
	(void)bus_seg_earliest(dir, &first);

	if (bus_seg_reader_open(&r, dir) == 0) {
		(void)read_all(r, &n);
		seeks(r, base, log, n_log);
		bus_seg_reader_close(r);
	}

	if (flags & FL_RECOVER) {
		struct bus_seg_opts o = {.segment_bytes = 1u << 20,
					 .index_interval = 256,
					 .verify_all = !!(flags & FL_VERIFY)};
		struct bus_seg_writer *w;

		rc = bus_seg_writer_open(&w, dir, &o);
		if (rc == 0 && (flags & FL_FLOOR)) {
			/* A raise reads back: no slot the file held hides it. */
			uint64_t f = bus_seg_writer_floor(w), got = 0;

			for (int k = 0; k < 3 && f < BUS_SEG_OFFSET_MAX; k++, f++) {
				rc = bus_seg_writer_floor_raise(w, f + 1, 0);
				check(rc == 0, "floor raise to %" PRIu64 ": %d", f + 1, rc);
				rc = bus_seg_floor_read(dir, &got);
				check(rc == 0 && got == f + 1,
				      "floor raised to %" PRIu64 " reads %" PRIu64 " (%d)", f + 1, got,
				      rc);
			}
			rc = 0;
		}
		if (rc == 0) {
			uint64_t next = bus_seg_writer_next_offset(w);

			rc = append_one(w);
			check(rc == 0, "append after recovery: %d", rc);
			rc = bus_seg_writer_close(w);
			check(rc == 0, "close after recovery: %d", rc);
			/* Recovered, the active segment reads whole: the reader
			 * reaches the record just appended. */
			rc = bus_seg_reader_open(&r, dir);
			check(rc == 0, "reader after recovery: %d", rc);
			rc = bus_seg_seek_offset(r, next);
			check(rc == 0, "seek to the appended record %" PRIu64 ": %d", next, rc);
			rc = read_all(r, &n);
			check(rc == 0 && n == 1, "read after recovery: rc %d, %u records", rc, n);
			if ((flags & FL_VERIFY) && !(flags & FL_SEALED)) {
				/* The whole active segment, from its start: checked
				 * whole, it holds no bad frame before a good one. */
				rc = bus_seg_seek_offset(r, 0);
				if (rc == -ERANGE)
					rc = bus_seg_seek_offset(r, base);
				if (rc == 0) {
					rc = read_all(r, &n);
					check(rc == 0 && n >= 1, "recovered log: rc %d, %u records",
					      rc, n);
				}
			}
			bus_seg_reader_close(r);
		}
	}
	if (flags & FL_RETAIN) {
		uint64_t earliest = 0;

		rc = bus_seg_retain(dir, INT64_MAX, 1, 1, &earliest);
		if (rc >= 0 && bus_seg_reader_open(&r, dir) == 0) {
			(void)read_all(r, &n);
			bus_seg_reader_close(r);
		}
	}
	free(log);
	return 0;
}

#ifndef BUS_LIBFUZZER
/* ------------------------------------------------- make test: a runner */

/* --seeds DIR: inputs from logs the real writer wrote. */
static void put_seed(const char *out, const char *nm, uint8_t flags, uint64_t base)
{
	char path[PATH_MAX + 64], name[BUS_SEG_NAME_MAX];
	uint8_t *parts[3];
	size_t lens[3];
	static const char *ext[3] = {"index", "timeindex", "log"};
	FILE *f;

	for (int i = 0; i < 3; i++) {
		seg_name(name, base, ext[i]);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (access(path, F_OK) == 0) {
			lens[i] = fuzz_slurp(path, &parts[i]);
		} else {
			lens[i] = 0;
			parts[i] = NULL;
		}
	}
	if (lens[0] > 0xffff || lens[1] > 0xffff) {
		fprintf(stderr, "seed %s: index too large\n", nm);
		exit(2);
	}
	snprintf(path, sizeof(path), "%s/%s", out, nm);
	f = fopen(path, "wb");
	if (!f)
		die(path);
	fputc(flags, f);
	fputc((int)(lens[0] & 0xff), f);
	fputc((int)(lens[0] >> 8), f);
	fputc((int)(lens[1] & 0xff), f);
	fputc((int)(lens[1] >> 8), f);
	for (int i = 0; i < 3; i++) {
		if (lens[i] && fwrite(parts[i], 1, lens[i], f) != lens[i])
			die(path);
		free(parts[i]);
	}
	if (fclose(f) != 0)
		die(path);
}

static void make_seeds(const char *out)
{
	struct {
		struct bus_frame f;
		uint8_t p[300];
	} fr;
	struct bus_seg_opts o = {.index_interval = 256, .first_offset = 42};
	struct bus_seg_writer *w;
	int rc;

	fuzz_empty_dir(dir);
	rc = bus_seg_writer_open(&w, dir, &o);
	if (rc)
		die("writer");
	for (uint64_t i = 0; i < 40; i++) {
		uint64_t off = bus_seg_writer_next_offset(w);
		uint32_t k = (uint32_t)(i % 3), hl = i % 5 == 0 ? 12 : 0, v = (uint32_t)(i * 7 % 150);
		uint32_t type = i % 11 == 10 ? BUS_FRAME_LOST : BUS_FRAME_DATA;
		uint32_t len = type == BUS_FRAME_LOST ? BUS_FRAME_HDR
						      : (BUS_FRAME_HDR + k + hl + v + 7) & ~7u;

		memset(&fr, 0, sizeof(fr));
		fr.f.offset = off;
		if (type == BUS_FRAME_DATA && i % 4 == 3) {
			/* A low-latency producer's slack (layout.h). */
			fr.f.slack = (uint16_t)(BUS_FRAME_ALIGN * (i % 8));
			len += fr.f.slack;
		}
		if (type == BUS_FRAME_DATA) {
			fr.f.timestamp = 1000000 + (int64_t)i * 1000;
			fr.f.key_len = k;
			fr.f.headers_len = hl;
			fr.f.header_count = hl ? 1 : 0;
			fr.f.value_len = v;
			for (uint32_t j = 0; j < k + hl + v; j++)
				fr.p[j] = (uint8_t)(i + j);
		}
		atomic_store_explicit(&fr.f.commit, BUS_COMMIT(type, len, off),
				      memory_order_relaxed);
		rc = bus_seg_append(w, &fr.f, off);
		if (rc)
			die("append");
	}
	if (bus_seg_writer_close(w))
		die("close");
	put_seed(out, "seed-active", FL_RECOVER, 42);
	put_seed(out, "seed-active-fix", FL_RECOVER | FL_FIX, 42);
	put_seed(out, "seed-active-verify", FL_RECOVER | FL_VERIFY, 42);
	put_seed(out, "seed-sealed-read", FL_SEALED, 42);
	put_seed(out, "seed-sealed-map", FL_SEALED | FL_MAP | FL_RECOVER, 42);
	put_seed(out, "seed-sealed-retain", FL_SEALED | FL_RETAIN | FL_FLOOR, 42);
}

int main(int argc, char **argv)
{
	int ran = 0;

	make_dir();
	if (argc == 3 && strcmp(argv[1], "--seeds") == 0) {
		make_seeds(argv[2]);
	} else {
		for (int i = 1; i < argc; i++)
			ran += fuzz_run_dir(argv[i]);
		printf("fuzz_segment: %d inputs, no failure\n", ran);
	}
	return 0;
}
#endif
