import Foundation
import Logging
import Shared
import Synchronization

/// The write-behind queue of status reports: reports wait here and are committed in batches, one transaction (one
/// fsync) for up to `maximumBatch` of them, instead of one each.
///
/// `record` returns only once the report's batch is committed, so an acknowledged report (`204`) is never lost; a
/// batch that fails fails every report in it, and their agents send them again. The queue is bounded: past
/// `maximumPending` waiting reports, `record` refuses at once (`Full`, answered `503` with `Retry-After`) rather than
/// let memory grow while the disk is slow. The first report to arrive while nothing is being written starts one writer
/// task, which commits batches until the queue is empty, then ends: while a batch commits, the next one gathers, so the
/// longer a commit takes the more reports the next one carries (group commit). Nothing runs while no report waits, and
/// the queue needs no service of its own: at shutdown the HTTP server waits for its in-flight reports, whose writer
/// commits them before the store is closed (the store's service stops after the server's).
///
/// The history keeps news, not every report: a report whose fingerprint (`StatusWrite.fingerprint`: everything but the
/// processes' uptime, memory and CPU) equals the agent's last one committed by this controller updates the agent's
/// status and `last_seen` but adds no `status_history` row. A fleet at rest then writes one row per agent per report
/// instead of three, and the history an operator reads holds the last `historyLimit` changes, not the last minutes of
/// identical reports. The fingerprints live in memory: after a restart, or on another controller, an agent's first
/// report is kept again.
final class StatusReportQueue: Sendable {
    /// How reports are batched.
    struct Configuration: Sendable {
        /// Reports waiting at most; beyond it new reports are refused with `503`. Default 16,384: every agent of a
        /// 10,000-agent fleet reporting at once after a publish, with room to spare.
        var maximumPending = 16_384
        /// Reports per transaction at most. Default 1,000.
        var maximumBatch = 1_000
        /// Reports kept per agent in the history. Default 50.
        var historyLimit = 50
        /// Agents whose last fingerprint is remembered at most; past it, all are forgotten (each agent's next report
        /// is then kept in the history, as after a restart). A removed agent's is forgotten at once (`forget`), but an
        /// instance that vanishes without being removed leaves its entry behind. Default 262,144: far above a fleet,
        /// well below what months of an autoscaling fleet's churn would leave.
        var maximumFingerprints = 262_144
    }

    /// The queue is full: the report is not stored.
    struct Full: Error, Sendable {
        let pending: Int
    }

    private struct Entry {
        let write: StatusWrite
        let continuation: CheckedContinuation<StatusWriteResult, any Error>
    }

    private struct State {
        var pending: [Entry] = []
        /// Whether a writer task is committing (it ends once the queue is empty).
        var writing = false
    }

    let configuration: Configuration
    private let store: any ControllerStore
    private let logger: Logger
    private let state = Mutex(State())
    /// When a batch last failed to commit (the database unreachable, say).
    private let failedAt = Mutex<ContinuousClock.Instant?>(nil)
    /// Each agent's last fingerprint committed to the history by this queue.
    private let fingerprints = Mutex<[String: SHA256Digest]>([:])
    private let onBatch: @Sendable (Int, Duration) -> Void
    private let onDrained: @Sendable (StatusReportQueue, Int) -> Void

    /// - Parameters:
    ///   - onBatch: told the size and commit time of every batch (metrics).
    ///   - onDrained: told, when the queue is empty again, how many reports the writer committed since it started (a
    ///     burst's end: `HeapTrim`), with the queue.
    init(
        configuration: Configuration = .init(),
        store: any ControllerStore,
        logger: Logger,
        onBatch: @escaping @Sendable (Int, Duration) -> Void = { _, _ in },
        onDrained: @escaping @Sendable (StatusReportQueue, Int) -> Void = { _, _ in }
    ) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        self.onBatch = onBatch
        self.onDrained = onDrained
    }

    /// Forgets the last fingerprint of `agentID` (removed, or enrolled afresh: its next report is news).
    func forget(agentID: String) {
        _ = fingerprints.withLock { $0.removeValue(forKey: agentID) }
    }

    /// When a batch last failed to commit, `nil` when none did: reports were lost then, so agents' last-seen times say
    /// nothing of their silence (`SilentAgentRemoval`).
    var lastFailure: ContinuousClock.Instant? { failedAt.withLock { $0 } }

    /// How many agents' last fingerprints are remembered.
    var rememberedFingerprints: Int { fingerprints.withLock { $0.count } }

    /// The agents whose last fingerprint is remembered.
    var fingerprintedAgentIDs: Set<String> { fingerprints.withLock { Set($0.keys) } }

    /// Reports waiting now.
    var pendingCount: Int { state.withLock { $0.pending.count } }

    /// Whether nothing waits and no batch commits now.
    var isIdle: Bool { state.withLock { $0.pending.isEmpty && !$0.writing } }

    /// Stores `report` with the next batch and returns once it is committed. Not cancellable: a report that entered
    /// the queue is committed (or fails with its batch) whatever happens to the request that brought it.
    /// - Returns: whether the agent existed (`stored` false: nothing was stored), and the hostname it was known by just
    ///   before the report.
    /// - Throws: `Full` when too many reports wait, or the store's error.
    /// - Parameter events: what the report brings to the event log (`RolloutEventDraft.newFailures`), stored with it.
    func record(_ report: StatusReport, agentID: String, receivedAt: Date, events: [RolloutEventDraft] = []) async throws -> StatusWriteResult {
        // Encoded here, outside the lock and off the writer.
        var write = StatusWrite(report: report, agentID: agentID, receivedAt: receivedAt)
        write.events = events
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<StatusWriteResult, any Error>) in
            let outcome = state.withLock { state -> (refusal: Full?, startWriter: Bool) in
                guard state.pending.count < configuration.maximumPending else { return (Full(pending: state.pending.count), false) }
                state.pending.append(Entry(write: write, continuation: continuation))
                defer { state.writing = true }
                return (nil, !state.writing)
            }
            if let refusal = outcome.refusal {
                continuation.resume(throwing: refusal)
                return
            }
            if outcome.startWriter {
                // One writer at a time; it outlives no waiting report (it ends when the queue is empty). At high
                // priority: each statement of a batch is an await, and in a burst the default-priority queue of the
                // cooperative pool holds thousands of request jobs, so at the reports' own priority every resumption
                // of the writer waited behind them (a burst's batches took 150-180 ms each, mostly waiting; see
                // docs/benchmarks.md). The writer's own work is small: SQLite runs on the store's thread pool.
                Task(priority: .high) { await self.commitUntilEmpty() }
            }
        }
    }

    /// The writer: commits batches until none waits, then says how many reports it committed (`onDrained`).
    private func commitUntilEmpty() async {
        var committed = 0
        while true {
            let batch = state.withLock { state -> [Entry] in
                let count = min(configuration.maximumBatch, state.pending.count)
                if count == 0 { state.writing = false }
                let batch = Array(state.pending.prefix(count))
                state.pending.removeFirst(count)
                return batch
            }
            guard !batch.isEmpty else {
                onDrained(self, committed)
                return
            }
            await commit(batch)
            committed += batch.count
        }
    }

    private func commit(_ batch: [Entry]) async {
        let started = ContinuousClock.now
        var writes = batch.map(\.write)
        let last = fingerprints.withLock { known in writes.map { known[$0.agentID] } }
        var inBatch: [String: SHA256Digest] = [:]
        for index in writes.indices {
            let previous = inBatch[writes[index].agentID] ?? last[index]
            writes[index].keepsHistory = previous != writes[index].fingerprint
            inBatch[writes[index].agentID] = writes[index].fingerprint
        }
        do {
            let stored = try await store.recordStatuses(writes, historyLimit: configuration.historyLimit)
            guard stored.count == batch.count else {
                throw StoreError.corruptRow(table: "service_status", reason: "\(stored.count) results for a batch of \(batch.count) reports")
            }
            fingerprints.withLock { known in
                for (write, result) in zip(writes, stored) { known[write.agentID] = result.stored ? write.fingerprint : nil }
                if known.count > configuration.maximumFingerprints { known.removeAll() }
            }
            onBatch(batch.count, .now - started)
            for (entry, result) in zip(batch, stored) { entry.continuation.resume(returning: result) }
        } catch {
            logger.warning(
                "Storing a batch of status reports failed: their agents will send them again",
                metadata: ["ferry.status.batch": "\(batch.count)", "error.message": "\(error)"]
            )
            failedAt.withLock { $0 = .now }
            for entry in batch { entry.continuation.resume(throwing: error) }
        }
    }
}
