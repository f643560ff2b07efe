/* crc32c.h - CRC-32C (Castagnoli: polynomial 0x1EDC6F41, reflected
 * 0x82F63B78, initial value and final XOR ~0), the checksum of iSCSI, ext4
 * and Kafka, and of every frame in a segment log (see segment.h).
 *
 * bus_crc32c() takes the fastest of these paths the CPU has (checked once,
 * on first use); all give the same values:
 *  - AVX-512 (F, VL, BW) with VPCLMULQDQ, x86_64: the message folded 256
 *    bytes at a time by 512-bit carry-less multiplies, for 193 bytes and
 *    more (shorter ones take the next path);
 *  - SSE4.2 and PCLMULQDQ, x86_64: three streams of the `crc32`
 *    instruction at once, combined by carry-less multiplies;
 *  - SSE4.2: one stream of the instruction;
 *  - otherwise a slicing-by-8 table.
 * Internal to libbus: nothing here is exported.
 */
#ifndef BUS_CRC32C_H
#define BUS_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * bus_crc32c() - extend @crc over @len bytes at @buf.
 * @crc: 0 to start; the result of a previous call to continue, so that
 *       bus_crc32c(bus_crc32c(0, a, n), b, m) is the CRC of a then b.
 *
 * Returns the CRC (bus_crc32c(0, "123456789", 9) == 0xE3069283).
 * Thread-safe; never fails.
 */
uint32_t bus_crc32c(uint32_t crc, const void *buf, size_t len);

/* bus_crc32c_sw() - the same with the table, whatever the CPU (for tests). */
uint32_t bus_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* The paths, slowest first (for tests and benchmarks). */
enum {
	BUS_CRC32C_SW,     /* slicing-by-8 table */
	BUS_CRC32C_HW1,    /* SSE4.2, one stream */
	BUS_CRC32C_HW3,    /* SSE4.2, three streams, PCLMULQDQ */
	BUS_CRC32C_AVX512, /* AVX-512 VPCLMULQDQ folding (under 193 bytes: HW3) */
	BUS_CRC32C_NIMPL
};

/*
 * bus_crc32c_with() - bus_crc32c() by path @which (BUS_CRC32C_*) into *@out.
 *
 * Returns false, leaving *@out alone, if this CPU (or build) lacks it.
 */
bool bus_crc32c_with(int which, uint32_t crc, const void *buf, size_t len, uint32_t *out);

/* bus_crc32c_name() - a path's name ("?" for none). */
const char *bus_crc32c_name(int which);

/* bus_crc32c_path() - the name of the path bus_crc32c() uses. */
const char *bus_crc32c_path(void);

#endif
