import Glibc
import Shared
import Supervisor
import Synchronization

/// Size-based rotation of the log files PM2 writes for Ferry's apps, as the builtin supervisor rotates its own
/// (`RotatingLogFile`: `out.log` → `out.log.1` → … → `out.log.<keptFiles>`).
///
/// Ferry owns where its apps log (`PM2App.ferryOwned`: `$PM2_HOME/logs`), and PM2 itself never rotates: without the
/// `pm2-logrotate` module an app's logs grow until the disk is full. A file past `LogRotation.maximumFileBytes` is
/// renamed to `.1` (older ones shift up, the oldest goes), and PM2 is asked to reopen its files (`pm2 reloadLogs`,
/// PM2's contract for logrotate): until it has, PM2 goes on appending to the renamed file, so no line is lost. With
/// `keptFiles` 0 the file is emptied in place instead (PM2 appends, so it writes on at the new end), and nothing needs
/// reopening.
enum PM2LogRotation {
    /// What one pass did.
    struct Outcome: Sendable, Equatable {
        /// Files renamed to `.1`: PM2 must reopen them.
        var renamed: [String] = []
        /// Files emptied in place (`keptFiles` 0).
        var emptied: [String] = []
        /// Files past the limit that could not be rotated, and why.
        var failures: [Failure] = []

        var rotatedAny: Bool { !renamed.isEmpty || !emptied.isEmpty }
    }

    struct Failure: Sendable, Equatable, CustomStringConvertible {
        var path: String
        var operation: String
        var errno: Int32

        var description: String { "\(operation) \(path): \(SystemErrorText.describe(errno))" }
    }

    /// Rotates each of `paths` that is a regular file (not a link) larger than `rotation.maximumFileBytes`.
    static func rotate(_ paths: Set<String>, rotation: LogRotation) -> Outcome {
        var outcome = Outcome()
        for path in paths.sorted() {
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, Int64(info.st_size) > rotation.maximumFileBytes else { continue }
            guard rotation.keptFiles > 0 else {
                if truncate(path, 0) == 0 {
                    outcome.emptied.append(path)
                } else {
                    outcome.failures.append(Failure(path: path, operation: "truncate", errno: errno))
                }
                continue
            }
            if let failure = shift(path, keep: rotation.keptFiles) {
                outcome.failures.append(failure)
            } else {
                outcome.renamed.append(path)
            }
        }
        return outcome
    }

    /// `path.<keep>` goes, `path.<n>` becomes `path.<n+1>`, `path` becomes `path.1`.
    private static func shift(_ path: String, keep: Int) -> Failure? {
        if unlink("\(path).\(keep)") != 0, errno != ENOENT { return Failure(path: "\(path).\(keep)", operation: "remove", errno: errno) }
        for index in stride(from: keep - 1, through: 1, by: -1) {
            if rename("\(path).\(index)", "\(path).\(index + 1)") != 0, errno != ENOENT {
                return Failure(path: "\(path).\(index)", operation: "rename", errno: errno)
            }
        }
        guard rename(path, "\(path).1") == 0 else { return Failure(path: path, operation: "rename", errno: errno) }
        return nil
    }

    /// When files were last checked, whether a check runs, and whether PM2 still has to reopen rotated files (its
    /// `reloadLogs` failed: asked again at the next check). Shared by a manager's copies.
    final class Schedule: Sendable {
        private struct State {
            var lastCheck: ContinuousClock.Instant?
            var checking = false
            var reloadPending = false
        }

        private let state = Mutex(State())

        /// Starts a check when one is due at `now` and none runs; `false` otherwise.
        func begin(now: ContinuousClock.Instant, interval: Duration) -> Bool {
            state.withLock { state in
                guard !state.checking, state.lastCheck.map({ now - $0 >= interval }) ?? true else { return false }
                state.checking = true
                state.lastCheck = now
                return true
            }
        }

        func end() { state.withLock { $0.checking = false } }

        var reloadPending: Bool {
            get { state.withLock { $0.reloadPending } }
            set { state.withLock { $0.reloadPending = newValue } }
        }
    }
}
