import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The built `ferry-controller serve --tls-cert --tls-key` with a PKI made by `openssl` in the test: startup checks,
/// the operator CLI over HTTPS (right CA, wrong CA, expired certificate), and a certificate swap on SIGHUP.
@Suite(.serialized) struct NativeTLSTests {
    /// A test directory with a PKI, an operator key and tokens, and `serve` arguments for it.
    struct Setup {
        let directory: URL
        let certificates: TestCertificates
        let keyPrefix: String
        let operatorToken: String
        let enrollToken: String

        static func make(in directory: URL) async throws -> Setup {
            let pki = directory.appendingPathComponent("pki")
            try FileManager.default.createDirectory(at: pki, withIntermediateDirectories: true)
            let certificates = try TestCertificates.make(in: pki)
            let keyPrefix = directory.appendingPathComponent("operator").path
            let keygen = try await CommandLineEndToEndTests.cli(["keygen", "--out", keyPrefix])
            guard keygen.status == 0 else { throw FixtureError("keygen: \(keygen.errors)") }
            func token(_ role: String) async throws -> String {
                let run = try await CommandLineEndToEndTests.cli(
                    ["token", "create", "--data-dir", directory.appendingPathComponent("data").path, "--role", role]
                        + (role == "enroll" ? ["--any-service"] : [])
                )
                guard run.status == 0 else { throw FixtureError("token create: \(run.errors)") }
                return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            return Setup(
                directory: directory,
                certificates: certificates,
                keyPrefix: keyPrefix,
                operatorToken: try await token("operator"),
                enrollToken: try await token("enroll")
            )
        }

        /// `serve` arguments (after `--listen`) for a data directory and a certificate pair.
        func serveArguments(data: String = "data", certificate: String, key: String) -> [String] {
            [
                "--data-dir", directory.appendingPathComponent(data).path, "--trusted-key", keyPrefix + ".pub", "--tls-cert", certificate,
                "--tls-key", key,
            ]
        }

        /// An HTTPS client that trusts the test CA.
        var http: HTTPClient {
            var configuration = HTTPClient.Configuration()
            configuration.caFile = certificates.caFile
            return HTTPClient(configuration: configuration)
        }

        /// `ferry-controller publish` of a fresh artifact to `url`, with extra flags and environment.
        func publish(
            to url: String,
            version: String,
            arguments: [String] = [],
            environment: [String: String] = [:]
        ) async throws
            -> CommandLineEndToEndTests.Run
        {
            let artifact = try await CommandLineEndToEndTests.makeArtifact(in: directory, version: version)
            let ecosystem = directory.appendingPathComponent("ecosystem.json")
            try Data(#"{"apps": [{"name": "api", "script": "server.js"}]}"#.utf8).write(to: ecosystem)
            return try await CommandLineEndToEndTests.cli(
                [
                    "publish", "--controller", url, "--token", operatorToken, "--key", keyPrefix + ".key", "--service", "api", "--version", version,
                    "--artifact", artifact.path, "--ecosystem", ecosystem.path,
                ] + arguments,
                environment: environment
            )
        }

        /// The serials of `api` the controller at `url` stores, newest first.
        func serials(at url: String) async throws -> [Int64] {
            var request = HTTPClient.Request(url: url + "/v1/services/api/releases")
            request.setBearerToken(operatorToken)
            let response = try await http.send(request)
            if response.status == 404 { return [] }
            guard response.isSuccess else { throw FixtureError("listing releases: \(response.status)") }
            return try FleetDocument.array(JSONValue.parse(response.body).object?["releases"]).map {
                try RollbackCommand.release(from: $0).release.serial
            }
        }
    }

    // MARK: Startup

    struct StartupCase: Sendable, CustomTestStringConvertible {
        let name: String
        /// Certificate and key paths; `{dir}` is the PKI directory, `nil` leaves the flag out.
        let certificate: String?
        let key: String?
        let message: String

        var testDescription: String { "\(name) → \(message)" }
    }

    static let startupCases: [StartupCase] = [
        StartupCase(
            name: "no such certificate file",
            certificate: "{dir}/missing.pem",
            key: "{dir}/server.key",
            message: "cannot read the TLS certificate {dir}/missing.pem: No such file or directory"
        ),
        StartupCase(
            name: "the key of another certificate",
            certificate: "{dir}/server.pem",
            key: "{dir}/renewed.key",
            message: "the TLS key {dir}/renewed.key does not belong to the certificate {dir}/server.pem"
        ),
        StartupCase(
            name: "a certificate given as the key",
            certificate: "{dir}/server.pem",
            key: "{dir}/server.pem",
            message: "the TLS key {dir}/server.pem cannot be used: not a PEM private key"
        ),
        StartupCase(
            name: "a key given as the certificate",
            certificate: "{dir}/server.key",
            key: "{dir}/server.key",
            message: "the TLS certificate {dir}/server.key cannot be used"
        ),
        StartupCase(name: "an empty certificate file", certificate: "{dir}/empty.pem", key: "{dir}/server.key", message: "the file is empty"),
        StartupCase(
            name: "a certificate without its key",
            certificate: "{dir}/server.pem",
            key: nil,
            message: "--tls-cert is given without --tls-key"
        ),
    ]

    @Test func serveRefusesACertificateOrKeyItCannotUse() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-tls-startup") { directory in
            let setup = try await Setup.make(in: directory)
            let pki = setup.certificates.directory.path
            try Data().write(to: URL(fileURLWithPath: pki + "/empty.pem"))
            for row in Self.startupCases {
                var arguments = ["serve", "--listen", "127.0.0.1:0", "--data-dir", directory.appendingPathComponent("refused").path]
                arguments += ["--trusted-key", setup.keyPrefix + ".pub"]
                if let certificate = row.certificate { arguments += ["--tls-cert", certificate.replacingOccurrences(of: "{dir}", with: pki)] }
                if let key = row.key { arguments += ["--tls-key", key.replacingOccurrences(of: "{dir}", with: pki)] }
                let run = try await CommandLineEndToEndTests.cli(arguments)
                let message = row.message.replacingOccurrences(of: "{dir}", with: pki)
                #expect(run.status != 0, "\(row.name): it started")
                #expect(run.errors.contains(message), "\(row.name): \(run.errors)")
                #expect(!run.output.contains("listening on"), "\(row.name)")
                // Refused before the database is opened: no data directory is left behind.
                #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("refused").path), "\(row.name)")
            }
        }
    }

    // MARK: The operator CLI over HTTPS

    enum Served: Sendable { case current, expired }
    enum Trust: Sendable { case testCA, testCAFromEnvironment, otherCA, systemStore }

    struct OperatorCase: Sendable {
        let name: String
        let served: Served
        let trust: Trust
        /// `nil`: it publishes; otherwise a part of the error.
        let error: String?
    }

    static let operatorCases: [OperatorCase] = [
        OperatorCase(name: "--ca-file with the CA that signed the certificate", served: .current, trust: .testCA, error: nil),
        OperatorCase(name: "FERRY_CA_FILE works as --ca-file", served: .current, trust: .testCAFromEnvironment, error: nil),
        OperatorCase(
            name: "a CA that did not sign the certificate",
            served: .current,
            trust: .otherCA,
            error: "the server's certificate is not signed by a certificate authority this host trusts (unknown CA): "
                + "give the CA's certificate with --ca-file"
        ),
        OperatorCase(
            name: "the system trust store, which does not know the test CA",
            served: .current,
            trust: .systemStore,
            error: "not signed by a certificate authority this host trusts"
        ),
        OperatorCase(name: "an expired certificate", served: .expired, trust: .testCA, error: "the server's certificate has expired"),
    ]

    @Test func operatorCommandsOverHTTPS() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-tls-operator") { directory in
            let setup = try await Setup.make(in: directory)
            let pki = setup.certificates
            let current = try await ServerProcess(
                arguments: setup.serveArguments(certificate: pki.server.certificate, key: pki.server.key),
                logDirectory: directory
            )
            defer { current.stop() }
            let expired = try await ServerProcess(
                arguments: setup.serveArguments(data: "expired-data", certificate: pki.expired.certificate, key: pki.expired.key),
                logDirectory: directory
            )
            defer { expired.stop() }
            #expect(current.baseURL.hasPrefix("https://127.0.0.1:"), "\(current.baseURL)")
            #expect(expired.log.contains("The TLS certificate has expired"), "the server warns about its own expired certificate")

            var published: [Int64] = []
            for (index, row) in Self.operatorCases.enumerated() {
                let url = row.served == .current ? current.baseURL : expired.baseURL
                var arguments: [String] = []
                var environment: [String: String] = [:]
                switch row.trust {
                case .testCA: arguments = ["--ca-file", pki.caFile]
                case .testCAFromEnvironment: environment["FERRY_CA_FILE"] = pki.caFile
                case .otherCA: arguments = ["--ca-file", pki.otherCAFile]
                case .systemStore: break
                }
                let run = try await setup.publish(to: url, version: "1.0.\(index)", arguments: arguments, environment: environment)
                if let error = row.error {
                    #expect(run.status != 0, "\(row.name): published")
                    #expect(run.errors.contains(error), "\(row.name): \(run.errors)")
                } else {
                    #expect(run.status == 0, "\(row.name): \(run.errors)")
                    published.insert(Int64(published.count + 1), at: 0)
                }
                // Nothing reached a controller on a failed row.
                #expect(try await setup.serials(at: current.baseURL) == published, "\(row.name)")
            }
            let expiredArtifacts = (try? FileManager.default.contentsOfDirectory(atPath: directory.path + "/expired-data/artifacts")) ?? []
            #expect(expiredArtifacts.filter { $0 != "tmp" }.isEmpty, "nothing was uploaded to the controller with the expired certificate")

            // `rollout wait` asks again through failures that may pass, not through a certificate that will never verify:
            // it says so at once and exits 3 (it cannot watch), not 2 after its whole timeout.
            let started = ContinuousClock.now
            let wait = try await CommandLineEndToEndTests.cli([
                "rollout", "wait", "--controller", current.baseURL, "--token", setup.operatorToken, "--ca-file", pki.otherCAFile,
                "--service", "api", "--serial", "1", "--timeout", "10m",
            ])
            #expect(wait.status == 3, "\(wait.errors)")
            #expect(wait.errors.contains("not signed by a certificate authority this host trusts"), "\(wait.errors)")
            #expect(ContinuousClock.now - started < .seconds(60))
        }
    }

    // MARK: SIGHUP

    @Test func sighupSwapsTheCertificateForNewConnectionsWhileAParkedLongPollStaysUp() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-tls-reload") { directory in
            let setup = try await Setup.make(in: directory)
            let pki = setup.certificates
            let servedCertificate = directory.appendingPathComponent("served.pem").path
            let servedKey = directory.appendingPathComponent("served.key").path
            func serve(_ pair: TestCertificates.Pair) throws {
                for (source, target) in [(pair.certificate, servedCertificate), (pair.key, servedKey)] {
                    try? FileManager.default.removeItem(atPath: target)
                    try FileManager.default.copyItem(atPath: source, toPath: target)
                }
            }
            try serve(pki.server)
            let server = try await ServerProcess(
                arguments: setup.serveArguments(certificate: servedCertificate, key: servedKey),
                logDirectory: directory
            )
            defer { server.stop() }
            guard let port = Int(server.baseURL.split(separator: ":").last ?? "") else { throw FixtureError("no port in \(server.baseURL)") }
            #expect(try TestCertificates.servedCertificate(port: port) == (pki.server.serial, pki.server.fingerprint))

            // An agent whose long-poll is parked on a connection opened before the reload.
            let http = setup.http
            var enroll = HTTPClient.Request(
                method: .post,
                url: server.baseURL + "/v1/agents",
                body: Array(EnrollRequest(name: "web-1", hostname: "web-1", services: ["api"]).json.encoded())
            )
            enroll.setBearerToken(setup.enrollToken)
            let agent = try EnrollResponse(json: JSONValue.parse(try await http.send(enroll).body))
            let stateURL = server.baseURL + "/v1/agents/\(agent.agentID)/desired-state"
            let first = try await http.send(HTTPClient.Request(url: stateURL).withBearerToken(agent.token))
            let etag = try #require(first.headers["ETag"])
            let longPoll = Task {
                try await http.send(
                    HTTPClient.Request(url: stateURL + "?wait=60", headers: ["If-None-Match": etag], timeout: .seconds(90)).withBearerToken(
                        agent.token
                    )
                )
            }
            defer { longPoll.cancel() }
            try await Self.waitForWaiters(1, at: server.baseURL, http: http)

            // Renewed files, SIGHUP: new handshakes get the new certificate.
            try serve(pki.renewed)
            server.process.signal(SIGHUP)
            let deadline = ContinuousClock.now + .seconds(20)
            // The certificate is swapped first and the line logged after it: wait for both.
            while try TestCertificates.servedCertificate(port: port).serial != pki.renewed.serial || !server.log.contains("TLS certificate reloaded")
            {
                guard ContinuousClock.now < deadline else { throw FixtureError("still serving the old certificate, or not said: \(server.log)") }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try TestCertificates.servedCertificate(port: port).fingerprint == pki.renewed.fingerprint)
            #expect(server.process.isRunning)
            // The long-poll from before is still parked on its connection, and gets its answer on it.
            try await Self.waitForWaiters(1, at: server.baseURL, http: http)
            let publish = try await setup.publish(to: server.baseURL, version: "2.0.0", arguments: ["--ca-file", pki.caFile])
            #expect(publish.status == 0, "\(publish.errors)")
            let answer = try await longPoll.value
            #expect(answer.status == 200)
            #expect(answer.headers["ETag"] != etag)
            #expect(try DesiredState(json: JSONValue.parse(answer.body)).releases.count == 1)

            // A broken pair on the next SIGHUP is logged; the renewed certificate stays.
            try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: servedCertificate))
            server.process.signal(SIGHUP)
            let failedDeadline = ContinuousClock.now + .seconds(20)
            while !server.log.contains("TLS certificate reload failed") {
                guard ContinuousClock.now < failedDeadline else { throw FixtureError("no reload failure logged: \(server.log)") }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(server.log.contains("still serving the previous certificate"))
            #expect(try TestCertificates.servedCertificate(port: port).serial == pki.renewed.serial)
            #expect(try await http.send(HTTPClient.Request(url: server.baseURL + "/healthz")).status == 200)
            #expect(server.stop() == 0, "\(server.log)")
        }
    }

    /// A reload that finds an expired certificate where a valid one is served keeps the valid one (an old file copied
    /// into place by mistake failed every agent's next handshake); one that finds a valid certificate where an expired
    /// one is served takes it.
    @Test func aReloadKeepsAValidCertificateOverAnExpiredOne() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-tls-expired-reload") { directory in
            try FileManager.default.createDirectory(at: directory.appendingPathComponent("pki"), withIntermediateDirectories: true)
            let pki = try TestCertificates.make(in: directory.appendingPathComponent("pki"))
            let files = TLSCertificateStore.Files(
                certificate: directory.appendingPathComponent("served.pem").path,
                key: directory.appendingPathComponent("served.key").path
            )
            func serve(_ pair: TestCertificates.Pair) throws {
                for (source, target) in [(pair.certificate, files.certificate), (pair.key, files.key)] {
                    try? FileManager.default.removeItem(atPath: target)
                    try FileManager.default.copyItem(atPath: source, toPath: target)
                }
            }
            try serve(pki.server)
            let store = try TLSCertificateStore(files: files)
            try serve(pki.expired)
            #expect {
                try store.reload()
            } throws: { error in
                error is TLSFileError && "\(error)".contains("has expired")
            }
            #expect(store.summary.serial == pki.server.serial, "the valid certificate stays")

            // Served expired (started with it), a valid one replaces it, and an expired one replaces an expired one.
            let expiredStore = try TLSCertificateStore(files: files)
            #expect(expiredStore.summary.serial == pki.expired.serial)
            #expect(try expiredStore.reload().serial == pki.expired.serial)
            try serve(pki.renewed)
            #expect(try expiredStore.reload().serial == pki.renewed.serial)
        }
    }

    /// A reloaded certificate whose start is up to 5 minutes ahead (a renewal signed on a CA whose clock runs a little
    /// ahead, reloaded at once) counts as valid; one expired or starting later does not.
    @Test(arguments: [
        (starts: -3_600.0, ends: 86_400.0, valid: true),
        (starts: 120.0, ends: 86_400.0, valid: true),
        (starts: 299.0, ends: 86_400.0, valid: true),
        (starts: 301.0, ends: 86_400.0, valid: false),
        (starts: -86_400.0, ends: -1.0, valid: false),
    ])
    func aReloadAllowsAStartAFewMinutesAhead(_ row: (starts: Double, ends: Double, valid: Bool)) {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let summary = TLSCertificateStore.Summary(
            serial: "1",
            fingerprint: "",
            notValidBefore: now.addingTimeInterval(row.starts),
            notValidAfter: now.addingTimeInterval(row.ends),
            chainLength: 1
        )
        #expect((summary.validityProblem(at: now, skew: TLSCertificateStore.startSkew) == nil) == row.valid)
    }

    /// Waits until the controller's `/metrics` shows `count` parked long-polls.
    static func waitForWaiters(_ count: Int, at baseURL: String, http: HTTPClient) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let metrics = String(decoding: try await http.send(HTTPClient.Request(url: baseURL + "/metrics")).body, as: UTF8.self)
            let sample = metrics.split(separator: "\n").first { $0.hasPrefix("ferry_long_poll_waiters ") }
            if let sample, Double(sample.dropFirst("ferry_long_poll_waiters ".count)) == Double(count) { return }
            guard ContinuousClock.now < deadline else { throw FixtureError("/metrics never showed \(count) parked long-polls") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
