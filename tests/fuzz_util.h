/* fuzz_util.h - what the fuzz_*.c harnesses share: their scratch folders,
 * and the runner make test builds them with (a main() that feeds every file
 * of a corpus folder to LLVMFuzzerTestOneInput(); make fuzz links
 * libFuzzer's instead). */
#ifndef BUS_FUZZ_UTIL_H
#define BUS_FUZZ_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A failed check: print where and why, and abort (libFuzzer saves the
 * input; the replay runner dies with it). */
#define check(c, ...)                                                                    \
	do {                                                                             \
		if (!(c)) {                                                              \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #c); \
			fprintf(stderr, __VA_ARGS__);                                    \
			fputc('\n', stderr);                                             \
			abort();                                                         \
		}                                                                        \
	} while (0)

/* Remove the files in folder @d (the harnesses make no subfolders). */
static inline void fuzz_empty_dir(const char *d)
{
	DIR *dd = opendir(d);
	struct dirent *e;

	if (!dd)
		return;
	while ((e = readdir(dd)))
		if (e->d_name[0] != '.')
			unlinkat(dirfd(dd), e->d_name, 0);
	closedir(dd);
}

/* Remove folder @d and the files in it. */
static inline void fuzz_rm_dir(const char *d)
{
	fuzz_empty_dir(d);
	rmdir(d);
}

#ifndef BUS_LIBFUZZER
/* The whole of file @path into *out (malloc'd); exits 2 when it cannot. */
static inline size_t fuzz_slurp(const char *path, uint8_t **out)
{
	struct stat st;
	uint8_t *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) != 0) {
		perror(path);
		exit(2);
	}
	p = malloc((size_t)st.st_size + 1);
	if (!p || read(fd, p, (size_t)st.st_size) != st.st_size) {
		perror(path);
		exit(2);
	}
	close(fd);
	*out = p;
	return (size_t)st.st_size;
}

/* Every file of folder @d, in name order, through the harness (which
 * aborts on a failure).  Returns how many ran. */
static inline int fuzz_run_dir(const char *d)
{
	struct dirent **ents;
	int n = scandir(d, &ents, NULL, alphasort), ran = 0;

	if (n < 0) {
		perror(d);
		exit(2);
	}
	for (int i = 0; i < n; i++) {
		if (ents[i]->d_name[0] != '.') {
			char path[PATH_MAX];
			uint8_t *p;
			size_t len;

			snprintf(path, sizeof(path), "%s/%s", d, ents[i]->d_name);
			len = fuzz_slurp(path, &p);
			LLVMFuzzerTestOneInput(p, len);
			free(p);
			ran++;
		}
		free(ents[i]);
	}
	free(ents);
	return ran;
}
#endif

#endif
