import Foundation
import Shared

/// Another process holding SQLite's write lock on a database (a slow disk, as the store sees it): the store's writers
/// wait for it meanwhile, up to their busy timeout.
enum SQLiteWriteLock {
    /// Takes the write lock on the SQLite database at `path` from a Python process for `seconds`, and returns once it
    /// is held (`marker`, a path in a directory of the test's, is created then). The task ends when the lock is given
    /// back.
    static func hold(_ path: String, seconds: Int, marker: String) async throws -> Task<CommandRunner.Output, any Error> {
        let lock = Task {
            try await CommandRunner.run(
                CommandRunner.Request(
                    executable: "/usr/bin/env",
                    arguments: [
                        "python3", "-c",
                        "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE'); "
                            + "open(sys.argv[2], 'w').close(); time.sleep(\(seconds)); c.execute('COMMIT')",
                        path, marker,
                    ],
                    environment: ProcessInfo.processInfo.environment,
                    timeout: .seconds(seconds + 30)
                )
            )
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while !FileManager.default.fileExists(atPath: marker) {
            guard ContinuousClock.now < deadline else {
                lock.cancel()
                throw FixtureError("the SQLite write lock was never taken")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return lock
    }
}
