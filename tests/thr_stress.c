/* thr_stress.c - threads of one process on one bus: the topic cache (RCU
 * hash table) under concurrent create/open/delete, and concurrent and
 * exclusive producers with gating consumers on one partition; readers of
 * one segment log in several threads, which race to measure read against
 * map and share the SIGBUS guard's slots (segment.c, mapguard.c).
 *
 * A plain program (no Criterion) so that it runs under ThreadSanitizer too:
 * Criterion's runner cannot start under TSan (Snaipe/Criterion#274), and
 * TSan sees races between threads of one process only, which is what this
 * exercises.  Exits 0 when every check passed; prints the first failure. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segment.h"
#include "util.h"

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "thr_stress: %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                         \
			fputc('\n', stderr);                                  \
			exit(1);                                              \
		}                                                             \
	} while (0)

static struct bus *tb; /* this program's bus */

/* --------------------------------------------------------- topic cache */

static _Atomic int cache_go;

static void *cache_worker(void *arg)
{
	long id = (long)arg;
	char name[32];

	while (!atomic_load(&cache_go))
		;
	for (int i = 0; i < 300; i++) {
		struct bus_topic_config cfg;
		struct bus_producer *p;
		struct bus_consumer *c;
		int err;

		bus_topic_config_init(&cfg);
		cfg.ring_size = BUS_RING_MIN;
		cfg.flags = BUS_TOPIC_EPHEMERAL;
		/* Half the names are shared by all threads, half are ours. */
		if (i % 2)
			snprintf(name, sizeof(name), "shared%d", i % 7);
		else
			snprintf(name, sizeof(name), "own%ld-%d", id, i % 5);
		err = bus_topic_create(tb, name, &cfg);
		CHECK(err == 0, "create %s: %s", name, bus_strerror(err));
		err = bus_producer_open(tb, name, NULL, &p);
		if (err == -ENOENT || err == -BUS_ESTALE)
			continue; /* deleted by another thread meanwhile */
		CHECK(err == 0, "producer %s: %s", name, bus_strerror(err));
		err = bus_consumer_open(tb, name, NULL, &c);
		CHECK(err == 0 || err == -ENOENT, "consumer %s: %s", name, bus_strerror(err));
		if (!err) {
			struct bus_record r = { .value = "x", .value_len = 1 };
			struct bus_view v;
			int e2 = bus_produce(p, 0, &r, NULL, NULL);
			CHECK(e2 == 0 || e2 == -BUS_ESTALE, "produce: %s", bus_strerror(e2));
			e2 = bus_consumer_poll(c, &v, 1, 0);
			CHECK(e2 >= 0 || e2 == -BUS_ESTALE, "poll: %s", bus_strerror(e2));
			bus_consumer_close(c);
		}
		bus_producer_close(p);
		if (i % 10 == 9) {
			err = bus_topic_delete(tb, name);
			CHECK(err == 0 || err == -ENOENT, "delete: %s", bus_strerror(err));
		}
	}
	return NULL;
}

static void test_topic_cache(void)
{
	pthread_t th[6];

	for (long i = 0; i < 6; i++)
		pthread_create(&th[i], NULL, cache_worker, (void *)i);
	atomic_store(&cache_go, 1);
	for (int i = 0; i < 6; i++)
		pthread_join(th[i], NULL);
	printf("ok topic cache: 6 threads create/open/produce/poll/delete\n");
}

/* ------------------------------------------------------------ one log */

#define NPROD 3
#define PAYLOAD 48

struct rec {
	uint32_t producer;
	uint32_t seq;
	uint64_t sum;
	uint8_t payload[PAYLOAD];
};

struct pjob {
	int id;
	int records;
	unsigned flags;
	pthread_barrier_t *start;
};

static void *producer_thread(void *arg)
{
	struct pjob *j = arg;
	struct bus_producer_opts po = { .flags = j->flags };
	struct bus_producer *p;
	struct rec r;
	int err = bus_producer_open(tb, "log", &po, &p);

	CHECK(err == 0, "producer open: %s", bus_strerror(err));
	pthread_barrier_wait(j->start);
	for (int i = 0; i < j->records; i++) {
		struct bus_record br = { .value = &r, .value_len = sizeof(r) };
		r.producer = (uint32_t)j->id;
		r.seq = (uint32_t)i;
		for (int k = 0; k < PAYLOAD; k++)
			r.payload[k] = (uint8_t)(i + k * 3 + j->id);
		r.sum = tsum(r.payload, PAYLOAD);
		err = bus_produce(p, 0, &br, NULL, NULL);
		CHECK(err == 0, "produce: %s", bus_strerror(err));
	}
	bus_producer_close(p);
	return NULL;
}

struct cjob {
	int total;
	enum bus_wait wait;
	struct bus_consumer *c;
	pthread_barrier_t *start;
};

static void *consumer_thread(void *arg)
{
	struct cjob *j = arg;
	struct bus_view v[64];
	uint32_t next[NPROD] = { 0 };
	uint64_t expect = 0;

	pthread_barrier_wait(j->start);
	while (expect < (uint64_t)j->total) {
		int n = bus_consumer_poll(j->c, v, 64, 10000000000ll);
		CHECK(n > 0, "poll: %d (%s) at offset %lu", n, n < 0 ? bus_strerror(n) : "timeout",
		      (unsigned long)expect);
		for (int i = 0; i < n; i++) {
			const struct rec *r = v[i].value;
			CHECK(v[i].offset == expect, "offset %lu, expected %lu",
			      (unsigned long)v[i].offset, (unsigned long)expect);
			CHECK(v[i].lost_before == 0, "lost %lu", (unsigned long)v[i].lost_before);
			CHECK(r->producer < NPROD && r->seq == next[r->producer]++, "order");
			CHECK(tsum(r->payload, PAYLOAD) == r->sum, "checksum");
			expect++;
		}
		CHECK(bus_consumer_check(j->c, v, (unsigned)n) == n, "check");
	}
	return NULL;
}

static void test_one_log(int nprod, int per, unsigned pflags, const char *what)
{
	struct bus_topic_config cfg;
	pthread_t pt[NPROD], ct[2];
	struct pjob pj[NPROD];
	struct cjob cj[2];
	pthread_barrier_t start;
	int err;

	bus_topic_config_init(&cfg);
	cfg.ring_size = 64 * 1024;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	err = bus_topic_create(tb, "log", &cfg);
	CHECK(err == 0, "create: %s", bus_strerror(err));
	pthread_barrier_init(&start, NULL, (unsigned)(nprod + 2));
	for (int i = 0; i < 2; i++) {
		struct bus_consumer_opts co = { .partition = 0, .flags = BUS_CONSUMER_GATING,
						.wait = i ? BUS_WAIT_SLEEP : BUS_WAIT_YIELD };
		cj[i] = (struct cjob){ .total = nprod * per, .start = &start };
		err = bus_consumer_open(tb, "log", &co, &cj[i].c);
		CHECK(err == 0, "consumer: %s", bus_strerror(err));
		pthread_create(&ct[i], NULL, consumer_thread, &cj[i]);
	}
	for (int i = 0; i < nprod; i++) {
		pj[i] = (struct pjob){ .id = i, .records = per, .flags = pflags, .start = &start };
		pthread_create(&pt[i], NULL, producer_thread, &pj[i]);
	}
	for (int i = 0; i < nprod; i++)
		pthread_join(pt[i], NULL);
	for (int i = 0; i < 2; i++) {
		pthread_join(ct[i], NULL);
		bus_consumer_close(cj[i].c);
	}
	pthread_barrier_destroy(&start);
	CHECK(bus_topic_delete(tb, "log") == 0, "delete");
	printf("ok %s: %d x %d records, 2 gating consumers, each saw all in order\n", what, nprod,
	       per);
}

/* ------------------------------------------------------ replay threads */

#define REPLAY_VALUE 1000u

static char replay_dir[300];
static uint64_t replay_n;
static pthread_barrier_t replay_start;

static void *replay_reader(void *arg)
{
	struct bus_seg_reader *r;
	struct bus_seg_record rec;
	uint64_t off = 0;
	int err;

	(void)arg;
	err = bus_seg_reader_open(&r, replay_dir);
	CHECK(err == 0, "reader: %s", bus_strerror(err));
	pthread_barrier_wait(&replay_start);
	while ((err = bus_seg_next(r, &rec)) == 1) {
		uint64_t v;

		CHECK(rec.offset == off && rec.value_len == REPLAY_VALUE, "record %llu",
		      (unsigned long long)off);
		memcpy(&v, rec.value, 8);
		CHECK(v == off, "record %llu holds %llu", (unsigned long long)off,
		      (unsigned long long)v);
		off++;
	}
	CHECK(err == 0 && off == replay_n, "read %llu of %llu: %s", (unsigned long long)off,
	      (unsigned long long)replay_n, bus_strerror(err));
	bus_seg_reader_close(r);
	return NULL;
}

static void test_replay_threads(const char *data, uint64_t n)
{
	struct bus_seg_opts so = { .segment_bytes = 4u << 20 };
	static _Alignas(64) uint8_t fb[BUS_FRAME_HDR + REPLAY_VALUE + 8];
	struct bus_seg_writer *w;
	pthread_t th[4];
	uint64_t cost[2];
	const char *m;
	int err;

	unsetenv("BUS_REPLAY");
	snprintf(replay_dir, sizeof(replay_dir), "%s/replay/0", data);
	err = bus_seg_writer_open(&w, replay_dir, &so);
	CHECK(err == 0, "writer: %s", bus_strerror(err));
	for (uint64_t off = 0; off < n; off++) {
		struct bus_frame *f = (struct bus_frame *)(void *)fb;
		uint32_t len = (BUS_FRAME_HDR + REPLAY_VALUE + 7) & ~7u;

		memset(fb, 0, sizeof(fb));
		atomic_store_explicit(&f->commit, BUS_COMMIT(BUS_FRAME_DATA, len, off),
				      memory_order_relaxed);
		atomic_store_explicit(&f->claim, BUS_CLAIM(1, off), memory_order_relaxed);
		f->offset = off;
		f->timestamp = 1;
		f->value_len = REPLAY_VALUE;
		memcpy(fb + BUS_FRAME_HDR, &off, 8);
		err = bus_seg_append(w, f, off);
		CHECK(err == 0, "append %llu: %s", (unsigned long long)off, bus_strerror(err));
	}
	CHECK(bus_seg_writer_close(w) == 0, "writer close");
	replay_n = n;
	/* By default (they race to measure), then mapped (the guard's slots
	 * taken and freed by four threads at once). */
	for (int pass = 0; pass < 2; pass++) {
		if (pass)
			setenv("BUS_REPLAY", "map", 1);
		pthread_barrier_init(&replay_start, NULL, 4);
		for (int i = 0; i < 4; i++)
			pthread_create(&th[i], NULL, replay_reader, NULL);
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&replay_start);
	}
	unsetenv("BUS_REPLAY");
	m = bus_seg_replay_method(cost);
	CHECK(m, "4 MiB sealed segments are long enough to measure");
	printf("ok replay threads: 4 readers x %llu records, by default (method %s (read %llu ns, map %llu ns "
	       "per 256 KiB), then mapped\n",
	       (unsigned long long)n, m, (unsigned long long)cost[0], (unsigned long long)cost[1]);
}

int main(void)
{
	char shm[] = "/dev/shm/bus-thr-XXXXXX", data[] = "/tmp/bus-thr-XXXXXX", cmd[128];
	struct bus_opts o = { .name = "thr" };
	int err, scale = tstress() ? 10 : 1;

	CHECK(mkdtemp(shm) && mkdtemp(data), "mkdtemp");
	o.shm_dir = shm;
	o.data_dir = data;
	err = bus_open(&tb, &o);
	CHECK(err == 0, "bus_open: %s", bus_strerror(err));
	test_topic_cache();
	test_one_log(NPROD, 20000 * scale, 0, "concurrent producers");
	test_one_log(1, 50000 * scale, BUS_PRODUCER_EXCLUSIVE, "exclusive producer");
	test_replay_threads(data, 20000u * (uint64_t)scale);
	bus_close(tb);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", shm, data);
	return system(cmd) == 0 ? 0 : 1;
}
