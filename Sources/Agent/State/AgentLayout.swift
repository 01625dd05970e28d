import Shared

/// Where the agent keeps things under its state directory (DESIGN §3).
///
/// ```
/// state.json
/// trust-root.json                         the trust roots accepted after the pin ({"chain": [envelope, ...]})
/// trust-pin.json                          what enroll pinned: the root file's digest or the trusted keys' ids (TrustPin)
/// processes.json                          the app processes last seen in the process manager's table
/// machine.json                            the machine this state directory was enrolled on (MachineCheck)
/// artifacts/<sha256>                      verified artifacts; <sha256>.part while downloading
/// services/<svc>/releases/<serial>-<sha12>/  extracted trees, never modified after activation
/// services/<svc>/current                  symlink, switched atomically
/// services/<svc>/ecosystem.json           the generated PM2 ecosystem
/// supervisor/                             the builtin supervisor's socket, table and logs
/// ```
struct AgentLayout: Sendable {
    let stateDir: String

    var stateFile: String { "\(stateDir)/state.json" }
    var trustRootFile: String { "\(stateDir)/trust-root.json" }
    var processLedgerFile: String { "\(stateDir)/processes.json" }
    var machineFile: String { "\(stateDir)/machine.json" }
    /// Held by the one agent process (or enrolment) working on the directory (`StateDirectoryLock`).
    var lockFile: String { "\(stateDir)/agent.lock" }
    var artifactsDir: String { "\(stateDir)/artifacts" }
    var servicesDir: String { "\(stateDir)/services" }
    var supervisorHome: String { "\(stateDir)/supervisor" }
    /// The process manager the apps run under (`ProcessManagerChoice`): `pm2` or `builtin`.
    var processManagerFile: String { "\(stateDir)/process-manager" }

    func serviceDir(_ service: String) -> String { "\(servicesDir)/\(service)" }
    func releasesDir(_ service: String) -> String { "\(serviceDir(service))/releases" }
    func currentLink(_ service: String) -> String { "\(serviceDir(service))/current" }
    func ecosystemFile(_ service: String) -> String { "\(serviceDir(service))/ecosystem.json" }
    /// Where pm2 is given an app `--only` cannot select, in a file of its own for the one call (`PM2ProcessManager.file`).
    func singleAppFilesDir(_ service: String) -> String { "\(serviceDir(service))/\(Self.singleAppFilesDirName)" }
    static let singleAppFilesDirName = "apps"

    /// The directory name of an extracted release: `<serial>-<first 12 hex of the sha256>`.
    static func releaseDirectoryName(serial: Int64, sha256: SHA256Digest) -> String {
        "\(serial)-\(sha256.hex.prefix(12))"
    }

    func releaseDir(_ service: String, directoryName: String) -> String { "\(releasesDir(service))/\(directoryName)" }
}
