/* crc32c.c - CRC-32C, by AVX-512 carry-less multiplies, by the SSE4.2
 * instruction or by tables (see crc32c.h).
 *
 * The hardware paths are compiled with target attributes, so the library
 * builds without -msse4.2 or -mavx512f and runs on CPUs without them.  The
 * choice is made once, under pthread_once, which also builds the tables and
 * the folding constants. */
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
static crc_fn impl, impls[BUS_CRC32C_NIMPL]; /* impl: the last non-null */
static int impl_id;
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
/* One stream, eight bytes per instruction: for CPUs with SSE4.2 but no
 * PCLMULQDQ, and for 32-bit builds. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8(c, *p++);
		n--;
	}
#ifdef __x86_64__
	uint64_t c64 = c;
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = _mm_crc32_u64(c64, v);
	}
	c = (uint32_t)c64;
#endif
	while (n--)
		c = _mm_crc32_u8(c, *p++);
	return c;
}
#endif

#if defined(BUS_CRC_X86) && defined(__x86_64__)
#define BUS_CRC_3WAY 1
#include <wmmintrin.h>

/* Bytes per stream in crc_hw3()'s main loop. */
#define CRC_BLOCK 256u

/* kpow[i] = x^(64i - 33) mod P, bit-reflected: multiplying a raw CRC state
 * by it (carry-less, then reduced by the crc32 instruction, which
 * multiplies by x^32 mod P; the reflected product is one bit short, hence
 * 33) advances the state over 8i zero bytes. */
static uint64_t kpow[CRC_BLOCK / 8 + 1];

/* xmul(s, n) = s * x^n mod P, for s reflected (bit i is the coefficient of
 * x^(31-i)): one step shifts every term up one power, and the x^32 that
 * falls out of bit 0 is replaced by P - x^32 = POLY. */
static uint32_t xmul(uint32_t s, uint64_t n)
{
	while (n--)
		s = (s >> 1) ^ ((s & 1) ? POLY : 0);
	return s;
}

static uint32_t xpow_mod(uint64_t n)
{
	return xmul(0x80000000u /* x^0, reflected */, n);
}

/* xdiv(s, n) = s * x^-n mod P: P has a constant term, so x is invertible
 * mod P and xmul()'s step can be undone.  POLY has bit 31 (x^0) set and
 * s >> 1 has it clear, so bit 31 of the result tells whether POLY was
 * added, that is, whether bit 0 fell out. */
static uint32_t xdiv(uint32_t s, uint64_t n)
{
	while (n--)
		s = (s & 0x80000000u) ? ((s ^ POLY) << 1) | 1 : s << 1;
	return s;
}

__attribute__((target("sse4.2,pclmul"))) static inline uint64_t crc_shift(uint64_t c, uint64_t k)
{
	__m128i m = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)c),
					 _mm_cvtsi64_si128((long long)k), 0);
	return _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(m));
}

/* Three streams over adjacent blocks of @blk bytes (a multiple of 8) from
 * @p, combined into *c: the instruction takes 3 cycles but starts one per
 * cycle, so three independent CRCs run at three times the speed of one.
 * CRC is linear: crc(A || B) = shift(crc(A), |B|) ^ crc0(B), where crc0
 * starts from 0 and neither is conditioned here. */
__attribute__((target("sse4.2,pclmul"))) static inline const uint8_t *
crc_3way(uint64_t *c, const uint8_t *p, size_t blk)
{
	uint64_t c0 = *c, c1 = 0, c2 = 0, k = kpow[blk / 8];

	for (const uint8_t *e = p + blk; p < e; p += 8) {
		uint64_t v0, v1, v2;
		memcpy(&v0, p, 8);
		memcpy(&v1, p + blk, 8);
		memcpy(&v2, p + 2 * blk, 8);
		c0 = _mm_crc32_u64(c0, v0);
		c1 = _mm_crc32_u64(c1, v1);
		c2 = _mm_crc32_u64(c2, v2);
	}
	c0 = crc_shift(c0, k) ^ c1;
	*c = crc_shift(c0, k) ^ c2;
	return p + 2 * blk;
}

/* Blocks of CRC_BLOCK bytes, then one more three-way pass over what is
 * left with blocks as long as it allows, so that at most 23 bytes go
 * through one stream (with fixed 128-byte blocks, the serial tail of a
 * 1 KiB frame was 40% of its time; a hot 1 KiB frame's CRC went from
 * 13.6-18.6 to 17.1-20.6 GB/s, near the instruction's 8 bytes a cycle). */
__attribute__((target("sse4.2,pclmul"))) static uint32_t crc_hw3(uint32_t c, const uint8_t *p,
								 size_t n)
{
	uint64_t c64;

	for (; n && ((uintptr_t)p & 7); n--)
		c = _mm_crc32_u8(c, *p++);
	c64 = c;
	for (; n >= 3 * CRC_BLOCK; n -= 3 * CRC_BLOCK)
		p = crc_3way(&c64, p, CRC_BLOCK);
	if (n >= 24) {
		size_t blk = n / 24 * 8;
		p = crc_3way(&c64, p, blk);
		n -= 3 * blk;
	}
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = _mm_crc32_u64(c64, v);
	}
	c = (uint32_t)c64;
	while (n--)
		c = _mm_crc32_u8(c, *p++);
	return c;
}

#define BUS_CRC_VEC 1
#include <cpuid.h>
#include <immintrin.h>

/*
 * AVX-512: fold the message with 512-bit carry-less multiplies.
 *
 * Notation.  Everything here is "reflected", as the crc32 instruction and
 * POLY are: a 32-bit value s stands for the polynomial with the coefficient
 * of x^(31-i) in bit i (bit 31 is x^0), a 64-bit word for the one with
 * x^(63-i) in bit i, and a 16-byte block of the message, loaded little
 * endian as 128 bits, for the one with x^(127-i) in bit i: the first bit of
 * the message is its highest power.  A block is X = L*x^64 + H, L its low
 * (first) eight bytes and H its high (last) eight, each read as a 64-bit
 * word.  Without the ~ of bus_crc32c(), the CRC with state s of an n-byte
 * message M is
 *
 *	crc(s, M) = s*x^(8n) + M*x^32  mod P,
 *
 * which for n >= 4 is crc(0, M') for M' = M with s XORed into its first
 * four bytes; it depends on M only through M mod P.  The instruction
 * computes _mm_crc32_u64(s, d) = s*x^64 + d*x^32 mod P.
 *
 * Products.  The carry-less product of a 64-bit word A and a 32-bit
 * constant K held in the low half of a qword has in bit i the coefficient
 * of x^(94-i) in A*K (terms x^(63-a) and x^(31-b) give bit a+b).  Read as
 * a block (x^(127-i) in bit i) that is A*K*x^33, one power more than the
 * 32 bits of K because the product of a 64-bit and a 32-bit polynomial has
 * 95 bits, not 96.  So a constant that is to multiply by x^k is stored as
 * x^(k-33) mod P, as kpow[] above is (crc_shift() reads the product as a
 * word, x^(63-i) in bit i, and the instruction adds x^32: x^33 again).
 *
 * Folding.  To move a block X forward by D bits, onto the block D bits
 * later in the message, clear it and XOR into that later block
 *
 *	clmul(L, x^(D+31)) ^ clmul(H, x^(D-33))  =  L*x^(D+64) + H*x^D
 *	                                         ==  X*x^D  (mod P),
 *
 * a value of at most 95 bits: X in its place stands for X*x^D relative to
 * the later block, so the message stays the same mod P and so does the
 * CRC.  (k = D + 64 for L, which sits 64 bits higher than H, and k = D for
 * H, hence D+31 and D-33.)  In a 128-bit lane L is the low qword and H the
 * high one, so a lane's constant is the pair (x^(D+31), x^(D-33)) and the
 * fold is VPCLMULQDQ 0x00 (low by low) XOR VPCLMULQDQ 0x11 (high by high).
 *
 * Layout.  The message is cut into 64-byte chunks counted from its END:
 * the first chunk holds the first (n mod 64, or 64) bytes right-aligned
 * after z = -n mod 64 zero bytes.  Those zeros are free if the state they
 * start from is s' = s*x^(-8z) (x is invertible mod P, as P has a constant
 * term): crc(s', 0^z || M) = s'*x^(8(z+n)) + M*x^32 = crc(s, M).  So s' =
 * crc_shift(s, kback[z]), kback[z] = x^(-8z-33), is XORed into the first
 * four bytes of the padded chunk.  (z = 0 gives x^-33, which crc_shift()
 * turns into x^0: no branch.)  The chunk is a masked load: the z bytes
 * before the message are not read, and masked bytes cannot fault.
 *
 * Main loop: four zmm accumulators hold 16 consecutive lanes (256 bytes);
 * each lane moves forward by D = 2048 bits onto the lane 256 bytes later,
 * which it is XORed with: kloop = (x^2079, x^2015) in every lane.
 *
 * End: the four accumulators and the j < 4 whole chunks left are folded in
 * one step, every lane straight onto the last 16-byte block of the message.
 * A lane with b lanes after it moves by D = 128b: the zmm e chunks before
 * the last one (e = 0 for the last) uses kfin[e], whose lane l (0 = lowest
 * address) holds (x^(D+31), x^(D-33)) for D = 128*(4e + 3 - l).  The last
 * lane of all (e = 0, l = 3, D = 0) is XORed in as it is (its constants are
 * 0).  XORing the lanes together leaves one 128-bit V == 0^z || M' mod P,
 * M' being M with s' in its first four bytes, and the CRC is V*x^32 mod P:
 * two crc32 instructions from state 0, since _mm_crc32_u64(_mm_crc32_u64(0,
 * L), H) = L*x^96 + H*x^32 = (L*x^64 + H)*x^32.  No Barrett reduction.
 */
#define VEC_TARGET "avx512f,avx512vl,avx512bw,vpclmulqdq,sse4.2,pclmul"

/* Shortest message for crc_vec(): four chunks, the last three whole.  It
 * is faster than crc_hw3() from there on (Zen 4, hot, median: 20 GB/s
 * against 16 at 200 bytes, 44 against 21 at 1 KiB, 54 against 21 at 4 KiB
 * and up, where the multiplier is the limit). */
#define VEC_MIN (3 * 64 + 1)
/* kfin[e] for e = 0..6: four accumulators and up to three chunks. */
#define VEC_FINAL 7

static uint64_t kloop[8] __attribute__((aligned(64)));
static uint64_t kfin[VEC_FINAL][8] __attribute__((aligned(64)));
static uint64_t kback[64];

static void vec_init(void)
{
	/* hi/lo: the pair for D = 128m, m = 1..27, each from the last. */
	uint32_t lo = xpow_mod(128 + 31), hi = xpow_mod(128 - 33);

	for (uint32_t m = 1; m <= 4 * VEC_FINAL - 1; m++) {
		uint32_t e = m / 4, l = 3 - m % 4; /* m = 4e + 3 - l */

		kfin[e][2 * l] = lo;
		kfin[e][2 * l + 1] = hi;
		if (m == 2048 / 128)
			for (uint32_t i = 0; i < 4; i++) {
				kloop[2 * i] = lo;
				kloop[2 * i + 1] = hi;
			}
		lo = xmul(lo, 128);
		hi = xmul(hi, 128);
	}
	kback[0] = xdiv(0x80000000u, 33);
	for (uint32_t z = 1; z < 64; z++)
		kback[z] = xdiv((uint32_t)kback[z - 1], 8);
}

/* b ^ (a folded by the lane constants k). */
__attribute__((target(VEC_TARGET))) static inline __m512i fold512(__m512i a, __m512i k, __m512i b)
{
	return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, k, 0x00),
					 _mm512_clmulepi64_epi128(a, k, 0x11), b, 0x96);
}

/* See above.  The loads are unaligned: on Zen 4 the speed did not depend
 * on the start's offset in its cache line (beyond run-to-run noise). */
__attribute__((target(VEC_TARGET))) static uint32_t crc_vec(uint32_t c, const uint8_t *p, size_t n)
{
	__m512i a0, a1, a2, a3, k, x, last;
	size_t z = -n & 63, j;
	uint64_t r;

	if (n < VEC_MIN)
		return crc_hw3(c, p, n);
	if (((uintptr_t)p & 4095) < z) {
		/* The z bytes before p lie on the page before, which may be
		 * unmapped (a mapped window starts on a page): the masked load
		 * would not fault there, but costs ~8x (179-199 against 24 ns
		 * for 1 KiB).  The head goes the other way, and the rest is
		 * whole chunks (z = 0). */
		c = crc_hw3(c, p, 64 - z);
		p += 64 - z;
		n -= 64 - z;
		if (n < VEC_MIN)
			return crc_hw3(c, p, n);
		z = 0;
	}
	/* The address before p is computed as an integer: it is not read. */
	a0 = _mm512_maskz_loadu_epi8(~0ull << z, (const void *)((uintptr_t)p - z));
	c = (uint32_t)crc_shift(c, kback[z]);
	a0 = _mm512_xor_si512(a0, _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, (long long)c));
	p += 64 - z;
	n -= 64 - z;
	a1 = _mm512_loadu_si512(p);
	a2 = _mm512_loadu_si512(p + 64);
	a3 = _mm512_loadu_si512(p + 128);
	p += 192;
	n -= 192;
	k = _mm512_load_si512(kloop);
	for (; n >= 256; p += 256, n -= 256) {
		a0 = fold512(a0, k, _mm512_loadu_si512(p));
		a1 = fold512(a1, k, _mm512_loadu_si512(p + 64));
		a2 = fold512(a2, k, _mm512_loadu_si512(p + 128));
		a3 = fold512(a3, k, _mm512_loadu_si512(p + 192));
	}
	/* j chunks left at p; the last zmm of all, e = 0, is `last`. */
	j = n / 64;
	x = _mm512_setzero_si512();
	last = a3;
	if (j) {
		for (size_t i = 0; i + 1 < j; i++)
			x = fold512(_mm512_loadu_si512(p + 64 * i),
				    _mm512_load_si512(kfin[j - 1 - i]), x);
		last = _mm512_loadu_si512(p + 64 * (j - 1));
		x = fold512(a3, _mm512_load_si512(kfin[j]), x);
	}
	x = fold512(a2, _mm512_load_si512(kfin[j + 1]), x);
	x = fold512(a1, _mm512_load_si512(kfin[j + 2]), x);
	x = fold512(a0, _mm512_load_si512(kfin[j + 3]), x);
	/* Lanes 0-2 of the last zmm move; lane 3 (constants 0) is added as is. */
	x = fold512(last, _mm512_load_si512(kfin[0]), x);
	x = _mm512_mask_xor_epi64(x, 0xC0, x, last);
	/* Four lanes, all at the last block: XOR them, then V*x^32. */
	__m256i y = _mm256_xor_si256(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1));
	__m128i v = _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
	r = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(v));
	return (uint32_t)_mm_crc32_u64(r, (uint64_t)_mm_extract_epi64(v, 1));
}

/* Whether the OS saves the opmask and zmm registers (XCR0 bits 1, 2 and
 * 5-7: SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM).  __builtin_cpu_supports()
 * should not report avx512f without them either; checked again here so
 * that the choice does not depend on the runtime (libgcc or compiler-rt)
 * that answers it. */
static bool os_saves_zmm(void)
{
	unsigned int a, b, c, d, lo, hi;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
		return false;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	(void)hi;
	return (lo & 0xE6) == 0xE6;
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
	impls[BUS_CRC32C_SW] = crc_sw;
#ifdef BUS_CRC_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2")) {
		impls[BUS_CRC32C_HW1] = crc_hw;
#ifdef BUS_CRC_3WAY
		if (__builtin_cpu_supports("pclmul")) {
			for (uint32_t i = 1; i <= CRC_BLOCK / 8; i++)
				kpow[i] = xpow_mod(64ull * i - 33);
			impls[BUS_CRC32C_HW3] = crc_hw3;
#ifdef BUS_CRC_VEC
			if (__builtin_cpu_supports("avx512f") &&
			    __builtin_cpu_supports("avx512vl") &&
			    __builtin_cpu_supports("avx512bw") &&
			    __builtin_cpu_supports("vpclmulqdq") && os_saves_zmm()) {
				vec_init();
				impls[BUS_CRC32C_AVX512] = crc_vec;
			}
#endif
		}
#endif
	}
#endif
	for (int i = 0; i < BUS_CRC32C_NIMPL; i++)
		if (impls[i]) {
			impl = impls[i];
			impl_id = i;
		}
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

bool bus_crc32c_with(int which, uint32_t crc, const void *buf, size_t len, uint32_t *out)
{
	pthread_once(&once, crc_init);
	if (which < 0 || which >= BUS_CRC32C_NIMPL || !impls[which])
		return false;
	*out = ~impls[which](~crc, buf, len);
	return true;
}

const char *bus_crc32c_name(int which)
{
	static const char *const names[BUS_CRC32C_NIMPL] = {
		[BUS_CRC32C_SW] = "table",
		[BUS_CRC32C_HW1] = "SSE4.2",
		[BUS_CRC32C_HW3] = "SSE4.2x3+PCLMULQDQ",
		[BUS_CRC32C_AVX512] = "AVX-512+VPCLMULQDQ",
	};

	return which >= 0 && which < BUS_CRC32C_NIMPL ? names[which] : "?";
}

const char *bus_crc32c_path(void)
{
	pthread_once(&once, crc_init);
	return bus_crc32c_name(impl_id);
}
