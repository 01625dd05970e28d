#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Crash-safe file updates: write a temporary file, fsync it, rename it over the target, fsync the directory.
///
/// After a crash at any point the target holds either the old or the new content, never a mix.
package enum AtomicFile {
    /// A file-system operation failed.
    package struct Failure: Error, CustomStringConvertible {
        package var operation: String
        package var path: String
        package var errno: Int32
        package var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
    }

    /// Replaces the file at `path` with `bytes`, atomically.
    package static func write<Bytes: Collection>(_ bytes: Bytes, to path: String, mode: mode_t = 0o644) throws(Failure)
    where Bytes.Element == UInt8 {
        let temporary = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure(operation: "create", path: temporary, errno: errno) }
        var closed = false
        defer {
            if !closed { close(fd) }
        }
        let contiguous = Array(bytes)
        var written = 0
        while written < contiguous.count {
            let n = contiguous.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, contiguous.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                unlink(temporary)
                throw Failure(operation: "write", path: temporary, errno: code)
            }
            written += n
        }
        _ = fchmod(fd, mode)
        guard fsync(fd) == 0 else {
            let code = errno
            unlink(temporary)
            throw Failure(operation: "fsync", path: temporary, errno: code)
        }
        close(fd)
        closed = true
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw Failure(operation: "rename", path: path, errno: code)
        }
        try syncDirectory(containing: path)
    }

    /// Points the symlink `link` at `target`, atomically: a new temporary symlink renamed over the old one.
    package static func replaceSymlink(_ link: String, pointingTo target: String) throws(Failure) {
        let temporary = "\(link).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard symlink(target, temporary) == 0 else { throw Failure(operation: "symlink", path: temporary, errno: errno) }
        guard rename(temporary, link) == 0 else {
            let code = errno
            unlink(temporary)
            throw Failure(operation: "rename", path: link, errno: code)
        }
        try syncDirectory(containing: link)
    }

    /// fsyncs the directory that holds `path`, so a rename in it is durable.
    package static func syncDirectory(containing path: String) throws(Failure) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) }.flatMap { $0.isEmpty ? "/" : $0 } ?? "."
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(operation: "open", path: directory, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Failure(operation: "fsync", path: directory, errno: errno) }
    }
}
