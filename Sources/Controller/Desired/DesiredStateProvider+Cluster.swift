import Synchronization

/// Changes committed by the other controllers on the same database (`PostgresChangeRelay` delivers them): the same
/// cache drops and wake-ups as a local change, without announcing them again.
extension DesiredStateProvider {
    /// Applies another controller's change to this one's caches and parked long-polls.
    func apply(remote change: ClusterChange) async {
        switch change {
        case .releasePublished(let service), .rolloutChanged(let service):
            invalidateAllAndWake(services: [service])
        case .agentChanged(let id):
            // Read from the store off the listener: the notifications after it (a revoked token above all) must not wait
            // for a database read, which a busy pool or a locked table could hold for seconds. The agent's cached state
            // and row go at once: a re-enrolment elsewhere with other services must not be served from them while the
            // queue works through other agents (its new token authenticates here at once).
            cache.invalidate(id)
            if remoteAgents.enqueue(id) {
                Task {
                    while let id = remoteAgents.next() { await refreshReported(id) }
                }
            }
        case .rootPublished:
            invalidateAllAndWake(services: nil)
        case .tokenRevoked:
            break  // The authenticator's business (`ControllerCore.apply(remote:)`).
        case .resync:
            await resynchronize()
        }
    }

    /// An agent another controller changed (also announced when it took a report of a serial newer than its cached
    /// state gave: an install that finished after an abort): this one's snapshot still has the agent's running serials
    /// from its load, and would compute the same out-of-date state again. The stored statuses have the report.
    private func refreshReported(_ id: String) async {
        if let statuses = try? await builder.store.serviceStatuses(agentID: id) {
            var running: [String: Int64] = [:]
            for record in statuses { if let serial = record.status.serial { running[record.status.service] = serial } }
            cache.noteReported(running, by: id)
        }
        cache.invalidate(id)
        hub.notify(agentID: id)
    }

    /// Something may have been missed (the notification connection dropped, a queue overflowed): drop every cached
    /// state and every agent's cached row (a re-enrolment with other services may be among what was missed), and
    /// wake every parked agent, which then reads its state from the database. Every one: a missed trust root concerns
    /// agents of services without any release too.
    func resynchronize() async {
        cache.forgetAgentRows()
        invalidateAllAndWake(services: nil)
    }
}

/// The agents other controllers changed, waiting for their stored serials to be read (`refreshReported`), in order, each
/// once however many notices name it meanwhile; one task reads them while any wait.
final class RemoteAgentQueue: Sendable {
    private let state = Mutex<(order: [String], head: Int, queued: Set<String>, draining: Bool)>(([], 0, [], false))

    /// Queues `id`: `true` when no task reads the queue, and the caller must start one.
    func enqueue(_ id: String) -> Bool {
        state.withLock { state in
            if state.queued.insert(id).inserted { state.order.append(id) }
            guard !state.draining else { return false }
            state.draining = true
            return true
        }
    }

    /// The ids held (those read but not yet compacted away, and those waiting).
    var stored: Int { state.withLock { $0.order.count } }

    /// The next agent to read, or `nil` (the reading task ends) when none waits.
    func next() -> String? {
        state.withLock { state in
            guard state.head < state.order.count else {
                state.order = []
                state.head = 0
                state.draining = false
                return nil
            }
            let id = state.order[state.head]
            state.head += 1
            state.queued.remove(id)
            // A queue that never empties (notices as fast as the reads) is compacted, or it kept every id read.
            if state.head >= 1024, state.head * 2 >= state.order.count {
                state.order.removeFirst(state.head)
                state.head = 0
            }
            return id
        }
    }
}
