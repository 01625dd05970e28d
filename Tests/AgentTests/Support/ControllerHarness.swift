import Foundation
import Shared
import TestSupport

/// A real `ferry-controller serve` process on a loopback port, and the operator calls tests make against it.
///
/// With `certificates` it serves HTTPS (the `server` pair, copied to files `reloadCertificate` can replace) and the
/// test's own client trusts that PKI's CA.
final class ControllerHarness {
    let dataDir: URL
    let logDir: URL
    let trustedKeys: [String]
    let certificates: TestCertificates?
    /// A PostgreSQL database URL shared with other controllers (`serve --database`, `token create --database`);
    /// `nil`: SQLite in the data directory.
    let database: String?
    private(set) var process: ChildProcess?
    private(set) var url = ""
    private(set) var port = 0
    private var restarts = 0
    /// Names its log files (`LABEL-N.out`).
    let label: String
    let http: HTTPClient
    /// A command `serve` runs under (`ip netns exec NAME`: a controller in a network namespace of the test's own).
    var wrapper: [String] = []
    /// Variables `serve` gets on top of this process's environment.
    var environment: [String: String] = [:]

    init(
        dataDir: URL,
        logDir: URL,
        trustedKeys: [String],
        certificates: TestCertificates? = nil,
        database: String? = nil,
        label: String = "controller"
    ) {
        self.dataDir = dataDir
        self.database = database
        self.label = label
        self.logDir = logDir
        self.trustedKeys = trustedKeys
        self.certificates = certificates
        var configuration = HTTPClient.Configuration()
        configuration.caFile = certificates?.caFile
        http = HTTPClient(configuration: configuration)
    }

    /// The certificate and key files `serve` is given (TLS only).
    var servedCertificate: String { dataDir.deletingLastPathComponent().appendingPathComponent("served-tls.pem").path }
    var servedKey: String { dataDir.deletingLastPathComponent().appendingPathComponent("served-tls.key").path }

    /// Puts `pair` where `serve` reads its certificate, and sends SIGHUP so new connections use it.
    func reloadCertificate(_ pair: TestCertificates.Pair) throws {
        try copyServed(pair)
        guard let process, process.signal(SIGHUP) else { throw HarnessError("the controller is not running") }
    }

    private func copyServed(_ pair: TestCertificates.Pair) throws {
        for (source, target) in [(pair.certificate, servedCertificate), (pair.key, servedKey)] {
            try? FileManager.default.removeItem(atPath: target + ".new")
            try FileManager.default.copyItem(atPath: source, toPath: target + ".new")
            // Replaced in one step, as a certificate renewal tool would.
            guard rename(target + ".new", target) == 0 else { throw HarnessError("cannot replace \(target)") }
        }
    }

    /// Starts the server (on `port`, or a reserved one) and waits until it listens. With `trustRoot`, it pins that
    /// signed root file (`--trust-root`) instead of trusting `trustedKeys`. A reserved port (`LoopbackPorts`, below the
    /// ephemeral range), not one the kernel picks: tests restart the controller, or start a rogue one, on the same port,
    /// and while it is free any outgoing connection of the machine could take a port of the ephemeral range.
    func start(port: Int = 0, trustRoot: String? = nil, extraArguments: [String] = []) async throws {
        let port = port == 0 ? try LoopbackPorts.reserve() : port
        var arguments = ["serve", "--listen", "127.0.0.1:\(port)", "--data-dir", dataDir.path]
        if let database { arguments += ["--database", database] }
        if let trustRoot {
            arguments += ["--trust-root", trustRoot]
        } else {
            for key in trustedKeys { arguments += ["--trusted-key", key] }
        }
        if let certificates {
            if !FileManager.default.fileExists(atPath: servedCertificate) { try copyServed(certificates.server) }
            arguments += ["--tls-cert", servedCertificate, "--tls-key", servedKey]
        }
        restarts += 1
        let command = wrapper + [TestPaths.executable("ferry-controller")] + arguments + extraArguments
        let child = try ChildProcess(
            command[0],
            Array(command.dropFirst()),
            environment: environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(environment) { $1 },
            logDirectory: logDir,
            label: "\(label)-\(restarts)"
        )
        process = child
        let scheme = certificates == nil ? "http://" : "https://"
        let line = try await child.waitForLine { $0.contains("listening on \(scheme)") }
        guard let range = line.range(of: scheme) else { throw HarnessError("no URL in \(line)") }
        url = String(line[range.lowerBound...]).trimmingCharacters(in: .whitespaces)
        self.port = Int(url.split(separator: ":").last ?? "") ?? 0
    }

    func stop() async {
        await process?.terminate()
    }

    /// `ferry-controller token create`.
    func token(role: String, name: String? = nil) throws -> String {
        var arguments = ["token", "create", "--role", role] + (database.map { ["--database", $0] } ?? ["--data-dir", dataDir.path])
        if let name { arguments += ["--name", name] }
        if role == "enroll" { arguments.append("--any-service") }
        let result = try Command.run(TestPaths.executable("ferry-controller"), arguments)
        guard result.status == 0 else { throw HarnessError("token create failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Uploads an artifact file; returns its reference as a release would carry it.
    func upload(_ file: URL, token: String) async throws -> ArtifactReference {
        let bytes = try Array(Data(contentsOf: file))
        let response = try await http.send(
            HTTPClient.Request(method: .post, url: "\(url)/v1/artifacts", headers: ["Authorization": "Bearer \(token)"], body: bytes)
        )
        guard response.isSuccess else { throw HarnessError("upload failed: \(response.status) \(String(decoding: response.body, as: UTF8.self))") }
        let digest = SHA256.hash(bytes)
        return ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
    }

    /// Posts a signed envelope to `/v1/releases`; returns the HTTP status and body.
    @discardableResult
    func publish(_ envelope: Envelope, token: String, query: String = "") async throws -> (Int, String) {
        let response = try await http.send(
            HTTPClient.Request(
                method: .post,
                url: "\(url)/v1/releases\(query.isEmpty ? "" : "?\(query)")",
                headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"],
                body: Array(envelope.encoded())
            )
        )
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    /// `GET <path>` with a token, parsed as JSON.
    func get(_ path: String, token: String) async throws -> JSONValue {
        let response = try await http.send(HTTPClient.Request(url: "\(url)\(path)", headers: ["Authorization": "Bearer \(token)"]))
        guard response.isSuccess else { throw HarnessError("GET \(path): HTTP \(response.status) \(String(decoding: response.body, as: UTF8.self))") }
        return try JSONValue.parse(response.body)
    }

    /// `GET /v1/fleet`.
    func fleet(token: String) async throws -> JSONValue {
        let response = try await http.send(HTTPClient.Request(url: "\(url)/v1/fleet", headers: ["Authorization": "Bearer \(token)"]))
        guard response.isSuccess else { throw HarnessError("fleet: HTTP \(response.status)") }
        return try JSONValue.parse(response.body)
    }
}
