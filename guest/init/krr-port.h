/* The krr exit port, shared by /init and /bin/krr-exit.
 *
 * Convention (fixed): the guest writes the workload's exit status as one byte to I/O port 0xf4.
 *  - krr's VMM treats a write to 0xf4 as "workload exited with status = value" and ends the run
 *    with that exit status;
 *  - QEMU with `-device isa-debug-exit,iobase=0xf4,iosize=0x04` exits with (value << 1) | 1,
 *    a cross-check (guest/qemu-check.sh decodes it).
 * If the write returns (no such device), the caller powers off instead.
 */
#ifndef KRR_PORT_H
#define KRR_PORT_H

#include <stdint.h>
#include <sys/io.h>
#include <sys/reboot.h>
#include <termios.h>
#include <unistd.h>

#define KRR_EXIT_PORT 0xf4
/* The command port: a 32-bit read gives the length of the command the VMM holds (its arguments,
 * each NUL-terminated), 0 if it holds none; then that many 8-bit reads give the bytes. With no
 * such device (QEMU), the 32-bit read returns all ones. The first read is also krr's snapshot
 * point: the VMM may save the machine there and later resume it with another command. */
#define KRR_CMD_PORT 0xf5

static inline uint32_t krr_inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint8_t krr_inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void krr_outb(uint8_t value, uint16_t port)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

/* Writes `status` to the exit port, then powers off. Never returns. */
__attribute__((noreturn)) static inline void krr_exit_port(int status)
{
    /* write() to the console returns once the bytes are in the tty buffer: wait until the UART
     * has sent them, or the VM stops (port write) with the last lines still unsent. */
    tcdrain(1);
    tcdrain(2);
    /* ioperm() grants just this port; iopl(3) is the fallback if the I/O bitmap is unavailable. */
    if (ioperm(KRR_EXIT_PORT, 1, 1) == 0 || iopl(3) == 0)
        krr_outb((uint8_t)status, KRR_EXIT_PORT);
    /* Still running: no exit device. Power off (PID 1 only; others get EPERM/EINVAL and exit). */
    sync();
    reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    _exit(status & 0xff);
}

#endif
