import ArgumentParser
import Foundation
import Shared

/// `--trust-root`, or `--trusted-key` and `--threshold`: where the operator's own trust starts, for the commands that sign
/// what the controller lists (`approve`, `rollback`) or build on the root it serves (`root rotate`).
///
/// What those commands sign comes from the controller. A controller host taken over could list its own payload as a
/// release awaiting approval, or as the release to roll back to, or serve a root with its own key added: an operator who
/// signed it would hand it what the trust boundary says it cannot get (docs/security.md). So the command checks, on
/// this machine, the controller's chain of roots from a root the operator holds, and what it is about to sign against
/// the newest of them.
struct OperatorTrustOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "A trust root file of this fleet that you hold, any version (or FERRY_TRUST_ROOT): the controller's chain is checked from it.",
            valueName: "FILE"
        )
    )
    var trustRoot: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "For a fleet still trusting --trusted-key flags: one of those public keys (or FERRY_TRUSTED_KEYS, comma-separated). Repeatable.",
            valueName: "FILE.pub"
        )
    )
    var trustedKey: [String] = []

    @Option(name: .long, help: "With --trusted-key: how many of them must sign, as the controller's --threshold (or FERRY_THRESHOLD; default 1).")
    var threshold: Int?

    /// The root the operator pins: the `--trust-root` file (signed by a threshold of its own root keys), or root 1 built
    /// from the `--trusted-key` files as the controller builds it.
    ///
    /// Flags win over the environment: with `FERRY_TRUST_ROOT` exported, `--trusted-key` on the command line is what is
    /// meant (and the other way round). Only both flags, or both variables, are refused.
    func pinned(for command: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> TrustedRoot {
        let environmentKeys = (environment["FERRY_TRUSTED_KEYS"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        let environmentRoot = environment["FERRY_TRUST_ROOT"].flatMap { $0.isEmpty ? nil : $0 }
        let flagsGiven = trustRoot != nil || !trustedKey.isEmpty || threshold != nil
        let rootFile = flagsGiven ? trustRoot : environmentRoot
        let keyFiles = flagsGiven ? trustedKey : environmentKeys
        let thresholdText = flagsGiven ? nil : environment["FERRY_THRESHOLD"].flatMap { $0.isEmpty ? nil : $0 }
        if let rootFile {
            guard keyFiles.isEmpty, threshold == nil, thresholdText == nil else {
                throw ValidationError(
                    "give either \(flagsGiven ? "--trust-root or --trusted-key/--threshold" : "FERRY_TRUST_ROOT or FERRY_TRUSTED_KEYS/FERRY_THRESHOLD"), "
                        + "not both: the root names its keys and thresholds"
                )
            }
            let (envelope, _) = try RootFile.read(rootFile)
            do {
                return try TrustedRoot.pinning(envelope)
            } catch {
                throw CLIError("\(rootFile): not a trust root to check against: \(error)")
            }
        }
        guard !keyFiles.isEmpty else {
            throw ValidationError(
                "\(command) signs what the controller lists, so it is checked here first: give --trust-root FILE (a root file of this "
                    + "fleet you hold, e.g. root-1.json; or FERRY_TRUST_ROOT), or, for a fleet still trusting --trusted-key flags, "
                    + "--trusted-key FILE.pub for each of them (or FERRY_TRUSTED_KEYS)"
            )
        }
        let count: Int
        if let threshold {
            count = threshold
        } else if let thresholdText {
            guard let value = Int(thresholdText) else { throw ValidationError("FERRY_THRESHOLD=\(thresholdText.prefix(20)) is not a number") }
            count = value
        } else {
            count = 1
        }
        do {
            return try TrustedRoot.fromTrustedKeys(try keyFiles.map { try PublicKey(contentsOf: $0) }, threshold: count)
        } catch let error as RootError {
            throw ValidationError("--trusted-key/--threshold: \(error)")
        }
    }

    /// Every root from the pinned one to the controller's newest, each step verified here (TUF's rules): oldest first.
    ///
    /// A pin built from `--trusted-key` flags must be the one the controller was started with (the same keys, the same
    /// threshold): a forgotten `--threshold` made a threshold of 1 here, and `root rotate` then wrote a root 2 without
    /// the two-person rule, which the key holders signed. The newest root must not have expired: agents refuse every
    /// release under it, and a chain that stops at an old root may be one the controller holds back.
    /// - Throws: `CLIError` when a step of the controller's chain does not follow from the pin (nothing is signed then).
    func chain(for command: String, client: OperatorClient) async throws -> [TrustedRoot] {
        let pin = try pinned(for: command)
        let listing = try await client.getJSON("/v1/roots")
        if pin.isFromTrustedKeys { try Self.requireSameFlags(pin, as: listing.object?["pinned"]) }
        var versions: [Int64] = []
        for entry in FleetDocument.array(listing.object?["roots"]) {
            if case .integer(let version)? = entry.object?["version"], version > pin.version { versions.append(version) }
        }
        var roots = [pin]
        for version in versions.sorted() {
            let envelopeJSON = try await client.getJSON("/v1/roots/\(version)")
            guard let current = roots.last else { break }
            do {
                let envelope = try Envelope(json: envelopeJSON, path: "root")
                roots.append(try current.accepting(envelope))
            } catch {
                throw CLIError(
                    "the controller's trust root version \(version) does not follow from the root you trust (version \(pin.version)): "
                        + "\(error); nothing signed. If your root file is older than the controller's chain reaches back, give a newer one"
                )
            }
        }
        if let newest = roots.last, newest.root.isExpired(at: Date()) {
            throw CLIError(
                "trust root version \(newest.version), the newest the controller's chain verifiably reaches, expired at "
                    + "\(Timestamp.format(newest.root.expiresAt)): agents refuse every release under it. If a newer root was published, the "
                    + "controller does not list it; otherwise rotate the root first; nothing signed"
            )
        }
        return roots
    }

    /// Refuses a pin built from `--trusted-key` flags that is not root 1 as the controller's flags make it.
    private static func requireSameFlags(_ pin: TrustedRoot, as pinned: JSONValue?) throws {
        func describe(_ keys: [String], _ threshold: Int64?) -> String {
            "\(threshold.map(String.init) ?? "?") of [\(keys.map { String($0.prefix(12)) }.sorted().joined(separator: ", "))]"
        }
        let fields = pinned?.object ?? [:]
        let role = fields["roles"]?.object?["release"]?.object ?? [:]
        let keys = FleetDocument.array(role["keyIds"]).compactMap { if case .string(let id) = $0 { id } else { nil } }
        let threshold: Int64? = if case .integer(let value)? = role["threshold"] { value } else { nil }
        let mine = pin.root.releaseRole
        guard fields["fromTrustedKeys"] == .bool(true), Set(keys) == Set(mine.keyIDs), threshold == Int64(mine.threshold) else {
            let theirs =
                fields["fromTrustedKeys"] == .bool(true) ? "its --trusted-key flags make \(describe(keys, threshold))" : "it pins a trust root file"
            throw CLIError(
                "the --trusted-key files and --threshold given here make \(describe(mine.keyIDs, Int64(mine.threshold))), but the controller's do not ("
                    + "\(theirs)): give the same keys and --threshold the controller was started with (or --trust-root FILE); nothing signed"
            )
        }
    }
}

extension TrustedRoot {
    /// The release keys among `envelope`'s signatures that verify for this root's release role (any number of them,
    /// even below the threshold), sorted.
    func releaseSigners(of envelope: Envelope) -> [String] {
        guard envelope.payloadType == Release.payloadType else { return [] }
        do {
            return try root.policy(for: .release).verify(envelope, expecting: Release.payloadType, threshold: 1).keyIDs
        } catch {
            return []
        }
    }
}
