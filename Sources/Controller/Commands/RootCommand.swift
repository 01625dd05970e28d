import ArgumentParser
import Foundation
import Shared

/// `ferry-controller root ...`: make, sign, publish and inspect the signed trust root (which keys may sign releases, and
/// which may sign the next root). Keys never leave the machine the command runs on; the controller never signs.
struct RootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "root",
        abstract: "Make, sign, publish and show the signed trust root (release keys, and who may change them).",
        discussion: """
            A root file is a DSSE envelope of a root document (application/vnd.ferry.root.v1+json), unsigned until \
            `root sign` adds signatures. Root 1: `root init`, then `root sign` by a threshold of its root keys, then \
            `root publish` (and pin it on agents with `ferry-agent enroll --trust-root`). Every later root: `root \
            rotate` (version + 1), signed by a threshold of the current root's root keys AND a threshold of the new \
            root's root keys (TUF's rule), then `root publish`. Agents follow each step, verified, before they check \
            any release against the newest root's release keys. docs/security.md has the key ceremony.
            """,
        subcommands: [RootInitCommand.self, RootSignCommand.self, RootPublishCommand.self, RootShowCommand.self, RootRotateCommand.self]
    )
}

/// Reading and writing root files (`root init` output: an envelope whose signatures may still be missing).
enum RootFile {
    /// The envelope and root document in `path` (or `-`, standard input).
    static func read(_ path: String) throws -> (envelope: Envelope, root: Root) {
        let bytes = try CLIInput.read(path, limit: Limits.envelopeBytes)
        do {
            let envelope = try Envelope.decode(bytes, requiringSignatures: false)
            return (envelope, try TrustedRoot.decode(envelope))
        } catch {
            throw CLIError("\(path): not a trust root file: \(error)")
        }
    }

    /// Writes `envelope` to `path` atomically (mode 0644: a root holds only public keys), or to standard output for `-`.
    static func write(_ envelope: Envelope, to path: String) throws {
        var bytes = Array(envelope.encoded())
        bytes.append(0x0a)
        if path == "-" {
            FileHandle.standardOutput.write(Data(bytes))
            return
        }
        do {
            try AtomicFile.write(bytes, to: path, mode: 0o644)
        } catch {
            throw CLIError("\(path): cannot write the root: \(error)")
        }
    }

    /// What one signature of a root file is worth to that root.
    enum SignatureStatus: String {
        /// Verifies, by a key of this root's own root role: counts toward its threshold.
        case rootKey = "root-key"
        /// Verifies, by a key this root lists in another role only.
        case notRootKey = "not-root-key"
        /// By a key this root lists, and does not verify.
        case invalid
        /// By a key this root does not list: counts only as a root key of the previous version.
        case unknownKey = "unknown-key"

        var text: String {
            switch self {
            case .rootKey: "valid, a root key of this version"
            case .notRootKey: "valid, not a root key of this version"
            case .invalid: "DOES NOT VERIFY"
            case .unknownKey: "by a key this root does not list (counts only as a root key of the previous version)"
            }
        }
    }

    /// Each signature of `envelope` with its status for `root`, and how many distinct own root keys count.
    static func signatures(of envelope: Envelope, for root: Root) -> (each: [(keyid: String, status: SignatureStatus)], counted: Int) {
        let message = Envelope.pae(payloadType: envelope.payloadType, payload: envelope.payload)
        var counted: Set<String> = []
        let each = envelope.signatures.map { signature -> (keyid: String, status: SignatureStatus) in
            guard let key = root.keys[signature.keyid] else { return (signature.keyid, .unknownKey) }
            guard key.isValidSignature(signature.sig, for: message) else { return (signature.keyid, .invalid) }
            guard root.rootRole.keyIDs.contains(signature.keyid) else { return (signature.keyid, .notRootKey) }
            counted.insert(signature.keyid)
            return (signature.keyid, .rootKey)
        }
        return (each, counted.count)
    }

    /// Lines describing `root` and which of `envelope`'s signatures count for its own root role.
    static func describe(_ root: Root, envelope: Envelope?, now: Date = Date()) -> [String] {
        var lines = ["trust root version \(root.version), expires \(Timestamp.format(root.expiresAt))\(root.isExpired(at: now) ? " (EXPIRED)" : "")"]
        for name in Root.RoleName.allCases {
            let role = root.role(name)
            lines.append("  \(name) role: \(role.threshold) of \(role.keyIDs.count) key(s)")
            for id in role.keyIDs { lines.append("    \(id)") }
        }
        guard let envelope else { return lines }
        let checked = signatures(of: envelope, for: root)
        lines.append("  signatures: \(envelope.signatures.count)")
        for (keyid, status) in checked.each {
            lines.append("    \(keyid.isEmpty ? "(no key id)" : keyid): \(status.text)")
        }
        let own = "\(checked.counted) of \(root.rootRole.threshold) required signature(s) by its own root keys"
        lines.append("  \(own)\(checked.counted >= root.rootRole.threshold ? "" : " — not enough yet")")
        return lines
    }

    /// The same as `describe`, as JSON (`--json`): `{version, expiresAt, expired, roles: {root|release: {threshold,
    /// keyIds}}, signatures: [{keyid, status}], rootSignatures, rootThresholdMet}`; `status` is `root-key`,
    /// `not-root-key`, `invalid` or `unknown-key`.
    static func summary(_ root: Root, envelope: Envelope?, now: Date = Date()) -> JSONValue {
        var roles: [String: JSONValue] = [:]
        for name in Root.RoleName.allCases {
            let role = root.role(name)
            roles[name.rawValue] = .object(["threshold": .integer(Int64(role.threshold)), "keyIds": .array(role.keyIDs.map { .string($0) })])
        }
        let checked = envelope.map { signatures(of: $0, for: root) } ?? (each: [], counted: 0)
        return .object([
            "version": .integer(root.version),
            "expiresAt": .string(Timestamp.format(root.expiresAt)),
            "expired": .bool(root.isExpired(at: now)),
            "roles": .object(roles),
            "signatures": .array(checked.each.map { .object(["keyid": .string($0.keyid), "status": .string($0.status.rawValue)]) }),
            "rootSignatures": .integer(Int64(checked.counted)),
            "rootThresholdMet": .bool(checked.counted >= root.rootRole.threshold),
        ])
    }

    /// Prints `document` as one line of JSON on standard output.
    static func printJSON(_ document: JSONValue) {
        Console.print(String(decoding: document.encoded(), as: UTF8.self))
    }

    /// A note for the operator: on standard output, or on standard error when standard output carries JSON.
    static func note(_ line: String, json: Bool) {
        if json {
            Console.error(line)
        } else {
            Console.print(line)
        }
    }

    /// A public key from a file, or the key id (or a prefix of 8+ characters of one) of a key in `candidates`.
    static func keyID(_ text: String, among candidates: [String], option: String) throws -> String {
        if FileManager.default.fileExists(atPath: text) { return try PublicKey(contentsOf: text).keyID }
        let lower = text.lowercased()
        let matches = lower.count >= 8 ? candidates.filter { $0.hasPrefix(lower) } : []
        guard matches.count == 1, let id = matches.first else {
            throw ValidationError(
                "\(option) \(text): neither a public key file nor the id (or a unique prefix of 8+ characters) of a key of the role; "
                    + "the role has \(candidates.map { String($0.prefix(12)) }.joined(separator: ", "))"
            )
        }
        return id
    }
}

/// `ferry-controller root init`: root 1 (or the first root of a fleet that trusted `--trusted-key` flags), unsigned.
struct RootInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a new, unsigned trust root.",
        discussion: """
            The root role's keys may sign the next root (keep them offline, several people each holding one); the \
            release role's keys sign releases (CI, and approvers for a threshold of 2). Sign the file with `root sign` by \
            a threshold of its root keys. A fleet whose agents trust --trusted-key flags already has a root 1 made of \
            those keys: give it --version 2 and sign it with every one of those keys too (the controller refuses fewer).
            """
    )

    @Option(name: .long, help: ArgumentHelp("A public key of the root role. Repeatable.", valueName: "FILE.pub"))
    var rootKey: [String] = []
    @Option(name: .long, help: "Distinct root keys that must sign the next root (default 1).")
    var rootThreshold: Int = 1
    @Option(name: .long, help: ArgumentHelp("A public key of the release role. Repeatable.", valueName: "FILE.pub"))
    var releaseKey: [String] = []
    @Option(name: .long, help: "Distinct release keys that must sign a release (default 1; 2 for the two-person rule).")
    var releaseThreshold: Int = 1
    @Option(name: .long, help: ArgumentHelp("Lifetime: d, h or m (default 365d).", valueName: "DURATION"))
    var expires: String = "365d"
    @Option(name: .long, help: "The version (default 1).")
    var version: Int64 = 1
    @Option(name: .long, help: ArgumentHelp("Where to write the unsigned root (- for standard output).", valueName: "FILE"))
    var out: String
    @Flag(name: .long, help: "Print JSON (see docs/controller.md for the fields).")
    var json = false

    func validate() throws {
        guard !(json && out == "-") else { throw ValidationError("--json and --out - both write to standard output: give --out FILE") }
        guard !rootKey.isEmpty else { throw ValidationError("at least one --root-key is required") }
        guard !releaseKey.isEmpty else { throw ValidationError("at least one --release-key is required") }
        guard (1...Root.maximumVersion).contains(version) else { throw ValidationError("--version must be from 1 to 2^53") }
        _ = try ExpiryText.parse(expires, name: "--expires")
    }

    func run() throws {
        if out != "-", FileManager.default.fileExists(atPath: out) { throw CLIError("\(out) already exists; refusing to overwrite a root") }
        let lifetime = try ExpiryText.parse(expires, name: "--expires")
        let root: Root
        do {
            root = try Root.make(
                version: version,
                expiresAt: Date().addingTimeInterval(Double(lifetime.components.seconds)),
                rootKeys: try rootKey.map { try PublicKey(contentsOf: $0) },
                rootThreshold: rootThreshold,
                releaseKeys: try releaseKey.map { try PublicKey(contentsOf: $0) },
                releaseThreshold: releaseThreshold
            )
        } catch let error as DocumentError {
            throw CLIError("the root would be invalid: \(error)")
        }
        try RootFile.write(root.unsignedEnvelope(), to: out)
        if json {
            RootFile.printJSON(.object(["file": .string(out), "root": RootFile.summary(root, envelope: nil)]))
        } else if out != "-" {
            for line in RootFile.describe(root, envelope: nil) { Console.print(line) }
            Console.print("wrote \(out) (unsigned): sign it with `ferry-controller root sign --key ROOT.key \(out)`")
        }
    }
}

/// `ferry-controller root sign --key K.key ROOT.json`: adds signatures to a root file, in place.
struct RootSignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Add your signature to a trust root file (in place).",
        discussion: """
            Signs the root's payload with each --key on this machine and writes the file back. A key that already signed \
            is not added twice (a key counts once). Prints which signatures count. Signing root N+1 needs a threshold of \
            root N's root keys and a threshold of root N+1's own root keys: pass the file from one key holder to the next.
            """
    )

    @Option(name: .long, help: ArgumentHelp("A PKCS#8 PEM Ed25519 private key. Repeatable.", valueName: "FILE.key"))
    var key: [String] = []
    @Option(name: .long, help: ArgumentHelp("Write the signed root here instead of in place.", valueName: "FILE"))
    var out: String?
    @Argument(help: ArgumentHelp("The root file.", valueName: "ROOT.json"))
    var file: String
    @Flag(name: .long, help: "Print JSON (see docs/controller.md for the fields).")
    var json = false

    func validate() throws {
        guard !(json && (out ?? file) == "-") else {
            throw ValidationError("--json and the root (--out -, or - read and written in place) both write to standard output: give --out FILE")
        }
        guard !key.isEmpty else { throw ValidationError("at least one --key is required") }
    }

    func run() throws {
        // In place is what leaving --out out means; another file that exists (a root signed before) is not replaced.
        if let out, out != "-", out != file, FileManager.default.fileExists(atPath: out) {
            throw CLIError("\(out) already exists; refusing to overwrite it (leave --out out to sign \(file) in place)")
        }
        let read = try RootFile.read(file)
        var envelope = read.envelope
        let root = read.root
        guard envelope.payloadType == Root.payloadType else { throw CLIError("\(file): not a trust root") }
        var added: [JSONValue] = []
        var alreadySigned: [JSONValue] = []
        let destination = out ?? file
        // Standard output carries a document (JSON, or the root itself for `-`): notes go to standard error.
        let quiet = json || destination == "-"
        for path in key {
            let signingKey = try SigningKey(contentsOf: path)
            let id = signingKey.publicKey.keyID
            // Already signed only when that signature verifies: one that merely names this key (junk bytes added on the
            // way from one holder to the next) is replaced, not taken for the holder's own, which kept the root from its
            // threshold.
            let message = Envelope.pae(payloadType: envelope.payloadType, payload: envelope.payload)
            if envelope.signatures.contains(where: { $0.keyid == id && signingKey.publicKey.isValidSignature($0.sig, for: message) }) {
                RootFile.note("\(path): key \(id.prefix(12)) already signed this root; not added again", json: quiet)
                alreadySigned.append(.string(id))
                continue
            }
            if envelope.signatures.contains(where: { $0.keyid == id }) {
                RootFile.note("\(path): a signature naming key \(id.prefix(12)) does not verify; replaced by this key's", json: quiet)
                envelope.signatures.removeAll { $0.keyid == id }
            }
            if !root.rootRole.keyIDs.contains(id) {
                RootFile.note(
                    "\(path): key \(id.prefix(12)) is not a root key of version \(root.version); its signature counts only if it is a "
                        + "root key of version \(root.version - 1)",
                    json: quiet
                )
            }
            try envelope.addSignature(with: signingKey)
            added.append(.string(id))
        }
        try RootFile.write(envelope, to: destination)
        if json {
            RootFile.printJSON(
                .object([
                    "file": .string(destination), "added": .array(added), "alreadySigned": .array(alreadySigned),
                    "root": RootFile.summary(root, envelope: envelope),
                ])
            )
            return
        }
        for line in RootFile.describe(root, envelope: envelope) { RootFile.note(line, json: quiet) }
        RootFile.note(destination == "-" ? "wrote the signed root to standard output" : "wrote \(destination)", json: quiet)
    }
}

/// `ferry-controller root publish ROOT.json`: sends a signed root to the controller, which checks it and stores it.
struct RootPublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish a signed trust root: agents follow it, verified, before they check any release.",
        discussion: """
            The controller stores the root only when it follows its newest root by TUF's rules (version + 1, signed by \
            a threshold of the previous root's root keys and of its own) and has not expired; every agent's desired \
            state then names the new version. `ferry-controller status` shows which agents have picked it up.
            """
    )

    @OptionGroup var controller: ControllerOptions
    @Argument(help: ArgumentHelp("The signed root file.", valueName: "ROOT.json"))
    var file: String
    @Flag(name: .long, help: "Print JSON (see docs/controller.md for the fields).")
    var json = false

    func run() async throws {
        let (envelope, root) = try RootFile.read(file)
        guard !envelope.signatures.isEmpty else { throw CLIError("\(file) is not signed yet: `ferry-controller root sign --key KEY \(file)`") }
        let client = try controller.client()
        let answer = try await client.postJSON("/v1/roots", body: envelope.encoded(), expecting: [200, 201])
        if json {
            RootFile.printJSON(answer)
            return
        }
        let version = FleetDocument.text(answer.object?["version"])
        Console.print(
            "published trust root version \(version == "-" ? "\(root.version)" : version) (sha256 \(FleetDocument.text(answer.object?["sha256"])))"
        )
    }
}

/// `ferry-controller root show [ROOT.json]`: a root file, or the controller's chain.
struct RootShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show a trust root file (its roles and which signatures count), or the controller's chain.",
        discussion: "Without a file, asks the controller (GET /v1/roots): the pinned root, every published version, the current one."
    )

    @OptionGroup var controller: ControllerOptions
    @Argument(help: ArgumentHelp("A root file; without it, the controller's chain.", valueName: "ROOT.json"))
    var file: String?
    @Flag(name: .long, help: "Print JSON (see docs/controller.md for the fields).")
    var json = false

    func run() async throws {
        if let file {
            let (envelope, root) = try RootFile.read(file)
            if json {
                RootFile.printJSON(.object(["file": .string(file), "root": RootFile.summary(root, envelope: envelope)]))
                return
            }
            for line in RootFile.describe(root, envelope: envelope) { Console.print(line) }
            return
        }
        let answer = try await controller.client().getJSON("/v1/roots")
        if json {
            RootFile.printJSON(answer)
            return
        }
        let fields = answer.object ?? [:]
        if let pinned = fields["pinned"]?.object {
            let origin = pinned["fromTrustedKeys"] == .bool(true) ? "built from --trusted-key" : "--trust-root file"
            Console.print("pinned: version \(FleetDocument.text(pinned["version"])) (\(origin))")
        }
        let roots = FleetDocument.array(fields["roots"]).compactMap(\.object)
        if roots.isEmpty { Console.print("no trust root published yet") }
        for root in roots {
            var line = "version \(FleetDocument.text(root["version"])): expires \(FleetDocument.text(root["expiresAt"]))"
            if root["expired"] == .bool(true) { line += " (EXPIRED)" }
            for name in Root.RoleName.allCases {
                let role = root["roles"]?.object?[name.rawValue]?.object ?? [:]
                let ids = FleetDocument.array(role["keyIds"]).map { String(FleetDocument.text($0).prefix(12)) }
                line += "; \(name) \(FleetDocument.text(role["threshold"])) of [\(ids.joined(separator: ", "))]"
            }
            line += "; published by \(FleetDocument.text(root["publishedBy"])) at \(FleetDocument.text(root["publishedAt"]))"
            Console.print(line)
        }
        if let problem = fields["problem"], problem != .null { Console.print("problem: \(FleetDocument.text(problem))") }
    }
}

/// `ferry-controller root rotate`: the next root (version + 1) from the current one, with keys added or removed.
struct RootRotateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Write the next trust root (version + 1): add or remove keys, change thresholds, renew the expiry.",
        discussion: """
            Starts from --from FILE, or from the controller's newest published root, checked here step by step from \
            --trust-root (a root file you hold) or --trusted-key: a root the controller serves is never built on \
            unchecked, since a host taken over could add its own key to it. Removing a release key revokes it: \
            once agents accept the new root, releases signed only by that key are refused. The new root is unsigned: \
            sign it with a threshold of the current root's root keys and a threshold of its own root keys (`root sign`), \
            then `root publish`.
            """
    )

    @OptionGroup var controller: ControllerOptions
    @OptionGroup var trust: OperatorTrustOptions
    @Option(name: .long, help: ArgumentHelp("The current root file (default: the controller's newest).", valueName: "FILE"))
    var from: String?
    @Option(name: .long, help: ArgumentHelp("Add a root key. Repeatable.", valueName: "FILE.pub")) var addRootKey: [String] = []
    @Option(name: .long, help: ArgumentHelp("Remove a root key (file or key id). Repeatable.", valueName: "KEY")) var removeRootKey: [String] = []
    @Option(name: .long, help: "New root threshold (default: unchanged).") var rootThreshold: Int?
    @Option(name: .long, help: ArgumentHelp("Add a release key. Repeatable.", valueName: "FILE.pub")) var addReleaseKey: [String] = []
    @Option(name: .long, help: ArgumentHelp("Remove (revoke) a release key (file or key id). Repeatable.", valueName: "KEY"))
    var removeReleaseKey: [String] = []
    @Option(name: .long, help: "New release threshold (default: unchanged).") var releaseThreshold: Int?
    @Option(name: .long, help: ArgumentHelp("Lifetime of the new root from now: d, h or m (default 365d).", valueName: "DURATION"))
    var expires: String = "365d"
    @Option(name: .long, help: ArgumentHelp("Where to write the unsigned new root.", valueName: "FILE"))
    var out: String
    @Flag(name: .long, help: "Print JSON (see docs/controller.md for the fields).")
    var json = false

    func validate() throws {
        _ = try ExpiryText.parse(expires, name: "--expires")
        guard !(json && out == "-") else { throw ValidationError("--json and --out - both write to standard output: give --out FILE") }
    }

    func run() async throws {
        if out != "-", FileManager.default.fileExists(atPath: out) { throw CLIError("\(out) already exists; refusing to overwrite a root") }
        let (current, fromFlags) = try await currentRoot()
        // After a root 1 built from --trusted-key flags, the controller takes root 2 only with every flag key's signature.
        let previousNeeded = fromFlags ? current.rootRole.keyIDs.count : current.rootRole.threshold
        let (next, overflow) = current.version.addingReportingOverflow(1)
        guard !overflow, next <= Root.maximumVersion else { throw CLIError("root version \(current.version) is the last one possible") }
        let lifetime = try ExpiryText.parse(expires, name: "--expires")
        let rootKeys = try edit(current, .root, add: addRootKey, remove: removeRootKey, option: "--remove-root-key")
        let releaseKeys = try edit(current, .release, add: addReleaseKey, remove: removeReleaseKey, option: "--remove-release-key")
        let root: Root
        do {
            root = try Root.make(
                version: next,
                expiresAt: Date().addingTimeInterval(Double(lifetime.components.seconds)),
                rootKeys: rootKeys,
                rootThreshold: rootThreshold ?? current.rootRole.threshold,
                releaseKeys: releaseKeys,
                releaseThreshold: releaseThreshold ?? current.releaseRole.threshold
            )
        } catch {
            throw CLIError("the new root would be invalid: \(error)")
        }
        try RootFile.write(root.unsignedEnvelope(), to: out)
        var changes: [String: JSONValue] = [:]
        var changeLines: [String] = []
        for name in Root.RoleName.allCases {
            let before = Set(current.role(name).keyIDs)
            let after = Set(root.role(name).keyIDs)
            let added = after.subtracting(before).sorted()
            let removed = before.subtracting(after).sorted()
            changes[name.rawValue] = .object(["added": .array(added.map { .string($0) }), "removed": .array(removed.map { .string($0) })])
            let marks = added.map { "+\($0.prefix(12))" } + removed.map { "-\($0.prefix(12))" }
            if !marks.isEmpty { changeLines.append("  \(name) keys changed: \(marks.joined(separator: " "))") }
        }
        if json {
            RootFile.printJSON(
                .object([
                    "file": .string(out), "root": RootFile.summary(root, envelope: nil), "changes": .object(changes),
                    "needs": .object([
                        "previousVersion": .integer(current.version),
                        "previousRootThreshold": .integer(Int64(previousNeeded)),
                        "previousRootKeyIds": .array(current.rootRole.keyIDs.map { .string($0) }),
                        "rootThreshold": .integer(Int64(root.rootRole.threshold)),
                        "rootKeyIds": .array(root.rootRole.keyIDs.map { .string($0) }),
                    ]),
                ])
            )
            return
        }
        // With `--out -` the root is on standard output: the prose goes to standard error.
        let quiet = out == "-"
        for line in RootFile.describe(root, envelope: nil) + changeLines { RootFile.note(line, json: quiet) }
        RootFile.note(
            "wrote \(quiet ? "the root to standard output" : out) (unsigned): it needs \(previousNeeded) signature(s) by root keys of version \(current.version) "
                + "[\(current.rootRole.keyIDs.map { String($0.prefix(12)) }.joined(separator: ", "))] and \(root.rootRole.threshold) by its "
                + "own root keys [\(root.rootRole.keyIDs.map { String($0.prefix(12)) }.joined(separator: ", "))]",
            json: quiet
        )
    }

    /// The root to rotate from, and whether it is root 1 as `--trusted-key` flags define it: the `--from` file, or the
    /// newest root of the controller's chain, followed here from the operator's own root (`OperatorTrustOptions`).
    private func currentRoot() async throws -> (Root, fromFlags: Bool) {
        if let from { return (try RootFile.read(from).root, false) }
        let roots = try await trust.chain(for: "root rotate", client: try controller.client())
        guard let newest = roots.last else { throw CLIError("no trust root to rotate from") }
        return (newest.root, newest.isFromTrustedKeys)
    }

    private func edit(_ current: Root, _ role: Root.RoleName, add: [String], remove: [String], option: String) throws -> [PublicKey] {
        var keys = current.keys(of: role)
        for text in remove {
            let id = try RootFile.keyID(text, among: keys.map(\.keyID), option: option)
            keys.removeAll { $0.keyID == id }
        }
        for path in add {
            let key = try PublicKey(contentsOf: path)
            if !keys.contains(key) { keys.append(key) }
        }
        return keys
    }
}
