/* bus/error.h - error codes of libbus.
 *
 * Every libbus call that can fail returns 0 (or a non-negative result) on
 * success and a negative error code on failure: either -errno (a standard
 * errno value where one fits) or one of the BUS_E* codes below, which live
 * in a private range above every errno value.  bus_strerror() names both.
 *
 * Standard values used throughout:
 *   -EINVAL     a bad argument (NULL handle, bad name, bad size)
 *   -ENOENT     unknown topic or partition, bus not created
 *   -EEXIST     topic exists with another config (see BUS_ECONFIG)
 *   -EAGAIN     would block (back-pressure; not an error in the usual sense)
 *   -ETIMEDOUT  a wait ran past its deadline
 *   -EMSGSIZE   a record larger than the partition can hold
 *   -ENOMEM     out of memory, or no more topic slots
 *   -ENOSPC     no room in BUS_SHM_DIR (or the huge-page pool) for a ring
 *   -EACCES     permission denied on a shared file
 *   -ERANGE     offset out of range (older than the ring, newer than the end)
 */
#ifndef BUS_ERROR_H
#define BUS_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/** First code of the private range; above every errno value Linux uses. */
#define BUS_EBASE 2000

enum bus_error {
	/** A shared file (control region, ring) is corrupt, truncated or
	 *  hostile: a size, offset or magic failed validation; or the file
	 *  was truncated under this process's mapping (the library caught the
	 *  SIGBUS, see bus_open()), and calls on it return this from then on
	 *  (the log callback names the file once). */
	BUS_ECORRUPT = BUS_EBASE + 1,
	/** A shared file was written by an incompatible layout version or a
	 *  build with another struct layout. */
	BUS_EVERSION,
	/** The topic exists with another configuration. */
	BUS_ECONFIG,
	/** A view was overwritten (lapped) while it was held. */
	BUS_ELAPPED,
	/** A persistent partition needs its spiller, and no busd runs. */
	BUS_ENODAEMON,
	/** The topic was deleted (or deleted and re-created) under a handle. */
	BUS_ESTALE,
	/** The partition has an exclusive (single-writer) producer, or an
	 *  exclusive producer was asked for while another producer writes. */
	BUS_EBUSY,
	/** A claim was repaired (turned into padding) before it was committed:
	 *  its record is lost and counted. */
	BUS_EREPAIRED,
	/** Not a bus error: one past the last code. */
	BUS_ELAST
};

/**
 * bus_strerror() - a static, human-readable message for @err.
 * @err: a return value of libbus (negative), or its absolute value.
 *
 * Returns a string that is never NULL and must not be freed.  Thread-safe.
 */
const char *bus_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
