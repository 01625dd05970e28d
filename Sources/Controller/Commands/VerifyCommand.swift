import ArgumentParser
import Foundation
import Shared

/// `ferry-controller verify`: checks an envelope the way an agent does.
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify a signed release envelope against trusted public keys, as an agent would.",
        discussion: """
            Exits 0 and prints the service, serial, version and the key ids that verified; otherwise exits 1 with \
            `error: <reason>` on stderr. Signatures by keys not given with --trusted-key are ignored; the same key \
            signing twice counts once towards --threshold. Expiry is checked against --now (default: the current \
            time) with the agents' clock-skew grace of 5 minutes.
            """
    )

    @Option(name: .long, help: ArgumentHelp("A trusted SubjectPublicKeyInfo PEM public key. Repeatable.", valueName: "FILE.pub"))
    var trustedKey: [String] = []

    @Option(name: .long, help: "How many distinct trusted keys must have signed.")
    var threshold: Int = 1

    @Option(name: .long, help: ArgumentHelp("Check expiry at this RFC 3339 instant instead of now.", valueName: "RFC3339"))
    var now: String?

    @Argument(help: ArgumentHelp("The envelope (JSON), or - for standard input.", valueName: "ENVELOPE.json"))
    var envelope: String

    @Flag(name: .long, help: "Print {valid, service, serial, version, expiresAt, verifiedBy} or {valid: false, error} as JSON on stdout.")
    var json = false

    func validate() throws {
        guard !trustedKey.isEmpty else { throw ValidationError("at least one --trusted-key is required") }
        if let now, Timestamp.parse(now) == nil {
            throw ValidationError("--now \(now) is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z")
        }
    }

    func run() throws {
        do {
            let keys = try trustedKey.map { try PublicKey(contentsOf: $0) }
            let policy = try TrustPolicy(trustedKeys: keys, threshold: threshold)
            let envelope = try Envelope.decode(CLIInput.read(self.envelope, limit: Limits.envelopeBytes))
            let verified = try policy.verify(envelope, expecting: Release.payloadType)
            let release = try Release.decode(verified.payload)
            let instant = now.flatMap(Timestamp.parse) ?? Date()
            try ReleaseAdmission(now: { instant }).checkExpiry(release)
            if json {
                let document = JSONValue.object([
                    "valid": .bool(true), "service": .string(release.service), "serial": .integer(release.serial),
                    "version": .string(release.version), "expiresAt": .string(Timestamp.format(release.expiresAt)),
                    "verifiedBy": .array(verified.keyIDs.map { .string($0) }),
                ])
                Console.print(String(decoding: document.encoded(), as: UTF8.self))
                return
            }
            Console.print("service: \(release.service)")
            Console.print("serial: \(release.serial)")
            Console.print("version: \(release.version)")
            Console.print("expires: \(Timestamp.format(release.expiresAt))")
            for keyID in verified.keyIDs { Console.print("verified-by: \(keyID)") }
        } catch {
            if json {
                Console.print(String(decoding: JSONValue.object(["valid": .bool(false), "error": .string("\(error)")]).encoded(), as: UTF8.self))
            }
            Console.error("error: \(error)")
            throw ExitCode(1)
        }
    }
}
