import ArgumentParser
import Foundation
import Shared
import Synchronization

/// `ferry-controller rollout wait --service S --serial N [--timeout D] [--json]`: block a CI job until a rollout ends.
struct RolloutWaitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Wait until the rollout of a serial completes (exit 0) or fails (exit 1, naming the failed agents and why).",
        discussion: """
            Follows the service's event stream (one held connection, with keep-alive comments) and looks at the \
            rollout whenever something happens, and every few seconds. Exits 0 when the rollout completed — for \
            strategy all, once every agent runs the serial healthy (or failed it, within --max-failures). Exits 1 when \
            it was halted, aborted or superseded, or more agents failed than it tolerates, printing each failed \
            agent, its reason, the health gate's verdict and the last lines the app wrote to stderr and stdout. \
            Exits 2 when --timeout passes first (the rollout goes on). A controller that does not answer, or answers \
            429, 502, 503 or 504 (a restart, a database failover, a load balancer), is asked again until then. Exits 3 \
            when the rollout cannot be watched at all (an unknown serial, a refused token). With --json the last look \
            is printed as {result, service, serial, state, message, failures, rollout}.
            """
    )

    @OptionGroup var connection: RolloutConnectionOptions

    @Option(name: .long, help: "The service.")
    var service: String

    @Option(name: .long, help: "The serial whose rollout to wait for (publish prints it).")
    var serial: Int64

    @Option(name: .long, help: ArgumentHelp("Give up after this long (90s, 10m, 2h; a bare number is seconds).", valueName: "DURATION"))
    var timeout: String = "30m"

    @Option(name: .long, help: "Lines of each failed agent's log tail to print.")
    var logLines: Int = 20

    /// Longest time between two looks at the rollout when no event arrives.
    static let lookInterval: Duration = .seconds(2)

    func validate() throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) is not a service name") }
        guard (1...Release.maximumSerial).contains(serial) else { throw ValidationError("--serial must be between 1 and \(Release.maximumSerial)") }
        guard let milliseconds = CommandLineDuration.milliseconds(timeout), milliseconds >= 1000, milliseconds <= 7 * 86_400_000 else {
            throw ValidationError("--timeout \(timeout) must be a duration like 90s, 10m or 2h, or seconds (1 s to 7 days)")
        }
        guard (0...FailureDiagnosis.maximumLines).contains(logLines) else {
            throw ValidationError("--log-lines must be between 0 and \(FailureDiagnosis.maximumLines)")
        }
    }

    /// The exit code when the rollout cannot be watched (not its outcome: 1 says it failed).
    static let cannotWatch: Int32 = 3

    func run() async throws {
        let client: OperatorClient
        do {
            client = try connection.client()
        } catch {
            // No controller URL or token, a CA file that does not load: it cannot be watched (3), not a usage error (64).
            Console.error("Error: cannot watch the rollout of \(service) serial \(serial): \(error)")
            throw ExitCode(Self.cannotWatch)
        }
        let deadline = ContinuousClock.now + .milliseconds(CommandLineDuration.milliseconds(timeout) ?? 1_800_000)
        let wakeUp = WakeUpSignal()
        do {
            try await watch(client: client, deadline: deadline, wakeUp: wakeUp)
        } catch let error as ClientError {
            Console.error("Error: cannot watch the rollout of \(service) serial \(serial): \(error)")
            throw ExitCode(Self.cannotWatch)
        }
    }

    private func watch(client: OperatorClient, deadline: ContinuousClock.Instant, wakeUp: WakeUpSignal) async throws {
        var lastRollout = JSONValue.null
        var lastMessage = ""
        let look = Look(client: client, deadline: deadline, wakeUp: wakeUp)
        let newest = try await get("/v1/events?service=\(service)&limit=1", "read the service's events", look, lastRollout: .null)
        var after: Int64 = 0
        if case .integer(let id)? = FleetDocument.array(newest.object?["events"]).first?.object?["id"] { after = id }
        // Any event of the service is a reason to look again (a wave advanced, an agent rolled back, a halt).
        let follower = Task { [service] in
            try? await EventsCommand.follow(client: client, service: service, after: after) { _ in wakeUp.signal() }
        }
        defer { follower.cancel() }
        while true {
            let rollout = try await get(
                // The failed agents only: the counts say the rest, and a fleet's every agent is no document to read
                // every few seconds.
                "/v1/rollouts/\(service)/\(serial)?agents=failed",
                "look at the rollout",
                look,
                lastRollout: lastRollout,
                waiting: lastMessage
            )
            lastRollout = rollout
            let verdict = RolloutWaitVerdict.decide(rollout)
            switch verdict {
            case .completed(let message):
                report("completed", message: message, rollout: rollout)
                return
            case .failed(let message):
                report("failed", message: message, rollout: rollout)
                throw ExitCode(1)
            case .waiting(let message):
                if message != lastMessage, !connection.json {
                    Console.error("rollout \(service) serial \(serial): \(message)")
                }
                lastMessage = message
            }
            let now = ContinuousClock.now
            guard now < deadline else {
                report("timed-out", message: "still waiting after \(timeout): \(lastMessage)", rollout: rollout)
                throw ExitCode(2)
            }
            await wakeUp.wait(upTo: min(Self.lookInterval, now.duration(to: deadline)))
        }
    }

    /// Where and until when `get` asks.
    private struct Look {
        var client: OperatorClient
        var deadline: ContinuousClock.Instant
        var wakeUp: WakeUpSignal
    }

    /// `GET path` as JSON. An answer that failed for a reason that may pass (`ClientError.isTransient`) is asked again
    /// every look until the deadline, when the wait ends timed out (exit 2) with the last rollout seen. Any other
    /// failure is thrown.
    private func get(
        _ path: String,
        _ what: String,
        _ look: Look,
        lastRollout: JSONValue,
        waiting: String = ""
    ) async throws -> JSONValue {
        var lastNote = ""
        while true {
            do throws(ClientError) {
                return try await look.client.getJSON(path)
            } catch {
                guard error.isTransient else { throw error }
                let now = ContinuousClock.now
                guard now < look.deadline else {
                    let message = "still waiting after \(timeout): the controller did not answer" + (waiting.isEmpty ? "" : "; \(waiting)")
                    report("timed-out", message: message, rollout: lastRollout)
                    throw ExitCode(2)
                }
                let note = "cannot \(what) (\(error)); asking again"
                if note != lastNote { Console.error(note) }
                lastNote = note
                await look.wakeUp.wait(upTo: min(Self.lookInterval, now.duration(to: look.deadline)))
            }
        }
    }

    private func report(_ result: String, message: String, rollout: JSONValue) {
        let failures = RolloutWaitVerdict.failures(rollout)
        if connection.json {
            let document = JSONValue.object([
                "result": .string(result), "service": .string(service), "serial": .integer(serial),
                "state": rollout.object?["state"] ?? .null, "message": .string(message),
                "failures": .array(
                    failures.map { failure in
                        .object([
                            "agent": .string(failure.agent), "kind": .string(failure.kind), "reason": .string(failure.reason),
                            "failure": failure.failure ?? .null,
                        ])
                    }
                ),
                "rollout": rollout,
            ])
            Console.print(String(decoding: document.encoded(), as: UTF8.self))
            return
        }
        Console.print("rollout \(service) serial \(serial) \(result): \(message)")
        for failure in failures {
            let line = { (text: String) in TerminalText.safe(text, keepingLineBreaks: false) }
            Console.print("failed: \(line(failure.agent)) (\(line(failure.kind))): \(line(failure.reason))")
            if let detail = failure.failure {
                for line in FailureText.lines(detail, indent: "  ", logLines: logLines).dropFirst() { Console.print(line) }
            }
        }
        let unlisted = RolloutWaitVerdict.integer(rollout.object?["unlistedFailures"])
        if unlisted > 0 {
            Console.print(
                "and \(unlisted) more failed agent(s), not listed here: GET /v1/rollouts/\(TerminalText.safe(service, keepingLineBreaks: false))/"
                    + "\(serial) lists every agent of the rollout with its progress (failed ones with their failure)"
            )
        }
    }
}

/// A wake-up call between tasks: `signal()` ends the current (or the next) `wait(upTo:)` early.
///
/// A wait's timer ends only that wait. It used to call `signal()` too: the timer of a wait that a real signal had
/// ended was cancelled, its sleep threw, and the swallowed error let it signal anyway, so every later wait returned at
/// once (and cancelled its own timer, which signalled again): `rollout wait` asked the controller back to back from the
/// first event of the service to the end of the rollout.
final class WakeUpSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Which wait the waiter belongs to: a timer ends only its own.
        var wait: UInt64 = 0
    }

    private let state = Mutex(State())

    func signal() { wake(only: nil) }

    /// Whether a wait has put its waiter in place (what a signal now resumes rather than leaves pending).
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// Resumes the waiter, or leaves the wake-up pending for the wait that has not put its waiter in place yet; with
    /// `only`, nothing unless that wait is the one going on.
    private func wake(only wait: UInt64?) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let wait, state.wait != wait { return nil }
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns after a `signal()` (one that came since the last wait returned counts) or after `duration`.
    func wait(upTo duration: Duration) async {
        let wait = state.withLock { state -> UInt64 in
            state.wait &+= 1
            return state.wait
        }
        let timer = Task {
            // Cancelled (a signal ended the wait first): nothing to end.
            guard (try? await Task.sleep(for: duration)) != nil else { return }
            // Only this wait: one that is over (a signal ended it) or a later one is left alone.
            self.wake(only: wait)
        }
        defer { timer.cancel() }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.pending {
                    state.pending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        // This wait is over: its timer, if it fires late, ends nothing.
        state.withLock { $0.wait &+= 1 }
    }
}
