import NIOPosix
import Synchronization
import Testing

@testable import Controller

@Suite struct LongPollHubTests {
    @Test func aChangeBeforeParkingEndsTheWaitAtOnce() async {
        let hub = LongPollHub()
        let generation = hub.generation
        hub.notify(services: ["api"])
        // The state was read before the change: parking must not miss it.
        #expect(await hub.wait(agentID: "a", services: ["api"], after: generation, timeout: .seconds(30)) == .changed)
    }

    /// Both waiters park with a long timeout: the web one used to have 300 ms, and on a loaded machine it timed out
    /// before the api one had parked, so the test waited for two parked waiters that never were (a CI failure).
    /// `notify` takes woken waiters off under the hub's lock, so the count right after it tells who was woken.
    @Test func onlyWaitersOfTheServiceAreWoken() async throws {
        let counts = Mutex<[Int]>([])
        let hub = LongPollHub(onCountChange: { count in counts.withLock { $0.append(count) } })
        try await withThrowingTaskGroup(of: (String, LongPollHub.Wake).self) { group in
            let generation = hub.generation
            group.addTask { ("api", await hub.wait(agentID: "a", services: ["api"], after: generation, timeout: .seconds(60))) }
            group.addTask { ("web", await hub.wait(agentID: "b", services: ["web"], after: generation, timeout: .seconds(60))) }
            let deadline = ContinuousClock.now + .seconds(45)
            while hub.waiterCount < 2 {
                guard ContinuousClock.now < deadline else { throw FixtureError("waiters did not park") }
                try await Task.sleep(for: .milliseconds(5))
            }
            hub.notify(services: ["api", "other"])
            #expect(hub.waiterCount == 1, "the web waiter was woken by a change to api")
            let first = try await group.next()
            #expect(first?.0 == "api" && first?.1 == .changed, "\(String(describing: first))")
            #expect(hub.waiterCount == 1)
            hub.notify(services: ["web"])
            let second = try await group.next()
            #expect(second?.0 == "web" && second?.1 == .changed, "\(String(describing: second))")
        }
        #expect(hub.waiterCount == 0)
        #expect(counts.withLock { $0.last } == 0)
        // A waiter nothing wakes ends at its timeout.
        #expect(await hub.wait(agentID: "c", services: ["web"], after: hub.generation, timeout: .milliseconds(300)) == .timedOut)
        #expect(hub.waiterCount == 0)
    }

    /// An agent token re-polling as fast as it can (each poll superseding the last) leaves no timer per poll behind:
    /// one sweep per tick that has deadlines. A timer per wait, never cancelled, kept every superseded poll's timer
    /// alive for its whole wait (hundreds of MB at ten thousand requests a second with `?wait=60`).
    @Test func supersededWaitsLeaveNoTimerPerWait() async throws {
        let hub = LongPollHub()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let wakes = Mutex<[LongPollHub.Wake]>([])
        for _ in 0..<10_000 {
            hub.park(agentID: "a", services: ["api"], after: hub.generation, timeout: .seconds(60), on: loop) { wake in
                wakes.withLock { $0.append(wake) }
            }
        }
        #expect(hub.waiterCount == 1)
        #expect(wakes.withLock { $0.count } == 9_999 && wakes.withLock { $0.allSatisfy { $0 == .superseded } })
        // 10,000 deadlines within a second or so of each other: a sweep for each 100 ms tick they fall in at most.
        #expect(hub.sweepsScheduled <= 20, "\(hub.sweepsScheduled) sweeps for 10,000 waits")
        hub.shutdown()
    }

    /// A wait ends at its timeout, never before, and at most a tick (plus scheduling) after; waits of different
    /// lengths each end at their own, whichever parked first.
    @Test func waitsTimeOutAtTheirOwnDeadlineNeverEarly() async throws {
        let hub = LongPollHub()
        let start = ContinuousClock.now
        async let long = hub.wait(agentID: "long", services: ["api"], after: hub.generation, timeout: .milliseconds(900))
        async let short = hub.wait(agentID: "short", services: ["api"], after: hub.generation, timeout: .milliseconds(250))
        #expect(await short == .timedOut)
        let shortEnded = start.duration(to: .now)
        #expect(await long == .timedOut)
        let longEnded = start.duration(to: .now)
        #expect(shortEnded >= .milliseconds(250) && shortEnded < .milliseconds(850), "short ended after \(shortEnded)")
        #expect(longEnded >= .milliseconds(900), "long ended after \(longEnded)")
        #expect(hub.waiterCount == 0)
    }

    @Test func shutdownAnswersEveryoneAndLaterWaitsReturnAtOnce() async throws {
        let hub = LongPollHub()
        try await withThrowingTaskGroup(of: LongPollHub.Wake.self) { group in
            for index in 0..<50 {
                let generation = hub.generation
                group.addTask { await hub.wait(agentID: "a\(index)", services: ["api"], after: generation, timeout: .seconds(60)) }
            }
            let deadline = ContinuousClock.now + .seconds(45)
            while hub.waiterCount < 50 {
                guard ContinuousClock.now < deadline else { throw FixtureError("waiters did not park") }
                try await Task.sleep(for: .milliseconds(5))
            }
            hub.shutdown()
            var wakes: [LongPollHub.Wake] = []
            for try await wake in group { wakes.append(wake) }
            #expect(wakes == Array(repeating: .shutdown, count: 50))
        }
        #expect(await hub.wait(agentID: "late", services: ["api"], after: hub.generation, timeout: .seconds(60)) == .shutdown)
    }

    @Test func cancelledWaitsLeaveNothingBehind() async throws {
        let hub = LongPollHub()
        let task = Task { await hub.wait(agentID: "a", services: ["api"], after: hub.generation, timeout: .seconds(60)) }
        let deadline = ContinuousClock.now + .seconds(45)
        while hub.waiterCount < 1 {
            guard ContinuousClock.now < deadline else { throw FixtureError("waiter did not park") }
            try await Task.sleep(for: .milliseconds(5))
        }
        task.cancel()
        #expect(await task.value == .cancelled)
        #expect(hub.waiterCount == 0)
    }

    @Test func agentNotificationsWakeOnlyThatAgent() async {
        let hub = LongPollHub()
        let generation = hub.generation
        async let mine = hub.wait(agentID: "mine", services: ["api"], after: generation, timeout: .seconds(30))
        while hub.waiterCount < 1 { await Task.yield() }
        hub.notify(agentID: "other")
        #expect(hub.waiterCount == 1)
        hub.notify(agentID: "mine")
        #expect(await mine == .changed)
    }
}

@Suite struct LongPollHubOnePerAgentTests {
    @Test func aNewWaitOfTheSameAgentAnswersThePreviousOne() async throws {
        let counts = Mutex<[Int]>([])
        let hub = LongPollHub(onCountChange: { count in counts.withLock { $0.append(count) } })
        let generation = hub.generation
        let first = Task { await hub.wait(agentID: "a", services: ["api"], after: generation, timeout: .seconds(60)) }
        // Only how long to wait for the tasks to be scheduled; generous for a loaded machine.
        let deadline = ContinuousClock.now + .seconds(45)
        while hub.waiterCount < 1 {
            guard ContinuousClock.now < deadline else { throw FixtureError("the first wait did not park") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let other = Task { await hub.wait(agentID: "b", services: ["api"], after: generation, timeout: .seconds(60)) }
        while hub.waiterCount < 2 {
            guard ContinuousClock.now < deadline else { throw FixtureError("the other agent's wait did not park") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let second = Task { await hub.wait(agentID: "a", services: ["api"], after: generation, timeout: .seconds(60)) }
        // The first wait is answered at once, long before its 60 s; the other agent's wait stays parked.
        #expect(await first.value == .superseded)
        #expect(hub.waiterCount == 2)
        hub.notify(agentID: "a")
        #expect(await second.value == .changed)
        #expect(hub.waiterCount == 1)
        other.cancel()
        #expect(await other.value == .cancelled)
        #expect(hub.waiterCount == 0)
        #expect(counts.withLock { $0.max() } == 2)
    }

    @Test func manyConcurrentWaitsOfOneAgentLeaveOneParked() async throws {
        let hub = LongPollHub()
        let generation = hub.generation
        try await withThrowingTaskGroup(of: LongPollHub.Wake.self) { group in
            for _ in 0..<300 {
                group.addTask { await hub.wait(agentID: "a", services: ["api"], after: generation, timeout: .seconds(60)) }
            }
            var superseded = 0
            for _ in 0..<299 {
                let wake = try #require(try await group.next())
                #expect(wake == .superseded)
                superseded += 1
            }
            #expect(superseded == 299)
            #expect(hub.waiterCount == 1)
            hub.notify(services: ["api"])
            #expect(try await group.next() == .changed)
        }
        #expect(hub.waiterCount == 0)
    }
}
