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
            here. --to-version picks the newest release with that version. Looks at the newest 500 releases. The \
            chosen release is checked here before it is re-signed: the controller's chain of trust roots from \
            --trust-root (or --trusted-key), and the release's own signatures against the newest root's release keys; \
            a release only an earlier root's keys signed (a key rotated out since) needs --allow-earlier-keys.
            """
    )

    @OptionGroup var controller: ControllerOptions
    @OptionGroup var signing: SigningKeyOptions
    @OptionGroup var trust: OperatorTrustOptions

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

    @Flag(
        name: .long,
        help: "Re-sign a release only an earlier trust root accepted (a key rotated out or revoked since, or a threshold raised)."
    )
    var allowEarlierKeys = false

    func validate() throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) must match ^[a-z0-9][a-z0-9-]{0,62}$") }
        guard (toSerial == nil) != (toVersion == nil) else { throw ValidationError("give exactly one of --to-serial N and --to-version V") }
        _ = try ExpiryText.parse(expiresIn)
    }

    func run() async throws {
        let client = try controller.client()
        let keys = try signing.keys()
        let expiry = try ExpiryText.parse(expiresIn)
        let publisher = ReleasePublisher(client: client)
        let listing = try await publisher.releases(of: service)
        let entries = try listing.map(Self.release(from:))
        let releases = entries.map(\.release)
        guard let latest = releases.first else { throw CLIError("service \(service) has no releases") }
        let chosen: (envelope: Envelope, release: Release)?
        if let toSerial {
            chosen = entries.first { $0.release.serial == toSerial }
        } else {
            chosen = entries.first { $0.release.version == toVersion }
        }
        guard let chosen else {
            let wanted = toSerial.map { "serial \($0)" } ?? "version \(toVersion ?? "")"
            let known = releases.prefix(10).map { "\($0.serial) (\($0.version))" }.joined(separator: ", ")
            throw CLIError("service \(service) has no release with \(wanted) among its newest \(releases.count); newest: \(known)")
        }
        let target = try await verified(chosen.envelope, client: client)
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

    /// The release inside one listing entry's envelope, with the envelope. Not verified: only the release chosen is,
    /// by `verified(_:client:)`, before it is re-signed.
    static func release(from entry: JSONValue) throws -> (envelope: Envelope, release: Release) {
        guard case .object(let fields) = entry, let envelopeJSON = fields["envelope"] else {
            throw CLIError("the controller listed a release without its envelope")
        }
        do {
            let envelope = try Envelope(json: envelopeJSON, path: "envelope")
            return (envelope, try Release.decode(envelope.payload))
        } catch {
            throw CLIError("the controller listed an unreadable release: \(error)")
        }
    }

    /// The release in `envelope` once this machine has checked it: signed by a threshold of the release keys of the
    /// newest root of the controller's chain, followed from the operator's own root (`OperatorTrustOptions`); or of an
    /// earlier root of that chain with `--allow-earlier-keys`. Re-signing what the controller lists unchecked let a
    /// controller host taken over have an operator's key sign its own payload, named as the version to go back to.
    private func verified(_ envelope: Envelope, client: OperatorClient) async throws -> Release {
        let roots = try await trust.chain(for: "rollback", client: client)
        guard let newest = roots.last else { throw CLIError("no trust root to check against; nothing signed") }
        let release = try? Release.decode(envelope.payload)
        let what = release.map { "serial \($0.serial) (version \($0.version)) of \(service)" } ?? "the release chosen"
        let payload: VerifiedPayload
        do {
            payload = try newest.verifyRelease(envelope)
        } catch {
            let newestError = error
            guard let earlier = roots.dropLast().reversed().first(where: { (try? $0.verifyRelease(envelope)) != nil }) else {
                throw CLIError(
                    "\(what) is not signed by the release keys of trust root version \(newest.version) (checked here from your root, "
                        + "version \(roots[0].version)), nor of any root between: \(newestError); nothing signed"
                )
            }
            let signerIDs = earlier.releaseSigners(of: envelope)
            let signers = signerIDs.map { String($0.prefix(12)) }.joined(separator: ", ")
            guard allowEarlierKeys else {
                let newestKeys = Set(newest.root.releaseRole.keyIDs)
                // The same keys, a threshold raised since (the two-person rule brought in): not a key that left.
                if signerIDs.allSatisfy(newestKeys.contains) {
                    throw CLIError(
                        "\(what) is signed by \(signers): \(signerIDs.count) of the \(newest.root.releaseRole.threshold) release keys trust root "
                            + "version \(newest.version) now requires (version \(earlier.version) required \(earlier.root.releaseRole.threshold)): "
                            + "re-signing it vouches for what fewer keys signed than the fleet now asks. Pass --allow-earlier-keys if you mean it; "
                            + "nothing signed"
                    )
                }
                throw CLIError(
                    "\(what) is signed by \(signers), release key(s) of trust root version \(earlier.version) that the newest root (version "
                        + "\(newest.version)) no longer counts (rotated out, or revoked): re-signing it vouches for what only those keys "
                        + "signed. Pass --allow-earlier-keys if you mean it; nothing signed"
                )
            }
            payload = try earlier.verifyRelease(envelope)
        }
        let checked: Release
        do {
            checked = try Release.decode(payload.payload)
        } catch {
            throw CLIError("\(what) is unreadable: \(error)")
        }
        // A release of another service, validly signed, listed under this one.
        guard checked.service == service else {
            throw CLIError("the controller listed a release of service \(checked.service) among those of \(service); nothing signed")
        }
        return checked
    }
}
