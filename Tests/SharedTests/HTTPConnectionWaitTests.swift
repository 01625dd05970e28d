import Foundation
import Shared
import Synchronization
import Testing

/// `HTTPConnection` while a request is in flight (`CurlMultiDriver`): the thread sleeps until the socket has something,
/// instead of waking once a second as `curl_easy_perform` does, and a cancellation still ends the request at once.
/// Against a real loopback server (`ScriptedHTTPServer`) that holds its answer.
@Suite("HTTPConnection: waiting for an answer")
struct HTTPConnectionWaitTests {
    @Test("a request the server holds for 8 s wakes the connection's thread a few times, not once a second", .timeLimit(.minutes(1)))
    func aHeldRequestSleeps() async throws {
        try await ScriptedHTTPServer.with { _ in
            [.pause(.seconds(8)), .send(ScriptedHTTPServer.response(status: 204))]
        } run: { server in
            let connection = HTTPConnection()
            defer { connection.close() }
            let started = ContinuousClock.now
            let response = try await connection.send(HTTPClient.Request(url: server.baseURL + "/poll", timeout: .seconds(30)))
            #expect(response.status == 204)
            #expect(started.duration(to: .now) >= .seconds(8))
            // The queue's signal, libcurl's connect timers (happy eyeballs at 200 ms, ...), the answer: 4 here. A wait cut
            // into seconds, as in `curl_easy_perform`, adds one a second (11 with the same events, measured).
            #expect(connection.transferWakeups <= 6, "\(connection.transferWakeups) wake-ups for one held request")
            #expect(connection.transferWakeups >= 1)
        }
    }

    @Test("a request the server holds ends at once when cancelled, and the connection serves the next", .timeLimit(.minutes(1)))
    func aHeldRequestIsCancelled() async throws {
        let held = Mutex(true)
        try await ScriptedHTTPServer.with { _ in
            // The first request is held for a minute; the next is answered at once.
            let first = held.withLock { state in
                defer { state = false }
                return state
            }
            return first
                ? [.pause(.seconds(60)), .send(ScriptedHTTPServer.response(status: 204))]
                : [.send(ScriptedHTTPServer.response(status: 204))]
        } run: { server in
            let connection = HTTPConnection()
            defer { connection.close() }
            let request = Task { try await connection.send(HTTPClient.Request(url: server.baseURL + "/poll", timeout: .seconds(120))) }
            while server.requests.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            let cancelled = ContinuousClock.now
            request.cancel()
            let result = await request.result
            guard case .failure(let error) = result, case .cancelled = error as? HTTPClientError else {
                Issue.record("a held request that was cancelled ended with \(result), not .cancelled")
                return
            }
            // The server holds for 60 s: anything near that means the cancellation was not seen.
            #expect(cancelled.duration(to: .now) < .seconds(20))
            let next = try await connection.send(HTTPClient.Request(url: server.baseURL + "/poll"))
            #expect(next.status == 204)
            #expect(server.requests.count == 2)
        }
    }
}
