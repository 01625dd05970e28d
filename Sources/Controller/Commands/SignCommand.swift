import ArgumentParser
import Foundation
import Shared

/// `ferry-controller sign --key FILE.key RELEASE.json`: validates a release and prints its envelope.
struct SignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Validate a release document and print it as a signed DSSE envelope.",
        discussion: """
            The release is checked exactly as the controller and agents check it (unknown fields, types, limits, \
            paths); any problem is reported with the field it concerns and nothing is printed on stdout. The payload \
            is re-encoded canonically (compact, sorted keys) before signing. Repeat --key to add signatures from \
            several operator keys (for agents configured with a threshold above 1).
            """
    )

    @Option(name: .long, help: ArgumentHelp("A PKCS#8 PEM Ed25519 private key. Repeat for several signatures.", valueName: "FILE.key"))
    var key: [String] = []

    @Argument(help: ArgumentHelp("The release document (JSON), or - for standard input.", valueName: "RELEASE.json"))
    var release: String

    @Flag(name: .long, help: "Accepted for symmetry with the other commands: the envelope is JSON either way.")
    var json = false

    func validate() throws {
        guard !key.isEmpty else { throw ValidationError("at least one --key is required") }
    }

    func run() throws {
        let keys = try key.map { try SigningKey(contentsOf: $0) }
        let bytes = try CLIInput.read(release, limit: Limits.releasePayloadBytes)
        let document: Release
        do {
            document = try Release.decode(bytes)
        } catch {
            throw CLIError("\(release): invalid release: \(error)")
        }
        let envelope = try Envelope.sign(payload: document.payload(), payloadType: Release.payloadType, with: keys)
        FileHandle.standardOutput.write(envelope.encoded() + Data("\n".utf8))
    }
}
