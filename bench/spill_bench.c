/* spill_bench.c - the disk path: sustained produce rate on a persistent
 * topic while busd spills it, then the replay rate of the same records from
 * the segment files, and busd's CPU time per GB spilled.
 *
 * usage: spill_bench spill DATA_DIR [BYTES [SIZE [RING]]]   (1 GiB, 1024, 16 MiB)
 *        spill_bench replay DATA_DIR
 *        spill_bench read DATA_DIR BUF [MAX]   (MAX 64)
 *        spill_bench warm MIB   (see warm())
 *
 * Each run starts $BUILD/bin/busd (BUSD overrides the path) on a private
 * bus in a new shared-memory folder, with its logs in DATA_DIR, and stops
 * it with SIGTERM at the end; busd rolls segments at 128 MiB (SEGMENT_MB:
 * a long log is mostly sealed segments, which readers map).
 *   spill   DATA_DIR must not exist.  One exclusive producer appends BYTES
 *           of SIZE-byte values to a 1-partition persistent topic with a
 *           RING-byte ring, as fast as the spiller lets it; the time runs
 *           until busd has written the last record out (spilled offset ==
 *           next offset).  busd's CPU time (utime + stime from /proc) over
 *           that span, per GB of log written.  DATA_DIR is left for the
 *           caller's reference run (dd writing as many bytes there).
 *   replay  DATA_DIR holds what a spill run left: busd recovers the topic
 *           from it (the shared memory is new: as after a reboot), then a
 *           consumer reads every record from the earliest offset, all from
 *           the segment files (warm in the page cache, as cat finds them),
 *           checking each value.
 *   read    as replay, but with bus_consumer_read(): up to MAX records a
 *           call into a buffer of BUF bytes, so that a BUF smaller than
 *           MAX records makes each call move the consumer back to the
 *           first record it could not copy (a move in the log on disk).
 * Prints:
 *   bus_spill bytes=.. log_bytes=.. secs=.. bytes_per_s=.. log_bytes_per_s=..
 *             busd_cpu_s=.. busd_cpu_s_per_gb=.. busd_sys_s=.. (its system part)
 *   bus_replay records=.. bytes=.. log_bytes=.. secs=.. bytes_per_s=.. log_bytes_per_s=..
 *   bus_replay_read records=.. buf=.. max=.. calls=.. secs=.. records_per_s=.. bytes_per_s=..
 *             method=..
 * (bytes: values; log_bytes: the .log files, frames and headers, which is
 * what dd and cat are compared with.)  busd stops with SIGTERM at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bus/bus.h>

#include "bench_util.h"
#include "segment.h" /* bus_seg_replay_method(): which way history was read */

#define SEGMENT_MB 128u

static char shm_dir[PATH_MAX], data_dir[PATH_MAX], bus_nm[64];
static pid_t busd = -1;

/* bench_die(), taking the busd we started down with us: left running, it
 * would hold the caller's pipes open (a script reading our output would
 * wait for ever) and spill into a folder nobody removes. */
#define die(...)                              \
	do {                                  \
		if (busd > 0)                 \
			kill(busd, SIGKILL);  \
		bench_die(__VA_ARGS__);       \
	} while (0)

static void check(int rc, const char *what)
{
	if (rc < 0)
		die("spill_bench: %s: %s (%d)", what, bus_strerror(rc), rc);
}

/* busd's CPU time in seconds, user + system; *sys gets the system part. */
static double busd_cpu_s(double *sys)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)busd);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof buf, f))
		die("spill_bench: %s: %s", path, strerror(errno));
	fclose(f);
	p = strrchr(buf, ')'); /* the command may hold spaces */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		die("spill_bench: cannot parse %s", path);
	*sys = (double)st / (double)sysconf(_SC_CLK_TCK);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A replay turn with no record: where the consumer stands (@*pos), and
 * death when it stood still for a second (@what names the mode). */
static void idle_turn(struct bus_consumer *c, uint64_t *pos, uint64_t *idle_since, uint64_t got,
		      uint64_t n, const char *what)
{
	uint64_t now = bench_now_ns();

	check(bus_consumer_position(c, 0, pos), "position");
	if (!*idle_since)
		*idle_since = now;
	else if (now - *idle_since > 1000000000ull)
		die("spill_bench: %s stalled at %" PRIu64 " of %" PRIu64, what, got, n);
}

/* Record @*got of a replay: its offset and the sequence number in its
 * value must both be @*got.  Counts it; returns its value's length. */
static uint64_t check_record(const char *what, uint64_t offset, const void *value, uint32_t len,
			     uint64_t *got)
{
	if (offset != *got || bench_load_seq(value) != *got)
		die("spill_bench: %s: record %" PRIu64 " is wrong", what, *got);
	++*got;
	return len;
}

/* The bytes of the .log files in @dir (by their sizes: reading them through
 * `cat | wc -c`, as before, took seconds per run for 2 GiB). */
static uint64_t log_bytes(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t n = 0;

	if (!d)
		die("spill_bench: sizing %s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		struct stat st;

		if (len < 5 || strcmp(e->d_name + len - 4, ".log") != 0)
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, 0) != 0)
			die("spill_bench: sizing %s/%s: %s", dir, e->d_name, strerror(errno));
		n += (uint64_t)st.st_size;
	}
	closedir(d);
	return n;
}

static void start_busd(struct bus *b)
{
	const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
	char bin[PATH_MAX], conf[PATH_MAX + 16];
	uint64_t deadline;
	FILE *f;

	if (getenv("BUSD"))
		snprintf(bin, sizeof bin, "%s", getenv("BUSD"));
	else
		snprintf(bin, sizeof bin, "%s/bin/busd", build);
	/* Segments of SEGMENT_MB: a log of gigabytes is mostly sealed
	 * segments, which readers map; even bench-quick's 512 MiB spans a few. */
	snprintf(conf, sizeof conf, "%s/busd.conf", shm_dir);
	f = fopen(conf, "w");
	if (!f || fprintf(f, "segment_bytes = %uM\n", SEGMENT_MB) < 0 || fclose(f))
		die("spill_bench: %s: %s", conf, strerror(errno));
	busd = fork();
	if (busd < 0)
		die("spill_bench: fork: %s", strerror(errno));
	if (busd == 0) {
		execl(bin, "busd", "--foreground", "--config", conf, (char *)NULL);
		fprintf(stderr, "spill_bench: %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	deadline = bench_now_ns() + 20000000000ull;
	while (bus_daemon_pid(b) != busd) {
		int st;
		if (waitpid(busd, &st, WNOHANG) == busd) {
			busd = -1; /* reaped: its pid may be anyone's now */
			die("spill_bench: busd exited at start");
		}
		if (bench_now_ns() > deadline)
			die("spill_bench: busd did not start in 20 s");
		usleep(1000);
	}
}

static struct bus *bus_up(void)
{
	struct bus_opts o;
	struct bus *b;

	snprintf(shm_dir, sizeof shm_dir, "/dev/shm/bus-spill-XXXXXX");
	if (!mkdtemp(shm_dir))
		die("spill_bench: mkdtemp: %s", strerror(errno));
	snprintf(bus_nm, sizeof bus_nm, "spill%d", (int)getpid());
	setenv("BUS_SHM_DIR", shm_dir, 1);
	setenv("BUS_DATA_DIR", data_dir, 1);
	setenv("BUS_NAME", bus_nm, 1);
	memset(&o, 0, sizeof o);
	o.name = bus_nm;
	o.shm_dir = shm_dir;
	o.data_dir = data_dir;
	check(bus_open(&b, &o), "bus_open");
	start_busd(b);
	return b;
}

static void bus_down(struct bus *b)
{
	char cmd[PATH_MAX + 16];
	int st;

	kill(busd, SIGTERM);
	if (waitpid(busd, &st, 0) != busd || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("spill_bench: busd did not stop cleanly");
	busd = -1;
	bus_close(b);
	snprintf(cmd, sizeof cmd, "rm -rf %s", shm_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "spill_bench: could not remove %s\n", shm_dir);
}

static int spill(uint64_t bytes, uint64_t size, uint64_t ring)
{
	struct bus_producer_opts po = { .flags = BUS_PRODUCER_EXCLUSIVE };
	struct bus_topic_config cfg;
	struct bus_partition_info pi;
	struct bus_producer *p;
	struct bus *b;
	char part_dir[PATH_MAX + 32];
	uint64_t n = bytes / size, t0, t1, lb;
	double cpu0, cpu1, sys0, sys1, secs;
	uint8_t *val;

	if (size < 24 || size > ring / 4)
		die("spill_bench: SIZE must be 24 .. RING/4");
	if (mkdir(data_dir, 0700))
		die("spill_bench: mkdir %s: %s (it must not exist)", data_dir, strerror(errno));
	b = bus_up();
	bus_topic_config_init(&cfg);
	cfg.ring_size = ring;
	check(bus_topic_create(b, "spill", &cfg), "topic create");
	check(bus_producer_open(b, "spill", &po, &p), "producer");
	val = malloc(size);
	if (!val)
		die("spill_bench: out of memory");
	bench_fill(val, size);

	cpu0 = busd_cpu_s(&sys0);
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		struct bus_record r = { .value = val, .value_len = (uint32_t)size, .timestamp = (int64_t)i + 1 };
		bench_store_seq(val, i);
		check(bus_produce(p, 0, &r, NULL, NULL), "produce");
	}
	for (;;) {
		check(bus_partition_describe(b, "spill", 0, &pi), "describe");
		if (pi.spilled_offset >= n)
			break;
		usleep(100);
	}
	t1 = bench_now_ns();
	cpu1 = busd_cpu_s(&sys1);
	secs = (double)(t1 - t0) / 1e9;
	snprintf(part_dir, sizeof part_dir, "%s/spill/0", data_dir);
	lb = log_bytes(part_dir);
	printf("bus_spill bytes=%" PRIu64 " log_bytes=%" PRIu64 " secs=%.4f bytes_per_s=%.0f "
	       "log_bytes_per_s=%.0f busd_cpu_s=%.3f busd_cpu_s_per_gb=%.3f busd_sys_s=%.3f\n",
	       n * size, lb, secs, (double)(n * size) / secs, (double)lb / secs, cpu1 - cpu0,
	       (cpu1 - cpu0) / ((double)lb / 1e9), sys1 - sys0);
	bus_producer_close(p);
	free(val);
	bus_down(b);
	return 0;
}

/* A replay's start: wait for busd to re-create the topic from its log (the
 * shared memory is new), check the log starts at offset 0, and open a
 * spinning consumer at the earliest record.  *n: the next offset. */
static struct bus_consumer *replay_open(struct bus *b, uint64_t *n)
{
	struct bus_consumer_opts co = { .partition = 0, .wait = BUS_WAIT_SPIN,
					.start = BUS_SEEK_EARLIEST };
	struct bus_topic_info ti;
	struct bus_partition_info pi;
	struct bus_consumer *c;
	uint64_t deadline = bench_now_ns() + 20000000000ull;

	while (bus_topic_describe(b, "spill", &ti) != 0) {
		if (bench_now_ns() > deadline)
			die("spill_bench: busd did not recover the topic from %s", data_dir);
		usleep(1000);
	}
	check(bus_partition_describe(b, "spill", 0, &pi), "describe");
	*n = pi.next_offset;
	if (!*n || pi.disk_first_offset != 0)
		die("spill_bench: %s holds no log from offset 0", data_dir);
	check(bus_consumer_open(b, "spill", &co, &c), "consumer");
	return c;
}

/* How the replay read sealed segments, for the results. */
static const char *replay_method(void)
{
	const char *m = bus_seg_replay_method(NULL), *e = getenv("BUS_REPLAY");

	return m ? m : e && *e ? e : "read";
}

static int replay(void)
{
	struct bus_consumer *c;
	struct bus_view v[64];
	struct bus *b = bus_up();
	char part_dir[PATH_MAX + 32];
	uint64_t n, got = 0, vbytes = 0, t0, t1, lb;
	double secs;

	c = replay_open(b, &n);
	snprintf(part_dir, sizeof part_dir, "%s/spill/0", data_dir);
	lb = log_bytes(part_dir);
	t0 = bench_now_ns();
	/* Up to the end of the log: the topic goes on at its offset floor,
	 * above the log's end (busd's recovery after a reboot skips the
	 * offsets in between), so the end is where the consumer's position
	 * reaches the next offset with no record left. */
	for (uint64_t pos = 0, idle_since = 0; pos < n;) {
		int k = bus_consumer_poll(c, v, 64, 0);
		check(k, "poll");
		if (k == 0) {
			idle_turn(c, &pos, &idle_since, got, n, "replay");
			continue;
		}
		idle_since = 0;
		for (int i = 0; i < k; i++)
			vbytes += check_record("replay", v[i].offset, v[i].value, v[i].value_len, &got);
		pos = got;
	}
	t1 = bench_now_ns();
	secs = (double)(t1 - t0) / 1e9;
	printf("bus_replay records=%" PRIu64 " bytes=%" PRIu64 " log_bytes=%" PRIu64
	       " secs=%.4f bytes_per_s=%.0f log_bytes_per_s=%.0f method=%s\n",
	       got, vbytes, lb, secs, (double)vbytes / secs, (double)lb / secs, replay_method());
	bus_consumer_close(c);
	bus_down(b);
	return 0;
}

/* The read mode (see the top): replay() through bus_consumer_read(). */
static int replay_read(uint64_t buf_len, uint64_t max)
{
	struct bus_consumer *c;
	struct bus_msg m[64];
	struct bus *b;
	uint8_t *buf;
	uint64_t n, got = 0, vbytes = 0, calls = 0, t0, t1;
	double secs;

	if (max < 1 || max > 64 || buf_len < 1)
		die("spill_bench: read: BUF must be at least 1 and MAX 1 .. 64");
	buf = malloc(buf_len);
	if (!buf)
		die("spill_bench: out of memory");
	b = bus_up();
	c = replay_open(b, &n);
	t0 = bench_now_ns();
	/* Up to the end of the log, as replay(). */
	for (uint64_t pos = 0, idle_since = 0; pos < n;) {
		int k = bus_consumer_read(c, m, (unsigned)max, buf, buf_len, 0);
		calls++;
		if (k == -EMSGSIZE)
			die("spill_bench: read: a record of %" PRIu32 " bytes: BUF too small",
			    m[0].value_len);
		check(k, "read");
		if (k == 0) {
			idle_turn(c, &pos, &idle_since, got, n, "read");
			continue;
		}
		idle_since = 0;
		for (int i = 0; i < k; i++)
			vbytes += check_record("read", m[i].offset, m[i].value, m[i].value_len, &got);
		pos = got;
	}
	t1 = bench_now_ns();
	secs = (double)(t1 - t0) / 1e9;
	printf("bus_replay_read records=%" PRIu64 " buf=%" PRIu64 " max=%" PRIu64 " calls=%" PRIu64
	       " secs=%.4f records_per_s=%.0f bytes_per_s=%.0f method=%s\n",
	       got, buf_len, max, calls, secs, (double)got / secs, (double)vbytes / secs,
	       replay_method());
	bus_consumer_close(c);
	bus_down(b);
	free(buf);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: spill_bench spill DATA_DIR [BYTES [SIZE [RING]]]\n"
			"       spill_bench replay DATA_DIR\n"
			"       spill_bench read DATA_DIR BUF [MAX]\n"
			"       spill_bench warm MIB\n");
	exit(2);
}

/*
 * warm() - touch MIB MiB of memory and give it back.  This VM returns the
 * guest's free pages to its host (virtio-balloon free page reporting), and
 * a writer whose page-cache pages the host must fault back in runs up to
 * ten times slower (dd of 512 MiB: 0.1 to 1.2 s).  run.sh warms the page
 * allocator this way before each writer, busd's spill and each dd alike,
 * so that both write at the speed of the page cache.
 */
static int warm(uint64_t mib)
{
	size_t n = (size_t)(mib << 20);
	uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("spill_bench: warm: %s", strerror(errno));
	for (size_t i = 0; i < n; i += 4096)
		p[i] = 1;
	munmap(p, n);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t bytes = 1ull << 30, size = 1024, ring = 16u << 20;

	if (argc < 3)
		usage();
	if (strcmp(argv[1], "warm") == 0 && argc == 3)
		return warm(bench_parse_u64(argv[2], "MIB"));
	snprintf(data_dir, sizeof data_dir, "%s", argv[2]);
	if (strcmp(argv[1], "replay") == 0) {
		if (argc != 3)
			usage();
		return replay();
	}
	if (strcmp(argv[1], "read") == 0) {
		if (argc < 4 || argc > 5)
			usage();
		return replay_read(bench_parse_u64(argv[3], "BUF"),
				   argc > 4 ? bench_parse_u64(argv[4], "MAX") : 64);
	}
	if (strcmp(argv[1], "spill") != 0 || argc > 6)
		usage();
	if (argc > 3)
		bytes = bench_parse_u64(argv[3], "BYTES");
	if (argc > 4)
		size = bench_parse_u64(argv[4], "SIZE");
	if (argc > 5)
		ring = bench_parse_u64(argv[5], "RING");
	return spill(bytes, size, ring);
}
