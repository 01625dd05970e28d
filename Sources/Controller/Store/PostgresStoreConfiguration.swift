import Foundation

/// How the controller reaches a PostgreSQL database (`serve --database postgres://...`): several controllers behind a
/// load balancer share it.
struct PostgresStoreConfiguration: Sendable, Equatable {
    /// TLS to the database, as libpq's `sslmode` names it.
    enum TLSMode: String, Sendable, Equatable, CaseIterable {
        /// Plain TCP (loopback, or a private link you trust).
        case disable
        /// TLS when the server offers it, without checking its certificate (libpq's default).
        case prefer
        /// TLS always, without checking the certificate (encrypts; does not stop an impostor).
        case require
        /// TLS, the certificate checked against the CA (`sslrootcert` or the system store), not the host name.
        case verifyCA = "verify-ca"
        /// TLS, the certificate and the host name checked. What a production database (RDS: its CA bundle) should use.
        case verifyFull = "verify-full"
    }

    /// The server's host name or address.
    var host: String
    /// The server's port. Default 5432.
    var port: Int = 5432
    /// The role to log in as.
    var user: String
    /// Its password (`nil`: none, e.g. `trust` or a `.pgpass`-less loopback set-up).
    var password: String?
    /// The database name.
    var database: String
    /// TLS to the database. Default `.prefer` (libpq's default); use `.verifyFull` in production.
    var tls: TLSMode = .prefer
    /// Whether `tls` was given (the URL's `sslmode`), not the default: a CA file then upgrades only the default.
    var tlsGiven = false
    /// PEM CA certificates the server's certificate must chain to (`sslrootcert`, `--database-ca-file`). Default `nil`:
    /// the system trust store.
    var caFile: String?
    /// Connections each controller keeps at most (its pool; one more listens for notifications). Default 10.
    var poolSize: Int = 10
    /// A statement running longer is cancelled by the server (`statement_timeout`). Default 30 s.
    var statementTimeout: Duration = .seconds(30)
    /// How long a new connection may take. Default 10 s.
    var connectTimeout: Duration = .seconds(10)
    /// Whether a database of an older schema is migrated. Default `true` (`serve`); the token commands turn it off
    /// (`SchemaMigrator.migrate`).
    var upgradesSchema = true

    /// How long the controller waits for the answer to one statement before it gives the connection up: the server's own
    /// cancellation (`statementTimeout`) plus the time a connection may take. Only a silent database or network is
    /// past it.
    var statementDeadline: Duration { statementTimeout + connectTimeout }

    /// The database as logs and errors show it: the URL without the password.
    var redacted: String {
        let userPart = user.addingPercentEncoding(withAllowedCharacters: .urlUserAllowed) ?? user
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(userPart)@\(hostPart):\(port)/\(database)?sslmode=\(tls.rawValue)"
    }

    /// Whether `text` names a PostgreSQL database (`postgres://` or `postgresql://`).
    static func isPostgresURL(_ text: String) -> Bool {
        let lower = text.lowercased()
        return lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://")
    }

    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE&sslrootcert=FILE]`.
    ///
    /// - Parameters:
    ///   - name: the setting's name in errors (`--database`, `FERRY_DATABASE`).
    ///   - password: used when the URL carries none (`FERRY_DATABASE_PASSWORD`), so the secret need not appear in a
    ///     process listing or a config file.
    /// - Throws: `ConfigurationError.invalidSetting` naming what is wrong; the password never appears in it.
    static func parse(
        _ text: String,
        name: String = "--database",
        password fallbackPassword: String? = nil
    ) throws(ConfigurationError)
        -> PostgresStoreConfiguration
    {
        func invalid(_ reason: String) -> ConfigurationError {
            .invalidSetting(name: name, value: RedactedDatabaseURL.redact(text), reason: reason)
        }
        guard isPostgresURL(text) else { throw invalid("expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE") }
        guard let components = URLComponents(string: text) else { throw invalid("not a URL") }
        guard let host = components.host, !host.isEmpty else { throw invalid("the URL names no host") }
        guard let user = components.user, !user.isEmpty else { throw invalid("the URL names no user (postgres://USER@HOST/DATABASE)") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw invalid("the URL names no database (postgres://USER@HOST/DATABASE)") }
        var configuration = PostgresStoreConfiguration(host: host, user: user, database: database)
        configuration.password = components.password ?? fallbackPassword
        if let port = components.port {
            guard (1...65535).contains(port) else { throw invalid("the port must be from 1 to 65535") }
            configuration.port = port
        }
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let value = item.value, let mode = TLSMode(rawValue: value) else {
                    throw invalid("sslmode must be one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                configuration.tls = mode
                configuration.tlsGiven = true
            case "sslrootcert":
                guard let value = item.value, !value.isEmpty else { throw invalid("sslrootcert names no file") }
                configuration.caFile = value
            default:
                throw invalid("unknown parameter \(item.name) (known: sslmode, sslrootcert)")
            }
        }
        if let caFile = configuration.caFile { try configuration.checkServer(against: caFile, name: name) }
        return configuration
    }

    /// A CA file given means the server is checked against it (docs/ha.md): with no `sslmode`, `verify-full`; with
    /// `require`, `verify-ca` (as libpq reads `require` when a root CA file is there); with `prefer` or `disable`, which
    /// would not check it (nor, for `prefer`, keep TLS on), refused. A CA in the URL (`sslrootcert=`) used to leave the
    /// default `prefer`, and `require` ignored any CA file: the CA was loaded and nothing was checked, so anyone on the
    /// path could stand in for the database (and answer the token lookups).
    mutating func checkServer(against caFile: String, name: String) throws(ConfigurationError) {
        self.caFile = caFile
        guard tlsGiven else {
            tls = .verifyFull
            return
        }
        switch tls {
        case .verifyFull, .verifyCA: break
        case .require: tls = .verifyCA
        case .prefer, .disable:
            throw .invalidSetting(
                name: name,
                value: redacted,
                reason: "a CA file (\(caFile)) with sslmode=\(tls.rawValue) would not be used to check the server: use sslmode=verify-full "
                    + "(or verify-ca), or leave sslmode out"
            )
        }
    }
}

/// A database URL as errors show it: the password replaced.
///
/// The password ends at the **last** `@` of the URL, not at the end of the authority: the URLs that fail to parse are
/// the ones whose password holds an unencoded `/`, `?` or `#` (a generated base64 password), and reading the
/// authority as ending there found no `@` and showed the whole URL. An `@` later in the URL (a path or query) only
/// hides more than needed.
enum RedactedDatabaseURL {
    static func redact(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://") else { return text }
        let rest = text[schemeEnd.upperBound...]
        guard let at = rest.lastIndex(of: "@"), let colon = rest[..<at].firstIndex(of: ":") else { return text }
        return String(text[..<rest.index(after: colon)]) + "REDACTED" + String(rest[at...])
    }
}
