import SQLKit

/// Where a `SQLControllerStore` keeps its rows: the connections, and how a write transaction runs.
protocol SQLStoreBackend: Sendable {
    /// Which SQL this database speaks where the two differ.
    var dialect: StoreDialect { get }
    /// The database as logs and errors name it: a file path, or a URL without its password.
    var location: String { get }
    /// Reads committed data; never waits for a writer.
    var readDB: any SQLDatabase { get }
    /// Runs `body` in one transaction, committed when it returns, rolled back when it throws.
    /// - Parameter exclusive: run alone among every writer of the database (every controller's): `true` for anything
    ///   that reads, checks, then writes. `false` only for transactions that touch one agent's own rows.
    func transaction<T: Sendable>(exclusive: Bool, _ body: (any SQLDatabase) async throws -> T) async throws -> T
    /// Closes the connections. No call may follow.
    func close() async throws
}
