import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The long-poll loop over a real SQLite store and hub: how each way a parked poll ends is answered.
@Suite struct DesiredStateProviderLongPollTests {
    /// What a poll ended with, and whether it parked.
    enum Ending: Sendable, CustomStringConvertible {
        /// No wait, or no `If-None-Match`, or a tag that does not match: the current state at once.
        case immediate(wait: Int, ifNoneMatch: String?)
        /// Parked; the test then publishes a release of the agent's service.
        case publish
        /// Parked; the test then removes the agent.
        case removeAgent
        /// Parked; the test then stops the hub (server shutdown).
        case shutdown
        /// Parked for one second with nothing happening.
        case timeout

        var description: String {
            switch self {
            case .immediate(let wait, let tag): "immediate (wait \(wait), If-None-Match \(tag ?? "none"))"
            case .publish: "a publish"
            case .removeAgent: "the agent removed"
            case .shutdown: "shutdown"
            case .timeout: "the wait runs out"
            }
        }
    }

    enum Answer: Equatable, Sendable {
        /// The state the agent already has (304).
        case unchanged
        /// A different state (200).
        case changed
        /// No such agent (404).
        case unknownAgent
    }

    /// Sentinel for "the agent's own current tag".
    static let current = "CURRENT"

    @Test(arguments: [
        (Ending.immediate(wait: 0, ifNoneMatch: current), Answer.unchanged),
        (.immediate(wait: 30, ifNoneMatch: nil), .unchanged),
        (.immediate(wait: 30, ifNoneMatch: "\"other\""), .unchanged),
        (.publish, .changed),
        (.removeAgent, .unknownAgent),
        (.shutdown, .unchanged),
        (.timeout, .unchanged),
    ])
    func ending(_ ending: Ending, answer: Answer) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-long-poll") { directory in
            let store = try await StoreTests.open(directory)
            let hub = LongPollHub()
            let provider = DesiredStateProvider(
                builder: DesiredStateBuilder(configuration: .init(), store: store, selector: RolloutReleaseSelector()),
                hub: hub
            )
            let agent = try await store.enrollAgent(proposedID: "agt_1", name: "a", hostname: "h", services: ["web"], tokenHash: "x", at: Date())
            try await store.insertRelease(try StoreTests.record(serial: 1, service: "web"))
            let before = try #require(try await provider.current(for: agent.id))

            let wait: Duration
            let tag: String?
            switch ending {
            case .immediate(let seconds, let given):
                wait = .seconds(seconds)
                tag = given == Self.current ? before.etag : given
            case .timeout:
                wait = .seconds(1)
                tag = before.etag
            default:
                wait = .seconds(90)
                tag = before.etag
            }
            let started = ContinuousClock.now
            let poll = Task { try await provider.state(for: agent.id, ifNoneMatch: tag, waitingUpTo: wait) }
            switch ending {
            case .publish, .removeAgent, .shutdown:
                let deadline = ContinuousClock.now + .seconds(45)
                while hub.waiterCount < 1 {
                    guard ContinuousClock.now < deadline else { throw FixtureError("the poll never parked") }
                    try await Task.sleep(for: .milliseconds(5))
                }
            default:
                break
            }
            switch ending {
            case .publish:
                try await store.insertRelease(try StoreTests.record(serial: 2, service: "web"))
                provider.releasePublished(service: "web")
            case .removeAgent:
                _ = try await store.removeAgent(name: "a")
                provider.agentRemoved(id: agent.id)
            case .shutdown:
                hub.shutdown()
            default:
                break
            }
            let state = try await poll.value
            let elapsed = ContinuousClock.now - started
            switch answer {
            case .unknownAgent: #expect(state == nil)
            case .unchanged: #expect(state?.etag == before.etag)
            case .changed: #expect(state != nil && state?.etag != before.etag)
            }
            if case .timeout = ending {
                #expect(elapsed >= .seconds(1), "a matching poll waits its whole wait")
            } else {
                // Half the 90 s wait: a wall-clock bound generous enough for a loaded machine.
                #expect(elapsed < .seconds(45), "\(ending) answers at once, not at the end of the wait")
            }
            #expect(hub.waiterCount == 0)
            try await store.close()
        }
    }
}
