import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The operator side of the event stream: reading `text/event-stream` as it arrives, and deciding when a rollout
/// that `rollout wait` follows is over.
@Suite("Event stream reader and rollout wait verdicts")
struct EventStreamClientTests {
    struct StreamCase: Sendable, CustomTestStringConvertible {
        var name: String
        /// The body, cut into the chunks it arrives in.
        var chunks: [String]
        var messages: [ServerSentEvents.Message]
        var comments: Int

        var testDescription: String { name }
    }

    static let streams: [StreamCase] = [
        StreamCase(
            name: "events and a keep-alive",
            chunks: ["retry: 2000\n: Ferry events after id 4\n\nid: 5\ndata: {\"id\":5}\n\n: keep-alive\n\nid: 6\ndata: {\"id\":6}\n\n"],
            messages: [.init(id: "5", data: #"{"id":5}"#), .init(id: "6", data: #"{"id":6}"#)],
            comments: 2
        ),
        StreamCase(
            name: "a message cut across chunks, and CRLF line ends",
            chunks: ["id: 7\r\nda", "ta: {\"a\"", ":1}\r\n", "\r\n"],
            messages: [.init(id: "7", data: #"{"a":1}"#)],
            comments: 0
        ),
        StreamCase(
            name: "several data lines join with a newline; the id carries over",
            chunks: ["id: 9\ndata: one\ndata: two\n\ndata:three\n\n"],
            messages: [.init(id: "9", data: "one\ntwo"), .init(id: "9", data: "three")],
            comments: 0
        ),
        StreamCase(name: "an unfinished message is not dispatched", chunks: ["id: 1\ndata: {}\n"], messages: [], comments: 0),
        StreamCase(name: "a blank line alone dispatches nothing", chunks: ["\n\n\n"], messages: [], comments: 0),
    ]

    @Test(arguments: streams)
    func readingAStream(_ row: StreamCase) throws {
        var reader = ServerSentEvents()
        var messages: [ServerSentEvents.Message] = []
        for chunk in row.chunks { messages += try reader.feed(Array(chunk.utf8)) }
        #expect(messages == row.messages)
        #expect(reader.comments == row.comments)
    }

    @Test func aLineThatNeverEndsIsRefused() {
        var reader = ServerSentEvents()
        #expect(throws: ServerSentEvents.LineTooLong.self) {
            _ = try reader.feed([UInt8](repeating: UInt8(ascii: "d"), count: ServerSentEvents.maximumLineBytes + 1))
        }
    }

    /// Data lines without the blank line that ends a message gathered without end (each line within the limit).
    @Test func aMessageThatNeverEndsIsRefused() throws {
        var reader = ServerSentEvents()
        let line = Array(("data: " + String(repeating: "x", count: 1000) + "\n").utf8)
        var refused: ServerSentEvents.LineTooLong?
        for _ in 0..<(ServerSentEvents.maximumLineBytes / 1000 + 2) {
            do {
                _ = try reader.feed(line)
            } catch {
                refused = error
                break
            }
        }
        #expect(refused?.message == true)
        #expect(refused.map(String.init(describing:))?.contains("a message with more than") == true)
        // A message just within the limit is read.
        var fits = ServerSentEvents()
        let half = String(repeating: "y", count: ServerSentEvents.maximumLineBytes / 2 - 1)
        let messages = try fits.feed(Array("data: \(half)\ndata: \(half)\n\n".utf8))
        #expect(messages.map(\.data.utf8.count) == [ServerSentEvents.maximumLineBytes - 1])
    }

    /// A long line arriving a byte at a time is searched for its end once: fed 200 KiB one byte per call, the reader
    /// must finish in well under the time a rescan per byte takes (2·10^10 comparisons).
    @Test func aLongLineArrivingAByteAtATimeIsSearchedOnce() throws {
        var reader = ServerSentEvents()
        let text = Array(("data: " + String(repeating: "z", count: 200 << 10) + "\n\n").utf8)
        var messages: [ServerSentEvents.Message] = []
        let clock = ContinuousClock()
        let elapsed = try clock.measure {
            for byte in text { messages += try reader.feed([byte]) }
        }
        #expect(messages.count == 1 && messages.first?.data.utf8.count == 200 << 10)
        #expect(elapsed < .seconds(5), "\(elapsed)")
    }

    // MARK: Rollout wait

    /// A rollout document as `GET /v1/rollouts/{service}/{serial}` shapes it.
    static func rollout(
        state: String,
        strategy: String = "waves:50,100",
        agents: Int64 = 2,
        healthy: Int64 = 0,
        failed: Int64 = 0,
        maxFailures: Int64 = 0,
        reason: String = "",
        newer: Int64 = 0
    ) -> JSONValue {
        .object([
            "service": .string("web"), "serial": .integer(2), "state": .string(state), "strategy": .string(strategy), "wave": .integer(1),
            "waveCount": .integer(2), "maxFailures": .integer(maxFailures), "reason": .string(reason),
            "counts": .object([
                "agents": .integer(agents), "healthy": .integer(healthy), "updated": .integer(healthy), "failed": .integer(failed),
                "pending": .integer(agents - healthy - failed), "newer": .integer(newer),
            ]),
            "failures": .array(
                failed > 0
                    ? [
                        .object([
                            "agentId": .string("agt_1"), "agentName": .string("web-1"), "kind": .string("rolled-back"), "reason": .string("boom"),
                        ])
                    ]
                    : []
            ),
            "agents": .array([
                .object([
                    "id": .string("agt_1"), "name": .string("web-1"),
                    "failure": failed > 0
                        ? .object(["serial": .integer(2), "kind": .string("rolled-back"), "reason": .string("boom")]) : .null,
                ])
            ]),
        ])
    }

    enum Expected: Sendable, Equatable {
        case waiting, completed, failed
    }

    struct WaitCase: Sendable, CustomTestStringConvertible {
        var name: String
        var rollout: JSONValue
        var expected: Expected

        var testDescription: String { name }
    }

    static let waits: [WaitCase] = [
        WaitCase(name: "a staged rollout that completed", rollout: rollout(state: "completed", healthy: 2), expected: .completed),
        WaitCase(name: "a staged rollout still rolling", rollout: rollout(state: "rolling", healthy: 1), expected: .waiting),
        WaitCase(name: "a paused rollout waits for the operator", rollout: rollout(state: "paused"), expected: .waiting),
        WaitCase(name: "halted", rollout: rollout(state: "halted", failed: 1, reason: "web-1 rolled back"), expected: .failed),
        WaitCase(name: "aborted", rollout: rollout(state: "aborted", reason: "aborted by ci"), expected: .failed),
        WaitCase(name: "superseded before completing", rollout: rollout(state: "superseded"), expected: .failed),
        WaitCase(
            name: "strategy all, complete at publish, agents still installing",
            rollout: rollout(state: "completed", strategy: "all", healthy: 1),
            expected: .waiting
        ),
        WaitCase(name: "strategy all, every agent healthy", rollout: rollout(state: "completed", strategy: "all", healthy: 2), expected: .completed),
        WaitCase(
            name: "strategy all, an agent failed (none tolerated)",
            rollout: rollout(state: "completed", strategy: "all", healthy: 1, failed: 1),
            expected: .failed
        ),
        WaitCase(
            name: "strategy all, one failure tolerated and the other healthy",
            rollout: rollout(state: "completed", strategy: "all", healthy: 1, failed: 1, maxFailures: 1),
            expected: .completed
        ),
        WaitCase(
            name: "more failures than tolerated while still rolling",
            rollout: rollout(state: "rolling", failed: 1),
            expected: .failed
        ),
        // An `all` rollout stays `completed` in the store when a newer release follows: `rollout wait` waited out its
        // whole timeout, then exited 2 ("still rolling") instead of 1.
        WaitCase(
            name: "strategy all, a newer release reached an agent first",
            rollout: rollout(state: "completed", strategy: "all", healthy: 1, newer: 1),
            expected: .failed
        ),
        WaitCase(name: "a rollout without agents", rollout: rollout(state: "completed", strategy: "all", agents: 0), expected: .completed),
        // Counts no controller sends (a broken or hostile answer): `healthy + failed` trapped, crashing the CI step.
        WaitCase(
            name: "counts near Int64.max",
            rollout: .object([
                "state": .string("completed"), "strategy": .string("all"), "maxFailures": .integer(1),
                "counts": .object(["agents": .integer(1), "healthy": .integer(.max), "failed": .integer(1)]),
            ]),
            expected: .completed
        ),
        WaitCase(
            name: "negative counts",
            rollout: .object([
                "state": .string("completed"), "strategy": .string("all"), "maxFailures": .integer(.min),
                "counts": .object(["agents": .integer(.max), "healthy": .integer(.min), "failed": .integer(.min)]),
            ]),
            expected: .waiting
        ),
    ]

    @Test(arguments: waits)
    func whenRolloutWaitStops(_ row: WaitCase) {
        let verdict = RolloutWaitVerdict.decide(row.rollout)
        switch (verdict, row.expected) {
        case (.waiting, .waiting), (.completed, .completed), (.failed, .failed): break
        default: Issue.record("expected \(row.expected), got \(verdict)")
        }
    }

    @Test func aFailedRolloutNamesItsAgentsWithTheirFailure() {
        let failures = RolloutWaitVerdict.failures(Self.rollout(state: "halted", failed: 1, reason: "x"))
        #expect(failures.count == 1)
        #expect(failures.first?.agent == "web-1")
        #expect(failures.first?.reason == "boom")
        #expect(failures.first?.failure?.object?["serial"] == .integer(2))
        if case .failed(let message) = RolloutWaitVerdict.decide(Self.rollout(state: "halted", failed: 1, reason: "web-1 rolled back")) {
            #expect(message.contains("halted: web-1 rolled back"), "\(message)")
        } else {
            Issue.record("a halted rollout must fail")
        }
    }

    /// A signal ends the wait it comes in (or the next one); a wait no signal ends lasts its whole duration, also the
    /// waits after one a signal ended. The timer of an ended wait used to signal when it was cancelled, so every later
    /// wait returned at once and `rollout wait` asked the controller back to back until the rollout ended.
    @Test(.timeLimit(.minutes(1)))
    func aWakeUpSignalEndsOneWaitAndLaterWaitsLastTheirDuration() async throws {
        let signal = WakeUpSignal()
        let clock = ContinuousClock()
        signal.signal()
        let signalled = await clock.measure { await signal.wait(upTo: .seconds(30)) }
        #expect(signalled < .seconds(5), "a signal before the wait ends it at once")

        let waiting = Task { await clock.measure { await signal.wait(upTo: .seconds(30)) } }
        try await eventually("the wait in place", timeout: .seconds(10), interval: .milliseconds(5)) { signal.isWaiting ? true : nil }
        signal.signal()
        #expect(await waiting.value < .seconds(5), "a signal during the wait ends it")

        for round in 1...3 {
            let quiet = await clock.measure { await signal.wait(upTo: .milliseconds(300)) }
            #expect(quiet >= .milliseconds(290), "wait \(round) after a signalled one lasted \(quiet), not its 300 ms")
        }
        // A wait whose timer fires before the wait has put its waiter in place (a duration of nothing) still ends.
        for _ in 0..<200 { await signal.wait(upTo: .zero) }
        let after = await clock.measure { await signal.wait(upTo: .milliseconds(300)) }
        #expect(after >= .milliseconds(290), "a wait after the short ones lasted \(after)")
    }
}
