/* crc32c.c - CRC-32C, by the SSE4.2 instruction or by tables (see crc32c.h).
 *
 * The hardware path is compiled with a target attribute, so the library
 * builds without -msse4.2 and runs on CPUs without it.  The choice is made
 * once, under pthread_once, which also builds the tables. */
#include <pthread.h>
#include <string.h>

#include "crc32c.h"

#if defined(__x86_64__) || defined(__i386__)
#define BUS_CRC_X86 1
#include <nmmintrin.h>
#endif

#define POLY 0x82F63B78u /* 0x1EDC6F41 bit-reversed */

typedef uint32_t (*crc_fn)(uint32_t crc, const uint8_t *p, size_t n);

static uint32_t tab[8][256];
static crc_fn impl;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Slicing-by-8 (Intel, 2006): tab[k][b] is the CRC of byte b followed by k
 * zero bytes, so eight table loads advance the CRC by eight bytes. */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		c = tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
		n--;
	}
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		v ^= c;
		c = tab[7][v & 0xff] ^ tab[6][(v >> 8) & 0xff] ^ tab[5][(v >> 16) & 0xff] ^
		    tab[4][(v >> 24) & 0xff] ^ tab[3][(v >> 32) & 0xff] ^ tab[2][(v >> 40) & 0xff] ^
		    tab[1][(v >> 48) & 0xff] ^ tab[0][v >> 56];
		p += 8;
		n -= 8;
	}
#endif
	while (n--)
		c = tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#ifdef BUS_CRC_X86
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8(c, *p++);
		n--;
	}
#ifdef __x86_64__
	uint64_t c64 = c;
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = _mm_crc32_u64(c64, v);
		p += 8;
		n -= 8;
	}
	c = (uint32_t)c64;
#endif
	while (n--)
		c = _mm_crc32_u8(c, *p++);
	return c;
}
#endif

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
		tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			tab[t][i] = (tab[t - 1][i] >> 8) ^ tab[0][tab[t - 1][i] & 0xff];
	impl = crc_sw;
#ifdef BUS_CRC_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2"))
		impl = crc_hw;
#endif
}

uint32_t bus_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&once, crc_init);
	return ~impl(~crc, buf, len);
}

uint32_t bus_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&once, crc_init);
	return ~crc_sw(~crc, buf, len);
}

bool bus_crc32c_hw(void)
{
	pthread_once(&once, crc_init);
	return impl != crc_sw;
}
