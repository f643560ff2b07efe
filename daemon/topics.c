/* topics.c - the topics busd holds: scanning the control region's topic
 * table, taking and dropping persistent topics, their topic.conf files,
 * recovery of topics from the data dir at start, and the removal of
 * deleted topics' logs.
 *
 * topic.conf (<data_dir>/<topic>/topic.conf) holds a persistent topic's
 * config as `key = value` lines: partitions, ring_size, retention_ms,
 * retention_bytes, overflow (block | overwrite), numa_node.  busd writes it
 * when it takes a topic (temporary file, fsync, rename, fsync of the dir)
 * and reads it at start to re-create topics the table lacks (after a
 * reboot the shared memory is gone; the library continues each partition's
 * offsets from its log).
 *
 * Deleted topics: bus_topic_delete() renames a persistent topic's log dir
 * to <data_dir>/.deleted.<topic>.<gen>.<pid>; busd removes such dirs at
 * start and whenever it notices a deletion (its handle's bus_topic_check()
 * fails).  If the topic's dir is still in place and is the one busd made
 * for that generation (busd made it after the rename, or the rename
 * failed), busd moves it away itself.  busd makes a topic's dir only when
 * it takes the topic; gone after that, it is never made again
 * (conf_sync()), so no stray dir outlives the topic.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "busd.h"

#define TOPIC_CONF "topic.conf"

/* ---------------------------------------------------------- topic.conf */

static bool cfg_equal(const struct bus_topic_cfg_disk *a, const struct bus_topic_cfg_disk *b)
{
	return a->partitions == b->partitions && a->flags == b->flags &&
	       a->ring_size == b->ring_size && a->retention_ms == b->retention_ms &&
	       a->retention_bytes == b->retention_bytes && a->overflow == b->overflow &&
	       a->numa_node == b->numa_node;
}

/* @c as one line, for messages. */
static const char *cfg_str(const struct bus_topic_cfg_disk *c, char *buf, size_t len)
{
	snprintf(buf, len,
		 "partitions %u, ring_size %llu, retention_ms %llu, retention_bytes %llu, "
		 "overflow %s, numa_node %d%s%s",
		 c->partitions, (unsigned long long)c->ring_size,
		 (unsigned long long)c->retention_ms, (unsigned long long)c->retention_bytes,
		 c->overflow == BUS_OVERFLOW_OVERWRITE ? "overwrite" : "block", c->numa_node,
		 (c->flags & BUS_TOPIC_EPHEMERAL) ? ", ephemeral" : "",
		 (c->flags & BUS_TOPIC_PRIVATE) ? ", private" : "");
	return buf;
}

/* A signed decimal integer, whole string. */
static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

/* The keys of topic.conf, in the order conf_write() writes them.  Every
 * one is required: busd writes them all, so a file that lacks one was cut
 * short (a power loss, a full disk, an edit) and would re-create another
 * topic than the one whose logs lie there (a retention, a size, a
 * `private = true` lost). */
static const char *const conf_keys[] = {
	"partitions", "ring_size", "retention_ms", "retention_bytes",
	"overflow",   "numa_node", "private",
};
#define CONF_NKEYS (sizeof(conf_keys) / sizeof(conf_keys[0]))
/* The longest line of a topic.conf (its newline included): busd's are
 * under 100 bytes. */
#define CONF_LINE_MAX 1024

/* Parse value @val of key number @k into @c.  Returns 0 or -EINVAL. */
static int conf_value(size_t k, const char *val, struct bus_topic_cfg_disk *c)
{
	long long v = 0;
	uint64_t u = 0;
	int rc = 0;

	switch (k) {
	case 0: /* partitions */
		rc = parse_int(val, 1, BUS_PARTITIONS_MAX, &v);
		c->partitions = (uint32_t)v;
		break;
	case 1: /* ring_size */
		rc = busd_parse_size(val, &u);
		if (!rc && (u < BUS_RING_MIN || u > BUS_RING_MAX || (u & (u - 1))))
			rc = -EINVAL;
		c->ring_size = u;
		break;
	case 2: /* retention_ms */
		rc = busd_parse_ms(val, &u);
		c->retention_ms = u;
		break;
	case 3: /* retention_bytes */
		rc = busd_parse_size(val, &u);
		c->retention_bytes = u;
		break;
	case 4: /* overflow */
		if (strcmp(val, "block") == 0)
			c->overflow = BUS_OVERFLOW_BLOCK;
		else if (strcmp(val, "overwrite") == 0)
			c->overflow = BUS_OVERFLOW_OVERWRITE;
		else
			rc = -EINVAL;
		break;
	case 5: /* numa_node */
		rc = parse_int(val, -1, 1023, &v);
		c->numa_node = (int32_t)v;
		break;
	default: /* private */
		if (strcmp(val, "true") == 0)
			c->flags |= BUS_TOPIC_PRIVATE;
		else if (strcmp(val, "false") != 0)
			rc = -EINVAL;
		break;
	}
	return rc ? -EINVAL : 0;
}

/*
 * conf_read() - parse topic.conf at @path into @c (a persistent topic).
 * All or nothing: a line that is not `key = value`, an unknown key, a key
 * given twice, a bad value, a NUL byte, a line longer than CONF_LINE_MAX,
 * a last line without its newline or a key missing (the file cut short)
 * refuses the whole file, rather than a topic half parsed from it.
 * Returns 0, -ENOENT (no file), or -EINVAL / -errno with a message
 * `FILE:LINE: what` (or `FILE: what`) in @err.
 */
static int conf_read(const char *path, struct bus_topic_cfg_disk *c, char *err, size_t errlen)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	unsigned lineno = 0, first[CONF_NKEYS] = { 0 };
	bool cut = false;
	FILE *f = busd_fopen_small(path, false);

	memset(c, 0, sizeof(*c));
	c->numa_node = -1;
	c->overflow = BUS_OVERFLOW_BLOCK;
	if (!f) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, busd_fopen_why(e));
		return -e;
	}
	/* getline(): its length shows NUL bytes, and a long line stays one
	 * line (fgets() cut it, and parsed its rest as the next line).  The
	 * file is at most BUSD_CONF_MAX bytes. */
	while ((got = getline(&line, &cap, f)) > 0) {
		char *s = line, *eq, *key, *val, *e;
		size_t n = (size_t)got, k;

		lineno++;
		if (n > CONF_LINE_MAX) {
			snprintf(err, errlen, "%s:%u: line too long (over %d bytes)", path, lineno,
				 CONF_LINE_MAX);
			goto bad;
		}
		if (memchr(line, '\0', n)) {
			snprintf(err, errlen, "%s:%u: a NUL byte in the line", path, lineno);
			goto bad;
		}
		cut = line[n - 1] != '\n';
		while (*s == ' ' || *s == '\t')
			s++;
		e = s + strlen(s);
		while (e > s && (e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			*--e = '\0';
		if (!*s || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, errlen, "%s:%u: expected 'key = value'", path, lineno);
			goto bad;
		}
		key = s;
		val = eq + 1;
		for (e = eq; e > key && (e[-1] == ' ' || e[-1] == '\t'); e--)
			;
		*e = '\0';
		while (*val == ' ' || *val == '\t')
			val++;
		for (k = 0; k < CONF_NKEYS && strcmp(key, conf_keys[k]) != 0; k++)
			;
		if (k == CONF_NKEYS) {
			snprintf(err, errlen, "%s:%u: unknown key '%.64s'", path, lineno, key);
			goto bad;
		}
		if (first[k]) {
			snprintf(err, errlen, "%s:%u: %s is set twice (first on line %u)", path,
				 lineno, key, first[k]);
			goto bad;
		}
		first[k] = lineno;
		if (conf_value(k, val, c)) {
			snprintf(err, errlen, "%s:%u: bad value for %s: '%.64s'", path, lineno, key,
				 val);
			goto bad;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(EIO));
		free(line);
		fclose(f);
		return -EIO;
	}
	free(line);
	fclose(f);
	for (size_t k = 0; k < CONF_NKEYS; k++) {
		if (!first[k]) {
			snprintf(err, errlen, "%s: cut short: %s missing", path, conf_keys[k]);
			return -EINVAL;
		}
	}
	if (cut) {
		snprintf(err, errlen, "%s:%u: cut short: the last line has no newline", path,
			 lineno);
		return -EINVAL;
	}
	return 0;
bad:
	free(line);
	fclose(f);
	return -EINVAL;
}

/* Write @c to @dir/topic.conf atomically and durably. */
static int conf_write(const char *dir, const char *topic, const struct bus_topic_cfg_disk *c)
{
	char tmp[PATH_MAX], path[PATH_MAX], text[1024];
	int n, fd, dfd, err = 0;

	n = snprintf(text, sizeof(text),
		     "# topic.conf of topic '%s', written by busd: it re-creates the topic\n"
		     "# from this file when the shared memory is gone (after a reboot).\n"
		     "partitions = %u\n"
		     "ring_size = %llu\n"
		     "retention_ms = %llu\n"
		     "retention_bytes = %llu\n"
		     "overflow = %s\n"
		     "numa_node = %d\n"
		     "private = %s\n",
		     topic, c->partitions, (unsigned long long)c->ring_size,
		     (unsigned long long)c->retention_ms, (unsigned long long)c->retention_bytes,
		     c->overflow == BUS_OVERFLOW_OVERWRITE ? "overwrite" : "block", c->numa_node,
		     (c->flags & BUS_TOPIC_PRIVATE) ? "true" : "false");
	if (n < 0 || (size_t)n >= sizeof(text) ||
	    snprintf(tmp, sizeof(tmp), "%s/." TOPIC_CONF ".%d", dir, (int)getpid()) >=
		    (int)sizeof(tmp) ||
	    snprintf(path, sizeof(path), "%s/" TOPIC_CONF, dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		  (c->flags & BUS_TOPIC_PRIVATE) ? 0600 : 0640);
	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)n) != n)
		err = errno ? -errno : -EIO;
	else if (fsync(fd))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err) {
		unlink(tmp);
		return err;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (fsync(dfd))
		err = -errno;
	close(dfd);
	return err;
}

/*
 * conf_sync() - make sure <data_dir>/<topic>/topic.conf holds @dt's live
 * config, making the topic's dir (and its parents) the first time, and
 * noting which dir it is (retire_stray()).  Once noted, the dir is never
 * made again: gone or another one, it was renamed away by
 * bus_topic_delete() (the next scan drops the topic), or by hand.  Made
 * again by a retry (the topic.conf of a topic whose first write failed is
 * written again at every scan), it was a stray that busd did not retire
 * (not the dir it had noted) and whose topic.conf re-created the deleted
 * topic at busd's next start.  Then a WARN, once, and nothing written.
 */
static void conf_sync(struct busd *d, struct dtopic *dt)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], why[PATH_MAX + 128];
	struct bus_topic_cfg_disk have;
	struct stat st;
	int err = 0, rd;

	if (bus_topic_dir(d->b, dt->name, dir, sizeof(dir)))
		return;
	if (!dt->dir_known) {
		err = bus_seg_mkdir(dir, 0750, true);
	} else if (stat(dir, &st) || st.st_dev != dt->dir_dev || st.st_ino != dt->dir_ino) {
		/* Once per episode; not keyed on conf_err: a write that
		 * failed with -ENOENT, the folder renamed between this stat
		 * and it, must not silence this. */
		if (!dt->dir_gone)
			busd_log(BUS_LOG_WARN,
				 "topic '%s': its folder %s is gone (deleted with the topic?) or "
				 "is another one: busd does not make it again, nor writes its "
				 "topic.conf there",
				 dt->name, dir);
		dt->dir_gone = true;
		dt->conf_err = -ENOENT;
		dt->conf_ok = false;
		return;
	}
	dt->dir_gone = false;
	if (!err && (dt->cfg.flags & BUS_TOPIC_PRIVATE) && chmod(dir, 0700))
		err = -errno; /* the parents stay 0750: other topics live there */
	if (!err && !dt->dir_known && stat(dir, &st) == 0) {
		dt->dir_dev = st.st_dev;
		dt->dir_ino = st.st_ino;
		dt->dir_known = true;
	}
	snprintf(path, sizeof(path), "%s/" TOPIC_CONF, dir);
	rd = err ? err : conf_read(path, &have, why, sizeof(why));
	if (rd == 0 && cfg_equal(&have, &dt->cfg)) {
		dt->conf_ok = true;
		return;
	}
	if (!err)
		err = conf_write(dir, dt->name, &dt->cfg);
	if (err) {
		if (err != dt->conf_err) /* once per episode */
			busd_log(BUS_LOG_ERROR,
				 "topic '%s': cannot write %s: %s (after a reboot the topic "
				 "could not be re-created from it; retrying)",
				 dt->name, path, bus_strerror(err));
		dt->conf_err = err;
		dt->conf_ok = false;
		return;
	}
	dt->conf_err = 0;
	dt->conf_ok = true;
	if (rd == -ENOENT)
		busd_log(BUS_LOG_DEBUG, "topic '%s': wrote %s", dt->name, path);
	else
		busd_log(BUS_LOG_INFO, "topic '%s': rewrote %s with the live config", dt->name,
			 path);
}

/* -------------------------------------------------------- deleted logs */

static unsigned rm_count;
static int rm_err;

/* nftw() callback: remove one entry, children first (FTW_DEPTH). */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((flag == FTW_DP ? rmdir(path) : unlink(path)) && errno != ENOENT)
		rm_err = -errno;
	else if (flag != FTW_DP)
		rm_count++;
	return 0;
}

/* Split ".deleted.<topic>.<gen>.<pid>" into @topic and @gen. */
static bool deleted_name(const char *name, char *topic, size_t len, uint32_t *gen)
{
	const char *s = name + strlen(BUS_DELETED_PREFIX);
	const char *pid_dot = strrchr(s, '.'), *gen_dot;
	long long g;
	size_t n;

	if (!pid_dot || pid_dot == s)
		return false;
	for (gen_dot = pid_dot - 1; gen_dot > s && *gen_dot != '.'; gen_dot--)
		;
	if (gen_dot <= s)
		return false;
	n = (size_t)(gen_dot - s);
	if (n >= len)
		return false;
	memcpy(topic, s, n);
	topic[n] = '\0';
	{
		char gbuf[16];
		size_t gl = (size_t)(pid_dot - gen_dot - 1);
		if (gl == 0 || gl >= sizeof(gbuf))
			return false;
		memcpy(gbuf, gen_dot + 1, gl);
		gbuf[gl] = '\0';
		if (parse_int(gbuf, 0, 0xffffff, &g))
			return false;
	}
	*gen = (uint32_t)g;
	return true;
}

/* Remove the .deleted.* dirs of the data dir, but those of a generation
 * busd still holds. */
void topics_sweep_deleted(struct busd *d)
{
	const char *data = bus_data_dir(d->b);
	DIR *dir = opendir(data);
	struct dirent *de;

	if (!dir)
		return;
	while ((de = readdir(dir)) != NULL) {
		char path[PATH_MAX], topic[BUS_NAME_MAX + 1] = "";
		uint32_t gen = 0;
		bool held = false, named;

		if (strncmp(de->d_name, BUS_DELETED_PREFIX, strlen(BUS_DELETED_PREFIX)) != 0)
			continue;
		/* The logs of a generation busd still holds (it has not yet
		 * noticed the deletion) go once it has closed them.  A name
		 * that does not parse (".deleted.junk", made by hand or by
		 * another tool) names no topic: @topic is not to be used. */
		named = deleted_name(de->d_name, topic, sizeof(topic), &gen);
		if (named)
			for (uint32_t i = 0; i < d->ntopics && !held; i++)
				held = d->topics[i]->t && d->topics[i]->gen == gen &&
				       strcmp(d->topics[i]->name, topic) == 0;
		if (held)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", data, de->d_name) >= (int)sizeof(path))
			continue;
		rm_count = 0;
		rm_err = 0;
		if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) || rm_err)
			busd_log(BUS_LOG_WARN, "cannot remove %s (logs of a deleted topic): %s",
				 path, bus_strerror(rm_err ? rm_err : -errno));
		else if (named)
			busd_log(BUS_LOG_INFO,
				 "removed %s: the logs of deleted topic '%s' (%u files)", path,
				 topic, rm_count);
		else
			busd_log(BUS_LOG_INFO,
				 "removed %s (%u files): a deleted topic's logs, by the prefix "
				 "of its name (the rest is not <topic>.<generation>.<pid>)",
				 path, rm_count);
	}
	closedir(dir);
}

/* @dt was deleted: if its log dir is still in place and is the one busd
 * made for it, move it away as bus_topic_delete() would have. */
static void retire_stray(struct busd *d, struct dtopic *dt)
{
	char dir[PATH_MAX], to[PATH_MAX];
	struct stat st;

	if (!dt->dir_known || bus_topic_dir(d->b, dt->name, dir, sizeof(dir)) ||
	    stat(dir, &st) || st.st_dev != dt->dir_dev || st.st_ino != dt->dir_ino)
		return;
	if (snprintf(to, sizeof(to), "%s/" BUS_DELETED_PREFIX "%s.%u.%d", bus_data_dir(d->b),
		     dt->name, dt->gen, (int)d->pid) >= (int)sizeof(to))
		return;
	/* ENOENT: gone since the stat(), renamed away by bus_topic_delete()
	 * (or by hand): nothing stays, nothing to say. */
	if (rename(dir, to) && errno != ENOENT)
		busd_log(BUS_LOG_WARN, "topic '%s' was deleted, but its logs in %s stay: %s",
			 dt->name, dir, strerror(errno));
}

/* ------------------------------------------------------------ registry */

/* Fingerprint of every slot's state word.  Relaxed: it is a hint that
 * something changed; the scan itself reads the table with acquire. */
static uint64_t table_signature(const struct busd *d)
{
	uint64_t h = 14695981039346656037ull;

	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++) {
		h ^= ld_relaxed(&bus_slot(d->b, i)->state);
		h *= 1099511628211ull;
	}
	return h;
}

/* True when a slot state word changed since the last scan. */
bool topics_table_changed(struct busd *d)
{
	return table_signature(d) != d->table_sig;
}

/* The topic busd holds under @name, or NULL. */
static struct dtopic *find_topic(struct busd *d, const char *name)
{
	for (uint32_t i = 0; i < d->ntopics; i++)
		if (strcmp(d->topics[i]->name, name) == 0)
			return d->topics[i];
	return NULL;
}

/* Set up the partitions of @dt, whose handle was just opened, and become
 * their spiller: at once, before anything slow (topic.conf is fsync'ed),
 * since a producer of a new topic that fills its ring before busd takes
 * it gets -BUS_ENODAEMON. */
static int topic_setup(struct busd *d, struct dtopic *dt)
{
	dt->gen = dt->t->gen;
	dt->cfg = dt->t->cfg;
	dt->parts = calloc(dt->cfg.partitions, sizeof(*dt->parts));
	if (!dt->parts)
		return -ENOMEM;
	for (uint32_t p = 0; p < dt->cfg.partitions; p++) {
		struct dpart *dp = &dt->parts[p];
		char dir[PATH_MAX];
		int err = bus_part_dir(d->b, dt->name, p, dir, sizeof(dir));

		dp->dt = dt;
		dp->idx = p;
		dp->r = &dt->t->rings[p];
		dp->dir = err ? NULL : strdup(dir);
		if (!dp->dir) {
			for (uint32_t q = 0; q < p; q++)
				free(dt->parts[q].dir);
			free(dt->parts);
			dt->parts = NULL;
			return err ? err : -ENOMEM;
		}
	}
	for (uint32_t p = 0; p < dt->cfg.partitions; p++)
		/* RS0: busd is this partition's spiller from now on: a producer
		 * that must wait for the spill cursor waits for it instead of
		 * failing with -BUS_ENODAEMON.  Pairs with the acquire loads of
		 * spiller_pid in bus_ring_low_water() and wait_space(). */
		st_release(&dt->parts[p].r->hdr->spiller_pid, d->pid);
	busd_log(BUS_LOG_DEBUG, "topic '%s': taken %lld us after its creation", dt->name,
		 (long long)((bus_now_ns() - dt->t->ts->created_ns) / 1000));
	conf_sync(d, dt);
	busd_log(BUS_LOG_INFO, "topic '%s': spilling %u partition%s to %s/%s", dt->name,
		 dt->cfg.partitions, dt->cfg.partitions == 1 ? "" : "s", bus_data_dir(d->b),
		 dt->name);
	return 0;
}

/* Open the handle of @dt (listed as generation @gen).  Returns 0, or the
 * error, remembered in dt->get_err so that it is logged once. */
static int topic_open(struct busd *d, struct dtopic *dt)
{
	int err = bus_topic_get(d->b, dt->name, &dt->t);

	if (!err && (dt->t->cfg.flags & BUS_TOPIC_EPHEMERAL)) {
		/* Re-created as ephemeral meanwhile: not ours. */
		bus_topic_put(dt->t);
		dt->t = NULL;
		err = -ENOENT;
	}
	if (!err) {
		err = topic_setup(d, dt);
		if (err) {
			bus_topic_put(dt->t);
			dt->t = NULL;
		}
	}
	if (err && err != dt->get_err && err != -ENOENT)
		busd_log(BUS_LOG_ERROR, "topic '%s': cannot open it: %s (retrying)", dt->name,
			 bus_strerror(err));
	dt->get_err = err;
	return err;
}

/* Let go of @dt: close its writers, release its handle, and when it was
 * deleted, remove its logs. */
static void topic_drop(struct busd *d, uint32_t i, bool deleted)
{
	struct dtopic *dt = d->topics[i];

	if (dt->t)
		for (uint32_t p = 0; p < dt->cfg.partitions; p++)
			spill_part_close(d, &dt->parts[p]);
	if (dt->parts)
		for (uint32_t p = 0; p < dt->cfg.partitions; p++)
			free(dt->parts[p].dir);
	free(dt->parts);
	if (dt->t) {
		bus_topic_put(dt->t);
		if (deleted) {
			/* The library's cache keeps its own reference (and the
			 * rings mapped) until the name is looked up again: look
			 * it up, which evicts the stale handle. */
			struct bus_topic *fresh;
			if (bus_topic_get(d->b, dt->name, &fresh) == 0)
				bus_topic_put(fresh);
		}
		if (deleted) {
			busd_log(BUS_LOG_INFO, "topic '%s' was deleted: its logs are removed",
				 dt->name);
			retire_stray(d, dt);
		}
	}
	d->topics[i] = d->topics[--d->ntopics];
	free(dt);
}

struct scan {
	struct bus_topic_info info[BUS_TOPICS_MAX];
	uint32_t n;
};

/* The state word of each slot whose contents were found corrupt, as it was
 * then (0: none): each such slot is logged once, until it changes. */
static uint64_t slot_bad[BUS_TOPICS_MAX];

/*
 * scan_slot() - add the persistent topic of ready slot @i to @sc.  Slot by
 * slot rather than through bus_topic_list(), which stops at the first slot
 * that does not read: one corrupt or hostile slot of the shared table must
 * not hide the topics after it from busd (their producers would wait for a
 * spiller forever).  Such a slot is logged, naming it, and skipped.
 */
static void scan_slot(struct busd *d, struct scan *sc, uint32_t i)
{
	const struct bus_topic_slot *ts = bus_slot(d->b, i);
	/* Acquire: pairs with the creator's release of READY (R5), so the
	 * name and config below are the ones it published. */
	uint64_t w = ld_acquire(&ts->state);
	char name[BUS_NAME_MAX + 1];
	struct bus_topic_info ti;
	int err;

	if (BUS_SLOT_STATE(w) != BUS_SLOT_READY) {
		slot_bad[i] = 0;
		return;
	}
	for (size_t k = 0; k < sizeof(name); k += 8) {
		uint64_t v = ld_relaxed((const _Atomic uint64_t *)(const void *)(ts->name + k));
		memcpy(name + k, &v, 8);
	}
	/* The copy before the re-check of the state word (a seqlock whose
	 * version is that word, as the library's slot_read()). */
	atomic_thread_fence(memory_order_acquire);
	if (ld_relaxed(&ts->state) != w)
		return; /* changing: the next scan sees it */
	if (memchr(name, 0, sizeof(name)) == NULL || !bus_name_valid(name)) {
		err = -BUS_ECORRUPT;
		name[0] = '\0';
	} else {
		err = bus_topic_describe(d->b, name, &ti);
		if (!err && ti.generation != BUS_SLOT_GEN(w))
			return; /* the name is another slot's too: that one counts */
	}
	if (err == -ENOENT)
		return; /* deleted meanwhile */
	if (err && busd_ctl_lost(d))
		return; /* zeros: the table is gone, not this slot */
	if (err) {
		if (slot_bad[i] != w)
			busd_log(BUS_LOG_ERROR,
				 "topic slot %u of bus '%s'%s%s%s: %s: skipped (the other topics "
				 "are served)",
				 i, bus_name(d->b), name[0] ? " (topic '" : " (no valid name",
				 name[0] ? name : "", name[0] ? "')" : ")", bus_strerror(err));
		slot_bad[i] = w;
		return;
	}
	slot_bad[i] = 0;
	if (!(ti.config.flags & BUS_TOPIC_EPHEMERAL) && sc->n < BUS_TOPICS_MAX)
		sc->info[sc->n++] = ti;
}

/* Bring the registry in line with the table: take new persistent topics,
 * drop deleted ones (removing their logs). */
uint32_t topics_scan(struct busd *d)
{
	static struct scan sc; /* main thread only; too large for the stack */
	bool dropped = false;

	/* Before the listing: a change after it shows at the next check. */
	d->table_sig = table_signature(d);
	sc.n = 0;
	for (uint32_t i = 0; i < BUS_TOPICS_MAX; i++)
		scan_slot(d, &sc, i);
	/* A table truncated under busd reads as zeros: every topic would look
	 * deleted, and its logs be removed.  Asked after every read of the
	 * table that a decision follows. */
	if (busd_ctl_lost(d))
		return d->ntopics;
	for (uint32_t i = 0; i < d->ntopics; i++)
		d->topics[i]->seen = false;
	/* Deleted ones first, so that their places are free for new ones. */
	for (uint32_t i = 0; i < d->ntopics;) {
		if (d->topics[i]->t && bus_topic_check(d->topics[i]->t) != 0) {
			if (busd_ctl_lost(d))
				return d->ntopics;
			topic_drop(d, i, true);
			dropped = true;
			continue;
		}
		i++;
	}
	for (uint32_t k = 0; k < sc.n; k++) {
		const struct bus_topic_info *ti = &sc.info[k];
		struct dtopic *dt = find_topic(d, ti->name);

		if (dt && dt->t && dt->gen != ti->generation) {
			/* Deleted and re-created: the old one goes first. */
			for (uint32_t i = 0; i < d->ntopics; i++)
				if (d->topics[i] == dt)
					topic_drop(d, i, true);
			dropped = true;
			dt = NULL;
		}
		if (!dt) {
			if (d->ntopics >= BUS_TOPICS_MAX)
				continue; /* at the next scan, once a place is free */
			dt = calloc(1, sizeof(*dt));
			if (!dt)
				continue;
			snprintf(dt->name, sizeof(dt->name), "%s", ti->name);
			dt->gen = ti->generation;
			d->topics[d->ntopics++] = dt;
			(void)topic_open(d, dt);
		} else if (!dt->t) {
			(void)topic_open(d, dt);
		} else if (!dt->conf_ok) {
			conf_sync(d, dt);
		}
		dt->seen = true;
	}
	for (uint32_t i = 0; i < d->ntopics;) {
		struct dtopic *dt = d->topics[i];

		/* Deleted (a handle that no longer matches its slot), or never
		 * opened and no longer listed. */
		if (dt->t ? bus_topic_check(dt->t) != 0 : !dt->seen) {
			if (busd_ctl_lost(d))
				return d->ntopics;
			topic_drop(d, i, true);
			dropped = true;
			continue;
		}
		i++;
	}
	if (dropped)
		topics_sweep_deleted(d);
	return d->ntopics;
}

/* Let go of every topic (busd is stopping). */
void topics_release_all(struct busd *d)
{
	while (d->ntopics)
		topic_drop(d, d->ntopics - 1, false);
}

/* ------------------------------------------------------------ recovery */

/* Re-create topic @name from @c, logging the result. */
static void recover_one(struct busd *d, const char *name, const struct bus_topic_cfg_disk *c,
			const char *path)
{
	struct bus_topic_config tc;
	char offs[512], cs[256];
	size_t used = 0;
	int err;

	bus_cfg_from_disk(c, &tc);
	err = bus_topic_create(d->b, name, &tc);
	if (err) {
		busd_log(BUS_LOG_ERROR, "cannot re-create topic '%s' from %s: %s", name, path,
			 bus_strerror(err));
		return;
	}
	offs[0] = '\0';
	for (uint32_t p = 0; p < c->partitions; p++) {
		struct bus_partition_info pi;
		int n;

		if (used > sizeof(offs) - 32) {
			snprintf(offs + used, sizeof(offs) - used, ", ...");
			break;
		}
		if (bus_partition_describe(d->b, name, p, &pi))
			pi.next_offset = 0;
		n = snprintf(offs + used, sizeof(offs) - used, "%s%llu", p ? ", " : "",
			     (unsigned long long)pi.next_offset);
		if (n > 0)
			used += (size_t)n;
	}
	busd_log(BUS_LOG_INFO, "recovered topic '%s': %u partition%s, next offsets %s (%s)", name,
		 c->partitions, c->partitions == 1 ? "" : "s", offs, cfg_str(c, cs, sizeof(cs)));
}

/* Remove the temporary files (".topic.conf.<pid>") that a busd killed
 * while it wrote a topic.conf left in the folder of topic @name.  busd
 * holds the data dir's lock: no other busd is writing one now. */
static void conf_sweep_tmp(int datafd, const char *name)
{
	static const char prefix[] = "." TOPIC_CONF ".";
	int fd = openat(datafd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dir = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;

	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strncmp(de->d_name, prefix, sizeof(prefix) - 1) != 0)
			continue;
		if (unlinkat(dirfd(dir), de->d_name, 0) == 0)
			busd_log(BUS_LOG_INFO, "topic '%s': removed %s, left by a busd killed "
				 "while it wrote topic.conf", name, de->d_name);
	}
	closedir(dir);
}

/* Entries of the data dir that are no topic's and expected there: said
 * nothing about at recovery. */
static bool data_dir_own(const char *name)
{
	return strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
	       strcmp(name, ".busd.lock") == 0 || strcmp(name, "lost+found") == 0 ||
	       strncmp(name, BUS_DELETED_PREFIX, strlen(BUS_DELETED_PREFIX)) == 0;
}

/* Start-up recovery: remove deleted topics' logs, then re-create every
 * topic of a topic.conf that the table lacks (busd.h). */
int topics_recover(struct busd *d, char *why_out, size_t why_len)
{
	const char *data = bus_data_dir(d->b);
	DIR *dir;
	struct dirent *de;
	unsigned found = 0;
	int rd_err;

	/* The data dir exists (busd made it and locked it): unreadable, busd
	 * would recover nothing and remove no deleted topic's logs, and run
	 * on as if there were none. */
	dir = opendir(data);
	if (!dir) {
		int e = errno;
		snprintf(why_out, why_len, "cannot read the data dir %s: %s", data, strerror(e));
		return -e;
	}
	topics_sweep_deleted(d);
	while ((errno = 0, de = readdir(dir)) != NULL) {
		char path[PATH_MAX], why[PATH_MAX + 128], a[256], b[256];
		struct bus_topic_cfg_disk c, live;
		struct bus_topic_info ti;
		struct stat st;
		int err;

		if (data_dir_own(de->d_name))
			continue;
		/* Nothing is recovered from these, nor touched: said, so that
		 * logs put there by hand (or a topic's folder renamed) are not
		 * passed over unseen. */
		if (!bus_name_valid(de->d_name)) {
			busd_log(BUS_LOG_WARN,
				 "%s/%s: not a topic's folder (not a valid topic name): left alone",
				 data, de->d_name);
			continue;
		}
		if (fstatat(dirfd(dir), de->d_name, &st, 0) == 0 && !S_ISDIR(st.st_mode)) {
			busd_log(BUS_LOG_WARN, "%s/%s: not a folder, so no topic's: left alone",
				 data, de->d_name);
			continue;
		}
		conf_sweep_tmp(dirfd(dir), de->d_name);
		if (snprintf(path, sizeof(path), "%s/%s/" TOPIC_CONF, data, de->d_name) >=
		    (int)sizeof(path))
			continue;
		err = conf_read(path, &c, why, sizeof(why));
		if (err == -ENOTDIR)
			continue; /* not a folder after all: replaced meanwhile */
		if (err == -ENOENT) {
			/* A live topic's (busd stopped before it wrote the
			 * file): the scan writes it. */
			if (bus_topic_describe(d->b, de->d_name, &ti) == 0)
				busd_log(BUS_LOG_DEBUG, "topic '%s': no %s yet; the scan writes it",
					 de->d_name, path);
			else
				busd_log(BUS_LOG_WARN,
					 "%s/%s has no " TOPIC_CONF ": topic '%s' is not re-created "
					 "from it; its logs are left alone",
					 data, de->d_name, de->d_name);
			continue;
		}
		if (err) {
			busd_log(BUS_LOG_ERROR,
				 "topic '%s' not recovered: %s (its logs in %s/%s are left as they "
				 "are; mend or remove the file and restart busd)",
				 de->d_name, why, data, de->d_name);
			continue;
		}
		found++;
		err = bus_topic_describe(d->b, de->d_name, &ti);
		if (err == -ENOENT) {
			recover_one(d, de->d_name, &c, path);
			continue;
		}
		if (err) {
			busd_log(BUS_LOG_ERROR, "topic '%s' not recovered: %s", de->d_name,
				 bus_strerror(err));
			continue;
		}
		bus_cfg_to_disk(&ti.config, &live);
		if (cfg_equal(&live, &c))
			busd_log(BUS_LOG_DEBUG, "topic '%s': in the table already", de->d_name);
		else
			busd_log(BUS_LOG_WARN,
				 "topic '%s': the live topic (%s) differs from %s (%s): keeping "
				 "the live one",
				 de->d_name, cfg_str(&live, a, sizeof(a)), path,
				 cfg_str(&c, b, sizeof(b)));
	}
	rd_err = errno;
	closedir(dir);
	if (rd_err) {
		snprintf(why_out, why_len, "cannot read the data dir %s: %s", data,
			 strerror(rd_err));
		return -rd_err;
	}
	busd_log(BUS_LOG_DEBUG, "recovery: %u topic.conf file%s in %s", found,
		 found == 1 ? "" : "s", data);
	return 0;
}
