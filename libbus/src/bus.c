/* bus.c - attaching to a bus: settings, the control region, logging. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

const char *bus_version(void)
{
	return BUS_VERSION_STRING;
}

void bus_log(const struct bus *b, enum bus_log_level lvl, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!b || !b->log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	b->log(b->log_ctx, lvl, msg);
}

bool bus_name_valid(const char *name)
{
	size_t n;

	if (!name || !name[0] || name[0] == '.')
		return false;
	n = strlen(name);
	if (n > BUS_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool bus_pid_alive(int32_t pid)
{
	if (pid <= 0)
		return false;
	return kill(pid, 0) == 0 || errno == EPERM;
}

/* Whether /proc shows this process's PID namespace: /proc/self names its
 * own pid.  A /proc mounted for another namespace (a container handed the
 * host's, a process that unshared its PID namespace and kept its parent's
 * /proc) names other processes by our pids, whose state or start time
 * would be taken for our owners': then nothing is read there, and owners
 * are judged by kill(2) alone.  Asked at each read, not cached: a child
 * forked into a new namespace must not inherit its parent's answer, and
 * one readlink(2) is little beside the read it guards. */
static bool proc_is_ours(void)
{
	char link[32];
	ssize_t n = readlink("/proc/self", link, sizeof(link) - 1);

	if (n <= 0)
		return false;
	link[n] = '\0';
	return strtol(link, NULL, 10) == (long)getpid();
}

/* /proc/<pid>/stat of @pid into @buf (NUL-terminated), returning field 3
 * (the state letter) on: "pid (comm) state ppid ...", where the command
 * may hold blanks and parentheses, so fields are counted from the last
 * ')'.  NULL when it cannot be read, or /proc is not of our PID
 * namespace (proc_is_ours()). */
static char *pid_stat_read(int32_t pid, char *buf, size_t len)
{
	char path[48], *p;
	ssize_t n;
	int fd;

	if (!proc_is_ours())
		return NULL;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] ? p + 2 : NULL;
}

/* Field @k (>= 3) of a stat line whose field 3 starts at @f, or NULL. */
static const char *stat_field(const char *f, int k)
{
	for (int i = 3; i < k && f; i++) {
		f = strchr(f, ' ');
		f = f ? f + 1 : NULL;
	}
	return f;
}

/* The boottime offset of this process's time namespace, in clock ticks
 * (/proc/self/timens_offsets; 0 without time namespaces).  The kernel adds
 * the reader's offset to every start time it shows in /proc/<pid>/stat.
 * Cached by pid: a process's own time namespace never changes (setns(2)
 * and unshare(2) of CLONE_NEWTIME move its children, not itself), and a
 * fork child, which may be in another, has another pid.  Relaxed: the
 * value read again or this process's own. */
static long long boottime_offset_ticks(void)
{
	static _Atomic int32_t cached_pid;
	static _Atomic long long cached;
	int32_t me = (int32_t)getpid();
	char line[128];
	long long sec = 0, nsec = 0, hz = sysconf(_SC_CLK_TCK), v;
	FILE *f;

	if (ld_relaxed(&cached_pid) == me)
		return ld_relaxed(&cached);
	f = fopen("/proc/self/timens_offsets", "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "boottime %lld %lld", &sec, &nsec) == 2 ||
			    sscanf(line, "7 %lld %lld", &sec, &nsec) == 2) /* CLOCK_BOOTTIME */
				break;
		fclose(f);
	}
	if (hz <= 0)
		hz = 100;
	v = sec * hz + nsec * hz / 1000000000;
	/* Two relaxed stores: a thread that sees our pid before the value
	 * reads 0 or the value, and 0 is right unless a time namespace
	 * moved us, which only a CRIU restore does; at worst one start time
	 * read a tick off, which the comparison tolerates (start_same()). */
	st_relaxed(&cached, v);
	st_relaxed(&cached_pid, me);
	return v;
}

/* Field 22 of a stat line whose field 3 starts at @st, as the start time
 * of the process in the initial time namespace (the same seen from any
 * namespace), folded to 32 bits (see internal.h); 0 when unreadable. */
static uint32_t stat_start(const char *st)
{
	const char *p = stat_field(st, 22);
	long long ticks;

	if (!p || sscanf(p, "%lld", &ticks) != 1)
		return 0;
	/* As the initial namespace sees it: a creator and a reaper in
	 * different time namespaces (a container, a CRIU restore) read
	 * different values for one process, and a live creator would be
	 * taken for another process. */
	ticks -= boottime_offset_ticks();
	/* Fold the 64 bits; 0 means "unknown". */
	uint64_t u = (uint64_t)ticks;
	u ^= u >> 32;
	return (uint32_t)u ? (uint32_t)u : 1u;
}

/* Whether two start times (stat_start()) may be those of one process.  A
 * tick apart counts as the same: the kernel rounds the start time after
 * adding the reader's time namespace offset, and the offset taken back
 * (boottime_offset_ticks()) is rounded on its own, so two namespaces may
 * read one process a tick apart.  A process given a dead owner's pid
 * started after the owner had registered, died and the pids had gone
 * round: more than a tick (10 ms at 100 Hz) later, always.  (Start times
 * past 2^32 ticks, 497 days at 100 Hz, are folded and compared as
 * they are: a coincidence there costs one tick's tolerance too.) */
static bool start_same(uint32_t a, uint32_t b)
{
	return a == b || a - b == 1 || b - a == 1;
}

bool bus_owner_gone(uint64_t owner)
{
	int32_t pid = BUS_OWNER_PID(owner);
	uint32_t start = BUS_OWNER_START(owner), now;
	char buf[1024];
	const char *st, *nt;
	unsigned long threads;

	if (!bus_pid_alive(pid))
		return true;
	st = pid_stat_read(pid, buf, sizeof(buf));
	if (!st) /* reaped since, or /proc hidden from us: ask again */
		return !bus_pid_alive(pid);
	/* The pid went to another process since the owner took the slot. */
	now = start ? stat_start(st) : 0;
	if (now && !start_same(now, start))
		return true;
	if (st[0] != 'Z' && st[0] != 'X')
		return false;
	/* A zombie leader may still head live threads (its main thread
	 * called pthread_exit()): the process lives while field 20, the
	 * thread count, says more than the leader. */
	nt = stat_field(st, 20);
	return nt && sscanf(nt, "%lu", &threads) == 1 && threads <= 1;
}

bool bus_spiller_gone(struct bus *b, int32_t pid)
{
	uint64_t o;

	if (pid <= 0)
		return true;
	o = ld_acquire(&b->ctl->daemon_owner);
	return BUS_OWNER_PID(o) == pid ? bus_owner_gone(o) : bus_pid_gone(pid);
}

bool bus_pid_gone(int32_t pid)
{
	return bus_owner_gone(BUS_OWNER(pid, 0));
}

/* Field 22 of /proc/<pid>/stat: stat_start(). */
static uint32_t pid_start_read(int32_t pid)
{
	char buf[1024];

	return stat_start(pid_stat_read(pid, buf, sizeof(buf)));
}

uint32_t bus_pid_start(int32_t pid)
{
	/* The caller's own, cached: {pid, start}, relaxed (either the value
	 * read again or this process's own; a fork child sees another pid).
	 * The value does not depend on the time namespace (pid_start_read()),
	 * so a setns(2) does not stale it. */
	static _Atomic uint64_t self;
	uint64_t c = ld_relaxed(&self);
	int32_t me = (int32_t)getpid();
	uint32_t v;

	if (pid <= 0)
		return 0;
	if (pid != me)
		return pid_start_read(pid);
	if (c && (int32_t)(c >> 32) == me)
		return (uint32_t)c;
	v = pid_start_read(me);
	if (v)
		st_relaxed(&self, (uint64_t)(uint32_t)me << 32 | v);
	return v;
}

uint64_t bus_owner_self(void)
{
	int32_t me = (int32_t)getpid();

	return BUS_OWNER(me, bus_pid_start(me));
}

const char *bus_name(const struct bus *b)
{
	return b->name;
}

const char *bus_shm_dir(const struct bus *b)
{
	return b->shm_dir;
}

int bus_topic_dir(const struct bus *b, const char *topic, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", b->data_dir, topic);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int bus_part_dir(const struct bus *b, const char *topic, uint32_t part, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s/%u", b->data_dir, topic, part);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int32_t bus_daemon_pid(const struct bus *b)
{
	uint64_t o;

	if (!b)
		return 0;
	/* Pairs with busd's release store of its owner word.  A busd that
	 * died unreaped (a zombie), or whose pid went to another process
	 * since, runs no more. */
	o = atomic_load_explicit(&b->ctl->daemon_owner, memory_order_acquire);
	return o && !bus_owner_gone(o) ? BUS_OWNER_PID(o) : 0;
}

const char *bus_data_dir(const struct bus *b)
{
	return b->data_dir;
}

/* Validate a mapped control region (@path, @file_size bytes on disk).
 * Every field is checked against what this build expects before anything
 * else is read from the file.  A refusal is logged (ERROR) naming the file
 * and, for another layout, the file's version or signature and this
 * build's: -BUS_EVERSION alone does not tell the user which side to
 * change. */
static int ctl_validate(const struct bus *b, const char *path, const struct bus_ctl_hdr *h,
			uint64_t file_size)
{
	if (h->magic != BUS_CTL_MAGIC) {
		bus_log(b, BUS_LOG_ERROR, "%s is not a bus control region (magic %016llx%s)", path,
			(unsigned long long)h->magic,
			h->magic == __builtin_bswap64(BUS_CTL_MAGIC)
				? ": made on a host of the other byte order"
				: "");
		return -BUS_ECORRUPT;
	}
	if (h->layout_version != BUS_LAYOUT_VERSION) {
		bus_log(b, BUS_LOG_ERROR,
			"control region %s has layout version %u; this libbus (%s) reads layout "
			"version %u only: use a libbus of the file's version, or stop every process "
			"of bus '%s' and remove the file",
			path, h->layout_version, BUS_VERSION_STRING, BUS_LAYOUT_VERSION, b->name);
		return -BUS_EVERSION;
	}
	if (h->signature != bus_layout_signature() || h->hdr_size != sizeof(*h)) {
		bus_log(b, BUS_LOG_ERROR,
			"control region %s has layout version %u as this libbus (%s), but was made "
			"by a build with another struct layout (signature %016llx, header %u bytes; "
			"this build: %016llx, %zu bytes): use the same build in every process of bus "
			"'%s'",
			path, h->layout_version, BUS_VERSION_STRING, (unsigned long long)h->signature,
			h->hdr_size, (unsigned long long)bus_layout_signature(), sizeof(*h), b->name);
		return -BUS_EVERSION;
	}
	if (h->file_size != BUS_CTL_SIZE || file_size < BUS_CTL_SIZE ||
	    h->topics_off != BUS_CTL_TOPICS_OFF || h->topics_max != BUS_TOPICS_MAX ||
	    h->topic_slot_size != sizeof(struct bus_topic_slot)) {
		bus_log(b, BUS_LOG_ERROR,
			"control region %s: its sizes are not this layout's (file %llu bytes, header "
			"says %llu; topics at %llu, %u slots of %u bytes; want %llu, %u, %u, %zu)",
			path, (unsigned long long)file_size, (unsigned long long)h->file_size,
			(unsigned long long)h->topics_off, h->topics_max, h->topic_slot_size,
			(unsigned long long)BUS_CTL_SIZE, BUS_CTL_TOPICS_OFF, BUS_TOPICS_MAX,
			sizeof(struct bus_topic_slot));
		return -BUS_ECORRUPT;
	}
	return 0;
}

static int ctl_path(const struct bus *b, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/bus.%s.ctl", b->shm_dir, b->name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int bus_ctl_lost_slow(struct bus *b)
{
	char path[4096];

	if (!bus_mapguard_hit(b->ctl_guard))
		return 0;
	if (!atomic_exchange(&b->ctl_lost_said, true) && ctl_path(b, path, sizeof(path)) == 0)
		bus_log(b, BUS_LOG_ERROR,
			"control region %s was truncated under this process's mapping (SIGBUS "
			"caught): bus '%s' is unusable in this process, its calls return "
			"-BUS_ECORRUPT",
			path, b->name);
	return -BUS_ECORRUPT;
}

/* The control region's descriptor, which stays open as long as the handle,
 * never 0, 1 or 2: an application that closed a standard stream and later
 * writes to it (printf after `prog >&-`) would write into the control
 * region.  Moves @fd above them: returns the descriptor, or -1 with errno
 * set (@fd closed).  @fd < 0 is returned as it is. */
static int fd_above_std(int fd)
{
	int nfd, e;

	if (fd < 0 || fd > 2)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	e = errno;
	close(fd);
	errno = e;
	return nfd;
}

/* Temporary names of control regions being made: ".bus.<bus>.ctl.<pid>.<n>"
 * beside the bus's (a leading '.': no bus or topic name starts with one).
 * Writes the prefix up to the pid to @buf and returns its length, or
 * -ENAMETOOLONG. */
static int ctl_tmp_prefix(const struct bus *b, char *buf, size_t len)
{
	int n = snprintf(buf, len, ".bus.%s.ctl.", b->name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : n;
}

/* Remove the temporary files that creators of this bus which died before
 * publishing their control region left in the shm dir.  A live creator's
 * (its pid alive) is left alone. */
static void ctl_sweep(const struct bus *b)
{
	char prefix[BUS_NAME_MAX + 32];
	int plen = ctl_tmp_prefix(b, prefix, sizeof(prefix));
	DIR *d = plen < 0 ? NULL : opendir(b->shm_dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		const char *p = de->d_name + plen;
		char *end;
		long pid;

		if (strncmp(de->d_name, prefix, (size_t)plen) != 0 || *p < '0' || *p > '9')
			continue;
		pid = strtol(p, &end, 10);
		/* ".<n>" to the end: another bus's name can continue ours
		 * (".bus.a.ctl.9.1.ctl.<pid>.0" is bus "a.ctl.9.1"'s). */
		if (*end != '.' || !end[1] || strspn(end + 1, "0123456789") != strlen(end + 1) ||
		    pid <= 0 || pid > INT32_MAX || bus_pid_alive((int32_t)pid))
			continue;
		(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* Make the control region of @b and publish it at @path.  It is made whole
 * under a temporary name beside @path, `ready` stored last, then moved to
 * @path by one rename that fails when @path exists: a file at @path is
 * never half made, so a creator killed at any point leaves nothing there
 * that would keep the bus from being opened (only its temporary file,
 * which the next bus_open() of the bus removes: ctl_sweep()).  Returns 0
 * with @b's control region mapped, -EEXIST when another process's is at
 * @path (attach to it), or -errno. */
static int ctl_create(struct bus *b, const char *path, mode_t mode, size_t len)
{
	static _Atomic unsigned seq; /* threads of one process making one bus */
	char tmp[4200];
	struct bus_ctl_hdr *h;
	int fd, err, n;

	n = snprintf(tmp, sizeof(tmp), "%s/.bus.%s.ctl.%d.%u", b->shm_dir, b->name, (int)getpid(),
		     atomic_fetch_add(&seq, 1));
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0 && errno == EEXIST) {
		/* Left by a process that had our pid: dead. */
		(void)unlink(tmp);
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	}
	fd = fd_above_std(fd);
	if (fd < 0) {
		err = -errno;
		(void)unlink(tmp); /* our pid's name: ours, if it was made */
		return err;
	}
	(void)fchmod(fd, mode); /* umask must not narrow the group bits */
	if (ftruncate(fd, (off_t)len) < 0 || (errno = posix_fallocate(fd, 0, (off_t)len)) != 0) {
		err = -errno;
		goto fail_fd;
	}
	h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (h == MAP_FAILED) {
		err = -errno;
		goto fail_fd;
	}
	b->ctl_guard = bus_shm_guard(b, path, h, len, (size_t)bus_shm_round(b, 1));
	h->magic = BUS_CTL_MAGIC;
	h->layout_version = BUS_LAYOUT_VERSION;
	h->hdr_size = sizeof(*h);
	h->signature = bus_layout_signature();
	h->file_size = BUS_CTL_SIZE;
	h->topics_off = BUS_CTL_TOPICS_OFF;
	h->topics_max = BUS_TOPICS_MAX;
	h->topic_slot_size = sizeof(struct bus_topic_slot);
	h->creator_pid = getpid();
	snprintf(h->bus_name, sizeof(h->bus_name), "%s", b->name);
	/* R0: publishes the header; pairs with A0 in attachers.  (The rename
	 * below publishes the file as a whole; R0 stays for attachers of
	 * files made in place by older builds, and as the header's own
	 * licence to be read.) */
	st_release(&h->ready, BUS_LAYOUT_VERSION);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
		err = -errno;
		if (err == -EINVAL || err == -ENOSYS) {
			/* A file system without RENAME_NOREPLACE: link() too
			 * fails when @path exists. */
			err = link(tmp, path) < 0 ? -errno : 0;
			(void)unlink(tmp);
		}
		if (err) {
			bus_mapguard_del(b->ctl_guard);
			b->ctl_guard = -1;
			munmap(h, len);
			goto fail_fd;
		}
	}
	b->ctl_fd = fd;
	b->ctl = h;
	b->ctl_len = len;
	/* Truncated while we made it: the header went to zeros. */
	return bus_ctl_lost(b);
fail_fd:
	close(fd);
	(void)unlink(tmp);
	return err;
}

/* Attach to the control region at @path, or create it (ctl_create()).
 * An attacher that finds a file whose `ready` is 0 (made in place by an
 * older build, or by hand) waits for `ready` (acquire) up to a deadline,
 * then refuses it. */
static int ctl_open(struct bus *b)
{
	char path[4096];
	mode_t mode = (b->flags & BUS_F_PRIVATE) ? 0600 : 0660;
	/* hugetlbfs takes whole huge pages only: in ftruncate, and in munmap. */
	size_t len = (size_t)bus_shm_round(b, BUS_CTL_SIZE);
	int err = ctl_path(b, path, sizeof(path));
	int fd;

	if (err)
		return err;
	/* At every open, not only when creating: a creator killed while
	 * another one won leaves its file beside a bus that now exists (on
	 * hugetlbfs, a huge page or more each). */
	ctl_sweep(b);
	/* Bounded: each turn, the file was there, then gone (removed by
	 * hand), or absent, then there (made by another process). */
	for (int tries = 0;; tries++) {
		fd = fd_above_std(open(path, O_RDWR | O_CLOEXEC));
		if (fd >= 0 || errno != ENOENT || tries == 8)
			break;
		err = ctl_create(b, path, mode, len);
		if (err != -EEXIST)
			return err;
	}
	if (fd < 0)
		return -errno;
	for (int64_t deadline = bus_mono_ns() + 2000000000ll;;) {
		struct stat st;
		struct bus_ctl_hdr *h;

		if (fstat(fd, &st) < 0) {
			err = -errno;
			break;
		}
		if (!S_ISREG(st.st_mode)) {
			/* A FIFO, a device: nobody is making a bus there. */
			bus_log(b, BUS_LOG_ERROR, "%s is not a regular file: not a bus control region",
				path);
			err = -BUS_ECORRUPT;
			break;
		}
		if ((uint64_t)st.st_size >= BUS_CTL_SIZE) {
			h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
			if (h == MAP_FAILED) {
				err = -errno;
				break;
			}
			/* Before the first read: truncated since the fstat, the
			 * header reads as zeros, which do not validate. */
			b->ctl_guard = bus_shm_guard(b, path, h, len, (size_t)bus_shm_round(b, 1));
			/* A0: pairs with R0. */
			if (ld_acquire(&h->ready) != 0) {
				err = ctl_validate(b, path, h, (uint64_t)st.st_size);
				if (!err) {
					b->ctl_fd = fd;
					b->ctl = h;
					b->ctl_len = len;
					return 0;
				}
				bus_mapguard_del(b->ctl_guard);
				b->ctl_guard = -1;
				munmap(h, len);
				break;
			}
			bus_mapguard_del(b->ctl_guard);
			b->ctl_guard = -1;
			munmap(h, len);
		} else if (st.st_size > 0) {
			/* Made whole before it is put here (ctl_create()), or
			 * sized right after its creation by older builds: a
			 * short, non-empty file was truncated or is not ours. */
			err = -BUS_ECORRUPT;
			break;
		}
		if (bus_mono_ns() > deadline) {
			err = -BUS_ECORRUPT; /* half-made and abandoned, or not ours */
			break;
		}
		usleep(1000);
	}
	close(fd);
	return err;
}

static int hugetlbfs_usable(const char *dir)
{
	char probe[4200];
	int fd;
	long pages = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	if (f) {
		char line[256];
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "HugePages_Free: %ld", &pages) == 1)
				break;
		fclose(f);
	}
	if (pages <= 0 || access(dir, W_OK) != 0)
		return 0;
	snprintf(probe, sizeof(probe), "%s/.bus-probe.%d", dir, getpid());
	fd = open(probe, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return 0;
	close(fd);
	unlink(probe);
	return 1;
}

const char *bus_default_shm_dir(void)
{
	static char found[4096];
	FILE *f = fopen("/proc/mounts", "r");
	char dev[256], dir[4096], type[64];

	if (f) {
		while (fscanf(f, "%255s %4095s %63s %*[^\n]", dev, dir, type) == 3) {
			if (strcmp(type, "hugetlbfs") == 0 && hugetlbfs_usable(dir)) {
				fclose(f);
				snprintf(found, sizeof(found), "%s", dir);
				return found;
			}
		}
		fclose(f);
	}
	return "/dev/shm";
}

/* liburcu's hash tables run a worker thread; liburcu-bp asks that its fork
 * hooks run around fork() so that a child (which has no such thread) can
 * still use and destroy them.  Registered once per process. */
static void urcu_fork_hooks(void)
{
	pthread_atfork(urcu_bp_before_fork, urcu_bp_after_fork_parent, urcu_bp_after_fork_child);
}

int bus_open(struct bus **out, const struct bus_opts *opts)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	struct bus_opts none = { 0 };
	const char *name, *shm, *data;
	struct bus *b;
	int err;

	if (!out)
		return -EINVAL;
	pthread_once(&once, urcu_fork_hooks);
	if (!opts)
		opts = &none;
	name = opts->name ? opts->name : getenv("BUS_NAME");
	if (!name || !*name)
		name = "default";
	if (!bus_name_valid(name))
		return -EINVAL;
	shm = opts->shm_dir ? opts->shm_dir : getenv("BUS_SHM_DIR");
	if (!shm || !*shm)
		shm = bus_default_shm_dir();
	data = opts->data_dir ? opts->data_dir : getenv("BUS_DATA_DIR");
	if (!data || !*data)
		data = "/var/lib/bus";

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->shm_dir = strdup(shm);
	b->data_dir = strdup(data);
	b->flags = opts->flags;
	b->log = opts->log;
	b->log_ctx = opts->log_ctx;
	b->stuck_claim_ns = opts->stuck_claim_ns ? opts->stuck_claim_ns : 1000000000ull;
	b->ctl_fd = -1;
	b->ctl_guard = -1;
	if (!b->shm_dir || !b->data_dir) {
		err = -ENOMEM;
		goto fail;
	}
	err = ctl_open(b);
	if (err)
		goto fail;
	/* Fixed size (at most BUS_TOPICS_MAX topics): no resize worker thread. */
	b->topics = cds_lfht_new(BUS_TOPICS_MAX, BUS_TOPICS_MAX, BUS_TOPICS_MAX, 0, NULL);
	if (!b->topics) {
		err = -ENOMEM;
		goto fail;
	}
	*out = b;
	return 0;
fail:
	bus_close(b);
	return err;
}

void bus_close(struct bus *b)
{
	if (!b)
		return;
	if (b->topics)
		bus_topics_fini(b);
	/* The guard first: no handler maps zeros over the unmapped range. */
	bus_mapguard_del(b->ctl_guard);
	if (b->ctl)
		munmap(b->ctl, b->ctl_len);
	if (b->ctl_fd >= 0)
		close(b->ctl_fd);
	free(b->shm_dir);
	free(b->data_dir);
	free(b);
}
