#ifndef FERRY_CARCHIVE_SHIM_H
#define FERRY_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>

// The AE_IF* file type macros are casts that Swift cannot import.
static const unsigned int FERRY_AE_IFMT = AE_IFMT;
static const unsigned int FERRY_AE_IFREG = AE_IFREG;
static const unsigned int FERRY_AE_IFLNK = AE_IFLNK;
static const unsigned int FERRY_AE_IFSOCK = AE_IFSOCK;
static const unsigned int FERRY_AE_IFCHR = AE_IFCHR;
static const unsigned int FERRY_AE_IFBLK = AE_IFBLK;
static const unsigned int FERRY_AE_IFDIR = AE_IFDIR;
static const unsigned int FERRY_AE_IFIFO = AE_IFIFO;

// Linux calls the extractor needs that Glibc's Swift overlay does not declare (they need _GNU_SOURCE).
#ifdef __linux__
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
// rename(2) that fails with EEXIST instead of replacing an existing (empty) directory.
static inline int ferry_rename_noreplace(const char *from, const char *to) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */);
}
// Flushes the file system holding fd: one call instead of an fsync per extracted file.
static inline int ferry_syncfs(int fd) { return (int)syscall(SYS_syncfs, fd); }
#endif
#endif
