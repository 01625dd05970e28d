import Foundation
import Shared
import Testing

@testable import Agent

/// The per-service state machine (`ServiceState.handle(_:)`): every state × every event, walked as one table.
@Suite("ServiceState: the per-service phase machine — every state × every event → next state and action, or the error")
struct ServiceStateTests {
    typealias Event = ServiceState.Event
    typealias Action = ServiceState.Action

    static func release(_ serial: Int64, env: String = "a") -> AppliedRelease {
        CoreFixture.applied(CoreFixture.release(serial: serial), envDigest: env)
    }

    static let r1 = release(1)
    static let r4 = release(4)
    static let r5 = release(5)
    static let r6 = release(6)
    static let r7 = release(7)

    static let noSpace = InstallError.download(.insufficientSpace(path: "/var/lib/ferry/artifacts", needed: 2048, available: 1024))
    /// A real failure to switch a symlink (its directory does not exist).
    static let readOnly: InstallError = {
        do throws(AtomicFile.Failure) {
            try AtomicFile.replaceSymlink("/nonexistent-ferry-test/services/api/current", pointingTo: "releases/6-abc")
        } catch {
            return .currentLink(error)
        }
        preconditionFailure("a symlink in a directory that does not exist was created")
    }()
    static let clash = InstallError.appNameClash(app: "api", service: "web")
    static let unhealthy = "not healthy within 60s: api: pm_id 0 errored"

    /// The states a service can be in, as `state.json` can hold them.
    enum From: String, CaseIterable, CustomStringConvertible {
        case waiting = "waiting (nothing ever installed)"
        case deploying = "deploying 6 over 5"
        case deployingFirst = "deploying 1, nothing applied"
        case deployingNothingPending = "deploying with nothing pending (hand-edited file)"
        case running = "running 5"
        case runningWithPending = "running 5, 6 pending after a failed download"
        case failed = "failed (first release rolled back, nothing to go back to)"
        case failedWithPending = "failed, 1 pending after a failed download"
        case rolledBack = "rolled back from 6 to 5"

        var description: String { rawValue }

        var state: ServiceState {
            switch self {
            case .waiting:
                ServiceState()
            case .deploying:
                ServiceState(
                    highestAcceptedSerial: 6,
                    applied: r5,
                    previous: r4,
                    pending: r6,
                    phase: .deploying,
                    message: "deploying serial 6 (1.0.6)"
                )
            case .deployingFirst:
                ServiceState(highestAcceptedSerial: 1, pending: r1, phase: .deploying, message: "deploying serial 1 (1.0.1)")
            case .deployingNothingPending:
                ServiceState(highestAcceptedSerial: 5, applied: r5, phase: .deploying, message: "deploying")
            case .running:
                ServiceState(highestAcceptedSerial: 5, applied: r5, previous: r4, phase: .running, message: "serial 5 (1.0.5) is running and healthy")
            case .runningWithPending:
                ServiceState(
                    highestAcceptedSerial: 6,
                    applied: r5,
                    previous: r4,
                    pending: r6,
                    phase: .running,
                    message: "serial 6 (1.0.6) not installed yet: \(noSpace)"
                )
            case .failed:
                ServiceState(
                    highestAcceptedSerial: 1,
                    failures: [.init(serial: 1, reason: unhealthy, kind: .rolledBack)],
                    phase: .failed,
                    message: "serial 1 (1.0.1) failed and there is no earlier release to roll back to: \(unhealthy)"
                )
            case .failedWithPending:
                ServiceState(highestAcceptedSerial: 1, pending: r1, phase: .failed, message: "serial 1 (1.0.1) not installed yet: \(noSpace)")
            case .rolledBack:
                ServiceState(
                    highestAcceptedSerial: 6,
                    applied: r5,
                    previous: r4,
                    failures: [.init(serial: 6, reason: unhealthy, kind: .rolledBack)],
                    phase: .rolledBack,
                    message: "serial 6 (1.0.6) failed and was rolled back to serial 5 (1.0.5): \(unhealthy)"
                )
            }
        }
    }

    /// What the event must do.
    enum Outcome {
        /// The state becomes `phase` with `slots` and `message`, and the caller is told `action`.
        case moves(to: DeployPhase, slots: String, message: String, action: Action)
        /// The event is refused with `error`; the state is unchanged.
        case refused(ServiceState.TransitionError)
    }

    struct Row: CustomStringConvertible {
        var from: From
        var event: Event
        var outcome: Outcome
        var description: String { "\(from) + \(event.name)" }
    }

    static func row(_ from: From, _ event: Event, _ outcome: Outcome) -> Row { Row(from: from, event: event, outcome: outcome) }

    static let refused9 = Event.releaseRefused(serial: 9, reason: "signature check failed")
    static let refusedUnknown = Event.releaseRefused(serial: nil, reason: "invalid release document")
    static let clash7 = Event.installRefused(serial: 7, clash)

    /// A release refused for an app name clash is offered again at every pass while the clash lasts: only the first
    /// refusal is news (saved and reported), as for a release refused before its install.
    @Test func aClashOfferedAgainIsNewsOnce() throws {
        var state = ServiceState(highestAcceptedSerial: 5, applied: Self.r5, previous: Self.r4, phase: .running, message: "running")
        #expect(try state.handle(Self.clash7) == .save)
        #expect(state.message == Self.clashMessage)
        #expect(try state.handle(Self.clash7) == .none, "the same refusal again changes nothing")
        #expect(try state.handle(Event.installRefused(serial: 8, Self.clash)) == .save, "a new serial's refusal is news")
    }
    static let start7 = Event.installStarted(r7)
    static let start6 = Event.installStarted(r6)
    static let start3 = Event.installStarted(release(3))
    static let download = Event.downloadFailed(noSpace)
    static let downloadSuperseded = Event.downloadSuperseded(by: 7)
    static let withdrawn6 = "serial 6 (1.0.6) is no longer offered by the controller and was not installed; serial 5 (1.0.5) runs"
    static let activation = Event.activationFailed(readOnly)
    static let unhealthyCanRollBack = Event.releaseUnhealthy(.healthGate(unhealthy), canRollBack: true)
    static let unhealthyCannotRollBack = Event.releaseUnhealthy(.healthGate(unhealthy), canRollBack: false)
    static let rolledBack = Event.rolledBack(.healthGate(unhealthy))
    static let removed = Event.failedReleaseRemoved(.healthGate(unhealthy))
    static let reloaded = Event.environmentReloaded(envDigest: "b")
    static let repaired = Event.appsRepaired("api was missing from the process table; started it again")
    static let repairedMessage = "serial 5 (1.0.5): api was missing from the process table; started it again"
    static let deploying6Slots = "accepted 6; applied 5 (env a); previous 4; pending 6"
    static let supersededCanRollBack = Event.releaseSuperseded(by: 7, canRollBack: true)
    static let supersededCannotRollBack = Event.releaseSuperseded(by: 7, canRollBack: false)
    static let supersededRestored = Event.supersededReleaseTakenOut(by: 7, restored: true)
    static let supersededRemoved = Event.supersededReleaseTakenOut(by: 7, restored: false)
    static let superseded6 = "serial 6 (1.0.6) was superseded by serial 7 during its health gate"
    static let restoredHealthy = Event.restoredChecked(problem: nil)
    static let restoredUnhealthy = Event.restoredChecked(problem: "http://127.0.0.1:${PORT}/ did not answer: connection refused")
    static let rolledBackMessage = "serial 6 (1.0.6) failed and was rolled back to serial 5 (1.0.5): \(unhealthy)"
    static let rolledBackSlots = "accepted 6; applied 5 (env a); previous 4; failures 6 rolled-back"

    static let refusedMessage = "refused serial 9: signature check failed"
    static let clashMessage = "refused serial 7: app name api is already used by service web on this instance"
    static let deploying7 = "deploying serial 7 (1.0.7)"
    static let reloadedMessage = "reloaded serial 5 with a changed instance env file"

    static let rows: [Row] = [
        // A refusal touches nothing that runs, in every state: it is recorded and becomes the message.
        row(.waiting, refused9, .moves(to: .waiting, slots: "failures 9 refused", message: refusedMessage, action: .save)),
        row(
            .waiting,
            refusedUnknown,
            .moves(to: .waiting, slots: "failures 0 refused", message: "refused serial ?: invalid release document", action: .save)
        ),
        row(
            .deploying,
            refused9,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6; failures 9 refused",
                message: refusedMessage,
                action: .save
            )
        ),
        row(
            .deployingFirst,
            refused9,
            .moves(to: .deploying, slots: "accepted 1; pending 1; failures 9 refused", message: refusedMessage, action: .save)
        ),
        row(
            .deployingNothingPending,
            refused9,
            .moves(to: .deploying, slots: "accepted 5; applied 5 (env a); failures 9 refused", message: refusedMessage, action: .save)
        ),
        row(
            .running,
            refused9,
            .moves(to: .running, slots: "accepted 5; applied 5 (env a); previous 4; failures 9 refused", message: refusedMessage, action: .save)
        ),
        row(
            .runningWithPending,
            refused9,
            .moves(
                to: .running,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6; failures 9 refused",
                message: refusedMessage,
                action: .save
            )
        ),
        row(.failed, refused9, .moves(to: .failed, slots: "accepted 1; failures 9 refused, 1 rolled-back", message: refusedMessage, action: .save)),
        row(
            .failedWithPending,
            refused9,
            .moves(to: .failed, slots: "accepted 1; pending 1; failures 9 refused", message: refusedMessage, action: .save)
        ),
        row(
            .rolledBack,
            refused9,
            .moves(
                to: .rolledBack,
                slots: "accepted 6; applied 5 (env a); previous 4; failures 9 refused, 6 rolled-back",
                message: refusedMessage,
                action: .save
            )
        ),

        // Refused at install time (an app name clash), before anything is accepted: the same, in every state.
        row(.waiting, clash7, .moves(to: .waiting, slots: "failures 7 refused", message: clashMessage, action: .save)),
        row(
            .deploying,
            clash7,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6; failures 7 refused",
                message: clashMessage,
                action: .save
            )
        ),
        row(
            .deployingFirst,
            clash7,
            .moves(to: .deploying, slots: "accepted 1; pending 1; failures 7 refused", message: clashMessage, action: .save)
        ),
        row(
            .deployingNothingPending,
            clash7,
            .moves(to: .deploying, slots: "accepted 5; applied 5 (env a); failures 7 refused", message: clashMessage, action: .save)
        ),
        row(
            .running,
            clash7,
            .moves(to: .running, slots: "accepted 5; applied 5 (env a); previous 4; failures 7 refused", message: clashMessage, action: .save)
        ),
        row(
            .runningWithPending,
            clash7,
            .moves(
                to: .running,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6; failures 7 refused",
                message: clashMessage,
                action: .save
            )
        ),
        row(.failed, clash7, .moves(to: .failed, slots: "accepted 1; failures 7 refused, 1 rolled-back", message: clashMessage, action: .save)),
        row(
            .failedWithPending,
            clash7,
            .moves(to: .failed, slots: "accepted 1; pending 1; failures 7 refused", message: clashMessage, action: .save)
        ),
        row(
            .rolledBack,
            clash7,
            .moves(
                to: .rolledBack,
                slots: "accepted 6; applied 5 (env a); previous 4; failures 7 refused, 6 rolled-back",
                message: clashMessage,
                action: .save
            )
        ),

        // Accepting a newer serial starts deploying it from any state (a newer pending one replaces an older).
        row(.waiting, start7, .moves(to: .deploying, slots: "accepted 7; pending 7", message: deploying7, action: .save)),
        row(
            .deploying,
            start7,
            .moves(to: .deploying, slots: "accepted 7; applied 5 (env a); previous 4; pending 7", message: deploying7, action: .save)
        ),
        row(.deployingFirst, start7, .moves(to: .deploying, slots: "accepted 7; pending 7", message: deploying7, action: .save)),
        row(
            .deployingNothingPending,
            start7,
            .moves(to: .deploying, slots: "accepted 7; applied 5 (env a); pending 7", message: deploying7, action: .save)
        ),
        row(
            .running,
            start7,
            .moves(to: .deploying, slots: "accepted 7; applied 5 (env a); previous 4; pending 7", message: deploying7, action: .save)
        ),
        row(
            .runningWithPending,
            start7,
            .moves(to: .deploying, slots: "accepted 7; applied 5 (env a); previous 4; pending 7", message: deploying7, action: .save)
        ),
        row(.failed, start7, .moves(to: .deploying, slots: "accepted 7; pending 7; failures 1 rolled-back", message: deploying7, action: .save)),
        row(.failedWithPending, start7, .moves(to: .deploying, slots: "accepted 7; pending 7", message: deploying7, action: .save)),
        row(
            .rolledBack,
            start7,
            .moves(
                to: .deploying,
                slots: "accepted 7; applied 5 (env a); previous 4; pending 7; failures 6 rolled-back",
                message: deploying7,
                action: .save
            )
        ),
        // The pending serial starts again although it is the highest accepted; any other serial at or below it is a replay.
        row(
            .runningWithPending,
            start6,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "deploying serial 6 (1.0.6)",
                action: .save
            )
        ),
        row(
            .running,
            start6,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "deploying serial 6 (1.0.6)",
                action: .save
            )
        ),
        row(.rolledBack, start6, .refused(.serialNotAboveAccepted(serial: 6, accepted: 6))),
        row(.running, start3, .refused(.serialNotAboveAccepted(serial: 3, accepted: 5))),
        row(.waiting, start3, .moves(to: .deploying, slots: "accepted 3; pending 3", message: "deploying serial 3 (1.0.3)", action: .save)),

        // A restart finds an interrupted install: `current` goes back to the applied release, if any.
        row(.waiting, .installResumed, .refused(.noInstallPending(event: .installResumed))),
        row(
            .deploying,
            .installResumed,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "serial 6 was interrupted by a restart of the agent; installing it again",
                action: .restore(r5)
            )
        ),
        row(
            .deployingFirst,
            .installResumed,
            .moves(
                to: .deploying,
                slots: "accepted 1; pending 1",
                message: "serial 1 was interrupted by a restart of the agent; installing it again",
                action: .save
            )
        ),
        row(.deployingNothingPending, .installResumed, .refused(.noInstallPending(event: .installResumed))),
        row(.running, .installResumed, .refused(.noInstallPending(event: .installResumed))),
        row(
            .runningWithPending,
            .installResumed,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "serial 6 was interrupted by a restart of the agent; installing it again",
                action: .restore(r5)
            )
        ),
        row(.failed, .installResumed, .refused(.noInstallPending(event: .installResumed))),
        row(
            .failedWithPending,
            .installResumed,
            .moves(
                to: .deploying,
                slots: "accepted 1; pending 1",
                message: "serial 1 was interrupted by a restart of the agent; installing it again",
                action: .save
            )
        ),
        row(.rolledBack, .installResumed, .refused(.noInstallPending(event: .installResumed))),

        // A failed download keeps the release pending; the phase says whether anything still runs.
        row(.waiting, download, .refused(.notDeploying(event: .downloadFailed, phase: .waiting))),
        row(
            .deploying,
            download,
            .moves(
                to: .running,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "serial 6 (1.0.6) not installed yet: \(noSpace)",
                action: .save
            )
        ),
        row(
            .deployingFirst,
            download,
            .moves(to: .failed, slots: "accepted 1; pending 1", message: "serial 1 (1.0.1) not installed yet: \(noSpace)", action: .save)
        ),
        row(.deployingNothingPending, download, .refused(.noInstallPending(event: .downloadFailed))),
        row(.running, download, .refused(.notDeploying(event: .downloadFailed, phase: .running))),
        row(.runningWithPending, download, .refused(.notDeploying(event: .downloadFailed, phase: .running))),
        row(.failed, download, .refused(.notDeploying(event: .downloadFailed, phase: .failed))),
        row(.failedWithPending, download, .refused(.notDeploying(event: .downloadFailed, phase: .failed))),
        row(.rolledBack, download, .refused(.notDeploying(event: .downloadFailed, phase: .rolledBack))),

        // A download a newer serial superseded: nothing running was touched, nothing stays pending, and no failure.
        // The controller offers the applied serial again over a pending one (its rollout aborted): the pending goes.
        row(.waiting, .installWithdrawn, .refused(.noInstallPending(event: .installWithdrawn))),
        row(
            .deploying,
            .installWithdrawn,
            .moves(to: .running, slots: "accepted 5; applied 5 (env a); previous 4", message: withdrawn6, action: .save)
        ),
        row(.deployingFirst, .installWithdrawn, .refused(.nothingApplied(event: .installWithdrawn))),
        row(.deployingNothingPending, .installWithdrawn, .refused(.noInstallPending(event: .installWithdrawn))),
        row(.running, .installWithdrawn, .refused(.noInstallPending(event: .installWithdrawn))),
        row(
            .runningWithPending,
            .installWithdrawn,
            .moves(to: .running, slots: "accepted 5; applied 5 (env a); previous 4", message: withdrawn6, action: .save)
        ),
        row(.failed, .installWithdrawn, .refused(.noInstallPending(event: .installWithdrawn))),
        row(.failedWithPending, .installWithdrawn, .refused(.nothingApplied(event: .installWithdrawn))),
        row(.rolledBack, .installWithdrawn, .refused(.noInstallPending(event: .installWithdrawn))),
        row(.waiting, downloadSuperseded, .refused(.notDeploying(event: .downloadSuperseded, phase: .waiting))),
        row(
            .deploying,
            downloadSuperseded,
            .moves(
                to: .running,
                slots: "accepted 6; applied 5 (env a); previous 4",
                message: "serial 6 (1.0.6) was superseded by serial 7 during its download; serial 5 (1.0.5) runs until serial 7 is installed",
                action: .save
            )
        ),
        row(
            .deployingFirst,
            downloadSuperseded,
            .moves(
                to: .waiting,
                slots: "accepted 1",
                message: "serial 1 (1.0.1) was superseded by serial 7 during its download; nothing runs until serial 7 is installed",
                action: .save
            )
        ),
        row(.deployingNothingPending, downloadSuperseded, .refused(.noInstallPending(event: .downloadSuperseded))),
        row(.running, downloadSuperseded, .refused(.notDeploying(event: .downloadSuperseded, phase: .running))),
        row(.runningWithPending, downloadSuperseded, .refused(.notDeploying(event: .downloadSuperseded, phase: .running))),
        row(.failed, downloadSuperseded, .refused(.notDeploying(event: .downloadSuperseded, phase: .failed))),
        row(.failedWithPending, downloadSuperseded, .refused(.notDeploying(event: .downloadSuperseded, phase: .failed))),
        row(.rolledBack, downloadSuperseded, .refused(.notDeploying(event: .downloadSuperseded, phase: .rolledBack))),

        // A failed activation keeps the release pending (tried again after a backoff); meanwhile the applied release
        // runs and is judged, and with none the service has failed (as after a failed download).
        row(.waiting, activation, .refused(.notDeploying(event: .activationFailed, phase: .waiting))),
        row(
            .deploying,
            activation,
            .moves(
                to: .running,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "serial 6 could not be activated: \(readOnly)",
                action: .save
            )
        ),
        row(
            .deployingFirst,
            activation,
            .moves(to: .failed, slots: "accepted 1; pending 1", message: "serial 1 could not be activated: \(readOnly)", action: .save)
        ),
        row(.deployingNothingPending, activation, .refused(.noInstallPending(event: .activationFailed))),
        row(.running, activation, .refused(.notDeploying(event: .activationFailed, phase: .running))),
        row(.runningWithPending, activation, .refused(.notDeploying(event: .activationFailed, phase: .running))),
        row(.failed, activation, .refused(.notDeploying(event: .activationFailed, phase: .failed))),
        row(.failedWithPending, activation, .refused(.notDeploying(event: .activationFailed, phase: .failed))),
        row(.rolledBack, activation, .refused(.notDeploying(event: .activationFailed, phase: .rolledBack))),

        // Activating is recorded (before the first file is written) while deploying, and changes no phase or message.
        row(.waiting, .activating, .refused(.notDeploying(event: .activating, phase: .waiting))),
        row(
            .deploying,
            .activating,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "deploying serial 6 (1.0.6)",
                action: .save
            )
        ),
        row(
            .deployingFirst,
            .activating,
            .moves(to: .deploying, slots: "accepted 1; pending 1", message: "deploying serial 1 (1.0.1)", action: .save)
        ),
        row(.deployingNothingPending, .activating, .refused(.noInstallPending(event: .activating))),
        row(.running, .activating, .refused(.notDeploying(event: .activating, phase: .running))),
        row(.runningWithPending, .activating, .refused(.notDeploying(event: .activating, phase: .running))),
        row(.failed, .activating, .refused(.notDeploying(event: .activating, phase: .failed))),
        row(.failedWithPending, .activating, .refused(.notDeploying(event: .activating, phase: .failed))),
        row(.rolledBack, .activating, .refused(.notDeploying(event: .activating, phase: .rolledBack))),

        // A shutdown mid-install is no verdict: nothing changes, nothing is saved.
        row(.waiting, .installInterrupted, .refused(.notDeploying(event: .installInterrupted, phase: .waiting))),
        row(
            .deploying,
            .installInterrupted,
            .moves(
                to: .deploying,
                slots: "accepted 6; applied 5 (env a); previous 4; pending 6",
                message: "deploying serial 6 (1.0.6)",
                action: .none
            )
        ),
        row(
            .deployingFirst,
            .installInterrupted,
            .moves(to: .deploying, slots: "accepted 1; pending 1", message: "deploying serial 1 (1.0.1)", action: .none)
        ),
        row(.deployingNothingPending, .installInterrupted, .refused(.noInstallPending(event: .installInterrupted))),
        row(.running, .installInterrupted, .refused(.notDeploying(event: .installInterrupted, phase: .running))),
        row(.runningWithPending, .installInterrupted, .refused(.notDeploying(event: .installInterrupted, phase: .running))),
        row(.failed, .installInterrupted, .refused(.notDeploying(event: .installInterrupted, phase: .failed))),
        row(.failedWithPending, .installInterrupted, .refused(.notDeploying(event: .installInterrupted, phase: .failed))),
        row(.rolledBack, .installInterrupted, .refused(.notDeploying(event: .installInterrupted, phase: .rolledBack))),

        // Healthy: the pending release becomes the applied one, the applied one the rollback target.
        row(.waiting, .releaseHealthy, .refused(.notDeploying(event: .releaseHealthy, phase: .waiting))),
        row(
            .deploying,
            .releaseHealthy,
            .moves(
                to: .running,
                slots: "accepted 6; applied 6 (env a); previous 5",
                message: "serial 6 (1.0.6) is running and healthy",
                action: .collectGarbage
            )
        ),
        row(
            .deployingFirst,
            .releaseHealthy,
            .moves(to: .running, slots: "accepted 1; applied 1 (env a)", message: "serial 1 (1.0.1) is running and healthy", action: .collectGarbage)
        ),
        row(.deployingNothingPending, .releaseHealthy, .refused(.noInstallPending(event: .releaseHealthy))),
        row(.running, .releaseHealthy, .refused(.notDeploying(event: .releaseHealthy, phase: .running))),
        row(.runningWithPending, .releaseHealthy, .refused(.notDeploying(event: .releaseHealthy, phase: .running))),
        row(.failed, .releaseHealthy, .refused(.notDeploying(event: .releaseHealthy, phase: .failed))),
        row(.failedWithPending, .releaseHealthy, .refused(.notDeploying(event: .releaseHealthy, phase: .failed))),
        row(.rolledBack, .releaseHealthy, .refused(.notDeploying(event: .releaseHealthy, phase: .rolledBack))),

        // Unhealthy: the verdict decides how the release is taken out (back to the applied one, or nothing runs) and
        // changes nothing yet.
        row(.waiting, unhealthyCanRollBack, .refused(.notDeploying(event: .releaseUnhealthy, phase: .waiting))),
        row(
            .deploying,
            unhealthyCanRollBack,
            .moves(to: .deploying, slots: deploying6Slots, message: "deploying serial 6 (1.0.6)", action: .rollBack(failed: r6, to: r5))
        ),
        row(
            .deploying,
            unhealthyCannotRollBack,
            .moves(to: .deploying, slots: deploying6Slots, message: "deploying serial 6 (1.0.6)", action: .removeFailedRelease(r6))
        ),
        row(
            .deployingFirst,
            unhealthyCanRollBack,
            .moves(to: .deploying, slots: "accepted 1; pending 1", message: "deploying serial 1 (1.0.1)", action: .removeFailedRelease(r1))
        ),
        row(.deployingNothingPending, unhealthyCanRollBack, .refused(.noInstallPending(event: .releaseUnhealthy))),
        row(.running, unhealthyCanRollBack, .refused(.notDeploying(event: .releaseUnhealthy, phase: .running))),
        row(.runningWithPending, unhealthyCanRollBack, .refused(.notDeploying(event: .releaseUnhealthy, phase: .running))),
        row(.failed, unhealthyCanRollBack, .refused(.notDeploying(event: .releaseUnhealthy, phase: .failed))),
        row(.failedWithPending, unhealthyCanRollBack, .refused(.notDeploying(event: .releaseUnhealthy, phase: .failed))),
        row(.rolledBack, unhealthyCanRollBack, .refused(.notDeploying(event: .releaseUnhealthy, phase: .rolledBack))),

        // Rolled back: once the applied release runs again, the serial has failed here for good.
        row(.waiting, rolledBack, .refused(.notDeploying(event: .rolledBack, phase: .waiting))),
        row(
            .deploying,
            rolledBack,
            .moves(
                to: .rolledBack,
                slots: "accepted 6; applied 5 (env a); previous 4; failures 6 rolled-back",
                message: "serial 6 (1.0.6) failed and was rolled back to serial 5 (1.0.5): \(unhealthy)",
                action: .save
            )
        ),
        row(.deployingFirst, rolledBack, .refused(.nothingApplied(event: .rolledBack))),
        row(.deployingNothingPending, rolledBack, .refused(.noInstallPending(event: .rolledBack))),
        row(.running, rolledBack, .refused(.notDeploying(event: .rolledBack, phase: .running))),
        row(.runningWithPending, rolledBack, .refused(.notDeploying(event: .rolledBack, phase: .running))),
        row(.failed, rolledBack, .refused(.notDeploying(event: .rolledBack, phase: .failed))),
        row(.failedWithPending, rolledBack, .refused(.notDeploying(event: .rolledBack, phase: .failed))),
        row(.rolledBack, rolledBack, .refused(.notDeploying(event: .rolledBack, phase: .rolledBack))),

        // Removed with nothing to go back to: nothing of it runs, and the serial has failed here for good.
        row(.waiting, removed, .refused(.notDeploying(event: .failedReleaseRemoved, phase: .waiting))),
        row(
            .deploying,
            removed,
            .moves(
                to: .failed,
                slots: "accepted 6; applied 5 (env a); previous 4; failures 6 rolled-back",
                message: "serial 6 (1.0.6) failed and there is no earlier release to roll back to: \(unhealthy)",
                action: .save
            )
        ),
        row(
            .deployingFirst,
            removed,
            .moves(
                to: .failed,
                slots: "accepted 1; failures 1 rolled-back",
                message: "serial 1 (1.0.1) failed and there is no earlier release to roll back to: \(unhealthy)",
                action: .save
            )
        ),
        row(.deployingNothingPending, removed, .refused(.noInstallPending(event: .failedReleaseRemoved))),
        row(.running, removed, .refused(.notDeploying(event: .failedReleaseRemoved, phase: .running))),
        row(.runningWithPending, removed, .refused(.notDeploying(event: .failedReleaseRemoved, phase: .running))),
        row(.failed, removed, .refused(.notDeploying(event: .failedReleaseRemoved, phase: .failed))),
        row(.failedWithPending, removed, .refused(.notDeploying(event: .failedReleaseRemoved, phase: .failed))),
        row(.rolledBack, removed, .refused(.notDeploying(event: .failedReleaseRemoved, phase: .rolledBack))),

        // A changed instance env file reloads the applied release, whatever the phase.
        row(.waiting, reloaded, .refused(.nothingApplied(event: .environmentReloaded))),
        row(
            .deploying,
            reloaded,
            .moves(to: .deploying, slots: "accepted 6; applied 5 (env b); previous 4; pending 6", message: reloadedMessage, action: .save)
        ),
        row(.deployingFirst, reloaded, .refused(.nothingApplied(event: .environmentReloaded))),
        row(
            .deployingNothingPending,
            reloaded,
            .moves(to: .deploying, slots: "accepted 5; applied 5 (env b)", message: reloadedMessage, action: .save)
        ),
        row(.running, reloaded, .moves(to: .running, slots: "accepted 5; applied 5 (env b); previous 4", message: reloadedMessage, action: .save)),
        row(
            .runningWithPending,
            reloaded,
            .moves(to: .running, slots: "accepted 6; applied 5 (env b); previous 4; pending 6", message: reloadedMessage, action: .save)
        ),
        row(.failed, reloaded, .refused(.nothingApplied(event: .environmentReloaded))),
        row(.failedWithPending, reloaded, .refused(.nothingApplied(event: .environmentReloaded))),
        row(
            .rolledBack,
            reloaded,
            .moves(
                to: .rolledBack,
                slots: "accepted 6; applied 5 (env b); previous 4; failures 6 rolled-back",
                message: reloadedMessage,
                action: .save
            )
        ),

        // Apps of the applied release brought back behind the process manager's back: news for the report, except
        // while an install runs (its verdict is the news) or when nothing is applied (there is nothing to bring back).
        row(.waiting, repaired, .refused(.nothingApplied(event: .appsRepaired))),
        row(.deploying, repaired, .moves(to: .deploying, slots: deploying6Slots, message: "deploying serial 6 (1.0.6)", action: .none)),
        row(.deployingFirst, repaired, .refused(.nothingApplied(event: .appsRepaired))),
        row(.deployingNothingPending, repaired, .moves(to: .deploying, slots: "accepted 5; applied 5 (env a)", message: "deploying", action: .none)),
        row(.running, repaired, .moves(to: .running, slots: "accepted 5; applied 5 (env a); previous 4", message: repairedMessage, action: .save)),
        row(
            .runningWithPending,
            repaired,
            .moves(to: .running, slots: "accepted 6; applied 5 (env a); previous 4; pending 6", message: repairedMessage, action: .save)
        ),
        row(.failed, repaired, .refused(.nothingApplied(event: .appsRepaired))),
        row(.failedWithPending, repaired, .refused(.nothingApplied(event: .appsRepaired))),
        row(
            .rolledBack,
            repaired,
            .moves(
                to: .rolledBack,
                slots: "accepted 6; applied 5 (env a); previous 4; failures 6 rolled-back",
                message: repairedMessage,
                action: .save
            )
        ),

        // After a rollback, the restored release's own health gate completes the message; only a rolled-back service
        // takes it (a verdict arriving after anything else moved the service on is refused, nothing changes).
        row(
            .rolledBack,
            restoredHealthy,
            .moves(to: .rolledBack, slots: rolledBackSlots, message: rolledBackMessage + "; serial 5 is healthy again", action: .save)
        ),
        row(
            .rolledBack,
            restoredUnhealthy,
            .moves(
                to: .rolledBack,
                slots: rolledBackSlots,
                message: rolledBackMessage + "; serial 5 is not healthy either: http://127.0.0.1:${PORT}/ did not answer: connection refused",
                action: .save
            )
        ),
        // Superseded during the health gate: the verdict-less event only decides how the release is taken out (the
        // applied release again, or nothing); once it is out the service is as before the install, the serial is no
        // failure, and the newer one is installed next.
        row(.waiting, supersededCanRollBack, .refused(.notDeploying(event: .releaseSuperseded, phase: .waiting))),
        row(
            .deploying,
            supersededCanRollBack,
            .moves(to: .deploying, slots: deploying6Slots, message: "deploying serial 6 (1.0.6)", action: .rollBack(failed: r6, to: r5))
        ),
        row(
            .deploying,
            supersededCannotRollBack,
            .moves(to: .deploying, slots: deploying6Slots, message: "deploying serial 6 (1.0.6)", action: .removeFailedRelease(r6))
        ),
        row(
            .deployingFirst,
            supersededCanRollBack,
            .moves(to: .deploying, slots: "accepted 1; pending 1", message: "deploying serial 1 (1.0.1)", action: .removeFailedRelease(r1))
        ),
        row(.deployingNothingPending, supersededCanRollBack, .refused(.noInstallPending(event: .releaseSuperseded))),
        row(.running, supersededCanRollBack, .refused(.notDeploying(event: .releaseSuperseded, phase: .running))),
        row(.runningWithPending, supersededCanRollBack, .refused(.notDeploying(event: .releaseSuperseded, phase: .running))),
        row(.failed, supersededCanRollBack, .refused(.notDeploying(event: .releaseSuperseded, phase: .failed))),
        row(.failedWithPending, supersededCannotRollBack, .refused(.notDeploying(event: .releaseSuperseded, phase: .failed))),
        row(.rolledBack, supersededCanRollBack, .refused(.notDeploying(event: .releaseSuperseded, phase: .rolledBack))),

        row(.waiting, supersededRestored, .refused(.notDeploying(event: .supersededReleaseTakenOut, phase: .waiting))),
        row(
            .deploying,
            supersededRestored,
            .moves(
                to: .running,
                slots: "accepted 6; applied 5 (env a); previous 4",
                message: superseded6 + "; serial 5 (1.0.5) runs until serial 7 is installed",
                action: .save
            )
        ),
        row(
            .deploying,
            supersededRemoved,
            .moves(
                to: .failed,
                slots: "accepted 6; applied 5 (env a); previous 4",
                message: superseded6 + " and taken out; nothing runs until serial 7 is installed",
                action: .save
            )
        ),
        row(
            .deployingFirst,
            supersededRemoved,
            .moves(
                to: .waiting,
                slots: "accepted 1",
                message: "serial 1 (1.0.1) was superseded by serial 7 during its health gate and taken out; nothing runs until serial 7 is installed",
                action: .save
            )
        ),
        row(.deployingFirst, supersededRestored, .refused(.nothingApplied(event: .supersededReleaseTakenOut))),
        row(.deployingNothingPending, supersededRestored, .refused(.noInstallPending(event: .supersededReleaseTakenOut))),
        row(.running, supersededRestored, .refused(.notDeploying(event: .supersededReleaseTakenOut, phase: .running))),
        row(.runningWithPending, supersededRemoved, .refused(.notDeploying(event: .supersededReleaseTakenOut, phase: .running))),
        row(.failed, supersededRestored, .refused(.notDeploying(event: .supersededReleaseTakenOut, phase: .failed))),
        row(.failedWithPending, supersededRemoved, .refused(.notDeploying(event: .supersededReleaseTakenOut, phase: .failed))),
        row(.rolledBack, supersededRestored, .refused(.notDeploying(event: .supersededReleaseTakenOut, phase: .rolledBack))),
        row(.waiting, restoredHealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .waiting))),
        row(.deploying, restoredHealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .deploying))),
        row(.deployingFirst, restoredUnhealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .deploying))),
        row(.deployingNothingPending, restoredHealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .deploying))),
        row(.running, restoredHealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .running))),
        row(.runningWithPending, restoredUnhealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .running))),
        row(.failed, restoredHealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .failed))),
        row(.failedWithPending, restoredHealthy, .refused(.notRolledBack(event: .restoredChecked, phase: .failed))),
    ]

    /// The parts of a state besides phase and message, in one line.
    static func slots(_ state: ServiceState) -> String {
        var parts: [String] = []
        if let accepted = state.highestAcceptedSerial { parts.append("accepted \(accepted)") }
        if let applied = state.applied { parts.append("applied \(applied.serial) (env \(applied.envDigest))") }
        if let previous = state.previous { parts.append("previous \(previous.serial)") }
        if let pending = state.pending { parts.append("pending \(pending.serial)") }
        if !state.failures.isEmpty {
            parts.append("failures " + state.failures.map { "\($0.serial) \($0.kind.rawValue)" }.joined(separator: ", "))
        }
        return parts.joined(separator: "; ")
    }

    @Test(arguments: rows)
    func transition(_ row: Row) {
        var state = row.from.state
        let before = state
        switch row.outcome {
        case .moves(let phase, let slots, let message, let action):
            do {
                let told = try state.handle(row.event)
                #expect(told == action)
            } catch {
                Issue.record("refused: \(error)")
            }
            #expect(state.phase == phase)
            #expect(Self.slots(state) == slots)
            #expect(state.message == message)
        case .refused(let expected):
            #expect(throws: expected) { try state.handle(row.event) }
            #expect(state == before, "a refused event changes nothing")
        }
    }

    /// A restart of the agent puts the applied release back (and reloads its apps: a restart each in fork mode) only
    /// when the interrupted install got as far as writing its files: at every restart while a download kept failing,
    /// it reloaded production apps whose files had never been touched. A state file from before this was kept (no
    /// `pendingActivated`) restores as it always did, and the mark survives the file.
    @Test func aRestartRestoresOnlyAnInstallThatTouchedWhatRuns() throws {
        let running = From.running.state
        var downloading = running
        #expect(try downloading.handle(.installStarted(Self.r6)) == .save)
        #expect(try downloading.handle(Self.download) == .save)
        var resumed = downloading
        #expect(try resumed.handle(.installResumed) == .save, "nothing of serial 6 was written: nothing to put back")
        #expect(resumed.message == "serial 6 was interrupted by a restart of the agent before it touched what runs; installing it again")

        var activated = running
        _ = try activated.handle(.installStarted(Self.r6))
        #expect(try activated.handle(.activating) == .save)
        let reread = try JSONDecoder().decode(ServiceState.self, from: JSONEncoder().encode(activated))
        for var state in [activated, reread] {
            #expect(try state.handle(.installResumed) == .restore(Self.r5))
        }
        #expect(try JSONDecoder().decode(ServiceState.self, from: JSONEncoder().encode(downloading)).pendingActivated == false)

        // Written by an agent from before: restored, as then.
        var old = try JSONDecoder().decode(ServiceState.self, from: JSONEncoder().encode(downloading))
        let text = String(decoding: try JSONEncoder().encode(downloading), as: UTF8.self).replacingOccurrences(
            of: ",\"pendingActivated\":false",
            with: ""
        )
        .replacingOccurrences(of: "\"pendingActivated\":false,", with: "")
        #expect(!text.contains("pendingActivated"))
        old = try JSONDecoder().decode(ServiceState.self, from: Data(text.utf8))
        #expect(try old.handle(.installResumed) == .restore(Self.r5))
    }

    /// A verdict is kept in the state before the failed release is taken out: an agent stopped or killed in the middle
    /// of the rollback comes back to it, finishes the taking out and records the failure; it installed the failed serial
    /// again (a bad release reloaded into production, through a whole gate deadline, at every such restart). With nothing
    /// to go back to, its apps are removed. The verdict survives the state file; a new install starts without one.
    @Test(arguments: [true, false])
    func aVerdictSurvivesARestartInTheMiddleOfTheRollback(withApplied: Bool) throws {
        var state = (withApplied ? From.deploying : From.deployingFirst).state
        let failed = try #require(state.pending)
        _ = try state.handle(.activating)
        let reason = ServiceState.UnhealthyReason.healthGate("GET /health answered 500")
        let decided = try state.handle(.releaseUnhealthy(reason, canRollBack: withApplied))
        #expect(decided == (withApplied ? .rollBack(failed: failed, to: Self.r5) : .removeFailedRelease(failed)))
        #expect(state.pendingVerdict == "\(reason)")
        // Killed here: the next start reads the file back.
        var restarted = try JSONDecoder().decode(ServiceState.self, from: JSONEncoder().encode(state))
        let resumed = try restarted.handle(.installResumed)
        #expect(restarted.pending == nil && restarted.pendingVerdict == nil)
        #expect(restarted.hasFailed(failed.serial), "the serial failed here for good")
        if withApplied {
            #expect(resumed == .restore(Self.r5))
            #expect(restarted.phase == .rolledBack && restarted.applied == Self.r5)
            #expect(
                restarted.message == "serial 6 (\(failed.version)) failed and was rolled back to serial 5 (\(Self.r5.version)): \(reason) "
                    + "(the agent was restarted while taking it out)"
            )
        } else {
            #expect(resumed == .removeFailedRelease(failed))
            #expect(restarted.phase == .failed)
        }
        // A later install starts without a verdict.
        var next = restarted
        _ = try next.handle(.installStarted(Self.release(7)))
        #expect(next.pendingVerdict == nil)
    }

    @Test func theTableCoversEveryStateAndEveryEvent() {
        let covered = Set(Self.rows.map { "\($0.from.rawValue) + \($0.event.name)" })
        for from in From.allCases {
            for event in Event.Name.allCases {
                #expect(covered.contains("\(from.rawValue) + \(event)"), "no row for \(from) + \(event)")
            }
        }
        // Every phase is a starting state of the table.
        #expect(Set(From.allCases.map { $0.state.phase }) == Set(DeployPhase.allCases))
    }

    @Test func theSameVerdictOnARestoredReleaseAgainIsNoNews() throws {
        var state = From.rolledBack.state
        #expect(try state.handle(Self.restoredUnhealthy) == .save)
        let once = state
        #expect(try state.handle(Self.restoredUnhealthy) == .none)
        #expect(state == once)
    }

    @Test func theSameRepairAgainIsNoNews() throws {
        var state = From.running.state
        #expect(try state.handle(Self.repaired) == .save)
        let once = state
        #expect(try state.handle(Self.repaired) == .none)
        #expect(state == once)
    }

    @Test func aRefusalSeenAgainIsNoNews() throws {
        var state = From.running.state
        var told = try state.handle(Self.refused9)
        #expect(told == .save)
        let once = state
        told = try state.handle(Self.refused9)
        #expect(told == .none)
        #expect(state == once)
        // Another refusal in between makes it news again (it moves back to the front).
        told = try state.handle(Self.refusedUnknown)
        #expect(told == .save)
        told = try state.handle(Self.refused9)
        #expect(told == .save)
        #expect(state.message == Self.refusedMessage)
    }
}
