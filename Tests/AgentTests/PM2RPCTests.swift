import Foundation
import Glibc
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent

@Suite("The PM2 table read from the daemon's RPC socket, as pm2 jlist reads it")
struct PM2RPCTests {
    /// What the fake daemon sends back for a call, and what the client makes of it.
    enum Expected: Sendable {
        /// A table of this many elements.
        case elements(Int)
        /// Exactly this failure.
        case failure(PM2RPC.Failure)
        /// A `.malformed` failure whose reason starts with this text (the JSON parser's own words follow it).
        case malformed(prefix: String)
    }

    static let limit = 1 << 20

    /// Answers of a daemon that does not speak pm2-axon-rpc, or says no; each given the call's id.
    static let answers: [(label: String, answer: FakeRPCDaemon.Answer, expected: Expected)] = [
        ("an empty table", .frame { ["j:{\"args\":[[]]}", "s:\($0)"] }, .elements(0)),
        (
            "two processes, sent one byte at a time",
            .init(chunked: true) { PM2RPC.frame(["j:{\"args\":[[{},{}]]}", "s:\($0)"].map { Array($0.utf8) }) },
            .elements(2)
        ),
        (
            "a second frame after the answer is not read",
            .init { id in PM2RPC.frame([Array("j:{\"args\":[[{}]]}".utf8), Array("s:\(id)".utf8)]) + [0xFF, 0xFF] }, .elements(1)
        ),
        ("the connection closed at once", .init { _ in [] }, .failure(.closed(received: 0))),
        ("half a frame, then closed", .init { _ in [0x12, 0, 0, 0, 10] + Array("j:".utf8) }, .failure(.closed(received: 7))),
        ("amp protocol version 2", .init { _ in [0x22, 0, 0, 0, 0] }, .failure(.malformed("amp protocol version 2, expected 1"))),
        ("a frame without parts", .init { _ in [0x10] }, .failure(.malformed("a frame without parts"))),
        ("a part announced at 4 GiB", .init { _ in [0x12, 0xFF, 0xFF, 0xFF, 0xFF] }, .failure(.tooLarge(limit: limit))),
        ("a second part past the limit", .init { _ in [0x12, 0, 0, 0, 1, 0x6A] + [0x00, 0x10, 0x00, 0x00] }, .failure(.tooLarge(limit: limit))),
        ("one part", .frame { _ in ["j:{\"args\":[[]]}"] }, .failure(.malformed("1 part(s), expected 2"))),
        ("three parts", .frame { ["j:{\"args\":[[]]}", "s:\($0)", "s:more"] }, .failure(.malformed("3 part(s), expected 2"))),
        (
            "the answer to another call", .frame { _ in ["j:{\"args\":[[]]}", "s:someone-else:7"] },
            .failure(.malformed("the answer is for call s:someone-else:7, not <id>"))
        ),
        ("a string, not JSON", .frame { ["s:hello", "s:\($0)"] }, .failure(.malformed("the answer is not JSON: s:hello"))),
        ("broken JSON", .frame { ["j:{\"args\":[[", "s:\($0)"] }, .malformed(prefix: "the answer's JSON: ")),
        ("a JSON array, not an object", .frame { ["j:[1]", "s:\($0)"] }, .failure(.malformed("the answer is a JSON array, not an object"))),
        ("no args", .frame { ["j:{}", "s:\($0)"] }, .failure(.malformed("the answer has no \"args\""))),
        ("empty args", .frame { ["j:{\"args\":[]}", "s:\($0)"] }, .failure(.malformed("the answer has no \"args\""))),
        (
            "a table that is an object", .frame { ["j:{\"args\":[{\"a\":1}]}", "s:\($0)"] },
            .failure(.malformed("the table is a JSON object, not an array"))
        ),
        (
            "the daemon's error", .frame { ["j:{\"error\":\"method \\\"getMonitorData\\\" does not exist\"}", "s:\($0)"] },
            .failure(.daemonError("method \"getMonitorData\" does not exist"))
        ),
        ("an error that is not text", .frame { ["j:{\"error\":{\"code\":1}}", "s:\($0)"] }, .failure(.daemonError("{\"code\":1}"))),
        ("no answer at all", .silent, .failure(.timedOut(.milliseconds(300)))),
    ]

    @Test("every answer that is not a table is refused with its reason", arguments: answers.indices)
    func hostileAnswers(_ index: Int) async throws {
        let (label, answer, expected) = Self.answers[index]
        let directory = try TestPaths.makeTemporaryDirectory("ferry-pm2-rpc")
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("rpc.sock").path
        let daemon = try FakeRPCDaemon(path: socket, answer: answer)
        defer { daemon.stop() }
        let outcome: Result<[JSONValue], PM2RPC.Failure>
        do {
            outcome = .success(try await PM2RPC.monitorData(socketPath: socket, timeout: .milliseconds(300), limit: Self.limit))
        } catch {
            outcome = .failure(error)
        }
        let id = try #require(daemon.callIDs().first, "\(label): the daemon got no call")
        switch (expected, outcome) {
        case (.elements(let count), .success(let elements)):
            #expect(elements.count == count, "\(label)")
        case (.failure(let failure), .failure(let error)):
            #expect(error == Self.withID(failure, id), "\(label)")
        case (.malformed(let prefix), .failure(.malformed(let reason))):
            #expect(reason.hasPrefix(prefix), "\(label): \(reason)")
        default:
            Issue.record("\(label): expected \(expected), got \(outcome)")
        }
    }

    @Test("a call is one amp frame: version 1, two parts, JSON and the call's id; each call has its own id")
    func callFrame() async throws {
        let frame = PM2RPC.call(method: "getMonitorData", id: "ferry-agent:1:2")
        let json = Array(#"j:{"args":[{}],"method":"getMonitorData","type":"call"}"#.utf8)
        let id = Array("s:ferry-agent:1:2".utf8)
        #expect(frame == [0x12, 0, 0, 0, UInt8(json.count)] + json + [0, 0, 0, UInt8(id.count)] + id)
        let parsed = try #require(try PM2RPC.frame(in: frame, limit: 1024))
        #expect(parsed.length == frame.count && parsed.parts.map(Array.init) == [json, id])
        // Every prefix is incomplete, never an error.
        for end in 0..<frame.count { #expect(try PM2RPC.frame(in: Array(frame[..<end]), limit: 1024) == nil) }

        let directory = try TestPaths.makeTemporaryDirectory("ferry-pm2-rpc-ids")
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("rpc.sock").path
        let daemon = try FakeRPCDaemon(path: socket, answer: .frame { ["j:{\"args\":[[]]}", "s:\($0)"] })
        defer { daemon.stop() }
        for _ in 0..<3 { _ = try await PM2RPC.monitorData(socketPath: socket, timeout: .seconds(5), limit: 1024) }
        let ids = daemon.callIDs()
        #expect(ids.count == 3 && Set(ids).count == 3 && ids.allSatisfy { $0.hasPrefix("ferry-agent:\(getpid()):") }, "\(ids)")
        #expect(daemon.calls().allSatisfy { $0.contains(#""method":"getMonitorData""#) })
    }

    @Test("no socket, or nothing listening on it: no daemon, which pm2 jlist then starts")
    func noDaemon() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-pm2-rpc-none")
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("rpc.sock").path
        await #expect(throws: PM2RPC.Failure.noDaemon(errno: ENOENT)) {
            try await PM2RPC.monitorData(socketPath: socket, timeout: .seconds(1), limit: 1024)
        }
        // A socket file left by a dead daemon. Bound and never listened on: a listening socket closed here could
        // still be held, until its exec, by a child another test forks at that moment, and would then accept.
        try FakeRPCDaemon.deadSocketFile(path: socket)
        await #expect(throws: PM2RPC.Failure.noDaemon(errno: ECONNREFUSED)) {
            try await PM2RPC.monitorData(socketPath: socket, timeout: .seconds(1), limit: 1024)
        }
    }

    /// A God Daemon that stopped accepting (its event loop stuck) with a full backlog: the call and the census of the
    /// socket's owner give up at their deadlines instead of holding the agent's pass for ever. Should a connect block
    /// anyway, the listener is closed after 10 s, which ends it with another error: the test fails, it does not hang.
    @Test func aWedgedDaemonThatAcceptsNothingTimesOut() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-pm2-rpc-wedged")
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("rpc.sock").path
        let descriptors = try FakeRPCDaemon.wedgedSocket(path: socket)
        let closed = Mutex(false)
        let closeAll: @Sendable () -> Void = {
            closed.withLock { done in
                guard !done else { return }
                done = true
                for descriptor in descriptors { close(descriptor) }
            }
        }
        defer { closeAll() }
        let watchdog = Task {
            try await Task.sleep(for: .seconds(10))
            closeAll()
        }
        defer { watchdog.cancel() }
        let started = ContinuousClock.now
        await #expect(throws: PM2RPC.Failure.timedOut(.milliseconds(300))) {
            try await PM2RPC.monitorData(socketPath: socket, timeout: .milliseconds(300), limit: 1024)
        }
        #expect(started.duration(to: .now) < .seconds(5))
        let census = ContinuousClock.now
        #expect(PM2Daemons.listener(of: socket) == nil)
        #expect(census.duration(to: .now) < .seconds(5))
    }

    @Test("the manager reads the daemon's answer and runs no pm2 command; a daemon that answers wrongly sends it to pm2 jlist")
    func managerPrefersTheSocket() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.setTable(fromCapture: PM2ProcessManagerTests.shopTable)
        let jlist = try PM2Fixtures.capture(PM2ProcessManagerTests.shopTable).stdout
        let fromCLI = try await standIn.manager(namespace: "shop").table()
        #expect(fromCLI.processes.count == 3)
        #expect(try standIn.invocations().map(\.argv) == [["jlist"]])

        let socket = standIn.pm2Home + "/rpc.sock"
        var daemon = try FakeRPCDaemon(path: socket, answer: .frame { ["j:{\"args\":[\(jlist)]}", "s:\($0)"] })
        let fromSocket = try await standIn.manager(namespace: "shop").table()
        daemon.stop()
        #expect(daemon.callIDs().count == 1)
        #expect(PM2RPCTests.identity(fromSocket.processes) == PM2RPCTests.identity(fromCLI.processes), "the same table either way")
        #expect(try standIn.invocations().count == 1, "no pm2 command for a table the daemon gave")

        daemon = try FakeRPCDaemon(path: socket, answer: .frame { ["j:{\"error\":\"busy\"}", "s:\($0)"] })
        let afterRefusal = try await standIn.manager(namespace: "shop").table()
        daemon.stop()
        #expect(PM2RPCTests.identity(afterRefusal.processes) == PM2RPCTests.identity(fromCLI.processes))
        #expect(try standIn.invocations().map(\.argv) == [["jlist"], ["jlist"]], "pm2 jlist asked after the daemon's refusal")
    }

    @Test("against real PM2: drift checks read the table from the daemon without running pm2, the same table pm2 jlist prints")
    func realPM2TableWithoutTheCLI() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-rpc")
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("pm2home").path
        defer { for pid in DaemonDeathTests.pm2Daemons(home: home) { kill(pid, SIGKILL) } }
        // A pm2 that writes down each of its calls, then runs the real one.
        let log = root.appendingPathComponent("calls.log").path
        let shim = root.appendingPathComponent("bin/pm2").path
        try FileManager.default.createDirectory(atPath: root.appendingPathComponent("bin").path, withIntermediateDirectories: true)
        try Data("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '\(log)'\nexec '\(pm2)' \"$@\"\n".utf8).write(to: URL(fileURLWithPath: shim))
        chmod(shim, 0o755)
        try Data("setInterval(() => {}, 1000);\n".utf8).write(to: root.appendingPathComponent("idle.js"))
        let app = AppSpec.pm2TestApp("idle", script: root.path + "/idle.js", cwd: root.path, mode: .cluster, instances: 2)
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: [app], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
        let manager = try PM2ProcessManager(
            configuration: .init(executable: shim, pm2Home: home, namespace: "ferry-test"),
            logger: .init(label: "test.pm2")
        )
        let calls = { (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? [] }
        do {
            try await manager.start(app, ecosystem: ecosystem)
            let settled = try await PM2ProcessManagerTests.settle(manager, app)
            #expect(ProcessTableCheck(evaluating: settled, against: [app]) == .allOnline)
            let before = calls()
            #expect(before.contains { $0.hasPrefix("start ") }, "\(before)")
            var fromSocket: [ManagedProcess] = []
            for _ in 0..<5 { fromSocket = try await manager.processes() }
            #expect(calls() == before, "five table reads ran no pm2 command")

            // The agent config's switch: `pm2TableSource: jlist` reads every table with pm2 jlist, socket or not.
            let cli = try Self.managerFromConfig(root: root, shim: shim, home: home, tableSource: "jlist")
            #expect(try Self.managerFromConfig(root: root, shim: shim, home: home, tableSource: nil).configuration.readsTableFromDaemon)
            let fromCLI = try await cli.processes()
            #expect(calls().last == "jlist")
            #expect(fromSocket.count == 2)
            #expect(Self.identity(fromSocket) == Self.identity(fromCLI), "the socket's table is the one pm2 jlist prints")

            // No daemon: pm2 jlist starts one, as before.
            await PM2ProcessManagerTests.killDaemon(manager)
            let callsBefore = calls().count
            #expect(try await manager.processes().isEmpty)
            #expect(Array(calls().dropFirst(callsBefore)) == ["jlist"], "a read without a daemon goes to pm2 jlist")
        } catch {
            await PM2ProcessManagerTests.killDaemon(manager)
            throw error
        }
        await PM2ProcessManagerTests.killDaemon(manager)
    }

    /// The PM2 manager the agent builds from a config file with these settings (`pm2TableSource` left out when `nil`).
    static func managerFromConfig(root: URL, shim: String, home: String, tableSource: String?) throws -> PM2ProcessManager {
        var fields: [String: JSONValue] = [
            "controller": .string("http://127.0.0.1:9"), "agentId": .string("a1"), "services": .array([.string("api")]),
            "trustedKeys": .array([.string("/nonexistent.pub")]), "processManager": .string("pm2"), "pm2": .string(shim),
            "pm2Home": .string(home), "namespace": .string("ferry-test"),
        ]
        if let tableSource { fields["pm2TableSource"] = .string(tableSource) }
        let file = root.appendingPathComponent("agent-\(tableSource ?? "default").json")
        try Data(JSONValue.object(fields).encoded()).write(to: file)
        let config = try AgentConfig.load(from: file.path, environment: [:])
        let (made, kind) = try AgentRuntime.makeProcessManager(
            config: config,
            layout: AgentLayout(stateDir: root.path),
            logger: .init(label: "test.pm2"),
            repairs: false
        )
        #expect(kind == "pm2")
        return try #require(made as? PM2ProcessManager)
    }

    /// What two reads of an unchanged table agree on (uptime, memory and CPU move between reads).
    static func identity(_ processes: [ManagedProcess]) -> [String] {
        processes.map {
            "\($0.namespace)/\($0.name)#\($0.pmId) pid \($0.pid.map(String.init) ?? "-") \($0.status) restarts \($0.restarts) \($0.execMode) \($0.instanceIndex)/\($0.instances) \($0.scriptPath) \($0.cwd)"
        }
    }

    /// `failure` with `<id>` in its text replaced by the call's id.
    static func withID(_ failure: PM2RPC.Failure, _ id: String) -> PM2RPC.Failure {
        guard case .malformed(let reason) = failure else { return failure }
        return .malformed(reason.replacingOccurrences(of: "<id>", with: id))
    }
}

/// A Unix socket that answers each connection the way a test asks: a stand-in for a PM2 daemon's `rpc.sock`. It reads
/// one call frame per connection, records it and sends the answer. Stopped (and its socket closed) by `stop()`.
final class FakeRPCDaemon: Sendable {
    struct Answer: Sendable {
        /// The bytes sent for a call with this id; nothing sent (and the connection held open) when `nil`.
        var bytes: @Sendable (String) -> [UInt8]?
        /// Whether the bytes go one `send` per byte.
        var chunked = false

        init(chunked: Bool = false, _ bytes: @escaping @Sendable (String) -> [UInt8]?) {
            self.bytes = bytes
            self.chunked = chunked
        }

        /// A frame of these text parts.
        static func frame(_ parts: @escaping @Sendable (String) -> [String]) -> Answer {
            Answer { id in PM2RPC.frame(parts(id).map { Array($0.utf8) }) }
        }

        /// Reads the call and never answers.
        static let silent = Answer { _ in nil }
    }

    private let listener: Int32
    private let stopped = Atomic<Bool>(false)
    private let finished = Mutex<Bool>(false)
    private let received = Mutex<[[UInt8]]>([])

    init(path: String, answer: Answer) throws {
        let fd = try Self.bound(path: path)
        guard listen(fd, 8) == 0 else {
            let code = errno
            close(fd)
            throw HarnessError("listen \(path): errno \(code)")
        }
        listener = fd
        let thread = Thread { [self] in serve(answer) }
        thread.start()
    }

    /// The calls received, one frame each.
    func calls() -> [String] {
        received.withLock { $0.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// The id of each call received.
    func callIDs() -> [String] {
        received.withLock { frames in
            frames.compactMap { frame in
                guard let parts = try? PM2RPC.frame(in: frame, limit: 1 << 20)?.parts, parts.count == 2 else { return nil }
                return String(decoding: parts[1].dropFirst(2), as: UTF8.self)
            }
        }
    }

    /// Stops accepting, waits for the thread to end and closes the listening socket (its file stays, as a dead
    /// daemon's does). No deadline: closing the descriptor while the thread may still poll it would let the thread
    /// poll whatever reuses the number.
    func stop() {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        while !finished.withLock({ $0 }) { usleep(5_000) }
        close(listener)
    }

    /// A daemon that is wedged: it listens with a backlog of 0, accepts nothing, and its queue is full, so a blocking
    /// `connect` to it waits until the daemon accepts. Returns the listener and the queued clients; close them all.
    static func wedgedSocket(path: String) throws -> [Int32] {
        let listener = try bound(path: path)
        var descriptors = [listener]
        guard listen(listener, 0) == 0 else { throw HarnessError("listen \(path): errno \(errno)") }
        while descriptors.count < 64 {
            let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard client >= 0 else { throw HarnessError("socket: errno \(errno)") }
            var address = Self.address(path)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            let code = errno
            guard result == 0 else {
                close(client)
                guard code == EAGAIN else { throw HarnessError("connect \(path): errno \(code)") }
                return descriptors  // the queue is full
            }
            descriptors.append(client)
        }
        throw HarnessError("the backlog of \(path) never filled")
    }

    /// Leaves at `path` the socket file of a daemon that is gone: a socket that was bound and closed, so connecting
    /// to it is refused.
    static func deadSocketFile(path: String) throws {
        let fd = try bound(path: path)
        close(fd)
    }

    /// The `sockaddr_un` of `path`.
    private static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
            raw[path.utf8.count] = 0
        }
        return address
    }

    /// A Unix stream socket bound to `path`, replacing the socket file a dead daemon left.
    private static func bound(path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: errno \(errno)") }
        var address = Self.address(path)
        unlink(path)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw HarnessError("bind \(path): errno \(code)")
        }
        return fd
    }

    private func serve(_ answer: Answer) {
        defer { finished.withLock { $0 = true } }
        while !stopped.load(ordering: .sequentiallyConsistent) {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 20) > 0 else { continue }
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { continue }
            defer { close(connection) }
            var call: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            // Until one whole frame came (the client sends nothing else).
            while (try? PM2RPC.frame(in: call, limit: 1 << 20)) == nil {
                var poller = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
                guard !stopped.load(ordering: .sequentiallyConsistent) else { return }
                guard poll(&poller, 1, 20) > 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { break }
                call += buffer[..<count]
            }
            received.withLock { $0.append(call) }
            let id = callIDs().last ?? ""
            guard let bytes = answer.bytes(id) else {
                // Hold the connection open until the client gives up (or the test stops).
                var poller = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
                while !stopped.load(ordering: .sequentiallyConsistent), poll(&poller, 1, 20) == 0 {}
                continue
            }
            if answer.chunked {
                for byte in bytes { _ = withUnsafeBytes(of: byte) { send(connection, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) } }
            } else {
                _ = bytes.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
        }
    }
}
