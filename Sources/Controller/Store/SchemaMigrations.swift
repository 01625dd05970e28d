/// The versioned schema of the controller's SQL database.
///
/// Each migration runs once, in order, inside one transaction together with the row that records it in
/// `ferry_schema`, so a crash mid-migration leaves the database at the previous version. Never edit a released
/// migration: append a new one. Statements are written in SQLite's spelling and translated for PostgreSQL by
/// `StoreDialect.schemaStatement(_:)`; `SchemaMigrator` runs them (one controller at a time on PostgreSQL).
enum SchemaMigrations {
    struct Migration: Sendable {
        let version: Int
        let description: String
        /// The statements, in SQLite's spelling.
        let statements: [String]
        /// PostgreSQL's statements, for a migration whose SQLite text does not translate (`nil`: translate `statements`).
        var postgresStatements: [String]? = nil

        /// The statements as `dialect` runs them.
        func statements(for dialect: StoreDialect) -> [String] {
            switch dialect {
            case .sqlite: statements
            case .postgres: postgresStatements ?? statements.map(dialect.schemaStatement)
            }
        }
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
            ],
            // PostgreSQL can add a key in place; ids as SQLite makes them (`tok_` and 16 hex), from md5 of random text.
            postgresStatements: [
                "ALTER TABLE tokens DROP CONSTRAINT tokens_pkey",
                "ALTER TABLE tokens ADD COLUMN id TEXT",
                "UPDATE tokens SET id = 'tok_' || substr(md5(random()::text || clock_timestamp()::text || hash), 1, 16)",
                "ALTER TABLE tokens ALTER COLUMN id SET NOT NULL",
                "ALTER TABLE tokens ADD PRIMARY KEY (id)",
                "ALTER TABLE tokens ADD CONSTRAINT tokens_hash_key UNIQUE (hash)",
                "ALTER TABLE tokens ADD COLUMN services TEXT",
                "ALTER TABLE tokens ADD COLUMN expires_at BIGINT",
                "ALTER TABLE tokens ADD COLUMN max_uses BIGINT",
                "ALTER TABLE tokens ADD COLUMN use_count BIGINT NOT NULL DEFAULT 0",
                "ALTER TABLE tokens ADD COLUMN last_used_at BIGINT",
                "ALTER TABLE tokens ADD COLUMN revoked_at BIGINT",
                "CREATE INDEX tokens_by_name ON tokens (name)",
                "CREATE INDEX releases_by_artifact ON releases (artifact_sha256)",
            ]
        ),
        Migration(
            version: 4,
            description: "artifact bytes in the database, rollout health timers (several controllers on PostgreSQL)",
            statements: [
                // An artifact whose row exists is complete: its chunks are written in the same transaction.
                """
                CREATE TABLE artifacts (
                    sha256 TEXT PRIMARY KEY,
                    size INTEGER NOT NULL,
                    chunk_bytes INTEGER NOT NULL,
                    created_at INTEGER NOT NULL
                )
                """,
                """
                CREATE TABLE artifact_chunks (
                    sha256 TEXT NOT NULL REFERENCES artifacts (sha256) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    data BLOB NOT NULL,
                    PRIMARY KEY (sha256, seq)
                )
                """,
                // Since when each agent of an open rollout has been healthy on its serial: the wave timers, so the
                // controller that takes over driving rollouts continues them instead of starting them again.
                """
                CREATE TABLE rollout_health (
                    rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
                    agent_id TEXT NOT NULL,
                    healthy_since INTEGER NOT NULL,
                    PRIMARY KEY (rollout_id, agent_id)
                )
                """,
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
        Migration(
            version: 6,
            description: "each status's version, serial, phase and health in columns of their own (the fleet view)",
            statements: [
                // What the fleet view counts, filters and orders on, written with each status by the store, so that a
                // view over 10,000 agents reads columns instead of parsing every status (docs/benchmarks.md). The JSON
                // in `status` stays the record; rollouts read it. Backfilled from it here.
                "ALTER TABLE service_status ADD COLUMN version TEXT",
                "ALTER TABLE service_status ADD COLUMN serial INTEGER",
                "ALTER TABLE service_status ADD COLUMN phase TEXT",
                "ALTER TABLE service_status ADD COLUMN health TEXT",
                """
                UPDATE service_status SET version = json_extract(status, '$.version'), serial = json_extract(status, '$.serial'),
                    phase = json_extract(status, '$.phase'), health = json_extract(status, '$.health')
                """,
            ],
            // Each status parsed once (`::jsonb` per field would parse it four times). A NUL an older controller stored,
            // escaped as `\u0000`, is no `jsonb` (PostgreSQL refuses the escape): read as U+FFFD here, as version 12 then
            // stores it, else the migration failed and the controller never started again.
            postgresStatements: [
                "ALTER TABLE service_status ADD COLUMN version TEXT",
                "ALTER TABLE service_status ADD COLUMN serial BIGINT",
                "ALTER TABLE service_status ADD COLUMN phase TEXT",
                "ALTER TABLE service_status ADD COLUMN health TEXT",
                """
                UPDATE service_status AS t SET version = j.s ->> 'version', serial = (j.s ->> 'serial')::BIGINT,
                    phase = j.s ->> 'phase', health = j.s ->> 'health'
                FROM (SELECT agent_id, service, REPLACE(status, '\\u0000', '\\ufffd')::jsonb AS s FROM service_status) AS j
                WHERE t.agent_id = j.agent_id AND t.service = j.service
                """,
            ]
        ),
        Migration(
            version: 7,
            description: "each status's number of failures in a column of its own (the rollout views)",
            statements: [
                // With the columns of version 6, what a rollout view needs of a status that lists no failure and is not
                // failed or rolled back: its JSON is read only for the others (docs/benchmarks.md). NULL (a row an older
                // controller wrote) reads the JSON too.
                "ALTER TABLE service_status ADD COLUMN failure_count INTEGER",
                """
                UPDATE service_status SET failure_count = CASE WHEN json_type(status, '$.failures') = 'array'
                    THEN json_array_length(status, '$.failures') ELSE 0 END
                """,
            ],
            postgresStatements: [
                "ALTER TABLE service_status ADD COLUMN failure_count INTEGER",
                """
                UPDATE service_status AS t SET failure_count = CASE WHEN jsonb_typeof(j.s -> 'failures') = 'array'
                    THEN jsonb_array_length(j.s -> 'failures') ELSE 0 END
                FROM (SELECT agent_id, service, REPLACE(status, '\\u0000', '\\ufffd')::jsonb AS s FROM service_status) AS j
                WHERE t.agent_id = j.agent_id AND t.service = j.service
                """,
            ]
        ),
        Migration(
            version: 8,
            description: "the hostname each agent reported before its last report (identity conflicts across controllers)",
            statements: [
                // Set from `hostname` by every status write before it replaces it, and returned by the write: a controller
                // then sees the hostname another controller stored in between, which is how two hosts sharing one
                // identity are noticed behind a load balancer that keeps each on its own controller (AgentIdentityWatch).
                "ALTER TABLE agents ADD COLUMN hostname_before TEXT"
            ]
        ),
        Migration(
            version: 9,
            description: "each agent's identity conflict, for every controller and after a restart",
            statements: [
                // Written at each switch-back of a standing conflict (`recordIdentityConflict`), read by the agent's page:
                // the two hostnames (a JSON array), when the conflict was first noticed and when a report last switched
                // back. NULL: none was ever noticed. Cleared when the agent is enrolled afresh (a new token).
                "ALTER TABLE agents ADD COLUMN conflict_hostnames TEXT",
                "ALTER TABLE agents ADD COLUMN conflict_noticed_at INTEGER",
                "ALTER TABLE agents ADD COLUMN conflict_last_switch_at INTEGER",
            ]
        ),
        Migration(
            version: 10,
            description: "the EC2 instance each attested agent was enrolled on, one agent per instance",
            statements: [
                // Set at enrolment from a verified instance identity document (`serve --instance-identity-cert`), NULL
                // otherwise. Unique: two enrolments of one instance racing on two controllers see one success. NULLs
                // do not collide (SQLite and PostgreSQL alike).
                "ALTER TABLE agents ADD COLUMN instance_id TEXT",
                "CREATE UNIQUE INDEX agents_instance_id ON agents (instance_id)",
            ]
        ),
        Migration(
            version: 11,
            description: "changes announced to the other controllers by the transactions that commit them (PostgreSQL)",
            // One controller on SQLite: nobody listens.
            statements: [],
            postgresStatements: ClusterChangeTriggers.statements
        ),
        Migration(
            version: 12,
            description: "no NUL in stored statuses",
            // Status reports are refused with a NUL in their text now (`ServiceStatus.text`); one an older controller
            // stored, escaped as `\u0000` in the JSON text, would no longer read back (and PostgreSQL never read it as
            // `jsonb`): it becomes U+FFFD. The filter matches a superset (no LIKE escape character is involved, which
            // SQLite and PostgreSQL treat alike); REPLACE changes only the escapes.
            statements: [
                #"UPDATE service_status SET status = REPLACE(status, '\u0000', '\ufffd') WHERE status LIKE '%u0000%'"#,
                #"UPDATE status_history SET report = REPLACE(report, '\u0000', '\ufffd') WHERE report LIKE '%u0000%'"#,
            ]
        ),
        Migration(
            version: 13,
            description: "every EC2 instance ever enrolled with an attestation, kept after its agent is removed",
            // An enrollment token enrolls an attested instance once: removing its agent (by hand, or for its silence
            // once the instance is terminated) must not let a copy of the instance's identity document enrol it again.
            statements: [
                """
                CREATE TABLE IF NOT EXISTS enrolled_instances (
                    instance_id TEXT PRIMARY KEY,
                    agent_name TEXT NOT NULL,
                    enrolled_at INTEGER NOT NULL
                )
                """,
                "INSERT INTO enrolled_instances (instance_id, agent_name, enrolled_at) SELECT instance_id, name, enrolled_at FROM agents "
                    + "WHERE instance_id IS NOT NULL ON CONFLICT (instance_id) DO NOTHING",
            ]
        ),
        Migration(
            version: 14,
            description: "events by agent, for the cap on the failures one agent reports",
            // `EventRetention.perAgent`: an agent's own rolled-back and refused events are pruned to its newest after
            // each insert, which reads this index.
            statements: ["CREATE INDEX IF NOT EXISTS events_by_agent ON events (agent_id, id)"]
        ),
        Migration(
            version: 15,
            description: "when the wave timers of each open rollout were last looked at",
            // Written by the controller driving rollouts whenever it saves a rollout's timers, and every few seconds
            // while they stay as they are: a controller taking over continues timers looked at within a status's
            // freshness, and starts them again after an outage of every controller (nothing showed the agents healthy
            // meanwhile). NULL: never recorded (a rollout under way when this was added): started again.
            statements: ["ALTER TABLE rollouts ADD COLUMN timers_observed_at INTEGER"],
            postgresStatements: ["ALTER TABLE rollouts ADD COLUMN IF NOT EXISTS timers_observed_at BIGINT"]
        ),
    ]

    /// The newest schema version this binary knows.
    static var latestVersion: Int { all.last?.version ?? 0 }
}
