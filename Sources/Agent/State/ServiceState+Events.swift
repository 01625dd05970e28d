import Shared

extension ServiceState {
    /// Something that happened to a service, for `handle(_:)`.
    enum Event: Sendable {
        /// The desired state offers a release this instance refuses (signature, document, expiry, replay); nothing
        /// running is touched. Seen again in every pass while offered: news only the first time.
        case releaseRefused(serial: Int64?, reason: String)
        /// A verified release is refused when its install would begin (its app names clash with another service's).
        case installRefused(serial: Int64, InstallError)
        /// A verified, admitted release is accepted and its install begins (or an interrupted one begins again).
        case installStarted(AppliedRelease)
        /// The agent starts with an install a crash or a shutdown interrupted.
        case installResumed
        /// The artifact could not be downloaded or extracted; the release stays pending and is tried again.
        case downloadFailed(InstallError)
        /// A newer serial arrived while the pending release was downloading: the download was cancelled, nothing running
        /// was touched, and the newer serial is installed next. The superseded serial is not a failure, and is not
        /// installed again (it was accepted).
        case downloadSuperseded(by: Int64)
        /// The pending release's files are about to be written and `current` switched: from here a restart of the agent
        /// puts the applied release back.
        case activating
        /// The ecosystem file could not be written or `current` not switched.
        case activationFailed(InstallError)
        /// The controller offers the applied serial again while another one is pending (its rollout aborted while its
        /// download kept failing, or after a restart restored what ran): the pending one is given up. Nothing it had was
        /// activated (a restart restored the applied release's files first).
        case installWithdrawn
        /// The agent is shutting down mid-install: no verdict.
        case installInterrupted
        /// The health gate passed the pending release.
        case releaseHealthy
        /// The pending release could not be applied or failed its health gate: decides how it is taken out, changes
        /// nothing yet. `canRollBack`: the applied release's apps can be rebuilt (its payload and the instance env file
        /// read back), so it can run again.
        case releaseUnhealthy(UnhealthyReason, canRollBack: Bool)
        /// The failed pending release was taken out and the applied one runs again: the serial failed here for good.
        /// `diagnosis`: the evidence gathered before it was taken out, kept with the failure.
        case rolledBack(UnhealthyReason, diagnosis: FailureDiagnosis? = nil)
        /// The failed pending release was taken out and nothing runs (there was nothing to go back to).
        case failedReleaseRemoved(UnhealthyReason, diagnosis: FailureDiagnosis? = nil)
        /// A newer serial arrived while the pending release was in its health gate: no verdict on it; decides how it is
        /// taken out (the applied release runs again when `canRollBack`, else nothing), changes nothing yet.
        case releaseSuperseded(by: Int64, canRollBack: Bool)
        /// The superseded pending release was taken out (`restored`: the applied release runs again; else nothing
        /// runs), and the newer serial is installed next. The superseded serial is not a failure, and is not installed
        /// again (it was accepted).
        case supersededReleaseTakenOut(by: Int64, restored: Bool)
        /// The applied release was reloaded with a changed instance env file (whose digest this is).
        case environmentReloaded(envDigest: String)
        /// Apps of the applied release were brought back behind the process manager's back (missing from its table
        /// after its daemon died, errored, or left running by a dead daemon): `what` says what was done, for the report.
        case appsRepaired(String)
        /// After a rollback, the health gate's verdict on the release that runs again: `nil` when it is healthy, else
        /// why not. Completes the rollback's message; the phase stays `rolled-back`.
        case restoredChecked(problem: String?)

        /// The event's name, for errors and tests.
        var name: Name {
            switch self {
            case .releaseRefused: .releaseRefused
            case .installRefused: .installRefused
            case .installStarted: .installStarted
            case .installResumed: .installResumed
            case .downloadFailed: .downloadFailed
            case .downloadSuperseded: .downloadSuperseded
            case .activating: .activating
            case .activationFailed: .activationFailed
            case .installWithdrawn: .installWithdrawn
            case .installInterrupted: .installInterrupted
            case .releaseHealthy: .releaseHealthy
            case .releaseUnhealthy: .releaseUnhealthy
            case .rolledBack: .rolledBack
            case .failedReleaseRemoved: .failedReleaseRemoved
            case .releaseSuperseded: .releaseSuperseded
            case .supersededReleaseTakenOut: .supersededReleaseTakenOut
            case .environmentReloaded: .environmentReloaded
            case .appsRepaired: .appsRepaired
            case .restoredChecked: .restoredChecked
            }
        }

        /// The kinds of event (named as the cases of `Event`).
        enum Name: String, Sendable, CaseIterable, CustomStringConvertible {
            case releaseRefused, installRefused, installStarted, installResumed, downloadFailed, downloadSuperseded, activationFailed
            case activating, installWithdrawn
            case installInterrupted, releaseHealthy, releaseUnhealthy, rolledBack, failedReleaseRemoved, environmentReloaded
            case appsRepaired, restoredChecked, releaseSuperseded, supersededReleaseTakenOut

            var description: String { rawValue }
        }
    }

    /// Why a pending release is taken out again.
    enum UnhealthyReason: Sendable, CustomStringConvertible {
        /// The process manager did not carry out the release's apps.
        case notApplied(ApplyError)
        /// The health gate's verdict (it names a health URL's template, never the filled-in URL).
        case healthGate(String)

        var description: String {
            switch self {
            case .notApplied(let error): "\(error)"
            case .healthGate(let reason): reason
            }
        }
    }

    /// What the reconciler does after an event. `.save`, `.restore` and `.collectGarbage` end with saving the state;
    /// `.rollBack` and `.removeFailedRelease` with the event that says it was done.
    enum Action: Sendable, Equatable {
        /// Nothing changed: nothing to save or report.
        case none
        /// The state changed: save it (and report).
        case save
        /// Point `current` back at this (applied) release, write its ecosystem and apply its apps; then save.
        case restore(AppliedRelease)
        /// A release was promoted: save, then remove releases and artifacts nothing protects any more.
        case collectGarbage
        /// Point `current` back at `to`, write its ecosystem, apply its apps (deleting those only `failed` had), save
        /// the process table; then send `rolledBack`.
        case rollBack(failed: AppliedRelease, to: AppliedRelease)
        /// Nothing to go back to: delete the failed release's apps, save the process table, remove `current`; then
        /// send `failedReleaseRemoved`.
        case removeFailedRelease(AppliedRelease)
    }

    /// An event that cannot happen in the service's state (a bug in the caller; the state is left as it was).
    enum TransitionError: Error, Equatable, CustomStringConvertible {
        /// An install would begin at or below the highest accepted serial (replay protection).
        case serialNotAboveAccepted(serial: Int64, accepted: Int64)
        /// An install step for a service with no install pending.
        case noInstallPending(event: Event.Name)
        /// An install step while the service is not deploying.
        case notDeploying(event: Event.Name, phase: DeployPhase)
        /// A change to the applied release of a service that has none.
        case nothingApplied(event: Event.Name)
        /// A verdict on a rollback's restored release while the service is not rolled back.
        case notRolledBack(event: Event.Name, phase: DeployPhase)

        var description: String {
            switch self {
            case .serialNotAboveAccepted(let serial, let accepted):
                "serial \(serial) cannot be installed: it is not above serial \(accepted), the highest accepted here"
            case .noInstallPending(let event):
                "\(event) with no install pending"
            case .notDeploying(let event, let phase):
                "\(event) while the service is \(phase.rawValue), not deploying"
            case .nothingApplied(let event):
                "\(event) with no release applied"
            case .notRolledBack(let event, let phase):
                "\(event) while the service is \(phase.rawValue), not rolled back"
            }
        }
    }
}
