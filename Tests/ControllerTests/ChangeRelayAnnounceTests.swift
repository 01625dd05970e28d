import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// What the relay sends when an announcement cannot go out: the other controllers would keep serving states older than
/// what agents run until they hear a resync, so the resync is sent as soon as it can be, not with the next change.
@Suite struct ChangeRelayAnnounceTests {
    /// The payloads `send` was called with, and how many of the first calls fail.
    final class Sender: Sendable {
        let failing: Int
        let calls = Mutex<[String]>([])

        init(failing: Int) {
            self.failing = failing
        }

        func send(_ payload: String) throws {
            let count = calls.withLock { calls in
                calls.append(payload)
                return calls.count
            }
            if count <= failing { throw SendError() }
        }

        struct SendError: Error {}
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var testDescription: String
        /// Calls that fail before one goes through.
        var failing: Int
        /// What is sent, in order: `agent` for the change, `resync` for a resync.
        var sent: [String]
    }

    static let cases: [Case] = [
        Case(testDescription: "sent at once", failing: 0, sent: ["agent"]),
        Case(testDescription: "sent at the third try", failing: 2, sent: ["agent", "agent", "agent"]),
        Case(testDescription: "given up: a resync follows without another change", failing: 3, sent: ["agent", "agent", "agent", "resync"]),
        Case(
            testDescription: "the resync is tried until it goes out",
            failing: 5,
            sent: ["agent", "agent", "agent", "resync", "resync", "resync"]
        ),
    ]

    @Test(arguments: cases)
    func aChangeThatCannotBeSentIsMadeUpForByAResync(_ testCase: Case) async throws {
        let feed = ClusterChangeFeed.enabled(origin: "c000000000001")
        let changes = try #require(feed.changes)
        let sender = Sender(failing: testCase.failing)
        let relay = Task {
            await PostgresChangeRelay.announce(
                changes,
                feed: feed,
                logger: Logger(label: "test"),
                retryDelay: .milliseconds(1),
                resyncInterval: .milliseconds(10)
            ) { try sender.send($0) }
        }
        feed.announce(.agentChanged(id: "agt_1"))
        try await eventually("\(testCase.sent.count) sends", timeout: .seconds(10), interval: .milliseconds(5)) {
            sender.calls.withLock { $0.count } >= testCase.sent.count ? true : nil
        }
        // A moment more: nothing else may be sent.
        try await Task.sleep(for: .milliseconds(100))
        feed.finish()
        await relay.value
        let sent = sender.calls.withLock { $0 }.map { $0.split(separator: " ").dropFirst(2).first.map(String.init) ?? "" }
        #expect(sent == testCase.sent)
        #expect(!feed.takeDropped(), "nothing is left to make up for")
    }
}

/// Whether the change listener listens: only the connection attempt under way can say it does. A listen whose attempt
/// ended (its task is not awaited past a cancellation) said "listening" after the attempt had said it stopped.
@Suite struct ChangeRelayListeningFlagTests {
    @Test func anEndedAttemptCannotSayItListens() {
        let flag = PostgresChangeRelay.ListeningFlag()
        let told = Mutex<[Bool]>([])
        let first = flag.begin()
        flag.listen(attempt: first) { told.withLock { $0.append(true) } }
        #expect(flag.isListening)
        flag.end { told.withLock { $0.append(false) } }
        #expect(!flag.isListening)
        // The first attempt's listen, late: nothing changes, nobody is told.
        flag.listen(attempt: first) { told.withLock { $0.append(true) } }
        #expect(!flag.isListening)
        let second = flag.begin()
        // An attempt that gave up before its own listen said so, while the next attempt has not begun.
        flag.end { told.withLock { $0.append(false) } }
        flag.listen(attempt: second) { told.withLock { $0.append(true) } }
        #expect(!flag.isListening)
        let third = flag.begin()
        flag.listen(attempt: third) { told.withLock { $0.append(true) } }
        #expect(flag.isListening)
        #expect(told.withLock { $0 } == [true, false, false, true])
    }
}
