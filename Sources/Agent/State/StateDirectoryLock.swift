import Glibc
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `<state-dir>/agent.lock`, held by `ferry-agent run` and `ferry-agent once` for as long as they live: one agent
/// process per state directory. A `once` run to debug while the daemon installs would clean up the daemon's staging
/// and temporary files at its start (`prepare`), restore `current` under the daemon's health gate, and both would
/// write `state.json`, the last writer winning. The kernel drops the lock when the process ends, however it ends.
enum StateDirectoryLock {
    /// Why the lock was not taken.
    struct Held: Error, CustomStringConvertible {
        var path: String
        var holder: String?
        var description: String {
            "another ferry-agent (run or once\(holder.map { ", pid \($0)" } ?? "")) works on this state directory (\(path) is locked): "
                + "stop it first (systemctl stop ferry-agent), or wait for it to end"
        }
    }

    /// The lock file could not be opened.
    struct Unavailable: Error, CustomStringConvertible {
        var path: String
        var reason: String
        var description: String { "cannot lock the state directory (\(path)): \(reason)" }
    }

    /// The descriptor of the lock taken, kept open for the life of the process.
    nonisolated(unsafe) private static var held: Int32 = -1

    /// Takes the lock of `stateDir` (made, 0700, when missing) for the rest of the process, writing this pid into it.
    /// - Throws: `Held` when another process has it, `Unavailable` when the file cannot be opened.
    static func acquire(stateDir: String) throws {
        let path = "\(stateDir)/agent.lock"
        if !FileManager.default.fileExists(atPath: stateDir) {
            try? FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw Unavailable(path: path, reason: String(cString: strerror(errno))) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, buffer.count)
            close(fd)
            guard error == EWOULDBLOCK else { throw Unavailable(path: path, reason: "flock: \(String(cString: strerror(error)))") }
            let digits = count > 0 ? Array(buffer[0..<count].prefix { (0x30...0x39).contains($0) }) : []
            throw Held(path: path, holder: digits.isEmpty ? nil : String(decoding: digits, as: UTF8.self))
        }
        let pid = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) == 0 { _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
        held = fd
    }
}
