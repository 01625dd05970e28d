import Testing

@testable import Agent

/// The agent honours the poll interval the controller sends (`pollSeconds` of the desired state): for its plain polls,
/// for how often it reports (the controller marks an agent stale after three intervals without a report), and its
/// long-polls end when the next report is due.
@Suite struct PollIntervalTests {
    /// (configured seconds, controller's pollSeconds, expected seconds between plain polls).
    @Test(arguments: [
        (30, Int64?.none, 30), (30, 15, 15), (5, 60, 60), (30, 0, 30), (30, -5, 30), (30, 3601, 30), (30, Int64.max, 30), (30, 3600, 3600),
    ])
    func plainPollsFollowTheController(configured: Int, controller: Int64?, expected: Int) {
        #expect(PollService.pollInterval(configured: configured, controller: controller) == expected)
    }

    /// (configured report seconds, controller's pollSeconds, expected seconds between reports).
    @Test(arguments: [
        (60, Int64?.none, 60), (60, 15, 30), (60, 45, 60), (10, 15, 10), (60, 0, 60), (60, Int64.max, 60), (60, Int64.min, 60),
    ])
    func reportsComeWithinTwoControllerIntervals(configured: Int, controller: Int64?, expected: Int) {
        #expect(ReportTrigger.interval(configured: configured, controllerPollSeconds: controller) == .seconds(expected))
    }

    /// (configured long-poll seconds, time until the next report, expected `?wait=`).
    @Test(arguments: [
        (30, Duration.seconds(100), 30), (30, .seconds(12), 12), (30, .milliseconds(11_200), 12), (30, .zero, 1), (30, .seconds(-40), 1),
        (60, .seconds(60), 60), (30, .seconds(Int64.max), 30), (30, .seconds(Int64.max) + .milliseconds(500), 30),
        // Long-polls off: plain polls, whatever the report schedule.
        (0, .seconds(100), 0), (0, .zero, 0), (0, .seconds(-40), 0), (-1, .seconds(5), 0),
    ])
    func longPollsEndWhenTheNextReportIsDue(configured: Int, untilReport: Duration, expected: Int) {
        #expect(PollService.longPollWait(configured: configured, untilReport: untilReport) == expected)
    }

    /// Whether a turn of the poll loop runs a pass: (time since the last pass, desired state changed, controller came or
    /// went, last pass changed something or had a problem, expected), with a 5 s drift check.
    @Test(arguments: [
        // The first turn always runs one.
        (Duration?.none, false, false, false, true),
        // A 304 with everything settled: only when the drift check is due.
        (.seconds(1), false, false, false, false), (.milliseconds(4_999), false, false, false, false),
        (.seconds(5), false, false, false, true), (.seconds(3_600), false, false, false, true),
        // Anything that may need work runs it at once.
        (.seconds(1), true, false, false, true), (.seconds(1), false, true, false, true), (.seconds(1), false, false, true, true),
        (.zero, true, true, true, true),
    ])
    func aPollThatBringsNothingNewChecksDriftOnItsOwnClock(
        sinceLastPass: Duration?,
        desiredChanged: Bool,
        reachabilityChanged: Bool,
        lastPassUnsettled: Bool,
        expected: Bool
    ) {
        #expect(
            PollService.passIsDue(
                sinceLastPass: sinceLastPass,
                driftCheck: .seconds(5),
                desiredChanged: desiredChanged,
                reachabilityChanged: reachabilityChanged,
                lastPassUnsettled: lastPassUnsettled
            ) == expected
        )
    }

    /// When a periodic report falls due, the schedule moves the next due time a period ahead *before* it wakes the report
    /// loop, so it does not wake again while the report is being built (it used to move only when the report was sent,
    /// and every periodic report went out twice). Checked by order, not by timing: each time the loop is woken, the due
    /// time is later than the one the loop itself set after its last report. One case is left out, because there a
    /// second wake is right: the loop reported only after the next due time had passed (a report slower than a period,
    /// as on a loaded machine), so the schedule may have fired again meanwhile and that wake waits in the stream.
    @Test func aDueReportFiresOncePerPeriod() async throws {
        let trigger = ReportTrigger()
        let period = Duration.milliseconds(200)
        var dueSetByLoop = trigger.nextReport
        var mayHaveFiredAgain = false
        let schedule = Task { await trigger.runSchedule { period } }
        defer { schedule.cancel() }
        var fires = 0
        var checked = 0
        for await _ in trigger.stream {
            let nextDue = trigger.nextReport
            if !mayHaveFiredAgain {
                #expect(nextDue > dueSetByLoop, "fire \(fires + 1): the schedule fired without moving the due time")
                checked += 1
            }
            try await Task.sleep(for: .milliseconds(30))  // building and sending the report
            dueSetByLoop = trigger.reported(interval: period)
            mayHaveFiredAgain = dueSetByLoop - period >= nextDue
            fires += 1
            if checked == 4 || fires == 50 { break }
        }
        #expect(checked == 4, "\(fires) wakes, \(checked) of them checked")
    }
}
