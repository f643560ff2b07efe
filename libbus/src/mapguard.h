/* mapguard.h - turn SIGBUS in a mapped window of a file into zeros.
 *
 * A process that maps a file faults with SIGBUS when it touches a page the
 * file no longer has: truncated under the mapping.  busd never truncates a
 * sealed segment, and nothing of bus truncates a ring file or the control
 * region, but a hand or a hostile process with write access can.  A window
 * registered here is protected: on such a fault, the handler marks the
 * window hit, replaces the window (from the faulting page to its end, or
 * all of it: BUS_MAPGUARD_WHOLE) with anonymous zero pages, and returns,
 * so that the faulting access reads (or writes) zeros.
 *   - Sealed segments (segment.c): zeros are no valid frame (a frame's
 *     header names its type, length and CRC), so the reader reports
 *     -BUS_ECORRUPT where a read(2) would have returned short.
 *   - Rings and the control region (shm.c, bus.c): zeros must not pass for
 *     data, nor a write into them for a write into the file, so every call
 *     that hands out or acknowledges data checks the hit after its last
 *     access (bus_mapguard_hits(), then bus_mapguard_hit()) and returns
 *     -BUS_ECORRUPT (producer.c, consumer.c, topic.c; busd's spill.c).
 *     Their windows are whole-window and writable: after a hit, nothing
 *     this process writes through the mapping reaches the file (a producer
 *     working from a zeroed ring header would otherwise write frames over
 *     records that other processes still read from the file).
 *
 * The handler is installed once per process, at the first
 * bus_mapguard_add() (for libbus: at the first bus_open()), with
 * sigaction(2); it chains every SIGBUS that is not in a registered window
 * to the action installed before it (SIG_DFL: the process dies of SIGBUS
 * as it would have).  An application that installs its own SIGBUS action
 * later replaces it, and a truncation under a mapped window is then its
 * handler's to deal with.
 *
 * Limits: at most BUS_MAPGUARD_SLOTS windows at once per process;
 * bus_mapguard_add() fails past that and the caller goes on unprotected
 * (shm.c says so once) or reads instead (segment.c).  Bytes handed out of
 * a window before the truncation read as zeros afterwards.  A thread that
 * blocks SIGBUS gets no help: the kernel kills the process on a fault
 * whose signal is blocked, whatever the action.  The previous action's
 * sa_mask, SA_RESETHAND and SA_NODEFER are not applied when it is called
 * from ours.  Only a fault past the end of the file (BUS_ADRERR) is
 * handled: a file truncated and then extended again reads its hole as
 * zeros without any fault, which no guard can see.
 *
 * Thread-safety: every call may be made from any thread; a slot is used by
 * the thread that added it until it removes it.  The handler only reads
 * slots, with acquire loads, writes the hit marks, and calls mmap(2) and
 * sigaction(2), which are system calls on Linux (no lock).
 */
#ifndef BUS_MAPGUARD_H
#define BUS_MAPGUARD_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Windows protected at once per process: a window per mapped ring (a
 * process may map hundreds of partitions; busd every persistent one), one
 * per control region, one per sealed segment being read. */
#define BUS_MAPGUARD_SLOTS 8192

/* Flags of bus_mapguard_add_ex(). */
#define BUS_MAPGUARD_WRITE 0x1u /* the zero pages are writable (a shared ring) */
#define BUS_MAPGUARD_WHOLE 0x2u /* a fault replaces the whole window */

/*
 * bus_mapguard_add_ex() - protect the mapped window [@p, @p + @len) (@p and
 * @len multiples of @page, @len > 0).  @page is the mapping's page size (a
 * hugetlbfs file's huge page: the replacement must not split one), 0 for
 * the system's.  @flags: BUS_MAPGUARD_*.  Installs the handler on the first
 * call.  Returns the slot (>= 0), -EAGAIN when every slot is in use, or
 * -errno when the handler could not be installed.
 */
int bus_mapguard_add_ex(void *p, size_t len, size_t page, unsigned flags);

/* bus_mapguard_add() - bus_mapguard_add_ex(@p, @len, 0, 0): a read-only
 * window of system pages, replaced from the faulting page on. */
int bus_mapguard_add(void *p, size_t len);

/*
 * bus_mapguard_del() - stop protecting slot @slot (from bus_mapguard_add()),
 * before the window is unmapped; returns once no handler is using the
 * slot, so the window may then be unmapped.  A negative @slot is ignored.
 */
void bus_mapguard_del(int slot);

/* bus_mapguard_hit() - whether a fault in slot @slot's window was turned
 * into zeros since it was added.  An acquire fence, then a load: after a
 * non-zero bus_mapguard_hits(), it sees the mark of every hit counted. */
bool bus_mapguard_hit(int slot);

/* Faults turned into zeros in this process so far, in any window: written
 * by the handler only (see mapguard.c for the ordering), on a cache line
 * of its own, so that the hot paths' load of it is a hit in their cache
 * (no other variable's writes take the line away).  Read it with
 * bus_mapguard_hits(). */
struct bus_mapguard_count {
	alignas(64) _Atomic unsigned long n;
	char pad[64 - sizeof(unsigned long)];
};
extern struct bus_mapguard_count bus_mapguard_nhits __attribute__((visibility("hidden")));

/*
 * bus_mapguard_hits() - bus_mapguard_nhits, one relaxed load: the hot
 * paths' test (0 nearly always; a predictable branch), which look at their
 * own windows (bus_mapguard_hit()) only when it is not 0.  What a load
 * made after an access tells about that access is said in mapguard.c
 * (ORDERING).
 */
static inline unsigned long bus_mapguard_hits(void)
{
	return atomic_load_explicit(&bus_mapguard_nhits.n, memory_order_relaxed);
}

#endif
