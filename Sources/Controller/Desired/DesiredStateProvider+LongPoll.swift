/// The long-poll of `GET /v1/agents/{id}/desired-state?wait=N`: the desired state to answer with, after waiting for it
/// to change from the one the agent has.
extension DesiredStateProvider {
    /// The current desired state of `agentID`; with `ifNoneMatch` naming it and a `wait` above zero, parks (one parked
    /// request per agent, see `LongPollHub`) until something that may concern the agent happens and the state then
    /// differs, the wait ends, or the server stops.
    /// - Parameter confirm: runs before a new state is answered after a wait (the state read first): throws when the
    ///   request's token stopped working meanwhile (an operator's re-enrolment of the agent wakes it, and must not hand
    ///   the old token the new state). An unchanged state tells the token nothing and is answered without it.
    /// - Returns: the state to answer with (still matching `ifNoneMatch` when nothing changed: the caller answers 304),
    ///   or `nil` when no such agent exists — also when it is removed while the request waits.
    func state(
        for agentID: String,
        ifNoneMatch: String?,
        waitingUpTo wait: Duration,
        confirm: () async throws -> Void = {}
    ) async throws -> RenderedDesiredState? {
        guard var state = try await currentWithGeneration(agentID) else { return nil }
        let deadline = wait > .zero ? ContinuousClock.now + wait : nil
        var waited = false
        while let deadline, let ifNoneMatch, state.rendered.isMatched(byIfNoneMatch: ifNoneMatch) {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { break }
            let wake = await hub.wait(agentID: agentID, services: state.rendered.services, after: state.generation, timeout: remaining)
            waited = true
            guard let next = try await currentWithGeneration(agentID) else { return nil }
            state = next
            if wake != .changed { break }
        }
        if waited, !(ifNoneMatch.map(state.rendered.isMatched(byIfNoneMatch:)) ?? false) { try await confirm() }
        return state.rendered
    }

    /// The agent's state and the long-poll generation read before it (see `LongPollHub.generation`): a change that lands
    /// after the read ends the next wait at once instead of being missed.
    private func currentWithGeneration(_ agentID: String) async throws -> (rendered: RenderedDesiredState, generation: UInt64)? {
        let generation = hub.generation
        guard let rendered = try await current(for: agentID) else { return nil }
        return (rendered, generation)
    }
}
