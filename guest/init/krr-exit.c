/* /bin/krr-exit STATUS: write STATUS (0-255) to krr's exit port 0xf4 and power off.
 * For shell scripts in the guest; /init does the same itself (krr-port.h). Needs root
 * (ioperm/iopl, CONFIG_X86_IOPL_IOPERM). */
#include <stdio.h>
#include <stdlib.h>

#include "krr-port.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: krr-exit STATUS   (writes STATUS to I/O port 0xf4, then powers off)\n");
        return 2;
    }
    char *end;
    long status = strtol(argv[1], &end, 0);
    if (*end || status < 0 || status > 255) {
        fprintf(stderr, "krr-exit: STATUS must be 0..255, got '%s'\n", argv[1]);
        return 2;
    }
    fflush(NULL);
    krr_exit_port((int)status);
}
