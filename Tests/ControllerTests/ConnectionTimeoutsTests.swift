import Testing

@testable import Controller

/// The connection timeout state machine, walked with explicit instants (header timeout 10 s, idle timeout 60 s).
@Suite struct ConnectionTimeoutsTests {
    enum Event: Sendable {
        /// A read of 64 KiB.
        case bytes
        /// A read of that many bytes.
        case read(Int)
        case head
        case requestEnd
        case responseEnd
        case unwritable
        case writable
        /// A request answered within one read (`DesiredStateFastPath`).
        case answeredAtOnce
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        /// Events at seconds after the connection opened.
        let events: [(at: Int, event: Event)]
        /// The deadline afterwards (seconds after opening) and its reason; `nil`: none.
        let expiry: (at: Int, reason: ConnectionTimeouts.Reason)?
        let idle: Bool

        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "a new connection owes a request head within the header timeout", events: [], expiry: (10, .header), idle: true),
        Case(
            name: "bytes of a head do not extend the header timeout (slowloris)",
            events: [(3, .bytes), (9, .bytes)],
            expiry: (10, .header),
            idle: true
        ),
        Case(
            name: "a GET being answered has no deadline (a parked long-poll)",
            events: [(1, .bytes), (1, .head), (1, .requestEnd)],
            expiry: nil,
            idle: false
        ),
        Case(name: "a request body must keep arriving", events: [(1, .bytes), (1, .head), (5, .bytes)], expiry: (65, .body), idle: false),
        Case(
            // A byte a minute kept a request in flight for ever, so a connection the cap never sheds.
            name: "a body trickled below the minimum rate is cut once it has had the idle timeout",
            events: [(1, .head), (30, .read(1024)), (59, .read(1024)), (88, .read(1024))],
            expiry: (64, .body),
            idle: false
        ),
        Case(
            name: "each KiB of a body buys a second past the idle timeout",
            events: [(1, .head), (20, .read(10 * 1024)), (40, .read(10 * 1024)), (60, .read(10 * 1024))],
            expiry: (91, .body),
            idle: false
        ),
        Case(
            name: "the rate counts from each request's head",
            events: [(1, .head), (1, .read(100 * 1024)), (1, .requestEnd), (2, .responseEnd), (5, .bytes), (5, .head), (50, .read(1024))],
            expiry: (66, .body),
            idle: false
        ),
        Case(
            name: "after the answer the connection is idle",
            events: [(1, .head), (1, .requestEnd), (2, .responseEnd)],
            expiry: (62, .idle),
            idle: true
        ),
        Case(
            // A 401 or 413 before an upload ended: its last bytes started the header timeout, and the connection was
            // closed as a slowloris 10 s later instead of kept for the idle timeout.
            name: "the rest of a body answered already is no new head: idle from the answer",
            events: [(1, .head), (1, .read(1024)), (2, .responseEnd), (3, .read(1024)), (4, .requestEnd)],
            expiry: (62, .idle),
            idle: true
        ),
        Case(
            name: "a next request after a body answered early starts a header timeout",
            events: [(1, .head), (2, .responseEnd), (3, .read(1024)), (4, .requestEnd), (30, .bytes)],
            expiry: (40, .header),
            idle: true
        ),
        Case(
            name: "a first byte after idling starts a new header timeout",
            events: [(1, .head), (1, .requestEnd), (2, .responseEnd), (30, .bytes)],
            expiry: (40, .header),
            idle: true
        ),
        Case(
            name: "a client that stops reading the answer is cut after the idle timeout",
            events: [(1, .head), (1, .requestEnd), (2, .unwritable), (3, .unwritable)],
            expiry: (62, .slowReader),
            idle: false
        ),
        Case(
            name: "a client that reads again has no deadline",
            events: [(1, .head), (1, .requestEnd), (2, .unwritable), (3, .writable)],
            expiry: nil,
            idle: false
        ),
        Case(
            name: "two pipelined requests: idle only after both answers",
            events: [(1, .head), (1, .requestEnd), (1, .head), (1, .requestEnd), (2, .responseEnd)],
            expiry: nil,
            idle: false
        ),
        Case(
            name: "an answer end without a request changes nothing",
            events: [(1, .responseEnd)],
            expiry: (10, .header),
            idle: true
        ),
        Case(
            name: "a request answered within one read leaves the connection idle, its idle timeout from then",
            events: [(1, .bytes), (5, .bytes), (5, .answeredAtOnce)],
            expiry: (65, .idle),
            idle: true
        ),
        Case(
            name: "a request answered within one read behind one in flight leaves that one in flight",
            events: [(1, .bytes), (1, .head), (1, .requestEnd), (2, .bytes), (2, .answeredAtOnce)],
            expiry: nil,
            idle: false
        ),
        Case(
            name: "requests answered within one read to a client that does not read: cut after the idle timeout since it stopped",
            events: [(1, .answeredAtOnce), (2, .unwritable), (3, .answeredAtOnce), (30, .answeredAtOnce)],
            expiry: (62, .slowReader),
            idle: true
        ),
        Case(
            name: "an unwritable connection owing a head: the earlier deadline",
            events: [(2, .unwritable)],
            expiry: (10, .header),
            idle: true
        ),
    ]

    @Test(arguments: cases)
    func transitions(_ testCase: Case) {
        let opened = ContinuousClock.now
        func at(_ seconds: Int) -> ContinuousClock.Instant { opened + .seconds(seconds) }
        var timeouts = ConnectionTimeouts(openedAt: opened, headerTimeout: .seconds(10), idleTimeout: .seconds(60))
        for (second, event) in testCase.events {
            switch event {
            case .bytes: timeouts.bytesReceived(64 * 1024, at: at(second))
            case .read(let count): timeouts.bytesReceived(count, at: at(second))
            case .head: timeouts.requestHeadReceived(at: at(second))
            case .requestEnd: timeouts.requestEnded(at: at(second))
            case .responseEnd: timeouts.responseEnded(at: at(second))
            case .unwritable: timeouts.writabilityChanged(isWritable: false, at: at(second))
            case .writable: timeouts.writabilityChanged(isWritable: true, at: at(second))
            case .answeredAtOnce: timeouts.requestAnsweredAtOnce(at: at(second))
            }
        }
        #expect(timeouts.isIdle == testCase.idle)
        if let (second, reason) = testCase.expiry {
            #expect(timeouts.expiry == ConnectionTimeouts.Expiry(instant: at(second), reason: reason))
            #expect(timeouts.expired(at: at(second) - .milliseconds(1)) == nil)
            #expect(timeouts.expired(at: at(second)) == reason)
        } else {
            #expect(timeouts.expiry == nil)
            #expect(timeouts.expired(at: at(100_000)) == nil)
        }
    }
}
