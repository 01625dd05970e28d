import Foundation
import Shared

/// Another process holding SQLite's write lock on a database (a slow disk, as the store sees it): the store's writers
/// wait for it meanwhile, up to their busy timeout.
struct SQLiteWriteLock {
    /// The Python process holding the lock; it ends when the lock is given back.
    let holder: Task<CommandRunner.Output, any Error>
    /// A path whose creation gives the lock back at once (before `seconds` have passed).
    let releasePath: String

    /// Takes the write lock on the SQLite database at `path` from a Python process, and returns once it is held
    /// (`marker`, a path in a directory of the test's, is created then). The lock is given back after `seconds`, or
    /// sooner, on `release()`: a test that waits for something to happen while the lock is held releases it itself,
    /// so a loaded machine cannot outlast a fixed hold.
    static func hold(_ path: String, seconds: Int, marker: String) async throws -> SQLiteWriteLock {
        let releasePath = marker + ".release"
        let holder = Task {
            try await CommandRunner.run(
                CommandRunner.Request(
                    executable: "/usr/bin/env",
                    arguments: [
                        "python3", "-c",
                        "import os,sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE'); "
                            + "open(sys.argv[2], 'w').close(); end=time.monotonic()+\(seconds)\n"
                            + "while time.monotonic()<end and not os.path.exists(sys.argv[3]): time.sleep(0.02)\n"
                            + "c.execute('COMMIT')",
                        path, marker, releasePath,
                    ],
                    environment: ProcessInfo.processInfo.environment,
                    timeout: .seconds(seconds + 30)
                )
            )
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while !FileManager.default.fileExists(atPath: marker) {
            guard ContinuousClock.now < deadline else {
                holder.cancel()
                throw FixtureError("the SQLite write lock was never taken")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return SQLiteWriteLock(holder: holder, releasePath: releasePath)
    }

    /// Gives the lock back now.
    func release() {
        FileManager.default.createFile(atPath: releasePath, contents: Data())
    }

    /// Waits until the lock has been given back (after `seconds`, or after `release()`).
    var value: CommandRunner.Output {
        get async throws { try await holder.value }
    }
}
