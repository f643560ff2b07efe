/* util.h - helpers shared by the test suites: a private bus per test. */
#ifndef BUS_TEST_UTIL_H
#define BUS_TEST_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <bus/bus.h>

struct tenv {
	char shm_dir[256];
	char data_dir[256];
	char name[64];
	struct bus_opts opts;
};

/* The suite's private bus: tsuite_setup() (a TestSuite .init) makes the
 * environment and opens the bus, tsuite_teardown() closes and removes it. */
extern struct tenv env;
extern struct bus *b;
void tsuite_setup(void);
void tsuite_teardown(void);

/* Make private BUS_SHM_DIR and BUS_DATA_DIR folders and a unique bus name,
 * and export them (children and the CLI inherit them). */
void tenv_init(struct tenv *e);
/* Remove both folders and everything in them. */
void tenv_fini(struct tenv *e);
/* Open the test's bus, failing the test on error. */
struct bus *tenv_bus(struct tenv *e);
/* Fork a child running fn(arg); the child exits with fn's return value. */
pid_t tfork(int (*fn)(void *), void *arg);
/* Wait for @pid with a deadline; returns its exit status, or -1 (killed,
 * timeout: then it is SIGKILLed). */
int twait(pid_t pid, int timeout_ms);
/* Wait for @pid with a deadline: 0 with its raw wait status in *status, or
 * -1 when the deadline passed (the child is then SIGKILLed and reaped). */
int twait_status(pid_t pid, int timeout_ms, int *status);
/* Wait with a deadline until child @pid has exited, without reaping it:
 * it stays a zombie until twait().  0, or -1 when the deadline passed. */
int tzombie(pid_t pid, int timeout_ms);
/* Whether process @pid sits in a futex(2) call now (/proc/<pid>/syscall):
 * for tests that wait until a process is asleep on a futex. */
bool tin_futex_wait(pid_t pid);
/* Monotonic milliseconds. */
int64_t tnow_ms(void);
/* A cheap checksum for payload checks. */
uint64_t tsum(const void *p, size_t n);
/* Whether the test runs long stress cases (make stress). */
bool tstress(void);

#endif
