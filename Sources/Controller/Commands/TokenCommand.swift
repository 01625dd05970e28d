import ArgumentParser
import Foundation
import Logging
import Shared

/// `ferry-controller token`: token administration against the database directly.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create API tokens (works on the database directly, for bootstrap).",
        subcommands: [TokenCreateCommand.self]
    )
}

/// `ferry-controller token create --data-dir DIR --role ROLE [--name NAME]`.
struct TokenCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a token and print it once.",
        discussion: """
            Roles: operator (publish, roll back, view), enroll (agents trade it for their own token), viewer (dashboard \
            and fleet JSON). Only the token's SHA-256 is stored: copy it now, it cannot be shown again. Safe to run \
            while the server is running on the same data directory. The name is recorded as `publishedBy` on releases.
            """
    )

    @Option(name: .customLong("data-dir"), help: ArgumentHelp("The controller's data directory (or FERRY_DATA_DIR).", valueName: "DIR"))
    var dataDirectory: String?

    @Option(name: .long, help: ArgumentHelp("operator, enroll or viewer.", valueName: "ROLE"))
    var role: String

    @Option(name: .long, help: "A name for the token (default: the role).")
    var name: String?

    func validate() throws {
        guard let role = TokenRole(rawValue: role), TokenRole.creatable.contains(role) else {
            throw ValidationError("--role must be one of \(TokenRole.creatable.map(\.rawValue).joined(separator: ", ")); got \(role)")
        }
        if let name {
            guard !name.isEmpty, name.utf8.count <= 128, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                throw ValidationError("--name must be 1 to 128 printable characters")
            }
        }
    }

    func run() async throws {
        guard let role = TokenRole(rawValue: role) else { throw ValidationError("unknown role \(role)") }
        let directory = dataDirectory ?? ProcessInfo.processInfo.environment["FERRY_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "./ferry-data"
        var logger = Logger(label: "ferry.token")
        logger.logLevel = .warning
        let store: SQLiteControllerStore
        do {
            store = try await SQLiteControllerStore.open(.init(path: directory + "/ferry.sqlite"), logger: logger)
        } catch {
            throw CLIError("\(error)")
        }
        let token = Token.generate()
        do {
            try await store.createToken(hash: Token.digest(token), name: name ?? role.rawValue, role: role, at: Date())
            try await store.close()
        } catch {
            try? await store.close()
            throw CLIError("cannot store the token: \(error)")
        }
        Console.print(token)
    }
}
