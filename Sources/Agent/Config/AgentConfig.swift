import Glibc
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The agent's configuration file (JSON or YAML), written by `ferry-agent enroll` and read by every other command.
///
/// Every key is documented where it is read below. Unknown keys are errors (a typo must not silently drop a setting).
/// Environment variables override the file: `FERRY_CONTROLLER_URL`, `FERRY_STATE_DIR`, `FERRY_ENV_DIR`,
/// `FERRY_POLL_SECONDS`, `FERRY_PROCESS_MANAGER`, `FERRY_CA_FILE`, `FERRY_PM2`, `FERRY_PM2_HOME`,
/// `FERRY_ALLOW_INSECURE_HTTP`.
struct AgentConfig: Sendable, Equatable {
    /// `controller`: base URL of the controller, e.g. `https://ferry.internal:8443`.
    var controllerURL: String
    /// `agentId`: this instance's id, issued at enrollment.
    var agentID: String
    /// `tokenFile`: file holding the agent token (mode 0600). Default `<state dir>/agent.token`.
    var tokenFile: String
    /// `services`: the services this instance runs. Releases for any other service are refused.
    var services: [String]
    /// `trustedKeys`: paths of the operator public keys (PEM) whose signatures count: the agent's root 1 is built from
    /// them (both roles, with `threshold`). Give this or `trustRoot`.
    var trustedKeys: [String]
    /// `threshold`: distinct trusted keys that must sign a release (and root 2). Default 1.
    var threshold: Int = 1
    /// `trustRoot`: path of a signed trust root (`ferry-controller root init`/`root sign`) pinned at enrollment instead
    /// of `trustedKeys`. Newer roots the controller serves are followed from it, each step verified; the roots accepted
    /// are kept in `<stateDir>/trust-root.json`.
    var trustRoot: String?
    /// `stateDir`: where releases, artifacts and state live. Default `/var/lib/ferry`.
    var stateDir: String = "/var/lib/ferry"
    /// `envDir`: instance secrets, `<envDir>/<service>.env` (KEY=VALUE lines). Never leaves the host. Default `/etc/ferry/env`.
    var envDir: String = "/etc/ferry/env"
    /// `pollSeconds`: pause between passes when the controller does not long-poll or is unreachable. Default 15.
    var pollSeconds: Int = 15
    /// `longPollSeconds`: how long the controller may hold a desired-state request (0 disables). Default 30, at most 60.
    var longPollSeconds: Int = 30
    /// `reportSeconds`: a status report is sent at least this often. Default 30.
    var reportSeconds: Int = 30
    /// `driftCheckSeconds`: when a poll brings nothing new, the pass that compares the process table with what is applied
    /// (and repairs it) runs at most this often; a new desired state, a last pass that changed something, had a problem
    /// or did not converge, or the controller coming or going runs it at once. Default 5, 1...3600.
    var driftCheckSeconds: Int = 5
    /// `processManager`: `auto` (PM2 when `pm2` is on PATH), `pm2` or `builtin`. Default `auto`.
    var processManager: ProcessManagerKind = .auto
    /// `caFile`: extra CA bundle (PEM) for the controller's TLS certificate.
    var caFile: String?
    /// `allowInsecureHttp`: talk plain `http://` to a controller that is not on loopback (see `TransportRule`).
    /// Default `false`: such a URL is refused when the config is loaded.
    var allowInsecureHttp = false
    /// `pm2`: path of the pm2 binary. Default: found on PATH.
    var pm2Path: String?
    /// `pm2Home`: PM2_HOME for the pm2 daemon Ferry drives. Default: pm2's own (`~/.pm2`).
    var pm2Home: String?
    /// `pm2TimeoutSeconds`: upper limit of a pm2 call (an app's start, reload, restart or delete gets its instances'
    /// `kill_timeout` and `listen_timeout` on top); on expiry the pm2 CLI's process group is killed. Default 60.
    var pm2TimeoutSeconds: Int = 60
    /// `pm2TableSource`: where the agent reads PM2's process table. `socket` (the default): from the daemon's
    /// `$PM2_HOME/rpc.sock`, as `pm2 jlist` itself does, falling back to `pm2 jlist` for any read the socket cannot
    /// answer; `jlist`: always `pm2 jlist` (a Node.js process per read, 0.25–0.30 s of CPU), for a PM2 whose RPC protocol
    /// the agent does not speak.
    var pm2TableSource: PM2TableSource = .socket
    /// `namespace`: the PM2 namespace Ferry owns; apps outside it are never touched. Default `ferry`.
    var namespace: String = "ferry"
    /// `clockSkewSeconds`: grace after `expiresAt` before a release counts as expired. Default 300.
    var clockSkewSeconds: Int = 300
    /// `keepReleases`: extracted releases kept per service besides the current and previous one. Default 3.
    var keepReleases: Int = 3
    /// `logMaxBytes`: an app's log file is rotated past this size, by the agent under PM2 (`PM2LogRotation`), by the
    /// builtin supervisor itself. `0`: the agent never rotates PM2's logs (left to `pm2-logrotate`); the builtin
    /// supervisor always rotates. At least 1024 otherwise. Default 10 MiB.
    var logMaxBytes: Int64 = Self.defaultLogMaxBytes
    /// `logKeep`: rotated log files kept beside the live one (0...100; 0 empties the file instead). Default 3.
    var logKeep: Int = Self.defaultLogKeep
    /// `machineIdentity`: how the agent tells the machine it was enrolled on from a copy (an image baked after
    /// enrolment, a copied state directory): `machine-id` (the default: `/etc/machine-id`, which an image keeps unless
    /// it was cleared before baking), `ec2` (the instance id from the instance metadata service: new on every instance)
    /// or `none`. On a copy, `run` and `once` stop with status 78 (see `MachineCheck`).
    var machineIdentity: MachineIdentitySource = Self.defaultMachineIdentity
    /// `machineIdFile`: systemd's machine id file, for `machineIdentity: machine-id`. Default `/etc/machine-id`.
    var machineIDFile: String = Self.defaultMachineIDFile
    /// `instanceMetadataUrl`: the instance metadata service, for `machineIdentity: ec2`. Default `http://169.254.169.254`.
    var instanceMetadataURL: String = Self.defaultInstanceMetadataURL

    static let defaultMachineIdentity = MachineIdentitySource.machineID
    /// The builtin supervisor's own defaults (`LogRotation`).
    static let defaultLogMaxBytes: Int64 = 10 << 20
    static let defaultLogKeep = 3
    static let defaultMachineIDFile = MachineIdentityReader.Configuration.defaultMachineIDFile
    static let defaultInstanceMetadataURL = MachineIdentityReader.Configuration.defaultMetadataURL

    /// How `MachineCheck` reads this machine's identity.
    var machineIdentityReader: MachineIdentityReader.Configuration {
        var configuration = MachineIdentityReader.Configuration(source: machineIdentity)
        configuration.machineIDFile = machineIDFile
        configuration.metadataURL = instanceMetadataURL
        return configuration
    }

    /// Why a configuration was refused.
    struct ConfigError: Error, CustomStringConvertible {
        var path: String
        var reason: String
        var description: String { "config \(path): \(reason)" }
    }

    /// Why `name` cannot be the namespace Ferry owns; `nil` when it can. Ferry removes every app of its namespace that no
    /// release names, so it must be one no other app lands in: not PM2's `default` (every app started without a
    /// namespace, which Ferry would then delete), not `all` (PM2's word for every process), not empty, and nothing a
    /// command line or a path would cut (spaces, control characters, `/`). Other names an earlier agent took stay
    /// accepted: renaming the namespace would make Ferry's running apps foreign to it.
    static func namespaceProblem(_ name: String) -> String? {
        if name == "default" || name == "all" {
            return
                "\"\(name)\" is PM2's own (every app started without a namespace is in default): Ferry would remove the host's other apps; choose a namespace of Ferry's own, such as ferry"
        }
        guard !name.isEmpty, !name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f || $0 == UInt8(ascii: "/") }) else {
            return "\(name.prefix(64).debugDescription) must not be empty nor hold spaces, control characters or /"
        }
        return nil
    }

    /// Reads and validates the configuration at `path`, then applies environment overrides from `environment`.
    static func load(from path: String, environment: [String: String] = ProcessEnvironment.current) throws -> AgentConfig {
        let data: [UInt8]
        do throws(SmallFile.ContentsError) {
            data = try SmallFile.contents(of: path, limit: 1 << 20)
        } catch {
            throw ConfigError(path: path, reason: "\(error)")
        }
        // A byte order mark (PowerShell 5, older Notepad) is not part of the document.
        let bytes = data.starts(with: [0xEF, 0xBB, 0xBF]) ? Array(data.dropFirst(3)) : data
        let text = String(decoding: bytes, as: UTF8.self)
        let json: JSONValue
        do {
            // `isWhitespace`, not a list of characters: a CRLF line end is one `Character` ("\r\n").
            let isJSON = text.first(where: { !$0.isWhitespace }) == "{"
            json = isJSON ? try JSONValue.parse(bytes) : try YAMLSubset.parse(text)
        } catch {
            throw ConfigError(path: path, reason: "\(error)")
        }
        do {
            var config = try AgentConfig(json: json)
            try config.applyOverrides(environment)
            try config.validate()
            return config
        } catch let error as DocumentError {
            throw ConfigError(path: path, reason: "\(error)")
        } catch let error as ConfigError {
            // Keep the key or variable the check is about: "must be an absolute path" alone names nothing.
            throw ConfigError(path: path, reason: "\(error.path): \(error.reason)")
        }
    }

    init(
        controllerURL: String,
        agentID: String,
        tokenFile: String,
        services: [String],
        trustedKeys: [String],
        threshold: Int = 1,
        stateDir: String = "/var/lib/ferry"
    ) {
        self.controllerURL = controllerURL
        self.agentID = agentID
        self.tokenFile = tokenFile
        self.services = services
        self.trustedKeys = trustedKeys
        self.threshold = threshold
        self.stateDir = stateDir
    }

    init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        func int(_ key: String, _ range: ClosedRange<Int64>, _ fallback: Int, _ reader: inout ObjectReader) throws(DocumentError) -> Int {
            Int(try reader.optional(key, Field.integer(in: range)) ?? Int64(fallback))
        }
        controllerURL = try reader.required("controller", Field.string(maxLength: Limits.urlLength))
        agentID = try reader.required("agentId", Field.string(maxLength: 128))
        stateDir = try reader.optional("stateDir", Field.string(maxLength: Limits.pathLength)) ?? "/var/lib/ferry"
        tokenFile = try reader.optional("tokenFile", Field.string(maxLength: Limits.pathLength)) ?? "\(stateDir)/agent.token"
        services = try reader.required("services") { (value, path) throws(DocumentError) -> [String] in
            guard case .array(let items) = value else { throw .wrongType(field: path, expected: "list", got: value.typeName) }
            var names: [String] = []
            for (index, item) in items.enumerated() {
                let name = try Release.serviceName(item, "\(path)[\(index)]")
                // A repeated name makes every status report name the service twice, which the controller refuses.
                if let first = names.firstIndex(of: name) {
                    throw .invalidValue(field: "\(path)[\(index)]", reason: "\(name) is already \(path)[\(first)]")
                }
                names.append(name)
            }
            return names
        }
        trustedKeys =
            try reader.optional("trustedKeys") { (value, path) throws(DocumentError) -> [String] in
                guard case .array(let items) = value else { throw .wrongType(field: path, expected: "list", got: value.typeName) }
                var paths: [String] = []
                for (index, item) in items.enumerated() {
                    paths.append(try Field.string(maxLength: Limits.pathLength)(item, "\(path)[\(index)]"))
                }
                return paths
            } ?? []
        threshold = try int("threshold", 1...64, 1, &reader)
        trustRoot = try reader.optional("trustRoot", Field.string(maxLength: Limits.pathLength))
        envDir = try reader.optional("envDir", Field.string(maxLength: Limits.pathLength)) ?? "/etc/ferry/env"
        pollSeconds = try int("pollSeconds", 1...3600, 15, &reader)
        longPollSeconds = try int("longPollSeconds", 0...60, 30, &reader)
        reportSeconds = try int("reportSeconds", 1...3600, 30, &reader)
        driftCheckSeconds = try int("driftCheckSeconds", 1...3600, 5, &reader)
        let manager = try reader.optional("processManager", Field.string(maxLength: 16)) ?? "auto"
        guard let kind = ProcessManagerKind(rawValue: manager) else {
            throw .invalidValue(field: "processManager", reason: "\"\(manager)\" must be auto, pm2 or builtin")
        }
        processManager = kind
        caFile = try reader.optional("caFile", Field.string(maxLength: Limits.pathLength))
        allowInsecureHttp = try reader.optional("allowInsecureHttp", Field.bool) ?? false
        pm2Path = try reader.optional("pm2", Field.string(maxLength: Limits.pathLength))
        pm2Home = try reader.optional("pm2Home", Field.string(maxLength: Limits.pathLength))
        pm2TimeoutSeconds = try int("pm2TimeoutSeconds", 1...3600, 60, &reader)
        pm2TableSource = try reader.optional("pm2TableSource", Field.enumeration(PM2TableSource.self)) ?? .socket
        namespace = try reader.optional("namespace", Field.string(maxLength: 64)) ?? "ferry"
        if let problem = Self.namespaceProblem(namespace) { throw .invalidValue(field: "namespace", reason: problem) }
        clockSkewSeconds = try int("clockSkewSeconds", 0...86_400, 300, &reader)
        keepReleases = try int("keepReleases", 0...100, 3, &reader)
        logMaxBytes = try reader.optional("logMaxBytes", Field.integer(in: 0...(1 << 40))) ?? Self.defaultLogMaxBytes
        guard logMaxBytes == 0 || logMaxBytes >= 1024 else {
            throw .invalidValue(field: "logMaxBytes", reason: "\(logMaxBytes) must be 0 (the agent leaves PM2's logs alone) or at least 1024")
        }
        logKeep = try int("logKeep", 0...100, Self.defaultLogKeep, &reader)
        machineIdentity = try reader.optional("machineIdentity", Field.enumeration(MachineIdentitySource.self)) ?? Self.defaultMachineIdentity
        machineIDFile = try reader.optional("machineIdFile", Field.string(maxLength: Limits.pathLength)) ?? Self.defaultMachineIDFile
        instanceMetadataURL =
            try reader.optional("instanceMetadataUrl", Field.string(maxLength: Limits.urlLength)) ?? Self.defaultInstanceMetadataURL
        try reader.rejectUnknownFields()
    }

    /// The configuration as written by `enroll`.
    var json: JSONValue {
        var fields: [String: JSONValue] = [
            "controller": .string(controllerURL), "agentId": .string(agentID), "tokenFile": .string(tokenFile),
            "services": .array(services.map { .string($0) }), "trustedKeys": .array(trustedKeys.map { .string($0) }),
            "threshold": .integer(Int64(threshold)), "stateDir": .string(stateDir), "envDir": .string(envDir),
            "pollSeconds": .integer(Int64(pollSeconds)), "longPollSeconds": .integer(Int64(longPollSeconds)),
            "reportSeconds": .integer(Int64(reportSeconds)), "driftCheckSeconds": .integer(Int64(driftCheckSeconds)),
            "processManager": .string(processManager.rawValue),
            "namespace": .string(namespace), "pm2TimeoutSeconds": .integer(Int64(pm2TimeoutSeconds)),
            "pm2TableSource": .string(pm2TableSource.rawValue),
            "clockSkewSeconds": .integer(Int64(clockSkewSeconds)),
            "keepReleases": .integer(Int64(keepReleases)),
            "allowInsecureHttp": .bool(allowInsecureHttp),
        ]
        // The machine check's keys are written only when they differ from their defaults: an agent binary from before
        // them refuses a file that names them (unknown keys are errors), so an instance that keeps the defaults can
        // still go back to such a binary.
        if machineIdentity != Self.defaultMachineIdentity { fields["machineIdentity"] = .string(machineIdentity.rawValue) }
        if machineIDFile != Self.defaultMachineIDFile { fields["machineIdFile"] = .string(machineIDFile) }
        if instanceMetadataURL != Self.defaultInstanceMetadataURL { fields["instanceMetadataUrl"] = .string(instanceMetadataURL) }
        // Likewise the log rotation's (an agent binary from before them refuses them).
        if logMaxBytes != Self.defaultLogMaxBytes { fields["logMaxBytes"] = .integer(logMaxBytes) }
        if logKeep != Self.defaultLogKeep { fields["logKeep"] = .integer(Int64(logKeep)) }
        if let caFile { fields["caFile"] = .string(caFile) }
        if let trustRoot { fields["trustRoot"] = .string(trustRoot) }
        if let pm2Path { fields["pm2"] = .string(pm2Path) }
        if let pm2Home { fields["pm2Home"] = .string(pm2Home) }
        return .object(fields)
    }

    private mutating func applyOverrides(_ environment: [String: String]) throws {
        if let value = environment["FERRY_CONTROLLER_URL"], !value.isEmpty { controllerURL = value }
        if let value = environment["FERRY_STATE_DIR"], !value.isEmpty { stateDir = value }
        if let value = environment["FERRY_ENV_DIR"], !value.isEmpty { envDir = value }
        if let value = environment["FERRY_CA_FILE"], !value.isEmpty { caFile = value }
        if let value = environment["FERRY_PM2"], !value.isEmpty { pm2Path = value }
        if let value = environment["FERRY_PM2_HOME"], !value.isEmpty { pm2Home = value }
        if let value = environment["FERRY_ALLOW_INSECURE_HTTP"], !value.isEmpty {
            switch value.lowercased() {
            case "1", "true", "yes": allowInsecureHttp = true
            case "0", "false", "no": allowInsecureHttp = false
            default:
                throw ConfigError(path: "FERRY_ALLOW_INSECURE_HTTP", reason: "\"\(value)\" must be 1, true, yes, 0, false or no")
            }
        }
        if let value = environment["FERRY_POLL_SECONDS"], !value.isEmpty {
            guard let seconds = Int(value), (1...3600).contains(seconds) else {
                throw ConfigError(path: "FERRY_POLL_SECONDS", reason: "\"\(value)\" must be a number of seconds between 1 and 3600")
            }
            pollSeconds = seconds
        }
        if let value = environment["FERRY_PROCESS_MANAGER"], !value.isEmpty {
            guard let kind = ProcessManagerKind(rawValue: value) else {
                throw ConfigError(path: "FERRY_PROCESS_MANAGER", reason: "\"\(value)\" must be auto, pm2 or builtin")
            }
            processManager = kind
        }
    }

    private func validate() throws {
        let scheme = controllerURL.prefix(8).lowercased()
        guard scheme.hasPrefix("http://") || scheme.hasPrefix("https://") else {
            throw ConfigError(path: "controller", reason: "\"\(RedactedURL.redact(controllerURL))\" must be an http:// or https:// URL")
        }
        // What no request could carry: the agent would only ever say "controller unreachable".
        guard !controllerURL.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) else {
            throw ConfigError(
                path: "controller",
                reason: "\"\(RedactedURL.redact(controllerURL).debugDescription.dropFirst().dropLast())\" contains spaces or control characters"
            )
        }
        do {
            try TransportRule.check(controllerURL: controllerURL, allowInsecureHTTP: allowInsecureHttp)
        } catch {
            throw ConfigError(path: "controller", reason: error.reason)
        }
        guard !services.isEmpty else { throw ConfigError(path: "services", reason: "at least one service is required") }
        if let trustRoot {
            guard trustedKeys.isEmpty else {
                throw ConfigError(
                    path: "trustRoot",
                    reason: "give either trustRoot or trustedKeys, not both: the root names the keys (\(trustRoot))"
                )
            }
            return try validatePaths()
        }
        guard !trustedKeys.isEmpty else {
            throw ConfigError(path: "trustedKeys", reason: "at least one trusted key is required (or a signed root as trustRoot)")
        }
        guard threshold <= Set(trustedKeys).count else {
            throw ConfigError(path: "threshold", reason: "\(threshold) is more than the \(Set(trustedKeys).count) trusted key(s)")
        }
        try validatePaths()
    }

    private func validatePaths() throws {
        guard stateDir.hasPrefix("/") else { throw ConfigError(path: "stateDir", reason: "must be an absolute path") }
        guard machineIDFile.hasPrefix("/") else { throw ConfigError(path: "machineIdFile", reason: "must be an absolute path") }
        guard instanceMetadataURL.hasPrefix("http://") || instanceMetadataURL.hasPrefix("https://") else {
            throw ConfigError(path: "instanceMetadataUrl", reason: "\"\(instanceMetadataURL)\" must be an http:// or https:// URL")
        }
    }

    /// Loads the trusted keys and builds the trust policy.
    ///
    /// With a pin (`TrustPin`), the keys and the threshold must be the ones enrolled with: they are root 1, from which
    /// every root accepted since is verified again at each start. A key taken out of the list, or another threshold,
    /// made another root 1, the stored chain no longer followed from it and was set aside as another enrolment's, and
    /// the agent trusted again a key a later root had revoked.
    func trustPolicy() throws -> TrustPolicy {
        let keys = try trustedKeys.map { try PublicKey(contentsOf: $0) }
        let pin = try TrustPin.read(stateDir: stateDir)
        if let trustedKeyIDs = pin?.trustedKeyIDs {
            for (path, key) in zip(trustedKeys, keys) where !trustedKeyIDs.contains(key.keyID) {
                throw ConfigError(
                    path: path,
                    reason: "the trusted key file changed since enrollment (key \(key.keyID) is not one the agent enrolled with): "
                        + "the agent does not trust another key by itself; put the enrolled file back, or enroll again (--force)"
                )
            }
            let missing = Set(trustedKeyIDs).subtracting(keys.map(\.keyID)).sorted()
            guard missing.isEmpty else {
                throw ConfigError(
                    path: "trustedKeys",
                    reason: "key\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) the agent enrolled with "
                        + "\(missing.count == 1 ? "is" : "are") no longer listed: the keys enrolled with are where every trust root "
                        + "accepted since is verified from; rotate keys with a signed trust root, or enroll again (--force)"
                )
            }
        }
        if let pinned = pin?.threshold, pinned != threshold {
            throw ConfigError(
                path: "threshold",
                reason: "\(threshold) is not the threshold the agent enrolled with (\(pinned)): change it with a signed trust root, "
                    + "or enroll again (--force)"
            )
        }
        return try TrustPolicy(trustedKeys: keys, threshold: threshold)
    }

    /// The root pinned at enrollment: the `trustRoot` file (verified: signed by a threshold of its own root keys), or
    /// root 1 built from `trustedKeys` and `threshold`.
    func pinnedRoot() throws -> TrustedRoot {
        guard let trustRoot else {
            return try TrustedRoot.fromTrustedKeys(try trustPolicy().trustedKeys.values.sorted { $0.keyID < $1.keyID }, threshold: threshold)
        }
        return try Self.loadRoot(trustRoot, expecting: try TrustPin.read(stateDir: stateDir)?.trustRootSHA256).root
    }

    /// Reads and pins a signed root file; with `expecting`, only the file of that digest.
    static func loadRoot(_ path: String, expecting digest: SHA256Digest? = nil) throws -> (root: TrustedRoot, digest: SHA256Digest) {
        let data: [UInt8]
        do throws(SmallFile.ContentsError) {
            data = try SmallFile.contents(of: path, limit: Limits.envelopeBytes)
        } catch {
            throw ConfigError(path: path, reason: "trust root: \(error)")
        }
        let actual = SHA256.hash(data)
        if let digest, actual != digest {
            throw ConfigError(
                path: path,
                reason: "the trust root file changed since enrollment (SHA-256 \(actual), enrolled with \(digest)): the agent does not "
                    + "pin another root by itself; put the enrolled file back, or enroll again (--force) to pin a new one"
            )
        }
        do {
            return (try TrustedRoot.pinning(try Envelope.decode(data)), actual)
        } catch {
            throw ConfigError(path: path, reason: "not a usable trust root: \(error)")
        }
    }

    /// Reads the agent token.
    func token() throws -> String {
        try KeyFile.read(tokenFile).trimmingCharacters(in: [" ", "\n", "\r", "\t"])
    }

    /// What is wrong with who may read the token file (`nil`: only its owner, this user): a token other local users can
    /// read lets them act as this agent (`cp` under umask 022 and cloud-init's `write_files` give 0644). Said at start.
    func tokenFileExposure() -> String? {
        var info = stat()
        guard stat(tokenFile, &info) == 0 else { return nil }
        if info.st_mode & 0o077 != 0 {
            return "the agent token file \(tokenFile) can be read by other users (mode \(String(info.st_mode & 0o777, radix: 8))): "
                + "anyone who reads it can act as this agent; chmod 600 it"
        }
        if info.st_uid != geteuid() {
            return "the agent token file \(tokenFile) belongs to uid \(info.st_uid), not to this agent's user (uid \(geteuid())): "
                + "that user can read or replace it; chown it to the agent's user"
        }
        return nil
    }
}

/// The process environment as a dictionary (FoundationEssentials has `ProcessInfo`).
enum ProcessEnvironment {
    static var current: [String: String] { ProcessInfo.processInfo.environment }
}

extension String {
    /// The string without the given leading and trailing characters. A character made of several of them counts as
    /// one of them: "\r\n" is a single `Character` in Swift, and a file written with CRLF line ends must trim too.
    func trimmingCharacters(in set: Set<Character>) -> String {
        let trimmed = { (character: Character) in
            set.contains(character) || character.unicodeScalars.allSatisfy { set.contains(Character($0)) }
        }
        return String(self.drop(while: trimmed).reversed().drop(while: trimmed).reversed())
    }
}
