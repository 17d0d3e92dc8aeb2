/* iouring: io_uring's submission and completion rings and a provided-buffer ring, which user
 * space writes while the kernel reads them (SQ tail, SQ array, SQEs, CQ head, buffer ring tail
 * and entries): NOPs, writes and reads of a tmpfs file, a read from a pipe into a buffer the
 * kernel picks from the buffer ring, and CQE consumption that moves the CQ head. */
#include "wl.h"
#include <linux/io_uring.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>

struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned pending;
};

static int ring_setup(struct ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r->fd = (int)syscall(SYS_io_uring_setup, entries, &p);
    if (!CHECK(r->fd >= 0, "io_uring_setup"))
        return -1;
    if (!CHECK(p.features & IORING_FEAT_SINGLE_MMAP, "one mmap for both rings"))
        return -1;
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t len = sq_len > cq_len ? sq_len : cq_len;
    char *rings = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (!CHECK(rings != MAP_FAILED && r->sqes != MAP_FAILED, "mmap the rings"))
        return -1;
    r->sq_tail = (unsigned *)(rings + p.sq_off.tail);
    r->sq_mask = (unsigned *)(rings + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(rings + p.sq_off.array);
    r->cq_head = (unsigned *)(rings + p.cq_off.head);
    r->cq_tail = (unsigned *)(rings + p.cq_off.tail);
    r->cq_mask = (unsigned *)(rings + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
    r->pending = 0;
    return 0;
}

/* The next SQE, zeroed; published by ring_submit. */
static struct io_uring_sqe *ring_sqe(struct ring *r)
{
    unsigned tail = *r->sq_tail + r->pending, i = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[i];
    memset(sqe, 0, sizeof *sqe);
    r->sq_array[i] = i;
    r->pending++;
    return sqe;
}

/* Publishes the pending SQEs (store-release of the tail) and waits for that many CQEs. */
static int ring_submit(struct ring *r)
{
    unsigned n = r->pending;
    __atomic_store_n(r->sq_tail, *r->sq_tail + n, __ATOMIC_RELEASE);
    r->pending = 0;
    return (int)syscall(SYS_io_uring_enter, r->fd, n, n, IORING_ENTER_GETEVENTS, NULL, 0);
}

/* Takes the next CQE (moving the CQ head, which the kernel reads); 0 when there is none. */
static int ring_reap(struct ring *r, struct io_uring_cqe *out)
{
    unsigned head = *r->cq_head;
    if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
        return 0;
    *out = r->cqes[head & *r->cq_mask];
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return 1;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("iouring");
    struct ring r;
    if (ring_setup(&r, 8))
        return 1;

    /* NOPs and writes, several rounds: the CQ head moves between them. */
    int fd = open("/tmp/iouring", O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0, "open /tmp/iouring");
    static char line[16][32];
    for (int round = 0; round < 16; round++) {
        snprintf(line[round], sizeof line[round], "round %02d of io_uring\n", round);
        struct io_uring_sqe *nop = ring_sqe(&r), *wr = ring_sqe(&r);
        nop->opcode = IORING_OP_NOP;
        nop->user_data = 1000 + round;
        wr->opcode = IORING_OP_WRITE;
        wr->fd = fd;
        wr->addr = (uintptr_t)line[round];
        wr->len = (unsigned)strlen(line[round]);
        wr->off = (uint64_t)round * 21;
        wr->user_data = 2000 + round;
        CHECK(ring_submit(&r) == 2, "round %d: two SQEs submitted", round);
        struct io_uring_cqe c;
        int got = 0;
        while (ring_reap(&r, &c)) {
            got++;
            if (c.user_data == 1000u + round)
                CHECK(c.res == 0, "round %d: NOP result %d", round, c.res);
            else
                CHECK(c.user_data == 2000u + round && c.res == 21, "round %d: write result %d", round, c.res);
        }
        CHECK(got == 2, "round %d: two CQEs (got %d)", round, got);
    }
    wl_step("16 rounds of NOP + write completed");

    /* Read the file back through the ring. */
    static char back[16 * 21 + 1];
    struct io_uring_sqe *rd = ring_sqe(&r);
    rd->opcode = IORING_OP_READ;
    rd->fd = fd;
    rd->addr = (uintptr_t)back;
    rd->len = 16 * 21;
    rd->user_data = 3000;
    CHECK(ring_submit(&r) == 1, "read submitted");
    struct io_uring_cqe c;
    CHECK(ring_reap(&r, &c) && c.user_data == 3000 && c.res == 16 * 21, "read result %d", c.res);
    CHECK(memcmp(back, line[0], 21) == 0 && memcmp(back + 15 * 21, line[15], 21) == 0, "read what was written");
    wl_step("read back %d bytes", c.res);

    /* A provided-buffer ring: the kernel picks the buffer for a pipe read from entries user
     * space published (entries and tail are user-written). */
    struct io_uring_buf_ring *br = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(br != MAP_FAILED, "buffer ring memory");
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uintptr_t)br;
    reg.ring_entries = 4;
    reg.bgid = 7;
    CHECK(syscall(SYS_io_uring_register, r.fd, IORING_REGISTER_PBUF_RING, &reg, 1) == 0, "register the buffer ring");
    static char bufs[4][64];
    for (int i = 0; i < 4; i++) {
        br->bufs[i].addr = (uintptr_t)bufs[i];
        br->bufs[i].len = sizeof bufs[i];
        br->bufs[i].bid = (unsigned short)(10 + i);
    }
    __atomic_store_n(&br->tail, 4, __ATOMIC_RELEASE);
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    for (int i = 0; i < 3; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "through buffer %d", i);
        CHECK(write(p[1], msg, n) == n, "write the pipe");
        rd = ring_sqe(&r);
        rd->opcode = IORING_OP_READ;
        rd->fd = p[0];
        rd->flags = IOSQE_BUFFER_SELECT;
        rd->buf_group = 7;
        rd->len = 64;
        rd->user_data = 4000 + i;
        CHECK(ring_submit(&r) == 1, "buffer-select read submitted");
        CHECK(ring_reap(&r, &c) && c.res == n && (c.flags & IORING_CQE_F_BUFFER), "buffer-select read result %d", c.res);
        int bid = (int)(c.flags >> IORING_CQE_BUFFER_SHIFT);
        CHECK(bid == 10 + i && memcmp(bufs[i], msg, n) == 0, "buffer %d holds the message", bid);
    }
    wl_step("3 reads into buffers the kernel picked from the buffer ring");
    close(fd);
    close(r.fd);
    return wl_end();
}
