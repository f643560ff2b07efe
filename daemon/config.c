/* config.c - busd's settings: the value syntaxes (SIZE, DURATION, the fsync
 * policy, a log level), the `key = value` config file, and the merge of
 * defaults, file and command line (the command line wins).
 *
 * File syntax: one `key = value` per line; blank lines; comments from a
 * `#` that starts the line or follows a blank to the end of the line.
 * Every key is optional and may be given once; an unknown key, a key given
 * twice or a bad value is an error naming the file and the line.  daemon/busd.conf.example documents each key.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "busd.h"
#include "../tools/parse.h"

/* A size unit at @p: K, M, G (either case), optionally followed by B or
 * iB, or a lone B.  *mul receives the factor; returns the unit's length,
 * 0 when @p is empty (bytes), -1 when it is no size unit.  With @strict,
 * only upper-case units count (so that "16m" stays a duration). */
static int size_unit(const char *p, uint64_t *mul, bool strict)
{
	int n = 0;

	*mul = 1;
	switch (strict ? *p : toupper((unsigned char)*p)) {
	case '\0':
		return 0;
	case 'K':
		*mul = 1ull << 10;
		n = 1;
		break;
	case 'M':
		*mul = 1ull << 20;
		n = 1;
		break;
	case 'G':
		*mul = 1ull << 30;
		n = 1;
		break;
	case 'B':
		return p[1] ? -1 : 1;
	default:
		return -1;
	}
	if (p[n] == '\0')
		return n;
	if (strcmp(p + n, "B") == 0 || strcmp(p + n, "iB") == 0 ||
	    (!strict && (strcmp(p + n, "b") == 0 || strcmp(p + n, "ib") == 0)))
		return (int)strlen(p);
	return -1;
}

/* SIZE: digits and an optional K, M or G (either case), B or iB after it. */
int busd_parse_size(const char *s, uint64_t *out)
{
	uint64_t v, mul;
	int n = parse_digits(s, &v);

	if (n < 0)
		return n;
	if (n == 0 || size_unit(s + n, &mul, false) < 0)
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

/* DURATION in ms: a bare number, or groups NUNIT as the command line's
 * parse_duration_ms() reads them. */
int busd_parse_ms(const char *s, uint64_t *out)
{
	uint64_t v;
	int n = parse_digits(s, &v);

	if (n < 0)
		return n;
	if (n > 0 && s[n] == '\0') {
		*out = v;
		return 0;
	}
	return parse_duration_ms(s, out);
}

/* The fsync policy: never, always, a DURATION with a unit, or a SIZE with
 * an upper-case unit. */
int busd_parse_fsync(const char *s, enum bus_seg_fsync *mode, uint64_t *arg)
{
	uint64_t v, mul;
	int n, err;

	if (strcmp(s, "never") == 0) {
		*mode = BUS_SEG_FSYNC_NEVER;
		*arg = 0;
		return 0;
	}
	if (strcmp(s, "always") == 0) {
		*mode = BUS_SEG_FSYNC_MS;
		*arg = 0;
		return 0;
	}
	/* A size carries an upper-case unit (16M, 4096B), a duration a
	 * lower-case one (100ms, 1s, 16m): a bare number would be ambiguous. */
	n = parse_digits(s, &v);
	if (n < 0)
		return n;
	if (n == 0 || s[n] == '\0')
		return -EINVAL;
	if (size_unit(s + n, &mul, true) > 0) {
		if (v > UINT64_MAX / mul)
			return -ERANGE;
		if (v == 0)
			return -EINVAL;
		*mode = BUS_SEG_FSYNC_BYTES;
		*arg = v * mul;
		return 0;
	}
	err = parse_duration_ms(s, &v); /* a bare number was refused above */
	if (err)
		return err;
	/* Counted in ns by the writer and by busd's idle sync (signed): a
	 * longer interval would wrap around to a short one. */
	if (v > BUSD_FSYNC_MS_MAX)
		return -ERANGE;
	*mode = BUS_SEG_FSYNC_MS;
	*arg = v;
	return 0;
}

static const char *const level_names[] = { "error", "warn", "info", "debug" };

/* A log level by name (also "warning"). */
int busd_parse_level(const char *s, uint64_t *out)
{
	for (uint64_t i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	if (strcmp(s, "warning") == 0) {
		*out = BUS_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

/* The name of a log level, as the config file writes it. */
const char *busd_level_name(uint64_t level)
{
	return level < 4 ? level_names[level] : "?";
}

/* The fsync policy as the config file writes it, exactly. */
const char *busd_fsync_str(enum bus_seg_fsync mode, uint64_t arg, char *buf, size_t len)
{
	if (mode == BUS_SEG_FSYNC_NEVER)
		snprintf(buf, len, "never");
	else if (mode == BUS_SEG_FSYNC_MS && arg == 0)
		snprintf(buf, len, "always");
	else if (mode == BUS_SEG_FSYNC_MS)
		snprintf(buf, len, "%llums", (unsigned long long)arg);
	else if (arg % (1ull << 30) == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(arg >> 30));
	else if (arg % (1ull << 20) == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(arg >> 20));
	else if (arg % (1ull << 10) == 0)
		snprintf(buf, len, "%lluK", (unsigned long long)(arg >> 10));
	else
		snprintf(buf, len, "%lluB", (unsigned long long)arg);
	return buf;
}

/* The built-in defaults (busd.conf.example lists them). */
void busd_config_defaults(struct busd_config *c)
{
	memset(c, 0, sizeof(*c));
	c->fsync = BUS_SEG_FSYNC_NEVER;
	c->fsync_arg = 0;
	c->segment_bytes = BUS_SEG_BYTES_DEFAULT;
	c->segment_ms = 7ull * 24 * 3600 * 1000;
	c->index_interval = BUS_SEG_INTERVAL_DEFAULT;
	c->preallocate = BUS_SEG_PREALLOC_DEFAULT;
	c->retention_check_ms = 1000;
	c->heartbeat_ms = 100;
	c->stuck_claim_ms = 1000;
	c->idle_sleep_ms = 10;
	c->log_level = BUS_LOG_INFO;
}

enum kind { K_PATH, K_FSYNC, K_SIZE, K_MS, K_LEVEL };

static const struct key {
	const char *name;
	enum kind kind;
	uint32_t bit;
	size_t off;         /* of the uint64_t field (K_SIZE, K_MS, K_LEVEL) */
	uint64_t min, max;
	const char *expect; /* for messages */
} keys[] = {
	{ "data_dir", K_PATH, CFG_DATA_DIR, 0, 0, 0, "a directory" },
	{ "fsync", K_FSYNC, CFG_FSYNC, 0, 0, 0,
	  "never, always, a duration such as 100ms or 1s (at most 11574d), or a size such "
	  "as 16M" },
	{ "segment_bytes", K_SIZE, CFG_SEGMENT_BYTES, offsetof(struct busd_config, segment_bytes),
	  BUS_SEG_BYTES_MIN, BUS_SEG_BYTES_MAX, "a size from 1K to 2G" },
	{ "segment_ms", K_MS, CFG_SEGMENT_MS, offsetof(struct busd_config, segment_ms), 0,
	  1000000000000ull, "a duration such as 7d, or 0 for never" },
	{ "index_interval", K_SIZE, CFG_INDEX_INTERVAL,
	  offsetof(struct busd_config, index_interval), 64, 1ull << 30, "a size from 64 to 1G" },
	{ "preallocate", K_SIZE, CFG_PREALLOCATE, offsetof(struct busd_config, preallocate), 0,
	  1ull << 30, "a size up to 1G, or 0 for none" },
	{ "retention_check_ms", K_MS, CFG_RETENTION_CHECK_MS,
	  offsetof(struct busd_config, retention_check_ms), 10, 86400000ull,
	  "a duration from 10ms to 1d" },
	{ "heartbeat_ms", K_MS, CFG_HEARTBEAT_MS, offsetof(struct busd_config, heartbeat_ms), 1,
	  3600000ull, "a duration from 1ms to 1h" },
	{ "stuck_claim_ms", K_MS, CFG_STUCK_CLAIM_MS,
	  offsetof(struct busd_config, stuck_claim_ms), 1, 86400000ull,
	  "a duration from 1ms to 1d" },
	{ "idle_sleep_ms", K_MS, CFG_IDLE_SLEEP_MS, offsetof(struct busd_config, idle_sleep_ms),
	  1, 1000, "a duration from 1ms to 1s" },
	{ "log_level", K_LEVEL, CFG_LOG_LEVEL, offsetof(struct busd_config, log_level), 0, 3,
	  "error, warn, info or debug" },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* The key named @key, or NULL. */
static const struct key *find_key(const char *key)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, key) == 0)
			return &keys[i];
	return NULL;
}

/* Set one key from its text, checked against the key's syntax and range. */
int busd_config_set(struct busd_config *c, const char *key, const char *val, char *err,
		    size_t errlen)
{
	const struct key *k = find_key(key);
	uint64_t v = 0;
	int rc = 0;

	if (!k) {
		snprintf(err, errlen, "unknown key '%s'", key);
		return -ENOENT;
	}
	switch (k->kind) {
	case K_PATH:
		if (!val[0] || strlen(val) >= sizeof(c->data_dir))
			rc = -EINVAL;
		else
			snprintf(c->data_dir, sizeof(c->data_dir), "%s", val);
		break;
	case K_FSYNC:
		rc = busd_parse_fsync(val, &c->fsync, &c->fsync_arg);
		break;
	case K_SIZE:
		rc = busd_parse_size(val, &v);
		break;
	case K_MS:
		rc = busd_parse_ms(val, &v);
		break;
	case K_LEVEL:
		rc = busd_parse_level(val, &v);
		break;
	}
	if (!rc && (k->kind == K_SIZE || k->kind == K_MS || k->kind == K_LEVEL)) {
		if (v < k->min || v > k->max)
			rc = -ERANGE;
		else
			*(uint64_t *)(void *)((char *)c + k->off) = v;
	}
	if (rc) {
		snprintf(err, errlen, "bad value for %s: '%s' (%s)", key, val, k->expect);
		return -EINVAL;
	}
	c->set |= k->bit;
	return 0;
}

/* Strip blanks at both ends of @s, in place. */
static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

FILE *busd_fopen_small(const char *path, bool follow)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW));
	FILE *f;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st)) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > BUSD_CONF_MAX) {
		close(fd);
		errno = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
		return NULL;
	}
	f = fdopen(fd, "r");
	if (!f) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return f;
}

const char *busd_fopen_why(int e)
{
	switch (e) {
	case EINVAL:
		return "not a regular file";
	case EFBIG:
		return "larger than 1 MiB";
	case ELOOP:
		return "a symbolic link";
	default:
		return strerror(e);
	}
}

/* Read a config file over @c; @c is left as it was on any error. */
int busd_config_load(struct busd_config *c, const char *path, char *err, size_t errlen)
{
	struct busd_config tmp = *c;
	char *line = NULL, msg[512];
	size_t cap = 0;
	ssize_t got;
	unsigned lineno = 0;
	unsigned first[NKEYS] = { 0 }; /* the line that set each key, or 0 */
	FILE *f = busd_fopen_small(path, true);

	if (!f) {
		int e = errno;
		snprintf(err, errlen, "cannot read config %s: %s", path, busd_fopen_why(e));
		return -e;
	}
	/* getline(): the file is at most BUSD_CONF_MAX bytes, and the length
	 * it returns shows NUL bytes, which would cut a line short (the text
	 * after one, garbage after a value say, was silently ignored; and in
	 * a line too long, fgets() went on with its rest as the next line). */
	while ((got = getline(&line, &cap, f)) > 0) {
		char *s, *eq, *key, *val, *hash;
		size_t n = (size_t)got;

		lineno++;
		if (n > BUSD_CONF_LINE_MAX) {
			snprintf(err, errlen, "%s:%u: line too long", path, lineno);
			goto bad;
		}
		if (memchr(line, '\0', n)) {
			snprintf(err, errlen, "%s:%u: a NUL byte in the line", path, lineno);
			goto bad;
		}
		s = trim(line);
		/* A comment starts the line or follows a blank. */
		for (hash = s; (hash = strchr(hash, '#')) != NULL; hash++) {
			if (hash == s || isspace((unsigned char)hash[-1])) {
				*hash = '\0';
				break;
			}
		}
		s = trim(s);
		if (!*s)
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, errlen, "%s:%u: expected 'key = value', got '%s'", path,
				 lineno, s);
			goto bad;
		}
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		if (!*key || !*val) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno,
				 *key ? "missing value" : "missing key");
			goto bad;
		}
		/* A key given twice is a mistake the file cannot say which way
		 * to settle (an edit that meant to replace a line, or a copy
		 * pasted below the original): refused, rather than the last
		 * one winning unseen. */
		const struct key *k = find_key(key);
		if (k && first[k - keys]) {
			snprintf(err, errlen, "%s:%u: %s is set twice (first on line %u)", path,
				 lineno, key, first[k - keys]);
			goto bad;
		}
		if (busd_config_set(&tmp, key, val, msg, sizeof(msg))) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, msg);
			goto bad;
		}
		first[k - keys] = lineno;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "cannot read config %s: %s", path, strerror(EIO));
		free(line);
		fclose(f);
		return -EIO;
	}
	free(line);
	fclose(f);
	*c = tmp;
	return 0;
bad:
	free(line);
	fclose(f);
	return -EINVAL;
}

/* Copy the keys @over sets into @dst (the command line over the file). */
void busd_config_merge(struct busd_config *dst, const struct busd_config *over)
{
	if (over->set & CFG_DATA_DIR)
		memcpy(dst->data_dir, over->data_dir, sizeof(dst->data_dir));
	if (over->set & CFG_FSYNC) {
		dst->fsync = over->fsync;
		dst->fsync_arg = over->fsync_arg;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		if (!(over->set & k->bit) ||
		    (k->kind != K_SIZE && k->kind != K_MS && k->kind != K_LEVEL))
			continue;
		memcpy((char *)dst + k->off, (const char *)over + k->off, sizeof(uint64_t));
	}
	dst->set |= over->set;
}
