/* util_busd.h - a private bus with its own busd, for the suites that run
 * the daemon (test_busd.c, test_consumer.c). */
#ifndef BUS_TEST_UTIL_BUSD_H
#define BUS_TEST_UTIL_BUSD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <bus/bus.h>

#include "util.h"

/* The test's environment and bus (busd_setup()), the running busd's pid
 * (-1: none), and the paths of busd's log (its stderr) and config file,
 * next to the test's data folder. */
extern struct tenv e;
extern struct bus *tb;
extern pid_t busd;
extern char busd_log[300], busd_conf[300];

/* A TestSuite's .init: private folders, the bus, no busd yet. */
void busd_setup(void);
/* A TestSuite's .fini: SIGKILL busd if it runs, close the bus, detach a
 * "small" mount under the data folder (the full-disk test's), remove the
 * config, the log (kept with BUS_TEST_KEEP_LOG set) and the folders. */
void busd_teardown(void);

void sleep_ms(int ms);
/* Write @text to busd_conf: busd_spawn() then passes it to busd. */
void write_conf(const char *text);
/* Start $BUILD/bin/busd (default build/) in the foreground, its stderr
 * appended to busd_log, with busd_conf when that file exists.  Returns its
 * pid at once; it dies with the test (PR_SET_PDEATHSIG). */
pid_t busd_spawn(void);
/* Run by busd_spawn()'s child just before it starts busd (NULL: none);
 * busd_setup() clears it. */
extern void (*busd_spawn_hook)(void);
/* busd_spawn() into busd, then wait (20 s deadline) until it has published
 * itself in the control region; fails the test if it exits first. */
void busd_start(void);
/* Send @sig to busd and wait for its exit (30 s deadline, else the test
 * fails).  Returns its exit status, or -1 when a signal killed it. */
int busd_stop(int sig);
/* Wait up to @ms for busd to exit on its own (the test fails if it does
 * not).  Returns its exit status, or -1 when a signal killed it. */
int busd_wait_exit(int ms);
/* Whether busd_log contains @needle; wait_log() waits up to @ms for it;
 * log_count() counts the lines that contain it. */
bool log_has(const char *needle);
void wait_log(const char *needle, int ms);
int log_count(const char *needle);
/* Partition @p of @topic, described (fails the test on error). */
struct bus_partition_info pinfo(const char *topic, uint32_t p);
/* Wait (60 s deadline) until busd has spilled everything produced to the
 * first @parts partitions of @topic. */
void wait_spilled(const char *topic, uint32_t parts);

#endif
