/* test_hugepages.c - rings on hugetlbfs: a private mount over a pool of
 * 2 MiB pages raised for the test, hugepages reported by
 * bus_partition_describe(), records carried across a wrap, -ENOSPC (never
 * SIGBUS) when the pool is short, and bus_default_shm_dir() picking the
 * mount.
 *
 * Needs root (vm.nr_hugepages, mount).  One such test runs at a time on the
 * host: each holds an flock on /proc/sys/vm/nr_hugepages from before it
 * reads the pool until it has restored it.  The pool, the mount and its
 * folder are restored by the suite's .fini, and by hand before a skip
 * (Criterion does not run .fini after cr_skip). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "layout.h"
#include "util.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

#define NR_PATH "/proc/sys/vm/nr_hugepages"
#define HUGE_PAGE (2ull << 20)
#define LOCK_MS 100000 /* another hugepages test holds the pool at most this long */
#define CHILD_MS 30000


static struct {
	int lock_fd;    /* flock on NR_PATH, or -1 */
	long saved_nr;  /* vm.nr_hugepages to restore, or -1 */
	char mnt[64];   /* the mount's folder, or "" */
	bool mounted;
	struct bus *b;
} hp;

static void setup(void)
{
	tenv_init(&env);
	hp.lock_fd = -1;
	hp.saved_nr = -1;
	hp.mnt[0] = 0;
	hp.mounted = false;
	hp.b = NULL;
}

static int rm_below(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	return ftw->level == 0 ? 0 : remove(path);
}

static bool write_nr(long n)
{
	FILE *f = fopen(NR_PATH, "w");
	bool ok;

	if (!f)
		return false;
	ok = fprintf(f, "%ld\n", n) > 0;
	return fclose(f) == 0 && ok;
}

static long read_nr(void)
{
	FILE *f = fopen(NR_PATH, "r");
	long n = -1;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

/* Undo whatever the test set up, in reverse order.  Idempotent. */
static void teardown(void)
{
	if (hp.b) {
		bus_close(hp.b);
		hp.b = NULL;
	}
	if (hp.mounted) {
		nftw(hp.mnt, rm_below, 16, FTW_DEPTH | FTW_PHYS);
		if (umount2(hp.mnt, 0) < 0)
			umount2(hp.mnt, MNT_DETACH);
		hp.mounted = false;
	}
	if (hp.mnt[0]) {
		rmdir(hp.mnt);
		hp.mnt[0] = 0;
	}
	if (hp.saved_nr >= 0) {
		write_nr(hp.saved_nr);
		hp.saved_nr = -1;
	}
	if (hp.lock_fd >= 0) {
		close(hp.lock_fd);
		hp.lock_fd = -1;
	}
	tenv_fini(&env);
}

TestSuite(hugepages, .init = setup, .fini = teardown, .timeout = 240);

/* A value in kB or pages from /proc/meminfo, or -1. */
static long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	size_t kl = strlen(key);
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Huge pages free and not promised to a mapping yet. */
static long pool_avail(void)
{
	return meminfo("HugePages_Free") - meminfo("HugePages_Rsvd");
}

static uint64_t pages_for(uint64_t bytes)
{
	return (bytes + HUGE_PAGE - 1) / HUGE_PAGE;
}

/* Pages a bus with one topic of @parts partitions of @ring bytes takes. */
static long pages_needed(uint32_t parts, uint64_t ring)
{
	return (long)(pages_for(BUS_CTL_SIZE) + parts * pages_for(ring + BUS_RING_HDR_SIZE));
}

#define SKIP(...)                         \
	do {                              \
		teardown();               \
		cr_skip(__VA_ARGS__);     \
	} while (0)

/* Raise the pool by @need free 2 MiB pages, mount hugetlbfs on a private
 * folder and point the test's bus there; skip (saying why) when this host
 * cannot. */
static void hp_prepare(long need)
{
	int64_t deadline = tnow_ms() + LOCK_MS;
	long pagesz, saved, avail;

	if (geteuid() != 0)
		SKIP("hugepages: needs root to raise vm.nr_hugepages and mount hugetlbfs "
		     "(running as uid %d)",
		     (int)geteuid());
	pagesz = meminfo("Hugepagesize");
	if (pagesz != 2048)
		SKIP("hugepages: the default huge page size is %ld kB, these tests count in "
		     "2048 kB pages",
		     pagesz);
	hp.lock_fd = open(NR_PATH, O_RDONLY | O_CLOEXEC);
	if (hp.lock_fd < 0)
		SKIP("hugepages: cannot open %s: %s", NR_PATH, strerror(errno));
	while (flock(hp.lock_fd, LOCK_EX | LOCK_NB) < 0) {
		cr_assert(errno == EWOULDBLOCK, "flock %s: %s", NR_PATH, strerror(errno));
		cr_assert(tnow_ms() < deadline,
			  "another process held the huge-page pool lock (flock on %s) for %d s",
			  NR_PATH, LOCK_MS / 1000);
		usleep(10000);
	}
	saved = read_nr();
	if (saved < 0)
		SKIP("hugepages: cannot read %s", NR_PATH);
	hp.saved_nr = saved; /* from here on, teardown() restores it */
	if (!write_nr(saved + need))
		SKIP("hugepages: cannot raise vm.nr_hugepages from %ld to %ld: %s", saved,
		     saved + need, strerror(errno));
	avail = pool_avail();
	if (avail < need)
		SKIP("hugepages: asked for %ld more 2 MiB pages (vm.nr_hugepages %ld -> %ld, now "
		     "%ld) but only %ld are free and unreserved (HugePages_Free %ld, "
		     "HugePages_Rsvd %ld): memory too small or too fragmented",
		     need, saved, saved + need, read_nr(), avail, meminfo("HugePages_Free"),
		     meminfo("HugePages_Rsvd"));
	snprintf(hp.mnt, sizeof(hp.mnt), "/tmp/bus-hugetlbfs-XXXXXX");
	if (!mkdtemp(hp.mnt)) {
		hp.mnt[0] = 0;
		SKIP("hugepages: mkdtemp: %s", strerror(errno));
	}
	if (mount("none", hp.mnt, "hugetlbfs", 0, "pagesize=2M") < 0)
		SKIP("hugepages: mount -t hugetlbfs -o pagesize=2M none %s: %s", hp.mnt,
		     strerror(errno));
	hp.mounted = true;
	env.opts.shm_dir = hp.mnt;
	setenv("BUS_SHM_DIR", hp.mnt, 1);
}

static char logged[2048];

static void log_cb(void *ctx, enum bus_log_level lvl, const char *msg)
{
	size_t n = strlen(logged);

	(void)ctx;
	(void)lvl;
	snprintf(logged + n, sizeof(logged) - n, "%s\n", msg);
}

static void open_bus(void)
{
	int err;

	env.opts.log = log_cb;
	err = bus_open(&hp.b, &env.opts);
	cr_assert_eq(err, 0, "bus_open on hugetlbfs %s: %d (%s)", hp.mnt, err, bus_strerror(err));
}

static int mk_topic(const char *name, uint32_t parts, uint64_t ring)
{
	struct bus_topic_config cfg;

	bus_topic_config_init(&cfg);
	cfg.partitions = parts;
	cfg.ring_size = ring;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	return bus_topic_create(hp.b, name, &cfg);
}

/* Files in the mount whose names contain @part. */
static int files_with(const char *part)
{
	DIR *d = opendir(hp.mnt);
	struct dirent *e;
	int n = 0;

	cr_assert(d, "opendir %s: %s", hp.mnt, strerror(errno));
	while ((e = readdir(d)) != NULL)
		if (strstr(e->d_name, part))
			n++;
	closedir(d);
	return n;
}

Test(hugepages, topic_on_hugetlbfs_reports_hugepages_and_carries_records_across_a_wrap)
{
	const uint64_t ring = 2ull << 20;
	struct bus_partition_info pi;
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_msg m[64];
	static uint8_t val[1000], buf[64 * 1000];
	char path[4300];
	struct stat st;
	long before;
	uint64_t next = 0;
	int err;

	hp_prepare(pages_needed(1, ring));
	before = pool_avail();
	open_bus();
	cr_assert_str_eq(bus_shm_dir(hp.b), hp.mnt);
	err = mk_topic("hp", 1, ring);
	cr_assert_eq(err, 0, "create on hugetlbfs: %d (%s)", err, bus_strerror(err));
	/* Every page is taken at creation (no fault, no SIGBUS later). */
	cr_expect_eq(pool_avail(), before - pages_needed(1, ring),
		     "pool went from %ld to %ld pages, want -%ld", before, pool_avail(),
		     pages_needed(1, ring));
	cr_expect(strstr(logged, "hugetlbfs"), "log names hugetlbfs: %s", logged);

	err = bus_partition_describe(hp.b, "hp", 0, &pi);
	cr_assert_eq(err, 0, "partition_describe: %s", bus_strerror(err));
	cr_expect_eq(pi.hugepages, 1, "hugepages %d", pi.hugepages);
	cr_expect_eq(pi.ring_size, ring);
	{
		struct bus_topic_info ti;
		cr_assert_eq(bus_topic_describe(hp.b, "hp", &ti), 0);
		snprintf(path, sizeof(path), "%s/bus.%s.hp.%u.0", hp.mnt, env.name, ti.generation);
	}
	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	cr_expect_eq((uint64_t)st.st_size, pages_for(ring + BUS_RING_HDR_SIZE) * HUGE_PAGE,
		     "ring file of %lld bytes", (long long)st.st_size);

	/* Over two laps, read as they go: every page of the ring is used. */
	cr_assert_eq(bus_producer_open(hp.b, "hp", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(hp.b, "hp", NULL, &c), 0);
	for (uint64_t i = 0; i < 4500; i++) {
		struct bus_record r = { .value = val, .value_len = sizeof(val) };
		memset(val, (int)(i * 7 + 1), sizeof(val));
		memcpy(val, &i, sizeof(i));
		err = bus_produce(p, 0, &r, NULL, NULL);
		cr_assert_eq(err, 0, "produce %llu: %s", (unsigned long long)i, bus_strerror(err));
		if (i % 500 != 499)
			continue;
		while (next <= i) {
			int n = bus_consumer_read(c, m, 64, buf, sizeof(buf), 0);
			cr_assert(n > 0, "read at %llu: %d (%s)", (unsigned long long)next, n,
				  bus_strerror(n));
			for (int k = 0; k < n; k++, next++) {
				uint64_t got;
				const uint8_t *v = m[k].value;
				cr_assert_eq(m[k].offset, next);
				cr_assert_eq(m[k].lost_before, 0u);
				cr_assert_eq(m[k].value_len, sizeof(val));
				memcpy(&got, v, sizeof(got));
				cr_assert_eq(got, next);
				cr_assert_eq(v[sizeof(val) - 1], (uint8_t)(next * 7 + 1));
			}
		}
	}
	err = bus_partition_describe(hp.b, "hp", 0, &pi);
	cr_assert_eq(err, 0);
	cr_expect(pi.write_pos > 2 * ring, "wrapped: write_pos %llu",
		  (unsigned long long)pi.write_pos);
	bus_consumer_close(c);
	bus_producer_close(p);
}

struct create_job {
	const char *name;
	uint32_t parts;
	uint64_t ring;
	int err; /* result, in shared memory */
};

static int create_child(void *arg)
{
	struct create_job *j = arg;

	j->err = mk_topic(j->name, j->parts, j->ring);
	return 0;
}

/* Create a topic in a child, so that a SIGBUS fails the test with a message
 * (and the pool is still restored), and return its result. */
static int create_bounded(const char *name, uint32_t parts, uint64_t ring)
{
	struct create_job *j = mmap(NULL, sizeof(*j), PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pid;
	int st, err;

	cr_assert(j != MAP_FAILED, "mmap: %s", strerror(errno));
	j->name = name;
	j->parts = parts;
	j->ring = ring;
	j->err = 1;
	pid = tfork(create_child, j);
	if (twait_status(pid, CHILD_MS, &st) < 0)
		cr_assert_fail("creating %s did not return within %d ms", name, CHILD_MS);
	cr_assert(!WIFSIGNALED(st), "creating %s (%u x %llu bytes) killed the process: signal %d (%s)",
		  name, parts, (unsigned long long)ring, WTERMSIG(st), strsignal(WTERMSIG(st)));
	err = j->err;
	munmap(j, sizeof(*j));
	return err;
}

Test(hugepages, topic_larger_than_the_pool_fails_with_enospc_not_sigbus)
{
	const uint64_t ring = 2ull << 20;
	struct bus_topic_info ti;
	struct bus_partition_info pi;
	long avail;
	int err;

	uint64_t big = ring, half = ring;

	/* The pool holds the bus and one 2 MiB ring, and whatever free pages
	 * the host had already: the sizes below are taken from what is
	 * free. */
	hp_prepare(pages_needed(1, ring));
	open_bus();
	avail = pool_avail();
	while ((long)pages_for(big + BUS_RING_HDR_SIZE) <= avail && big < BUS_RING_MAX)
		big *= 2;
	if ((long)pages_for(big + BUS_RING_HDR_SIZE) <= avail)
		SKIP("hugepages: %ld 2 MiB pages were free already, more than a ring of at most "
		     "%llu bytes can take",
		     avail, (unsigned long long)BUS_RING_MAX);
	while ((long)pages_for(2 * half + BUS_RING_HDR_SIZE) <= avail)
		half *= 2;

	/* One ring bigger than the whole pool. */
	err = create_bounded("big", 1, big);
	cr_expect_eq(err, -ENOSPC, "%llu MiB ring over a %ld-page pool: %d (%s)",
		     (unsigned long long)(big >> 20), avail, err, bus_strerror(err));
	cr_expect_eq(files_with(".big."), 0, "the failed topic left files behind");
	cr_expect_eq(pool_avail(), avail, "pool %ld pages after the failure, was %ld",
		     pool_avail(), avail);
	cr_expect_eq(bus_topic_describe(hp.b, "big", &ti), -ENOENT);

	/* The first partition fits, the second does not. */
	err = create_bounded("two", 2, half);
	cr_expect_eq(err, -ENOSPC, "2 x %llu MiB rings over a %ld-page pool: %d (%s)",
		     (unsigned long long)(half >> 20), avail, err, bus_strerror(err));
	cr_expect_eq(files_with(".two."), 0, "the failed topic left files behind");
	cr_expect_eq(pool_avail(), avail, "pool %ld pages after the failure, was %ld",
		     pool_avail(), avail);
	cr_expect_eq(bus_topic_describe(hp.b, "two", &ti), -ENOENT);

	/* Nothing leaked: what fits still fits. */
	err = mk_topic("fits", 1, ring);
	cr_assert_eq(err, 0, "2 MiB ring after the failures: %d (%s)", err, bus_strerror(err));
	cr_assert_eq(bus_partition_describe(hp.b, "fits", 0, &pi), 0);
	cr_expect_eq(pi.hugepages, 1);
}

struct cut_job {
	struct bus_producer *p;
	struct bus_consumer *c;
	char ring[4300], ctl[4300];
	off_t to;
	int ret[8];
	int n;
};

static int count_cb(void *ctx, const struct bus_topic_info *ti)
{
	(void)ti;
	(*(int *)ctx)++;
	return 0;
}

/* In a child: cut the ring under the producer and the consumer, then the
 * control region under the bus. */
static int cut_child(void *arg)
{
	struct cut_job *j = arg;
	struct bus_record r = { .value = "after", .value_len = 5 };
	struct bus_view v[8];
	int n = 0;

	j->ret[j->n++] = bus_consumer_poll(j->c, v, 8, 0); /* views before the cut */
	if (truncate(j->ring, j->to))
		return 2;
	j->ret[j->n++] = bus_consumer_check(j->c, v, (unsigned)(j->ret[0] > 0 ? j->ret[0] : 0));
	j->ret[j->n++] = bus_produce(j->p, 0, &r, NULL, NULL);
	j->ret[j->n++] = bus_consumer_poll(j->c, v, 8, 2000 * 1000000ll);
	if (truncate(j->ctl, 0))
		return 3;
	j->ret[j->n++] = bus_topic_list(hp.b, count_cb, &n);
	j->ret[j->n++] = n;
	return 0;
}

/* A ring and the control region on hugetlbfs cut under a producer, a
 * consumer and the bus: -BUS_ECORRUPT, not SIGBUS.  The zeros that replace
 * a window of huge pages must not split a huge page (mmap(2) refuses a
 * 4 KiB aligned MAP_FIXED inside a hugetlbfs mapping, and the process dies
 * anyway): they replace the whole window, which starts and ends on huge
 * pages.  The cut takes the ring's second huge page (its header), or all
 * of it; hugetlbfs cuts whole huge pages only. */
Test(hugepages, a_ring_and_control_region_cut_under_their_mappings_are_ecorrupt_not_sigbus)
{
	const uint64_t ring = 2ull << 20;
	static const off_t to[] = { 2 << 20, 0 };

	hp_prepare(2 * pages_needed(1, ring));
	open_bus();
	for (int i = 0; i < 2; i++) {
		struct cut_job *j = mmap(NULL, sizeof(*j), PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		struct bus_record r = { .value = "before", .value_len = 6 };
		struct bus_topic_info ti;
		char name[16];
		pid_t pid;
		int st, err;

		cr_assert(j != MAP_FAILED);
		memset(j, 0, sizeof(*j));
		snprintf(name, sizeof(name), "cut%d", i);
		err = mk_topic(name, 1, ring);
		cr_assert_eq(err, 0, "create: %d (%s)", err, bus_strerror(err));
		cr_assert_eq(bus_topic_describe(hp.b, name, &ti), 0);
		snprintf(j->ring, sizeof(j->ring), "%s/bus.%s.%s.%u.0", hp.mnt, env.name, name,
			 ti.generation);
		snprintf(j->ctl, sizeof(j->ctl), "%s/bus.%s.ctl", hp.mnt, env.name);
		j->to = to[i];
		cr_assert_eq(bus_producer_open(hp.b, name, NULL, &j->p), 0);
		cr_assert_eq(bus_consumer_open(hp.b, name, NULL, &j->c), 0);
		for (int k = 0; k < 10; k++)
			cr_assert_eq(bus_produce(j->p, 0, &r, NULL, NULL), 0);
		pid = tfork(cut_child, j);
		if (twait_status(pid, CHILD_MS, &st) < 0)
			cr_assert_fail("cut %d: the calls did not return within %d ms", i, CHILD_MS);
		cr_assert(!WIFSIGNALED(st), "cut %d: killed by signal %d (%s)", i, WTERMSIG(st),
			  strsignal(WTERMSIG(st)));
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cut %d: exit %d", i,
			  WEXITSTATUS(st));
		cr_assert_eq(j->n, 6);
		cr_expect_eq(j->ret[0], 8, "cut %d: poll before the cut: %d", i, j->ret[0]);
		for (int k = 1; k < 5; k++)
			cr_expect_eq(j->ret[k], -BUS_ECORRUPT, "cut %d: call %d: %d (%s)", i, k,
				     j->ret[k], bus_strerror(j->ret[k]));
		cr_expect_eq(j->ret[5], 0, "cut %d: listed %d topics from zeros", i, j->ret[5]);
		/* This process never touched the cut files: its handles close. */
		bus_consumer_close(j->c);
		bus_producer_close(j->p);
		if (i == 0) {
			/* The control region is cut now: made again. */
			bus_close(hp.b);
			hp.b = NULL;
			cr_assert_eq(unlink(j->ctl), 0);
			open_bus();
		}
		munmap(j, sizeof(*j));
	}
}

/* hugetlbfs mounts listed in /proc/mounts. */
static int hugetlbfs_mounts(void)
{
	FILE *f = fopen("/proc/mounts", "r");
	char dev[256], dir[4096], type[64];
	int n = 0;

	cr_assert(f, "/proc/mounts: %s", strerror(errno));
	while (fscanf(f, "%255s %4095s %63s %*[^\n]", dev, dir, type) == 3)
		if (strcmp(type, "hugetlbfs") == 0)
			n++;
	fclose(f);
	return n;
}

Test(hugepages, default_shm_dir_is_a_hugetlbfs_mount_with_free_pages)
{
	const uint64_t ring = 2ull << 20;
	struct bus_opts o;
	struct statfs sf;
	const char *d;
	int err;

	hp_prepare(pages_needed(1, ring));
	unsetenv("BUS_SHM_DIR");
	d = bus_default_shm_dir();
	cr_assert(statfs(d, &sf) == 0 && (uint64_t)sf.f_type == (uint64_t)HUGETLBFS_MAGIC,
		  "bus_default_shm_dir() = %s, not a hugetlbfs mount", d);
	if (hugetlbfs_mounts() != 1)
		return; /* another mount may come first: it is not ours to fill */
	cr_assert_str_eq(d, hp.mnt);

	/* A bus opened with no shm_dir anywhere lands there. */
	o = env.opts;
	o.shm_dir = NULL;
	err = bus_open(&hp.b, &o);
	cr_assert_eq(err, 0, "bus_open in the default dir %s: %d (%s)", d, err, bus_strerror(err));
	cr_assert_str_eq(bus_shm_dir(hp.b), hp.mnt);

	/* With the last free page taken, the default falls back. */
	err = mk_topic("fill", 1, ring);
	cr_assert_eq(err, 0, "create: %d (%s)", err, bus_strerror(err));
	if (meminfo("HugePages_Free") == 0)
		cr_expect_str_eq(bus_default_shm_dir(), "/dev/shm");
}
