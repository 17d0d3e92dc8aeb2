/* fileio: file I/O on tmpfs (/tmp): create, write, fsync, read back, pread/pwrite, lseek,
 * ftruncate, rename, directory listing, stat, unlink. */
#include "wl.h"
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#define SIZE (1 << 20)

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    wl_begin("fileio");
    static unsigned char buf[SIZE], back[SIZE];
    for (int i = 0; i < SIZE; i++)
        buf[i] = (unsigned char)(i * 7 + (i >> 9));

    struct statfs sf;
    CHECK(statfs("/tmp", &sf) == 0, "statfs /tmp");
    CHECK(sf.f_type == 0x01021994, "/tmp is tmpfs (f_type %#lx)", (unsigned long)sf.f_type);

    mkdir("/tmp/fileio", 0755);
    int fd = open("/tmp/fileio/a", O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0, "open /tmp/fileio/a");
    size_t done = 0;
    while (done < SIZE) { /* uneven chunks cross page boundaries */
        size_t n = SIZE - done < 12345 ? SIZE - done : 12345;
        ssize_t w = write(fd, buf + done, n);
        if (!CHECK(w > 0, "write at %zu", done))
            break;
        done += (size_t)w;
    }
    CHECK(done == SIZE, "wrote %zu bytes", done);
    CHECK(fsync(fd) == 0, "fsync");
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == SIZE, "fstat size %lld", (long long)st.st_size);
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek");
    ssize_t r = read(fd, back, SIZE);
    CHECK(r == SIZE, "read back %zd", r);
    CHECK(memcmp(buf, back, SIZE) == 0, "content matches");
    wl_step("wrote and read back %d bytes", SIZE);

    CHECK(pwrite(fd, "krr!", 4, 4096 - 2) == 4, "pwrite across a page boundary");
    char four[4];
    CHECK(pread(fd, four, 4, 4096 - 2) == 4 && memcmp(four, "krr!", 4) == 0, "pread");
    CHECK(lseek(fd, 0, SEEK_END) == SIZE, "SEEK_END");
    CHECK(ftruncate(fd, 5000) == 0, "ftruncate");
    CHECK(fstat(fd, &st) == 0 && st.st_size == 5000, "size after truncate %lld", (long long)st.st_size);
    CHECK(lseek(fd, 10000, SEEK_SET) == 10000 && write(fd, "x", 1) == 1, "write past EOF (hole)");
    CHECK(pread(fd, four, 4, 6000) == 4 && memcmp(four, "\0\0\0\0", 4) == 0, "hole reads zeros");
    CHECK(close(fd) == 0, "close");

    CHECK(rename("/tmp/fileio/a", "/tmp/fileio/b") == 0, "rename");
    CHECK(access("/tmp/fileio/a", F_OK) != 0 && errno == ENOENT, "old name gone");
    int fd2 = open("/tmp/fileio/c", O_CREAT | O_EXCL | O_WRONLY, 0600);
    CHECK(fd2 >= 0, "O_EXCL create");
    CHECK(open("/tmp/fileio/c", O_CREAT | O_EXCL | O_WRONLY, 0600) < 0 && errno == EEXIST, "O_EXCL again fails");
    close(fd2);
    CHECK(link("/tmp/fileio/b", "/tmp/fileio/d") == 0, "hard link");
    CHECK(symlink("b", "/tmp/fileio/e") == 0, "symlink");
    char target[16] = {0};
    CHECK(readlink("/tmp/fileio/e", target, sizeof target - 1) == 1 && target[0] == 'b', "readlink");

    DIR *d = opendir("/tmp/fileio");
    int entries = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.')
            entries++;
    if (d)
        closedir(d);
    CHECK(entries == 4, "directory has 4 entries (got %d)", entries);
    wl_step("directory operations: %d entries", entries);

    CHECK(unlink("/tmp/fileio/b") == 0 && unlink("/tmp/fileio/c") == 0 &&
          unlink("/tmp/fileio/d") == 0 && unlink("/tmp/fileio/e") == 0, "unlink");
    CHECK(rmdir("/tmp/fileio") == 0, "rmdir");
    return wl_end();
}
