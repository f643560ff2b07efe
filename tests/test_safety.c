/* test_safety.c - damaged and hostile shared files, hostile frames, file
 * permissions: each case ends in a clear error code, never a crash or a hang.
 *
 * Calls that could hang or crash on hostile ring data run in a forked child
 * with a deadline, so that a library bug fails the test with a message
 * ("hung", "crashed: signal N") instead of stalling the run.  The child shares
 * the parent's mappings and reports through a shared anonymous mapping. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "layout.h"
#include "mapguard.h"
#include "util.h"

TestSuite(safety, .init = tsuite_setup, .fini = tsuite_teardown, .timeout = 120);

/* "Promptly": a damaged file is refused without waiting. */
#define PROMPT_MS 3000
/* A full-size control region whose `ready` stays 0 is waited for ~2 s. */
#define HALF_MADE_MS 5000
/* Longest a child probing hostile data may take before it counts as hung. */
#define CHILD_MS 10000

/* ------------------------------------------------------------- helpers */

static void ctl_file(const char *bus, char *buf, size_t len)
{
	snprintf(buf, len, "%s/bus.%s.ctl", env.shm_dir, bus);
}

static void ring_file(const char *topic, uint32_t gen, uint32_t part, char *buf, size_t len)
{
	snprintf(buf, len, "%s/bus.%s.%s.%u.%u", env.shm_dir, env.name, topic, gen, part);
}

static void *map_file(const char *path, size_t len)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	void *p;

	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(p != MAP_FAILED, "mmap %s: %s", path, strerror(errno));
	close(fd);
	return p;
}

/* Memory a forked child writes its results into. */
static void *shared_mem(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert(p != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(p, 0, len);
	return p;
}

/* Run fn(arg) in a child; fail the test if it crashes, exits non-zero or
 * has not returned after @ms (then it is killed). */
static void run_bounded(int (*fn)(void *), void *arg, int ms, const char *what)
{
	int st;

	if (twait_status(tfork(fn, arg), ms, &st) < 0)
		cr_assert_fail("%s: did not return within %d ms (hang)", what, ms);
	cr_assert(!WIFSIGNALED(st), "%s: crashed with signal %d (%s)", what, WTERMSIG(st),
		  strsignal(WTERMSIG(st)));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child exited with status %d", what,
		  WEXITSTATUS(st));
}

/* A small deterministic generator for "random" files. */
static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill_random(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = buf;
	uint64_t s = seed;

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)xorshift(&s);
}

static void write_new_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);

	cr_assert(fd >= 0, "create %s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, data, len), (ssize_t)len, "write %s: %s", path, strerror(errno));
	close(fd);
}

static int open_named(const char *name, unsigned flags, struct bus **out, int64_t *ms)
{
	struct bus_opts o = env.opts;
	int64_t t0 = tnow_ms();
	int err;

	o.name = name;
	o.flags = flags;
	err = bus_open(out, &o);
	if (ms)
		*ms = tnow_ms() - t0;
	return err;
}

/* bus_open() of bus @name must fail with @want within @max_ms. */
static void expect_open_refused(const char *name, int want, int64_t max_ms, const char *what)
{
	struct bus *x = NULL;
	int64_t ms;
	int err = open_named(name, 0, &x, &ms);

	if (err == 0)
		bus_close(x);
	cr_expect_eq(err, want, "%s: bus_open returned %d (%s), want %d (%s)", what, err,
		     bus_strerror(err), want, bus_strerror(want));
	cr_expect(ms < max_ms, "%s: bus_open took %lld ms (limit %lld ms)", what, (long long)ms,
		  (long long)max_ms);
}

/* Create bus @name properly, then close it: its control region stays. */
static void mk_bus(const char *name)
{
	struct bus *x;
	int err = open_named(name, 0, &x, NULL);

	cr_assert_eq(err, 0, "bus_open %s: %s", name, bus_strerror(err));
	bus_close(x);
}

/* --------------------------------------------------- the control region */

Test(safety, ctl_of_random_bytes_is_ecorrupt)
{
	char name[128], path[512];
	static alignas(BUS_CACHELINE) uint8_t buf[BUS_CTL_SIZE];
	struct bus_ctl_hdr *h = (struct bus_ctl_hdr *)(void *)buf;

	/* Pure noise (with `ready` set, so that no wait is involved). */
	snprintf(name, sizeof(name), "%s-noise", env.name);
	ctl_file(name, path, sizeof(path));
	fill_random(buf, sizeof(buf), 0x9e3779b97f4a7c15ull);
	if (h->magic == BUS_CTL_MAGIC)
		h->magic = ~h->magic;
	atomic_store(&h->ready, BUS_LAYOUT_VERSION);
	write_new_file(path, buf, sizeof(buf));
	expect_open_refused(name, -BUS_ECORRUPT, PROMPT_MS, "random bytes");

	/* Noise behind a valid identity: the sizes are what must be refused. */
	snprintf(name, sizeof(name), "%s-noise2", env.name);
	ctl_file(name, path, sizeof(path));
	fill_random(buf, sizeof(buf), 0x243f6a8885a308d3ull);
	h->magic = BUS_CTL_MAGIC;
	h->layout_version = BUS_LAYOUT_VERSION;
	h->hdr_size = sizeof(*h);
	h->signature = bus_layout_signature();
	atomic_store(&h->ready, BUS_LAYOUT_VERSION);
	write_new_file(path, buf, sizeof(buf));
	expect_open_refused(name, -BUS_ECORRUPT, PROMPT_MS, "random bytes behind a valid identity");
}

Test(safety, truncated_ctl_is_ecorrupt_at_once)
{
	static const off_t sizes[] = { 100, 4096, BUS_CTL_SIZE - 1 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char name[128], path[512], what[64];

		snprintf(name, sizeof(name), "%s-trunc%zu", env.name, i);
		mk_bus(name);
		ctl_file(name, path, sizeof(path));
		cr_assert_eq(truncate(path, sizes[i]), 0, "truncate: %s", strerror(errno));
		snprintf(what, sizeof(what), "ctl truncated to %lld bytes", (long long)sizes[i]);
		expect_open_refused(name, -BUS_ECORRUPT, PROMPT_MS, what);
	}
}

Test(safety, ctl_never_made_ready_is_ecorrupt_after_the_wait)
{
	char name[128], path[512];
	static uint8_t zeros[BUS_CTL_SIZE];

	/* Files at the bus's path that no creator of this build leaves there
	 * (it makes the file whole beside, then renames it): left by an
	 * older build's creator, or by hand.  Created and never sized. */
	snprintf(name, sizeof(name), "%s-empty", env.name);
	ctl_file(name, path, sizeof(path));
	write_new_file(path, zeros, 0);
	expect_open_refused(name, -BUS_ECORRUPT, HALF_MADE_MS, "empty ctl");

	/* Sized, `ready` never stored. */
	snprintf(name, sizeof(name), "%s-zeros", env.name);
	ctl_file(name, path, sizeof(path));
	write_new_file(path, zeros, sizeof(zeros));
	expect_open_refused(name, -BUS_ECORRUPT, HALF_MADE_MS, "full-size ctl with ready == 0");
}

static int count_topics_cb(void *ctx, const struct bus_topic_info *ti)
{
	(void)ti;
	(*(int *)ctx)++;
	return 0;
}

/* Entries of the shm dir whose name contains "bus.<bus>.ctl" (the control
 * region and whatever its creators leave beside it). */
static int ctl_entries(const char *bus)
{
	char key[256];
	struct dirent *de;
	DIR *d = opendir(env.shm_dir);
	int n = 0;

	cr_assert(d, "opendir %s: %s", env.shm_dir, strerror(errno));
	snprintf(key, sizeof(key), "bus.%s.ctl", bus);
	while ((de = readdir(d)) != NULL)
		if (strstr(de->d_name, key))
			n++;
	closedir(d);
	return n;
}

static int open_and_close_main(void *arg)
{
	struct bus *x;

	if (open_named(arg, 0, &x, NULL))
		return 1;
	bus_close(x);
	return 0;
}

/* A process killed while it creates a bus's control region (the first
 * bus_open() of the bus, interrupted by Ctrl-C, the OOM killer...) leaves
 * nothing that keeps the bus from being opened: the next bus_open()
 * creates it, promptly, and no file of the dead attempt stays. */
Test(safety, a_creator_killed_while_making_the_ctl_leaves_nothing_that_blocks_the_bus)
{
	for (int it = 0; it < 40; it++) {
		char name[128], path[512];
		struct stat sb;
		int64_t ms, deadline = tnow_ms() + 10000;
		struct bus *x = NULL;
		pid_t pid;
		int err, st;

		snprintf(name, sizeof(name), "%s-k%d", env.name, it);
		ctl_file(name, path, sizeof(path));
		pid = tfork(open_and_close_main, name);
		/* Kill it as soon as its control region shows under the bus's
		 * name (a stat(), fast enough to catch it being made where it
		 * is made in place), or on odd rounds any file of its bus (a
		 * readdir(), slower: it may find a file made beside). */
		while (it % 2 ? ctl_entries(name) == 0 : stat(path, &sb) != 0) {
			if (waitpid(pid, &st, WNOHANG) == pid) {
				pid = -1;
				break;
			}
			cr_assert(tnow_ms() < deadline, "iteration %d: the creator made no file", it);
		}
		if (pid > 0) {
			kill(pid, SIGKILL);
			twait(pid, 10000);
		}
		err = open_named(name, 0, &x, &ms);
		cr_assert_eq(err, 0, "iteration %d: bus_open after the creator was killed: %s", it,
			     bus_strerror(err));
		cr_expect(ms < 1000, "iteration %d: bus_open took %lld ms", it, (long long)ms);
		bus_close(x);
		cr_assert_eq(ctl_entries(name), 1, "iteration %d: files of the dead attempt stay",
			     it);
	}
}

struct opener {
	const char *bus;
	int go_fd;
	int id;
};

/* Wait for the go byte, open the bus, create a topic of its own on it. */
static int opener_main(void *arg)
{
	struct opener *op = arg;
	struct bus_topic_config cfg;
	struct bus *x;
	char c, topic[32];
	int err;

	if (read(op->go_fd, &c, 1) != 1)
		return 91;
	if (open_named(op->bus, 0, &x, NULL))
		return 1;
	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	snprintf(topic, sizeof(topic), "by-%d", op->id);
	err = bus_topic_create(x, topic, &cfg);
	bus_close(x);
	return err ? 2 : 0;
}

/* Processes that open a new bus at the same moment all attach to one
 * control region (exactly one of them makes it): the topics each creates
 * are all in it, and nothing but it is left in the shm dir. */
Test(safety, processes_opening_a_new_bus_at_once_share_one_control_region)
{
	enum { N = 4 };

	for (int round = 0; round < 10; round++) {
		struct opener op[N];
		char name[128];
		pid_t pid[N];
		int go[2], n = 0;
		struct bus *x;

		snprintf(name, sizeof(name), "%s-race%d", env.name, round);
		cr_assert_eq(pipe(go), 0);
		for (int i = 0; i < N; i++) {
			op[i] = (struct opener){ .bus = name, .go_fd = go[0], .id = i };
			pid[i] = tfork(opener_main, &op[i]);
		}
		cr_assert_eq(write(go[1], "xxxx", N), N);
		for (int i = 0; i < N; i++)
			cr_assert_eq(twait(pid[i], 10000), 0, "round %d: opener %d failed", round, i);
		close(go[0]);
		close(go[1]);
		cr_assert_eq(open_named(name, 0, &x, NULL), 0);
		cr_assert_eq(bus_topic_list(x, count_topics_cb, &n), 0);
		bus_close(x);
		cr_assert_eq(n, N, "round %d: %d topics, want one per opener", round, n);
		cr_assert_eq(ctl_entries(name), 1, "round %d: more than the control region", round);
	}
}

static int exit_at_once(void *arg)
{
	(void)arg;
	return 0;
}

/* The temporary file of a control region being made, for bus @bus by
 * @pid, in the shm dir. */
static void ctl_tmp_file(const char *bus, pid_t pid, char *buf, size_t len)
{
	snprintf(buf, len, "%s/.bus.%s.ctl.%d.0", env.shm_dir, bus, (int)pid);
	write_new_file(buf, "x", 1);
}

/* A creator killed while another one won its race leaves its temporary
 * file beside a bus that exists (a huge page or more on hugetlbfs): the
 * next bus_open() removes it, not only the next creation.  The temporary
 * file of a live creator of another bus whose name continues ours
 * ("<bus>.ctl.99999999.1") is not ours to remove. */
Test(safety, bus_open_removes_only_the_temporary_files_of_its_dead_creators)
{
	char name[128], other[160], dead[600], live[700];
	pid_t gone = tfork(exit_at_once, NULL);
	struct bus *x;

	cr_assert_eq(twait(gone, 10000), 0);
	snprintf(name, sizeof(name), "%s-sweep", env.name);
	snprintf(other, sizeof(other), "%s.ctl.99999999.1", name);
	ctl_tmp_file(other, getpid(), live, sizeof(live));
	cr_assert_eq(open_named(name, 0, &x, NULL), 0, "created");
	bus_close(x);
	cr_expect_eq(access(live, F_OK), 0, "bus '%s' removed the file of bus '%s' being made",
		     name, other);
	unlink(live);
	ctl_tmp_file(name, gone, dead, sizeof(dead));
	cr_assert_eq(open_named(name, 0, &x, NULL), 0, "attached");
	bus_close(x);
	cr_expect_neq(access(dead, F_OK), 0, "%s stayed", dead);
}

/* A process that closed its stdout, opens a bus (creating it, or attaching
 * to it) and then writes to its stdout, as printf after `prog >&-` does:
 * the control region must not be descriptor 1. */
static int closed_stdout_main(void *arg)
{
	static const char junk[] = "this line must not land in the control region\n";
	struct bus *x;
	int err;

	close(STDOUT_FILENO);
	err = open_named(arg, 0, &x, NULL);
	if (err)
		return 1;
	(void)!write(STDOUT_FILENO, junk, sizeof junk - 1);
	bus_close(x);
	return 0;
}

Test(safety, a_process_with_stdout_closed_does_not_write_into_the_control_region)
{
	char name[128];
	struct bus *x;

	snprintf(name, sizeof(name), "%s-nostdout", env.name);
	cr_assert_eq(twait(tfork(closed_stdout_main, name), 10000), 0, "creator");
	cr_assert_eq(twait(tfork(closed_stdout_main, name), 10000), 0, "attacher");
	cr_assert_eq(open_named(name, 0, &x, NULL), 0, "the bus is still whole");
	bus_close(x);
}

/* Something at the control region's path that is not a regular file is
 * refused at once, not waited for as a control region being made. */
Test(safety, ctl_that_is_not_a_regular_file_is_ecorrupt_at_once)
{
	char name[128], path[512];

	snprintf(name, sizeof(name), "%s-fifo", env.name);
	ctl_file(name, path, sizeof(path));
	cr_assert_eq(mkfifo(path, 0660), 0, "mkfifo: %s", strerror(errno));
	expect_open_refused(name, -BUS_ECORRUPT, 1000, "a FIFO");

	snprintf(name, sizeof(name), "%s-dev", env.name);
	ctl_file(name, path, sizeof(path));
	cr_assert_eq(symlink("/dev/zero", path), 0, "symlink: %s", strerror(errno));
	expect_open_refused(name, -BUS_ECORRUPT, 1000, "a symlink to /dev/zero");
}

struct ctl_case {
	const char *tag; /* also part of the bus name */
	size_t off;      /* field in struct bus_ctl_hdr */
	size_t width;    /* 4 or 8 */
	uint64_t val;
	int want;
};

#define CTL_FIELD(f) offsetof(struct bus_ctl_hdr, f), sizeof(((struct bus_ctl_hdr *)0)->f)

/* Create a bus, overwrite one header field, and expect bus_open to refuse
 * the file with the case's code, promptly. */
static void ctl_cases(const struct ctl_case *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char name[128], path[512];
		uint8_t *h;

		snprintf(name, sizeof(name), "%s-%s", env.name, cs[i].tag);
		mk_bus(name);
		ctl_file(name, path, sizeof(path));
		h = map_file(path, BUS_CTL_SIZE);
		if (cs[i].width == 8) {
			uint64_t v = cs[i].val;
			memcpy(h + cs[i].off, &v, 8);
		} else {
			uint32_t v = (uint32_t)cs[i].val;
			memcpy(h + cs[i].off, &v, 4);
		}
		munmap(h, BUS_CTL_SIZE);
		expect_open_refused(name, cs[i].want, PROMPT_MS, cs[i].tag);
	}
}

Test(safety, ctl_with_wrong_magic_is_ecorrupt)
{
	const struct ctl_case cs[] = {
		{ "magic", CTL_FIELD(magic), 0x1122334455667788ull, -BUS_ECORRUPT },
		{ "magic-zero", CTL_FIELD(magic), 0, -BUS_ECORRUPT },
		/* What a host of the other byte order reads. */
		{ "magic-swapped", CTL_FIELD(magic), __builtin_bswap64(BUS_CTL_MAGIC), -BUS_ECORRUPT },
	};
	ctl_cases(cs, sizeof(cs) / sizeof(cs[0]));
}

Test(safety, ctl_from_another_layout_is_eversion)
{
	const struct ctl_case cs[] = {
		{ "version-next", CTL_FIELD(layout_version), BUS_LAYOUT_VERSION + 1, -BUS_EVERSION },
		{ "version-zero", CTL_FIELD(layout_version), 0, -BUS_EVERSION },
		{ "version-huge", CTL_FIELD(layout_version), 0xffffffffu, -BUS_EVERSION },
		{ "signature", CTL_FIELD(signature), bus_layout_signature() ^ 1, -BUS_EVERSION },
		{ "hdr-size", CTL_FIELD(hdr_size), sizeof(struct bus_ctl_hdr) + 64, -BUS_EVERSION },
	};
	ctl_cases(cs, sizeof(cs) / sizeof(cs[0]));
}

/* The ERROR lines a bus_open() logged. */
static void collect_log(void *ctx, enum bus_log_level lvl, const char *msg)
{
	char *buf = ctx;
	size_t n = strlen(buf);

	if (lvl == BUS_LOG_ERROR && n + strlen(msg) + 2 < 4096)
		snprintf(buf + n, 4096 - n, "%s\n", msg);
}

/* Refusing another layout names the file's version and the library's, and
 * the file: a user of another build learns which of the two to change,
 * where -BUS_EVERSION alone says neither. */
Test(safety, ctl_from_another_layout_is_refused_with_a_message_naming_both_versions)
{
	char name[128], path[512], want[64];
	static char log[4096];
	struct bus_opts o = env.opts;
	struct bus *x = NULL;
	uint8_t *h;
	uint32_t v = 7777;
	int err;

	snprintf(name, sizeof(name), "%s-v7777", env.name);
	mk_bus(name);
	ctl_file(name, path, sizeof(path));
	h = map_file(path, BUS_CTL_SIZE);
	memcpy(h + offsetof(struct bus_ctl_hdr, layout_version), &v, sizeof(v));
	munmap(h, BUS_CTL_SIZE);

	o.name = name;
	o.log = collect_log;
	o.log_ctx = log;
	log[0] = 0;
	err = bus_open(&x, &o);
	if (err == 0)
		bus_close(x);
	cr_assert_eq(err, -BUS_EVERSION, "bus_open: %s", bus_strerror(err));
	cr_expect(strstr(log, path), "the refusal does not name %s; logged: '%s'", path, log);
	cr_expect(strstr(log, "version 7777"), "the file's version is not named; logged: '%s'",
		  log);
	snprintf(want, sizeof(want), "version %u", BUS_LAYOUT_VERSION);
	cr_expect(strstr(log, want), "the library's version (%s) is not named; logged: '%s'", want,
		  log);

	/* Same version, another build's struct layout: both signatures. */
	snprintf(name, sizeof(name), "%s-sig", env.name);
	mk_bus(name);
	ctl_file(name, path, sizeof(path));
	h = map_file(path, BUS_CTL_SIZE);
	{
		uint64_t sig = bus_layout_signature() ^ 0xf00d;
		memcpy(h + offsetof(struct bus_ctl_hdr, signature), &sig, sizeof(sig));
	}
	munmap(h, BUS_CTL_SIZE);
	o.name = name;
	log[0] = 0;
	err = bus_open(&x, &o);
	if (err == 0)
		bus_close(x);
	cr_assert_eq(err, -BUS_EVERSION, "bus_open: %s", bus_strerror(err));
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)(bus_layout_signature() ^ 0xf00d));
	cr_expect(strstr(log, want), "the file's signature %s is not named; logged: '%s'", want, log);
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)bus_layout_signature());
	cr_expect(strstr(log, want), "this build's signature %s is not named; logged: '%s'", want,
		  log);
}

Test(safety, ctl_with_hostile_sizes_is_ecorrupt)
{
	const struct ctl_case cs[] = {
		{ "fsize-small", CTL_FIELD(file_size), 4096, -BUS_ECORRUPT },
		{ "fsize-big", CTL_FIELD(file_size), BUS_CTL_SIZE + 4096, -BUS_ECORRUPT },
		{ "fsize-max", CTL_FIELD(file_size), UINT64_MAX, -BUS_ECORRUPT },
		{ "toff-zero", CTL_FIELD(topics_off), 0, -BUS_ECORRUPT },
		{ "toff-end", CTL_FIELD(topics_off), BUS_CTL_SIZE, -BUS_ECORRUPT },
		{ "toff-max", CTL_FIELD(topics_off), UINT64_MAX - 64, -BUS_ECORRUPT },
		{ "tmax-zero", CTL_FIELD(topics_max), 0, -BUS_ECORRUPT },
		{ "tmax-big", CTL_FIELD(topics_max), BUS_TOPICS_MAX * 1000u, -BUS_ECORRUPT },
		{ "tmax-max", CTL_FIELD(topics_max), 0xffffffffu, -BUS_ECORRUPT },
		{ "slot-one", CTL_FIELD(topic_slot_size), 1, -BUS_ECORRUPT },
		{ "slot-zero", CTL_FIELD(topic_slot_size), 0, -BUS_ECORRUPT },
		{ "slot-max", CTL_FIELD(topic_slot_size), 0xffffffffu, -BUS_ECORRUPT },
	};
	ctl_cases(cs, sizeof(cs) / sizeof(cs[0]));
}

/* ------------------------------------------------------- topic slots */

static struct bus_ctl_hdr *map_ctl(void)
{
	char path[512];

	ctl_file(env.name, path, sizeof(path));
	return map_file(path, BUS_CTL_SIZE);
}

static struct bus_topic_slot *slot_of(struct bus_ctl_hdr *h, const char *topic)
{
	struct bus_topic_slot *s = (struct bus_topic_slot *)(void *)((char *)h + BUS_CTL_TOPICS_OFF);

	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++)
		if (BUS_SLOT_STATE(atomic_load(&s[i].state)) == BUS_SLOT_READY &&
		    strncmp(s[i].name, topic, sizeof(s[i].name)) == 0)
			return &s[i];
	cr_assert_fail("topic %s has no READY slot", topic);
	return NULL;
}

static uint32_t mk_topic(const char *topic, uint32_t parts, uint64_t ring)
{
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	int err;

	bus_topic_config_init(&cfg);
	cfg.partitions = parts;
	cfg.ring_size = ring;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	err = bus_topic_create(b, topic, &cfg);
	cr_assert_eq(err, 0, "create %s: %s", topic, bus_strerror(err));
	err = bus_topic_describe(b, topic, &ti);
	cr_assert_eq(err, 0, "describe %s: %s", topic, bus_strerror(err));
	return ti.generation;
}

static int count_topics(void *ctx, const struct bus_topic_info *ti)
{
	(void)ti;
	(*(int *)ctx)++;
	return 0;
}

enum damage {
	DAMAGED_SLOT,  /* every call fails, bus_topic_list included */
	DAMAGED_STATE, /* the slot is not READY: bus_topic_list may skip it */
	DAMAGED_RING,  /* the slot is fine (describe works); the rings are not */
};

/* Every call that reads @topic's slot or rings must fail with @want1 or
 * @want2.  This process has not opened the topic before (its handle cache
 * holds nothing that would hide the damage). */
static void expect_topic_refused(const char *topic, int want1, int want2, enum damage d,
				 const char *what)
{
	struct bus_topic_info ti;
	struct bus_partition_info pi;
	struct bus_producer *p = NULL;
	struct bus_consumer *c = NULL;
	int n = 0, err;

#define REFUSED(call, name)                                                                  \
	do {                                                                                 \
		err = (call);                                                                \
		cr_expect(err == want1 || err == want2, "%s: %s returned %d (%s), want %s", \
			  what, name, err, bus_strerror(err), bus_strerror(want1));          \
	} while (0)

	if (d == DAMAGED_SLOT)
		REFUSED(bus_topic_list(b, count_topics, &n), "bus_topic_list");
	if (d == DAMAGED_RING) {
		err = bus_topic_describe(b, topic, &ti);
		cr_expect_eq(err, 0, "%s: bus_topic_describe (slot intact) returned %d (%s)", what,
			     err, bus_strerror(err));
	} else {
		REFUSED(bus_topic_describe(b, topic, &ti), "bus_topic_describe");
	}
	REFUSED(bus_partition_describe(b, topic, 0, &pi), "bus_partition_describe");
	REFUSED(bus_producer_open(b, topic, NULL, &p), "bus_producer_open");
	if (err == 0)
		bus_producer_close(p);
	REFUSED(bus_consumer_open(b, topic, NULL, &c), "bus_consumer_open");
	if (err == 0)
		bus_consumer_close(c);
#undef REFUSED
}

Test(safety, topic_slot_with_hostile_name_is_ecorrupt)
{
	static const char *const names[] = {
		"../../etc/passwd", "a/b", "", ".hidden", "sp ace", "tab\there", "\xff\xfe",
	};
	struct bus_ctl_hdr *h;
	struct bus_topic_slot *s, saved;
	struct bus_topic_info ti;

	mk_topic("t", 1, BUS_RING_MIN);
	h = map_ctl();
	s = slot_of(h, "t");
	memcpy(&saved, s, sizeof(saved));

	/* Not NUL-terminated: 64 valid characters fill the whole field. */
	memset(s->name, 'a', sizeof(s->name));
	expect_topic_refused("t", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_SLOT, "unterminated name");
	memcpy(s, &saved, sizeof(saved));
	cr_assert_eq(bus_topic_describe(b, "t", &ti), 0, "restored slot reads again");

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char what[96];

		memset(s->name, 0, sizeof(s->name));
		memcpy(s->name, names[i], strlen(names[i]));
		snprintf(what, sizeof(what), "name \"%s\"", names[i]);
		expect_topic_refused("t", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_SLOT, what);
		memcpy(s, &saved, sizeof(saved));
		cr_assert_eq(bus_topic_describe(b, "t", &ti), 0, "restored slot reads again");
	}
	munmap(h, BUS_CTL_SIZE);
}

Test(safety, topic_slot_with_invalid_config_is_ecorrupt)
{
	struct bus_ctl_hdr *h;
	struct bus_topic_slot *s;
	struct bus_topic_cfg_disk good;
	struct bus_topic_info ti;
	struct {
		const char *what;
		struct bus_topic_cfg_disk cfg;
	} cs[8];
	size_t n = 0;

	mk_topic("t", 1, BUS_RING_MIN);
	h = map_ctl();
	s = slot_of(h, "t");
	good = s->cfg;

#define CASE(w, field, v)              \
	do {                           \
		cs[n].what = (w);      \
		cs[n].cfg = good;      \
		cs[n].cfg.field = (v); \
		n++;                   \
	} while (0)
	CASE("partitions 0", partitions, 0);
	CASE("partitions 100000", partitions, 100000);
	CASE("ring_size not a power of two", ring_size, BUS_RING_MIN + 8);
	CASE("ring_size 0", ring_size, 0);
	CASE("ring_size 2^40", ring_size, 1ull << 40);
	CASE("unknown flags", flags, 0x80);
	CASE("overflow 9", overflow, 9);
	CASE("numa_node -5", numa_node, -5);
#undef CASE

	for (size_t i = 0; i < n; i++) {
		s->cfg = cs[i].cfg;
		expect_topic_refused("t", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_SLOT, cs[i].what);
		s->cfg = good;
		cr_assert_eq(bus_topic_describe(b, "t", &ti), 0, "restored slot reads again");
	}
	munmap(h, BUS_CTL_SIZE);
}

/* A damaged slot does not hide the topics after it from a list: each of
 * them is listed, then the damage is told (-BUS_ECORRUPT). */
static int named_topics(void *ctx, const struct bus_topic_info *ti)
{
	char *seen = ctx;

	strcat(seen, ti->name);
	strcat(seen, " ");
	return 0;
}

Test(safety, a_damaged_slot_does_not_hide_the_topics_after_it_from_a_list)
{
	struct bus_topic_slot *s, *first = NULL;
	struct bus_ctl_hdr *h;
	struct bus_topic_cfg_disk good;
	char seen[256] = "", want[256] = "";
	int err;

	mk_topic("t1", 1, BUS_RING_MIN);
	mk_topic("t2", 1, BUS_RING_MIN);
	mk_topic("t3", 1, BUS_RING_MIN);
	h = map_ctl();
	s = (struct bus_topic_slot *)(void *)((char *)h + BUS_CTL_TOPICS_OFF);
	/* Damage the first topic in table order; the others come after. */
	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++) {
		if (BUS_SLOT_STATE(atomic_load(&s[i].state)) != BUS_SLOT_READY)
			continue;
		if (!first) {
			first = &s[i];
		} else {
			size_t n = strlen(want);
			snprintf(want + n, sizeof(want) - n, "%.*s ", (int)sizeof(s[i].name),
				 s[i].name);
		}
	}
	cr_assert(first);
	good = first->cfg;
	first->cfg.partitions = 0;
	err = bus_topic_list(b, named_topics, seen);
	cr_assert_eq(err, -BUS_ECORRUPT, "bus_topic_list: %d (%s)", err, bus_strerror(err));
	cr_assert_str_eq(seen, want, "listed '%s', want '%s'", seen, want);
	first->cfg = good;
	seen[0] = 0;
	cr_assert_eq(bus_topic_list(b, named_topics, seen), 0);
	munmap(h, BUS_CTL_SIZE);
}

Test(safety, topic_slot_in_unknown_state_is_ecorrupt)
{
	struct bus_topic_config cfg;
	struct bus_ctl_hdr *h;
	struct bus_topic_slot *s;
	uint64_t w;
	int n = 0, err;

	mk_topic("t", 1, BUS_RING_MIN);
	h = map_ctl();
	s = slot_of(h, "t");
	w = atomic_load(&s->state);
	atomic_store(&s->state, BUS_SLOT_WORD(9, BUS_SLOT_GEN(w), 0));
	/* The list shows READY topics only: an unknown state may be skipped. */
	err = bus_topic_list(b, count_topics, &n);
	cr_expect(err == 0 || err == -BUS_ECORRUPT, "bus_topic_list: %d (%s)", err,
		  bus_strerror(err));
	expect_topic_refused("t", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_STATE, "slot state 9");
	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	err = bus_topic_create(b, "t", &cfg);
	cr_expect_eq(err, -BUS_ECORRUPT, "create over slot state 9: %d (%s)", err,
		     bus_strerror(err));
	atomic_store(&s->state, w);
	munmap(h, BUS_CTL_SIZE);
}

/* ---------------------------------------------------------- ring files */

struct ring_case {
	const char *tag; /* also the topic name */
	size_t off;      /* field in struct bus_ring_hdr */
	size_t width;
	uint64_t val;
	int want1, want2;
};

#define RING_FIELD(f) offsetof(struct bus_ring_hdr, f), sizeof(((struct bus_ring_hdr *)0)->f)

static void ring_cases(const struct ring_case *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char path[4300];
		uint32_t gen = mk_topic(cs[i].tag, 1, BUS_RING_MIN);
		size_t len = BUS_RING_MIN + BUS_RING_HDR_SIZE;
		uint8_t *m;

		ring_file(cs[i].tag, gen, 0, path, sizeof(path));
		m = map_file(path, len);
		if (cs[i].width == 8) {
			uint64_t v = cs[i].val;
			memcpy(m + BUS_RING_MIN + cs[i].off, &v, 8);
		} else {
			uint32_t v = (uint32_t)cs[i].val;
			memcpy(m + BUS_RING_MIN + cs[i].off, &v, 4);
		}
		munmap(m, len);
		expect_topic_refused(cs[i].tag, cs[i].want1, cs[i].want2, DAMAGED_RING, cs[i].tag);
	}
}

Test(safety, ring_with_wrong_magic_is_ecorrupt)
{
	const struct ring_case cs[] = {
		{ "magic", RING_FIELD(magic), 0x1122334455667788ull, -BUS_ECORRUPT, -BUS_ECORRUPT },
		{ "magic-ctl", RING_FIELD(magic), BUS_CTL_MAGIC, -BUS_ECORRUPT, -BUS_ECORRUPT },
		{ "magic-swapped", RING_FIELD(magic), __builtin_bswap64(BUS_RING_MAGIC), -BUS_ECORRUPT,
		  -BUS_ECORRUPT },
	};
	ring_cases(cs, sizeof(cs) / sizeof(cs[0]));
}

Test(safety, ring_from_another_layout_is_eversion)
{
	const struct ring_case cs[] = {
		{ "version", RING_FIELD(layout_version), BUS_LAYOUT_VERSION + 1, -BUS_EVERSION,
		  -BUS_EVERSION },
		{ "signature", RING_FIELD(signature), bus_layout_signature() ^ 1, -BUS_EVERSION,
		  -BUS_EVERSION },
		{ "hdr-size", RING_FIELD(hdr_size), 64, -BUS_EVERSION, -BUS_EVERSION },
		/* Never made ready although its topic is READY: either code. */
		{ "not-ready", RING_FIELD(ready), 0, -BUS_ECORRUPT, -BUS_EVERSION },
	};
	ring_cases(cs, sizeof(cs) / sizeof(cs[0]));
}

Test(safety, ring_header_that_disagrees_with_its_topic_is_ecorrupt)
{
	const struct ring_case cs[] = {
		{ "size-big", RING_FIELD(ring_size), BUS_RING_MIN * 2, -BUS_ECORRUPT, -BUS_ECORRUPT },
		{ "size-odd", RING_FIELD(ring_size), BUS_RING_MIN + 8, -BUS_ECORRUPT, -BUS_ECORRUPT },
		{ "size-max", RING_FIELD(ring_size), UINT64_MAX, -BUS_ECORRUPT, -BUS_ECORRUPT },
		{ "partition", RING_FIELD(partition), 7, -BUS_ECORRUPT, -BUS_ECORRUPT },
		{ "gen", RING_FIELD(topic_gen), 12345, -BUS_ECORRUPT, -BUS_ECORRUPT },
	};
	ring_cases(cs, sizeof(cs) / sizeof(cs[0]));
}

Test(safety, truncated_ring_is_ecorrupt)
{
	static const off_t sizes[] = { 0, 100, BUS_RING_MIN, BUS_RING_MIN + BUS_RING_HDR_SIZE - 1 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char topic[32], path[4300], what[64];
		uint32_t gen;

		snprintf(topic, sizeof(topic), "trunc%zu", i);
		gen = mk_topic(topic, 1, BUS_RING_MIN);
		ring_file(topic, gen, 0, path, sizeof(path));
		cr_assert_eq(truncate(path, sizes[i]), 0, "truncate: %s", strerror(errno));
		snprintf(what, sizeof(what), "ring truncated to %lld bytes", (long long)sizes[i]);
		expect_topic_refused(topic, -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_RING, what);
	}
}

Test(safety, missing_ring_is_ecorrupt)
{
	char path[4300];
	uint32_t gen = mk_topic("gone", 2, BUS_RING_MIN);

	/* Only the second partition's ring is missing. */
	ring_file("gone", gen, 1, path, sizeof(path));
	cr_assert_eq(unlink(path), 0, "unlink: %s", strerror(errno));
	expect_topic_refused("gone", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_RING, "missing ring");
}

Test(safety, ring_that_is_not_a_regular_file_is_ecorrupt)
{
	char path[4300];
	uint32_t gen = mk_topic("fifo", 1, BUS_RING_MIN);

	/* A FIFO opens O_RDWR without blocking: it must be refused, not read. */
	ring_file("fifo", gen, 0, path, sizeof(path));
	cr_assert_eq(unlink(path), 0, "unlink: %s", strerror(errno));
	cr_assert_eq(mkfifo(path, 0660), 0, "mkfifo: %s", strerror(errno));
	expect_topic_refused("fifo", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_RING, "ring is a FIFO");
}

Test(safety, ring_shorter_than_its_topic_config_is_ecorrupt)
{
	struct bus_ctl_hdr *h;
	struct bus_topic_slot *s;

	/* A valid config that the ring files do not match: a bigger ring than
	 * the file holds, and more partitions than there are files. */
	mk_topic("cfg1", 1, BUS_RING_MIN);
	mk_topic("cfg2", 1, BUS_RING_MIN);
	h = map_ctl();
	s = slot_of(h, "cfg1");
	s->cfg.ring_size = BUS_RING_MIN * 4;
	s = slot_of(h, "cfg2");
	s->cfg.partitions = 3;
	expect_topic_refused("cfg1", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_RING, "ring_size > file");
	expect_topic_refused("cfg2", -BUS_ECORRUPT, -BUS_ECORRUPT, DAMAGED_RING, "partitions > files");
	munmap(h, BUS_CTL_SIZE);
}

/* ------------------------------------------------------ hostile frames */

/* The test's own mapping of a ring file, to forge frames in. */
struct tring {
	uint8_t *base;
	size_t len;
	uint64_t size;
	struct bus_ring_hdr *h;
	char path[4300];
};

static void tring_map(struct tring *r, const char *topic, uint32_t gen, uint64_t ring_size)
{
	struct stat st;

	ring_file(topic, gen, 0, r->path, sizeof(r->path));
	cr_assert_eq(stat(r->path, &st), 0, "stat %s: %s", r->path, strerror(errno));
	r->len = (size_t)st.st_size;
	r->size = ring_size;
	r->base = map_file(r->path, r->len);
	r->h = (struct bus_ring_hdr *)(void *)(r->base + ring_size);
}

/* Write a frame at @pos and publish it with commit word {type, len, tag =
 * off}, as a (hostile) producer would.  Byte copies, so that @pos may be
 * unaligned.  Returns where its payload starts. */
static uint8_t *forge(const struct tring *r, uint64_t pos, uint32_t type, uint32_t len,
		      uint64_t off, uint32_t k, uint32_t hl, uint32_t vl, uint32_t hc)
{
	uint8_t *at = r->base + (pos & (r->size - 1));
	struct bus_frame f;
	uint64_t w = BUS_COMMIT(type, len, off);

	memset(&f, 0, sizeof(f));
	atomic_init(&f.claim, BUS_CLAIM(getpid(), off));
	f.offset = off;
	f.timestamp = 1;
	f.key_len = k;
	f.headers_len = hl;
	f.value_len = vl;
	f.header_count = hc;
	memcpy(at + sizeof(f.commit), (uint8_t *)&f + sizeof(f.commit),
	       sizeof(f) - sizeof(f.commit));
	/* No reader runs while the tests forge: the commit word goes last
	 * only to mirror the protocol. */
	atomic_thread_fence(memory_order_release);
	memcpy(at, &w, sizeof(w));
	return at + BUS_FRAME_HDR;
}

static uint64_t tail_pos(const struct tring *r)
{
	return atomic_load(&r->h->tail.pos);
}

static uint64_t tail_off(const struct tring *r)
{
	return atomic_load(&r->h->tail.off) & ~BUS_TAIL_EXCL;
}

/* Topic "f" (one 64 KiB partition) holding @n records whose values are
 * @vsize bytes, and a consumer at the earliest of them.  Returns how many
 * the consumer can read: producers keep a horizon ahead of the tail, so the
 * oldest records of a nearly full lap already count as overwritten. */
static unsigned frames_setup(struct tring *r, struct bus_consumer **c, int n, uint32_t vsize)
{
	static uint8_t val[4096];
	struct bus_partition_info pi;
	struct bus_producer *p;
	uint32_t gen = mk_topic("f", 1, BUS_RING_MIN);
	int err;

	cr_assert(vsize <= sizeof(val));
	cr_assert_eq(bus_producer_open(b, "f", NULL, &p), 0);
	for (int i = 0; i < n; i++) {
		struct bus_record rec = { .value = val, .value_len = vsize };
		memset(val, 'a' + i % 26, vsize);
		err = bus_produce(p, 0, &rec, NULL, NULL);
		cr_assert_eq(err, 0, "produce %d: %s", i, bus_strerror(err));
	}
	bus_producer_close(p);
	err = bus_consumer_open(b, "f", NULL, c);
	cr_assert_eq(err, 0, "consumer_open: %s", bus_strerror(err));
	err = bus_partition_describe(b, "f", 0, &pi);
	cr_assert_eq(err, 0, "partition_describe: %s", bus_strerror(err));
	cr_assert_eq(pi.next_offset, (uint64_t)n);
	cr_assert(pi.first_offset <= pi.next_offset);
	tring_map(r, "f", gen, BUS_RING_MIN);
	return (unsigned)(pi.next_offset - pi.first_offset);
}

/* Read @n valid records in this process. */
static void drain(struct bus_consumer *c, unsigned n)
{
	struct bus_view v[16];
	unsigned got = 0;

	while (got < n) {
		int k = bus_consumer_poll(c, v, 16, 0);
		cr_assert(k > 0, "drain: poll returned %d (%s) after %u of %u", k, bus_strerror(k),
			  got, n);
		got += (unsigned)k;
	}
	cr_assert_eq(got, n);
}

enum probe_op { PROBE_POLL, PROBE_READ, PROBE_SEEK_TIME, PROBE_HEADERS };

/* A child's job and its results (in shared memory). */
struct probe {
	struct bus_consumer *c;
	const struct tring *r;
	enum probe_op op;
	int calls;
	int ret[64];      /* each call's return */
	unsigned views;   /* records handed out */
	unsigned badviews;
	char why[640];    /* the first bad view */
	int hdr[8];       /* PROBE_HEADERS: bus_view_header() returns */
	char hdr_name[8];
};

/* Whether [p, p + len) lies in the ring data of a mapping of @r's file;
 * with @check_align, also whether p - BUS_FRAME_HDR (the frame of a key)
 * is frame-aligned.  Otherwise says why in @why. */
static bool in_ring(const struct tring *r, const void *p, uint64_t len, bool check_align,
		    char *why, size_t wlen)
{
	FILE *f = fopen("/proc/self/maps", "r");
	uintptr_t a = (uintptr_t)p;
	char line[4600];
	bool found = false, ok = false;

	if (!f) {
		snprintf(why, wlen, "cannot read /proc/self/maps");
		return false;
	}
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, off;
		char file[4400] = "";
		char *nl;

		if (sscanf(line, "%lx-%lx %*s %lx %*s %*s %4399[^\n]", &lo, &hi, &off, file) < 3)
			continue;
		if (a < lo || a >= hi)
			continue;
		found = true;
		if ((nl = strstr(file, " (deleted)")) != NULL)
			*nl = 0;
		if (strcmp(file, r->path) != 0 || off != 0)
			snprintf(why, wlen, "view at %p is in mapping '%s' (offset %lu), not the ring",
				 p, file, off);
		else if (a + len > lo + r->size)
			snprintf(why, wlen,
				 "view [%p, +%llu) runs past the ring data (ring offset %lu, ring %llu bytes)",
				 p, (unsigned long long)len, (unsigned long)(a - lo),
				 (unsigned long long)r->size);
		else if (check_align && (a - lo - BUS_FRAME_HDR) % BUS_FRAME_ALIGN != 0)
			snprintf(why, wlen, "view's frame at ring offset %lu is not %u-byte aligned",
				 (unsigned long)(a - lo - BUS_FRAME_HDR), BUS_FRAME_ALIGN);
		else
			ok = true;
	}
	fclose(f);
	if (!found)
		snprintf(why, wlen, "view at %p is in no mapping", p);
	return ok;
}

static void probe_views(struct probe *pr, const struct bus_view *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		char why[512];
		bool ok = in_ring(pr->r, v[i].key, v[i].key_len, true, why, sizeof(why)) &&
			  in_ring(pr->r, v[i].headers, v[i].headers_len, false, why, sizeof(why)) &&
			  in_ring(pr->r, v[i].value, v[i].value_len, false, why, sizeof(why));
		pr->views++;
		if (!ok && !pr->badviews++)
			snprintf(pr->why, sizeof(pr->why), "offset %llu: %s",
				 (unsigned long long)v[i].offset, why);
	}
}

static int probe_child(void *arg)
{
	struct probe *pr = arg;
	struct bus_view v[16];
	struct bus_msg m[16];
	static uint8_t buf[16 * 4096];
	struct bus_header h;

	switch (pr->op) {
	case PROBE_POLL:
	case PROBE_READ:
		while (pr->calls < 64) {
			int n;
			if (pr->op == PROBE_POLL) {
				n = bus_consumer_poll(pr->c, v, 16, 0);
				if (n > 0)
					probe_views(pr, v, (unsigned)n);
			} else {
				n = bus_consumer_read(pr->c, m, 16, buf, sizeof(buf), 0);
				if (n > 0)
					pr->views += (unsigned)n;
			}
			pr->ret[pr->calls++] = n;
			if (n <= 0)
				break;
		}
		break;
	case PROBE_SEEK_TIME:
		pr->ret[pr->calls++] = bus_consumer_seek(pr->c, BUS_PARTITION_ANY, BUS_SEEK_TIME, 1);
		pr->ret[pr->calls++] = bus_consumer_poll(pr->c, v, 16, 0);
		if (pr->ret[1] > 0)
			probe_views(pr, v, (unsigned)pr->ret[1]);
		break;
	case PROBE_HEADERS:
		pr->ret[pr->calls++] = bus_consumer_poll(pr->c, v, 2, 0);
		if (pr->ret[0] != 2)
			break;
		probe_views(pr, v, 2);
		for (uint32_t i = 0; i < 3; i++) {
			pr->hdr[i] = bus_view_header(&v[0], i, &h);
			if (i == 0 && pr->hdr[0] == 0 && h.name_len < sizeof(pr->hdr_name))
				memcpy(pr->hdr_name, h.name, h.name_len);
		}
		pr->hdr[3] = bus_view_header(&v[1], 0, &h);
		break;
	}
	return 0;
}

static struct probe *probe_run(struct bus_consumer *c, const struct tring *r, enum probe_op op,
			       const char *what)
{
	struct probe *pr = shared_mem(sizeof(*pr));

	pr->c = c;
	pr->r = r;
	pr->op = op;
	run_bounded(probe_child, pr, CHILD_MS, what);
	return pr;
}

/* Poll and read must hand out the @valid records before the hostile frame,
 * all inside the ring, then refuse the frame with -BUS_ECORRUPT. */
static void expect_frame_refused(struct bus_consumer *c, const struct tring *r, unsigned valid,
				 const char *what)
{
	static const enum probe_op ops[] = { PROBE_POLL, PROBE_READ };
	static const char *const opname[] = { "bus_consumer_poll", "bus_consumer_read" };

	for (size_t i = 0; i < 2; i++) {
		char w[160];
		struct probe *pr;

		snprintf(w, sizeof(w), "%s: %s", what, opname[i]);
		pr = probe_run(c, r, ops[i], w);
		cr_expect_eq(pr->views, valid, "%s: %u records before the bad frame, want %u", w,
			     pr->views, valid);
		cr_expect_eq(pr->badviews, 0u, "%s: %s", w, pr->why);
		cr_expect_eq(pr->ret[pr->calls - 1], -BUS_ECORRUPT, "%s: last call returned %d (%s)",
			     w, pr->ret[pr->calls - 1], bus_strerror(pr->ret[pr->calls - 1]));
		munmap(pr, sizeof(*pr));
	}
}

Test(safety, poll_refuses_commit_word_with_huge_length)
{
	struct tring r;
	struct bus_consumer *c;
	uint32_t len = 0x3ffffff8u; /* the largest aligned length a commit word holds */

	frames_setup(&r, &c, 3, 10);
	forge(&r, tail_pos(&r), BUS_FRAME_DATA, len, tail_off(&r), 0, 0, len - BUS_FRAME_HDR, 0);
	expect_frame_refused(c, &r, 3, "length 0x3ffffff8");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, poll_refuses_frame_running_past_the_ring_end)
{
	struct tring r;
	struct bus_consumer *c;
	uint32_t flen = bus_align8(BUS_FRAME_HDR + 1000);
	int n = (int)(BUS_RING_MIN / flen);
	uint64_t pos, room;

	/* Fill the lap up to its last few hundred bytes, without wrapping. */
	unsigned readable = frames_setup(&r, &c, n, 1000);

	pos = tail_pos(&r);
	room = BUS_RING_MIN - (pos & (BUS_RING_MIN - 1));
	cr_assert(pos < BUS_RING_MIN && room >= BUS_FRAME_HDR && room < flen, "room %llu",
		  (unsigned long long)room);
	forge(&r, pos, BUS_FRAME_DATA, (uint32_t)room + 8, tail_off(&r), 0, 0,
	      (uint32_t)room + 8 - BUS_FRAME_HDR, 0);
	expect_frame_refused(c, &r, readable, "frame 8 bytes past the ring end");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, poll_refuses_data_frame_whose_sizes_exceed_its_length)
{
	struct tring r;
	struct bus_consumer *c;

	frames_setup(&r, &c, 3, 10);
	forge(&r, tail_pos(&r), BUS_FRAME_DATA, 64, tail_off(&r), 8, 0, 100, 0);
	expect_frame_refused(c, &r, 3, "key_len 8 + value_len 100 in a 64-byte frame");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, poll_refuses_sizes_that_only_fit_when_summed_in_32_bits)
{
	struct tring r;
	struct bus_consumer *c;

	/* 0xfffffff0 + 0x10 + 0x10 wraps to 0x10 in 32 bits: 48 + 16 = 64. */
	frames_setup(&r, &c, 3, 10);
	forge(&r, tail_pos(&r), BUS_FRAME_DATA, 64, tail_off(&r), 0xfffffff0u, 0x10, 0x10, 0);
	expect_frame_refused(c, &r, 3, "sizes wrapping 32 bits");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* A lapped reader resyncs to the earliest checkpoint, which a producer
 * always leaves ahead of it.  One behind it (a hostile or damaged header)
 * is corrupt: moving "back" to it again and again would never end.  And
 * the records read in the same poll before the reader found itself
 * lapped are checked like any others: they were overwritten too (the
 * horizon says so), and none is handed out. */
Test(safety, a_checkpoint_behind_a_lapped_reader_is_ecorrupt_not_an_endless_resync)
{
	struct tring r;
	struct bus_consumer *c;
	struct bus_view v[16];
	struct bus_msg m[16];
	static uint8_t buf[1 << 16];
	int n;

	frames_setup(&r, &c, 10, 100);
	n = bus_consumer_poll(c, v, 5, 0);
	cr_assert_eq(n, 5);
	for (unsigned i = 0; i < BUS_CKPT_N; i++)
		atomic_store(&r.h->ckpt[i].pos, BUS_CKPT_EMPTY);
	/* Two laps on: the reader (in lap 0) is lapped; the only checkpoint
	 * is whole, but says offset 0, behind the reader's 5. */
	atomic_store(&r.h->tail.pos, 2 * r.size);
	atomic_store(&r.h->horizon, 2 * r.size + 64);
	atomic_store(&r.h->ckpt[0].off, 0);
	atomic_store(&r.h->ckpt[0].pos, 2 * r.size);
	n = bus_consumer_poll(c, v, 16, 0);
	cr_expect_eq(n, -BUS_ECORRUPT, "poll: %d (%s)", n, n < 0 ? bus_strerror(n) : "");
	n = bus_consumer_read(c, m, 16, buf, sizeof(buf), 0);
	cr_expect_eq(n, -BUS_ECORRUPT, "read: %d (%s)", n, n < 0 ? bus_strerror(n) : "");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* A lapped reader resyncs from the checkpoints, which producers write
 * only for what they have claimed: one past the tail (by position or by
 * offset) is no producer's.  Taken as it was, it moved the reader to
 * offset 2^40, reported some 2^41 records lost, and polled nothing for
 * ever after; with an offset 2^40 (whose 32-bit tag matches the record at
 * that position) it handed out records as offsets 2^40 and up. */
Test(safety, a_checkpoint_past_the_tail_is_ecorrupt_not_a_huge_gap)
{
	struct tring r;
	struct bus_consumer *c;
	struct bus_consumer_stats st;
	struct bus_view v[16];
	uint64_t pos;
	int n, err;

	frames_setup(&r, &c, 10, 100);
	n = bus_consumer_poll(c, v, 5, 0);
	cr_assert_eq(n, 5);
	for (unsigned i = 0; i < BUS_CKPT_N; i++)
		atomic_store(&r.h->ckpt[i].pos, BUS_CKPT_EMPTY);
	/* Two laps on, the only checkpoint whole and at the tail, but with
	 * an offset 2^40 past it (tail.off is 10). */
	atomic_store(&r.h->tail.pos, 2 * r.size);
	atomic_store(&r.h->horizon, 2 * r.size + 64);
	atomic_store(&r.h->ckpt[0].off, (1ull << 40) + 3);
	atomic_store(&r.h->ckpt[0].pos, 2 * r.size);
	n = bus_consumer_poll(c, v, 16, 0);
	cr_expect_eq(n, -BUS_ECORRUPT, "poll: %d (%s)", n, n < 0 ? bus_strerror(n) : "");
	cr_assert_eq(bus_consumer_position(c, 0, &pos), 0);
	cr_expect_eq(pos, 5, "position %llu", (unsigned long long)pos);
	bus_consumer_stats(c, &st);
	cr_expect_eq(st.lost, 0, "stats.lost %llu", (unsigned long long)st.lost);
	bus_consumer_close(c);

	/* Offset 2^40: its tag is that of the record at that position. */
	atomic_store(&r.h->ckpt[0].off, 1ull << 40);
	c = NULL;
	err = bus_consumer_open(b, "f", NULL, &c);
	n = err ? err : bus_consumer_poll(c, v, 16, 0);
	cr_expect_eq(n, -BUS_ECORRUPT, "open %d, poll %d (first offset %llu)", err, n,
		     n > 0 ? (unsigned long long)v[0].offset : 0ull);
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* The commit word's tag is the offset's low 32 bits: a record whose tag
 * matches may still be one 2^32 offsets away.  The frame's 64-bit offset
 * says which, and a reader that came by a checkpoint of the wrong offset
 * gets -BUS_ECORRUPT instead of records numbered 2^32 too high. */
Test(safety, a_record_of_another_64_bit_offset_is_ecorrupt)
{
	struct tring r;
	struct bus_consumer *c;
	struct bus_view v[16];
	int n, err;

	frames_setup(&r, &c, 10, 100);
	bus_consumer_close(c);
	for (unsigned i = 0; i < BUS_CKPT_N; i++)
		atomic_store(&r.h->ckpt[i].pos, BUS_CKPT_EMPTY);
	atomic_store(&r.h->tail.off, (1ull << 32) + 10);
	atomic_store(&r.h->ckpt[0].off, 1ull << 32);
	atomic_store(&r.h->ckpt[0].pos, 0);
	c = NULL;
	err = bus_consumer_open(b, "f", NULL, &c);
	cr_assert_eq(err, 0, "open: %s", bus_strerror(err));
	n = bus_consumer_poll(c, v, 16, 0);
	cr_expect_eq(n, -BUS_ECORRUPT, "poll: %d (first offset %llu)", n,
		     n > 0 ? (unsigned long long)v[0].offset : 0ull);
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* A seek by offset takes the nearest checkpoint below its target: one
 * past the tail made the seek succeed and every poll after it return
 * nothing, though the records exist. */
Test(safety, seek_refuses_a_checkpoint_past_the_tail)
{
	struct tring r;
	struct bus_consumer *c;
	struct bus_view v[64];
	uint64_t tp;
	int n, err;

	frames_setup(&r, &c, 200, 10);
	tp = tail_pos(&r);
	atomic_store(&r.h->ckpt[BUS_CKPT_N - 1].pos, BUS_CKPT_EMPTY);
	atomic_store(&r.h->ckpt[BUS_CKPT_N - 1].off, 150);
	atomic_store(&r.h->ckpt[BUS_CKPT_N - 1].pos, tp + 8 * r.size);
	err = bus_consumer_seek(c, 0, BUS_SEEK_OFFSET, 150);
	n = err ? err : bus_consumer_poll(c, v, 64, 100 * 1000000ll);
	cr_expect(err == -BUS_ECORRUPT || (n == 50 && v[0].offset == 150),
		  "seek %d, then poll %d (records 150..199 exist)", err, n);
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* Producers keep the horizon less than a ring ahead of the tail.  One
 * far past it made every reader spin: each poll found itself lapped and
 * no checkpoint in reach, and BUS_WAIT_SLEEP never slept. */
Test(safety, a_horizon_past_any_producers_reach_is_ecorrupt_not_a_busy_loop)
{
	struct bus_consumer_opts co = { .partition = 0, .wait = BUS_WAIT_SLEEP };
	struct bus_partition_info pi;
	struct tring r;
	struct bus_consumer *c;
	struct bus_view v[16];
	int64_t t0, ms;
	int n, err;

	frames_setup(&r, &c, 10, 10);
	bus_consumer_close(c);
	cr_assert_eq(bus_consumer_open(b, "f", &co, &c), 0);
	atomic_store(&r.h->horizon, tail_pos(&r) + 100 * r.size);
	t0 = tnow_ms();
	n = bus_consumer_poll(c, v, 16, 300 * 1000000ll);
	ms = tnow_ms() - t0;
	cr_expect_eq(n, -BUS_ECORRUPT, "poll: %d after %lld ms", n, (long long)ms);
	cr_expect(ms < 250, "poll took %lld ms", (long long)ms);
	err = bus_consumer_seek(c, 0, BUS_SEEK_EARLIEST, 0);
	cr_expect_eq(err, -BUS_ECORRUPT, "seek: %d (%s)", err, bus_strerror(err));
	err = bus_partition_describe(b, "f", 0, &pi);
	cr_expect_eq(err, -BUS_ECORRUPT, "describe: %d (%s)", err, bus_strerror(err));
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* The same header as seen by producers: -BUS_ECORRUPT, as bus.h says of a
 * header no producer leaves, not -BUS_EREPAIRED ("a stalled claim was
 * repaired"), which a caller retries, each try taking an offset that never
 * reaches a reader.  No record is published under it. */
Test(safety, a_horizon_past_any_producers_reach_is_ecorrupt_for_producers)
{
	struct bus_producer_opts po[2] = { { 0 }, { .flags = BUS_PRODUCER_EXCLUSIVE } };
	struct bus_record rec = { .value = "x", .value_len = 1 };
	struct tring r;
	struct bus_consumer *c;

	frames_setup(&r, &c, 10, 10);
	atomic_store(&r.h->horizon, tail_pos(&r) + 100 * r.size);
	for (int i = 0; i < 2; i++) {
		struct bus_producer *p;
		int err;

		cr_assert_eq(bus_producer_open(b, "f", &po[i], &p), 0);
		for (int k = 0; k < 3; k++) {
			err = bus_produce(p, 0, &rec, NULL, NULL);
			cr_expect_eq(err, -BUS_ECORRUPT, "%s producer, try %d: %d (%s)",
				     i ? "exclusive" : "shared", k, err, bus_strerror(err));
		}
		bus_producer_close(p);
		cr_expect_eq(atomic_load(&r.h->excl_owner), 0, "exclusivity kept");
		cr_expect_eq(atomic_load(&r.h->tail.off) & BUS_TAIL_EXCL, 0, "exclusive bit kept");
	}
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* A lapped reader whose frame does not parse is lapped, not corrupt: when
 * no checkpoint can be read at the moment (producers racing), the poll
 * returns nothing and the next one moves on, as for a lapped reader whose
 * frame does parse. */
Test(safety, a_lapped_reader_on_a_torn_frame_waits_for_a_checkpoint)
{
	struct tring r;
	struct bus_consumer *c;
	struct bus_view v[16];
	uint32_t flen = bus_align8(BUS_FRAME_HDR + 100);
	uint64_t w = BUS_COMMIT(BUS_FRAME_DATA, 13, 5);
	int n;

	frames_setup(&r, &c, 10, 100);
	n = bus_consumer_poll(c, v, 5, 0);
	cr_assert_eq(n, 5);
	/* Record 5's frame, half overwritten (a length no producer
	 * writes); the reader two laps behind; no checkpoint readable. */
	for (unsigned i = 0; i < BUS_CKPT_N; i++)
		atomic_store(&r.h->ckpt[i].pos, BUS_CKPT_EMPTY);
	memcpy(r.base + 5 * flen, &w, sizeof(w));
	atomic_store(&r.h->tail.pos, 2 * r.size);
	atomic_store(&r.h->horizon, 2 * r.size + 64);
	n = bus_consumer_poll(c, v, 16, 0);
	cr_expect_eq(n, 0, "poll with no checkpoint: %d (%s)", n, n < 0 ? bus_strerror(n) : "");
	/* A checkpoint appears, at record 10 (written at the start of the
	 * lap): the reader moves there and reports 5..9 lost. */
	forge(&r, 2 * r.size, BUS_FRAME_DATA, flen, 10, 0, 0, 100, 0);
	atomic_store(&r.h->tail.off, 11);
	atomic_store(&r.h->ckpt[0].off, 10);
	atomic_store(&r.h->ckpt[0].pos, 2 * r.size);
	n = bus_consumer_poll(c, v, 16, 0);
	cr_assert_eq(n, 1, "poll: %d (%s)", n, n < 0 ? bus_strerror(n) : "");
	cr_expect_eq(v[0].offset, 10);
	cr_expect_eq(v[0].lost_before, 5);
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* Producers leave the tail aligned; one that is not (a hostile header) is
 * refused by both kinds of producer, and nothing is written. */
Test(safety, produce_refuses_an_unaligned_tail)
{
	struct bus_producer_opts po[2] = { { 0 }, { .flags = BUS_PRODUCER_EXCLUSIVE } };
	struct tring r;
	struct bus_consumer *c;
	struct bus_record rec = { .value = "x", .value_len = 1 };

	frames_setup(&r, &c, 3, 10);
	atomic_fetch_add(&r.h->tail.pos, 3);
	for (int i = 0; i < 2; i++) {
		struct bus_producer *p;
		uint8_t before[BUS_RING_MIN];
		int err;

		memcpy(before, r.base, sizeof(before));
		cr_assert_eq(bus_producer_open(b, "f", &po[i], &p), 0);
		err = bus_produce(p, 0, &rec, NULL, NULL);
		cr_expect_eq(err, -BUS_ECORRUPT, "%s producer: %d (%s)", i ? "exclusive" : "shared",
			     err, bus_strerror(err));
		cr_expect(memcmp(before, r.base, sizeof(before)) == 0, "the ring was written");
		bus_producer_close(p);
		cr_expect_eq(atomic_load(&r.h->excl_owner), 0, "exclusivity kept");
		cr_expect_eq(atomic_load(&r.h->tail.off) & BUS_TAIL_EXCL, 0, "exclusive bit kept");
	}
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

/* excl_owner holds pid -R while process R clears a dead exclusive owner's bit
 * (producer.c); a hostile INT32_MIN there names no process (its negation
 * does not fit an int32_t: undefined, which UBSan, `make asan`, aborts on)
 * and is taken over as a dead reaper's mark, by both kinds of producer. */
Test(safety, an_exclusive_mark_of_int32_min_is_a_dead_reaper)
{
	struct bus_producer_opts po[2] = { { 0 }, { .flags = BUS_PRODUCER_EXCLUSIVE } };
	struct tring r;
	struct bus_consumer *c;
	struct bus_record rec = { .value = "x", .value_len = 1 };
	struct bus_view v[4];

	frames_setup(&r, &c, 3, 10);
	drain(c, 3);
	for (int i = 0; i < 2; i++) {
		struct bus_producer *p;
		uint64_t off;
		int err;

		atomic_store(&r.h->excl_owner, BUS_OWNER(INT32_MIN, 0));
		atomic_fetch_or(&r.h->tail.off, BUS_TAIL_EXCL);
		cr_assert_eq(bus_producer_open(b, "f", &po[i], &p), 0);
		err = bus_produce(p, 0, &rec, NULL, &off);
		cr_assert_eq(err, 0, "%s producer: %d (%s)", i ? "exclusive" : "shared", err,
			     bus_strerror(err));
		cr_expect_eq(off, 3u + (uint64_t)i);
		cr_assert_eq(bus_consumer_poll(c, v, 4, 0), 1);
		cr_expect_eq(v[0].offset, off);
		bus_producer_close(p);
		cr_expect_eq(atomic_load(&r.h->excl_owner), 0, "the mark is gone");
		cr_expect_eq(atomic_load(&r.h->tail.off) & BUS_TAIL_EXCL, 0, "the bit is clear");
	}
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, poll_refuses_frame_of_unknown_type)
{
	struct tring r;
	struct bus_consumer *c;

	frames_setup(&r, &c, 3, 10);
	forge(&r, tail_pos(&r), 0, 64, tail_off(&r), 0, 0, 16, 0);
	expect_frame_refused(c, &r, 3, "frame type 0");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, poll_refuses_data_frame_shorter_than_its_header)
{
	struct tring r;
	struct bus_consumer *c;

	frames_setup(&r, &c, 3, 10);
	forge(&r, tail_pos(&r), BUS_FRAME_DATA, 16, tail_off(&r), 0, 0, 0, 0);
	expect_frame_refused(c, &r, 3, "16-byte data frame");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, poll_returns_on_a_padding_frame_that_spans_the_ring)
{
	struct tring r;
	struct bus_consumer *c;

	/* Padding does not consume an offset: a padding frame as long as the
	 * ring leads back to itself, with the same tag, forever. */
	frames_setup(&r, &c, 0, 0);
	forge(&r, 0, BUS_FRAME_PAD, BUS_RING_MIN, 0, 0, 0, 0, 0);
	expect_frame_refused(c, &r, 0, "padding frame spanning the ring at position 0");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, poll_returns_on_padding_that_chains_into_padding)
{
	struct tring r;
	struct bus_consumer *c;
	uint32_t flen = bus_align8(BUS_FRAME_HDR + 1000);
	int n = (int)(BUS_RING_MIN / flen);
	uint64_t pos;

	/* Once the lap is read, a padding frame that ends it (as producers
	 * write them), and at the start of the next lap another one leading
	 * back to the first. */
	/* Two statements: the order in which a call's arguments are
	 * evaluated is unspecified, and c is set by frames_setup(). */
	unsigned made = frames_setup(&r, &c, n, 1000);

	drain(c, made);
	pos = tail_pos(&r);
	forge(&r, pos, BUS_FRAME_PAD, (uint32_t)(BUS_RING_MIN - pos), tail_off(&r), 0, 0, 0, 0);
	forge(&r, 0, BUS_FRAME_PAD, (uint32_t)pos, tail_off(&r), 0, 0, 0, 0);
	expect_frame_refused(c, &r, 0, "padding cycle");
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, seek_by_time_returns_on_a_padding_frame_that_spans_the_ring)
{
	struct tring r;
	struct bus_consumer *c;
	struct probe *pr;

	frames_setup(&r, &c, 0, 0);
	forge(&r, 0, BUS_FRAME_PAD, BUS_RING_MIN, 0, 0, 0, 0, 0);
	pr = probe_run(c, &r, PROBE_SEEK_TIME, "bus_consumer_seek(BUS_SEEK_TIME) on a padding cycle");
	cr_expect_eq(pr->views, 0u, "no record exists, %u views", pr->views);
	cr_expect_eq(pr->badviews, 0u, "%s", pr->why);
	cr_expect(pr->ret[0] <= 0, "seek returned %d", pr->ret[0]);
	munmap(pr, sizeof(*pr));
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, view_header_refuses_headers_that_overrun_the_record)
{
	struct tring r;
	struct bus_consumer *c;
	struct probe *pr;
	uint8_t *hb;
	uint16_t nl;
	uint32_t vl, len = bus_align8(BUS_FRAME_HDR + 8);

	frames_setup(&r, &c, 0, 0);
	/* Record 0: header 0 is {"x", ""}, then 1 stray byte where header 1
	 * (of the 3 it claims) would start. */
	hb = forge(&r, 0, BUS_FRAME_DATA, len, 0, 0, 8, 0, 3);
	nl = 1;
	vl = 0;
	memcpy(hb, &nl, 2);
	memcpy(hb + 2, &vl, 4);
	hb[6] = 'x';
	hb[7] = 0xee;
	/* Record 1: one header whose sizes run far past the record. */
	hb = forge(&r, len, BUS_FRAME_DATA, len, 1, 0, 8, 0, 1);
	nl = 0xffff;
	vl = 0xffffffffu;
	memcpy(hb, &nl, 2);
	memcpy(hb + 2, &vl, 4);

	pr = probe_run(c, &r, PROBE_HEADERS, "bus_view_header on hostile headers");
	cr_assert_eq(pr->ret[0], 2, "poll: %d (%s)", pr->ret[0], bus_strerror(pr->ret[0]));
	cr_expect_eq(pr->badviews, 0u, "%s", pr->why);
	cr_expect_eq(pr->hdr[0], 0, "header 0 is whole: %d", pr->hdr[0]);
	cr_expect_str_eq(pr->hdr_name, "x");
	cr_expect_eq(pr->hdr[1], -BUS_ECORRUPT, "header 1 (1 byte left): %d", pr->hdr[1]);
	cr_expect_eq(pr->hdr[2], -BUS_ECORRUPT, "header 2 (past the end): %d", pr->hdr[2]);
	cr_expect_eq(pr->hdr[3], -BUS_ECORRUPT, "header with sizes 0xffff/0xffffffff: %d",
		     pr->hdr[3]);
	munmap(pr, sizeof(*pr));
	bus_consumer_close(c);
	munmap(r.base, r.len);
}

Test(safety, unaligned_checkpoint_never_yields_an_unaligned_view)
{
	struct tring r;
	struct bus_consumer *c;
	struct probe *pr;
	int err;

	/* Checkpoint 0 moved to position 4, where a frame was forged: a
	 * reader that trusts it reads frames at unaligned addresses. */
	frames_setup(&r, &c, 3, 10);
	bus_consumer_close(c);
	atomic_store(&r.h->ckpt[0].pos, 4);
	atomic_store(&r.h->ckpt[0].off, 0);
	forge(&r, 4, BUS_FRAME_DATA, 56, 0, 0, 0, 8, 0);
	err = bus_consumer_open(b, "f", NULL, &c);
	if (err == 0) {
		pr = probe_run(c, &r, PROBE_POLL, "poll from an unaligned checkpoint");
		cr_expect_eq(pr->badviews, 0u, "%s", pr->why);
		munmap(pr, sizeof(*pr));
		bus_consumer_close(c);
	} else {
		cr_expect(err < 0, "consumer_open: %d", err);
	}
	munmap(r.base, r.len);
}

/* ------------------------------------- files truncated under a mapping
 *
 * A ring file or the control region cut (ftruncate) by another process
 * while this one has it mapped: its pages are gone, and touching them
 * raised SIGBUS.  Now each call that would hand out or acknowledge data
 * returns -BUS_ECORRUPT, and the library's log names the file.  The calls
 * run in a child (a fault there ends the child, not the suite), which
 * opens its own handle on the test's bus with a log callback. */

struct cut {
	char path[4300]; /* the file to cut */
	off_t to;        /* its new size */
	unsigned flags;  /* producer flags / wait strategy */
	int64_t timeout; /* consumer: poll's timeout */
	_Atomic int ready;
	int ret[24];
	int n;
	int64_t ms;      /* how long the awaited call took */
	char log[4096];  /* the ERROR and WARN lines logged in the child */
};

static void cut_log(void *ctx, enum bus_log_level lvl, const char *msg)
{
	struct cut *k = ctx;
	size_t n = strlen(k->log);

	if (lvl <= BUS_LOG_WARN && n + strlen(msg) + 2 < sizeof(k->log))
		snprintf(k->log + n, sizeof(k->log) - n, "%s\n", msg);
}

/* In the child: a handle on the test's bus that logs into @k. */
static struct bus *cut_bus(struct cut *k)
{
	struct bus_opts o = env.opts;
	struct bus *x = NULL;

	o.log = cut_log;
	o.log_ctx = k;
	return bus_open(&x, &o) == 0 ? x : NULL;
}

static struct cut *cut_new(const char *path, off_t to)
{
	struct cut *k = shared_mem(sizeof(*k));

	snprintf(k->path, sizeof(k->path), "%s", path);
	k->to = to;
	return k;
}

static void cut_expect_logged(const struct cut *k, const char *what)
{
	cr_expect(strstr(k->log, k->path) && strstr(k->log, "truncated"),
		  "%s: no ERROR naming %s as truncated; logged: %s", what, k->path, k->log);
}

#define CUT_RET(k, call) ((k)->ret[(k)->n++] = (call))

static int produce_across_a_cut(void *arg)
{
	struct cut *k = arg;
	struct bus_record r = { .value = "hello", .value_len = 5 };
	struct bus_producer_opts po = { .flags = k->flags };
	struct bus_producer *p;
	struct bus_claim cl;
	struct bus *x = cut_bus(k);

	if (!x || bus_producer_open(x, "cut", &po, &p))
		return 1;
	CUT_RET(k, bus_produce(p, 0, &r, NULL, NULL)); /* 0: before the cut */
	if (truncate(k->path, k->to))
		return 2;
	CUT_RET(k, bus_produce(p, 0, &r, NULL, NULL));
	CUT_RET(k, bus_produce(p, 0, &r, NULL, NULL));
	if (bus_producer_claim(p, 0, NULL, 0, 5, &cl) == 0) {
		memcpy(cl.value, "hello", 5);
		CUT_RET(k, bus_producer_commit(p, &cl, 0));
	} else {
		CUT_RET(k, -BUS_ECORRUPT); /* refused at the claim: as good */
	}
	CUT_RET(k, bus_produce(p, 1, &r, NULL, NULL)); /* the other partition: whole */
	bus_producer_close(p);
	bus_close(x);
	return 0;
}

/* A ring cut under a live producer: it is told (-BUS_ECORRUPT), again and
 * again, and never acknowledges a record written into the lost pages; the
 * other partition goes on.  Cut to nothing, and cut past its records (only
 * the header is gone); concurrent and exclusive producers. */
Test(safety, a_ring_truncated_under_a_producer_is_ecorrupt_not_sigbus)
{
	static const unsigned flags[] = { 0, BUS_PRODUCER_EXCLUSIVE };

	for (int i = 0; i < 4; i++) {
		char topic[16], path[4300], what[96];
		uint32_t gen;
		struct cut *k;

		snprintf(topic, sizeof(topic), "cut");
		gen = mk_topic(topic, 2, BUS_RING_MIN);
		ring_file(topic, gen, 0, path, sizeof(path));
		k = cut_new(path, i & 1 ? BUS_RING_MIN : 0);
		k->flags = flags[i >> 1];
		snprintf(what, sizeof(what), "%s producer, ring cut to %lld bytes",
			 k->flags ? "exclusive" : "concurrent", (long long)k->to);
		run_bounded(produce_across_a_cut, k, CHILD_MS, what);
		cr_assert_eq(k->n, 5, "%s: %d calls", what, k->n);
		cr_expect_eq(k->ret[0], 0, "%s: before the cut: %s", what, bus_strerror(k->ret[0]));
		for (int j = 1; j < 4; j++)
			cr_expect_eq(k->ret[j], -BUS_ECORRUPT, "%s: call %d after the cut: %d (%s)",
				     what, j, k->ret[j], bus_strerror(k->ret[j]));
		cr_expect_eq(k->ret[4], 0, "%s: the other partition: %s", what,
			     bus_strerror(k->ret[4]));
		cut_expect_logged(k, what);
		munmap(k, sizeof(*k));
		cr_assert_eq(bus_topic_delete(b, topic), 0);
	}
}

static int wait_across_a_cut(void *arg)
{
	struct cut *k = arg;
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY,
					.wait = (enum bus_wait)k->flags,
					.start = BUS_SEEK_LATEST };
	struct bus_consumer *c;
	struct bus_view v[4];
	struct bus *x = cut_bus(k);
	int64_t t0;

	if (!x || bus_consumer_open(x, "idle", &co, &c))
		return 1;
	atomic_store(&k->ready, 1);
	t0 = tnow_ms();
	CUT_RET(k, bus_consumer_poll(c, v, 4, k->timeout));
	k->ms = tnow_ms() - t0;
	CUT_RET(k, bus_consumer_poll(c, v, 4, 0));
	bus_consumer_close(c);
	bus_close(x);
	return 0;
}

/* A consumer waiting for records (any wait strategy, no timeout or a long
 * one) on a ring that is cut under it: the wait ends with -BUS_ECORRUPT,
 * not for ever and not with a timeout.  Also when the cut leaves every
 * line the waiting consumer polls (only the ring's last page goes): it
 * looks at least once a second. */
Test(safety, a_consumer_waiting_on_a_truncated_ring_is_told_not_left_waiting)
{
	static const enum bus_wait waits[] = { BUS_WAIT_SPIN, BUS_WAIT_YIELD, BUS_WAIT_SLEEP };
	static const char *const wname[] = { "spin", "yield", "sleep" };

	for (int i = 0; i < 7; i++) {
		char path[4300], what[128];
		struct stat st;
		uint32_t gen = mk_topic("idle", 1, BUS_RING_MIN);
		struct cut *k;
		pid_t pid;
		int st_child;

		ring_file("idle", gen, 0, path, sizeof(path));
		cr_assert_eq(stat(path, &st), 0);
		/* 0-2: cut to nothing; 3-5: only the last page; 6: sleep with
		 * a timeout, which ends sooner with the error. */
		k = cut_new(path, i < 3 || i == 6 ? 0 : st.st_size - 4096);
		k->flags = waits[i < 6 ? i % 3 : 2];
		k->timeout = i == 6 ? 8000 * 1000000ll : -1;
		snprintf(what, sizeof(what), "%s wait, %s, ring cut to %lld bytes", wname[k->flags],
			 k->timeout < 0 ? "no timeout" : "8 s timeout", (long long)k->to);
		pid = tfork(wait_across_a_cut, k);
		for (int64_t t = tnow_ms(); !atomic_load(&k->ready) && tnow_ms() - t < CHILD_MS;)
			usleep(1000);
		usleep(200 * 1000); /* into its wait */
		cr_assert_eq(truncate(path, k->to), 0, "truncate: %s", strerror(errno));
		if (twait_status(pid, CHILD_MS, &st_child) < 0)
			cr_assert_fail("%s: still waiting after %d ms", what, CHILD_MS);
		cr_assert(!WIFSIGNALED(st_child), "%s: killed by signal %d (%s)", what,
			  WTERMSIG(st_child), strsignal(WTERMSIG(st_child)));
		cr_assert(WIFEXITED(st_child) && WEXITSTATUS(st_child) == 0, "%s: exit %d", what,
			  WEXITSTATUS(st_child));
		cr_expect_eq(k->ret[0], -BUS_ECORRUPT, "%s: the wait returned %d (%s)", what,
			     k->ret[0], bus_strerror(k->ret[0]));
		cr_expect_eq(k->ret[1], -BUS_ECORRUPT, "%s: the next poll returned %d (%s)", what,
			     k->ret[1], bus_strerror(k->ret[1]));
		cr_expect(k->ms < 3000, "%s: told after %lld ms", what, (long long)k->ms);
		cut_expect_logged(k, what);
		munmap(k, sizeof(*k));
		cr_assert_eq(bus_topic_delete(b, "idle"), 0);
	}
}

static int read_across_a_cut(void *arg)
{
	struct cut *k = arg;
	struct bus_view v[8];
	struct bus_msg m[8];
	static uint8_t buf[8 * 4096];
	struct bus_consumer *c, *c2;
	struct bus *x = cut_bus(k);
	volatile uint8_t sink = 0;
	int n;

	if (!x || bus_consumer_open(x, "full", NULL, &c))
		return 1;
	n = bus_consumer_poll(c, v, 8, 0);
	CUT_RET(k, n); /* 8 views, read before the cut */
	if (n != 8 || bus_consumer_check(c, v, 8) != 8)
		return 2;
	if (truncate(k->path, k->to))
		return 3;
	/* The views' bytes read as zeros now (no fault); the check says so. */
	for (int i = 0; i < n; i++)
		for (uint32_t j = 0; j < v[i].value_len; j++)
			sink = (uint8_t)(sink + ((const uint8_t *)v[i].value)[j]);
	CUT_RET(k, bus_consumer_check(c, v, 8));
	CUT_RET(k, bus_consumer_poll(c, v, 8, 0));
	CUT_RET(k, bus_consumer_read(c, m, 8, buf, sizeof(buf), 0));
	CUT_RET(k, bus_consumer_seek(c, BUS_PARTITION_ANY, BUS_SEEK_EARLIEST, 0));
	CUT_RET(k, bus_consumer_open(x, "full", NULL, &c2));
	if (k->ret[k->n - 1] == 0)
		bus_consumer_close(c2);
	bus_consumer_close(c);
	bus_close(x);
	return (int)(sink & 0);
}

/* A consumer with records waiting in a ring that is cut: views read before
 * the cut fail their check, and nothing is handed out as a record from the
 * zeros that replace the lost pages (poll, read, seek, a new consumer). */
Test(safety, a_consumer_with_records_pending_on_a_truncated_ring_gets_no_zeros)
{
	for (int i = 0; i < 2; i++) {
		static uint8_t val[200];
		struct bus_record rec = { .value = val, .value_len = sizeof(val) };
		char path[4300], what[64];
		struct bus_producer *p;
		uint32_t gen = mk_topic("full", 1, BUS_RING_MIN);
		struct cut *k;

		memset(val, 'v', sizeof(val));
		cr_assert_eq(bus_producer_open(b, "full", NULL, &p), 0);
		for (int j = 0; j < 40; j++)
			cr_assert_eq(bus_produce(p, 0, &rec, NULL, NULL), 0);
		bus_producer_close(p);
		ring_file("full", gen, 0, path, sizeof(path));
		k = cut_new(path, i ? BUS_RING_MIN : 0);
		snprintf(what, sizeof(what), "ring cut to %lld bytes", (long long)k->to);
		run_bounded(read_across_a_cut, k, CHILD_MS, what);
		cr_assert_eq(k->n, 6, "%s: %d calls", what, k->n);
		cr_expect_eq(k->ret[0], 8, "%s: poll before the cut: %d", what, k->ret[0]);
		for (int j = 1; j < 6; j++)
			cr_expect_eq(k->ret[j], -BUS_ECORRUPT, "%s: call %d after the cut: %d (%s)",
				     what, j, k->ret[j], bus_strerror(k->ret[j]));
		cut_expect_logged(k, what);
		munmap(k, sizeof(*k));
		cr_assert_eq(bus_topic_delete(b, "full"), 0);
	}
}

static int first_topic(void *ctx, const struct bus_topic_info *ti)
{
	(void)ti;
	(*(int *)ctx)++;
	return 0;
}

static int table_across_a_cut(void *arg)
{
	struct cut *k = arg;
	struct bus_record r = { .value = "x", .value_len = 1 };
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	struct bus_partition_info pi;
	struct bus_producer *p, *p2;
	struct bus_consumer *c, *c2;
	struct bus_view v[4];
	struct bus *x = cut_bus(k), *y;
	int listed = 0;

	if (!x || bus_producer_open(x, "tab", NULL, &p) || bus_consumer_open(x, "tab", NULL, &c))
		return 1;
	if (truncate(k->path, k->to))
		return 2;
	CUT_RET(k, bus_topic_list(x, first_topic, &listed));
	CUT_RET(k, bus_topic_describe(x, "tab", &ti));
	CUT_RET(k, bus_partition_describe(x, "tab", 0, &pi));
	CUT_RET(k, bus_producer_open(x, "tab", NULL, &p2));
	if (k->ret[k->n - 1] == 0)
		bus_producer_close(p2);
	CUT_RET(k, bus_consumer_open(x, "tab", NULL, &c2));
	if (k->ret[k->n - 1] == 0)
		bus_consumer_close(c2);
	CUT_RET(k, bus_produce(p, 0, &r, NULL, NULL));
	CUT_RET(k, bus_consumer_poll(c, v, 4, -1));
	bus_topic_config_init(&cfg);
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.ring_size = BUS_RING_MIN;
	CUT_RET(k, bus_topic_create(x, "new", &cfg));
	CUT_RET(k, bus_topic_delete(x, "tab"));
	{
		struct bus_opts o = env.opts;
		CUT_RET(k, bus_open(&y, &o));
		if (k->ret[k->n - 1] == 0)
			bus_close(y);
	}
	k->ret[k->n++] = listed;
	bus_producer_close(p);
	bus_consumer_close(c);
	bus_close(x);
	return 0;
}

/* The control region cut under a live bus handle: the topic table reads
 * as zeros ("no topic"), which no call takes for an answer: list,
 * describe, opens, create, delete, produce and poll all return
 * -BUS_ECORRUPT, and nothing is created in its place. */
Test(safety, a_control_region_truncated_under_a_bus_is_ecorrupt_not_sigbus)
{
	static const off_t to[] = { 0, BUS_CTL_TOPICS_OFF + 4096 };

	for (int i = 0; i < 2; i++) {
		char path[512], what[64];
		struct cut *k;
		int ring_files;

		ctl_file(env.name, path, sizeof(path));
		/* Each round on a bus of its own: the cut one stays cut. */
		if (i) {
			struct bus *nb;
			snprintf(env.name + strlen(env.name), 8, "-%d", i);
			env.opts.name = env.name;
			setenv("BUS_NAME", env.name, 1);
			cr_assert_eq(bus_open(&nb, &env.opts), 0);
			bus_close(b);
			b = nb;
			ctl_file(env.name, path, sizeof(path));
		}
		mk_topic("tab", 1, BUS_RING_MIN);
		k = cut_new(path, to[i]);
		snprintf(what, sizeof(what), "control region cut to %lld bytes", (long long)to[i]);
		run_bounded(table_across_a_cut, k, CHILD_MS, what);
		cr_assert_eq(k->n, 11, "%s: %d calls", what, k->n);
		for (int j = 0; j < 10; j++)
			cr_expect_eq(k->ret[j], -BUS_ECORRUPT, "%s: call %d: %d (%s)", what, j,
				     k->ret[j], bus_strerror(k->ret[j]));
		cr_expect_eq(k->ret[10], 0, "%s: the list called back for %d topics", what,
			     k->ret[10]);
		cut_expect_logged(k, what);
		{
			char cmd[600];
			FILE *f;
			snprintf(cmd, sizeof(cmd), "ls %s | grep -c '\\.new\\.' || true", env.shm_dir);
			f = popen(cmd, "r");
			cr_assert(f);
			cr_assert_eq(fscanf(f, "%d", &ring_files), 1);
			pclose(f);
		}
		cr_expect_eq(ring_files, 0, "%s: the create made %d ring files", what, ring_files);
		munmap(k, sizeof(*k));
	}
}

static int guard_full(void *arg)
{
	struct cut *k = arg;
	struct bus_record r = { .value = "x", .value_len = 1 };
	struct bus_producer *p;
	struct bus *x;
	void *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		return 1;
	while (bus_mapguard_add(m, 4096) >= 0)
		k->ret[0]++;
	x = cut_bus(k);
	if (!x)
		return 2;
	CUT_RET(k, bus_producer_open(x, "many", NULL, &p));
	if (k->ret[k->n - 1] == 0) {
		CUT_RET(k, bus_produce(p, 0, &r, NULL, NULL));
		bus_producer_close(p);
	}
	bus_close(x);
	return 0;
}

/* Past the guard's capacity a mapping goes unguarded: the bus works as it
 * did before the guard, and the log says so once per process. */
Test(safety, past_the_sigbus_guards_capacity_mappings_work_unguarded_and_it_is_said_once)
{
	struct cut *k = cut_new("", 0);
	const char *w;

	mk_topic("many", 2, BUS_RING_MIN);
	k->n = 1;
	run_bounded(guard_full, k, CHILD_MS, "guard full");
	cr_expect(k->ret[0] > BUS_MAPGUARD_SLOTS - 64, "only %d windows guarded", k->ret[0]);
	cr_expect_eq(k->ret[1], 0, "producer_open: %s", bus_strerror(k->ret[1]));
	cr_expect_eq(k->ret[2], 0, "produce: %s", bus_strerror(k->ret[2]));
	w = strstr(k->log, "not protected against a truncation");
	cr_expect(w, "no WARN that mappings go unguarded: %s", k->log);
	cr_expect(w && !strstr(w + 1, "not protected against a truncation"), "said more than once: %s",
		  k->log);
	munmap(k, sizeof(*k));
}

/* --------------------------------------------------------- permissions */

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

/* Open bus @name with @flags and a one-partition topic "t" in it; returns
 * the handle and the ring's path. */
static struct bus *perm_bus(const char *name, unsigned flags, char *ring, size_t rlen)
{
	struct bus_topic_config cfg;
	struct bus_topic_info ti;
	struct bus *x;
	int err = open_named(name, flags, &x, NULL);

	cr_assert_eq(err, 0, "bus_open %s: %s", name, bus_strerror(err));
	bus_topic_config_init(&cfg);
	cfg.ring_size = BUS_RING_MIN;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	err = bus_topic_create(x, "t", &cfg);
	cr_assert_eq(err, 0, "create: %s", bus_strerror(err));
	cr_assert_eq(bus_topic_describe(x, "t", &ti), 0);
	snprintf(ring, rlen, "%s/bus.%s.t.%u.0", env.shm_dir, name, ti.generation);
	return x;
}

Test(safety, files_are_0660_by_default_and_0600_when_private)
{
	char shared[128], priv[128], path[512], ring[4300];
	mode_t old = umask(022);
	struct bus *x;

	snprintf(shared, sizeof(shared), "%s-shared", env.name);
	snprintf(priv, sizeof(priv), "%s-private", env.name);

	x = perm_bus(shared, 0, ring, sizeof(ring));
	ctl_file(shared, path, sizeof(path));
	cr_expect_eq(mode_of(path), 0660, "ctl mode %o under umask 022", mode_of(path));
	cr_expect_eq(mode_of(ring), 0660, "ring mode %o under umask 022", mode_of(ring));
	bus_close(x);

	x = perm_bus(priv, BUS_F_PRIVATE, ring, sizeof(ring));
	ctl_file(priv, path, sizeof(path));
	cr_expect_eq(mode_of(path), 0600, "private ctl mode %o", mode_of(path));
	cr_expect_eq(mode_of(ring), 0600, "private ring mode %o", mode_of(ring));
	bus_close(x);
	umask(old);
}

struct perm_job {
	gid_t gid;
	const char *shared, *priv;
	/* results */
	int step_err;   /* -errno of a failed setgroups/setgid/setuid */
	int shared_err; /* bus_open of the 0660 bus */
	int prod_err;   /* bus_producer_open + bus_produce there, if it opened */
	int priv_err;   /* bus_open of the 0600 bus */
};

static int open_as_nobody(void *arg)
{
	struct perm_job *j = arg;
	struct bus_opts o = env.opts;
	struct bus *x;

	if (setgroups(0, NULL) < 0 || setgid(j->gid) < 0 || setuid(65534) < 0) {
		j->step_err = -errno;
		return 0;
	}
	o.name = j->shared;
	j->shared_err = bus_open(&x, &o);
	if (j->shared_err == 0) {
		struct bus_producer *p;
		struct bus_record r = { .value = "x", .value_len = 1 };
		j->prod_err = bus_producer_open(x, "t", NULL, &p);
		if (j->prod_err == 0) {
			j->prod_err = bus_produce(p, 0, &r, NULL, NULL);
			bus_producer_close(p);
		}
		bus_close(x);
	}
	o.name = j->priv;
	j->priv_err = bus_open(&x, &o);
	if (j->priv_err == 0)
		bus_close(x);
	return 0;
}

Test(safety, other_users_get_eacces_and_the_group_gets_in)
{
	char shared[128], priv[128], ring[4300];
	struct bus *xs, *xp;
	struct perm_job *j;

	if (geteuid() != 0) {
		tsuite_teardown(); /* Criterion runs no .fini after a skip */
		cr_skip("needs root: the test drops a child to uid 65534 (nobody) to check "
			"that 0600 files refuse it (running as uid %d)",
			(int)geteuid());
	}
	snprintf(shared, sizeof(shared), "%s-shared", env.name);
	snprintf(priv, sizeof(priv), "%s-private", env.name);
	/* Only the files' modes stand in the way: the folder is searchable. */
	cr_assert_eq(chmod(env.shm_dir, 0755), 0, "chmod: %s", strerror(errno));
	xs = perm_bus(shared, 0, ring, sizeof(ring));
	xp = perm_bus(priv, BUS_F_PRIVATE, ring, sizeof(ring));

	/* nobody:nogroup: neither owner nor group. */
	j = shared_mem(sizeof(*j));
	j->gid = 65534;
	j->shared = shared;
	j->priv = priv;
	run_bounded(open_as_nobody, j, CHILD_MS, "uid 65534 gid 65534");
	cr_assert_eq(j->step_err, 0, "dropping privileges: %s", strerror(-j->step_err));
	cr_expect_eq(j->shared_err, -EACCES, "0660 bus as another user: %d (%s)", j->shared_err,
		     bus_strerror(j->shared_err));
	cr_expect_eq(j->priv_err, -EACCES, "0600 bus as another user: %d (%s)", j->priv_err,
		     bus_strerror(j->priv_err));

	/* nobody in the files' group (0): 0660 lets it in, 0600 does not. */
	memset(j, 0, sizeof(*j));
	j->gid = 0;
	j->shared = shared;
	j->priv = priv;
	run_bounded(open_as_nobody, j, CHILD_MS, "uid 65534 gid 0");
	cr_assert_eq(j->step_err, 0, "dropping privileges: %s", strerror(-j->step_err));
	cr_expect_eq(j->shared_err, 0, "0660 bus as a group member: %d (%s)", j->shared_err,
		     bus_strerror(j->shared_err));
	cr_expect_eq(j->prod_err, 0, "producing as a group member: %d (%s)", j->prod_err,
		     bus_strerror(j->prod_err));
	cr_expect_eq(j->priv_err, -EACCES, "0600 bus as a group member: %d (%s)", j->priv_err,
		     bus_strerror(j->priv_err));

	munmap(j, sizeof(*j));
	bus_close(xs);
	bus_close(xp);
}
