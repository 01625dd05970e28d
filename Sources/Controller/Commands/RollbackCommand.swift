import ArgumentParser
import Foundation
import Shared

/// `ferry-controller rollback`: publish an older release's content again, as a new serial.
struct RollbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback",
        abstract: "Roll a service back to an earlier release (re-signed as a new, higher serial).",
        discussion: """
            Agents never go back to a lower serial, so a rollback is a new release: the content of the chosen release \
            (artifact, apps, env, health) with the next serial, a fresh creation time and expiry, signed with --key \
            here. --to-version picks the newest release with that version. Looks at the newest 500 releases.
            """
    )

    @OptionGroup var controller: ControllerOptions
    @OptionGroup var signing: SigningKeyOptions

    @Option(name: .long, help: "The service to roll back.")
    var service: String

    @Option(name: .long, help: "Roll back to the release with this serial.")
    var toSerial: Int64?

    @Option(name: .long, help: "Roll back to the newest release with this version.")
    var toVersion: String?

    @Option(name: .long, help: ArgumentHelp("Expiry of the new release: d, h or m (default 90d).", valueName: "DURATION"))
    var expiresIn: String = "90d"

    @Flag(name: .long, help: "Print the controller's answer for the new release as JSON, with rolledBackTo {serial, version}.")
    var json = false

    func validate() throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) must match ^[a-z0-9][a-z0-9-]{0,62}$") }
        guard (toSerial == nil) != (toVersion == nil) else { throw ValidationError("give exactly one of --to-serial N and --to-version V") }
        _ = try ExpiryText.parse(expiresIn)
    }

    func run() async throws {
        let client = try controller.client()
        let keys = try signing.keyPaths().map { try SigningKey(contentsOf: $0) }
        let expiry = try ExpiryText.parse(expiresIn)
        let publisher = ReleasePublisher(client: client)
        let listing = try await publisher.releases(of: service)
        let releases = try listing.map(Self.release(from:))
        guard let latest = releases.first else { throw CLIError("service \(service) has no releases") }
        let target: Release?
        if let toSerial {
            target = releases.first { $0.serial == toSerial }
        } else {
            target = releases.first { $0.version == toVersion }
        }
        guard let target else {
            let wanted = toSerial.map { "serial \($0)" } ?? "version \(toVersion ?? "")"
            let known = releases.prefix(10).map { "\($0.serial) (\($0.version))" }.joined(separator: ", ")
            throw CLIError("service \(service) has no release with \(wanted) among its newest \(releases.count); newest: \(known)")
        }
        guard target.serial != latest.serial else {
            throw CLIError("serial \(target.serial) (version \(target.version)) is already the latest release of \(service)")
        }
        var rollback = target
        rollback.serial = latest.serial + 1
        rollback.createdAt = Date()
        rollback.expiresAt = rollback.createdAt.addingTimeInterval(Double(expiry.components.seconds))
        // Re-validate as a fresh document: the same rules as any publish.
        let release: Release
        do {
            release = try Release(json: rollback.json)
        } catch {
            throw CLIError("the rollback release would be invalid: \(error)")
        }
        let answer = try await publisher.publish(release, keys: keys)
        if json {
            var fields = answer.object ?? [:]
            fields["rolledBackTo"] = .object(["serial": .integer(target.serial), "version": .string(target.version)])
            Console.print(String(decoding: JSONValue.object(fields).encoded(), as: UTF8.self))
            return
        }
        if let note = ReleasePublisher.approvalNote(answer, service: service, serial: release.serial) {
            // Not rolled back yet: in an incident the operator must not read this as done.
            Console.print(
                "NOT rolled back yet: the rollback of service \(service) to version \(target.version) (serial \(target.serial)) is stored as "
                    + "serial \(release.serial), \(note)"
            )
            return
        }
        Console.print("rolled back service \(service) to version \(target.version) (serial \(target.serial)) as serial \(release.serial)")
    }

    /// The release inside one listing entry's envelope. Not verified here: the controller verified it when it was
    /// published, and the new signature is what agents will check.
    static func release(from entry: JSONValue) throws -> Release {
        guard case .object(let fields) = entry, let envelopeJSON = fields["envelope"] else {
            throw CLIError("the controller listed a release without its envelope")
        }
        do {
            let envelope = try Envelope(json: envelopeJSON, path: "envelope")
            return try Release.decode(envelope.payload)
        } catch {
            throw CLIError("the controller listed an unreadable release: \(error)")
        }
    }
}
