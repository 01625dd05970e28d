/// Changes committed by the other controllers on the same database (`PostgresChangeRelay` delivers them): the same
/// cache drops and wake-ups as a local change, without announcing them again.
extension DesiredStateProvider {
    /// Applies another controller's change to this one's caches and parked long-polls.
    func apply(remote change: ClusterChange) async {
        switch change {
        case .releasePublished(let service), .rolloutChanged(let service):
            invalidateAllAndWake(services: [service])
        case .agentChanged(let id):
            // Also sent when the other controller took a report of a serial newer than its cached state gave (an
            // install that finished after an abort): this one's snapshot still has the agent's running serials from
            // its load, and would compute the same out-of-date state again. The stored statuses have the report.
            if let statuses = try? await builder.store.serviceStatuses(agentID: id) {
                var running: [String: Int64] = [:]
                for record in statuses { if let serial = record.status.serial { running[record.status.service] = serial } }
                cache.noteReported(running, by: id)
            }
            cache.invalidate(id)
            hub.notify(agentID: id)
        case .rootPublished:
            invalidateAllAndWake(services: nil)
        case .tokenRevoked:
            break  // The authenticator's business (`ControllerCore.apply(remote:)`).
        case .resync:
            await resynchronize()
        }
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
