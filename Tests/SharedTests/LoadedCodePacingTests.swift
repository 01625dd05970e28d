import Testing

@testable import Shared

/// `LoadedCode.Pacing`: a process lets go of its code at a quiet moment after it ran code once, at most once per
/// interval, and a release the interval held back happens at the first quiet moment after it.
@Suite("Loaded code pacing")
struct LoadedCodePacingTests {
    enum Event: Sendable {
        /// Code ran once (an unsettled pass, a change of the process table).
        case ran
        /// A quiet moment this many seconds after the start.
        case quiet(Int)
    }

    struct Scenario: CustomTestStringConvertible, Sendable {
        var name: String
        var events: [Event]
        /// The seconds of the quiet moments that let go.
        var releases: [Int]
        var testDescription: String { name }
    }

    static let scenarios: [Scenario] = [
        Scenario(name: "start-up is let go at the first quiet moment", events: [.quiet(5)], releases: [5]),
        Scenario(name: "nothing ran since: quiet moments let nothing go", events: [.quiet(5), .quiet(400), .quiet(900)], releases: [5]),
        Scenario(
            name: "a deploy long after the last release is let go at once",
            events: [.quiet(5), .ran, .quiet(600)],
            releases: [5, 600]
        ),
        Scenario(
            name: "a deploy within the interval waits for its end, then goes at the first quiet moment",
            events: [.quiet(5), .ran, .quiet(60), .quiet(120), .quiet(304), .quiet(305), .quiet(400)],
            releases: [5, 305]
        ),
        Scenario(
            name: "an app that flaps pass by pass lets go once per interval",
            events: Array([.quiet(0)] + (1...20).flatMap { minute in [Event.ran, .quiet(minute * 60)] }),
            releases: [0, 300, 600, 900, 1200]
        ),
        Scenario(name: "never quiet: never let go", events: [.ran, .ran, .ran], releases: []),
        Scenario(
            name: "exactly the interval after the last release",
            events: [.quiet(10), .ran, .quiet(309), .quiet(310)],
            releases: [10, 310]
        ),
    ]

    @Test("when code is let go", arguments: scenarios)
    func pacing(_ scenario: Scenario) {
        var pacing = LoadedCode.Pacing(minimumInterval: .seconds(300))
        let start = ContinuousClock.now
        var released: [Int] = []
        for event in scenario.events {
            switch event {
            case .ran:
                pacing.ranOnceOffCode()
            case .quiet(let seconds):
                if pacing.releaseIsDue(at: start + .seconds(seconds)) { released.append(seconds) }
            }
        }
        #expect(released == scenario.releases)
    }
}
