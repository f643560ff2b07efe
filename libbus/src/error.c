/* error.c - bus_strerror(). */
#include <string.h>

#include "internal.h"

static const char *const bus_errors[] = {
	[BUS_ECORRUPT - BUS_EBASE] = "file is corrupt, truncated or not a bus file",
	[BUS_EVERSION - BUS_EBASE] = "shared file has an incompatible layout version",
	[BUS_ECONFIG - BUS_EBASE] = "topic exists with another configuration",
	[BUS_ELAPPED - BUS_EBASE] = "record was overwritten while it was read (lapped)",
	[BUS_ENODAEMON - BUS_EBASE] = "no daemon is spilling this persistent topic: start busd",
	[BUS_ESTALE - BUS_EBASE] = "topic was deleted or re-created",
	[BUS_EBUSY - BUS_EBASE] = "partition is owned by another exclusive producer",
	[BUS_EREPAIRED - BUS_EBASE] = "claim was repaired before its commit: record lost",
};

const char *bus_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err > BUS_EBASE && err < BUS_ELAST && bus_errors[err - BUS_EBASE])
		return bus_errors[err - BUS_EBASE];
	if (err == EAGAIN)
		return "would block: the ring is full";
	if (err == ERANGE)
		return "offset out of range";
	if (err == ENOENT)
		return "no such topic, partition or bus";
	if (err > 0 && err < BUS_EBASE)
		return strerror(err); /* glibc's table is static and immutable */
	return "unknown error";
}
