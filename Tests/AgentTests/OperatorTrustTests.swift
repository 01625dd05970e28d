import Foundation
import Shared
import TestSupport
import Testing

/// A controller host taken over cannot get an operator's key to sign its own payload or key: `approve`, `rollback` and
/// `root rotate` check what the controller lists, on the operator's machine, from a root the operator holds, and sign
/// nothing when it does not verify. The controller here is a stand-in on 127.0.0.1 (`TestFileServer`) serving what a
/// compromised one would: its own payload as the release awaiting approval, as the version to roll back to, a root with
/// its key. The real controller's flows, where everything verifies, are `TrustRootEndToEndTests`.
@Suite("What an operator signs is checked on the operator's machine", .serialized)
struct OperatorTrustTests {
    /// The fleet's keys (root 1: `root` alone in the root role; CI and Alice in the release role, two of them must
    /// sign), and the attacker's.
    struct Keys {
        let root: SigningKey
        let ci: SigningKey
        let alice: SigningKey
        /// The release key of a root 2 that replaces CI's and Alice's.
        let next: SigningKey
        let attacker: SigningKey

        static func make() throws -> Keys {
            Keys(root: try .generate(), ci: try .generate(), alice: try .generate(), next: try .generate(), attacker: try .generate())
        }

        func rootOne() throws -> Envelope {
            try TestRoots.root(version: 1, rootKeys: [root], releaseKeys: [ci, alice], releaseThreshold: 2, signers: [root])
        }
    }

    /// What the stand-in serves.
    struct Served {
        /// `GET /v1/services/web/releases`: each release's envelope, newest first, with its listing fields.
        var releases: [(envelope: Envelope, awaitingApproval: Bool)] = []
        /// `GET /v1/roots`: the versions listed, and `GET /v1/roots/{version}` for each.
        var roots: [(version: Int64, envelope: Envelope)] = []
        /// `GET /v1/roots`' `pinned`: the controller's own pin as it says it.
        var pinned: JSONValue = .null
    }

    struct Refusal: Sendable, CustomTestStringConvertible {
        var label: String
        var serve: @Sendable (Keys) throws -> Served
        /// The command, after `ferry-controller`; `ALICE` stands for Alice's key file, `CI` for CI's.
        var arguments: [String]
        /// Whether `--trust-root root-1.json` is given.
        var pinned = true
        var message: String
        /// Root 1, as the operator holds it (`ROOT1`).
        var rootOne: @Sendable (Keys) throws -> Envelope = { try $0.rootOne() }

        var testDescription: String { label }
    }

    static let refusals: [Refusal] = [
        Refusal(
            label: "approve without a root of one's own to check against",
            serve: { keys in Served(releases: [(try TestRoots.release(serial: 2, signers: [keys.ci]), true)]) },
            arguments: ["approve", "--service", "web", "--serial", "2", "--key", "ALICE", "--yes"],
            pinned: false,
            message: "approve signs what the controller lists, so it is checked here first: give --trust-root FILE"
        ),
        Refusal(
            label: "approve a payload only the attacker's key signed",
            serve: { keys in Served(releases: [(try TestRoots.release(serial: 2, signers: [keys.attacker]), true)]) },
            arguments: ["approve", "--service", "web", "--serial", "2", "--key", "ALICE", "--yes"],
            message: "serial 2 of web carries no valid signature by another release key of trust root version 1"
        ),
        Refusal(
            label: "approve a payload signed by the approver's own key alone (the second person would be the first)",
            serve: { keys in Served(releases: [(try TestRoots.release(serial: 2, signers: [keys.alice]), true)]) },
            arguments: ["approve", "--service", "web", "--serial", "2", "--key", "ALICE", "--yes"],
            message: "serial 2 of web carries no valid signature by another release key of trust root version 1"
        ),
        Refusal(
            label: "approve a payload whose signature names CI's key and does not verify",
            serve: { keys in
                var envelope = try TestRoots.release(serial: 2, signers: [keys.attacker])
                envelope.signatures = [Envelope.Signature(keyid: keys.ci.publicKey.keyID, sig: envelope.signatures[0].sig)]
                return Served(releases: [(envelope, true)])
            },
            arguments: ["approve", "--service", "web", "--serial", "2", "--key", "ALICE", "--yes"],
            message: "serial 2 of web carries no valid signature by another release key of trust root version 1"
        ),
        Refusal(
            label: "roll back to a payload only the attacker's key signed",
            serve: { keys in
                Served(releases: [
                    (try TestRoots.release(serial: 2, signers: [keys.ci, keys.alice]), false),
                    (try TestRoots.release(serial: 1, signers: [keys.attacker]), false),
                ])
            },
            arguments: ["rollback", "--service", "web", "--to-serial", "1", "--key", "CI"],
            message: "serial 1 (version 1.0.1) of web is not signed by the release keys of trust root version 1"
        ),
        Refusal(
            label: "roll back to a payload CI alone signed, under a release threshold of 2",
            serve: { keys in
                Served(releases: [
                    (try TestRoots.release(serial: 2, signers: [keys.ci, keys.alice]), false),
                    (try TestRoots.release(serial: 1, signers: [keys.ci]), false),
                ])
            },
            arguments: ["rollback", "--service", "web", "--to-serial", "1", "--key", "CI"],
            message: "1 distinct trusted key(s) signed, 2 required"
        ),
        Refusal(
            label: "roll back to a release only a key the newest root dropped signed, without --allow-earlier-keys",
            serve: { keys in
                let two = try TestRoots.root(version: 2, rootKeys: [keys.root], releaseKeys: [keys.next], signers: [keys.root])
                return Served(
                    releases: [
                        (try TestRoots.release(serial: 2, signers: [keys.next]), false),
                        (try TestRoots.release(serial: 1, signers: [keys.ci, keys.alice]), false),
                    ],
                    roots: [(2, two)]
                )
            },
            arguments: ["rollback", "--service", "web", "--to-serial", "1", "--key", "ALICE"],
            message: "release key(s) of trust root version 1 that the newest root (version 2) no longer counts"
        ),
        Refusal(
            label: "roll back to a validly signed release of another service, listed under this one",
            serve: { keys in
                Served(releases: [
                    (try TestRoots.release(serial: 2, signers: [keys.ci, keys.alice]), false),
                    (try TestRoots.release(service: "api", serial: 1, signers: [keys.ci, keys.alice]), false),
                ])
            },
            arguments: ["rollback", "--service", "web", "--to-serial", "1", "--key", "CI"],
            message: "the controller listed a release of service api among those of web"
        ),
        Refusal(
            label: "roll back with a chain whose root 2 the root keys did not sign",
            serve: { keys in
                let two = try TestRoots.root(version: 2, rootKeys: [keys.attacker], releaseKeys: [keys.attacker], signers: [keys.attacker])
                return Served(
                    releases: [
                        (try TestRoots.release(serial: 2, signers: [keys.attacker]), false),
                        (try TestRoots.release(serial: 1, signers: [keys.attacker]), false),
                    ],
                    roots: [(2, two)]
                )
            },
            arguments: ["rollback", "--service", "web", "--to-serial", "1", "--key", "CI"],
            message: "the controller's trust root version 2 does not follow from the root you trust (version 1)"
        ),
        Refusal(
            label: "rotate from a root 2 with the attacker's release key, which the root keys did not sign",
            serve: { keys in
                let two = try TestRoots.root(
                    version: 2,
                    rootKeys: [keys.root],
                    releaseKeys: [keys.ci, keys.alice, keys.attacker],
                    releaseThreshold: 1,
                    signers: [keys.attacker]
                )
                return Served(roots: [(2, two)])
            },
            arguments: ["root", "rotate", "--remove-release-key", "CI_PUB", "--release-threshold", "1", "--out", "root-3.json"],
            message: "the controller's trust root version 2 does not follow from the root you trust (version 1)"
        ),
        Refusal(
            label: "rotate from a chain that skips a version",
            serve: { keys in
                let three = try TestRoots.root(version: 3, rootKeys: [keys.root], releaseKeys: [keys.ci], signers: [keys.root])
                return Served(roots: [(3, three)])
            },
            arguments: ["root", "rotate", "--remove-release-key", "CI_PUB", "--release-threshold", "1", "--out", "root-3.json"],
            message: "root version 3 skips versions"
        ),
        Refusal(
            label: "roll back to a release from before the threshold was raised, without --allow-earlier-keys",
            serve: { keys in
                let two = try TestRoots.root(
                    version: 2,
                    rootKeys: [keys.root],
                    releaseKeys: [keys.ci, keys.alice],
                    releaseThreshold: 2,
                    signers: [keys.root]
                )
                return Served(
                    releases: [
                        (try TestRoots.release(serial: 2, signers: [keys.ci, keys.alice]), false),
                        (try TestRoots.release(serial: 1, signers: [keys.ci]), false),
                    ],
                    roots: [(2, two)]
                )
            },
            arguments: ["rollback", "--service", "web", "--to-serial", "1", "--key", "CI"],
            message: "1 of the 2 release keys trust root version 2 now requires (version 1 required 1)",
            rootOne: { keys in try TestRoots.root(version: 1, rootKeys: [keys.root], releaseKeys: [keys.ci, keys.alice], signers: [keys.root]) }
        ),
        Refusal(
            label: "approve under a newest root that has expired (a chain the controller may hold back)",
            serve: { keys in
                let two = try TestRoots.root(
                    version: 2,
                    expiresAt: Date().addingTimeInterval(-60),
                    rootKeys: [keys.root],
                    releaseKeys: [keys.ci, keys.alice],
                    releaseThreshold: 2,
                    signers: [keys.root]
                )
                return Served(releases: [(try TestRoots.release(serial: 2, signers: [keys.ci]), true)], roots: [(2, two)])
            },
            arguments: ["approve", "--service", "web", "--serial", "2", "--key", "ALICE", "--yes"],
            message: "trust root version 2, the newest the controller's chain verifiably reaches, expired at"
        ),
        Refusal(
            label: "approve with --trusted-key flags that are not the controller's (a forgotten --threshold)",
            serve: { keys in
                Served(
                    releases: [(try TestRoots.release(serial: 2, signers: [keys.ci]), true)],
                    pinned: .object([
                        "fromTrustedKeys": .bool(true),
                        "roles": .object([
                            "release": .object([
                                "keyIds": .array([.string(keys.ci.publicKey.keyID), .string(keys.alice.publicKey.keyID)]),
                                "threshold": .integer(2),
                            ])
                        ]),
                    ])
                )
            },
            arguments: [
                "approve", "--service", "web", "--serial", "2", "--key", "ALICE", "--yes", "--trusted-key", "CI_PUB", "--trusted-key", "ALICE_PUB",
            ],
            pinned: false,
            message: "the --trusted-key files and --threshold given here make 1 of ["
        ),
        Refusal(
            label: "rotate without a root of one's own to check against",
            serve: { _ in Served() },
            arguments: ["root", "rotate", "--remove-release-key", "CI_PUB", "--release-threshold", "1", "--out", "root-3.json"],
            pinned: false,
            message: "root rotate signs what the controller lists, so it is checked here first"
        ),
    ]

    @Test(arguments: refusals)
    func refused(_ refusal: Refusal) async throws {
        let keys = try Keys.make()
        try await TestPaths.withTemporaryDirectory("operator-trust") { directory in
            let files = try Self.writeKeys(keys, rootOne: try refusal.rootOne(keys), to: directory)
            try await TestFileServer.with { controller in
                let served = try refusal.serve(keys)
                Self.serve(served, on: controller)
                var arguments = refusal.arguments.map { files[$0] ?? $0 }
                arguments += ["--controller", controller.baseURL, "--token", "operator-token"]
                if refusal.pinned { arguments += ["--trust-root", files["ROOT1"] ?? ""] }
                let result = try await Self.cli(arguments, in: directory)
                #expect(result.status != 0, "\(result.stdout)")
                #expect(result.stderr.contains(refusal.message), "\(result.stderr)")
                if refusal.pinned || refusal.arguments.contains("--trusted-key") {
                    #expect(result.stderr.contains("nothing signed"), "\(result.stderr)")
                }
                #expect(controller.requests.allSatisfy { $0.method != "POST" }, "nothing was sent: \(controller.requests.map(\.path))")
                #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("root-3.json").path), "no root written")
                #expect(!result.stdout.contains("approved") && !result.stdout.contains("rolled back"), "\(result.stdout)")
            }
        }
    }

    /// The key files (`CI`, `ALICE`, `CI_PUB`, `ALICE_PUB`) and the operator's root 1 (`ROOT1`), by placeholder.
    private static func writeKeys(_ keys: Keys, rootOne: Envelope, to directory: URL) throws -> [String: String] {
        var files: [String: String] = [:]
        for (name, key) in [("CI", keys.ci), ("ALICE", keys.alice)] {
            let path = directory.appendingPathComponent("\(name.lowercased()).key").path
            try KeyFile.create(path, contents: try key.pemRepresentation(), mode: 0o600)
            files[name] = path
        }
        for (name, key) in [("CI_PUB", keys.ci), ("ALICE_PUB", keys.alice)] {
            let pub = directory.appendingPathComponent("\(name.lowercased()).pem").path
            try KeyFile.create(pub, contents: try key.publicKey.pemRepresentation(), mode: 0o644)
            files[name] = pub
        }
        let root = directory.appendingPathComponent("root-1.json").path
        try Data(rootOne.encoded()).write(to: URL(fileURLWithPath: root))
        files["ROOT1"] = root
        return files
    }

    private static func serve(_ served: Served, on controller: TestFileServer) {
        let releases = served.releases.map { entry -> JSONValue in
            let release = try? Release.decode(entry.envelope.payload)
            return .object([
                "serial": .integer(release?.serial ?? 0), "version": .string(release?.version ?? ""),
                "awaitingApproval": .bool(entry.awaitingApproval), "envelope": entry.envelope.json,
                "signedBy": .array([.string("a-key-the-controller-names")]), "signaturesRequired": .integer(2),
            ])
        }
        controller.publish(Array(JSONValue.object(["releases": .array(releases)]).encoded()), at: "/v1/services/web/releases")
        let listing = served.roots.map { JSONValue.object(["version": .integer($0.version)]) }
        controller.publish(Array(JSONValue.object(["roots": .array(listing), "pinned": served.pinned]).encoded()), at: "/v1/roots")
        for (version, envelope) in served.roots {
            controller.publish(Array(envelope.json.encoded()), at: "/v1/roots/\(version)")
        }
    }

    private static func cli(_ arguments: [String], in directory: URL) async throws -> (status: Int32?, stdout: String, stderr: String) {
        let result = try await CommandRunner.run(
            CommandRunner.Request(
                executable: TestPaths.executable("ferry-controller"),
                arguments: arguments,
                environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": directory.path],
                workingDirectory: directory.path,
                timeout: .seconds(60)
            )
        )
        let status: Int32? = if case .exited(let code) = result.termination { code } else { nil }
        return (status, String(decoding: result.standardOutput, as: UTF8.self), String(decoding: result.standardError, as: UTF8.self))
    }
}
