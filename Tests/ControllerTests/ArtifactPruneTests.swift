import Foundation
import Shared
import Testing

@testable import Controller

/// `POST /v1/artifacts/prune`: which artifacts go, which stay, hostile bodies, roles, and publishes racing prunes.
@Suite struct ArtifactPruneTests {
    typealias Fixture = ControllerFixture

    /// The artifacts of the scenario: api 1→a1, 2→a2, 3→a2 (a rollback), 4→a4; web 1→w1, 2→an external URL, 3→w3; an
    /// old upload never published (`unpublished`) and one just uploaded (`fresh`). All but `fresh` are two days old.
    enum Name: String, CaseIterable, Sendable {
        case a1, a2, a4, w1, w3, unpublished, fresh

        var bytes: [UInt8] { Array("artifact \(rawValue) ".utf8) + Array(repeating: UInt8(rawValue.count), count: 100 + rawValue.count) }
        var digest: SHA256Digest { SHA256.hash(bytes) }
    }

    /// One prune of the scenario and exactly what it removes.
    struct Case: Sendable, CustomTestStringConvertible {
        var keep: Int
        var minAge: Int
        var dryRun: Bool
        var removed: Set<Name>

        var testDescription: String { "keep \(keep), minAge \(minAge)s\(dryRun ? ", dry run" : "")" }
    }

    static let cases: [Case] = [
        Case(keep: 1, minAge: 86_400, dryRun: false, removed: [.a1, .a2, .w1, .unpublished]),
        Case(keep: 1, minAge: 0, dryRun: false, removed: [.a1, .a2, .w1, .unpublished, .fresh]),
        Case(keep: 2, minAge: 86_400, dryRun: false, removed: [.a1, .w1, .unpublished]),
        Case(keep: 3, minAge: 86_400, dryRun: false, removed: [.a1, .unpublished]),
        Case(keep: 5, minAge: 86_400, dryRun: false, removed: [.unpublished]),
        Case(keep: 1, minAge: 86_400, dryRun: true, removed: [.a1, .a2, .w1, .unpublished]),
        Case(keep: 1000, minAge: 31_536_000, dryRun: false, removed: []),
    ]

    /// Uploads and publishes the scenario over `http`, then ages every file but `fresh` by two days.
    static func scenario(_ fixture: Fixture, _ base: String, _ http: LiveHTTP) async throws {
        for name in Name.allCases {
            let uploaded = try await http.send("POST", base + "/v1/artifacts", token: fixture.operatorToken, body: Data(name.bytes))
            #expect(uploaded.status == 201)
        }
        func reference(_ name: Name) -> ArtifactReference {
            ArtifactReference(url: ArtifactReference.controllerPath(for: name.digest), sha256: name.digest, size: Int64(name.bytes.count))
        }
        let external = ArtifactReference(url: "https://artifacts.example.com/web-2.tgz", sha256: SHA256.hash(Array("web 2".utf8)), size: 5)
        let releases: [(String, Int64, ArtifactReference)] = [
            ("api", 1, reference(.a1)), ("api", 2, reference(.a2)), ("api", 3, reference(.a2)), ("api", 4, reference(.a4)),
            ("web", 1, reference(.w1)), ("web", 2, external), ("web", 3, reference(.w3)),
        ]
        for (service, serial, artifact) in releases {
            try await publish(fixture, base, http, Fixture.release(service: service, serial: serial, artifact: artifact), expecting: 201)
        }
        let old = Date().addingTimeInterval(-2 * 86_400)
        for name in Name.allCases where name != .fresh {
            try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: path(fixture, name.digest))
        }
    }

    static func publish(_ fixture: Fixture, _ base: String, _ http: LiveHTTP, _ release: Release, expecting status: Int) async throws {
        let envelope = try fixture.envelope(release)
        let answer = try await http.send("POST", base + "/v1/releases", token: fixture.operatorToken, body: Data(envelope.readableBytesView))
        #expect(answer.status == status, "\(String(decoding: answer.body, as: UTF8.self))")
    }

    static func path(_ fixture: Fixture, _ digest: SHA256Digest) -> String {
        fixture.directory.path + "/artifacts/" + digest.hex
    }

    static func prune(_ fixture: Fixture, _ base: String, _ http: LiveHTTP, _ body: String, token: String? = nil) async throws -> LiveHTTP.Response {
        try await http.send("POST", base + "/v1/artifacts/prune", token: token ?? fixture.operatorToken, body: Data(body.utf8))
    }

    @Test(arguments: cases)
    func pruneRemovesExactlyWhatThePolicyDoesNotKeep(_ test: Case) async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                try await Self.scenario(fixture, base, http)
                let answer = try await Self.prune(
                    fixture,
                    base,
                    http,
                    "{\"keepReleases\": \(test.keep), \"minAgeSeconds\": \(test.minAge), \"dryRun\": \(test.dryRun)}"
                )
                #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
                let fields = try JSONValue.parse(Array(answer.body)).object ?? [:]
                let reported = Set(FleetDocument.array(fields["removed"]).compactMap { $0.object?["sha256"] }.map(FleetDocument.text))
                #expect(reported == Set(test.removed.map(\.digest.hex)))
                #expect(fields["dryRun"] == .bool(test.dryRun))
                #expect(fields["kept"] == .integer(Int64(Name.allCases.count - test.removed.count)))
                #expect(fields["bytesFreed"] == .integer(Int64(test.removed.reduce(0) { $0 + $1.bytes.count })))
                for name in Name.allCases {
                    let gone = test.removed.contains(name) && !test.dryRun
                    #expect(FileManager.default.fileExists(atPath: Self.path(fixture, name.digest)) == !gone, "\(name)")
                    let download = try await http.send("GET", base + "/v1/artifacts/\(name.digest.hex)", token: fixture.operatorToken)
                    #expect(download.status == (gone ? 404 : 200), "\(name)")
                    if gone { #expect(try JSONValue.parse(Array(download.body)).object?["error"] == .string("unknown_artifact")) }
                }
            }
        }
    }

    /// A hostile prune body, and the 400 code it gets.
    struct Hostile: Sendable, CustomTestStringConvertible {
        var body: String
        var code: String
        var testDescription: String { body }
    }

    static let hostile: [Hostile] = [
        Hostile(body: #"{"keepReleases": 0}"#, code: "invalid_keep_releases"),
        Hostile(body: #"{"keepReleases": -1}"#, code: "invalid_keep_releases"),
        Hostile(body: #"{"keepReleases": 1001}"#, code: "invalid_keep_releases"),
        Hostile(body: #"{"keepReleases": "5"}"#, code: "invalid_keep_releases"),
        Hostile(body: #"{"keepReleases": 1e30}"#, code: "invalid_keep_releases"),
        Hostile(body: #"{"keepReleases": 2.5}"#, code: "invalid_keep_releases"),
        Hostile(body: #"{"minAgeSeconds": -1}"#, code: "invalid_min_age"),
        Hostile(body: #"{"minAgeSeconds": 31536001}"#, code: "invalid_min_age"),
        Hostile(body: #"{"minAgeSeconds": 99999999999999999999}"#, code: "invalid_min_age"),
        Hostile(body: #"{"minAgeSeconds": 1e30}"#, code: "invalid_min_age"),
        Hostile(body: #"{"minAgeSeconds": null}"#, code: "invalid_min_age"),
        Hostile(body: #"{"dryRun": "yes"}"#, code: "invalid_dry_run"),
        Hostile(body: #"{"keep": 5}"#, code: "unknown_field"),
        Hostile(body: #"{"keepReleases": 1, "minAgeSeconds": 0, "force": true}"#, code: "unknown_field"),
        Hostile(body: "[]", code: "wrong_type"),
        Hostile(body: "5", code: "wrong_type"),
        Hostile(body: #""prune""#, code: "wrong_type"),
        Hostile(body: "{", code: "malformed_json"),
    ]

    @Test func hostileBodiesAreRefusedWithTheirCodeAndRemoveNothing() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                try await Self.scenario(fixture, base, http)
                for test in Self.hostile {
                    let answer = try await Self.prune(fixture, base, http, test.body)
                    #expect(answer.status == 400, "\(test.body)")
                    let error = try JSONValue.parse(Array(answer.body)).object
                    #expect(error?["error"] == .string(test.code), "\(test.body): \(String(decoding: answer.body, as: UTF8.self))")
                }
                for name in Name.allCases { #expect(FileManager.default.fileExists(atPath: Self.path(fixture, name.digest)), "\(name)") }
                // The message names the allowed range.
                let answer = try await Self.prune(fixture, base, http, #"{"keepReleases": 0}"#)
                #expect(String(decoding: answer.body, as: UTF8.self).contains("from 1 to 1000"))
            }
        }
    }

    @Test func viewerAndAgentTokensAreForbidden() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                try await Self.scenario(fixture, base, http)
                let agent = try await http.enroll(base, token: fixture.enrollToken, name: "i-1")
                for token in [fixture.viewerToken, agent.token] {
                    let answer = try await Self.prune(fixture, base, http, #"{"minAgeSeconds": 0, "keepReleases": 1}"#, token: token)
                    #expect(answer.status == 403)
                }
                for name in Name.allCases { #expect(FileManager.default.fileExists(atPath: Self.path(fixture, name.digest)), "\(name)") }
            }
        }
    }

    @Test func anArtifactAnAgentRunsIsKeptAndARollbackToAPrunedOneIsRefused() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                try await Self.scenario(fixture, base, http)
                // An agent still runs web 1 (w1): kept whatever keepReleases says.
                let agent = try await http.enroll(base, token: fixture.enrollToken, name: "i-1", services: ["web"])
                try await fixture.store.recordStatus(
                    StatusReport(agentVersion: "test", hostname: "i-1", processManager: "builtin", services: [.running("web", serial: 1)]),
                    agentID: agent.agentID,
                    receivedAt: Date(),
                    historyLimit: 10
                )
                let answer = try await Self.prune(fixture, base, http, #"{"keepReleases": 1}"#)
                #expect(answer.status == 200)
                #expect(FileManager.default.fileExists(atPath: Self.path(fixture, Name.w1.digest)))
                #expect(!FileManager.default.fileExists(atPath: Self.path(fixture, Name.a1.digest)))
                // Re-publishing api 1's artifact (a rollback re-signs it under a new serial) is refused: it is gone.
                let a1 = ArtifactReference(
                    url: ArtifactReference.controllerPath(for: Name.a1.digest),
                    sha256: Name.a1.digest,
                    size: Int64(Name.a1.bytes.count)
                )
                let envelope = try fixture.envelope(Fixture.release(serial: 5, artifact: a1))
                let refused = try await http.send("POST", base + "/v1/releases", token: fixture.operatorToken, body: Data(envelope.readableBytesView))
                #expect(refused.status == 422)
                #expect(try JSONValue.parse(Array(refused.body)).object?["error"] == .string("unknown_artifact"))
            }
        }
    }

    /// Publishes naming an old artifact race prunes that would remove it: no stored release may end up naming an
    /// artifact that is gone.
    @Test func publishesRacingPrunesNeverLeaveAReleaseWithoutItsArtifact() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let http = LiveHTTP(maximumConnections: 16)
                let old = Array("old artifact".utf8) + Array(repeating: 7, count: 4096)
                let other = Array("other artifact".utf8) + Array(repeating: 8, count: 4096)
                for bytes in [old, other] {
                    #expect(try await http.send("POST", base + "/v1/artifacts", token: fixture.operatorToken, body: Data(bytes)).status == 201)
                }
                func reference(_ bytes: [UInt8]) -> ArtifactReference {
                    let digest = SHA256.hash(bytes)
                    return ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
                }
                var serial: Int64 = 0
                for round in 0..<15 {
                    // The old artifact leaves the newest release: a prune (keep 1, no minimum age) may remove it now.
                    serial += 1
                    try await Self.publish(fixture, base, http, Fixture.release(serial: serial, artifact: reference(other)), expecting: 201)
                    let first = serial + 1
                    serial += 4
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for offset in Int64(0)..<4 {
                            let release = Fixture.release(serial: first + offset, artifact: reference(old))
                            let envelope = try fixture.envelope(release)
                            group.addTask {
                                let answer = try await http.send(
                                    "POST",
                                    base + "/v1/releases",
                                    token: fixture.operatorToken,
                                    body: Data(envelope.readableBytesView)
                                )
                                // Stored, refused as gone, a later serial won, or asked to wait for the prune.
                                #expect([201, 409, 422, 503].contains(answer.status), "round \(round): \(answer.status)")
                            }
                        }
                        for _ in 0..<2 {
                            group.addTask {
                                let answer = try await Self.prune(fixture, base, http, #"{"keepReleases": 1, "minAgeSeconds": 0}"#)
                                #expect(answer.status == 200)
                            }
                        }
                        try await group.waitForAll()
                    }
                    // Whichever came first, the newest release (the one the prunes keep) names a stored artifact: a
                    // publish that lost to a prune was refused, one that won is kept by every later prune.
                    let newest = try #require(try await fixture.store.releases(service: "api", limit: 1).first)
                    #expect(FileManager.default.fileExists(atPath: fixture.directory.path + "/artifacts/" + newest.artifactSHA256), "round \(round)")
                    // Gone or not: uploaded again for the next round.
                    for bytes in [old, other] {
                        _ = try await http.send("POST", base + "/v1/artifacts", token: fixture.operatorToken, body: Data(bytes))
                    }
                }
            }
        }
    }
    @Test func theCommandParsesItsOptionsAndRefusesBadOnes() throws {
        let prune = try #require(
            try ControllerCommand.parseAsRoot(["artifacts", "prune", "--keep", "3", "--min-age", "30m", "--dry-run", "--json"])
                as? ArtifactsPruneCommand
        )
        #expect(prune.keep == 3 && prune.dryRun && prune.json)
        #expect(try prune.minimumAgeSeconds() == 1800)
        let defaults = try #require(try ControllerCommand.parseAsRoot(["artifacts", "prune"]) as? ArtifactsPruneCommand)
        #expect(defaults.keep == 5 && !defaults.dryRun)
        #expect(try defaults.minimumAgeSeconds() == 86_400)
        #expect(try (ControllerCommand.parseAsRoot(["artifacts", "prune", "--min-age", "0"]) as? ArtifactsPruneCommand)?.minimumAgeSeconds() == 0)
        for bad in [
            ["--keep", "0"], ["--keep", "1001"], ["--min-age", "1.5h"], ["--min-age", "500ms"], ["--min-age", "8761h"], ["--min-age", "-1"],
        ] {
            #expect(throws: (any Error).self, "\(bad)") { try ControllerCommand.parseAsRoot(["artifacts", "prune"] + bad) }
        }
    }

    @Test func theReportNamesEachArtifactAndTheTotal() {
        let answer = JSONValue.object([
            "dryRun": .bool(true), "kept": .integer(3), "bytesFreed": .integer(2048),
            "removed": .array([.object(["sha256": .string(String(repeating: "a", count: 64)), "size": .integer(2048)])]),
        ])
        #expect(
            ArtifactsPruneCommand.lines(answer) == [
                "would remove \(String(repeating: "a", count: 64)) 2 KiB",
                "would remove 1 artifact(s), 2 KiB; 3 kept (dry run: nothing removed)",
            ]
        )
    }
}
