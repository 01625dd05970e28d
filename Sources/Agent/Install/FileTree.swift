#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Removing trees written from untrusted archives: never follows symbolic links, and copes with directories the
/// archive made read-only.
enum FileTree {
    /// Deletes `path` and everything under it; a missing `path` is fine. Returns the `errno` of the first failure.
    @discardableResult
    static func remove(_ path: String) -> Int32? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return errno == ENOENT ? nil : errno }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return unlink(path) == 0 ? nil : errno }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        let failure = removeContents(of: fd)
        close(fd)
        if let failure { return failure }
        return rmdir(path) == 0 ? nil : errno
    }

    /// Empties the directory open at `fd` (which stays open; the caller closes it).
    private static func removeContents(of fd: Int32) -> Int32? {
        // An archive may have made the directory read-only (0555): entries could not be unlinked.
        fchmod(fd, 0o700)
        let listing = dup(fd)
        guard listing >= 0, let directory = fdopendir(listing) else { return errno }
        defer { closedir(directory) }
        var names: [[CChar]] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                Array(raw.bindMemory(to: CChar.self).prefix { $0 != 0 }) + [0]
            }
            if name == [0x2e, 0] || name == [0x2e, 0x2e, 0] { continue }
            names.append(name)
        }
        for name in names {
            var info = stat()
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                if errno == ENOENT { continue }
                return errno
            }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else { return errno }
                let failure = removeContents(of: child)
                close(child)
                if let failure { return failure }
                guard unlinkat(fd, name, AT_REMOVEDIR) == 0 else { return errno }
            } else {
                guard unlinkat(fd, name, 0) == 0 || errno == ENOENT else { return errno }
            }
        }
        return nil
    }
}
