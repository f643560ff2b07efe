/* tools/format.c - the consume output format (-f), as kcat's: compiled once
 * into literal runs and fields, then written per record with unlocked stdio. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getline, memmem, timegm, *_unlocked */
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char fields[] = "tpokKsSTh";

int fmt_compile(struct fmt *f, const char *s, char *err, size_t errlen)
{
	size_t len = strlen(s), nlit = 0;
	const char *p;

	memset(f, 0, sizeof f[0]);
	f->ops = calloc(len + 1, sizeof f->ops[0]);
	f->lit = malloc(len + 1);
	if (!f->ops || !f->lit) {
		fmt_free(f);
		return -ENOMEM;
	}
	for (p = s; *p; p++) {
		char c = *p;

		if (c == '%') {
			p++;
			if (*p == '%') {
				c = '%';
			} else if (*p && strchr(fields, *p)) {
				f->ops[f->n].field = *p;
				f->n++;
				continue;
			} else {
				if (*p)
					snprintf(err, errlen, "unknown field '%%%c' in the format (fields: %%t %%p %%o %%k %%K %%s %%S %%T %%h %%%%)", *p);
				else
					snprintf(err, errlen, "the format ends with a lone '%%'");
				fmt_free(f);
				return -EINVAL;
			}
		} else if (c == '\\') {
			p++;
			switch (*p) {
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case 'r':
				c = '\r';
				break;
			case '0':
				c = '\0';
				break;
			case '\\':
				c = '\\';
				break;
			default:
				if (*p)
					snprintf(err, errlen, "unknown escape '\\%c' in the format (escapes: \\n \\t \\r \\0 \\\\)", *p);
				else
					snprintf(err, errlen, "the format ends with a lone '\\'");
				fmt_free(f);
				return -EINVAL;
			}
		}
		/* A literal byte: extend the previous literal run or start one. */
		if (f->n == 0 || f->ops[f->n - 1].field) {
			f->ops[f->n].field = 0;
			f->ops[f->n].lit_off = (uint32_t)nlit;
			f->ops[f->n].lit_len = 0;
			f->n++;
		}
		f->lit[nlit++] = c;
		f->ops[f->n - 1].lit_len++;
	}
	return 0;
}

void fmt_free(struct fmt *f)
{
	free(f->ops);
	free(f->lit);
	memset(f, 0, sizeof f[0]);
}

static void put_u64(FILE *out, uint64_t v)
{
	char b[24];
	size_t i = sizeof b;

	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	fwrite_unlocked(b + i, 1, sizeof b - i, out);
}

static void put_i64(FILE *out, int64_t v)
{
	if (v < 0) {
		fputc_unlocked('-', out);
		put_u64(out, (uint64_t)0 - (uint64_t)v);
	} else {
		put_u64(out, (uint64_t)v);
	}
}

/* Headers as name=value,name=value.  The copy API hands them over encoded;
 * bus_view_header() decodes them from a view that points at the copy. */
static void put_headers(FILE *out, const struct bus_msg *m)
{
	struct bus_view v;
	struct bus_header h;
	uint32_t i;

	memset(&v, 0, sizeof v);
	v.partition = m->partition;
	v.offset = m->offset;
	v.timestamp = m->timestamp;
	v.key = m->key;
	v.key_len = m->key_len;
	v.value = m->value;
	v.value_len = m->value_len;
	v.headers = m->headers;
	v.headers_len = m->headers_len;
	v.header_count = m->header_count;
	for (i = 0; i < m->header_count; i++) {
		if (bus_view_header(&v, i, &h) != 0)
			break;
		if (i)
			fputc_unlocked(',', out);
		if (h.name_len)
			fwrite_unlocked(h.name, 1, h.name_len, out);
		fputc_unlocked('=', out);
		if (h.value_len)
			fwrite_unlocked(h.value, 1, h.value_len, out);
	}
}

void fmt_print(const struct fmt *f, FILE *out, const char *topic, const struct bus_msg *m)
{
	size_t i;

	for (i = 0; i < f->n; i++) {
		const struct fmt_op *op = &f->ops[i];

		switch (op->field) {
		case 0:
			fwrite_unlocked(f->lit + op->lit_off, 1, op->lit_len, out);
			break;
		case 't':
			fputs_unlocked(topic, out);
			break;
		case 'p':
			put_u64(out, m->partition);
			break;
		case 'o':
			put_u64(out, m->offset);
			break;
		case 'k':
			if (m->key_len)
				fwrite_unlocked(m->key, 1, m->key_len, out);
			break;
		case 'K':
			put_u64(out, m->key_len);
			break;
		case 's':
			if (m->value_len)
				fwrite_unlocked(m->value, 1, m->value_len, out);
			break;
		case 'S':
			put_u64(out, m->value_len);
			break;
		case 'T':
			put_i64(out, m->timestamp / 1000000);
			break;
		case 'h':
			put_headers(out, m);
			break;
		default:
			break;
		}
	}
}
