#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Reading and writing key files with the permissions keys deserve.
package enum KeyFile {
    /// Largest key file Ferry reads; PEM Ed25519 keys are about 120 bytes.
    static let maximumSize = 64 * 1024

    /// Reads a small text file (a PEM key, a token).
    package static func read(_ path: String) throws(KeyError) -> String {
        do throws(SmallFile.ContentsError) {
            return String(decoding: try SmallFile.contents(of: path, limit: maximumSize), as: UTF8.self)
        } catch {
            throw .io(path: path, reason: "\(error)")
        }
    }

    /// Writes `text` to `path` with `mode`, refusing to replace an existing file.
    ///
    /// The file is created with `O_EXCL` and the final mode from the start, so a private key is never readable by
    /// others, not even for an instant. It is written in full and synced under a temporary name in the same directory,
    /// then linked to `path` (which fails if `path` exists) and the directory synced: a crash mid-write leaves no
    /// truncated key under the name (which a second `keygen` then refused to replace), and a power loss right after
    /// `keygen` printed the key id does not lose the file's name.
    package static func create(_ path: String, contents text: String, mode: mode_t) throws(KeyError) {
        if access(path, F_OK) == 0 { throw .alreadyExists(path: path) }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        // A random name: one a crash left behind (a container's pid 1 comes back the same) never stops the next try.
        let temporary = "\(directory)/.\(name).\(UInt64.random(in: 0...UInt64.max)).partial"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .io(path: temporary, reason: String(cString: strerror(errno))) }
        func fail(_ reason: String) -> KeyError {
            unlink(temporary)
            return .io(path: path, reason: reason)
        }
        // The umask may have narrowed the mode further; make it exact.
        guard fchmod(fd, mode) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw fail(reason)
        }
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                close(fd)
                throw fail(reason)
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw fail(reason)
        }
        close(fd)
        if link(temporary, path) != 0 {
            let code = errno
            if code == EEXIST {
                unlink(temporary)
                throw .alreadyExists(path: path)
            }
            // A file system without hard links (a FAT USB stick for offline keys): renamed instead, once more checked
            // not to be there.
            guard code == EPERM || code == EOPNOTSUPP || code == ENOTSUP, access(path, F_OK) != 0, rename(temporary, path) == 0 else {
                throw fail(String(cString: strerror(code)))
            }
        } else {
            unlink(temporary)
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw .io(path: directory, reason: String(cString: strerror(errno))) }
        defer { close(directoryFD) }
        // EINVAL: a file system that cannot sync a directory (it syncs its names by itself, or never).
        guard fsync(directoryFD) == 0 || errno == EINVAL else {
            throw .io(path: directory, reason: "fsync of the directory: \(String(cString: strerror(errno)))")
        }
    }
}
