import Foundation
import Logging
import Shared

/// Everything `serve` needs to know. Every field but `trustAnchor` has a default.
struct ControllerConfiguration: Sendable {
    /// Where the controller's trust starts.
    enum TrustAnchor: Sendable {
        /// `--trusted-key` flags: root 1 is built from these keys and threshold (the compatibility path).
        case trustedKeys(TrustPolicy)
        /// `--trust-root FILE`: an operator's signed root, pinned.
        case root(TrustedRoot)
    }

    /// Address to listen on. Default `127.0.0.1`.
    var host: String = "127.0.0.1"
    /// Port to listen on; 0 picks a free one (printed at start). Default 8080.
    var port: Int = 8080
    /// SQLite database and artifact files live here. Default `./ferry-data`.
    var dataDirectory: String = "./ferry-data"
    /// The root releases and newer roots are checked from (followed through the published chain). Required: the
    /// controller rejects releases agents would refuse anyway.
    var trustAnchor: TrustAnchor
    /// The poll interval agents are told to use; three of them without a status report marks an agent stale.
    /// Default 15 s.
    var pollInterval: Duration = .seconds(15)
    /// Largest JSON request body (an envelope is at most about 1.6 MiB). Default 2 MiB.
    var maximumBodyBytes: Int = 2 << 20
    /// Largest status report. Default 1 MiB.
    var maximumStatusBytes: Int = 1 << 20
    /// Largest artifact. Default 4 GiB.
    var maximumArtifactBytes: Int64 = 4 << 30
    /// Status reports kept per agent. Default 50.
    var statusHistoryLimit: Int = 50
    /// Agents that sent no status report for this long are removed, as `agents remove` does (`SilentAgentRemoval`):
    /// the instances an autoscaling group terminated. Default `nil`: never.
    var removeSilentAgentsAfter: Duration? = nil
    /// Longest `?wait=` a desired-state request may ask for. Default 60 s.
    var maximumWait: Duration = .seconds(60)
    /// How often rolling rollouts are evaluated between status reports. Default 1 s.
    var rolloutTickInterval: Duration = .seconds(1)
    /// With a shared PostgreSQL database: how the change listener reconnects, and how often the controller
    /// resynchronizes while it cannot (`PostgresChangeRelay`). Defaults 1 s and 30 s.
    var changeListenerReconnectDelay: Duration = .seconds(1)
    var unheardResyncInterval: Duration = .seconds(30)
    /// When the controller lets go of the code pages it ran once (`CodePageService`). Default `nil`: never, for a
    /// controller in a test process; `serve` sets the default schedule unless `FERRY_CODE_PAGES=keep`.
    var codePages: CodePageService.Schedule? = nil
    /// Native TLS: the certificate chain and key served (reloaded on SIGHUP). Default `nil`: plain HTTP, for loopback
    /// or behind a TLS-terminating load balancer or proxy.
    var tls: TLSCertificateStore.Files?
    /// Header and idle timeouts and the connection cap (defaults sized for 10,000 agents).
    var connectionLimits = ConnectionLimits()
    /// Where the store lives. Default `.sqlite`: `databasePath` in the data directory.
    var database: DatabaseSelection = .sqlite
    /// EC2 enrolment attestation: when set, an enrollment token enrolls only an instance whose signed identity document
    /// verifies and names an allowed account, and each instance once. Default `nil`: any holder of the token enrolls.
    var instanceIdentity: InstanceIdentityVerifier?

    init(trustPolicy: TrustPolicy) {
        self.trustAnchor = .trustedKeys(trustPolicy)
    }

    init(trustRoot: TrustedRoot) {
        self.trustAnchor = .root(trustRoot)
    }

    init(trustAnchor: TrustAnchor) {
        self.trustAnchor = trustAnchor
    }

    /// The `--trusted-key` policy, when the controller is configured with trusted keys rather than a root file.
    var trustPolicy: TrustPolicy? {
        if case .trustedKeys(let policy) = trustAnchor { return policy }
        return nil
    }

    /// The trust the controller checks with.
    /// - Throws: `RootError` when the trusted keys cannot make a root (more than `Root.maximumKeys` of them).
    func trust() throws(RootError) -> ControllerTrust {
        switch trustAnchor {
        case .trustedKeys(let policy): try ControllerTrust(trustedKeys: policy)
        case .root(let root): ControllerTrust(pinned: root)
        }
    }

    /// The SQLite database file (with `database` `.sqlite`).
    var databasePath: String { dataDirectory + "/ferry.sqlite" }
    /// The artifact directory.
    var artifactDirectory: String { dataDirectory + "/artifacts" }
    /// After this long without a status report an agent is shown as stale.
    var staleAfter: Duration { pollInterval * 3 }
}

/// Which database the controller's store uses.
enum DatabaseSelection: Sendable, Equatable {
    /// `<data-dir>/ferry.sqlite`: one controller (the embedded default).
    case sqlite
    /// A PostgreSQL database several controllers share.
    case postgres(PostgresStoreConfiguration)

    /// Opens the store this selects (SQLite at `sqlitePath`). `upgradesSchema`: whether a database of an older schema
    /// is migrated (`serve`), or refused (the other commands: see `SchemaMigrator.migrate`).
    /// - Throws: `StoreError.cannotOpen`, `StoreError.schemaTooNew`.
    func openStore(sqlitePath: String, logger: Logger, upgradesSchema: Bool = true) async throws -> SQLControllerStore {
        switch self {
        case .sqlite:
            var configuration = SQLiteStoreBackend.Configuration(path: sqlitePath)
            configuration.upgradesSchema = upgradesSchema
            return try await SQLControllerStore.open(configuration, logger: logger)
        case .postgres(var configuration):
            configuration.upgradesSchema = upgradesSchema
            return try await SQLControllerStore.open(configuration, logger: logger)
        }
    }
}
