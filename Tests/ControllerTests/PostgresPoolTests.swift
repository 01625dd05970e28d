import Foundation
import Logging
import PostgresNIO
import Testing

@testable import Controller

/// `PostgresPool`'s bound on waiting for a connection, against a port where nothing listens (the pool retries it
/// forever): the wait ends with `StoreError.unavailable` after `leaseTimeout`, or at once when the caller is
/// cancelled. The bound is a NIO timer now, not a sleeping child task (docs/benchmarks.md).
@Suite(.timeLimit(.minutes(1))) struct PostgresPoolTests {
    /// A loopback port nothing listens on: bound, then closed.
    static func closedPort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw POSIXError(.EBADF) }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRNOTAVAIL) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func withPool<R>(leaseTimeout: Duration, _ body: (PostgresPool) async throws -> R) async throws -> R {
        var configuration = PostgresClient.Configuration(
            host: "127.0.0.1",
            port: try closedPort(),
            username: "ferry",
            password: nil,
            database: "ferry",
            tls: .disable
        )
        configuration.options.connectTimeout = .seconds(1)
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let running = Task { await client.run() }
        defer { running.cancel() }
        return try await body(PostgresPool(client: client, leaseTimeout: leaseTimeout, location: "postgres://127.0.0.1/ferry"))
    }

    @Test(arguments: [Duration.milliseconds(200), .milliseconds(700)])
    func aLeaseThatNeverComesEndsAfterTheTimeout(_ timeout: Duration) async throws {
        try await Self.withPool(leaseTimeout: timeout) { pool in
            let started = ContinuousClock.now
            await #expect(throws: StoreError.unavailable(location: "postgres://127.0.0.1/ferry", waited: timeout)) {
                try await pool.withConnection { _ in Issue.record("a connection was leased") }
            }
            let waited = ContinuousClock.now - started
            #expect(waited >= timeout, "ended after \(waited)")
            #expect(waited < timeout + .seconds(5), "ended after \(waited)")
        }
    }

    @Test func aCancelledCallerStopsWaitingAtOnce() async throws {
        try await Self.withPool(leaseTimeout: .seconds(600)) { pool in
            let waiting = Task { try await pool.withConnection { _ in Issue.record("a connection was leased") } }
            try await Task.sleep(for: .milliseconds(200))
            let cancelled = ContinuousClock.now
            waiting.cancel()
            await #expect(throws: CancellationError.self) { try await waiting.value }
            #expect(ContinuousClock.now - cancelled < .seconds(5))
        }
    }
}
