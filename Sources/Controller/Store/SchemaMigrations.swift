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
        ),
        Migration(
            version: 2,
            description: "rollouts and events",
            statements: [
                // One row per published release (from this version on): how it reaches the service's agents.
                // `stable_serial` is what agents not reached receive; `agent_order` a JSON array of agent ids.
                """
                CREATE TABLE rollouts (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    service TEXT NOT NULL,
                    serial INTEGER NOT NULL,
                    stable_serial INTEGER,
                    strategy TEXT NOT NULL,
                    wave_stable_seconds INTEGER NOT NULL,
                    max_failures INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    current_wave INTEGER NOT NULL,
                    agent_order TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    reason TEXT NOT NULL DEFAULT '',
                    UNIQUE (service, serial),
                    FOREIGN KEY (service, serial) REFERENCES releases (service, serial)
                )
                """,
                "CREATE INDEX rollouts_by_state ON rollouts (state)",
                // Publishes, wave changes, halts, operator actions and agents' failures, newest kept (bounded).
                // `agent_id` has no foreign key: the history should survive the removal of an agent.
                """
                CREATE TABLE events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at INTEGER NOT NULL,
                    service TEXT NOT NULL,
                    serial INTEGER,
                    kind TEXT NOT NULL,
                    message TEXT NOT NULL,
                    agent_id TEXT
                )
                """,
                "CREATE INDEX events_by_service ON events (service, id)",
            ]
        ),
        Migration(
            version: 3,
            description: "token ids, scopes, expiry, use counts, revocation",
            statements: [
                // The table is rebuilt (SQLite cannot add a primary key): every token gets a public id. `services` is
                // an enroll token's scope as a JSON array; NULL means any service (enroll tokens made before scopes
                // existed keep working as they did) and is the only value for other roles.
                """
                CREATE TABLE tokens_v3 (
                    id TEXT PRIMARY KEY,
                    hash TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL,
                    services TEXT,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    max_uses INTEGER,
                    use_count INTEGER NOT NULL DEFAULT 0,
                    last_used_at INTEGER,
                    revoked_at INTEGER
                )
                """,
                """
                INSERT INTO tokens_v3 (id, hash, name, role, created_at)
                SELECT 'tok_' || lower(hex(randomblob(8))), hash, name, role, created_at FROM tokens
                """,
                "DROP TABLE tokens",
                "ALTER TABLE tokens_v3 RENAME TO tokens",
                "CREATE INDEX tokens_by_name ON tokens (name)",
                // Agent tokens fetch only artifacts of their services' releases: looked up by digest.
                "CREATE INDEX releases_by_artifact ON releases (artifact_sha256)",
            ]
        ),
        Migration(
            // 5, not 4: the PostgreSQL store (wt-ha) takes 4. Versions need not be contiguous: each applies once, in order.
            version: 5,
            description: "trust roots, release signers and approvals, agents' trust root",
            statements: [
                // The signed trust roots operators published, one row per version (the chain agents follow). The
                // envelope is kept exactly as verified; `sha256` is of its payload.
                """
                CREATE TABLE trust_roots (
                    version INTEGER PRIMARY KEY,
                    envelope TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    published_by TEXT NOT NULL,
                    published_at INTEGER NOT NULL
                )
                """,
                // The release-role keys whose signatures verified (a JSON array of key ids) and how many the root
                // required when they were counted: below it, the release waits for approval. Releases stored before
                // roots existed met their threshold: 0 required.
                "ALTER TABLE releases ADD COLUMN signed_by TEXT NOT NULL DEFAULT '[]'",
                "ALTER TABLE releases ADD COLUMN signatures_required INTEGER NOT NULL DEFAULT 0",
                // The trust root each agent last reported (version, and why it cannot use a newer one or any).
                "ALTER TABLE agents ADD COLUMN trust_root_version INTEGER",
                "ALTER TABLE agents ADD COLUMN trust_root_problem TEXT",
            ]
        ),
    ]

    /// The newest schema version this binary knows.
    static var latestVersion: Int { all.last?.version ?? 0 }
}
