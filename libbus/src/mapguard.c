/* mapguard.c - SIGBUS in a registered mapped window reads as zeros (see
 * mapguard.h).
 *
 * THE SLOTS.  slots[i].lo is 0 when slot i is free, SLOT_BUSY while its
 * owner fills it, else the window's first byte; hi is one past its last.
 * Protocol:
 *   - add: CAS lo 0 -> SLOT_BUSY (the slot is the caller's), store hit = 0
 *     and hi (relaxed), then store lo = start with release: a handler that
 *     reads lo == start with acquire sees this window's hi and hit = 0.
 *   - del: store lo = 0 (release), before the window is unmapped: from
 *     then on no handler claims a fault in it.
 *   - handler: load lo (acquire), hi (acquire), then lo again; the window
 *     counts only if lo was the same both times, so hi is never paired
 *     with another window's lo (a slot freed and taken again between the
 *     loads).  Should the same start come back with another hi, the hi
 *     read is the newer one's, and a fault below it is in that window.
 * Faults in a window come from the thread that owns it, or from threads
 * the owner handed its records to (with synchronisation of their own), so
 * registration happens before them either way.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mapguard.h"

#define SLOT_BUSY ((uintptr_t)1)

struct guard_slot {
	_Atomic uintptr_t lo;
	_Atomic uintptr_t hi;
	atomic_int hit;
};

static struct guard_slot slots[BUS_MAPGUARD_SLOTS];
static struct sigaction prev; /* the action before ours */
static uintptr_t page_mask;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int install_err;

/* Hand @sig to the action that was there before ours, as if ours had
 * never been installed. */
static void chain(int sig, siginfo_t *si, void *uc)
{
	bool sent = si->si_code <= 0; /* kill(2), sigqueue(3), tgkill(2) */

	if (prev.sa_flags & SA_SIGINFO) {
		if (prev.sa_sigaction)
			prev.sa_sigaction(sig, si, uc);
		return;
	}
	if (prev.sa_handler == SIG_IGN && sent)
		return;
	if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
		/* The default action: a fault is raised again by the
		 * instruction when we return (the kernel does not let a fault's
		 * SIGBUS be ignored either); a sent signal is pending, as it is
		 * blocked while we run, until we return. */
		struct sigaction dfl;

		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigemptyset(&dfl.sa_mask);
		sigaction(sig, &dfl, NULL);
		if (sent)
			raise(sig);
		return;
	}
	prev.sa_handler(sig);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	uintptr_t a = (uintptr_t)si->si_addr;

	/* BUS_ADRERR: a page past the end of the file it maps. */
	if (si->si_code == BUS_ADRERR) {
		for (size_t i = 0; i < BUS_MAPGUARD_SLOTS; i++) {
			struct guard_slot *s = &slots[i];
			uintptr_t lo = atomic_load_explicit(&s->lo, memory_order_acquire), hi, pg;

			if (lo <= SLOT_BUSY || a < lo)
				continue;
			hi = atomic_load_explicit(&s->hi, memory_order_acquire);
			if (atomic_load_explicit(&s->lo, memory_order_relaxed) != lo || a >= hi)
				continue;
			pg = a & ~page_mask;
			if (mmap((void *)pg, hi - pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
				 -1, 0) == MAP_FAILED)
				break;
			atomic_store_explicit(&s->hit, 1, memory_order_relaxed);
			errno = saved;
			return;
		}
	}
	chain(sig, si, uc);
	errno = saved;
}

static void install(void)
{
	struct sigaction sa;

	page_mask = (uintptr_t)sysconf(_SC_PAGESIZE) - 1;
	/* The action before ours, saved before ours can run. */
	if (sigaction(SIGBUS, NULL, &prev)) {
		install_err = -errno;
		return;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL))
		install_err = -errno;
}

int bus_mapguard_add(void *p, size_t len)
{
	pthread_once(&once, install);
	if (install_err)
		return install_err;
	for (int i = 0; i < BUS_MAPGUARD_SLOTS; i++) {
		struct guard_slot *s = &slots[i];
		uintptr_t free_lo = 0;

		if (atomic_load_explicit(&s->lo, memory_order_relaxed) != 0 ||
		    !atomic_compare_exchange_strong_explicit(&s->lo, &free_lo, SLOT_BUSY,
							     memory_order_relaxed,
							     memory_order_relaxed))
			continue;
		atomic_store_explicit(&s->hit, 0, memory_order_relaxed);
		atomic_store_explicit(&s->hi, (uintptr_t)p + len, memory_order_relaxed);
		atomic_store_explicit(&s->lo, (uintptr_t)p, memory_order_release);
		return i;
	}
	return -EAGAIN;
}

void bus_mapguard_del(int slot)
{
	if (slot >= 0 && slot < BUS_MAPGUARD_SLOTS)
		atomic_store_explicit(&slots[slot].lo, 0, memory_order_release);
}

bool bus_mapguard_hit(int slot)
{
	return slot >= 0 && slot < BUS_MAPGUARD_SLOTS &&
	       atomic_load_explicit(&slots[slot].hit, memory_order_relaxed);
}
