import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import SQLKit
import Shared
import TestSupport
import Testing

@testable import Controller

/// `serve --remove-silent-agents-after`: an agent silent that long is removed as `agents remove` would, and only when
/// the silence can be its own.
@Suite struct SilentAgentRemovalTests {
    /// Between two sweeps 360 s apart: the wall clock and the monotonic clock must agree, and the sleep must not have
    /// overrun, or the sweep judges no silence and the controller settles again. A clock stepped 2 h forward made every
    /// live agent look silent (its cutoff, and the last-seen times stamped meanwhile, were 2 h ahead).
    @Test(arguments: [
        (wall: 360.0, monotonic: 360, settles: false),
        (wall: 364.0, monotonic: 360, settles: false),
        (wall: 385.0, monotonic: 385, settles: false),
        (wall: 400.0, monotonic: 400, settles: true),
        (wall: 7_560.0, monotonic: 360, settles: true),
        (wall: -6_840.0, monotonic: 360, settles: true),
        (wall: 366.0, monotonic: 360, settles: true),
        (wall: 3_600.0, monotonic: 3_600, settles: true),
    ])
    func aClockStepOrAPauseSettlesAgain(_ row: (wall: Double, monotonic: Int, settles: Bool)) {
        let settles = SilentAgentRemoval.mustSettleAgain(
            wallElapsed: row.wall,
            monotonicElapsed: .seconds(row.monotonic),
            interval: .seconds(360)
        )
        #expect(settles == row.settles)
    }

    @Test func aSilentAgentIsRemovedOnlyWhenTheSilenceIsItsOwn() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let gone = try await fixture.enroll(client, name: "terminated")
                let stopped = try await fixture.enroll(client, name: "parked")
                let alive = try await fixture.enroll(client, name: "alive")
                func poll(_ agent: (id: String, token: String), query: String = "", etag: String? = nil) async throws -> TestResponse {
                    var headers = ControllerFixture.bearer(agent.token)
                    if let etag { headers[.ifNoneMatch] = etag }
                    return try await client.execute(uri: "/v1/agents/\(agent.id)/desired-state\(query)", method: .get, headers: headers)
                }
                let core = fixture.controller.core
                let removal = SilentAgentRemoval(core: core, after: .seconds(86_400), started: .now)
                #expect(removal.settle == .seconds(300))
                // "terminated" and "parked" last reported two days ago; nobody has reported since.
                let twoDaysAgo = StoredTime.milliseconds(Date().addingTimeInterval(-2 * 86_400))
                for agent in [gone, stopped] {
                    try await fixture.store.readDB.raw(
                        "UPDATE agents SET last_seen = \(bind: twoDaysAgo), enrolled_at = \(bind: twoDaysAgo) WHERE id = \(bind: agent.id)"
                    ).run()
                }
                // Just started, or reports failing lately (an outage: every agent looks silent): nothing goes.
                #expect(try await removal.sweep(at: Date(), quiet: .seconds(60)).isEmpty)
                // No agent reported lately (a restored database, this clock ahead): nothing goes either.
                #expect(try await removal.sweep(at: Date(), quiet: .seconds(300)).isEmpty)
                #expect(try await fixture.store.agents().count == 3)

                // "alive" reports; "parked" long-polls here, its reports failing.
                let report = StatusReport(agentVersion: "1", hostname: "alive.example", processManager: "pm2", services: [])
                var headers = ControllerFixture.bearer(alive.token)
                headers[.contentType] = "application/json"
                let posted = try await client.execute(
                    uri: "/v1/agents/\(alive.id)/status",
                    method: .post,
                    headers: headers,
                    body: ByteBuffer(bytes: report.json.encoded())
                )
                #expect(posted.status == .noContent)
                let etag = try #require(try await poll(stopped).headers[.eTag])
                async let parked = poll(stopped, query: "?wait=10", etag: etag)
                try await eventually("the long-poll parked", timeout: .seconds(10)) {
                    core.desiredStates.hub.isParked(agentID: stopped.id) ? true : nil
                }

                let removed = try await removal.sweep(at: Date(), quiet: .seconds(300))
                #expect(removed.map(\.name) == ["terminated"])
                #expect(try await fixture.store.agents().map(\.name) == ["alive", "parked"])
                #expect(try await poll(gone).status == .unauthorized, "its token stopped working at once")
                #expect(try await poll(alive).status == .ok)
                #expect(fixture.registry.emitToString().contains("ferry_agents_removed_silent_total 1"))
                core.desiredStates.hub.notify(agentID: stopped.id)
                _ = try await parked
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
