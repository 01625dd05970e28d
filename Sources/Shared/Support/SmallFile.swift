import Glibc

/// Reads small files (`/proc` entries, pid files, the supervisor's app table, log tails) with plain system calls.
package enum SmallFile {
    /// A file could not be opened or read.
    package struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        package var operation: String
        package var path: String
        package var errno: Int32

        package var description: String { "\(operation) \(path) failed: \(SystemErrorText.describe(errno))" }

        package init(operation: String, path: String, errno: Int32) {
            self.operation = operation
            self.path = path
            self.errno = errno
        }
    }

    /// The file's bytes, or `nil` when it does not exist. Reading stops after `limit` bytes: a result of `limit + 1`
    /// bytes means the file is larger. Throws when the file cannot be opened or read.
    package static func read(_ path: String, limit: Int) throws(Failure) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw Failure(operation: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        return try read(descriptor: fd, name: path, limit: limit)
    }

    /// Reads `fd` to its end or until more than `limit` bytes came (then the result holds `limit + 1` bytes), so a
    /// file or stream larger than the limit never costs more than the limit in memory.
    package static func read(descriptor fd: Int32, name: String, limit: Int) throws(Failure) -> [UInt8] {
        var bytes: [UInt8] = []
        // No bigger than the limit allows: `/proc` entries of a few hundred bytes are read several times a second.
        var chunk = [UInt8](repeating: 0, count: limit < 64 * 1024 ? max(1, limit + 1) : 64 * 1024)
        while bytes.count <= limit {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw Failure(operation: "read", path: name, errno: errno) }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[..<min(count, limit + 1 - bytes.count)])
        }
        return bytes
    }

    /// Why `contents(of:limit:)` gave no bytes, in words for an operator's error message.
    package enum ContentsError: Error, Sendable, Equatable, CustomStringConvertible {
        case missing
        case tooLarge(limit: Int)
        case unreadable(Failure)

        package var description: String {
            switch self {
            case .missing: "no such file"
            case .tooLarge(let limit):
                limit >= 1 << 20 && limit % (1 << 20) == 0
                    ? "larger than \(limit >> 20) MiB"
                    : limit >= 1024 && limit % 1024 == 0 ? "larger than \(limit >> 10) KiB" : "larger than \(limit) bytes"
            case .unreadable(let failure): "cannot read it: \(SystemErrorText.describe(failure.errno))"
            }
        }
    }

    /// The whole file, refused without reading further once it is larger than `limit` bytes (a configuration, key or
    /// root file named by mistake for a log or a device must not be read whole into memory first).
    package static func contents(of path: String, limit: Int) throws(ContentsError) -> [UInt8] {
        let bytes: [UInt8]?
        do throws(Failure) {
            bytes = try read(path, limit: limit)
        } catch {
            throw .unreadable(error)
        }
        guard let bytes else { throw .missing }
        guard bytes.count <= limit else { throw .tooLarge(limit: limit) }
        return bytes
    }

    /// The file as text, trimmed of surrounding whitespace, or `nil` when it is missing or unreadable.
    package static func text(_ path: String, limit: Int = 4096) -> String? {
        guard let bytes = try? read(path, limit: limit) else { return nil }
        let text = String(decoding: bytes.prefix(limit), as: UTF8.self)
        return String(text.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }

    /// The last `bytes` bytes of the file as text (for error messages quoting a log), or "" when unreadable.
    package static func tail(_ path: String, bytes: Int) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0, bytes > 0 else { return "" }
        _ = lseek(fd, max(0, size - off_t(bytes)), SEEK_SET)
        var buffer = [UInt8](repeating: 0, count: bytes)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return "" }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }
}
