import Shared
import Testing

@testable import Supervisor

/// The lifecycle of one supervised instance, as a table: every state × every event → the next state and the action,
/// or the refusal; then the crash policy step by step.
@Suite("Supervised instance state machine")
struct SupervisedInstanceStateMachineTests {
    typealias Machine = SupervisedInstance.StateMachine

    static let backoff = RestartBackoff(initial: .milliseconds(100), maximum: .milliseconds(1000))
    /// PM2-like defaults, with max_restarts 3.
    static let policy = Machine.Policy(autorestart: true, maxRestarts: 3, minUptime: .seconds(1), restartDelay: .zero)
    static let own = RunID(value: 1)
    static let fresh = RunID(value: 2)
    static let stale = RunID(value: 9)
    /// A run shorter than min_uptime (unstable), and one that lasted.
    static let short = Duration.milliseconds(10)
    static let long = Duration.seconds(5)

    /// The states, each reached from a new slot through legal events only.
    enum Start: String, CaseIterable, CustomStringConvertible {
        case stopped, starting, online, stoppingToStay, stoppingToRelaunch, waitingRestart, errored

        var description: String { rawValue }

        func reach() throws -> Machine {
            var machine = Machine(restartBackoff: SupervisedInstanceStateMachineTests.backoff)
            let own = SupervisedInstanceStateMachineTests.own
            func online() throws {
                _ = try machine.launch()
                _ = try machine.spawned(own)
            }
            switch self {
            case .stopped:
                break
            case .starting:
                _ = try machine.launch()
            case .online:
                try online()
            case .stoppingToStay:
                try online()
                _ = try machine.stop()
            case .stoppingToRelaunch:
                try online()
                _ = try machine.restart()
            case .waitingRestart:
                try online()
                _ = machine.exited(own, exit: .exited(code: 1), ranFor: short, policy: policy, closing: false)
            case .errored:
                try online()
                var giveUp = policy
                giveUp.maxRestarts = 1
                _ = machine.exited(own, exit: .exited(code: 1), ranFor: short, policy: giveUp, closing: false)
            }
            return machine
        }
    }

    /// Every event the machine takes, with the standard policy, a crash exit and nothing closing.
    enum Event: String, CaseIterable, CustomStringConvertible {
        case launch, spawned, spawnFailed, stop, restart, replace
        case exitedOwn, exitedStale, terminateReturnedOwn, terminateReturnedStale, timerOwn, timerStale

        var description: String { rawValue }

        func apply(to machine: inout Machine) -> Result<Machine.Action, Machine.IllegalTransition> {
            let crash = ChildExit.exited(code: 1)
            return Result { () throws(Machine.IllegalTransition) -> Machine.Action in
                switch self {
                case .launch: try machine.launch()
                case .spawned: try machine.spawned(fresh)
                case .spawnFailed: try machine.spawnFailed(policy: policy, closing: false)
                case .stop: try machine.stop()
                case .restart: try machine.restart()
                case .replace: try machine.replace()
                case .exitedOwn: machine.exited(own, exit: crash, ranFor: short, policy: policy, closing: false)
                case .exitedStale: machine.exited(stale, exit: crash, ranFor: short, policy: policy, closing: false)
                case .terminateReturnedOwn: machine.terminateReturned(own, closing: false)
                case .terminateReturnedStale: machine.terminateReturned(stale, closing: false)
                case .timerOwn: machine.restartTimerFired(1, closing: false)
                case .timerStale: machine.restartTimerFired(99, closing: false)
                }
            }
        }
    }

    /// What one event does: the next state, the action and the restart count after it; or the refusal.
    enum Outcome: Equatable, CustomStringConvertible {
        case moves(to: Machine.State, doing: Machine.Action, restarts: Int)
        case refused

        var description: String {
            switch self {
            case .moves(let state, let action, let restarts): "\(state) doing \(action), restarts \(restarts)"
            case .refused: "refused"
            }
        }
    }

    struct Row: Sendable, CustomStringConvertible {
        let start: Start
        let event: Event
        let expected: Outcome
        var description: String { "\(start) + \(event) → \(expected)" }
    }

    /// The whole table: 7 states × 12 events.
    static let table: [Row] = {
        let waiting = Machine.State.waitingRestart(timer: 1)
        let firstRestart = Machine.Action.scheduleRestart(after: .milliseconds(100), timer: 1)
        let nothing = Machine.Action.none
        func stays(_ state: Machine.State) -> Outcome { .moves(to: state, doing: nothing, restarts: 0) }
        let rows: [Start: [Event: Outcome]] = [
            .stopped: [
                .launch: .moves(to: .starting, doing: .spawn, restarts: 0),
                .spawned: .refused,
                .spawnFailed: .refused,
                .stop: stays(.stopped),
                .restart: .moves(to: .starting, doing: .spawn, restarts: 0),
                .replace: .moves(to: .starting, doing: .spawn, restarts: 0),
                .exitedOwn: stays(.stopped),
                .exitedStale: stays(.stopped),
                .terminateReturnedOwn: stays(.stopped),
                .terminateReturnedStale: stays(.stopped),
                .timerOwn: stays(.stopped),
                .timerStale: stays(.stopped),
            ],
            .starting: [
                .launch: .refused,
                .spawned: .moves(to: .online(fresh), doing: nothing, restarts: 0),
                // A failed spawn is an immediate, unstable crash.
                .spawnFailed: .moves(to: waiting, doing: firstRestart, restarts: 0),
                .stop: .refused,
                .restart: .refused,
                .replace: .refused,
                .exitedOwn: stays(.starting),
                .exitedStale: stays(.starting),
                .terminateReturnedOwn: stays(.starting),
                .terminateReturnedStale: stays(.starting),
                .timerOwn: stays(.starting),
                .timerStale: stays(.starting),
            ],
            .online: [
                .launch: .refused,
                .spawned: .refused,
                .spawnFailed: .refused,
                .stop: .moves(to: .stopping(own, then: .stay), doing: .terminate(own), restarts: 0),
                .restart: .moves(to: .stopping(own, then: .relaunch(countingRestart: true)), doing: .terminate(own), restarts: 0),
                .replace: .moves(to: .starting, doing: .spawnReplacing(retiring: own), restarts: 1),
                .exitedOwn: .moves(to: waiting, doing: firstRestart, restarts: 0),
                .exitedStale: stays(.online(own)),
                .terminateReturnedOwn: stays(.online(own)),
                .terminateReturnedStale: stays(.online(own)),
                .timerOwn: stays(.online(own)),
                .timerStale: stays(.online(own)),
            ],
            .stoppingToStay: [
                .launch: .refused,
                .spawned: .refused,
                .spawnFailed: .refused,
                .stop: .moves(to: .stopping(own, then: .stay), doing: .terminate(own), restarts: 0),
                .restart: .moves(to: .stopping(own, then: .relaunch(countingRestart: false)), doing: .terminate(own), restarts: 0),
                .replace: .moves(to: .stopping(own, then: .relaunch(countingRestart: false)), doing: .terminate(own), restarts: 0),
                .exitedOwn: stays(.stopped),
                .exitedStale: stays(.stopping(own, then: .stay)),
                .terminateReturnedOwn: stays(.stopped),
                .terminateReturnedStale: stays(.stopping(own, then: .stay)),
                .timerOwn: stays(.stopping(own, then: .stay)),
                .timerStale: stays(.stopping(own, then: .stay)),
            ],
            .stoppingToRelaunch: [
                .launch: .refused,
                .spawned: .refused,
                .spawnFailed: .refused,
                .stop: .moves(to: .stopping(own, then: .stay), doing: .terminate(own), restarts: 0),
                .restart: .moves(to: .stopping(own, then: .relaunch(countingRestart: false)), doing: .terminate(own), restarts: 0),
                .replace: .moves(to: .stopping(own, then: .relaunch(countingRestart: false)), doing: .terminate(own), restarts: 0),
                // The restart of a running instance counts once its old process is gone.
                .exitedOwn: .moves(to: .starting, doing: .spawn, restarts: 1),
                .exitedStale: stays(.stopping(own, then: .relaunch(countingRestart: true))),
                .terminateReturnedOwn: .moves(to: .starting, doing: .spawn, restarts: 1),
                .terminateReturnedStale: stays(.stopping(own, then: .relaunch(countingRestart: true))),
                .timerOwn: stays(.stopping(own, then: .relaunch(countingRestart: true))),
                .timerStale: stays(.stopping(own, then: .relaunch(countingRestart: true))),
            ],
            .waitingRestart: [
                .launch: .refused,
                .spawned: .refused,
                .spawnFailed: .refused,
                .stop: .moves(to: .stopped, doing: .cancelRestartTimer, restarts: 0),
                .restart: .moves(to: .starting, doing: .spawn, restarts: 0),
                .replace: .moves(to: .starting, doing: .spawn, restarts: 0),
                .exitedOwn: stays(waiting),
                .exitedStale: stays(waiting),
                .terminateReturnedOwn: stays(waiting),
                .terminateReturnedStale: stays(waiting),
                .timerOwn: .moves(to: .starting, doing: .spawn, restarts: 1),
                .timerStale: stays(waiting),
            ],
            .errored: [
                .launch: .moves(to: .starting, doing: .spawn, restarts: 0),
                .spawned: .refused,
                .spawnFailed: .refused,
                .stop: stays(.stopped),
                .restart: .moves(to: .starting, doing: .spawn, restarts: 0),
                .replace: .moves(to: .starting, doing: .spawn, restarts: 0),
                .exitedOwn: stays(.errored),
                .exitedStale: stays(.errored),
                .terminateReturnedOwn: stays(.errored),
                .terminateReturnedStale: stays(.errored),
                .timerOwn: stays(.errored),
                .timerStale: stays(.errored),
            ],
        ]
        return Start.allCases.flatMap { start in
            Event.allCases.map { event in Row(start: start, event: event, expected: rows[start]?[event] ?? .refused) }
        }
    }()

    @Test("the table covers every state and every event")
    func tableIsComplete() {
        #expect(Self.table.count == Start.allCases.count * Event.allCases.count)
        #expect(Set(Self.table.map(\.description)).count == Self.table.count)
    }

    @Test("every state × every event gives the expected next state and action, or a refusal that changes nothing", arguments: table)
    func transition(_ row: Row) throws {
        var machine = try row.start.reach()
        let before = machine
        switch (row.event.apply(to: &machine), row.expected) {
        case (.success(let action), .moves(let state, let expectedAction, let restarts)):
            #expect(machine.state == state)
            #expect(action == expectedAction)
            #expect(machine.restarts == restarts)
        case (.failure(let error), .refused):
            #expect(machine == before, "a refused event changes nothing")
            #expect(error.state == before.state)
            #expect(error.description.contains("is not allowed in state"))
        case (let result, let expected):
            Issue.record("\(row): got \(result), state \(machine.state), expected \(expected)")
        }
    }

    @Test("the status reported for each state is PM2's")
    func statuses() throws {
        let expected: [Start: ProcessStatus] = [
            .stopped: .stopped, .starting: .launching, .online: .online, .stoppingToStay: .stopping,
            .stoppingToRelaunch: .stopping, .waitingRestart: .waitingRestart, .errored: .errored,
        ]
        for start in Start.allCases {
            let machine = try start.reach()
            #expect(machine.status == expected[start], "\(start)")
            let hasRun = [.online, .stoppingToStay, .stoppingToRelaunch].contains(start)
            #expect(machine.run == (hasRun ? Self.own : nil), "\(start)")
        }
    }

    // MARK: - The crash policy, step by step

    /// One event of a scenario and what must hold after it.
    struct Step: Sendable {
        enum Event: Sendable {
            case spawned(RunID)
            case exited(RunID, ranFor: Duration)
            case timer(UInt64)
            case restart
            case spawnFailed
        }

        let event: Event
        let state: Machine.State
        let action: Machine.Action
        let restarts: Int
        let unstable: Int
        let backoff: Duration
    }

    struct Scenario: Sendable, CustomStringConvertible {
        let label: String
        let policy: Machine.Policy
        var closing = false
        let steps: [Step]
        var description: String { label }
    }

    static func run(_ value: UInt64) -> RunID { RunID(value: value) }

    static let crash = ChildExit.exited(code: 1)

    static let scenarios: [Scenario] = [
        Scenario(
            label: "unstable exits double the backoff and end errored at max_restarts, with restart count max_restarts - 1 (PM2)",
            policy: policy,
            steps: [
                Step(
                    event: .exited(run(1), ranFor: short),
                    state: .waitingRestart(timer: 1),
                    action: .scheduleRestart(after: .milliseconds(100), timer: 1),
                    restarts: 0,
                    unstable: 1,
                    backoff: .milliseconds(200)
                ),
                Step(event: .timer(1), state: .starting, action: .spawn, restarts: 1, unstable: 1, backoff: .milliseconds(200)),
                Step(event: .spawned(run(2)), state: .online(run(2)), action: .none, restarts: 1, unstable: 1, backoff: .milliseconds(200)),
                Step(
                    event: .exited(run(2), ranFor: short),
                    state: .waitingRestart(timer: 2),
                    action: .scheduleRestart(after: .milliseconds(200), timer: 2),
                    restarts: 1,
                    unstable: 2,
                    backoff: .milliseconds(400)
                ),
                Step(event: .timer(2), state: .starting, action: .spawn, restarts: 2, unstable: 2, backoff: .milliseconds(400)),
                Step(event: .spawned(run(3)), state: .online(run(3)), action: .none, restarts: 2, unstable: 2, backoff: .milliseconds(400)),
                Step(
                    event: .exited(run(3), ranFor: short),
                    state: .errored,
                    action: .recordErrored(crash),
                    restarts: 2,
                    unstable: 0,
                    backoff: .milliseconds(400)
                ),
                // Restarting an errored app does not count a restart, and resets the backoff.
                Step(event: .restart, state: .starting, action: .spawn, restarts: 2, unstable: 0, backoff: .milliseconds(100)),
            ]
        ),
        Scenario(
            label: "a run that lasted min_uptime resets the unstable count and the backoff",
            policy: policy,
            steps: [
                Step(
                    event: .exited(run(1), ranFor: short),
                    state: .waitingRestart(timer: 1),
                    action: .scheduleRestart(after: .milliseconds(100), timer: 1),
                    restarts: 0,
                    unstable: 1,
                    backoff: .milliseconds(200)
                ),
                Step(event: .timer(1), state: .starting, action: .spawn, restarts: 1, unstable: 1, backoff: .milliseconds(200)),
                Step(event: .spawned(run(2)), state: .online(run(2)), action: .none, restarts: 1, unstable: 1, backoff: .milliseconds(200)),
                Step(
                    event: .exited(run(2), ranFor: long),
                    state: .waitingRestart(timer: 2),
                    action: .scheduleRestart(after: .milliseconds(100), timer: 2),
                    restarts: 1,
                    unstable: 0,
                    backoff: .milliseconds(200)
                ),
            ]
        ),
        Scenario(
            label: "the backoff stops growing at its maximum",
            policy: Machine.Policy(autorestart: true, maxRestarts: 100, minUptime: .seconds(1), restartDelay: .zero),
            steps: (1...6).flatMap { index -> [Step] in
                let delays: [Int64] = [100, 200, 400, 800, 1000, 1000]
                let delay = Duration.milliseconds(delays[index - 1])
                let next = Duration.milliseconds(delays[min(index, 5)])
                return [
                    Step(
                        event: .exited(run(UInt64(index)), ranFor: short),
                        state: .waitingRestart(timer: UInt64(index)),
                        action: .scheduleRestart(after: delay, timer: UInt64(index)),
                        restarts: index - 1,
                        unstable: index,
                        backoff: next
                    ),
                    Step(event: .timer(UInt64(index)), state: .starting, action: .spawn, restarts: index, unstable: index, backoff: next),
                    Step(
                        event: .spawned(run(UInt64(index + 1))),
                        state: .online(run(UInt64(index + 1))),
                        action: .none,
                        restarts: index,
                        unstable: index,
                        backoff: next
                    ),
                ]
            }
        ),
        Scenario(
            label: "a positive restart_delay is used as is and leaves the backoff alone",
            policy: Machine.Policy(autorestart: true, maxRestarts: 3, minUptime: .seconds(1), restartDelay: .milliseconds(1500)),
            steps: [
                Step(
                    event: .exited(run(1), ranFor: short),
                    state: .waitingRestart(timer: 1),
                    action: .scheduleRestart(after: .milliseconds(1500), timer: 1),
                    restarts: 0,
                    unstable: 1,
                    backoff: .milliseconds(100)
                )
            ]
        ),
        Scenario(
            label: "autorestart false: an exit leaves the instance stopped, without a restart",
            policy: Machine.Policy(autorestart: false, maxRestarts: 3, minUptime: .seconds(1), restartDelay: .zero),
            steps: [
                Step(
                    event: .exited(run(1), ranFor: short),
                    state: .stopped,
                    action: .recordStopped(crash),
                    restarts: 0,
                    unstable: 0,
                    backoff: .milliseconds(100)
                )
            ]
        ),
        Scenario(
            label: "stop_exit_codes: an exit with one of them leaves the instance stopped, as autorestart false does (PM2's handleExit)",
            policy: Machine.Policy(autorestart: true, maxRestarts: 3, minUptime: .seconds(1), restartDelay: .zero, stopExitCodes: [0, 1]),
            steps: [
                Step(
                    event: .exited(run(1), ranFor: long),
                    state: .stopped,
                    action: .recordStopped(crash),
                    restarts: 0,
                    unstable: 0,
                    backoff: .milliseconds(100)
                )
            ]
        ),
        Scenario(
            label: "stop_exit_codes: another code, or a signal, restarts as any crash",
            policy: Machine.Policy(autorestart: true, maxRestarts: 3, minUptime: .seconds(1), restartDelay: .zero, stopExitCodes: [0]),
            steps: [
                Step(
                    event: .exited(run(1), ranFor: long),
                    state: .waitingRestart(timer: 1),
                    action: .scheduleRestart(after: .milliseconds(100), timer: 1),
                    restarts: 0,
                    unstable: 0,
                    backoff: .milliseconds(200)
                )
            ]
        ),
        Scenario(
            label: "max_restarts 0: the first exit, even after a long run, is errored",
            policy: Machine.Policy(autorestart: true, maxRestarts: 0, minUptime: .seconds(1), restartDelay: .zero),
            steps: [
                Step(
                    event: .exited(run(1), ranFor: long),
                    state: .errored,
                    action: .recordErrored(crash),
                    restarts: 0,
                    unstable: 0,
                    backoff: .milliseconds(100)
                )
            ]
        ),
        Scenario(
            // A process that never started ran for no time, which `min_uptime: 0` does not call unstable: the spawn was
            // tried every 100 ms for ever (a missing interpreter, a deleted working directory).
            label: "min_uptime 0: spawns that fail are unstable all the same, and the app ends errored",
            policy: Machine.Policy(autorestart: true, maxRestarts: 2, minUptime: .zero, restartDelay: .zero),
            steps: [
                Step(
                    event: .exited(run(1), ranFor: short),
                    state: .waitingRestart(timer: 1),
                    action: .scheduleRestart(after: .milliseconds(100), timer: 1),
                    restarts: 0,
                    unstable: 0,
                    backoff: .milliseconds(200)
                ),
                Step(event: .timer(1), state: .starting, action: .spawn, restarts: 1, unstable: 0, backoff: .milliseconds(200)),
                Step(
                    event: .spawnFailed,
                    state: .waitingRestart(timer: 2),
                    action: .scheduleRestart(after: .milliseconds(200), timer: 2),
                    restarts: 1,
                    unstable: 1,
                    backoff: .milliseconds(400)
                ),
                Step(event: .timer(2), state: .starting, action: .spawn, restarts: 2, unstable: 1, backoff: .milliseconds(400)),
                Step(
                    event: .spawnFailed,
                    state: .errored,
                    action: .recordErrored(.notStarted),
                    restarts: 2,
                    unstable: 0,
                    backoff: .milliseconds(400)
                ),
            ]
        ),
        Scenario(
            // Each exit is stable to `min_uptime: 0`, and the backoff was started again at each: a restart every 100 ms
            // for ever. Only a run of a second or more starts it again now.
            label: "min_uptime 0: quick exits back off, never errored; a run of a second starts the backoff again",
            policy: Machine.Policy(autorestart: true, maxRestarts: 2, minUptime: .zero, restartDelay: .zero),
            steps: [
                Step(
                    event: .exited(run(1), ranFor: short),
                    state: .waitingRestart(timer: 1),
                    action: .scheduleRestart(after: .milliseconds(100), timer: 1),
                    restarts: 0,
                    unstable: 0,
                    backoff: .milliseconds(200)
                ),
                Step(event: .timer(1), state: .starting, action: .spawn, restarts: 1, unstable: 0, backoff: .milliseconds(200)),
                Step(event: .spawned(run(2)), state: .online(run(2)), action: .none, restarts: 1, unstable: 0, backoff: .milliseconds(200)),
                Step(
                    event: .exited(run(2), ranFor: short),
                    state: .waitingRestart(timer: 2),
                    action: .scheduleRestart(after: .milliseconds(200), timer: 2),
                    restarts: 1,
                    unstable: 0,
                    backoff: .milliseconds(400)
                ),
                Step(event: .timer(2), state: .starting, action: .spawn, restarts: 2, unstable: 0, backoff: .milliseconds(400)),
                Step(event: .spawned(run(3)), state: .online(run(3)), action: .none, restarts: 2, unstable: 0, backoff: .milliseconds(400)),
                Step(
                    event: .exited(run(3), ranFor: .seconds(1)),
                    state: .waitingRestart(timer: 3),
                    action: .scheduleRestart(after: .milliseconds(100), timer: 3),
                    restarts: 2,
                    unstable: 0,
                    backoff: .milliseconds(200)
                ),
            ]
        ),
        Scenario(
            label: "while the app or the supervisor is closing, a crash just stops",
            policy: policy,
            closing: true,
            steps: [
                Step(
                    event: .exited(run(1), ranFor: short),
                    state: .stopped,
                    action: .none,
                    restarts: 0,
                    unstable: 0,
                    backoff: .milliseconds(100)
                )
            ]
        ),
    ]

    @Test("the crash policy, step by step", arguments: scenarios)
    func crashPolicy(_ scenario: Scenario) throws {
        var machine = Machine(restartBackoff: Self.backoff)
        _ = try machine.launch()
        _ = try machine.spawned(Self.run(1))
        for (index, step) in scenario.steps.enumerated() {
            let action: Machine.Action
            switch step.event {
            case .spawned(let run): action = try machine.spawned(run)
            case .exited(let run, let ranFor):
                action = machine.exited(run, exit: Self.crash, ranFor: ranFor, policy: scenario.policy, closing: scenario.closing)
            case .timer(let timer): action = machine.restartTimerFired(timer, closing: scenario.closing)
            case .restart: action = try machine.restart()
            case .spawnFailed: action = try machine.spawnFailed(policy: scenario.policy, closing: scenario.closing)
            }
            let at = "\(scenario.label), step \(index + 1)"
            #expect(machine.state == step.state, "\(at)")
            #expect(action == step.action, "\(at)")
            #expect(machine.restarts == step.restarts, "\(at)")
            #expect(machine.unstableRestarts == step.unstable, "\(at)")
            #expect(machine.backoff == step.backoff, "\(at)")
        }
    }

    /// Events that would start a process, while the app or the supervisor is closing: each ends stopped instead.
    @Test("nothing starts while closing", arguments: [Start.starting, .stoppingToRelaunch, .waitingRestart])
    func closing(_ start: Start) throws {
        var machine = try start.reach()
        let action: Machine.Action
        switch start {
        case .starting: action = try machine.spawnFailed(policy: Self.policy, closing: true)
        case .stoppingToRelaunch: action = machine.exited(Self.own, exit: Self.crash, ranFor: Self.long, policy: Self.policy, closing: true)
        default: action = machine.restartTimerFired(1, closing: true)
        }
        #expect(action == .none)
        #expect(machine.state == .stopped)
    }
}
