/* crc32c.h - CRC-32C (Castagnoli: polynomial 0x1EDC6F41, reflected
 * 0x82F63B78, initial value and final XOR ~0), the checksum of iSCSI, ext4
 * and Kafka, and of every frame in a segment log (see segment.h).
 *
 * bus_crc32c() uses the SSE4.2 `crc32` instruction when the CPU has it (three
 * streams at once, combined by PCLMULQDQ, when it has that too)
 * (checked once, on first use) and a slicing-by-8 table otherwise; both give
 * the same values.  Internal to libbus: nothing here is exported.
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

/* bus_crc32c_hw() - whether bus_crc32c() uses the SSE4.2 instruction. */
bool bus_crc32c_hw(void);

#endif
