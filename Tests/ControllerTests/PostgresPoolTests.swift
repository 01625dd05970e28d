import Foundation
import Logging
import PostgresNIO
import TestSupport
import Testing

@testable import Controller

/// `PostgresPool`'s bound on waiting for a connection, against a port where nothing listens (the pool retries it
/// forever): the wait ends with `StoreError.unavailable` after `leaseTimeout`, or at once when the caller is
/// cancelled. The bound is a NIO timer now, not a sleeping child task (docs/benchmarks.md).
@Suite(.timeLimit(.minutes(1))) struct PostgresPoolTests {
    static func withPool<R>(leaseTimeout: Duration, _ body: (PostgresPool) async throws -> R) async throws -> R {
        var configuration = PostgresClient.Configuration(
            host: "127.0.0.1",
            port: try LoopbackPorts.reserve(),
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
