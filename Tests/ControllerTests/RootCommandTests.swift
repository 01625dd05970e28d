import ArgumentParser
import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// `ferry-controller root init|sign|show|rotate` and `approve`: parsed (a table of refused invocations), and the offline
/// part of the key ceremony run with the built binary — no controller, keys only on this machine.
@Suite("Root and approve commands")
struct RootCommandTests {
    struct Refused: Sendable, CustomTestStringConvertible {
        let arguments: [String]
        let message: String
        var testDescription: String { arguments.joined(separator: " ") }
    }

    static let refused: [Refused] = [
        Refused(arguments: ["root", "init", "--release-key", "ci.pub", "--out", "r.json"], message: "at least one --root-key is required"),
        Refused(arguments: ["root", "init", "--root-key", "a.pub", "--out", "r.json"], message: "at least one --release-key is required"),
        Refused(
            arguments: ["root", "init", "--root-key", "a.pub", "--release-key", "c.pub", "--version", "0", "--out", "r.json"],
            message: "--version must be from 1 to 2^53"
        ),
        Refused(
            arguments: ["root", "init", "--root-key", "a.pub", "--release-key", "c.pub", "--expires", "forever", "--out", "r.json"],
            message: "expected a whole number with d, h or m"
        ),
        Refused(arguments: ["root", "sign", "r.json"], message: "at least one --key is required"),
        Refused(arguments: ["root", "rotate", "--expires", "11y", "--out", "r.json"], message: "expected a whole number with d, h or m"),
        Refused(
            arguments: ["root", "init", "--root-key", "a.pub", "--release-key", "c.pub", "--out", "-", "--json"],
            message: "--json and --out - both write to standard output"
        ),
        Refused(arguments: ["root", "sign", "--key", "a.key", "--out", "-", "--json", "r.json"], message: "both write to standard output"),
        // The root read from standard input is written back there: with --json that was two documents on one stream.
        Refused(arguments: ["root", "sign", "--key", "a.key", "--json", "-"], message: "both write to standard output"),
        Refused(arguments: ["approve", "--service", "api", "--serial", "2", "--json"], message: "--json needs --yes"),
        Refused(arguments: ["approve", "--service", "API", "--serial", "2"], message: "--service API must match"),
        Refused(arguments: ["approve", "--service", "api", "--serial", "0"], message: "--serial must be from 1 to 2^53"),
    ]

    @Test(arguments: refused)
    func refusedInvocations(_ testCase: Refused) {
        do {
            _ = try ControllerCommand.parseAsRoot(testCase.arguments)
            Issue.record("accepted \(testCase.arguments)")
        } catch {
            #expect(ControllerCommand.message(for: error).contains(testCase.message), "\(ControllerCommand.message(for: error))")
        }
    }

    struct Output {
        var status: ProcessTermination
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], in directory: URL) async throws -> Output {
        let result = try await CommandRunner.run(
            CommandRunner.Request(
                executable: TestPaths.executable("ferry-controller"),
                arguments: arguments,
                environment: ["PATH": "/usr/bin:/bin", "HOME": directory.path],
                workingDirectory: directory.path,
                timeout: .seconds(60)
            )
        )
        return Output(
            status: result.termination,
            stdout: String(decoding: result.standardOutput, as: UTF8.self),
            stderr: String(decoding: result.standardError, as: UTF8.self)
        )
    }

    /// A public key that cannot be written (here a dangling link where it goes, which the existence check does not see)
    /// leaves no private key behind: a retry would otherwise refuse to overwrite it, and the pair would stay half made.
    @Test func keygenLeavesNoHalfPair() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-keygen-half") { directory in
            try FileManager.default.createSymbolicLink(
                atPath: directory.appendingPathComponent("ops.pub").path,
                withDestinationPath: "/nonexistent/ops.pub"
            )
            let failed = try await Self.run(["keygen", "--out", "ops"], in: directory)
            #expect(failed.status == .exited(1), "\(failed.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("ops.key").path))
            try FileManager.default.removeItem(at: directory.appendingPathComponent("ops.pub"))
            #expect(try await Self.run(["keygen", "--out", "ops"], in: directory).status == .exited(0))
        }
    }

    /// `token create` run from the wrong directory without `--data-dir` makes no new `./ferry-data`: the token it
    /// printed was one the controller had never heard of. Named explicitly, a new database is still made (the first
    /// token of a new controller is created before it is served).
    @Test func tokenCreateMakesADatabaseOnlyWhereOneIsNamed() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-token-where") { directory in
            let stray = try await Self.run(["token", "create", "--role", "operator"], in: directory)
            #expect(stray.status == .exited(1), "\(stray.stderr)")
            #expect(stray.stderr.contains("no controller database at ./ferry-data/ferry.sqlite"), "\(stray.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("ferry-data").path))
            let named = try await Self.run(["token", "create", "--data-dir", "data", "--role", "operator"], in: directory)
            #expect(named.status == .exited(0), "\(named.stderr)")
            #expect(named.stdout.hasPrefix("fyt_"), "\(named.stdout)")
            // The default directory once it holds a database (serve's default too) needs no flag.
            try FileManager.default.moveItem(at: directory.appendingPathComponent("data"), to: directory.appendingPathComponent("ferry-data"))
            #expect(try await Self.run(["token", "create", "--role", "viewer"], in: directory).status == .exited(0))
        }
    }

    @Test("init → sign → show → rotate → sign, offline, with the built binary")
    func offlineCeremony() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-root-cli") { directory in
            for name in ["alice", "bob", "carol", "ci", "ci-new"] {
                #expect(try await Self.run(["keygen", "--out", name], in: directory).status == .exited(0))
            }
            let initOutput = try await Self.run(
                [
                    "root", "init", "--root-key", "alice.pub", "--root-key", "bob.pub", "--root-key", "carol.pub", "--root-threshold", "2",
                    "--release-key", "ci.pub", "--expires", "30d", "--out", "root-1.json",
                ],
                in: directory
            )
            #expect(initOutput.status == .exited(0), "\(initOutput.stderr)")
            #expect(initOutput.stdout.contains("root role: 2 of 3 key(s)"), "\(initOutput.stdout)")
            let again = try await Self.run(
                ["root", "init", "--root-key", "alice.pub", "--release-key", "ci.pub", "--out", "root-1.json"],
                in: directory
            )
            #expect(again.status == .exited(1) && again.stderr.contains("already exists"), "\(again.stderr)")
            let impossible = try await Self.run(
                ["root", "init", "--root-key", "alice.pub", "--root-threshold", "2", "--release-key", "ci.pub", "--out", "bad.json"],
                in: directory
            )
            #expect(impossible.stderr.contains("roles.root.threshold: 2 is more than the 1 key(s) of the role"), "\(impossible.stderr)")

            let first = try await Self.run(["root", "sign", "--key", "alice.key", "root-1.json"], in: directory)
            #expect(first.stdout.contains("1 of 2 required signature(s) by its own root keys — not enough yet"), "\(first.stdout)")
            // On its way to Bob the file gains a signature that names Bob's key and does not verify: Bob's signing replaces
            // it (it was taken for his own, "already signed", and the root never reached its threshold).
            let rootFile = directory.appendingPathComponent("root-1.json")
            var passedOn = try Envelope.decode(Array(try Data(contentsOf: rootFile)), requiringSignatures: false)
            let bob = try PublicKey(contentsOf: directory.appendingPathComponent("bob.pub").path).keyID
            passedOn.signatures.append(Envelope.Signature(keyid: bob, sig: [UInt8](repeating: 7, count: 64)))
            try passedOn.encoded().write(to: rootFile)
            let twice = try await Self.run(["root", "sign", "--key", "alice.key", "--key", "bob.key", "root-1.json"], in: directory)
            #expect(twice.stdout.contains("already signed this root; not added again"), "\(twice.stdout)")
            #expect(twice.stdout.contains("a signature naming key \(bob.prefix(12)) does not verify; replaced by this key's"), "\(twice.stdout)")
            #expect(twice.stdout.contains("2 of 2 required signature(s) by its own root keys\n"), "\(twice.stdout)")
            let root1 = try TrustedRoot.pinning(try Envelope.decode(Array(try Data(contentsOf: directory.appendingPathComponent("root-1.json")))))
            let ci = try PublicKey(contentsOf: directory.appendingPathComponent("ci.pub").path).keyID
            #expect(root1.version == 1 && root1.root.releaseRole.keyIDs == [ci])

            let shown = try await Self.run(["root", "show", "root-1.json"], in: directory)
            #expect(shown.stdout.contains("trust root version 1, expires"), "\(shown.stdout)")
            #expect(shown.stdout.contains("signatures: 2"), "\(shown.stdout)")

            // Revoke CI's key, add the new one, retire Carol's root key.
            let rotated = try await Self.run(
                [
                    "root", "rotate", "--from", "root-1.json", "--remove-release-key", "ci.pub", "--add-release-key", "ci-new.pub",
                    "--remove-root-key", "carol.pub", "--out", "root-2.json",
                ],
                in: directory
            )
            #expect(rotated.status == .exited(0), "\(rotated.stderr)")
            #expect(rotated.stdout.contains("trust root version 2"), "\(rotated.stdout)")
            #expect(rotated.stdout.contains("it needs 2 signature(s) by root keys of version 1"), "\(rotated.stdout)")
            let unknownKey = try await Self.run(
                ["root", "rotate", "--from", "root-1.json", "--remove-release-key", "0123456789", "--out", "x.json"],
                in: directory
            )
            #expect(unknownKey.stderr.contains("neither a public key file nor the id"), "\(unknownKey.stderr)")

            _ = try await Self.run(["root", "sign", "--key", "alice.key", "--key", "bob.key", "root-2.json"], in: directory)
            // A signed root is not overwritten by signing another file into it.
            let signedRoot2 = try Data(contentsOf: directory.appendingPathComponent("root-2.json"))
            let over = try await Self.run(["root", "sign", "--key", "alice.key", "--out", "root-2.json", "root-1.json"], in: directory)
            #expect(over.status == .exited(1) && over.stderr.contains("root-2.json already exists; refusing to overwrite it"), "\(over.stderr)")
            #expect(try Data(contentsOf: directory.appendingPathComponent("root-2.json")) == signedRoot2)
            let root2 = try Envelope.decode(Array(try Data(contentsOf: directory.appendingPathComponent("root-2.json"))))
            let accepted = try root1.accepting(root2)
            #expect(accepted.version == 2)
            #expect(accepted.root.rootRole.keyIDs.count == 2 && accepted.root.rootRole.threshold == 2)
            let ciNew = try PublicKey(contentsOf: directory.appendingPathComponent("ci-new.pub").path).keyID
            #expect(accepted.root.releaseRole.keyIDs == [ciNew])
        }
    }

    /// `--out -` (and a root read from standard input) puts the root on standard output and nothing else: the file a
    /// shell redirect makes is one `root publish` and the next key holder take. The notes used to follow the root on
    /// the same stream, so the file was refused and the key holder had to sign again.
    @Test("root init, sign and rotate with --out -: standard output is the root alone, the notes go to standard error")
    func rootsWrittenToStandardOutputAreRootsAlone() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-root-pipe") { directory in
            for name in ["alice", "bob", "ci"] {
                #expect(try await Self.run(["keygen", "--out", name], in: directory).status == .exited(0))
            }
            func rootOnStandardOutput(_ output: Output, _ what: String) throws -> Envelope {
                #expect(output.status == .exited(0), "\(what): \(output.stderr)")
                return try Envelope.decode(Array(output.stdout.utf8), requiringSignatures: false)
            }
            let made = try await Self.run(
                [
                    "root", "init", "--root-key", "alice.pub", "--root-key", "bob.pub", "--root-threshold", "2", "--release-key", "ci.pub", "--out",
                    "-",
                ],
                in: directory
            )
            try Data(Array(try rootOnStandardOutput(made, "init").encoded())).write(to: directory.appendingPathComponent("root-1.json"))
            let signed = try await Self.run(["root", "sign", "--key", "alice.key", "--key", "bob.key", "--out", "-", "root-1.json"], in: directory)
            let envelope = try rootOnStandardOutput(signed, "sign")
            #expect(envelope.signatures.count == 2)
            #expect(signed.stderr.contains("2 of 2 required signature(s) by its own root keys"), "\(signed.stderr)")
            #expect(signed.stderr.contains("wrote the signed root to standard output"), "\(signed.stderr)")
            let pinned = try TrustedRoot.pinning(envelope)
            try Data(Array(envelope.encoded())).write(to: directory.appendingPathComponent("root-1.json"))

            let rotated = try await Self.run(
                ["root", "rotate", "--from", "root-1.json", "--remove-root-key", "bob.pub", "--root-threshold", "1", "--out", "-"],
                in: directory
            )
            let next = try rootOnStandardOutput(rotated, "rotate")
            #expect(rotated.stderr.contains("it needs 2 signature(s) by root keys of version 1"), "\(rotated.stderr)")
            #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent("-").path) == false)
            try Data(Array(next.encoded())).write(to: directory.appendingPathComponent("root-2.json"))
            let signedNext = try await Self.run(
                ["root", "sign", "--key", "alice.key", "--key", "bob.key", "--out", "-", "root-2.json"],
                in: directory
            )
            #expect(try pinned.accepting(try rootOnStandardOutput(signedNext, "sign root 2")).version == 2)
        }
    }

    @Test("--json: init, sign, show and rotate print one JSON document each, notes go to standard error")
    func offlineJSON() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-root-json") { directory in
            var ids: [String: String] = [:]
            for name in ["alice", "bob", "ci", "ci-new"] {
                #expect(try await Self.run(["keygen", "--out", name], in: directory).status == .exited(0))
                ids[name] = try PublicKey(contentsOf: directory.appendingPathComponent("\(name).pub").path).keyID
            }
            func json(_ arguments: [String]) async throws -> JSONValue {
                let output = try await Self.run(arguments + ["--json"], in: directory)
                #expect(output.status == .exited(0), "\(arguments): \(output.stderr)")
                return try JSONValue.parse(Array(output.stdout.utf8))
            }
            let made = try await json([
                "root", "init", "--root-key", "alice.pub", "--root-key", "bob.pub", "--root-threshold", "2", "--release-key", "ci.pub",
                "--out", "root-1.json",
            ])
            #expect(made["file"]?.stringValue == "root-1.json")
            #expect(made["root"]?["version"]?.intValue == 1 && made["root"]?["expired"]?.boolValue == false)
            #expect(made["root"]?["roles"]?["root"]?["threshold"]?.intValue == 2)
            #expect(Set(made["root"]?["roles"]?["root"]?["keyIds"]?.arrayValue.compactMap(\.stringValue) ?? []) == [ids["alice"], ids["bob"]])
            #expect(made["root"]?["rootSignatures"]?.intValue == 0 && made["root"]?["rootThresholdMet"]?.boolValue == false)

            _ = try await json(["root", "sign", "--key", "alice.key", "root-1.json"])
            let again = try await Self.run(
                ["root", "sign", "--key", "alice.key", "--key", "bob.key", "--key", "ci.key", "root-1.json", "--json"],
                in: directory
            )
            #expect(again.stderr.contains("already signed this root; not added again"), "\(again.stderr)")
            #expect(again.stderr.contains("is not a root key of version 1"), "\(again.stderr)")
            let signed = try JSONValue.parse(Array(again.stdout.utf8))
            #expect(signed["alreadySigned"]?.arrayValue.map(\.stringValue) == [ids["alice"]])
            #expect(signed["added"]?.arrayValue.map(\.stringValue) == [ids["bob"], ids["ci"]])
            #expect(signed["root"]?["rootSignatures"]?.intValue == 2 && signed["root"]?["rootThresholdMet"]?.boolValue == true)
            let statuses = signed["root"]?["signatures"]?.arrayValue.map { ($0["keyid"]?.stringValue, $0["status"]?.stringValue) } ?? []
            #expect(statuses.contains { $0 == (ids["ci"], "not-root-key") } && statuses.filter { $0.1 == "root-key" }.count == 2, "\(statuses)")

            let shown = try await json(["root", "show", "root-1.json"])
            #expect(shown["root"] == signed["root"])

            let rotated = try await json([
                "root", "rotate", "--from", "root-1.json", "--remove-release-key", "ci.pub", "--add-release-key", "ci-new.pub", "--out",
                "root-2.json",
            ])
            #expect(rotated["root"]?["version"]?.intValue == 2)
            #expect(rotated["changes"]?["release"]?["added"]?.arrayValue.map(\.stringValue) == [ids["ci-new"]])
            #expect(rotated["changes"]?["release"]?["removed"]?.arrayValue.map(\.stringValue) == [ids["ci"]])
            #expect(rotated["changes"]?["root"]?["added"]?.arrayValue.isEmpty == true)
            #expect(rotated["needs"]?["previousVersion"]?.intValue == 1 && rotated["needs"]?["previousRootThreshold"]?.intValue == 2)
        }
    }
}
