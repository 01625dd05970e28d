/// The versioned schema of the controller's SQL database.
///
/// Each migration runs once, in order, inside one transaction together with the row that records it in
/// `ferry_schema`, so a crash mid-migration leaves the database at the previous version. Never edit a released
/// migration: append a new one.
enum SchemaMigrations {
    struct Migration: Sendable {
        let version: Int
        let description: String
        let statements: [String]
    }

    /// The table recording applied versions. Created before anything else.
    static let versionTable = """
        CREATE TABLE IF NOT EXISTS ferry_schema (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )
        """

    static let all: [Migration] = [
        Migration(
            version: 1,
            description: "tokens, releases, agents, status",
            statements: [
                """
                CREATE TABLE tokens (
                    hash TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                )
                """,
                """
                CREATE TABLE releases (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    service TEXT NOT NULL,
                    serial INTEGER NOT NULL,
                    version TEXT NOT NULL,
                    artifact_sha256 TEXT NOT NULL,
                    artifact_size INTEGER NOT NULL,
                    envelope TEXT NOT NULL,
                    published_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE (service, serial)
                )
                """,
                """
                CREATE TABLE agents (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    hostname TEXT NOT NULL,
                    services TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE,
                    enrolled_at INTEGER NOT NULL,
                    last_seen INTEGER,
                    agent_version TEXT,
                    process_manager TEXT
                )
                """,
                """
                CREATE TABLE service_status (
                    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
                    service TEXT NOT NULL,
                    status TEXT NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (agent_id, service)
                )
                """,
                """
                CREATE TABLE status_history (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
                    received_at INTEGER NOT NULL,
                    report TEXT NOT NULL
                )
                """,
                "CREATE INDEX status_history_by_agent ON status_history (agent_id, id)",
            ]
        )
    ]

    /// The newest schema version this binary knows.
    static var latestVersion: Int { all.last?.version ?? 0 }
}
