import ArgumentParser
import Foundation
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// `ferry-controller approve --service S --serial N --key me.key`: the second person of the two-person rule.
struct ApproveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Approve a release awaiting approval: show its plan per agent, co-sign it here, send the signature.",
        discussion: """
            With a release threshold of 2 (or more) in the trust root, a release published with fewer signatures is \
            stored but reaches no agent. `approve` fetches it, shows what it would change on each agent (env names \
            only), asks for confirmation (--yes skips it), signs the very payload already signed with --key on this \
            machine, and sends only the signature. Once enough distinct release keys signed, the rollout starts. \
            `ferry-controller status` lists releases awaiting approval and the keys that signed them. Before anything \
            is signed, the controller's chain of trust roots is checked from --trust-root (or --trusted-key), and the \
            release must carry a valid signature by another release key of the newest root: a controller host taken \
            over cannot collect signatures for a payload of its own.
            """
    )

    @OptionGroup var controller: ControllerOptions
    @OptionGroup var signing: SigningKeyOptions
    @OptionGroup var trust: OperatorTrustOptions

    @Option(name: .long, help: "The service of the release.")
    var service: String

    @Option(name: .long, help: "The serial of the release.")
    var serial: Int64

    @Flag(name: .long, help: "Sign without asking (scripts; the plan is still printed).")
    var yes = false

    @Flag(name: .long, help: "Print the controller's answer (the release summary and its rollout) as JSON; needs --yes.")
    var json = false

    func validate() throws {
        guard !json || yes else {
            throw ValidationError("--json needs --yes: standard output carries the JSON, so there is no prompt; review with `plan` first")
        }
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) must match ^[a-z0-9][a-z0-9-]{0,62}$") }
        guard (1...Release.maximumSerial).contains(serial) else { throw ValidationError("--serial must be from 1 to 2^53") }
    }

    func run() async throws {
        let keys = try signing.keys()
        let client = try controller.client()
        let listing = try await ReleasePublisher(client: client).releases(of: service)
        guard
            let entry = listing.first(where: {
                if case .integer(let value)? = $0.object?["serial"] { return value == serial }
                return false
            })
        else {
            throw CLIError("service \(service) has no release with serial \(serial) among its newest \(listing.count)")
        }
        guard entry.object?["awaitingApproval"] == .bool(true) else {
            throw CLIError("serial \(serial) of \(service) is not awaiting approval: it already has the signatures it needs")
        }
        guard case .object(let fields) = entry, let envelopeJSON = fields["envelope"] else {
            throw CLIError("the controller listed the release without its envelope")
        }
        let envelope: Envelope
        let release: Release
        do {
            envelope = try Envelope(json: envelopeJSON, path: "envelope")
            release = try Release.decode(envelope.payload)
        } catch {
            throw CLIError("the controller listed an unreadable release: \(error)")
        }
        // What is signed is what the listing carries; check it is the release asked for before signing anything.
        guard envelope.payloadType == Release.payloadType, release.service == service, release.serial == serial else {
            throw CLIError("the controller listed a different release than serial \(serial) of \(service); nothing signed")
        }
        // Agents refuse an expired release and the controller takes no signature for it: said before the plan is
        // reviewed, not after the approver confirmed and signed.
        guard release.expiresAt > Date() else {
            throw CLIError(
                "serial \(serial) of \(service) expired at \(Timestamp.format(release.expiresAt)) while it awaited approval: agents refuse it; "
                    + "publish it again (with a later --expires-in) and approve that; nothing signed"
            )
        }
        // Checked here, not taken from the listing's `signedBy`: the approver is the second person only if a first one,
        // holding another release key of the root this machine trusts, signed these very bytes.
        let roots = try await trust.chain(for: "approve", client: client)
        guard let newest = roots.last else { throw CLIError("no trust root to check against; nothing signed") }
        let own = Set(keys.map(\.publicKey.keyID))
        let others = newest.releaseSigners(of: envelope).filter { !own.contains($0) }
        guard !others.isEmpty else {
            let listed = FleetDocument.array(fields["signedBy"]).map { String(FleetDocument.text($0).prefix(12)) }
            throw CLIError(
                "serial \(serial) of \(service) carries no valid signature by another release key of trust root version \(newest.version) "
                    + "(the controller lists it as signed by \(listed.isEmpty ? "no key" : listed.joined(separator: ", "))): an approval "
                    + "co-signs what someone else signed, and nothing here verifies that anyone did; nothing signed"
            )
        }
        if !json {
            let signers = others.map { String($0.prefix(12)) }
            Console.print(
                "serial \(serial) of \(service), version \(release.version), published by \(FleetDocument.text(fields["publishedBy"])) at "
                    + "\(FleetDocument.text(fields["createdAt"])), expires \(Timestamp.format(release.expiresAt)): \(signers.count) of "
                    + "\(newest.root.releaseRole.threshold) signatures (signed by \(signers.joined(separator: ", ")), verified here against trust "
                    + "root version \(newest.version))"
            )
            try await PlanCommand.printPlan(for: release, client: client)
            Console.print("")
        }
        if !yes { try confirm(keys: keys.count) }

        let message = Envelope.pae(payloadType: envelope.payloadType, payload: envelope.payload)
        var signatures: [JSONValue] = []
        for key in keys {
            let signature = Envelope.Signature(keyid: key.publicKey.keyID, sig: try key.signature(for: message))
            signatures.append(Envelope.json(of: signature))
        }
        let body = JSONValue.object(["signatures": .array(signatures)]).encoded()
        let answer = try await client.postJSON("/v1/services/\(service)/releases/\(serial)/signatures", body: body, expecting: [200])
        if json {
            Console.print(String(decoding: answer.encoded(), as: UTF8.self))
            return
        }
        let result = answer.object ?? [:]
        let count = FleetDocument.array(result["signedBy"]).count
        let required = FleetDocument.text(result["signaturesRequired"])
        if result["awaitingApproval"] == .bool(true) {
            Console.print("signed: serial \(serial) of \(service) has \(count) of \(required) signatures; still awaiting approval")
        } else {
            let state = FleetDocument.text(result["rollout"]?.object?["state"])
            Console.print("approved: serial \(serial) of \(service) has \(count) of \(required) signatures; rollout \(state)")
        }
    }

    /// Asks on the terminal; without one, `--yes` is required (a script must say it means it).
    private func confirm(keys: Int) throws {
        guard isatty(STDIN_FILENO) == 1 else {
            throw CLIError("not signing without confirmation: standard input is not a terminal; review the plan above and pass --yes")
        }
        FileHandle.standardOutput.write(Data("sign serial \(serial) of \(service) with \(keys) key(s)? [y/N] ".utf8))
        guard let answer = readLine(strippingNewline: true)?.lowercased(), answer == "y" || answer == "yes" else {
            throw CLIError("not approved; nothing was signed")
        }
    }
}
