import Foundation
import Logging
import Shared

/// `serve`'s settings from one source (flags, environment or config file). Sources are layered with `overlaid(by:)`:
/// flags over environment over config file over defaults.
struct ServeSettings: Equatable, Sendable {
    var listen: String?
    var dataDirectory: String?
    var trustedKeys: [String] = []
    var threshold: Int?
    /// A signed trust root file to pin instead of `trustedKeys`.
    var trustRoot: String?
    var pollSeconds: Int?
    var maxBodyBytes: Int64?
    var maxStatusBytes: Int64?
    var maxArtifactBytes: Int64?
    var statusHistory: Int?
    var logLevel: String?
    var tlsCertificate: String?
    var tlsKey: String?
    /// As given (`15s`, `2m`, `30`); parsed by `configuration()`.
    var headerTimeout: String?
    var idleTimeout: String?
    var maxConnections: Int?
    /// As given (`7d`, `12h`); parsed by `configuration()`.
    var removeSilentAgentsAfter: String?
    /// `postgres://...` (PostgreSQL, for several controllers), or `nil` for SQLite in the data directory.
    var database: String?
    var databasePoolSize: Int?
    /// As given (`30s`, `2m`); parsed by `configuration()`.
    var databaseStatementTimeout: String?
    var databaseCAFile: String?
    /// `FERRY_DATABASE_PASSWORD`: the database password when the URL carries none (environment only).
    var databasePassword: String?
    /// AWS's public certificates (PEM) for EC2 instance identity documents: when set, an enrollment token enrolls only
    /// an instance that proves its identity, once per instance.
    var instanceIdentityCertificate: String?
    /// The AWS accounts whose instances may enroll (with `instanceIdentityCertificate`).
    var instanceIdentityAccounts: [String] = []

    /// Environment twins of the flags. `FERRY_TRUSTED_KEYS` is a comma-separated list of paths.
    static func fromEnvironment(_ environment: [String: String]) throws(ConfigurationError) -> ServeSettings {
        func integer(_ name: String) throws(ConfigurationError) -> Int? {
            guard let text = environment[name], !text.isEmpty else { return nil }
            guard let value = Int(text) else { throw .invalidSetting(name: name, value: text, reason: "not an integer") }
            return value
        }
        func size(_ name: String) throws(ConfigurationError) -> Int64? {
            guard let text = environment[name], !text.isEmpty else { return nil }
            return try parseSize(text, name: name)
        }
        var settings = ServeSettings()
        settings.listen = environment["FERRY_LISTEN"].flatMap { $0.isEmpty ? nil : $0 }
        settings.dataDirectory = environment["FERRY_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        settings.trustedKeys = (environment["FERRY_TRUSTED_KEYS"] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        settings.threshold = try integer("FERRY_THRESHOLD")
        settings.trustRoot = environment["FERRY_TRUST_ROOT"].flatMap { $0.isEmpty ? nil : $0 }
        settings.pollSeconds = try integer("FERRY_POLL_SECONDS")
        settings.maxBodyBytes = try size("FERRY_MAX_BODY_BYTES")
        settings.maxStatusBytes = try size("FERRY_MAX_STATUS_BYTES")
        settings.maxArtifactBytes = try size("FERRY_MAX_ARTIFACT_BYTES")
        settings.statusHistory = try integer("FERRY_STATUS_HISTORY")
        settings.logLevel = environment["FERRY_LOG_LEVEL"].flatMap { $0.isEmpty ? nil : $0 }
        settings.tlsCertificate = environment["FERRY_TLS_CERT"].flatMap { $0.isEmpty ? nil : $0 }
        settings.tlsKey = environment["FERRY_TLS_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        settings.headerTimeout = environment["FERRY_HEADER_TIMEOUT"].flatMap { $0.isEmpty ? nil : $0 }
        settings.idleTimeout = environment["FERRY_IDLE_TIMEOUT"].flatMap { $0.isEmpty ? nil : $0 }
        settings.maxConnections = try integer("FERRY_MAX_CONNECTIONS")
        settings.removeSilentAgentsAfter = environment["FERRY_REMOVE_SILENT_AGENTS_AFTER"].flatMap { $0.isEmpty ? nil : $0 }
        settings.database = environment["FERRY_DATABASE"].flatMap { $0.isEmpty ? nil : $0 }
        settings.databasePoolSize = try integer("FERRY_DATABASE_POOL_SIZE")
        settings.databaseStatementTimeout = environment["FERRY_DATABASE_STATEMENT_TIMEOUT"].flatMap { $0.isEmpty ? nil : $0 }
        settings.databaseCAFile = environment["FERRY_DATABASE_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        settings.databasePassword = environment["FERRY_DATABASE_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        settings.instanceIdentityCertificate = environment["FERRY_INSTANCE_IDENTITY_CERT"].flatMap { $0.isEmpty ? nil : $0 }
        settings.instanceIdentityAccounts = (environment["FERRY_INSTANCE_IDENTITY_ACCOUNTS"] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        return settings
    }

    /// Reads a YAML or JSON config file whose keys are the flags' names in camelCase (`listen`, `dataDir`,
    /// `trustedKeys`, `threshold`, `trustRoot`, `pollSeconds`, `maxBodyBytes`, `maxStatusBytes`, `maxArtifactBytes`,
    /// `statusHistory`, `logLevel`, `tlsCert`, `tlsKey`, `headerTimeout`, `idleTimeout`, `maxConnections`,
    /// `removeSilentAgentsAfter`, `database`,
    /// `databasePoolSize`, `databaseStatementTimeout`, `databaseCAFile`, `instanceIdentityCert`,
    /// `instanceIdentityAccounts`). Unknown keys are errors. Relative paths (`dataDir`, `trustedKeys`, `trustRoot`,
    /// `tlsCert`, `tlsKey`, `databaseCAFile`, `instanceIdentityCert`) are relative to the file. Timeouts are seconds,
    /// as a number or a text like `15s` or `2m`. A database password belongs in `FERRY_DATABASE_PASSWORD`, not the file.
    static func fromFile(_ path: String) throws(ConfigurationError) -> ServeSettings {
        let data: [UInt8]
        do throws(SmallFile.ContentsError) {
            data = try SmallFile.contents(of: path, limit: 1 << 20)
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        let text = String(decoding: data, as: UTF8.self)
        let value: JSONValue
        if path.hasSuffix(".json") {
            do {
                value = try JSONValue.parse(Array(data))
            } catch {
                throw .unreadable(path: path, reason: "\(error)")
            }
        } else {
            value = try YAMLDocument.parse(text, source: path)
        }
        let base = (path as NSString).deletingLastPathComponent
        func resolve(_ file: String) -> String {
            file.hasPrefix("/") || base.isEmpty ? file : "\(base)/\(file)"
        }
        do {
            var reader = try ObjectReader(value, path: "")
            var settings = ServeSettings()
            settings.listen = try reader.optional("listen", Field.string(maxLength: 300))
            settings.dataDirectory = try reader.optional("dataDir", Field.string(maxLength: 4096)).map(resolve)
            settings.trustedKeys = try reader.optional("trustedKeys", stringList)?.map(resolve) ?? []
            settings.threshold = try reader.optional("threshold", Field.integer(in: 1...64)).map { Int($0) }
            settings.trustRoot = try reader.optional("trustRoot", Field.string(maxLength: 4096)).map(resolve)
            settings.pollSeconds = try reader.optional("pollSeconds", Field.integer(in: 1...3600)).map { Int($0) }
            settings.maxBodyBytes = try reader.optional("maxBodyBytes", sizeField)
            settings.maxStatusBytes = try reader.optional("maxStatusBytes", sizeField)
            settings.maxArtifactBytes = try reader.optional("maxArtifactBytes", sizeField)
            settings.statusHistory = try reader.optional("statusHistory", Field.integer(in: 1...10_000)).map { Int($0) }
            settings.logLevel = try reader.optional("logLevel", Field.string(maxLength: 16))
            settings.tlsCertificate = try reader.optional("tlsCert", Field.string(maxLength: 4096)).map(resolve)
            settings.tlsKey = try reader.optional("tlsKey", Field.string(maxLength: 4096)).map(resolve)
            settings.headerTimeout = try reader.optional("headerTimeout", timeoutField)
            settings.idleTimeout = try reader.optional("idleTimeout", timeoutField)
            settings.maxConnections = try reader.optional("maxConnections", Field.integer(in: 1...1_000_000)).map { Int($0) }
            settings.removeSilentAgentsAfter = try reader.optional("removeSilentAgentsAfter", Field.string(maxLength: 40))
            settings.database = try reader.optional("database", Field.string(maxLength: 4096))
            settings.databasePoolSize = try reader.optional("databasePoolSize", Field.integer(in: 1...1000)).map { Int($0) }
            settings.databaseStatementTimeout = try reader.optional("databaseStatementTimeout", timeoutField)
            settings.databaseCAFile = try reader.optional("databaseCAFile", Field.string(maxLength: 4096)).map(resolve)
            settings.instanceIdentityCertificate = try reader.optional("instanceIdentityCert", Field.string(maxLength: 4096)).map(resolve)
            settings.instanceIdentityAccounts = try reader.optional("instanceIdentityAccounts", stringList) ?? []
            try reader.rejectUnknownFields()
            return settings
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
    }

    private static func stringList(_ value: JSONValue, _ path: String) throws(DocumentError) -> [String] {
        guard case .array(let items) = value else { throw .wrongType(field: path, expected: "array", got: value.typeName) }
        var texts: [String] = []
        for (index, item) in items.enumerated() { texts.append(try Field.string(maxLength: 4096)(item, "\(path)[\(index)]")) }
        return texts
    }

    private static func sizeField(_ value: JSONValue, _ path: String) throws(DocumentError) -> Int64 {
        switch value {
        case .string(let text):
            guard let size = ByteSize.parse(text) else { throw .invalidValue(field: path, reason: "\"\(text)\" is not a size like 2M or 4G") }
            return size
        default:
            return try Field.integer(in: 1...(1 << 50))(value, path)
        }
    }

    private static func timeoutField(_ value: JSONValue, _ path: String) throws(DocumentError) -> String {
        switch value {
        case .string(let text): return String(text.prefix(40))
        default: return "\(try Field.integer(in: 0...(1 << 40))(value, path))"
        }
    }

    /// Parses a timeout: whole seconds, optionally with `s`, or minutes with `m` (`15`, `15s`, `2m`), within `range`.
    static func parseTimeout(_ text: String, name: String, range: ClosedRange<Duration>) throws(ConfigurationError) -> Duration {
        var digits = Substring(text)
        var factor: Int64 = 1
        if digits.hasSuffix("m") {
            factor = 60
            digits = digits.dropLast()
        } else if digits.hasSuffix("s") {
            digits = digits.dropLast()
        }
        guard let number = Int64(digits), number >= 0 else {
            throw .invalidSetting(name: name, value: text, reason: "expected whole seconds like 15s, or minutes like 2m")
        }
        let (seconds, overflow) = number.multipliedReportingOverflow(by: factor)
        guard !overflow, range.contains(.seconds(seconds)) else {
            throw .invalidSetting(
                name: name,
                value: text,
                reason: "must be from \(range.lowerBound.components.seconds)s to \(range.upperBound.components.seconds)s"
            )
        }
        return .seconds(seconds)
    }

    /// Parses a size: bytes, or a number with K, M or G.
    static func parseSize(_ text: String, name: String) throws(ConfigurationError) -> Int64 {
        guard let size = ByteSize.parse(text) else {
            throw .invalidSetting(name: name, value: text, reason: "not a size: give bytes or a number with K, M or G (like 512M)")
        }
        return size
    }

    /// These settings, with every value `other` sets replacing this one's.
    func overlaid(by other: ServeSettings) -> ServeSettings {
        ServeSettings(
            listen: other.listen ?? listen,
            dataDirectory: other.dataDirectory ?? dataDirectory,
            trustedKeys: other.trustedKeys.isEmpty ? trustedKeys : other.trustedKeys,
            threshold: other.threshold ?? threshold,
            trustRoot: other.trustRoot ?? trustRoot,
            pollSeconds: other.pollSeconds ?? pollSeconds,
            maxBodyBytes: other.maxBodyBytes ?? maxBodyBytes,
            maxStatusBytes: other.maxStatusBytes ?? maxStatusBytes,
            maxArtifactBytes: other.maxArtifactBytes ?? maxArtifactBytes,
            statusHistory: other.statusHistory ?? statusHistory,
            logLevel: other.logLevel ?? logLevel,
            tlsCertificate: other.tlsCertificate ?? tlsCertificate,
            tlsKey: other.tlsKey ?? tlsKey,
            headerTimeout: other.headerTimeout ?? headerTimeout,
            idleTimeout: other.idleTimeout ?? idleTimeout,
            maxConnections: other.maxConnections ?? maxConnections,
            removeSilentAgentsAfter: other.removeSilentAgentsAfter ?? removeSilentAgentsAfter,
            database: other.database ?? database,
            databasePoolSize: other.databasePoolSize ?? databasePoolSize,
            databaseStatementTimeout: other.databaseStatementTimeout ?? databaseStatementTimeout,
            databaseCAFile: other.databaseCAFile ?? databaseCAFile,
            databasePassword: other.databasePassword ?? databasePassword,
            instanceIdentityCertificate: other.instanceIdentityCertificate ?? instanceIdentityCertificate,
            instanceIdentityAccounts: other.instanceIdentityAccounts.isEmpty ? instanceIdentityAccounts : other.instanceIdentityAccounts
        )
    }

    /// The log level (default `info`).
    func resolvedLogLevel() throws(ConfigurationError) -> Logger.Level {
        guard let logLevel else { return .info }
        guard let level = Logger.Level(rawValue: logLevel.lowercased()) else {
            throw .invalidSetting(
                name: "--log-level",
                value: logLevel,
                reason: "must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        return level
    }

    /// The controller configuration, loading the trusted keys or the pinned trust root.
    func configuration() throws -> ControllerConfiguration {
        var configuration = try ControllerConfiguration(trustAnchor: trustAnchor())
        if let listen {
            let (host, port) = try Self.parseListen(listen)
            configuration.host = host
            configuration.port = port
        }
        if let dataDirectory { configuration.dataDirectory = dataDirectory }
        if let pollSeconds {
            guard (1...3600).contains(pollSeconds) else {
                throw ConfigurationError.invalidSetting(name: "--poll-seconds", value: "\(pollSeconds)", reason: "must be from 1 to 3600")
            }
            configuration.pollInterval = .seconds(pollSeconds)
        }
        if let maxBodyBytes {
            // An envelope may legitimately be this large; a lower limit would refuse valid releases.
            guard maxBodyBytes >= Int64(Limits.envelopeBytes), maxBodyBytes <= 1 << 30 else {
                throw ConfigurationError.invalidSetting(
                    name: "--max-body-bytes",
                    value: "\(maxBodyBytes)",
                    reason: "must be from \(Limits.envelopeBytes) (the largest envelope) to 1G"
                )
            }
            configuration.maximumBodyBytes = Int(maxBodyBytes)
        }
        if let maxStatusBytes {
            guard (1024...(64 << 20)).contains(maxStatusBytes) else {
                throw ConfigurationError.invalidSetting(name: "--max-status-bytes", value: "\(maxStatusBytes)", reason: "must be from 1K to 64M")
            }
            configuration.maximumStatusBytes = Int(maxStatusBytes)
        }
        if let maxArtifactBytes { configuration.maximumArtifactBytes = maxArtifactBytes }
        if let statusHistory {
            // The config file's range, for the flag and the environment too: the history is kept per agent, so a
            // limit of millions is that many rows per agent before any is trimmed.
            guard (1...10_000).contains(statusHistory) else {
                throw ConfigurationError.invalidSetting(name: "--status-history", value: "\(statusHistory)", reason: "must be from 1 to 10000")
            }
            configuration.statusHistoryLimit = statusHistory
        }
        switch (tlsCertificate, tlsKey) {
        case (let certificate?, let key?):
            configuration.tls = TLSCertificateStore.Files(certificate: certificate, key: key)
        case (.some, nil):
            throw ConfigurationError.missing("--tls-cert is given without --tls-key (FERRY_TLS_KEY, tlsKey): give the certificate's key too")
        case (nil, .some):
            throw ConfigurationError.missing("--tls-key is given without --tls-cert (FERRY_TLS_CERT, tlsCert): give the certificate too")
        case (nil, nil):
            break
        }
        if let headerTimeout {
            configuration.connectionLimits.headerTimeout = try Self.parseTimeout(
                headerTimeout,
                name: "--header-timeout",
                range: ConnectionLimits.headerTimeoutRange
            )
        }
        if let idleTimeout {
            configuration.connectionLimits.idleTimeout = try Self.parseTimeout(
                idleTimeout,
                name: "--idle-timeout",
                range: ConnectionLimits.idleTimeoutRange
            )
        }
        if let maxConnections {
            guard ConnectionLimits.maximumConnectionsRange.contains(maxConnections) else {
                throw ConfigurationError.invalidSetting(
                    name: "--max-connections",
                    value: "\(maxConnections)",
                    reason: "must be from 1 to \(ConnectionLimits.maximumConnectionsRange.upperBound)"
                )
            }
            configuration.connectionLimits.maximumConnections = maxConnections
        }
        if let removeSilentAgentsAfter {
            let after = try ExpiryText.parse(removeSilentAgentsAfter, name: "--remove-silent-agents-after")
            guard after >= SilentAgentRemoval.minimum else {
                throw ConfigurationError.invalidSetting(
                    name: "--remove-silent-agents-after",
                    value: removeSilentAgentsAfter,
                    reason: "must be at least 1h: an agent is stale after three poll intervals, removed only long after"
                )
            }
            configuration.removeSilentAgentsAfter = after
        }
        configuration.database = try databaseSelection()
        if let instanceIdentityCertificate {
            configuration.instanceIdentity = try InstanceIdentityVerifier(
                certificateFile: instanceIdentityCertificate,
                accounts: instanceIdentityAccounts
            )
        } else if let account = instanceIdentityAccounts.first {
            throw ConfigurationError.invalidSetting(
                name: "--instance-identity-account",
                value: account,
                reason: "applies with --instance-identity-cert only (AWS's certificate the documents are checked against)"
            )
        }
        return configuration
    }

    /// Where trust starts: the `--trust-root` file, or a root built from the `--trusted-key` files and `--threshold`.
    func trustAnchor() throws -> ControllerConfiguration.TrustAnchor {
        if let trustRoot {
            guard trustedKeys.isEmpty, threshold == nil else {
                throw ConfigurationError.invalidSetting(
                    name: "--trust-root",
                    value: trustRoot,
                    reason: "give either --trust-root or --trusted-key/--threshold, not both: the root names its keys and thresholds"
                )
            }
            do {
                let bytes = try CLIInput.read(trustRoot, limit: Limits.envelopeBytes)
                return .root(try TrustedRoot.pinning(try Envelope.decode(bytes)))
            } catch {
                throw ConfigurationError.invalidSetting(name: "--trust-root", value: trustRoot, reason: "\(error)")
            }
        }
        guard !trustedKeys.isEmpty else {
            throw ConfigurationError.missing(
                "no trusted key: give --trusted-key FILE.pub (or FERRY_TRUSTED_KEYS, or trustedKeys in the config file), or a "
                    + "signed trust root with --trust-root FILE (FERRY_TRUST_ROOT, trustRoot); the controller refuses releases its "
                    + "agents would refuse"
            )
        }
        let keys = try trustedKeys.map { try PublicKey(contentsOf: $0) }
        let policy: TrustPolicy
        do {
            policy = try TrustPolicy(trustedKeys: keys, threshold: threshold ?? 1)
        } catch {
            throw ConfigurationError.invalidSetting(name: "--threshold", value: "\(threshold ?? 1)", reason: "\(error)")
        }
        return .trustedKeys(policy)
    }

    /// SQLite in the data directory, or the PostgreSQL database `database` names with the pool settings.
    func databaseSelection() throws(ConfigurationError) -> DatabaseSelection {
        guard let database else {
            for (name, value) in [
                ("--database-pool-size", databasePoolSize.map(String.init)), ("--database-statement-timeout", databaseStatementTimeout),
                ("--database-ca-file", databaseCAFile),
            ] {
                if let value {
                    throw .invalidSetting(name: name, value: value, reason: "applies to a PostgreSQL --database only (none is given: SQLite)")
                }
            }
            return .sqlite
        }
        var postgres = try PostgresStoreConfiguration.parse(database, name: "--database", password: databasePassword)
        if let databasePoolSize {
            guard (1...1000).contains(databasePoolSize) else {
                throw .invalidSetting(name: "--database-pool-size", value: "\(databasePoolSize)", reason: "must be from 1 to 1000")
            }
            postgres.poolSize = databasePoolSize
        }
        if let databaseStatementTimeout {
            postgres.statementTimeout = try Self.parseTimeout(
                databaseStatementTimeout,
                name: "--database-statement-timeout",
                range: .seconds(1)...(.seconds(3600))
            )
        }
        if let databaseCAFile {
            guard FileManager.default.isReadableFile(atPath: databaseCAFile) else {
                throw .invalidSetting(name: "--database-ca-file", value: databaseCAFile, reason: "no such readable file")
            }
            // A CA given means: check the server against it.
            try postgres.checkServer(against: databaseCAFile, name: "--database-ca-file")
        }
        return .postgres(postgres)
    }

    /// `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces).
    static func parseListen(_ text: String) throws(ConfigurationError) -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":") else {
            throw .invalidSetting(name: "--listen", value: text, reason: "expected HOST:PORT, like 127.0.0.1:8080")
        }
        var host = String(text[..<colon])
        let portText = String(text[text.index(after: colon)...])
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw .invalidSetting(name: "--listen", value: text, reason: "the port must be a number from 0 to 65535")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        return (host, port)
    }
}
