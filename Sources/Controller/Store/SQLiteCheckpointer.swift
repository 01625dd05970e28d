import Logging
import Metrics
import NIOCore
import NIOPosix
import SQLKit
import SQLiteKit

/// Copies the WAL back into the database file on a connection and a thread of its own, so no commit waits for it.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages, on the writer: with 10,000 agents
/// reporting that was a checkpoint every second or so, and its `fsync` of the database file (up to 360 ms measured on
/// this machine) held the writer, so every status report queued behind it waited too (the steady-state report p99).
/// The writer's automatic checkpoint is turned off (`wal_autocheckpoint = 0`) and this loop runs a `PASSIVE`
/// checkpoint every `interval` instead: it never blocks readers or the writer, and copies what no reader still needs.
/// Other processes opening the file (`token create`) keep SQLite's default.
///
/// A `PASSIVE` checkpoint never restarts the log: SQLite writes from the start of the WAL again only when a write
/// begins after a checkpoint has copied every frame, and with reports committing every few milliseconds a checkpoint
/// that started a second ago never has (new frames arrived meanwhile). The WAL then grew for as long as reports flowed:
/// 474 MB after 30 minutes of 10,000 agents reporting, and every read searched its index. So when a checkpoint finds
/// `restartFrames` frames or more in the log, `restart` runs a `RESTART` checkpoint on the writer, between two
/// transactions: it copies the few frames the passive ones have not and waits for the readers still in the log (reads
/// of milliseconds), so the next commit writes from the start of the file again (and cuts it back to
/// `journal_size_limit`). Commits wait for it, once per `restartFrames` frames (64 MiB by default); how long is on
/// `/metrics` as `ferry_store_wal_restart_seconds` (through the global `MetricsSystem`, which `serve` bootstraps).
final class SQLiteCheckpointer: Sendable {
    private let task: Task<Void, Never>

    private init(task: Task<Void, Never>) {
        self.task = task
    }

    /// Opens the checkpoint connection on a one-thread pool of its own and starts the loop.
    static func start(
        path: String,
        interval: Duration,
        restartFrames: Int,
        restart: @escaping @Sendable () async throws -> Void,
        logger: Logger
    ) async throws -> SQLiteCheckpointer {
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(
                storage: .file(path: path),
                threadPool: threadPool,
                logger: logger,
                on: MultiThreadedEventLoopGroup.singleton.any()
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
        let restarts = Metrics.Timer(label: "ferry_store_wal_restart_seconds")
        let task = Task {
            let db = connection.sql(queryLogLevel: nil)
            while !Task.isCancelled {
                guard (try? await Task.sleep(for: interval)) != nil else { break }
                do {
                    // One row: busy, log (frames in the WAL), checkpointed (frames copied).
                    let row = try await db.raw("PRAGMA wal_checkpoint(PASSIVE)").first()
                    if let frames = try row?.decode(column: "log", as: Int.self), frames >= restartFrames {
                        let started = ContinuousClock.now
                        try await restart()
                        let duration = ContinuousClock.now - started
                        restarts.record(duration: duration)
                        logger.debug("store.wal_restarted", metadata: ["ferry.wal.frames": "\(frames)", "ferry.duration": "\(duration)"])
                    }
                } catch {
                    // Busy or failing: the WAL grows until the next attempt; nothing is lost.
                    logger.debug("store.checkpoint_failed", metadata: ["ferry.reason": "\(error)"])
                }
            }
            // The loop owns its connection and thread: whoever stops it (`stop`, or `cancel` from a deinit) frees them.
            // Outside this (cancelled) task: the thread pool's async calls throw `CancellationError` in a cancelled one.
            await Task.detached {
                try? await connection.closeEvenWhenCancelled()
                try? await threadPool.shutdownGracefully()
            }.value
        }
        return SQLiteCheckpointer(task: task)
    }

    /// Ends the loop without waiting (a checkpoint in progress finishes first); its connection and thread close after.
    func cancel() {
        task.cancel()
    }

    /// Ends the loop and waits until its connection and thread are closed.
    func stop() async {
        task.cancel()
        await task.value
    }
}
