/* cli_json.c - writes stdin, all of it (NUL bytes too), as one JSON string
 * with json_strn() of tools/parse.c, then a newline: test_cli.sh checks the
 * escaping the `bus` command's --json output uses on bytes that no bus or
 * topic name can hold today.  Built by that test (cc); not part of the
 * build. */
#include <stdio.h>
#include <stdlib.h>

#include "parse.h"

int main(void)
{
	size_t len = 0, cap = 1 << 16, n;
	char *buf = malloc(cap);

	while (buf && (n = fread(buf + len, 1, cap - len, stdin)) > 0) {
		len += n;
		if (len == cap)
			buf = realloc(buf, cap *= 2);
	}
	if (!buf || ferror(stdin)) {
		fputs("cli_json: reading stdin failed\n", stderr);
		return 1;
	}
	json_strn(stdout, buf, len);
	putchar('\n');
	free(buf);
	return fflush(stdout) != 0;
}
