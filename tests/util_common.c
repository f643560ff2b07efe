/* util_common.c - test helpers without Criterion (thr_* programs use them
 * under ThreadSanitizer, where Criterion cannot run). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#include "util.h"

int64_t tnow_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t tsum(const void *p, size_t n)
{
	const uint8_t *bytes = p;
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++) {
		h ^= bytes[i];
		h *= 1099511628211ull;
	}
	return h;
}

bool tstress(void)
{
	const char *s = getenv("BUS_STRESS");
	return s && *s && strcmp(s, "0") != 0;
}

bool tin_futex_wait(pid_t pid)
{
	char path[64], buf[64] = { 0 };
	FILE *f;
	bool in = false;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	f = fopen(path, "r");
	if (f) {
		/* The first field: the number of the system call it is in. */
		in = fgets(buf, sizeof(buf), f) && strtol(buf, NULL, 10) == SYS_futex;
		fclose(f);
	}
	return in;
}
