import Glibc
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `<state-dir>/agent.lock`, held by `ferry-agent run`, `once` and `enroll` for as long as they live: one agent
/// process per state directory. A `once` run to debug while the daemon installs would clean up the daemon's staging
/// and temporary files at its start (`prepare`), restore `current` under the daemon's health gate, and both would
/// write `state.json`, the last writer winning. The kernel drops the lock when the process ends, however it ends.
enum StateDirectoryLock {
    /// Why the lock was not taken.
    struct Held: Error, CustomStringConvertible {
        var path: String
        var holder: String?
        var description: String {
            "another ferry-agent (run, once or enroll\(holder.map { ", pid \($0)" } ?? "")) works on this state directory (\(path) is locked): "
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
        let path = AgentLayout(stateDir: stateDir).lockFile
        if !FileManager.default.fileExists(atPath: stateDir) {
            try? FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        do throws(ProcessLock.Failure) {
            held = try ProcessLock.acquire(path)
        } catch {
            switch error {
            case .held(let holder): throw Held(path: path, holder: holder)
            case .unavailable: throw Unavailable(path: path, reason: error.reason)
            }
        }
    }
}
