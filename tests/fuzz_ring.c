/* fuzz_ring.c - a partition ring from hostile bytes: what a consumer (and a
 * producer) reads from shared memory that another process wrote must give an
 * error, a gap or whole records, never a crash, a hang or a view outside its
 * record.
 *
 * One input is the shared part of a ring of BUS_RING_MIN bytes, written
 * over a real topic's ring (the identity line stays the creator's: a bad
 * one is refused at open, test_safety.c):
 *   byte 0                     flags (FL_*)
 *   16 bytes                   tail {pos, off}
 *   8 bytes                    horizon
 *   BUS_CKPT_N * 16 bytes      checkpoints {pos, off}
 *   the rest, up to the ring   the frames (what is missing reads as zeros)
 * Then a consumer opens at the earliest (FL_LATEST: the latest) record and
 * polls (FL_COPY: reads with copies) until it has nothing more, walking every
 * byte and header of what it gets; seeks by offset and by time; polls again.
 * FL_PRODUCE first appends a record, as a producer would over such a ring
 * (FL_LOWLAT: a BUS_PRODUCER_LOW_LATENCY one, whose frame takes slack).
 *
 * Built like fuzz_segment.c: make fuzz runs it under libFuzzer, make test
 * replays tests/fuzz/ring/ (seeds from rings real producers filled, made
 * by --seeds DIR, and inputs that once failed).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

#include <bus/bus.h>

#include "fuzz_util.h"
#include "layout.h"

#define FL_LATEST 0x01u
#define FL_COPY 0x02u
#define FL_PRODUCE 0x04u
#define FL_LOWLAT 0x08u

#define HDR_IN (1 + 16 + 8 + BUS_CKPT_N * 16)
#define MAX_POLLS 4096 /* a ring of 64 KiB holds at most 1366 frames */

static char shm_dir[PATH_MAX], data_dir[PATH_MAX];
static struct bus *b;
static uint8_t *ring;  /* the data, then the header */
static struct bus_ring_hdr *rh;
static uint8_t copybuf[2 * BUS_RING_MIN];

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz_ring: %s: %s\n", what, err ? bus_strerror(err) : strerror(errno));
	exit(2);
}

static void cleanup(void)
{
	if (b)
		bus_close(b);
	b = NULL;
	fuzz_rm_dir(shm_dir);
	fuzz_rm_dir(data_dir);
}

/* The bus, the topic "f" (ephemeral, overwrite, one ring of BUS_RING_MIN)
 * and a mapping of its ring, once per process. */
static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	struct bus_opts o = { .name = "fuzz" };
	char path[PATH_MAX + 64];
	int fd, err;

	snprintf(shm_dir, sizeof(shm_dir), "%s/bus-fuzz-shm-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	snprintf(data_dir, sizeof(data_dir), "%s/bus-fuzz-data-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(shm_dir) || !mkdtemp(data_dir))
		die("mkdtemp", 0);
	atexit(cleanup);
	o.shm_dir = shm_dir;
	setenv("BUS_DATA_DIR", data_dir, 1);
	err = bus_open(&b, &o);
	if (err)
		die("bus_open", err);
	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.overflow = BUS_OVERFLOW_OVERWRITE;
	err = bus_topic_create(b, "f", &cfg);
	if (!err)
		err = bus_topic_describe(b, "f", &ti);
	if (err)
		die("topic", err);
	snprintf(path, sizeof(path), "%s/bus.fuzz.f.%u.0", shm_dir, ti.generation);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die(path, 0);
	ring = mmap(NULL, BUS_RING_MIN + BUS_RING_HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		    0);
	close(fd);
	if (ring == MAP_FAILED)
		die("mmap", 0);
	rh = (struct bus_ring_hdr *)(void *)(ring + BUS_RING_MIN);
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static void load(const uint8_t *data, size_t size)
{
	size_t n = size - HDR_IN;

	atomic_store_explicit(&rh->tail.pos, rd64(data + 1), memory_order_relaxed);
	atomic_store_explicit(&rh->tail.off, rd64(data + 9), memory_order_relaxed);
	atomic_store_explicit(&rh->horizon, rd64(data + 17), memory_order_relaxed);
	for (unsigned i = 0; i < BUS_CKPT_N; i++) {
		atomic_store_explicit(&rh->ckpt[i].pos, rd64(data + 25 + i * 16),
				      memory_order_relaxed);
		atomic_store_explicit(&rh->ckpt[i].off, rd64(data + 33 + i * 16),
				      memory_order_relaxed);
	}
	if (n > BUS_RING_MIN)
		n = BUS_RING_MIN;
	memcpy(ring, data + HDR_IN, n);
	memset(ring + n, 0, BUS_RING_MIN - n);
}

/* Every byte of a record and its headers, so that a view outside the ring
 * or the copy buffer is caught. */
static uint64_t touch(const void *key, uint32_t klen, const void *val, uint32_t vlen,
		      const void *hdrs, uint32_t hlen)
{
	const uint8_t *k = key, *v = val, *h = hdrs;
	uint64_t s = 0;

	for (uint32_t i = 0; i < klen; i++)
		s += k[i];
	for (uint32_t i = 0; i < vlen; i++)
		s += v[i];
	for (uint32_t i = 0; i < hlen; i++)
		s += h[i];
	return s;
}

static uint64_t touch_view(const struct bus_view *v)
{
	uint64_t s = touch(v->key, v->key_len, v->value, v->value_len, v->headers, v->headers_len);

	for (uint32_t i = 0; i < v->header_count && i < 4096; i++) {
		struct bus_header h;

		if (bus_view_header(v, i, &h) != 0)
			break;
		s += touch(h.name, h.name_len, h.value, h.value_len, NULL, 0);
	}
	return s;
}

/* Poll (or read) until nothing more: offsets rise.  Returns the timestamp
 * of a record seen (0: none). */
static int64_t drain(struct bus_consumer *c, bool copy)
{
	struct bus_view v[64];
	struct bus_msg m[64];
	uint64_t last = 0;
	int64_t ts = 0;
	bool any = false;

	for (int i = 0; i < MAX_POLLS; i++) {
		int n = copy ? bus_consumer_read(c, m, 64, copybuf, sizeof(copybuf), 0)
			     : bus_consumer_poll(c, v, 64, 0);

		if (n <= 0)
			return ts;
		for (int j = 0; j < n; j++) {
			uint64_t off = copy ? m[j].offset : v[j].offset;

			check(!any || off > last, "offset %" PRIu64 " after %" PRIu64, off, last);
			any = true;
			last = off;
			if (copy) {
				touch(m[j].key, m[j].key_len, m[j].value, m[j].value_len,
				      m[j].headers, m[j].headers_len);
				ts = m[j].timestamp;
			} else {
				touch_view(&v[j]);
				ts = v[j].timestamp;
			}
		}
		if (!copy)
			(void)bus_consumer_check(c, v, (unsigned)n);
	}
	return ts;
}

static void produce_one(bool lowlat)
{
	struct bus_header h = { .name = "h", .name_len = 1, .value = "v", .value_len = 1 };
	struct bus_record r = { .key = "k", .key_len = 1, .value = "fuzz", .value_len = 4,
				.headers = &h, .header_count = 1 };
	struct bus_producer_opts po = { .flags = lowlat ? BUS_PRODUCER_LOW_LATENCY : 0 };
	struct bus_producer *p;

	if (bus_producer_open(b, "f", &po, &p) == 0) {
		(void)bus_produce(p, 0, &r, NULL, NULL);
		bus_producer_close(p);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bus_consumer_opts co = { .partition = 0, .wait = BUS_WAIT_SPIN };
	struct bus_consumer *c;
	uint8_t flags;
	int64_t ts;

	if (!b)
		setup();
	if (size < HDR_IN)
		return 0;
	flags = data[0];
	load(data, size);
	if (flags & FL_PRODUCE)
		produce_one(flags & FL_LOWLAT);
	co.start = flags & FL_LATEST ? BUS_SEEK_LATEST : BUS_SEEK_EARLIEST;
	if (bus_consumer_open(b, "f", &co, &c) != 0)
		return 0;
	ts = drain(c, flags & FL_COPY);
	{
		uint64_t tail_off = rd64(data + 9) & ~BUS_TAIL_EXCL;
		int64_t offs[] = { 0, (int64_t)tail_off, (int64_t)tail_off - 1,
				   (int64_t)tail_off - 100, INT64_MAX };
		int64_t times[] = { 0, ts, ts + 1, INT64_MAX, INT64_MIN };

		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++)
			if (bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, offs[i]) == 0)
				drain(c, !(flags & FL_COPY));
		for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++)
			if (bus_consumer_seek(c, 0, BUS_SEEK_TIME, times[i]) == 0)
				drain(c, flags & FL_COPY);
	}
	bus_consumer_close(c);
	return 0;
}

#ifndef BUS_LIBFUZZER
/* ------------------------------------------------- make test: a runner */

/* The ring as producers left it, as an input. */
static void put_seed(const char *out, const char *nm, uint8_t flags)
{
	char path[PATH_MAX + 64];
	uint8_t hdr[HDR_IN];
	FILE *f;

	hdr[0] = flags;
	for (unsigned i = 0; i < 2; i++) {
		uint64_t v = atomic_load(i ? &rh->tail.off : &rh->tail.pos);
		memcpy(hdr + 1 + i * 8, &v, 8);
	}
	{
		uint64_t v = atomic_load(&rh->horizon);
		memcpy(hdr + 17, &v, 8);
	}
	for (unsigned i = 0; i < BUS_CKPT_N; i++) {
		uint64_t p = atomic_load(&rh->ckpt[i].pos), o = atomic_load(&rh->ckpt[i].off);
		memcpy(hdr + 25 + i * 16, &p, 8);
		memcpy(hdr + 33 + i * 16, &o, 8);
	}
	snprintf(path, sizeof(path), "%s/%s", out, nm);
	f = fopen(path, "wb");
	if (!f || fwrite(hdr, 1, sizeof(hdr), f) != sizeof(hdr) ||
	    fwrite(ring, 1, BUS_RING_MIN, f) != BUS_RING_MIN || fclose(f) != 0)
		die(path, 0);
}

static void produce_mix(struct bus_producer *p, unsigned n, unsigned seed)
{
	static uint8_t val[3000];
	struct bus_header h[2] = { { .name = "trace", .name_len = 5, .value = "abc", .value_len = 3 },
				   { .name = "x", .name_len = 1, .value = "", .value_len = 0 } };

	for (unsigned i = 0; i < n; i++) {
		unsigned k = (i * 7 + seed) % 13;
		struct bus_record r = { .value = val, .value_len = (i * 37 + seed) % 3000,
					.key = k ? "key-abcdefghijkl" : NULL, .key_len = k,
					.headers = h, .header_count = i % 3 };
		int err;

		for (uint32_t j = 0; j < r.value_len; j++)
			val[j] = (uint8_t)(i + j);
		r.timestamp = 1000000000 + (int64_t)i * 1000;
		err = bus_produce(p, 0, &r, NULL, NULL);
		if (err)
			die("produce", err);
	}
}

static void make_seeds(const char *out)
{
	struct bus_producer *p;
	int err = bus_producer_open(b, "f", NULL, &p);

	if (err)
		die("producer", err);
	produce_mix(p, 20, 1);
	put_seed(out, "seed-fresh", 0);
	put_seed(out, "seed-fresh-copy", FL_COPY | FL_PRODUCE);
	produce_mix(p, 400, 2); /* wraps the ring several times */
	put_seed(out, "seed-wrapped", 0);
	put_seed(out, "seed-wrapped-latest-copy", FL_LATEST | FL_COPY);
	bus_producer_close(p);
	/* Frames with slack, lapping dense ones. */
	{
		struct bus_producer_opts po = { .flags = BUS_PRODUCER_LOW_LATENCY };
		if ((err = bus_producer_open(b, "f", &po, &p)) != 0)
			die("producer", err);
	}
	produce_mix(p, 150, 3);
	put_seed(out, "seed-lines", FL_PRODUCE | FL_LOWLAT);
	put_seed(out, "seed-lines-copy", FL_COPY);
	bus_producer_close(p);
}

int main(int argc, char **argv)
{
	int ran = 0;

	setup();
	if (argc == 3 && strcmp(argv[1], "--seeds") == 0) {
		make_seeds(argv[2]);
		return 0;
	}
	for (int i = 1; i < argc; i++)
		ran += fuzz_run_dir(argv[i]);
	printf("fuzz_ring: %d inputs, no failure\n", ran);
	return 0;
}
#endif
