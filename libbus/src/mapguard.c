/* mapguard.c - SIGBUS in a registered mapped window reads as zeros (see
 * mapguard.h).
 *
 * THE SLOTS.  slots[i].lo is 0 when slot i is free, SLOT_BUSY while its
 * owner fills it, else the window's first byte; hi is one past its last;
 * pmask and flags say how to replace it.  `top` is one past the highest
 * slot ever taken: the handler looks no further.  Protocol:
 *   - add: CAS lo 0 -> SLOT_BUSY (the slot is the caller's), a release
 *     fence (M1), raise top (release), store hit = 0, hi, pmask and flags
 *     (relaxed), then store lo = start with release: a handler that reads
 *     lo == start with acquire sees this window's hi, pmask, flags and
 *     hit = 0.
 *   - del: store lo = 0, then wait until the slot's `inside` count is 0,
 *     before the window is unmapped.
 *   - handler: increment `inside`, then load lo, hi, pmask, flags, and lo
 *     again after an acquire fence (M2); the window counts only if lo was
 *     the same both times, so hi is never paired with another window's lo
 *     (a slot freed and taken again between the loads).  M1 and M2 make
 *     that hold on machines that reorder stores (arm64): a handler that
 *     read any of the next owner's hi, pmask or flags (stored after M1)
 *     reads, after M2, that owner's SLOT_BUSY or a later lo, never the old
 *     one.  (On x86-64 both are compiler barriers: stores stay in order.)  It marks the hit and maps the zeros before
 *     it decrements `inside`.  The increment and del's store of lo are
 *     sequentially consistent, and so are the handler's load of lo and
 *     del's load of `inside` (a Dekker pair): either the handler sees lo
 *     = 0 and leaves the slot alone, or del sees it inside and waits.  So
 *     the handler never maps zeros over an address that del's caller has
 *     unmapped (and something else may have mapped since), and a hit
 *     never lands on the slot's next window.  The wait is short: the
 *     handler blocks on nothing, it makes one mmap(2).
 * Faults in a window come from the thread that owns it, or from threads
 * the owner handed its records to (with synchronisation of their own), so
 * registration (top included) happens before them either way.
 *
 * ORDERING.  The handler stores the window's hit mark (relaxed), then
 * increments bus_mapguard_nhits (seq_cst: a locked instruction, a full
 * barrier, and a release), and only then maps the zeros.  A thread that
 * accesses the window and then loads the counter learns whether that
 * access missed the file:
 *   - its access faulted on a truncated page: the handler ran in this very
 *     thread and incremented the counter before the access was made again
 *     (program order);
 *   - its access reached the zeros that another thread's handler mapped:
 *     it did so only through the page tables that mmap(2) changed after
 *     that handler's increment.  On x86-64 mmap(2) returns only after
 *     every CPU running this process took the TLB-shootdown interrupt (an
 *     interrupt is serializing) and a thread that was not running resumes
 *     through the scheduler's full barriers; the first access of a zero
 *     page is itself a page fault (kernel entry, mmap_lock).  So the
 *     access and every later instruction of the thread execute after the
 *     increment is visible: the later load returns it.  (An access made
 *     before the interrupt reached the file's page, as any access made
 *     before the truncation.)
 * Loads that read a value: the caller orders them before its load of the
 * counter (consumer.c: the acquire fence A1 of its seqlock check).  A
 * store (producer.c: the commit) may still sit in the store buffer when
 * the load executes, which TSO allows; what decides where it lands is the
 * page its address was translated to, and interrupts are precise: the
 * store and the load both retire before the shootdown interrupt (the
 * store translated to the file's page), or the load retires after it and
 * returns the increment.  On machines that flush TLBs without
 * interrupting the other CPUs (arm64 broadcasts TLBI), the second case is
 * not covered without a full fence between the access and the load (the
 * first case is, everywhere).
 * A non-zero count sends the reader to bus_mapguard_hit(), whose acquire
 * fence pairs with the increment's release: it sees the mark of every hit
 * counted.
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
	_Atomic uintptr_t pmask; /* the mapping's page size - 1 */
	atomic_uint flags;       /* BUS_MAPGUARD_* */
	atomic_int hit;
	atomic_int inside; /* handlers looking at this slot */
};

struct bus_mapguard_count bus_mapguard_nhits;

static struct guard_slot slots[BUS_MAPGUARD_SLOTS];
static _Atomic size_t top; /* one past the highest slot ever taken */
static struct sigaction prev; /* the action before ours */
static uintptr_t page_mask;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int install_err;

/* Whether @si reports a fault of the instruction that raised it (which
 * raises it again if the handler returns), as opposed to a SIGBUS sent by
 * kill(2) or sigqueue(3), or an asynchronous notice (BUS_MCEERR_AO). */
static bool is_fault(const siginfo_t *si)
{
	return si->si_code == BUS_ADRALN || si->si_code == BUS_ADRERR ||
	       si->si_code == BUS_OBJERR
#ifdef BUS_MCEERR_AR
	       || si->si_code == BUS_MCEERR_AR
#endif
		;
}

/* Hand @sig to the action that was there before ours, as if ours had
 * never been installed.  SIG_DFL and SIG_IGN are told apart first: the
 * kernel keeps SA_SIGINFO in sa_flags with either. */
static void chain(int sig, siginfo_t *si, void *uc)
{
	bool fault = is_fault(si);

	if (prev.sa_handler == SIG_IGN && !fault)
		return;
	if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
		/* The default action: a fault is raised again by the
		 * instruction when we return (the kernel does not let a fault's
		 * SIGBUS be ignored either); anything else is raised here, and
		 * pending, as it is blocked while we run, until we return. */
		struct sigaction dfl;

		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigemptyset(&dfl.sa_mask);
		sigaction(sig, &dfl, NULL);
		if (!fault)
			raise(sig);
		return;
	}
	if (prev.sa_flags & SA_SIGINFO)
		prev.sa_sigaction(sig, si, uc);
	else
		prev.sa_handler(sig);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	uintptr_t a = (uintptr_t)si->si_addr;

	/* BUS_ADRERR: a page past the end of the file it maps. */
	if (si->si_code == BUS_ADRERR) {
		size_t n = atomic_load_explicit(&top, memory_order_acquire);
		sigset_t all, old;
		bool ours = false;

		/* No other signal's handler runs while a slot's `inside` is
		 * held: one that left by siglongjmp(3) would leave it held,
		 * and del() would wait for it for ever. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		for (size_t i = 0; i < n && !ours; i++) {
			struct guard_slot *s = &slots[i];
			uintptr_t lo, hi, pm, pg;
			unsigned fl;

			/* Cheap filter first; then the protocol (file head). */
			lo = atomic_load_explicit(&s->lo, memory_order_relaxed);
			if (lo <= SLOT_BUSY || a < lo)
				continue;
			atomic_fetch_add(&s->inside, 1);
			lo = atomic_load(&s->lo);
			hi = atomic_load_explicit(&s->hi, memory_order_acquire);
			pm = atomic_load_explicit(&s->pmask, memory_order_relaxed);
			fl = atomic_load_explicit(&s->flags, memory_order_relaxed);
			/* M2: pairs with M1 (file head). */
			atomic_thread_fence(memory_order_acquire);
			if (lo > SLOT_BUSY && a >= lo && a < hi &&
			    atomic_load_explicit(&s->lo, memory_order_relaxed) == lo) {
				pg = (fl & BUS_MAPGUARD_WHOLE) ? lo : a & ~pm;
				/* The mark and the count before the zeros (file
				 * head, ORDERING). */
				atomic_store_explicit(&s->hit, 1, memory_order_relaxed);
				atomic_fetch_add_explicit(&bus_mapguard_nhits.n, 1,
							  memory_order_seq_cst);
				ours = mmap((void *)pg, hi - pg,
					    PROT_READ | ((fl & BUS_MAPGUARD_WRITE) ? PROT_WRITE : 0),
					    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED;
			}
			atomic_fetch_sub(&s->inside, 1);
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (ours) {
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
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	/* One call, so that no action another thread installs in between is
	 * lost.  (The kernel stores prev after ours is in place: a foreign
	 * SIGBUS in that instant finds prev zeroed, which reads as SIG_DFL.
	 * No window is registered yet, so none of ours can fault.) */
	if (sigaction(SIGBUS, &sa, &prev))
		install_err = -errno;
}

int bus_mapguard_add_ex(void *p, size_t len, size_t page, unsigned flags)
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
		/* M1: the claim before the stores below (file head). */
		atomic_thread_fence(memory_order_release);
		size_t t = atomic_load_explicit(&top, memory_order_relaxed);
		while (t < (size_t)i + 1 &&
		       !atomic_compare_exchange_weak_explicit(&top, &t, (size_t)i + 1,
							      memory_order_release,
							      memory_order_relaxed))
			;
		atomic_store_explicit(&s->hit, 0, memory_order_relaxed);
		atomic_store_explicit(&s->hi, (uintptr_t)p + len, memory_order_relaxed);
		atomic_store_explicit(&s->pmask, page ? (uintptr_t)page - 1 : page_mask,
				      memory_order_relaxed);
		atomic_store_explicit(&s->flags, flags, memory_order_relaxed);
		atomic_store_explicit(&s->lo, (uintptr_t)p, memory_order_release);
		return i;
	}
	return -EAGAIN;
}

int bus_mapguard_add(void *p, size_t len)
{
	return bus_mapguard_add_ex(p, len, 0, 0);
}

void bus_mapguard_del(int slot)
{
	if (slot < 0 || slot >= BUS_MAPGUARD_SLOTS)
		return;
	atomic_store(&slots[slot].lo, 0);
	/* A handler that saw the window finishes with it (file head). */
	while (atomic_load(&slots[slot].inside))
		;
}

bool bus_mapguard_hit(int slot)
{
	if (slot < 0 || slot >= BUS_MAPGUARD_SLOTS)
		return false;
	/* Pairs with the handler's increment (file head, ORDERING). */
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&slots[slot].hit, memory_order_relaxed);
}
