/* mapguard.h - turn SIGBUS in a mapped window of a file into zeros.
 *
 * A reader that maps a file (a sealed segment, see segment.c) faults with
 * SIGBUS when it touches a page the file no longer has: truncated under the
 * mapping, which busd never does to a sealed segment but a hand or a
 * hostile process can.  A window registered here is protected: on such a
 * fault, the handler replaces the window from the faulting page to its end
 * with anonymous zero pages, marks the window hit, and returns, so that the
 * faulting load reads zeros.  Zeros are no valid frame (a frame's header
 * names its type, length and CRC), so the reader reports -BUS_ECORRUPT
 * where a read(2) would have returned short.
 *
 * The handler is installed once per process, at the first
 * bus_mapguard_add(), with sigaction(2); it chains every SIGBUS that is not
 * in a registered window to the action installed before it (SIG_DFL: the
 * process dies of SIGBUS as it would have).  An application that installs
 * its own SIGBUS action later replaces it, and a truncation under a mapped
 * window is then its handler's to deal with.  (BUS_REPLAY=read keeps the
 * library from mapping, and so from installing anything.)
 *
 * Limits: at most BUS_MAPGUARD_SLOTS windows at once per process;
 * bus_mapguard_add() fails past that and the caller reads instead.  Bytes
 * handed out of a window before the truncation read as zeros afterwards.
 * A thread that blocks SIGBUS gets no help: the kernel kills the process
 * on a fault whose signal is blocked, whatever the action.  The previous
 * action's sa_mask, SA_RESETHAND and SA_NODEFER are not applied when it is
 * called from ours.
 *
 * Thread-safety: every call may be made from any thread; a slot is used by
 * the thread that added it until it removes it.  The handler only reads
 * slots, with acquire loads, and calls mmap(2) and sigaction(2), which are
 * system calls on Linux (no lock).
 */
#ifndef BUS_MAPGUARD_H
#define BUS_MAPGUARD_H

#include <stdbool.h>
#include <stddef.h>

#define BUS_MAPGUARD_SLOTS 512

/*
 * bus_mapguard_add() - protect the mapped window [@p, @p + @len) (@p page
 * aligned, @len > 0).  Installs the handler on the first call.  Returns the
 * slot (>= 0), -EAGAIN when every slot is in use, or -errno when the
 * handler could not be installed.
 */
int bus_mapguard_add(void *p, size_t len);

/*
 * bus_mapguard_del() - stop protecting slot @slot (from bus_mapguard_add()),
 * before the window is unmapped; returns once no handler is using the
 * slot, so the window may then be unmapped.  A negative @slot is ignored.
 */
void bus_mapguard_del(int slot);

/* bus_mapguard_hit() - whether a fault in slot @slot's window was turned
 * into zeros since it was added. */
bool bus_mapguard_hit(int slot);

#endif
