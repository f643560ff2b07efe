/* tools/parse.c - the command line's value syntaxes: SIZE, DURATION, TIME,
 * and their exact printing; JSON string escaping. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getline, memmem, timegm, *_unlocked */
#endif
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int parse_digits(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	int n = 0;

	while (s[n] >= '0' && s[n] <= '9') {
		unsigned d = (unsigned)(s[n] - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
		n++;
	}
	*out = v;
	return n;
}

int parse_u64(const char *s, uint64_t *out)
{
	int n = parse_digits(s, out);

	if (n < 0)
		return n;
	return n > 0 && s[n] == '\0' ? 0 : -EINVAL;
}

int parse_size(const char *s, uint64_t *out)
{
	uint64_t v, mul = 1;
	const char *p;
	int n = parse_digits(s, &v);

	if (n < 0)
		return n;
	if (n == 0)
		return -EINVAL;
	p = s + n;
	switch (*p) {
	case 'k':
	case 'K':
		mul = 1ull << 10;
		p++;
		break;
	case 'm':
	case 'M':
		mul = 1ull << 20;
		p++;
		break;
	case 'g':
	case 'G':
		mul = 1ull << 30;
		p++;
		break;
	default:
		break;
	}
	if (mul > 1 && (strcmp(p, "B") == 0 || strcmp(p, "iB") == 0))
		p += strlen(p);
	if (*p != '\0')
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

int parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {
		/* "ms" before "m" */
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
	};
	uint64_t total = 0, v;
	const char *p = s;
	size_t i;
	int n;

	if (strcmp(s, "0") == 0) {
		*out = 0;
		return 0;
	}
	if (*p == '\0')
		return -EINVAL;
	while (*p) {
		n = parse_digits(p, &v);
		if (n < 0)
			return n;
		if (n == 0)
			return -EINVAL;
		p += n;
		for (i = 0; i < sizeof units / sizeof units[0]; i++) {
			size_t ul = strlen(units[i].unit);

			if (strncmp(p, units[i].unit, ul) == 0 && !isalpha((unsigned char)p[ul]))
				break;
		}
		if (i == sizeof units / sizeof units[0])
			return -EINVAL;
		p += strlen(units[i].unit);
		if (v > UINT64_MAX / units[i].ms || total > UINT64_MAX - v * units[i].ms)
			return -ERANGE;
		total += v * units[i].ms;
	}
	*out = total;
	return 0;
}

/* Exactly @n digits at @s into @out; 0 or -EINVAL. */
static int fixed(const char *s, int n, int *out)
{
	int i, v = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

static int days_in_month(int year, int month)
{
	static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return month == 2 && leap ? 29 : days[month - 1];
}

static int parse_iso8601(const char *s, int64_t *out)
{
	int year, mon, day, hour = 0, min = 0, sec = 0, zh = 0, zm = 0, zone = 0, zsign = 1;
	int64_t frac_ns = 0, scale = 100000000, secs;
	const char *p = s;
	struct tm tm;
	time_t t;

	if (fixed(p, 4, &year) || p[4] != '-' || fixed(p + 5, 2, &mon) || p[7] != '-' ||
	    fixed(p + 8, 2, &day))
		return -EINVAL;
	p += 10;
	if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon))
		return -EINVAL;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if (fixed(p, 2, &hour) || p[2] != ':' || fixed(p + 3, 2, &min))
			return -EINVAL;
		p += 5;
		if (*p == ':') {
			if (fixed(p + 1, 2, &sec))
				return -EINVAL;
			p += 3;
			if (*p == '.' || *p == ',') {
				p++;
				if (*p < '0' || *p > '9')
					return -EINVAL;
				for (; *p >= '0' && *p <= '9'; p++) {
					frac_ns += (*p - '0') * scale; /* digits past ns are dropped */
					scale /= 10;
				}
			}
		}
		if (hour > 23 || min > 59 || sec > 60)
			return -EINVAL;
	}
	if (*p == 'Z' || *p == 'z') {
		zone = 1;
		p++;
	} else if (*p == '+' || *p == '-') {
		zone = 1;
		zsign = *p == '-' ? -1 : 1;
		p++;
		if (fixed(p, 2, &zh))
			return -EINVAL;
		p += 2;
		if (*p) { /* hhmm or hh:mm: after a ':', the minutes */
			if (*p == ':')
				p++;
			if (fixed(p, 2, &zm))
				return -EINVAL;
			p += 2;
		}
		if (zh > 23 || zm > 59)
			return -EINVAL;
	}
	if (*p != '\0')
		return -EINVAL;
	if (year < 1970)
		return -ERANGE;

	memset(&tm, 0, sizeof tm);
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	if (zone) {
		t = timegm(&tm);
		secs = (int64_t)t - zsign * (int64_t)(zh * 3600 + zm * 60);
	} else {
		tm.tm_isdst = -1;
		t = mktime(&tm);
		if (t == (time_t)-1)
			return -EINVAL;
		secs = (int64_t)t;
	}
	if (secs < 0)
		return -ERANGE;
	if (secs > (INT64_MAX - frac_ns) / 1000000000)
		return -ERANGE;
	*out = secs * 1000000000 + frac_ns;
	return 0;
}

int parse_time_ns(const char *s, int64_t *out)
{
	uint64_t ms;
	int r;

	if (*s == '\0')
		return -EINVAL;
	if (strspn(s, "0123456789") == strlen(s)) {
		r = parse_u64(s, &ms);
		if (r < 0)
			return r;
		if (ms > (uint64_t)INT64_MAX / 1000000)
			return -ERANGE;
		*out = (int64_t)ms * 1000000;
		return 0;
	}
	return parse_iso8601(s, out);
}

const char *fmt_size(uint64_t v, char *buf, size_t len)
{
	if (v != 0 && v % (1ull << 30) == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(v >> 30));
	else if (v != 0 && v % (1ull << 20) == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(v >> 20));
	else if (v != 0 && v % (1ull << 10) == 0)
		snprintf(buf, len, "%lluK", (unsigned long long)(v >> 10));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
	return buf;
}

const char *fmt_duration(uint64_t ms, char *buf, size_t len)
{
	if (ms == 0)
		snprintf(buf, len, "0");
	else if (ms % 86400000 == 0)
		snprintf(buf, len, "%llud", (unsigned long long)(ms / 86400000));
	else if (ms % 3600000 == 0)
		snprintf(buf, len, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms % 60000 == 0)
		snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(buf, len, "%llums", (unsigned long long)ms);
	return buf;
}

/* The length of the well-formed UTF-8 sequence at @p (of @n bytes, n >= 1;
 * Unicode table 3-7: no overlong forms, no surrogates, nothing above
 * U+10FFFF), or minus the length of its maximal subpart when it is not one:
 * the longest prefix that could start a well-formed sequence, at least 1
 * byte.  Each maximal subpart becomes one U+FFFD, as in Unicode's
 * "substitution of maximal subparts" (Python's and Java's decoders, and so
 * Kafka's StringDeserializer, do the same). */
static int utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	int len, i;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return -1; /* a continuation byte, C0, C1, F5..FF */
	if (p[0] == 0xe0)
		lo = 0xa0; /* overlong */
	else if (p[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (p[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (p[0] == 0xf4)
		hi = 0x8f; /* above U+10FFFF */
	for (i = 1; i < len; i++) {
		if ((size_t)i >= n || p[i] < lo || p[i] > hi)
			return -i;
		lo = 0x80;
		hi = 0xbf;
	}
	return len;
}

void json_strn(FILE *f, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	int n;

	fputc('"', f);
	while (p < end) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\b':
			fputs("\\b", f);
			break;
		case '\f':
			fputs("\\f", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				fprintf(f, "\\u%04x", *p);
				break;
			}
			n = utf8_seq(p, (size_t)(end - p));
			if (n < 0) {
				fputs("\\ufffd", f);
				p += -n;
				continue;
			}
			/* U+2028 and U+2029 are valid JSON but end a line in
			 * JavaScript before ES2019: escaped, so that the
			 * output may be pasted into a script as it is. */
			if (n == 3 && p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) {
				fprintf(f, "\\u%04x", 0x2000 | (p[2] - 0x80));
			} else {
				fwrite(p, 1, (size_t)n, f);
			}
			p += n;
			continue;
		}
		p++;
	}
	fputc('"', f);
}

void json_str(FILE *f, const char *s)
{
	json_strn(f, s, strlen(s));
}

/* See parse.h.  Before anything else is opened: open() takes the lowest
 * free descriptor. */
int reopen_closed_std_fds(void)
{
	int fd, nfd;

	for (fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		/* The lower ones are open: open() takes the lowest free. */
		nfd = open("/dev/null", (fd == STDIN_FILENO ? O_WRONLY : O_RDONLY));
		if (nfd < 0)
			return -errno;
		if (nfd != fd) {
			close(nfd);
			return -EBADF;
		}
	}
	return 0;
}
