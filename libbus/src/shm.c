/* shm.c - shared files: reserved up front, pre-faulted, huge pages when the
 * file system or shmem THP allows, NUMA binding with libnuma. */
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "internal.h"
#include "mapguard.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

/* Page size of the file system holding @dir, and whether it is hugetlbfs. */
static uint64_t dir_page(const char *dir, bool *huge)
{
	struct statfs sf;

	*huge = false;
	if (statfs(dir, &sf) == 0 && (uint64_t)sf.f_type == (uint64_t)HUGETLBFS_MAGIC) {
		*huge = true;
		return (uint64_t)sf.f_bsize;
	}
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

uint64_t bus_shm_round(const struct bus *b, uint64_t bytes)
{
	bool huge;
	uint64_t pg = dir_page(b->shm_dir, &huge);

	return (bytes + pg - 1) / pg * pg;
}

/* Whether shmem transparent huge pages would back an madvise'd mapping. */
static bool shmem_thp_enabled(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");

	if (!f)
		return false;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return strstr(buf, "[always]") || strstr(buf, "[within_size]") || strstr(buf, "[advise]") ||
	       strstr(buf, "[force]");
}

int bus_shm_guard(const struct bus *b, const char *path, void *addr, size_t len, size_t page)
{
	static atomic_bool said;
	int g = bus_mapguard_add_ex(addr, len, page, BUS_MAPGUARD_WRITE | BUS_MAPGUARD_WHOLE);

	if (g < 0 && !atomic_exchange(&said, true))
		bus_log(b, BUS_LOG_WARN,
			"%s: not protected against a truncation under its mapping (%s): a "
			"truncation of this file would kill this process with SIGBUS (said once "
			"per process)",
			path,
			g == -EAGAIN ? "more shared files mapped than the SIGBUS guard holds"
				     : strerror(-g));
	return g;
}

int bus_shm_create(const struct bus *b, const char *path, uint64_t size, int numa_node,
		   bool owner_only, struct bus_map *m)
{
	mode_t mode = (owner_only || (b->flags & BUS_F_PRIVATE)) ? 0600 : 0660;
	bool huge;
	int fd, err;
	void *addr;
	uint64_t fs_page = dir_page(b->shm_dir, &huge);
	if (numa_node >= 0 && (numa_available() < 0 || numa_node > numa_max_node()))
		return -ENODEV;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	(void)fchmod(fd, mode);
	if (ftruncate(fd, (off_t)size) < 0) {
		err = -errno;
		goto fail_fd;
	}
	addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED) {
		/* hugetlbfs reserves the pages of a shared mapping in mmap:
		 * ENOMEM there means the huge-page pool is short. */
		err = huge && errno == ENOMEM ? -ENOSPC : -errno;
		goto fail_fd;
	}
	if (!huge && shmem_thp_enabled())
		(void)madvise(addr, size, MADV_HUGEPAGE);
	if (numa_node >= 0) {
		/* Sets the file's shared policy: the pages fallocate allocates
		 * below come from that node. */
		unsigned long mask[16] = { 0 };
		mask[numa_node / (8 * sizeof(long))] = 1ul << (numa_node % (8 * sizeof(long)));
		if (mbind(addr, size, MPOL_BIND, mask, sizeof(mask) * 8, MPOL_MF_STRICT) < 0) {
			err = -errno;
			goto fail_map;
		}
	}
	/* Reserve every page now: a full /dev/shm or an empty huge-page pool
	 * is an error here, never a SIGBUS in a producer later. */
	err = fallocate(fd, 0, 0, (off_t)size);
	if (err < 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) {
		err = posix_fallocate(fd, 0, (off_t)size);
		if (err) {
			errno = err;
			err = -1;
		}
	}
	if (err < 0) {
		err = errno == ENOMEM ? -ENOSPC : -errno;
		goto fail_map;
	}
	/* Pre-fault this process's page tables too. */
	if (madvise(addr, size, MADV_POPULATE_WRITE) < 0) {
		volatile uint8_t *p = addr;
		uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
		for (uint64_t i = 0; i < size; i += pg)
			p[i] = 0;
	}
	close(fd);
	m->addr = addr;
	m->len = size;
	m->huge = huge ? 1 : (shmem_thp_enabled() ? 2 : 0);
	m->guard = bus_shm_guard(b, path, addr, size, huge ? (size_t)fs_page : 0);
	return 0;
fail_map:
	munmap(addr, size);
fail_fd:
	close(fd);
	unlink(path);
	return err;
}

int bus_shm_attach(const struct bus *b, const char *path, uint64_t min, struct bus_map *m,
		   uint64_t *size_out)
{
	struct stat st;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	void *addr;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < min) {
		close(fd);
		return -BUS_ECORRUPT;
	}
	struct statfs sf;
	int huge = fstatfs(fd, &sf) == 0 && (uint64_t)sf.f_type == (uint64_t)HUGETLBFS_MAGIC;
	addr = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
		    0);
	close(fd);
	if (addr == MAP_FAILED)
		return -errno;
	m->addr = addr;
	m->len = (size_t)st.st_size;
	m->huge = huge;
	m->guard = bus_shm_guard(b, path, addr, m->len, huge ? (size_t)sf.f_bsize : 0);
	*size_out = (uint64_t)st.st_size;
	return 0;
}

void bus_shm_unmap(struct bus_map *m)
{
	if (m->addr) {
		/* No handler maps zeros over the window once it is unmapped
		 * (and reused): mapguard.h. */
		bus_mapguard_del(m->guard);
		munmap(m->addr, m->len);
	}
	m->addr = NULL;
	m->guard = -1;
}
