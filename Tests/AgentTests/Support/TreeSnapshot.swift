import Foundation
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// Every path under a directory with its type, mode, size and content digest (or link target), read with
/// lstat(2): comparing two snapshots shows whether anything at all was written, replaced or re-pointed.
enum TreeSnapshot {
    /// - Parameter inodes: include inode numbers (shows a file replaced by an identical copy); leave them out to
    ///   compare two different trees.
    static func take(_ root: String, inodes: Bool = true) throws -> [String: String] {
        var result: [String: String] = [:]
        try walk(root, relative: "", inodes: inodes, into: &result)
        return result
    }

    private static func walk(_ root: String, relative: String, inodes: Bool, into result: inout [String: String]) throws {
        let path = relative.isEmpty ? root : "\(root)/\(relative)"
        var info = stat()
        guard lstat(path, &info) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        let mode = String(info.st_mode & 0o7777, radix: 8)
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            result[relative] = "dir \(mode)"
            for name in try FileManager.default.contentsOfDirectory(atPath: path) {
                try walk(root, relative: relative.isEmpty ? name : "\(relative)/\(name)", inodes: inodes, into: &result)
            }
        case S_IFLNK:
            result[relative] = "link -> \(try FileManager.default.destinationOfSymbolicLink(atPath: path))"
        case S_IFREG:
            let digest = try SHA256.hash(fileAt: path).digest
            result[relative] = "file \(mode) \(info.st_size) \(digest.hex)" + (inodes ? " ino \(info.st_ino)" : "")
        default:
            result[relative] = "special \(String(info.st_mode, radix: 8))"
        }
    }
}

/// Polls `condition` every 10 ms until it holds, failing after `timeout` (no sleeping to hope).
func waitUntil(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw WaitTimedOut() }
        try await Task.sleep(for: .milliseconds(10))
    }
}

struct WaitTimedOut: Error {}
