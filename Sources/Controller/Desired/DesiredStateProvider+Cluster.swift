/// Changes committed by the other controllers on the same database (`PostgresChangeRelay` delivers them): the same
/// cache drops and wake-ups as a local change, without announcing them again.
extension DesiredStateProvider {
    /// Applies another controller's change to this one's caches and parked long-polls.
    func apply(remote change: ClusterChange) async {
        switch change {
        case .releasePublished(let service), .rolloutChanged(let service):
            invalidateAllAndWake(services: [service])
        case .agentChanged(let id):
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
    /// state and wake every parked agent, which then reads its state from the database.
    func resynchronize() async {
        cache.invalidateAll()
        let services = (try? await builder.store.serviceSummaries().map(\.name)) ?? []
        hub.notify(services: Set(services))
    }
}
