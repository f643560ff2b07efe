/* tools/parse.h - the value syntaxes of the command line (SIZE, DURATION,
 * TIME) and their exact printing, shared by `bus` and `busd` (which links
 * tools/parse.c too).  Pure functions: thread-safe. */
#ifndef BUS_TOOLS_PARSE_H
#define BUS_TOOLS_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>


/* Parsers return 0, or -EINVAL (malformed) or -ERANGE (well-formed, but
 * beyond what the result holds: too large, or a time before 1970). */

/** parse_digits() - the leading decimal digits of @s into *@out: how many
 *  were read (0: none), or -ERANGE on overflow. */
int parse_digits(const char *s, uint64_t *out);

/** parse_u64() - decimal digits only: no sign, no spaces. */
int parse_u64(const char *s, uint64_t *out);

/** parse_size() - a byte count: N with an optional suffix K, M or G
 *  (powers of 1024, either case, optionally followed by "B" or "iB"). */
int parse_size(const char *s, uint64_t *out);

/** parse_duration_ms() - one or more NUNIT groups, UNIT one of ms, s, m,
 *  h, d ("90s", "1h30m"); a bare "0" is zero. */
int parse_duration_ms(const char *s, uint64_t *out);

/**
 * parse_time_ns() - a point in time, as nanoseconds since the epoch:
 * milliseconds since the epoch (digits only), or ISO-8601
 * YYYY-MM-DD[(T| )hh:mm[:ss[(.|,)fraction]]][Z|(+|-)hh[[:]mm]], local time
 * when no zone is given.
 */
int parse_time_ns(const char *s, int64_t *out);

/** fmt_size() - @v as parse_size() reads it, exact: "4M", "1536K", "100". */
const char *fmt_size(uint64_t v, char *buf, size_t len);

/** fmt_duration() - @ms as parse_duration_ms() reads it, exact: "7d". */
const char *fmt_duration(uint64_t ms, char *buf, size_t len);

/**
 * json_strn() - the @len bytes at @s as a JSON string literal (RFC 8259),
 * quotes included, that a strict parser accepts whatever the bytes: '"'
 * and '\\' escaped, U+0000..U+001F and U+007F as \b \f \n \r \t or
 * \u00XX, U+2028 and U+2029 as \u2028 and \u2029, well-formed UTF-8
 * as it is, and each maximal subpart of ill-formed UTF-8 (a stray byte, a
 * cut or overlong sequence, a surrogate, a code point above U+10FFFF) as
 * one \ufffd, U+FFFD REPLACEMENT CHARACTER: what Python's, Java's (so
 * Kafka's StringDeserializer) and WHATWG decoders make of such bytes.
 * Not \u00XX per bad byte: a parser reads that as the Latin-1 character
 * U+00XX, which is another, valid, string.
 */
void json_strn(FILE *f, const char *s, size_t len);

/** json_str() - json_strn() of the NUL-terminated @s. */
void json_str(FILE *f, const char *s);

/** reopen_closed_std_fds() - open each of descriptors 0-2 that the caller
 * closed on /dev/null, the wrong way round (stdin write-only, stdout and
 * stderr read-only): using it still fails (EBADF) as a closed stream
 * would, and no file opened later (the bus's control region, a ring, a
 * log) gets one of these numbers, which stdio and the log write to.  Call
 * first thing in main().  0, or -errno. */
int reopen_closed_std_fds(void);

#endif
