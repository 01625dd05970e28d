import Foundation
import Shared
import Synchronization
import Testing

/// `HTTPConnection.send(_:notBefore:)`: the connection's own thread waits out a poll loop's interval before sending.
/// Against a real loopback server (`ScriptedHTTPServer`), which records when each request arrived.
@Suite("HTTPConnection: a request sent after a pause")
struct HTTPConnectionPauseTests {
    @Test(
        "a pause in poll(2)'s milliseconds: rounded up, never negative, at most a day",
        arguments: [
            (Duration.zero, Int32(0)),
            (.nanoseconds(1), 1),
            (.microseconds(999), 1),
            (.milliseconds(1), 1),
            (.microseconds(1_001), 2),
            (.seconds(1), 1_000),
            (.milliseconds(2_500), 2_500),
            (.seconds(86_399), 86_399_000),
            (.seconds(86_400), 86_400_000),
            (.seconds(1_000_000_000), 86_400_000),
            (.seconds(Int64.max), 86_400_000),
            (.nanoseconds(-1), 0),
            (.seconds(-5), 0),
            (.seconds(Int64.min), 0),
        ] as [(Duration, Int32)]
    )
    func pollTimeout(pause: Duration, expected: Int32) {
        #expect(HTTPConnection.pollTimeout(pause) == expected)
    }

    @Test("a request is sent no sooner than its notBefore, and one without it at once", .timeLimit(.minutes(1)))
    func sentAfterThePause() async throws {
        let arrivals = Arrivals()
        try await ScriptedHTTPServer.with { _ in
            arrivals.record()
            return [.send(ScriptedHTTPServer.response(status: 204))]
        } run: { server in
            let connection = HTTPConnection()
            defer { connection.close() }
            let called = ContinuousClock.now
            let response = try await connection.send(HTTPClient.Request(url: server.baseURL + "/poll"), notBefore: called + .milliseconds(400))
            #expect(response.status == 204)
            let first = try #require(arrivals.all.first)
            #expect(first >= called + .milliseconds(400), "sent \(called.duration(to: first)) after the call, before its pause ended")

            let again = ContinuousClock.now
            let second = try await connection.send(HTTPClient.Request(url: server.baseURL + "/poll"))
            #expect(second.status == 204)
            #expect(arrivals.all.count == 2)
            // No pause asked: sent without one (a generous bound; the pause above was 400 ms).
            if let arrived = arrivals.all.last { #expect(again.duration(to: arrived) < .seconds(5)) }
        }
    }

    enum Ending: String, CaseIterable, Sendable {
        case cancelled, closed
    }

    @Test(
        "cancelling the request or closing the connection ends its pause at once, and it is never sent",
        .timeLimit(.minutes(1)),
        arguments: Ending.allCases
    )
    func endedDuringThePause(_ ending: Ending) async throws {
        try await ScriptedHTTPServer.with { _ in
            [.send(ScriptedHTTPServer.response(status: 204))]
        } run: { server in
            let connection = HTTPConnection()
            defer { connection.close() }
            let called = ContinuousClock.now
            let request = Task { try await connection.send(HTTPClient.Request(url: server.baseURL + "/poll"), notBefore: called + .seconds(600)) }
            try await Task.sleep(for: .milliseconds(300))
            switch ending {
            case .cancelled: request.cancel()
            case .closed: connection.close()
            }
            let result = await request.result
            guard case .failure(let error) = result, case .cancelled = error as? HTTPClientError else {
                Issue.record("a request \(ending) during its pause ended with \(result), not .cancelled")
                return
            }
            // The pause was ten minutes; the test's time limit is one.
            #expect(called.duration(to: .now) < .seconds(60))
            #expect(server.requests.isEmpty, "a request \(ending) during its pause was sent")
            if ending == .cancelled {
                // A cancelled pause leaves the connection working: the next request goes out.
                let next = try await connection.send(HTTPClient.Request(url: server.baseURL + "/poll"))
                #expect(next.status == 204)
                #expect(server.requests.count == 1)
            }
        }
    }
}

/// When the server received each request.
private final class Arrivals: Sendable {
    private let times = Mutex<[ContinuousClock.Instant]>([])

    func record() { times.withLock { $0.append(.now) } }

    var all: [ContinuousClock.Instant] { times.withLock { $0 } }
}
