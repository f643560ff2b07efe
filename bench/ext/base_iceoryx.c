/* bench/ext/base_iceoryx.c - iceoryx (Eclipse, zero-copy shared-memory
 * publish/subscribe) through its C binding as a baseline: round trip and
 * throughput between two pinned processes (driver: base_common.h).  Built
 * by bench/run.sh against Debian's libiceoryx-binding-c-dev, not by the
 * Makefile.  Needs a running RouDi daemon (iox-roudi): run.sh starts one
 * with bench/roudi.toml and stops it.
 *
 * usage: base_iceoryx rtt  VARIANT [SIZE [ROUND_TRIPS [WARMUP]]]
 *        base_iceoryx tput VARIANT [SIZE [RECORDS]]
 * VARIANT: spin, wait
 *
 * Written as iceoryx's own latency benchmark (iceperf, its C-binding
 * variant) does it: each process registers a runtime, a publisher with
 * historyCapacity 0 and a subscriber with historyRequest 0; both wait
 * until the subscription is established (iox_sub_get_subscription_state,
 * iox_pub_has_subscribers) before the start.  A send loans a chunk
 * (iox_pub_loan_chunk), copies the value in and publishes it; a receive
 * takes the chunk (iox_sub_take_chunk), uses it in place and releases it.
 * Nothing may be lost: the publisher waits for a slow subscriber
 * (ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER) and the subscriber's queue
 * blocks the producer when full (QueueFullPolicy_BLOCK_PRODUCER), holding
 * up to 256 chunks (the build's maximum, MAX_SUBSCRIBER_QUEUE_CAPACITY).
 *   spin  busy-polls iox_sub_take_chunk (as iceperf does).
 *   wait  sleeps in a WaitSet (iox_ws_wait) on SubscriberState_HAS_DATA
 *         when the queue is empty: iceoryx's event-driven way.
 * Round trip: topics Bench/<pid>/ping and Bench/<pid>/pong; throughput:
 * Bench/<pid>/data.  Workers end with exit() so that the runtime's
 * destructor deregisters them from RouDi (iox_runtime_shutdown() alone
 * does not, and RouDi 2.0 aborts at its own shutdown when it finds a
 * registered process gone).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/notification_info.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>

#include "../base_common.h"

static const char *const variants[] = { "spin", "wait", NULL };
static int use_waitset, rtt_mode;
static char instance[32];
static iox_pub_storage_t pub_storage;
static iox_sub_storage_t sub_storage;
static iox_ws_storage_t ws_storage;
static iox_pub_t pub;
static iox_sub_t sub;
static iox_ws_t ws;

static void prepare(int variant, int rtt, size_t size)
{
	(void)size;
	use_waitset = variant == 1;
	rtt_mode = rtt;
	snprintf(instance, sizeof(instance), "%d", (int)getpid());
}

static void wait_until(bool (*cond)(void), const char *what)
{
	uint64_t t0 = bench_now_ns();
	while (!cond()) {
		if (bench_now_ns() - t0 > 10000000000ull)
			bench_die("base_iceoryx: no %s after 10 s (is iox-roudi running?)", what);
		usleep(1000);
	}
}

static bool subscribed(void)
{
	return iox_sub_get_subscription_state(sub) == SubscribeState_SUBSCRIBED;
}

static bool has_subscribers(void)
{
	return iox_pub_has_subscribers(pub);
}

static void ice_open(enum base_role role)
{
	char name[64];
	snprintf(name, sizeof(name), "bus-bench-%s-%d", role == BASE_A ? "a" : "b",
		 (int)getpid());
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	iox_runtime_init(name);
	const char *out = NULL, *in = NULL;
	if (rtt_mode) {
		out = role == BASE_A ? "ping" : "pong";
		in = role == BASE_A ? "pong" : "ping";
	} else if (role == BASE_A) {
		out = "data";
	} else {
		in = "data";
	}
	if (out) {
		iox_pub_options_t po;
		iox_pub_options_init(&po);
		po.historyCapacity = 0;
		po.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
		pub = iox_pub_init(&pub_storage, "Bench", instance, out, &po);
		if (!pub)
			bench_die("base_iceoryx: iox_pub_init failed");
	}
	if (in) {
		iox_sub_options_t so;
		iox_sub_options_init(&so);
		so.queueCapacity = 256;
		so.historyRequest = 0;
		so.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
		sub = iox_sub_init(&sub_storage, "Bench", instance, in, &so);
		if (!sub)
			bench_die("base_iceoryx: iox_sub_init failed");
		if (use_waitset) {
			ws = iox_ws_init(&ws_storage);
			if (!ws)
				bench_die("base_iceoryx: iox_ws_init failed");
			if (iox_ws_attach_subscriber_state(ws, sub, SubscriberState_HAS_DATA, 0,
							   NULL) != WaitSetResult_SUCCESS)
				bench_die("base_iceoryx: iox_ws_attach_subscriber_state failed");
		}
	}
	if (sub)
		wait_until(subscribed, "subscription");
	if (pub)
		wait_until(has_subscribers, "subscriber");
}

static void ice_send(const void *buf, size_t len)
{
	void *chunk = NULL;
	enum iox_AllocationResult r = iox_pub_loan_chunk(pub, &chunk, (uint32_t)len);
	if (r != AllocationResult_SUCCESS)
		bench_die("base_iceoryx: iox_pub_loan_chunk(%zu): result %d", len, (int)r);
	memcpy(chunk, buf, len);
	iox_pub_publish_chunk(pub, chunk);
}

static const void *ice_take(size_t len, size_t *n)
{
	const void *chunk = NULL;
	for (;;) {
		enum iox_ChunkReceiveResult r = iox_sub_take_chunk(sub, &chunk);
		if (r == ChunkReceiveResult_SUCCESS)
			break;
		if (r != ChunkReceiveResult_NO_CHUNK_AVAILABLE)
			bench_die("base_iceoryx: iox_sub_take_chunk: result %d", (int)r);
		if (use_waitset) {
			iox_notification_info_t info[1];
			uint64_t missed = 0;
			iox_ws_wait(ws, info, 1, &missed);
		}
	}
	/* The C binding (2.0) does not expose a chunk's payload size; every
	 * chunk here has @len bytes and the caller checks its contents. */
	*n = len;
	return chunk;
}

static void ice_release(const void *p, size_t n)
{
	(void)n;
	iox_sub_release_chunk(sub, p);
}

static void ice_close(enum base_role role)
{
	(void)role;
	if (ws)
		iox_ws_deinit(ws);
	if (sub)
		iox_sub_deinit(sub);
	if (pub)
		iox_pub_deinit(pub);
	iox_runtime_shutdown();
}

static const struct base_transport iceoryx = {
	.prog = "base_iceoryx",
	.variants = variants,
	.prepare = prepare,
	.open = ice_open,
	.send = ice_send,
	.take = ice_take,
	.release = ice_release,
	.close = ice_close,
	.exit_normally = 1,
};

int main(int argc, char **argv)
{
	return base_main(&iceoryx, argc, argv);
}
