import Foundation
import Glibc
import Shared
import TestSupport
import Testing

@testable import Supervisor

/// Hostile and malformed input on the supervisor's socket: each gets a specific error answer and the daemon runs on.
@Suite("Builtin supervisor socket protocol")
struct BuiltinSupervisorProtocolTests {
    struct HostileRequest: Sendable, CustomStringConvertible {
        let label: String
        let bytes: [UInt8]
        let expected: SupervisorErrorCode
        let messageContains: String
        var description: String { label }
    }

    /// A valid `start` request line for `script`, changed by `change` (a JSON object edit).
    static func startLine(script: String, _ change: (inout [String: Any]) -> Void = { _ in }) throws -> String {
        let spec = AppSpec(
            name: "app",
            service: "svc",
            script: script,
            cwd: (script as NSString).deletingLastPathComponent,
            args: [],
            interpreter: "node",
            interpreterArgs: [],
            instances: 1,
            execMode: .fork,
            env: [:],
            autorestart: true,
            maxRestarts: 3,
            minUptimeMilliseconds: 1000,
            restartDelayMilliseconds: 0,
            killTimeoutMilliseconds: 1600,
            maxMemoryBytes: nil,
            pm2Options: [:]
        )
        var app = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as? [String: Any])
        change(&app)
        let line = try JSONSerialization.data(withJSONObject: ["op": "start", "app": app])
        return String(decoding: line, as: UTF8.self)
    }

    static func hostileRequests(script: String) throws -> [HostileRequest] {
        func line(_ text: String) -> [UInt8] { Array(text.utf8) + [10] }
        return [
            HostileRequest(label: "not JSON", bytes: line("hello daemon"), expected: .badRequest, messageContains: "not valid JSON"),
            HostileRequest(label: "JSON array", bytes: line("[1,2]"), expected: .badRequest, messageContains: "expected an object"),
            HostileRequest(label: "no op", bytes: line("{}"), expected: .badRequest, messageContains: "op: missing"),
            HostileRequest(label: "op not a string", bytes: line(#"{"op":7}"#), expected: .badRequest, messageContains: "op: expected a string"),
            HostileRequest(label: "unknown op", bytes: line(#"{"op":"explode"}"#), expected: .unknownOperation, messageContains: "explode"),
            HostileRequest(
                label: "delete without name",
                bytes: line(#"{"op":"delete"}"#),
                expected: .badRequest,
                messageContains: "needs a \"name\""
            ),
            HostileRequest(
                label: "restart with a number",
                bytes: line(#"{"op":"restart","name":7}"#),
                expected: .badRequest,
                messageContains: "name: expected a string"
            ),
            HostileRequest(
                label: "delete unknown app",
                bytes: line(#"{"op":"delete","name":"ghost"}"#),
                expected: .unknownApp,
                messageContains: "ghost"
            ),
            HostileRequest(
                label: "reload unknown app",
                bytes: line(try startLine(script: script).replacingOccurrences(of: "\"start\"", with: "\"reload\"")),
                expected: .unknownApp,
                messageContains: "\"app\""
            ),
            HostileRequest(label: "start without app", bytes: line(#"{"op":"start"}"#), expected: .badRequest, messageContains: "needs an \"app\""),
            HostileRequest(
                label: "app missing a field",
                bytes: line(try startLine(script: script) { $0["instances"] = nil }),
                expected: .badRequest,
                messageContains: "app.instances: missing"
            ),
            HostileRequest(
                label: "control character in the name",
                bytes: line(try startLine(script: script) { $0["name"] = "evil\nname" }),
                expected: .invalidApp,
                messageContains: "name must not contain control characters"
            ),
            HostileRequest(
                label: "\"all\" as a name",
                bytes: line(try startLine(script: script) { $0["name"] = "all" }),
                expected: .invalidApp,
                messageContains: "means every app"
            ),
            HostileRequest(
                label: "relative script path",
                bytes: line(try startLine(script: script) { $0["script"] = "app/crash.js" }),
                expected: .invalidApp,
                messageContains: "script must be an absolute path or a program name"
            ),
            HostileRequest(
                label: "zero instances",
                bytes: line(try startLine(script: script) { $0["instances"] = 0 }),
                expected: .invalidApp,
                messageContains: "instances must be between 1 and 1024"
            ),
            HostileRequest(
                label: "= in an env name",
                bytes: line(try startLine(script: script) { $0["env"] = ["A=B": "c"] }),
                expected: .invalidApp,
                messageContains: "env name"
            ),
            HostileRequest(
                label: "negative kill_timeout",
                bytes: line(try startLine(script: script) { $0["killTimeoutMilliseconds"] = -1 }),
                expected: .invalidApp,
                messageContains: "kill_timeout"
            ),
            HostileRequest(
                label: "missing script",
                bytes: line(try startLine(script: script) { $0["script"] = "/nonexistent/app.js" }),
                expected: .scriptNotFound,
                messageContains: "/nonexistent/app.js"
            ),
            HostileRequest(
                label: "missing interpreter",
                bytes: line(try startLine(script: script) { $0["interpreter"] = "no-such-interpreter" }),
                expected: .interpreterNotFound,
                messageContains: "no-such-interpreter"
            ),
            HostileRequest(
                label: "invalid UTF-8 and NUL bytes",
                bytes: [0x7B, 0x00, 0xFF, 0xFE, 0x22, 10],
                expected: .badRequest,
                messageContains: "not a valid JSON"
            ),
            HostileRequest(
                label: "line over the size limit",
                bytes: Array(repeating: UInt8(ascii: "a"), count: SupervisorDaemon.defaultMaximumRequestBytes + 16) + [10],
                expected: .requestTooLarge,
                messageContains: "longer than \(SupervisorDaemon.defaultMaximumRequestBytes) bytes"
            ),
        ]
    }

    /// A peer that stops reading (a client suspended after asking for a large table) must not hold a write past its
    /// deadline: the socket is blocking, and a `send` of more than the buffer has room for waited for the peer.
    @Test("a write to a peer that stops reading ends at its deadline")
    func aWriteToAStalledPeerEndsAtItsDeadline() async throws {
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        let (writer, peer) = (pair[0], pair[1])
        defer { close(writer) }
        let bytes = [UInt8](repeating: 0x61, count: 8 << 20)
        let started = ContinuousClock.now
        let write = Task { try await DedicatedThread.run(name: "test write") { UnixSocket.write(bytes, to: writer, deadline: .now + .seconds(1)) } }
        // Were the write still blocked after 15 s, closing the peer ends it (EPIPE): the test fails instead of hanging.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(15))
            close(peer)
        }
        let result = try await write.value
        let elapsed = ContinuousClock.now - started
        watchdog.cancel()
        if (try? await watchdog.value) == nil { close(peer) }
        #expect(result == ETIMEDOUT, "errno \(String(describing: result))")
        #expect(elapsed < .seconds(10), "the write took \(elapsed)")
    }

    /// A start whose request is over the daemon's limit (a release with huge env maps) fails with the daemon's reason:
    /// the daemon answers before reading the rest and hangs up, and the client, still writing, read "broken pipe".
    @Test("a request over the daemon's size limit fails with the daemon's reason, not a broken pipe")
    func oversizedRequestNamesTheLimit() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/crash.js", TestApps.crash)
            let limit = SupervisorDaemon.defaultMaximumRequestBytes
            let spec = harness.spec("big", script: script, env: ["BIG": String(repeating: "a", count: limit + (1 << 20))])
            do {
                try await harness.manager.start(spec, ecosystem: "")
                Issue.record("a request over the limit was accepted")
            } catch SupervisorError.rejected(let operation, let failure) {
                #expect(operation == .start)
                #expect(failure.code == .requestTooLarge, "\(failure)")
                #expect(failure.message.contains("longer than \(limit) bytes"), "\(failure)")
            }
            // The daemon goes on.
            #expect(try await harness.manager.processes().isEmpty)
        }
    }

    @Test("malformed requests get specific error answers and the daemon keeps running")
    func malformedRequests() async throws {
        try await SupervisorHarness.with { harness in
            let daemon = try await harness.manager.daemonPID()
            let script = try harness.write("app/crash.js", TestApps.crash)
            for request in try Self.hostileRequests(script: script) {
                let answer = try await Self.exchange(request.bytes, socketPath: harness.manager.configuration.socketPath)
                let response = try #require(try? SupervisorResponse.decode(answer), "\(request): undecodable answer")
                #expect(response.ok == false, "\(request)")
                #expect(response.error?.code == request.expected, "\(request): \(response.error.map(\.description) ?? "no error")")
                #expect(
                    response.error?.message.contains(request.messageContains) == true,
                    "\(request): \(response.error?.message ?? "")"
                )
                #expect(try await harness.manager.daemonPID() == daemon, "\(request): the daemon changed")
            }
            // Clients that hang up early: silence, half a line.
            for bytes in [[], Array(#"{"op":"li"#.utf8)] as [[UInt8]] {
                try await Self.sendAndHangUp(bytes, socketPath: harness.manager.configuration.socketPath)
            }
            // Several requests on one connection are answered in order.
            let answers = try await Self.exchange(
                Array("{\"op\":\"ping\"}\n{\"op\":\"list\"}\n".utf8),
                socketPath: harness.manager.configuration.socketPath,
                lines: 2
            )
            #expect(try SupervisorResponse.decode(answers).pid == daemon)
            #expect(try await harness.manager.processes().isEmpty)
            #expect(try await harness.manager.daemonPID() == daemon)
        }
    }

    /// Sends raw bytes and returns the first answer line (or, with `lines: 2`, the second).
    static func exchange(_ bytes: [UInt8], socketPath: String, lines: Int = 1) async throws -> [UInt8] {
        try await DedicatedThread.run(name: "test socket") { () throws -> [UInt8] in
            guard case .success(let fd) = try UnixSocket.connect(to: socketPath, timeout: .seconds(5)) else { throw HarnessError("cannot connect") }
            defer { close(fd) }
            let deadline = ContinuousClock.now + .seconds(20)
            _ = UnixSocket.write(bytes, to: fd, deadline: deadline)
            var reader = LineReader(fd: fd)
            var answers: [[UInt8]] = []
            while answers.count < lines {
                guard case .line(let answer) = reader.readLine(limit: 1 << 20, deadline: deadline) else {
                    throw HarnessError("no answer line")
                }
                answers.append(answer)
            }
            return answers[0]
        }
    }

    static func sendAndHangUp(_ bytes: [UInt8], socketPath: String) async throws {
        try await DedicatedThread.run(name: "test socket") { () throws in
            guard case .success(let fd) = try UnixSocket.connect(to: socketPath, timeout: .seconds(5)) else { throw HarnessError("cannot connect") }
            _ = UnixSocket.write(bytes, to: fd, deadline: .now + .seconds(5))
            close(fd)
        }
    }
}
