/* test_mp.c - several processes on one partition: ordering and density,
 * a producer killed mid-claim, a stalled claimant, sleeping consumers. */
#include <criterion/criterion.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "util.h"

TestSuite(mp, .init = tsuite_setup, .fini = tsuite_teardown, .timeout = 240);

#define NPROD 3
#define NCONS 2
#define PAYLOAD 40

struct rec {
	uint32_t producer;
	uint32_t seq;
	uint64_t sum;
	uint8_t payload[PAYLOAD];
};

struct job {
	int id;
	int records;
	int ready_fd; /* written once the child is attached */
	int go_fd;    /* read before starting */
	unsigned pflags;
	int32_t partition;
};

/* An ephemeral topic with the overflow policy @overflow. */
static void mk_topic_of(const char *name, uint32_t parts, uint64_t ring, uint32_t overflow)
{
	struct bus_topic_config cfg;
	int err;

	bus_topic_config_init(&cfg);
	cfg.partitions = parts;
	cfg.ring_size = ring;
	cfg.flags = BUS_TOPIC_EPHEMERAL;
	cfg.overflow = overflow;
	err = bus_topic_create(b, name, &cfg);
	cr_assert_eq(err, 0, "create: %s", bus_strerror(err));
}

static void mk_topic(const char *name, uint32_t parts, uint64_t ring)
{
	mk_topic_of(name, parts, ring, BUS_OVERFLOW_BLOCK);
}

static struct bus *child_bus(void)
{
	struct bus *cb = NULL;
	if (bus_open(&cb, &env.opts))
		_exit(90);
	return cb;
}

static void sync_child(struct job *j)
{
	char c = 1;
	if (write(j->ready_fd, &c, 1) != 1 || read(j->go_fd, &c, 1) != 1)
		_exit(91);
}

static int producer_main(void *arg)
{
	struct job *j = arg;
	struct bus *cb = child_bus();
	struct bus_producer *p;
	struct bus_producer_opts po = { .flags = j->pflags };
	struct rec r;

	if (bus_producer_open(cb, "mp", &po, &p))
		return 10;
	sync_child(j);
	for (int i = 0; i < j->records; i++) {
		struct bus_record br = { .value = &r, .value_len = sizeof(r) };
		r.producer = (uint32_t)j->id;
		r.seq = (uint32_t)i;
		for (int k = 0; k < PAYLOAD; k++)
			r.payload[k] = (uint8_t)(i * 31 + k * 7 + j->id);
		r.sum = tsum(r.payload, PAYLOAD);
		int err = bus_produce(p, j->partition, &br, NULL, NULL);
		if (err) {
			fprintf(stderr, "producer %d: %s\n", j->id, bus_strerror(err));
			return 11;
		}
	}
	bus_producer_close(p);
	bus_close(cb);
	return 0;
}

/* Reads exactly j->records records; every one once, dense, in each
 * producer's order, intact.  Exit code says what broke. */
static int consumer_main(void *arg)
{
	struct job *j = arg;
	struct bus *cb = child_bus();
	struct bus_consumer *c;
	struct bus_consumer_opts co = { .partition = 0, .wait = BUS_WAIT_SLEEP,
					.flags = BUS_CONSUMER_GATING };
	struct bus_view v[64];
	uint32_t next[NPROD] = { 0 };
	uint64_t expect = 0;

	if (bus_consumer_open(cb, "mp", &co, &c))
		return 20;
	sync_child(j);
	while (expect < (uint64_t)j->records) {
		int n = bus_consumer_poll(c, v, 64, 10000000000ll);
		if (n <= 0)
			return 21; /* 10 s without a record */
		for (int i = 0; i < n; i++) {
			const struct rec *r = v[i].value;
			if (v[i].offset != expect || v[i].lost_before)
				return 22;
			if (v[i].value_len != sizeof(*r) || r->producer >= NPROD)
				return 23;
			if (r->seq != next[r->producer]++)
				return 24;
			if (tsum(r->payload, PAYLOAD) != r->sum)
				return 25;
			expect++;
		}
		if (bus_consumer_check(c, v, (unsigned)n) != n)
			return 26;
	}
	bus_consumer_close(c);
	bus_close(cb);
	return 0;
}

static void run_ordering(int nprod, int per_producer, unsigned pflags)
{
	int ready[2], go[2];
	pid_t pids[NPROD + NCONS];
	struct job jobs[NPROD + NCONS];
	int n = 0;
	char c;

	mk_topic("mp", 1, 64 * 1024);
	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	for (int i = 0; i < NCONS; i++, n++) {
		jobs[n] = (struct job){ .id = i, .records = nprod * per_producer, .ready_fd = ready[1],
					.go_fd = go[0] };
		pids[n] = tfork(consumer_main, &jobs[n]);
	}
	for (int i = 0; i < nprod; i++, n++) {
		jobs[n] = (struct job){ .id = i, .records = per_producer, .ready_fd = ready[1],
					.go_fd = go[0], .pflags = pflags, .partition = 0 };
		pids[n] = tfork(producer_main, &jobs[n]);
	}
	for (int i = 0; i < n; i++)
		cr_assert_eq(read(ready[0], &c, 1), 1);
	for (int i = 0; i < n; i++)
		cr_assert_eq(write(go[1], &c, 1), 1);
	for (int i = 0; i < n; i++) {
		int st = twait(pids[i], 200000);
		cr_assert_eq(st, 0, "%s %d exited with %d", i < NCONS ? "consumer" : "producer",
			     jobs[i].id, st);
	}
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
}

Test(mp, concurrent_producers_and_consumers_see_every_record_once_in_order)
{
	/* 64 KiB ring, 96-byte frames: the ring wraps hundreds of times. */
	run_ordering(NPROD, tstress() ? 200000 : 20000, 0);
}

Test(mp, exclusive_producer_and_consumers_see_every_record_once_in_order)
{
	run_ordering(1, tstress() ? 500000 : 50000, BUS_PRODUCER_EXCLUSIVE);
}

Test(mp, low_latency_producers_and_consumers_see_every_record_once_in_order)
{
	/* BUS_PRODUCER_LOW_LATENCY demotes the lines of each published frame
	 * (small frames: these are); records must stay whole and in order. */
	run_ordering(NPROD, tstress() ? 200000 : 20000, BUS_PRODUCER_LOW_LATENCY);
}

/* ---------------------------------------------- dead and stalled claims */

struct claimer {
	int mode;    /* 0: die holding the claim; 1: stall, then commit;
		      * 2: as 0, and stay unreaped (a zombie) meanwhile */
	unsigned pflags; /* the claimer's producer flags */
	int note_fd; /* "claimed" */
	int go_fd;   /* stall mode: commit when a byte arrives */
};

static int claimer_main(void *arg)
{
	struct claimer *cl = arg;
	struct bus *cb = child_bus();
	struct bus_producer *p;
	struct bus_producer_opts po = { .flags = cl->pflags };
	struct bus_claim c;
	char x = 1;
	int err;

	if (bus_producer_open(cb, "mp", &po, &p) || bus_producer_claim(p, 0, NULL, 0, 64, &c))
		return 30;
	memset(c.value, 0xee, 64);
	if (write(cl->note_fd, &x, 1) != 1)
		return 31;
	if (cl->mode != 1)
		kill(getpid(), SIGKILL);
	if (read(cl->go_fd, &x, 1) != 1)
		return 32;
	err = bus_producer_commit(p, &c, 0);
	return err == -BUS_EREPAIRED ? 0 : 33;
}

static void claimant_case(int mode, unsigned pflags, uint64_t stuck_ns, int64_t *blocked_ms)
{
	struct claimer cl = { .mode = mode, .pflags = pflags };
	int note[2], go[2];
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[64];
	struct bus_partition_info pi;
	struct bus *cb;
	struct bus_opts o = env.opts;
	uint64_t lost = 0, data = 0;
	int64_t t0;
	pid_t pid;
	char x;

	mk_topic("mp", 1, 64 * 1024);
	o.stuck_claim_ns = stuck_ns;
	cr_assert_eq(bus_open(&cb, &o), 0);
	cr_assert_eq(pipe(note), 0);
	cr_assert_eq(pipe(go), 0);
	cl.note_fd = note[1];
	cl.go_fd = go[0];
	cr_assert_eq(bus_producer_open(cb, "mp", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(cb, "mp", NULL, &c), 0);
	for (int i = 0; i < 10; i++) {
		struct bus_record r = { .value = "before", .value_len = 6 };
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	pid = tfork(claimer_main, &cl);
	cr_assert_eq(read(note[0], &x, 1), 1, "claimer did not claim");
	for (int i = 0; i < 10; i++) {
		struct bus_record r = { .value = "after", .value_len = 5 };
		cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	}
	if (mode == 0)
		cr_assert_eq(twait(pid, 10000), -1, "the claimer was killed");
	if (mode == 2)
		cr_assert_eq(tzombie(pid, 10000), 0, "the claimer was killed");
	t0 = tnow_ms();
	while (data < 20) {
		int n = bus_consumer_poll(c, v, 64, 100000000);
		cr_assert(n >= 0);
		cr_assert(tnow_ms() - t0 < 20000, "consumer never got past the claim");
		for (int i = 0; i < n; i++) {
			lost += v[i].lost_before;
			cr_assert_neq(((const uint8_t *)v[i].value)[0], 0xee, "the claim was read");
			data++;
		}
	}
	*blocked_ms = tnow_ms() - t0;
	cr_assert_eq(data, 20u);
	cr_assert_eq(lost, 1u, "exactly the one claimed record is lost");
	cr_assert_eq(bus_partition_describe(cb, "mp", 0, &pi), 0);
	cr_assert_eq(pi.repaired, 1u, "and counted");
	cr_assert_eq(pi.next_offset, 21u);
	if (mode == 1) {
		cr_assert_eq(write(go[1], &x, 1), 1);
		cr_assert_eq(twait(pid, 10000), 0, "stalled claimant learns it was repaired");
	}
	if (mode == 2)
		cr_assert_eq(twait(pid, 10000), -1, "reaped only now");
	bus_consumer_close(c);
	bus_producer_close(p);
	bus_close(cb);
	close(note[0]);
	close(note[1]);
	close(go[0]);
	close(go[1]);
}

Test(mp, claim_of_killed_producer_is_repaired_within_milliseconds)
{
	int64_t ms;
	/* A huge stall timeout: only the dead-owner check can repair it. */
	claimant_case(0, 0, 3600ull * 1000000000ull, &ms);
	cr_assert(ms < 1000, "repair took %ld ms", (long)ms);
}

Test(mp, claim_of_killed_low_latency_producer_is_repaired_whole_slack_included)
{
	int64_t ms;
	/* Its frame (48 + 64 bytes, after frames of 56) was lengthened to
	 * end on a cache line: the repair must take the slack from the
	 * header, or the records after it would be read from a wrong place. */
	claimant_case(0, BUS_PRODUCER_LOW_LATENCY, 3600ull * 1000000000ull, &ms);
	cr_assert(ms < 1000, "repair took %ld ms", (long)ms);
}

/* Dead is dead even before the parent reaps it: kill(pid, 0) finds a
 * zombie, and its claim waited for the stuck-claim timeout (here an hour:
 * the consumer's 20 s deadline failed the test). */
Test(mp, claim_of_killed_producer_left_unreaped_is_repaired_within_milliseconds)
{
	int64_t ms;
	claimant_case(2, 0, 3600ull * 1000000000ull, &ms);
	cr_assert(ms < 1000, "repair took %ld ms", (long)ms);
}

Test(mp, claim_of_stalled_live_producer_is_repaired_after_timeout)
{
	int64_t ms;
	claimant_case(1, 0, 200000000ull, &ms);
	cr_assert(ms >= 150, "repaired before the timeout (%ld ms)", (long)ms);
}

/* ------------------------------------------------------- wait strategies */

struct sleeper {
	int note_fd;
	enum bus_wait wait;
};

static int sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	struct bus *cb = child_bus();
	struct bus_consumer *c;
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY, .wait = s->wait };
	struct bus_view v;
	struct rusage ru;
	char x = 1;
	long cpu_ms;

	if (bus_consumer_open(cb, "mp", &co, &c))
		return 40;
	getrusage(RUSAGE_SELF, &ru);
	cpu_ms = -((ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
		   (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000);
	if (write(s->note_fd, &x, 1) != 1)
		return 41;
	if (bus_consumer_poll(c, &v, 1, -1) != 1)
		return 42;
	getrusage(RUSAGE_SELF, &ru);
	cpu_ms += (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
		  (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
	/* Idle for a second: a spinning or napping consumer would use tens
	 * to hundreds of ms; a sleeping one, ~0 (1% allowed). */
	if (cpu_ms >= 10)
		fprintf(stderr, "sleeper used %ld ms of CPU while idle\n", cpu_ms);
	return cpu_ms < 10 ? 0 : 43;
}

Test(mp, idle_sleeping_consumer_uses_no_cpu_and_wakes_on_produce)
{
	struct sleeper s = { .wait = BUS_WAIT_SLEEP };
	struct bus_producer *p;
	struct bus_record r = { .value = "wake", .value_len = 4 };
	int note[2];
	pid_t pid;
	char x;

	mk_topic("mp", 3, 64 * 1024);
	cr_assert_eq(pipe(note), 0);
	s.note_fd = note[1];
	pid = tfork(sleeper_main, &s);
	cr_assert_eq(read(note[0], &x, 1), 1);
	/* Stay idle for a second: a spinning consumer would burn ~1 s of CPU. */
	usleep(1000000);
	cr_assert_eq(bus_producer_open(b, "mp", NULL, &p), 0);
	cr_assert_eq(bus_produce(p, 2, &r, NULL, NULL), 0);
	cr_assert_eq(twait(pid, 5000), 0, "sleeper did not wake, or used CPU while idle");
	bus_producer_close(p);
	close(note[0]);
	close(note[1]);
}

/* Whether @pid (single-threaded) is inside a futex system call: the
 * sleeping consumer's FUTEX_WAIT. */
static bool in_futex(pid_t pid)
{
	char path[64], buf[32] = "";
	FILE *f;
	bool yes;

	snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	yes = fgets(buf, sizeof buf, f) && atoi(buf) == SYS_futex;
	fclose(f);
	return yes;
}

/* Opens a producer, sends ten records (the first may wake what an earlier
 * sleeper announced), then sends 1000 in seccomp strict mode: a system
 * call kills it. */
static int strict_producer_main(void *arg)
{
	struct bus *cb = child_bus();
	struct bus_producer *p;
	struct bus_record r = { .value = "no syscall", .value_len = 10, .timestamp = 1 };

	(void)arg;
	if (bus_producer_open(cb, "mp", NULL, &p))
		return 50;
	for (int i = 0; i < 10; i++)
		if (bus_produce(p, 0, &r, NULL, NULL))
			return 51;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
		return 52;
	for (int i = 0; i < 1000; i++)
		if (bus_produce(p, 0, &r, NULL, NULL))
			syscall(SYS_exit, 53);
	syscall(SYS_exit, 0);
	return 0;
}

/* A consumer SIGKILLed while it sleeps leaves its announcement behind; it
 * must not cost every later record of the topic a FUTEX_WAKE (at most the
 * first: nobody can tell a dead sleeper from a slow one). */
Test(mp, a_sleeper_killed_in_its_sleep_costs_producers_no_system_call)
{
	struct sleeper s = { .wait = BUS_WAIT_SLEEP };
	int note[2], st;
	int64_t deadline;
	pid_t pid;
	char x;

	mk_topic_of("mp", 1, 64 * 1024, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(pipe(note), 0);
	s.note_fd = note[1];
	pid = tfork(sleeper_main, &s);
	cr_assert_eq(read(note[0], &x, 1), 1);
	deadline = tnow_ms() + 10000;
	while (!in_futex(pid)) {
		cr_assert(tnow_ms() < deadline, "the consumer never slept");
		usleep(1000);
	}
	kill(pid, SIGKILL);
	cr_assert_eq(twait(pid, 10000), -1, "the sleeper was killed");
	pid = tfork(strict_producer_main, NULL);
	st = twait(pid, 60000);
	cr_assert_eq(st, 0, "producer %s (exit %d): a system call per record for a dead sleeper",
		     st < 0 ? "was killed" : "failed", st);
	close(note[0]);
	close(note[1]);
}

/* A consumer that sleeps in a poll, then writes when it returned
 * (tnow_ms()) to @note_fd; its first write says it is about to poll. */
static int timed_sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	struct bus *cb = child_bus();
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY, .wait = s->wait };
	struct bus_consumer *c;
	struct bus_view v[4];
	int64_t t;

	if (bus_consumer_open(cb, "mp", &co, &c))
		return 40;
	t = 0;
	if (write(s->note_fd, &t, sizeof t) != (ssize_t)sizeof t)
		return 41;
	if (bus_consumer_poll(c, v, 4, -1) < 1)
		return 42;
	t = tnow_ms();
	return write(s->note_fd, &t, sizeof t) == (ssize_t)sizeof t ? 0 : 43;
}

/* A producer killed by seccomp at its first FUTEX_WAKE: a waker that dies
 * (or is preempted) in the middle of waking the topic's sleepers. */
static int killed_waker_main(void *arg)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 0, 3),
		/* The low half of the futex op (little-endian). */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FUTEX_WAKE, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
	struct bus *cb = child_bus();
	struct bus_producer *p;
	struct bus_record r = { .value = "first", .value_len = 5 };

	(void)arg;
	if (bus_producer_open(cb, "mp", NULL, &p))
		return 50;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 51;
	(void)bus_produce(p, 0, &r, NULL, NULL); /* killed in its wake */
	return 52;
}

/* A waker killed between taking the sleepers' announcement and its
 * FUTEX_WAKE left them asleep with the announcement gone: the next
 * producer saw none and woke nobody, and the consumer found both records
 * only at its once-a-second recheck.  The announcement is now cleared
 * after the wake, so the next record wakes it. */
Test(mp, a_waker_killed_in_its_wake_leaves_the_sleeper_to_the_next_producer)
{
	struct sleeper s = { .wait = BUS_WAIT_SLEEP };
	struct bus_record r = { .value = "second", .value_len = 6 };
	struct bus_producer *p;
	int note[2], st;
	int64_t deadline, t0, t1;
	pid_t pid, waker;

	mk_topic_of("mp", 1, 64 * 1024, BUS_OVERFLOW_OVERWRITE);
	cr_assert_eq(bus_producer_open(b, "mp", NULL, &p), 0);
	cr_assert_eq(pipe(note), 0);
	s.note_fd = note[1];
	pid = tfork(timed_sleeper_main, &s);
	cr_assert_eq(read(note[0], &t1, sizeof t1), (ssize_t)sizeof t1);
	deadline = tnow_ms() + 10000;
	while (!in_futex(pid)) {
		cr_assert(tnow_ms() < deadline, "the consumer never slept");
		usleep(1000);
	}
	waker = tfork(killed_waker_main, NULL);
	st = twait(waker, 10000);
	cr_assert_eq(st, -1, "the waker was not killed in its wake (exit %d)", st);
	t0 = tnow_ms();
	cr_assert_eq(bus_produce(p, 0, &r, NULL, NULL), 0);
	cr_assert_eq(read(note[0], &t1, sizeof t1), (ssize_t)sizeof t1);
	cr_expect(t1 - t0 < 500, "the sleeper woke %lld ms after the next record",
		  (long long)(t1 - t0));
	cr_assert_eq(twait(pid, 10000), 0);
	bus_producer_close(p);
	close(note[0]);
	close(note[1]);
}

/* Ping-pong between sleepers: NECHO processes each read every ping (of
 * two partitions) and answer on "pong"; the test's process reads the
 * answers.  All sleep at once (spin_count 1), so every record meets a
 * sleeping reader.  A lost wake-up leaves a reader asleep until its
 * once-a-second recheck: a round that takes that long is one. */
#define NECHO 3

struct echo {
	int id;
	int rounds;
	int note_fd;
};

static int echo_main(void *arg)
{
	struct echo *e = arg;
	struct bus *cb = child_bus();
	struct bus_consumer *c;
	struct bus_producer *p;
	struct bus_consumer_opts co = { .partition = BUS_PARTITION_ANY, .wait = BUS_WAIT_SLEEP,
					.spin_count = 1 };
	struct bus_view v[4];
	char x = 1;

	if (bus_consumer_open(cb, "ping", &co, &c) || bus_producer_open(cb, "pong", NULL, &p))
		return 60;
	if (write(e->note_fd, &x, 1) != 1)
		return 61;
	for (int round = 0; round <= e->rounds;) {
		int n = bus_consumer_poll(c, v, 4, 30000000000ll);
		if (n <= 0)
			return 62;
		for (int i = 0; i < n; i++) {
			uint32_t got[2] = { (uint32_t)e->id, 0 };
			struct bus_record r = { .value = got, .value_len = sizeof(got) };
			if (v[i].value_len != 4 || memcmp(v[i].value, &round, 4) != 0)
				return 63;
			if (round++ == e->rounds)
				return 0; /* the last ping: stop */
			got[1] = (uint32_t)round - 1;
			if (bus_produce(p, 0, &r, NULL, NULL))
				return 64;
		}
	}
	return 65;
}

Test(mp, sleeping_readers_on_several_partitions_miss_no_wake_up)
{
	struct bus_consumer_opts co = { .partition = 0, .wait = BUS_WAIT_SLEEP, .spin_count = 1 };
	struct echo e[NECHO];
	pid_t pids[NECHO];
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[NECHO];
	int note[2], rounds = tstress() ? 20000 : 2000;
	char x;

	mk_topic("ping", 2, 64 * 1024);
	mk_topic("pong", 1, 64 * 1024);
	cr_assert_eq(pipe(note), 0);
	cr_assert_eq(bus_producer_open(b, "ping", NULL, &p), 0);
	cr_assert_eq(bus_consumer_open(b, "pong", &co, &c), 0);
	for (int i = 0; i < NECHO; i++) {
		e[i] = (struct echo){ .id = i, .rounds = rounds, .note_fd = note[1] };
		pids[i] = tfork(echo_main, &e[i]);
	}
	for (int i = 0; i < NECHO; i++)
		cr_assert_eq(read(note[0], &x, 1), 1);
	for (int round = 0; round <= rounds; round++) {
		struct bus_record r = { .value = &round, .value_len = 4 };
		int64_t t0 = tnow_ms(), dt;
		int seen = 0;

		cr_assert_eq(bus_produce(p, round & 1, &r, NULL, NULL), 0);
		if (round == rounds)
			break; /* the echoes stop at this one */
		while (seen < NECHO) {
			int n = bus_consumer_poll(c, v, NECHO, 30000000000ll);
			cr_assert(n > 0, "round %d: %d answers in 30 s", round, seen);
			for (int i = 0; i < n; i++) {
				const uint32_t *got = v[i].value;
				cr_assert_eq(v[i].value_len, 8u);
				cr_assert_eq(got[1], (uint32_t)round, "an answer to round %u in round %d",
					     got[1], round);
			}
			seen += n;
		}
		/* A lost wake-up costs BUS_WAIT_RECHECK_NS (1 s); a round
		 * takes microseconds (milliseconds on a loaded machine). */
		dt = tnow_ms() - t0;
		cr_assert(dt < 900, "round %d took %ld ms: a wake-up was lost", round, (long)dt);
	}
	for (int i = 0; i < NECHO; i++) {
		int st = twait(pids[i], 30000);
		cr_assert_eq(st, 0, "echo %d exited with %d", i, st);
	}
	bus_consumer_close(c);
	bus_producer_close(p);
	close(note[0]);
	close(note[1]);
}

/* ---------------------------------------------------- no system calls */

static int nosys_main(void *arg)
{
	struct bus *cb = child_bus();
	struct bus_producer *p;
	struct bus_consumer *c;
	struct bus_view v[64];
	struct bus_record r = { .value = "no syscall", .value_len = 10, .timestamp = 1 };

	(void)arg;
	if (bus_producer_open(cb, "mp", NULL, &p) || bus_consumer_open(cb, "mp", NULL, &c))
		return 50;
	/* Warm up: first appends compute the low-water mark and the horizon. */
	for (int i = 0; i < 10; i++)
		if (bus_produce(p, 0, &r, NULL, NULL))
			return 51;
	(void)bus_consumer_poll(c, v, 64, 0);
	/* From here on any system call but read, write and exit kills us. */
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
		return 52;
	for (int i = 0; i < 100000; i++) {
		if (bus_produce(p, 0, &r, NULL, NULL))
			syscall(SYS_exit, 53);
		if (bus_consumer_poll(c, v, 64, 0) != 1)
			syscall(SYS_exit, 54);
	}
	syscall(SYS_exit, 0);
	return 0;
}

Test(mp, producer_and_consumer_make_no_system_call_on_the_hot_path)
{
	pid_t pid;
	int st;

	mk_topic_of("mp", 1, 64 * 1024, BUS_OVERFLOW_OVERWRITE);
	pid = tfork(nosys_main, NULL);
	st = twait(pid, 60000);
	cr_assert_eq(st, 0, "child %s (exit %d): a system call on the hot path kills it",
		     st < 0 ? "was killed" : "failed", st);
}
