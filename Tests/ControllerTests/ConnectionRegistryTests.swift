import Logging
import NIOCore
import NIOEmbedded
import Prometheus
import Testing

@testable import Controller

/// Which connection the cap sheds: the one idle longest, in the order connections became idle (a connection that ends
/// a request goes last); a busy one never; none when all are busy (the new one is refused). Real `EmbeddedChannel`s,
/// whose closing the test sees.
@Suite struct ConnectionRegistryTests {
    enum Step: Sendable {
        /// A new connection named so; `shed` is the one the cap closes for it, `refused` when it is not admitted.
        case open(String, shed: String? = nil, refused: Bool = false)
        case busy(String)
        case idle(String)
        /// A request answered at once on an idle connection (`DesiredStateFastPath`).
        case used(String)
        case close(String)
        /// The client stopped reading (its socket unwritable) `ConnectionRegistry.unreadBeforeShed` ago, or just now; or
        /// read again.
        case unread(String)
        case unreadJustNow(String)
        case read(String)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var steps: [Step]
    }

    static let cases: [Case] = [
        Case(testDescription: "under the cap nothing is shed", steps: [.open("a"), .open("b"), .open("c")]),
        Case(
            testDescription: "the oldest idle goes first",
            steps: [.open("a"), .open("b"), .open("c"), .open("d", shed: "a"), .open("e", shed: "b")]
        ),
        Case(
            testDescription: "a busy connection is skipped",
            steps: [.open("a"), .open("b"), .open("c"), .busy("a"), .open("d", shed: "b"), .open("e", shed: "c")]
        ),
        Case(
            testDescription: "idle again, a connection goes last",
            steps: [.open("a"), .open("b"), .open("c"), .busy("a"), .idle("a"), .open("d", shed: "b"), .open("e", shed: "c"), .open("f", shed: "a")]
        ),
        Case(
            testDescription: "a request answered at once puts an idle connection last",
            steps: [.open("a"), .open("b"), .open("c"), .used("a"), .open("d", shed: "b"), .open("e", shed: "c"), .open("f", shed: "a")]
        ),
        Case(
            testDescription: "a busy connection used meanwhile stays out of the idle order",
            steps: [.open("a"), .open("b"), .open("c"), .busy("a"), .used("a"), .open("d", shed: "b"), .open("e", shed: "c"), .open("f", shed: "d")]
        ),
        Case(
            testDescription: "every connection busy: the new one is refused",
            steps: [
                .open("a"), .open("b"), .open("c"), .busy("a"), .busy("b"), .busy("c"), .open("d", refused: true), .idle("b"), .open("e", shed: "b"),
            ]
        ),
        Case(
            testDescription: "every connection busy: the one unread longest is shed, not the new one refused",
            steps: [
                .open("a"), .open("b"), .open("c"), .busy("a"), .busy("b"), .busy("c"), .unread("b"), .unread("a"), .open("d", shed: "b"),
                .busy("d"), .open("e", shed: "a"), .busy("e"), .open("f", refused: true),
            ]
        ),
        Case(
            testDescription: "a client unwritable for a moment (a download on a slow link) is not cut: the new one is refused",
            steps: [.open("a"), .open("b"), .open("c"), .busy("a"), .busy("b"), .busy("c"), .unreadJustNow("a"), .open("d", refused: true)]
        ),
        Case(
            testDescription: "a client that reads again leaves the unread order; an idle connection still goes first",
            steps: [
                .open("a"), .open("b"), .open("c"), .busy("a"), .busy("b"), .unread("a"), .unread("b"), .read("a"), .open("d", shed: "c"),
                .busy("d"), .open("e", shed: "b"), .busy("e"), .open("f", refused: true),
            ]
        ),
        Case(
            testDescription: "a closed connection leaves the order",
            steps: [.open("a"), .open("b"), .open("c"), .close("a"), .open("d"), .busy("b"), .open("e", shed: "c"), .close("b"), .open("f")]
        ),
    ]

    @Test(arguments: cases)
    func theCapShedsTheLongestIdle(_ testCase: Case) throws {
        let registry = ConnectionRegistry(
            maximumConnections: 3,
            metrics: ConnectionMetrics(registry: PrometheusCollectorRegistry()),
            logger: Logger(label: "test")
        )
        var channels: [String: EmbeddedChannel] = [:]
        var tickets: [String: ConnectionRegistry.Ticket] = [:]
        for step in testCase.steps {
            switch step {
            case .open(let name, let shed, let refused):
                let channel = EmbeddedChannel()
                try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
                channels[name] = channel
                let openBefore = Set(channels.filter { $0.value.isActive }.keys)
                let ticket = registry.admit(channel)
                #expect((ticket == nil) == refused, "\(name) admitted")
                tickets[name] = ticket
                let closed = openBefore.subtracting(channels.filter { $0.value.isActive }.keys).subtracting([name])
                #expect(closed == Set(shed.map { [$0] } ?? []), "shed for \(name)")
            case .busy(let name):
                if let ticket = tickets[name] { registry.setIdle(ticket, false) }
            case .idle(let name):
                if let ticket = tickets[name] { registry.setIdle(ticket, true) }
            case .used(let name):
                if let ticket = tickets[name] { registry.used(ticket) }
            case .unread(let name):
                if let ticket = tickets[name] { registry.setUnread(ticket, true, at: .now - ConnectionRegistry.unreadBeforeShed) }
            case .unreadJustNow(let name):
                if let ticket = tickets[name] { registry.setUnread(ticket, true) }
            case .read(let name):
                if let ticket = tickets[name] { registry.setUnread(ticket, false) }
            case .close(let name):
                if let ticket = tickets[name] { registry.release(ticket) }
                _ = try? channels[name]?.close().wait()
            }
        }
        for channel in channels.values { _ = try? channel.finish() }
    }
}
