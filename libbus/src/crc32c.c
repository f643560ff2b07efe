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

#if defined(BUS_CRC_X86) && defined(__x86_64__)
#define BUS_CRC_3WAY 1
/* Bytes per stream in crc_hw()'s three-way loop. */
#define CRC_BLOCK 128u

/* shift[k][b]: the raw CRC state (b << 8k) advanced over CRC_BLOCK zero
 * bytes.  Advancing is linear over GF(2), so a state's four bytes advance
 * independently and the results XOR. */
static uint32_t shift[4][256];

static inline uint32_t crc_shift(uint32_t c)
{
	return shift[0][c & 0xff] ^ shift[1][(c >> 8) & 0xff] ^ shift[2][(c >> 16) & 0xff] ^
	       shift[3][c >> 24];
}

__attribute__((target("sse4.2"))) static void crc_shift_init(void)
{
	for (uint32_t k = 0; k < 4; k++)
		for (uint32_t b = 0; b < 256; b++) {
			uint64_t c = (uint64_t)b << (8 * k);
			for (uint32_t i = 0; i < CRC_BLOCK / 8; i++)
				c = _mm_crc32_u64(c, 0);
			shift[k][b] = (uint32_t)c;
		}
}
#endif

#ifdef BUS_CRC_X86
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8(c, *p++);
		n--;
	}
#ifdef __x86_64__
	uint64_t c64 = c;
	/* Three streams at once: the instruction takes 3 cycles but starts one
	 * per cycle, so three independent CRCs over adjacent blocks run at
	 * three times the speed of one; then they are combined, A's CRC
	 * advanced over B's length by the shift table and XORed with B's
	 * (CRC is linear: crc(A || B) = shift(crc(A), |B|) ^ crc0(B), where
	 * crc0 starts from 0 and neither is conditioned here). */
	while (n >= 3 * CRC_BLOCK) {
		uint64_t c1 = 0, c2 = 0;
		for (const uint8_t *e = p + CRC_BLOCK; p < e; p += 8) {
			uint64_t v0, v1, v2;
			memcpy(&v0, p, 8);
			memcpy(&v1, p + CRC_BLOCK, 8);
			memcpy(&v2, p + 2 * CRC_BLOCK, 8);
			c64 = _mm_crc32_u64(c64, v0);
			c1 = _mm_crc32_u64(c1, v1);
			c2 = _mm_crc32_u64(c2, v2);
		}
		c64 = crc_shift((uint32_t)c64) ^ c1;
		c64 = crc_shift((uint32_t)c64) ^ c2;
		p += 2 * CRC_BLOCK;
		n -= 3 * CRC_BLOCK;
	}
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
	if (__builtin_cpu_supports("sse4.2")) {
#ifdef BUS_CRC_3WAY
		crc_shift_init();
#endif
		impl = crc_hw;
	}
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
