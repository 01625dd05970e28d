import ArgumentParser
import Foundation
import Logging
import Shared

/// `ferry-controller token`: token administration against the database directly.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create, list and revoke API tokens (works on the database directly; safe while the server runs).",
        subcommands: [TokenCreateCommand.self, TokenListCommand.self, TokenRevokeCommand.self]
    )
}

/// `--config`, `--data-dir` and `--database` with their environment twins, and opening the store they name: resolved
/// as `serve` resolves them (flags over environment over config file), so a command run with the server's config file
/// opens the server's store, and checks a PostgreSQL server against the same `databaseCAFile`.
struct DataDirectoryOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "serve's config file (or FERRY_CONFIG): its dataDir, database and databaseCAFile name the store. Flags and the environment win over it.",
            valueName: "FILE"
        )
    )
    var config: String?

    @Option(name: .customLong("data-dir"), help: ArgumentHelp("The controller's data directory (or FERRY_DATA_DIR).", valueName: "DIR"))
    var dataDirectory: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The controllers' PostgreSQL database (or FERRY_DATABASE; password in FERRY_DATABASE_PASSWORD), instead of SQLite in --data-dir.",
            valueName: "postgres://..."
        )
    )
    var database: String?

    /// What names and opens the store, from the flags, the environment and the config file (in that order): the data
    /// directory, the database URL and password, and the PostgreSQL CA file and statement timeout. Nothing else of the
    /// file or the environment is read, so a setting only `serve` uses cannot stop a token command.
    func storeSettings(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ServeSettings {
        do {
            var file = ServeSettings()
            if let path = config ?? environment["FERRY_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) {
                file = try ServeSettings.fromFile(path)
            }
            var fromEnvironment = ServeSettings()
            let variables: [(String, WritableKeyPath<ServeSettings, String?>)] = [
                ("FERRY_DATA_DIR", \.dataDirectory), ("FERRY_DATABASE", \.database), ("FERRY_DATABASE_PASSWORD", \.databasePassword),
                ("FERRY_DATABASE_CA_FILE", \.databaseCAFile), ("FERRY_DATABASE_STATEMENT_TIMEOUT", \.databaseStatementTimeout),
            ]
            for (name, field) in variables {
                fromEnvironment[keyPath: field] = environment[name].flatMap { $0.isEmpty ? nil : $0 }
            }
            var flags = ServeSettings()
            flags.dataDirectory = dataDirectory
            flags.database = database
            let resolved = file.overlaid(by: fromEnvironment).overlaid(by: flags)
            var settings = ServeSettings()
            settings.dataDirectory = resolved.dataDirectory
            settings.database = resolved.database
            settings.databasePassword = resolved.databasePassword
            settings.databaseCAFile = resolved.databaseCAFile
            settings.databaseStatementTimeout = resolved.databaseStatementTimeout
            return settings
        } catch {
            throw CLIError("\(error)")
        }
    }

    /// Whether a flag, the environment or the config file names the database (a data directory or a PostgreSQL URL),
    /// rather than the default `./ferry-data` of the directory the command happens to run in.
    func namesTheDatabase(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Bool {
        let settings = try storeSettings(environment: environment)
        return settings.dataDirectory != nil || settings.database != nil
    }

    /// Runs `body` with the store the options name (SQLite in the data directory, or PostgreSQL), closing it afterwards.
    /// - Parameter mustExist: refuse a directory without a database (listing or revoking in the wrong place must not
    ///   create an empty one). A PostgreSQL database is always there (its schema is created when missing).
    func withStore<T>(mustExist: Bool, _ body: (SQLControllerStore, String) async throws -> T) async throws -> T {
        let settings = try storeSettings()
        let directory = settings.dataDirectory ?? "./ferry-data"
        let path = directory + "/ferry.sqlite"
        var logger = Logger(label: "ferry.token")
        logger.logLevel = .warning
        let selection: DatabaseSelection
        do {
            selection = try settings.databaseSelection()
        } catch {
            throw CLIError("\(error)")
        }
        var creates = false
        if selection == .sqlite, !FileManager.default.fileExists(atPath: path) {
            if mustExist {
                throw CLIError(
                    "no controller database at \(path): give the data directory of ferry-controller serve with --data-dir DIR (or its config file with --config FILE)"
                )
            }
            // A new database only in a missing or empty directory, or one holding only what a controller keeps there: a
            // mistyped --data-dir that names a directory in use (`/srv`, a home directory) made an empty database there,
            // made the directory private, and printed a token no controller knows.
            // A volume's own entries (`lost+found`, hidden ones such as `.snapshot`) do not count: a fresh volume mounted
            // there is empty.
            let ours: Set<String> = [
                "artifacts", "token-revocations", "ferry.sqlite-wal", "ferry.sqlite-shm", "ferry.sqlite-journal", "lost+found",
            ]
            if let entries = try? FileManager.default.contentsOfDirectory(atPath: directory),
                let other = entries.sorted().first(where: { !ours.contains($0) && !$0.hasPrefix(".") })
            {
                throw CLIError(
                    "no controller database at \(path), and \(directory) holds \(other), which is not a controller's: is it the data "
                        + "directory of ferry-controller serve? A new database is made only in a missing or empty directory"
                )
            }
            creates = true
        }
        let store: SQLControllerStore
        do {
            store = try await selection.openStore(sqlitePath: path, logger: logger, upgradesSchema: false)
        } catch {
            throw CLIError("\(error)")
        }
        if creates { Console.error("note: no controller database at \(path): made a new one") }
        do {
            let result = try await body(store, directory)
            try await store.close()
            return result
        } catch {
            try? await store.close()
            throw error
        }
    }
}

/// `ferry-controller token create --data-dir DIR --role ROLE [--name NAME] [--service S... | --any-service]
/// [--expires DURATION] [--max-uses N]`.
struct TokenCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a token and print it once.",
        discussion: """
            Roles: operator (publish, roll back, manage tokens and agents, view), enroll (instances trade it for their own \
            agent token), viewer (dashboard and read-only JSON). An enroll token is scoped: --service NAME (repeatable) \
            names the services it may enroll for, or --any-service allows every service (one of them is required). \
            --max-uses N bounds how many agents it enrolls; --expires DURATION (30m, 12h, 7d) bounds any token's life.

            Only the token's SHA-256 is stored: copy it now, it cannot be shown again. Its public id (tok_...) is printed \
            on standard error; `token list` and `token revoke` use it. The name is recorded as `publishedBy` on releases.
            """
    )

    @OptionGroup var data: DataDirectoryOptions

    @Option(name: .long, help: ArgumentHelp("operator, enroll or viewer.", valueName: "ROLE"))
    var role: String

    @Option(name: .long, help: "A name for the token (default: the role).")
    var name: String?

    @Option(name: .long, help: ArgumentHelp("Enroll tokens: a service it may enroll agents for. Repeatable.", valueName: "NAME"))
    var service: [String] = []

    @Flag(name: .long, help: "Enroll tokens: allow enrolling for every service (instead of --service).")
    var anyService = false

    @Option(name: .long, help: ArgumentHelp("The token stops working after this long: 30m, 12h, 7d.", valueName: "DURATION"))
    var expires: String?

    @Option(name: .long, help: ArgumentHelp("Enroll tokens: how many agents it may enroll.", valueName: "N"))
    var maxUses: Int?

    @Flag(name: .long, help: "Print the token with its record ({token, id, name, role, ...}) as JSON on standard output.")
    var json = false

    func validate() throws {
        guard let role = TokenRole(rawValue: role), TokenRole.creatable.contains(role) else {
            throw ValidationError("--role must be one of \(TokenRole.creatable.map(\.rawValue).joined(separator: ", ")); got \(role)")
        }
        if let name {
            guard !name.isEmpty, name.utf8.count <= 128, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                throw ValidationError("--name must be 1 to 128 printable characters")
            }
        }
        for name in service where !Release.isValidServiceName(name) {
            throw ValidationError("--service \(name) must match ^[a-z0-9][a-z0-9-]{0,62}$")
        }
        if role == .enroll {
            guard service.isEmpty == anyService else {
                throw ValidationError(
                    service.isEmpty
                        ? "an enroll token needs a scope: --service NAME (repeatable) for the services it may enroll, or --any-service"
                        : "give --service or --any-service, not both"
                )
            }
        } else {
            guard service.isEmpty, !anyService, maxUses == nil else {
                throw ValidationError("--service, --any-service and --max-uses are for enroll tokens only")
            }
        }
        if let maxUses, !(1...1_000_000).contains(maxUses) {
            throw ValidationError("--max-uses must be from 1 to 1000000")
        }
        if let expires { _ = try ExpiryText.parse(expires, name: "--expires") }
    }

    func run() async throws {
        guard let role = TokenRole(rawValue: role) else { throw ValidationError("unknown role \(role)") }
        let scope: ServiceScope? = role == .enroll ? (anyService ? .anyService : ServiceScope.only(service)) : nil
        let now = Date()
        let expiresAt = try expires.map { now.addingTimeInterval(Double(try ExpiryText.parse($0, name: "--expires").components.seconds)) }
        let token = Token.generate()
        // A new database only where one was named: run from another directory without --data-dir, the command would
        // make an empty `./ferry-data` and print a token the controller has never heard of.
        let record = try await data.withStore(mustExist: !(try data.namesTheDatabase())) { store, _ in
            do {
                return try await store.createToken(
                    hash: Token.digest(token),
                    name: name ?? role.rawValue,
                    role: role,
                    scope: scope,
                    expiresAt: expiresAt,
                    maxUses: maxUses,
                    at: now
                )
            } catch {
                throw CLIError("cannot store the token: \(error)")
            }
        }
        var details = ["role \(role.rawValue)"]
        if let scope { details.append("for \(scope.text)") }
        if let expiresAt { details.append("expires \(Timestamp.format(expiresAt))") }
        if let maxUses { details.append("at most \(maxUses) use(s)") }
        Console.error("created token \(record.id) (\(details.joined(separator: ", ")))")
        if json {
            var fields = record.json.object ?? [:]
            fields["token"] = .string(token)
            Console.print(String(decoding: JSONValue.object(fields).encoded(), as: UTF8.self))
            return
        }
        Console.print(token)
    }
}

/// `ferry-controller token list --data-dir DIR [--json]`.
struct TokenListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List tokens: id, name, role, scope, created, last used, expiry, uses, state (never the secret).",
        discussion: "Agent tokens are not listed: `ferry-controller agents` lists agents, `agents remove NAME` revokes one's token."
    )

    @OptionGroup var data: DataDirectoryOptions

    @Flag(name: .long, help: "Print the tokens as JSON instead of a table.")
    var json = false

    func run() async throws {
        let tokens = try await data.withStore(mustExist: true) { store, _ in try await store.tokens() }
        if json {
            Console.print(String(decoding: JSONValue.array(tokens.map(\.json)).encoded(), as: UTF8.self))
            return
        }
        guard !tokens.isEmpty else {
            Console.print("no tokens (create one with ferry-controller token create)")
            return
        }
        Console.print(Self.table(tokens, now: Date()))
    }

    static func table(_ tokens: [TokenRecord], now: Date) -> String {
        let rows = tokens.map { token in
            [
                token.id, token.name, token.role.rawValue, token.scope?.text ?? "-", Timestamp.format(token.createdAt),
                token.lastUsedAt.map(Timestamp.format) ?? "never", token.expiresAt.map(Timestamp.format) ?? "never",
                token.role == .enroll ? "\(token.uses)/\(token.maxUses.map(String.init) ?? "unlimited")" : "-", state(of: token, now: now),
            ]
        }
        return TextTable.render(headers: ["ID", "NAME", "ROLE", "SCOPE", "CREATED", "LAST USED", "EXPIRES", "USES", "STATE"], rows: rows)
    }

    static func state(of token: TokenRecord, now: Date) -> String {
        if let revokedAt = token.revokedAt { return "revoked \(Timestamp.format(revokedAt))" }
        if token.isExpired(at: now) { return "expired" }
        if let maxUses = token.maxUses, token.uses >= maxUses { return "used up" }
        return "active"
    }
}

/// `ferry-controller token revoke --data-dir DIR ID|NAME`.
struct TokenRevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke a token by id or name: refused at once on every route, also by a server already running.",
        discussion: """
            A name shared by several active tokens is refused with their ids: revoke by id then. The running server \
            learns of the revocation through <data-dir>/token-revocations, which this command touches after committing.
            """
    )

    @OptionGroup var data: DataDirectoryOptions

    @Argument(help: ArgumentHelp("The token's id (tok_...) or name.", valueName: "ID|NAME"))
    var token: String

    @Flag(name: .long, help: "Print the revoked token's record as JSON.")
    var json = false

    func run() async throws {
        let selector = token
        let revoked = try await data.withStore(mustExist: true) { store, directory in
            let chosen = try Self.resolve(selector, in: try await store.tokens())
            guard let revoked = try await store.revokeToken(id: chosen.id, at: Date()) else {
                throw CLIError("token \(chosen.id) disappeared while revoking it")
            }
            // Controllers sharing a PostgreSQL database heard it from the commit (`ClusterChangeTriggers`).
            if store.backend is PostgresStoreBackend { return revoked }
            do {
                try TokenRevocations(dataDirectory: directory).bump()
            } catch {
                throw CLIError("token \(revoked.id) is revoked in the database, but \(error)")
            }
            return revoked
        }
        if json {
            Console.print(String(decoding: revoked.json.encoded(), as: UTF8.self))
            return
        }
        Console.print("revoked token \(revoked.id) (\(revoked.name), role \(revoked.role.rawValue))")
    }

    /// The token `selector` names: by id, else by name among tokens not yet revoked.
    /// - Throws: `CLIError` for no match, an already revoked token, or a name shared by several tokens (listing their ids).
    static func resolve(_ selector: String, in tokens: [TokenRecord]) throws -> TokenRecord {
        if let token = tokens.first(where: { $0.id == selector }) {
            if let revoked = token.revokedAt { throw CLIError("token \(token.id) was already revoked at \(Timestamp.format(revoked))") }
            return token
        }
        let named = tokens.filter { $0.name == selector }
        let active = named.filter { $0.revokedAt == nil }
        switch active.count {
        case 1:
            return active[0]
        case 0:
            if let revoked = named.first?.revokedAt {
                throw CLIError("token \(selector) was already revoked at \(Timestamp.format(revoked))")
            }
            throw CLIError("no token has the id or name \(selector) (ferry-controller token list shows them)")
        default:
            throw CLIError(
                "\(active.count) tokens are named \(selector): \(active.map(\.id).joined(separator: ", ")); revoke one by its id"
            )
        }
    }
}
