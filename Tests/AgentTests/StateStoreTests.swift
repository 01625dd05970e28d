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
        let api = ServiceState(
            highestAcceptedSerial: 8,
            applied: CoreFixture.applied(api7, envDigest: String(repeating: "1", count: 64)),
            previous: CoreFixture.applied(CoreFixture.release(serial: 6)),
            pending: AppliedRelease(
                serial: 8,
                version: "1.0.8",
                sha256: CoreFixture.digest.hex,
                directoryName: "8-abc",
                payload: [0, 0xFF, 0xFE, 10, 0x22],
                envDigest: CoreFixture.emptyDigest
            ),
            failures: [.init(serial: 5, reason: "not healthy within 60s: api: pm_id 0 errored", kind: .rolledBack)],
            phase: .deploying,
            message: "installing serial 8 (1.0.8) — «unicode» and \"quotes\"\n"
        )
        state.services["api"] = api
        state["web"] = ServiceState(phase: .running)
        return state
    }()

    /// A message of megabytes (a parse error quoting a compromised controller's 16 MiB field, through the controller
    /// problem and through every refused release's reason) is cut before it is saved, after masking: otherwise the file
    /// outgrew what the agent reads back and the agent would not start again.
    @Test func longTextsAreCutAfterMaskingBeforeTheyAreSaved() throws {
        let huge = String(repeating: "/", count: 1 << 20)
        let secret = "tok-123456"
        // The secret straddles the cut: cut first, its first half would stay in the file.
        let straddling = String(repeating: "a", count: ServiceState.maximumStoredTextBytes - 4) + secret + huge
        var state = AgentState()
        state["api"] = ServiceState(
            failures: (1...20).map { .init(serial: Int64($0), reason: "refused: \(huge)", kind: .refused) },
            message: straddling
        )
        let noted = state.noteControllerContact(failure: "invalid answer: \(huge)", at: Date(timeIntervalSince1970: 0))
        #expect(noted)
        // A verdict saved before its rollback quotes the process manager's output as well (it was kept whole, the
        // secret in it unmasked, for as long as the rollback took).
        var web = Self.rich["api"]
        _ = try web.handle(.releaseUnhealthy(.healthGate(straddling), canRollBack: true))
        state["web"] = web
        state.prepareForSaving(mask: SecretMask([["TOKEN": secret]]))
        try TestPaths.withTemporaryDirectorySync("ferry-state") { directory in
            let store = StateStore(path: directory.appendingPathComponent("state.json").path)
            try store.save(state)
            let loaded = try store.load()
            #expect(loaded == state)
            let limit = ServiceState.maximumStoredTextBytes
            #expect(loaded.controllerProblem.map { $0.message.utf8.count <= limit && $0.message.hasPrefix("invalid answer: //") } == true)
            #expect(loaded["api"].message.utf8.count <= limit)
            #expect(loaded["api"].message.hasSuffix("${TO"), "\(loaded["api"].message.suffix(20))")
            #expect(!loaded["api"].message.contains("tok-"))
            let verdict = try #require(loaded["web"].pendingVerdict)
            #expect(verdict.utf8.count <= limit && !verdict.contains("tok-"), "\(verdict.suffix(20))")
            #expect(loaded["api"].failures.count == 20)
            #expect(loaded["api"].failures.allSatisfy { $0.reason.utf8.count <= limit && $0.reason.hasPrefix("refused: /") })
            let size = try FileManager.default.attributesOfItem(atPath: store.path)[.size] as? Int ?? .max
            #expect(size < 1 << 20, "state.json is \(size) bytes")
        }
    }

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
            changed["api"] = ServiceState(phase: .running)
            try store.save(changed)
            #expect(try store.load() == changed)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["state.json"])
        }
    }

    /// `state.json` as the agent wrote it before the per-service state machine (commit 3a0d905, from `rich` with a
    /// refusal and a controller problem added): an agent upgraded in place reads it, writes it back byte for byte, and
    /// goes on from where it stood.
    @Test func aStateFileOfThePreviousVersionIsReadAndGoesOn() throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/state-v1.json")
        var state = try StateStore(path: fixture.path).load()
        let api = state["api"]
        #expect(api.phase == .deploying)
        #expect(api.message == "installing serial 8 (1.0.8) — «unicode» and \"quotes\"\n")
        #expect(api.highestAcceptedSerial == 8)
        #expect(api.applied == Self.rich["api"].applied)
        #expect(api.previous == Self.rich["api"].previous)
        #expect(api.pending == Self.rich["api"].pending)
        #expect(
            api.failures == [
                .init(serial: 9, reason: "signature check failed: no trusted signature", kind: .refused),
                .init(serial: 5, reason: "not healthy within 60s: api: pm_id 0 errored", kind: .rolledBack),
            ]
        )
        #expect(state["web"] == ServiceState(phase: .running))
        #expect(state.controllerProblem?.message == "controller unreachable: connection refused")
        #expect(state.controllerProblem?.since == Date(timeIntervalSince1970: 1_800_000_000))

        try TestPaths.withTemporaryDirectorySync("ferry-state") { directory in
            let copy = StateStore(path: directory.appendingPathComponent("state.json").path)
            try copy.save(state)
            #expect(try Data(contentsOf: URL(fileURLWithPath: copy.path)) == Data(contentsOf: fixture))
        }

        // The install the old agent left pending resumes over its applied release.
        let applied = try #require(api.applied)
        let told = try state["api"].handle(.installResumed)
        #expect(told == .restore(applied))
        #expect(state["api"].message == "serial 8 was interrupted by a restart of the agent; installing it again")
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

    /// A state file that is there but cannot be used is an error, never an empty state (which would forget the highest
    /// serial accepted and the release to roll back to, and be saved over the file).
    static let unusable: [(description: String, reason: String, make: @Sendable (String) throws -> Void)] = [
        (
            "a directory where the file should be", "read {path} failed",
            { path in try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false) }
        ),
        (
            "a valid state padded past the size limit", "larger than \(StateStore.maximumBytes(services: 1)) bytes",
            { path in
                let text = #"{"version":1,"services":{}}"# + String(repeating: " ", count: StateStore.maximumBytes(services: 1))
                try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            }
        ),
    ]

    /// The largest state the agent writes reads back: four services, each with three releases of the largest payload
    /// (an install under way), and their failures. A fixed 16 MiB limit refused it, and the agent would not start.
    @Test func theLargestStateTheAgentWritesReadsBack() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-state") { directory in
            let path = directory.appendingPathComponent("state.json").path
            var generator = SystemRandomNumberGenerator()
            func release(_ serial: Int64) -> AppliedRelease {
                // Incompressible bytes: base64 of them is as long as any payload's.
                let payload = (0..<Limits.releasePayloadBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
                return AppliedRelease(
                    serial: serial,
                    version: "\(serial).0.0",
                    sha256: String(repeating: "a", count: 64),
                    directoryName: "\(serial)-aaaaaaaaaaaa",
                    payload: payload,
                    envDigest: "e"
                )
            }
            var state = AgentState()
            let services = ["api", "web", "worker", "cron"]
            for service in services {
                state.services[service] = ServiceState(
                    highestAcceptedSerial: 3,
                    applied: release(2),
                    previous: release(1),
                    pending: release(3),
                    phase: .deploying
                )
            }
            let store = StateStore(path: path, services: services.count)
            try store.save(state)
            let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
            #expect(size > StateStore.maximumBytes, "the state is past the old fixed limit: \(size) bytes")
            #expect(try store.load() == state)
        }
    }

    @Test(arguments: unusable.indices)
    func aFileThatCannotBeReadIsAnErrorNotAnEmptyState(_ index: Int) throws {
        let (description, reason, make) = Self.unusable[index]
        try TestPaths.withTemporaryDirectorySync("ferry-state") { directory in
            let path = directory.appendingPathComponent("state.json").path
            try make(path)
            let error = try #require(throws: StateError.self, "\(description)") { try StateStore(path: path).load() }
            guard case .unreadable(let errorPath, let actual) = error else { return }
            #expect(errorPath == path)
            #expect(actual.contains(reason.replacingOccurrences(of: "{path}", with: path)), "\(description): \(actual)")
        }
    }

    /// The controller problem shown by `ferry-agent status`: set by a failed poll, kept with the time it began while
    /// polls keep failing, cleared by the first poll that succeeds; each change (and only a change) is worth a save.
    @Test func aControllerProblemKeepsWhenItBeganUntilAPollSucceeds() {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var state = AgentState()
        var changed = state.noteControllerContact(failure: nil, at: start)
        #expect(!changed)
        changed = state.noteControllerContact(failure: "controller unreachable: connection refused", at: start)
        #expect(changed)
        changed = state.noteControllerContact(failure: "controller unreachable: connection refused", at: start.addingTimeInterval(30))
        #expect(!changed)
        changed = state.noteControllerContact(failure: "controller refused: HTTP 503", at: start.addingTimeInterval(60))
        #expect(changed)
        #expect(state.controllerProblem == ControllerProblem(message: "controller refused: HTTP 503", since: start))
        changed = state.noteControllerContact(failure: nil, at: start.addingTimeInterval(90))
        #expect(changed)
        #expect(state.controllerProblem == nil)
        #expect(state["api"] == ServiceState(), "no service changes phase because of the controller")
    }

    @Test func failuresAreNewestFirstCappedAtTwentyAndDeduplicated() {
        var failures: [ServiceState.Failure] = []
        for serial in Int64(1)...25 { failures.record(serial: serial, reason: "reason \(serial)", kind: .rolledBack) }
        #expect(failures.count == 20)
        #expect(failures.map(\.serial) == Array((Int64(6)...25).reversed()))
        #expect(failures.first == ServiceState.Failure(serial: 25, reason: "reason 25", kind: .rolledBack))

        // The same serial and kind again moves to the front with the new reason, not a second entry.
        failures.record(serial: 10, reason: "rolled back again", kind: .rolledBack)
        #expect(failures.count == 20)
        #expect(failures.filter { $0.serial == 10 }.count == 1)
        #expect(failures.first == ServiceState.Failure(serial: 10, reason: "rolled back again", kind: .rolledBack))

        // The same serial with another kind is another fact: both are kept; the oldest falls off.
        failures.record(serial: 25, reason: "expired", kind: .refused)
        #expect(failures.count == 20)
        #expect(failures.filter { $0.serial == 25 }.map(\.kind) == [.refused, .rolledBack])
        #expect(!failures.contains { $0.serial == 6 })
    }

    @Test func onlyARolledBackSerialCountsAsFailedHere() {
        var failures: [ServiceState.Failure] = []
        failures.record(serial: 3, reason: "bad signature", kind: .refused)
        #expect(!ServiceState(failures: failures).hasFailed(3))
        failures.record(serial: 4, reason: "not healthy", kind: .rolledBack)
        #expect(ServiceState(failures: failures).hasFailed(4))
        #expect(!ServiceState(failures: failures).hasFailed(5))
    }
}
