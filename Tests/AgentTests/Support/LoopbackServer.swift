import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// Runs a Hummingbird application for a router on 127.0.0.1, port 0, for the length of a test body: the scaffolding
/// every in-test HTTP stand-in shares (`TestFileServer`, `MetadataStandIn`).
enum LoopbackServer {
    /// The server did not report its port within 20 s.
    struct DidNotStart: Error {}

    /// Starts `router`'s application, calls `started` with its port, runs `body`, and always shuts the server down
    /// (gracefully) afterwards. `closing` runs before the shutdown begins, so a handler that holds its answer (a
    /// stall, a trickle) can let go instead of holding the shutdown up.
    static func with<R>(
        router: Router<BasicRequestContext>,
        label: String,
        started: @escaping @Sendable (Int) -> Void,
        closing: @Sendable () -> Void,
        _ body: () async throws -> R
    ) async throws -> R {
        var logger = Logger(label: label)
        logger.logLevel = .critical
        let port = PortBox()
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                if let value = channel.localAddress?.port {
                    port.set(value)
                    started(value)
                }
            },
            logger: logger
        )
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let running = Task { try await group.run() }
        do {
            let deadline = ContinuousClock.now + .seconds(20)
            while port.value == nil {
                guard ContinuousClock.now < deadline else { throw DidNotStart() }
                try await Task.sleep(for: .milliseconds(5))
            }
            let result = try await body()
            closing()
            await group.triggerGracefulShutdown()
            try await running.value
            return result
        } catch {
            closing()
            await group.triggerGracefulShutdown()
            _ = try? await running.value
            throw error
        }
    }
}

/// The port the server reported, once it has.
private final class PortBox: Sendable {
    private let stored = Mutex<Int?>(nil)
    var value: Int? { stored.withLock { $0 } }
    func set(_ port: Int) { stored.withLock { $0 = port } }
}
