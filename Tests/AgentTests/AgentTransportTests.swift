import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The agent's transport rules, with the built `ferry-agent`: plain HTTP only on loopback unless
/// `--allow-insecure-http`; TLS failures explained in plain words in the log and in `status`; the state directory
/// forced to 0700 at enrollment.
@Suite("Agent transport and files", .serialized)
struct AgentTransportTests {
    // MARK: - TLS in plain words

    /// A CA, certificates signed by it, and `openssl s_server` presenting one of them on a loopback port.
    final class TLSServerFixture {
        let directory: URL
        private var servers: [ChildProcess] = []

        init() throws {
            directory = try TestPaths.makeTemporaryDirectory("ferry-tls")
            try openssl([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=Ferry Test CA",
            ])
            try openssl([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.pem",
                "-days", "2", "-subj", "/CN=Someone Else",
            ])
        }

        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

        private func openssl(_ arguments: [String]) throws {
            let result = try Command.run("openssl", arguments, currentDirectory: directory)
            guard result.status == 0 else { throw HarnessError("openssl \(arguments.joined(separator: " ")): \(result.stderr)") }
        }

        /// Issues `name.pem`/`name.key` for `subjectAltName`, signed by `ca` (`ca` or `other-ca`), valid for `days`
        /// (-1: expired yesterday).
        func issue(_ name: String, subjectAltName: String = "IP:127.0.0.1", ca: String = "ca", days: Int = 2) throws {
            try openssl([
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr", "-subj",
                "/CN=\(name)",
            ])
            try "subjectAltName=\(subjectAltName)\n".write(to: directory.appendingPathComponent("\(name).ext"), atomically: true, encoding: .utf8)
            try openssl([
                "x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key", "-CAcreateserial", "-out", "\(name).pem",
                "-days", "\(days)", "-extfile", "\(name).ext",
            ])
        }

        /// Starts `openssl s_server` with certificate `name` on a free loopback port; answers its URL.
        func serve(_ name: String) async throws -> String {
            let port = try freeLoopbackPort()
            let server = try ChildProcess(
                "/usr/bin/openssl",
                ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", path("\(name).pem"), "-key", path("\(name).key"), "-www"],
                logDirectory: directory,
                label: "s_server-\(name)"
            )
            servers.append(server)
            _ = try await server.waitForLine { $0.contains("ACCEPT") }
            return "https://127.0.0.1:\(port)"
        }

        func tearDown() async {
            for server in servers { await server.terminate(grace: .seconds(2)) }
            try? FileManager.default.removeItem(at: directory)
        }
    }

    struct TLSCase: Sendable, CustomTestStringConvertible {
        var name: String
        /// Certificate issued for the server: subjectAltName, signing CA, validity in days.
        var subjectAltName = "IP:127.0.0.1"
        var ca = "ca"
        var days = 2
        /// What the agent prints, in plain words.
        var words: String
        var testDescription: String { name }
    }

    static let tlsCases: [TLSCase] = [
        TLSCase(
            name: "unknown CA",
            ca: "other-ca",
            words:
                "the server's certificate is not signed by a certificate authority this host trusts (unknown CA): give the CA's certificate with --ca-file"
        ),
        TLSCase(name: "expired certificate", days: -1, words: "the server's certificate has expired: renew it on the server"),
        TLSCase(
            name: "certificate for another host",
            subjectAltName: "DNS:ferry.example",
            words: "the server's certificate is for another host name: its subject alternative names do not cover the host in the URL"
        ),
    ]

    @Test("enroll over TLS explains a bad certificate in plain words and writes nothing", .timeLimit(.minutes(2)), arguments: tlsCases)
    func enrollExplainsTLSFailures(_ row: TLSCase) async throws {
        let tls = try TLSServerFixture()
        do {
            try tls.issue("server", subjectAltName: row.subjectAltName, ca: row.ca, days: row.days)
            let url = try await tls.serve("server")
            let key = try SigningKey.generate()
            try KeyFile.create(tls.path("op.pub"), contents: try key.publicKey.pemRepresentation(), mode: 0o644)
            try "fer_enroll_x\n".write(toFile: tls.path("enroll.token"), atomically: true, encoding: .utf8)
            let result = try await Command.run(
                TestPaths.executable("ferry-agent"),
                [
                    "enroll", "--controller", url, "--ca-file", tls.path("ca.pem"), "--token-file", tls.path("enroll.token"),
                    "--service", "web", "--config", tls.path("agent.json"), "--trusted-key", tls.path("op.pub"),
                    "--state-dir", tls.path("state"),
                ]
            )
            #expect(result.status != 0)
            #expect(result.stderr.contains(row.words), "stderr: \(result.stderr)")
            #expect(result.stderr.contains("TLS failure"), "stderr: \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: tls.path("agent.json")), "no config written")
            #expect(!FileManager.default.fileExists(atPath: tls.path("state")), "no state directory created")
        } catch {
            Issue.record("\(error)")
        }
        await tls.tearDown()
    }

    @Test("a TLS failure of the daemon appears in its log and in `status`", .timeLimit(.minutes(3)))
    func statusShowsTheControllerProblem() async throws {
        let tls = try TLSServerFixture()
        try await FleetFixture.with { fleet in
            try tls.issue("expired", days: -1)
            let url = try await tls.serve("expired")
            try await fleet.startController()
            let config = try await fleet.enrollAgent(name: "tls-1")
            // The same agent pointed at a controller address whose certificate has expired.
            let environment = [
                "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fleet.root.path, "FERRY_CONTROLLER_URL": url,
                "FERRY_CA_FILE": tls.path("ca.pem"),
            ]
            let once = try await Command.run(TestPaths.executable("ferry-agent"), ["once", "--config", config], environment: environment)
            #expect(once.status == 1)
            #expect(once.stderr.contains("the server's certificate has expired"), "once: \(once.stderr)")

            let status = try await Command.run(TestPaths.executable("ferry-agent"), ["status", "--config", config], environment: environment)
            #expect(status.status == 0, "\(status.stderr)")
            let line = status.stdout.split(separator: "\n").first { $0.hasPrefix("controller problem since ") } ?? ""
            #expect(line.contains("TLS failure: the server's certificate has expired: renew it on the server"), "status: \(status.stdout)")

            // Back on the real controller: the problem clears.
            var healthy = environment
            healthy["FERRY_CONTROLLER_URL"] = nil
            healthy["FERRY_CA_FILE"] = nil
            _ = try await Command.run(TestPaths.executable("ferry-agent"), ["once", "--config", config], environment: healthy)
            let after = try await Command.run(TestPaths.executable("ferry-agent"), ["status", "--config", config], environment: healthy)
            #expect(!after.stdout.contains("controller problem"), "status: \(after.stdout)")
        }
        await tls.tearDown()
    }

    @Test(
        "TLS failures in plain words",
        arguments: [
            (60, 10, "SSL certificate problem: certificate has expired", "the server's certificate has expired"),
            (60, 9, "SSL certificate problem: certificate is not yet valid", "the server's certificate is not valid yet"),
            (
                60, 20, "SSL certificate problem: unable to get local issuer certificate",
                "the server's certificate is not signed by a certificate authority this host trusts"
            ),
            (
                60, 18, "SSL certificate problem: self-signed certificate",
                "the server's certificate is not signed by a certificate authority this host trusts"
            ),
            (60, 0, "SSL: no alternative certificate subject name matches target host name 'x'", "the server's certificate is for another host name"),
            (77, 0, "error setting certificate file: /nope.pem", "the CA file (--ca-file, config key caFile) cannot be read"),
            (35, 0, "error:0A00010B:SSL routines::wrong version number", "the TLS handshake failed: the server does not speak TLS on that port"),
            (35, 0, "OpenSSL SSL_connect: Connection reset by peer", "the TLS handshake failed"),
        ] as [(Int, Int, String, String)]
    )
    func plainWords(_ curlCode: Int, _ verifyResult: Int, _ message: String, _ words: String) {
        #expect(TLSFailure.explain(curlCode: curlCode, verifyResult: verifyResult, curlMessage: message).hasPrefix(words))
    }

    // MARK: - Plain HTTP

    @Test("enroll refuses plain HTTP to a host that is not loopback before contacting it, saying how to allow it")
    func enrollRefusesInsecureHTTP() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-insecure") { directory in
            let key = try SigningKey.generate()
            let pub = directory.appendingPathComponent("op.pub").path
            try KeyFile.create(pub, contents: try key.publicKey.pemRepresentation(), mode: 0o644)
            let result = try await Command.run(
                TestPaths.executable("ferry-agent"),
                [
                    "enroll", "--controller", "http://ferry.example:8080", "--token", "fer_x", "--service", "web", "--config",
                    directory.appendingPathComponent("agent.json").path, "--trusted-key", pub, "--state-dir",
                    directory.appendingPathComponent("state").path,
                ]
            )
            #expect(result.status != 0)
            #expect(
                result.stderr.contains("http://ferry.example:8080 is plain HTTP to ferry.example, which is not a loopback address"),
                "\(result.stderr)"
            )
            #expect(result.stderr.contains("enroll with --allow-insecure-http"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("state").path))
        }
    }

    @Test("--allow-insecure-http lets a remote plain-HTTP URL through validation")
    func allowInsecureHTTPFlagParses() throws {
        let base = [
            "enroll", "--controller", "http://ferry.example:8080", "--token", "fer_x", "--service", "web", "--config", "/tmp/x.json",
            "--trusted-key", "/tmp/k.pub",
        ]
        #expect(throws: (any Error).self) { try AgentCommand.parseAsRoot(base) }
        let command = try #require(try AgentCommand.parseAsRoot(base + ["--allow-insecure-http"]) as? EnrollCommand)
        #expect(command.allowInsecureHttp)
    }

    @Test("enroll refuses a --name the controller would refuse, before anything is written")
    func enrollRefusesADeceptiveName() throws {
        let base = [
            "enroll", "--controller", "http://127.0.0.1:8080", "--token", "fer_x", "--service", "web", "--config", "/tmp/x.json",
            "--trusted-key", "/tmp/k.pub",
        ]
        for (name, reason) in [("web-1\u{200B}", "invisible formatting character (U+200B"), ("web-1 ", "begin or end with a space")] {
            do {
                _ = try AgentCommand.parseAsRoot(base + ["--name", name])
                Issue.record("--name \(name.unicodeScalars.map(\.value)) was accepted")
            } catch {
                let message = AgentCommand.message(for: error)
                #expect(message.contains("--name must not"), "\(message)")
                #expect(message.contains(reason), "\(message)")
            }
        }
        #expect(throws: Never.self) { try AgentCommand.parseAsRoot(base + ["--name", "web 1"]) }
    }

    // MARK: - State directory

    @Test("enroll forces an existing 0755 state directory to 0700; token and config are 0600", .timeLimit(.minutes(2)))
    func enrollMakesTheStateDirectoryPrivate() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let root = fleet.root.appendingPathComponent("loose")
            let state = root.appendingPathComponent("state")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            #expect(chmod(state.path, 0o755) == 0)
            #expect(try Self.mode(state.path) == 0o755, "the directory starts loose")
            let key = root.appendingPathComponent("enroll.token").path
            try fleet.enrollToken.write(toFile: key, atomically: true, encoding: .utf8)
            let config = root.appendingPathComponent("agent.json").path
            let arguments = [
                "enroll", "--controller", fleet.controller.url, "--token-file", key, "--service", "web", "--config", config,
                "--trusted-key", fleet.operatorPublicKeyPath, "--state-dir", state.path, "--name", "loose", "--allow-insecure-http",
            ]
            let result = try await Command.run(TestPaths.executable("ferry-agent"), arguments)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try Self.mode(state.path) == 0o700)
            #expect(try Self.mode(state.appendingPathComponent("agent.token").path) == 0o600)
            #expect(try Self.mode(config) == 0o600)
            #expect(try String(contentsOfFile: config, encoding: .utf8).contains("\"allowInsecureHttp\":true"))
        }
    }

    /// With `http_proxy` in the agent's environment (an instance behind a proxy), a controller on loopback is reached
    /// directly: libcurl made no exception for loopback, and the enroll token (an agent's token, later) went to the proxy
    /// in clear. The "proxy" here is a socket that never accepts: a connection the agent made to it waits in its backlog.
    @Test("a controller on loopback is reached without the proxy http_proxy names", .timeLimit(.minutes(2)))
    func loopbackControllerBypassesTheProxy() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let proxy = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            #expect(proxy >= 0)
            defer { close(proxy) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(proxy, $0, length) == 0 && getsockname(proxy, $0, &length) == 0 }
            }
            #expect(bound && listen(proxy, 16) == 0)
            let proxyURL = "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))"
            let root = fleet.root.appendingPathComponent("proxied")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            let key = root.appendingPathComponent("enroll.token").path
            try fleet.enrollToken.write(toFile: key, atomically: true, encoding: .utf8)
            var environment = ProcessInfo.processInfo.environment
            for name in ["no_proxy", "NO_PROXY"] { environment[name] = nil }
            environment["http_proxy"] = proxyURL
            environment["HTTPS_PROXY"] = proxyURL
            let result = try await Command.run(
                TestPaths.executable("ferry-agent"),
                [
                    "enroll", "--controller", fleet.controller.url, "--token-file", key, "--service", "web", "--config",
                    root.appendingPathComponent("agent.json").path, "--trusted-key", fleet.operatorPublicKeyPath, "--state-dir",
                    root.appendingPathComponent("state").path, "--name", "proxied", "--allow-insecure-http",
                ],
                environment: environment
            )
            #expect(result.status == 0, "\(result.stderr)")
            // Nothing waits in the proxy's backlog.
            #expect(fcntl(proxy, F_SETFL, O_NONBLOCK) == 0)
            let pending = accept(proxy, nil, nil)
            if pending >= 0 { close(pending) }
            #expect(pending < 0, "the agent connected to the proxy")
        }
    }

    static func mode(_ path: String) throws -> mode_t {
        var info = stat()
        guard stat(path, &info) == 0 else { throw HarnessError("stat \(path) failed") }
        return info.st_mode & 0o7777
    }
}
