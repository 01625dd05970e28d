import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("StateStore and AgentState: state.json survives restarts, refuses corruption loudly, keeps failures short")
struct StateStoreTests {
    /// A state using every field, with payload bytes that are not valid UTF-8.
    static let rich: AgentState = {
        var state = AgentState()
        let api7 = CoreFixture.release(serial: 7, env: ["NODE_ENV": "production"])
        var api = ServiceState()
        api.highestAcceptedSerial = 8
        api.applied = CoreFixture.applied(api7, envDigest: String(repeating: "1", count: 64))
        api.previous = CoreFixture.applied(CoreFixture.release(serial: 6))
        api.pending = AppliedRelease(
            serial: 8,
            version: "1.0.8",
            sha256: CoreFixture.digest.hex,
            directoryName: "8-abc",
            payload: [0, 0xFF, 0xFE, 10, 0x22],
            envDigest: CoreFixture.emptyDigest
        )
        api.recordFailure(serial: 5, reason: "not healthy within 60s: api: pm_id 0 errored", kind: "rolled-back")
        api.phase = .deploying
        api.message = "installing serial 8 (1.0.8) — «unicode» and \"quotes\"\n"
        state.services["api"] = api
        state["web"].phase = .running
        return state
    }()

    @Test func roundTripsThroughTheFileWithPayloadsAsBase64() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-state") { directory in
            let store = StateStore(path: directory.appendingPathComponent("state.json").path)
            try store.save(Self.rich)
            #expect(try store.load() == Self.rich)

            // The payload is stored as base64 text (the verified bytes exactly), not as an array of numbers.
            let json = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: store.path))))
            guard case .object(let root) = json, case .object(let services)? = root["services"], case .object(let api)? = services["api"],
                case .object(let pending)? = api["pending"], case .object(let applied)? = api["applied"]
            else {
                Issue.record("unexpected state.json shape: \(json)")
                return
            }
            #expect(pending["payload"] == .string("AP/+CiI="))
            #expect(applied["payload"] == .string(Data(Self.rich["api"].applied?.payload ?? []).base64EncodedString()))
            #expect(root["version"] == .integer(1))

            // Owner-only: it names what runs here.
            let attributes = try FileManager.default.attributesOfItem(atPath: store.path)
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)

            // Saving again replaces the file (atomically), leaving no temp files behind.
            var changed = Self.rich
            changed["api"].phase = .running
            try store.save(changed)
            #expect(try store.load() == changed)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["state.json"])
        }
    }

    @Test func theAppliedReleaseIsReadBackFromItsPayload() throws {
        let release = CoreFixture.release(serial: 7, env: ["NODE_ENV": "production"])
        #expect(try Self.rich["api"].applied?.release() == release)
    }

    @Test func anAbsentFileIsAnEmptyState() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-state") { directory in
            let state = try StateStore(path: directory.appendingPathComponent("state.json").path).load()
            #expect(state == AgentState())
            #expect(state["api"] == ServiceState())
            #expect(state["api"].message == "waiting for the first release")
            #expect(state["api"].phase == .waiting)
        }
    }

    struct Corrupt: Sendable, CustomStringConvertible {
        var description: String
        var content: String
        /// Words the reason must contain.
        var reason: String
    }

    static let validApplied = #"{"serial":1,"version":"1","sha256":"x","directoryName":"1-x","envDigest":"e","payload":"#

    static let corrupt: [Corrupt] = [
        Corrupt(description: "not JSON", content: "{\"version\": 1, \"services\": ", reason: "not valid JSON"),
        Corrupt(description: "truncated to nothing", content: "", reason: "not valid JSON"),
        Corrupt(description: "wrong type", content: #"{"version": "one", "services": {}}"#, reason: "version"),
        Corrupt(description: "missing services", content: #"{"version": 1}"#, reason: "services"),
        Corrupt(
            description: "payload not base64",
            content: #"{"version":1,"services":{"api":{"failures":[],"phase":"running","message":"","applied":"#
                + validApplied + #""%%%"}}}}"#,
            reason: "payload is not base64"
        ),
        Corrupt(
            description: "unknown phase",
            content: #"{"version":1,"services":{"api":{"failures":[],"phase":"exploded","message":""}}}"#,
            reason: "exploded"
        ),
    ]

    @Test(arguments: corrupt)
    func aCorruptFileIsAnErrorNamingThePath(_ testCase: Corrupt) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-state") { directory in
            let path = directory.appendingPathComponent("state.json").path
            try Data(testCase.content.utf8).write(to: URL(fileURLWithPath: path))
            let error = try #require(throws: StateError.self) { try StateStore(path: path).load() }
            guard case .unreadable(let errorPath, let reason) = error else { return }
            #expect(errorPath == path)
            #expect(reason.contains(testCase.reason), "reason: \(reason)")
            #expect(error.description.hasPrefix("state file \(path) is unreadable ("))
            #expect(error.description.hasSuffix("); move it away to start from scratch"))
        }
    }

    @Test func failuresAreNewestFirstCappedAtTwentyAndDeduplicated() {
        var service = ServiceState()
        for serial in Int64(1)...25 { service.recordFailure(serial: serial, reason: "reason \(serial)", kind: "rolled-back") }
        #expect(service.failures.count == 20)
        #expect(service.failures.map(\.serial) == Array((Int64(6)...25).reversed()))
        #expect(service.failures.first == ServiceState.Failure(serial: 25, reason: "reason 25", kind: "rolled-back"))

        // The same serial and kind again moves to the front with the new reason, not a second entry.
        service.recordFailure(serial: 10, reason: "rolled back again", kind: "rolled-back")
        #expect(service.failures.count == 20)
        #expect(service.failures.filter { $0.serial == 10 }.count == 1)
        #expect(service.failures.first == ServiceState.Failure(serial: 10, reason: "rolled back again", kind: "rolled-back"))

        // The same serial with another kind is another fact: both are kept; the oldest falls off.
        service.recordFailure(serial: 25, reason: "expired", kind: "refused")
        #expect(service.failures.count == 20)
        #expect(service.failures.filter { $0.serial == 25 }.map(\.kind) == ["refused", "rolled-back"])
        #expect(!service.failures.contains { $0.serial == 6 })
    }

    @Test func onlyARolledBackSerialCountsAsFailedHere() {
        var service = ServiceState()
        service.recordFailure(serial: 3, reason: "bad signature", kind: "refused")
        #expect(!service.hasFailed(3))
        service.recordFailure(serial: 4, reason: "not healthy", kind: "rolled-back")
        #expect(service.hasFailed(4))
        #expect(!service.hasFailed(5))
    }
}
