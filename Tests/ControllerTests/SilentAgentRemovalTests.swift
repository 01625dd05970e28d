import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import SQLKit
import Shared
import Testing

@testable import Controller

/// `serve --remove-silent-agents-after`: an agent silent that long is removed as `agents remove` would, once the
/// controller has run long enough for the live agents to have reported.
@Suite struct SilentAgentRemovalTests {
    @Test func aSilentAgentIsRemovedOnceTheControllerHasSettled() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let gone = try await fixture.enroll(client, name: "terminated")
                let alive = try await fixture.enroll(client, name: "alive")
                // The terminated instance last reported two days ago.
                let twoDaysAgo = StoredTime.milliseconds(Date().addingTimeInterval(-2 * 86_400))
                try await fixture.store.readDB.raw(
                    "UPDATE agents SET last_seen = \(bind: twoDaysAgo), enrolled_at = \(bind: twoDaysAgo) WHERE id = \(bind: gone.id)"
                ).run()
                func poll(_ agent: (id: String, token: String)) async throws -> HTTPResponse.Status {
                    try await client.execute(
                        uri: "/v1/agents/\(agent.id)/desired-state",
                        method: .get,
                        headers: ControllerFixture.bearer(agent.token)
                    )
                    .status
                }
                #expect(try await poll(gone) == .ok)

                let removal = SilentAgentRemoval(core: fixture.controller.core, after: .seconds(86_400), started: .now)
                #expect(removal.settle == .seconds(300))
                // Just started (after a controller, database or network outage every agent looks silent): nothing goes.
                #expect(try await removal.sweep(at: Date(), uptime: .seconds(60)).isEmpty)
                #expect(try await fixture.store.agents().count == 2)

                let removed = try await removal.sweep(at: Date(), uptime: .seconds(300))
                #expect(removed.map(\.name) == ["terminated"])
                #expect(try await fixture.store.agents().map(\.name) == ["alive"])
                #expect(try await poll(gone) == .unauthorized, "its token stopped working at once")
                #expect(try await poll(alive) == .ok)
                #expect(fixture.registry.emitToString().contains("ferry_agents_removed_silent_total 1"))
                #expect(try await removal.sweep(at: Date(), uptime: .seconds(300)).isEmpty)
            }
        }
    }

    /// How often it looks: a tenth of the silence, from a minute to an hour.
    @Test(arguments: [(3_600, 360), (86_400, 3_600), (600, 60)])
    func theSweepInterval(after: Int64, interval: Int64) async throws {
        try await ControllerFixture.with { fixture in
            let removal = SilentAgentRemoval(core: fixture.controller.core, after: .seconds(after), started: .now)
            #expect(removal.interval == .seconds(interval))
        }
    }
}
