import Shared

/// One service's state on this instance (an entry of `state.json`), and the state machine that is the only way to
/// change it.
///
/// The phase (`waiting`, `deploying`, `running`, `failed`, `rolled-back`), the human message reported with it, the
/// release slots (`applied`, `previous`, `pending`), the highest accepted serial and the failures recorded here change
/// together, by events, in `handle(_:)`: one `switch` holds every legal transition, an illegal one is a
/// `TransitionError` and changes nothing. Each event returns the `Action` the reconciler must carry out (then it saves
/// the state); nobody else assigns a field. The stored fields and their JSON keys are those of every earlier version of
/// `state.json`, so an agent upgraded in place reads the state it left.
struct ServiceState: Sendable, Codable, Equatable {
    /// The highest serial accepted here (verified and admitted). Nothing at or below it is ever installed again,
    /// except that the release running now keeps running and an interrupted install is resumed.
    private(set) var highestAcceptedSerial: Int64?
    /// The release running now (passed its health gate, or the one rolled back to).
    private(set) var applied: AppliedRelease?
    /// The release before `applied`, the rollback target.
    private(set) var previous: AppliedRelease?
    /// An install that was started and not finished (kill -9 mid-install): on the next start `current` is switched
    /// back to `applied` before anything else.
    private(set) var pending: AppliedRelease? {
        didSet {
            if pending == nil {
                pendingActivated = nil
                pendingVerdict = nil
            }
        }
    }
    /// Whether the pending release got as far as writing its files and switching `current` (`activating`): only then
    /// must a restart of the agent put the applied release back and reload its apps. `false` from the install's start
    /// until then; `nil` in a state file written before this was kept (then a restart restores, as it always did).
    private(set) var pendingActivated: Bool?
    /// Why the pending release failed, once its verdict is in and while it is being taken out (`releaseUnhealthy` until
    /// `rolledBack`/`failedReleaseRemoved`). Saved before the rollback starts: an agent stopped or killed in the middle
    /// of one (reloading the old release can take minutes) came back to a pending release without a verdict, and
    /// installed the failed serial again (`installResumed`).
    private(set) var pendingVerdict: String?
    /// Serials that failed here (refused or rolled back), newest first, at most 20.
    private(set) var failures: [Failure] = []
    private(set) var phase: DeployPhase = .waiting
    /// What the phase means right now, in a sentence (reported and shown by `ferry-agent status`, masked).
    private(set) var message: String = "waiting for the first release"

    /// Restores a recorded state (what `state.json` holds); every later change goes through `handle(_:)`.
    init(
        highestAcceptedSerial: Int64? = nil,
        applied: AppliedRelease? = nil,
        previous: AppliedRelease? = nil,
        pending: AppliedRelease? = nil,
        failures: [Failure] = [],
        phase: DeployPhase = .waiting,
        message: String = "waiting for the first release"
    ) {
        self.highestAcceptedSerial = highestAcceptedSerial
        self.applied = applied
        self.previous = previous
        self.pending = pending
        self.failures = failures
        self.phase = phase
        self.message = message
    }

    /// A serial that failed here.
    struct Failure: Sendable, Codable, Equatable {
        var serial: Int64
        var reason: String
        var kind: Kind
        /// The evidence (stage, gate verdict, log tails), masked; only the newest failure that has one keeps it.
        var diagnosis: FailureDiagnosis? = nil

        /// How a serial failed (its JSON value is the one reported to the controller).
        enum Kind: String, Sendable, Codable, CaseIterable {
            /// Refused before anything ran: signature, document, expiry, replay, an app name clash.
            case refused
            /// Installed, failed its health gate (or could not be applied) and was taken out again.
            case rolledBack = "rolled-back"
        }
    }

    /// Whether `serial` failed here already (it is not retried until a newer serial arrives).
    func hasFailed(_ serial: Int64) -> Bool { failures.contains { $0.serial == serial && $0.kind == .rolledBack } }

    // MARK: - Transitions

    /// Applies `event`: the one place where a service's state changes.
    ///
    /// Returns what the caller must do (see `Action`); the caller saves the state after doing it, so a crash in the
    /// middle leaves the state of before, which the next start recovers from. Taking a failed release out is two
    /// events, the verdict and the done, so that no report says "rolled back" before it is. Throws, changing nothing,
    /// when the event cannot happen in this state: that is a bug in the caller, reported, never a crash.
    mutating func handle(_ event: Event) throws(TransitionError) -> Action {
        switch (phase, event) {
        case (_, .releaseRefused(let serial, let reason)):
            // Seen again in every pass while the controller offers it: news (message, save, report) only once.
            guard failures.record(serial: serial ?? 0, reason: reason, kind: .refused) else { return .none }
            message = "refused serial \(serial.map(String.init) ?? "?"): \(reason)"
            return .save

        case (_, .installRefused(let serial, let error)):
            // Offered again at every pass while the clash lasts: news (message, save, report) only once, as above.
            guard failures.record(serial: serial, reason: "\(error)", kind: .refused) else { return .none }
            message = "refused serial \(serial): \(error)"
            return .save

        case (_, .installStarted(let candidate)):
            // Accept first: from here on no serial at or below this one is installed, whatever happens next.
            if let accepted = highestAcceptedSerial, candidate.serial <= accepted, candidate.serial != pending?.serial {
                throw .serialNotAboveAccepted(serial: candidate.serial, accepted: accepted)
            }
            highestAcceptedSerial = max(highestAcceptedSerial ?? 0, candidate.serial)
            pending = candidate
            pendingActivated = false
            pendingVerdict = nil
            phase = .deploying
            message = "deploying serial \(candidate.serial) (\(candidate.version))"
            return .save

        case (.deploying, .activating):
            _ = try installing(event)
            pendingActivated = true
            return .save

        case (_, .installResumed):
            guard let interrupted = pending else { throw .noInstallPending(event: event.name) }
            if let verdict = pendingVerdict {
                // It had failed, and the agent stopped while taking it out: the verdict stands, and the taking out is
                // finished now (the applied release restored, or the failed release's apps removed).
                failures.record(serial: interrupted.serial, reason: verdict, kind: .rolledBack)
                pending = nil
                let what = "serial \(interrupted.serial) (\(interrupted.version)) failed"
                let why = "\(verdict) (the agent was restarted while taking it out)"
                if let target = applied {
                    phase = .rolledBack
                    message = "\(what) and was rolled back to serial \(target.serial) (\(target.version)): \(why)"
                    return .restore(target)
                }
                phase = .failed
                message = "\(what) and there is no earlier release to roll back to: \(why)"
                return .removeFailedRelease(interrupted)
            }
            phase = .deploying
            if pendingActivated == false, applied != nil {
                // Stopped before its files were written: `current`, the ecosystem file and the apps are the applied
                // release's as they ran. Restoring them reloaded every app (a restart each in fork mode) at each restart of
                // the agent while a download kept failing.
                message = "serial \(interrupted.serial) was interrupted by a restart of the agent before it touched what runs; installing it again"
                return .save
            }
            message = "serial \(interrupted.serial) was interrupted by a restart of the agent; installing it again"
            // With nothing applied before, `current` stays on the pending tree (complete: extraction is staged and
            // renamed) until the install runs again.
            return applied.map { .restore($0) } ?? .save

        case (.deploying, .downloadFailed(let error)):
            let candidate = try installing(event)
            // Transient or not, the release stays pending and the next pass tries again; `current` is unchanged.
            phase = applied == nil ? .failed : .running
            message = "serial \(candidate.serial) (\(candidate.version)) not installed yet: \(error)"
            return .save

        case (.deploying, .downloadSuperseded(let newer)):
            let superseded = try installing(event)
            let what = "serial \(superseded.serial) (\(superseded.version)) was superseded by serial \(newer) during its download"
            // `current` was never switched: what ran before runs on.
            if let running = applied {
                phase = .running
                message = "\(what); serial \(running.serial) (\(running.version)) runs until serial \(newer) is installed"
            } else {
                phase = .waiting
                message = "\(what); nothing runs until serial \(newer) is installed"
            }
            pending = nil
            return .save

        case (_, .installWithdrawn):
            guard let withdrawn = pending else { throw .noInstallPending(event: event.name) }
            guard let running = applied else { throw .nothingApplied(event: event.name) }
            phase = .running
            message =
                "serial \(withdrawn.serial) (\(withdrawn.version)) is no longer offered by the controller and was not installed; "
                + "serial \(running.serial) (\(running.version)) runs"
            pending = nil
            // Offered again later (the rollout's wave reaches this agent after all), it is accepted again: only that
            // serial is given back, every serial accepted before it stays refused.
            if highestAcceptedSerial == withdrawn.serial { highestAcceptedSerial = withdrawn.serial - 1 }
            return .save

        case (.deploying, .activationFailed(let error)):
            let candidate = try installing(event)
            // The release stays pending and is tried again after the install backoff's wait. Meanwhile the applied
            // release runs from its own files and is judged (a service left "deploying" had its health frozen for as
            // long as the files could not be written: a read-only or full file system, for hours).
            phase = applied == nil ? .failed : .running
            message = "serial \(candidate.serial) could not be activated: \(error)"
            return .save

        case (.deploying, .installInterrupted):
            // Shutting down mid-install: no verdict. The release stays pending; the next start goes back to the
            // applied release and installs this one again.
            _ = try installing(event)
            return .none

        case (.deploying, .releaseHealthy):
            let candidate = try installing(event)
            previous = applied
            applied = candidate
            pending = nil
            phase = .running
            message = "serial \(candidate.serial) (\(candidate.version)) is running and healthy"
            return .collectGarbage

        case (.deploying, .releaseUnhealthy(let reason, let canRollBack)):
            // The verdict decides; the state changes once the failed release is out (`rolledBack`,
            // `failedReleaseRemoved`): a report in between must not say "rolled back" while it still runs.
            let failed = try installing(event)
            pendingVerdict = "\(reason)"
            if let target = applied, canRollBack { return .rollBack(failed: failed, to: target) }
            return .removeFailedRelease(failed)

        case (.deploying, .rolledBack(let reason, let diagnosis)):
            let failed = try installing(event)
            guard let target = applied else { throw .nothingApplied(event: event.name) }
            failures.record(serial: failed.serial, reason: "\(reason)", kind: .rolledBack, diagnosis: diagnosis)
            pending = nil
            phase = .rolledBack
            message =
                "serial \(failed.serial) (\(failed.version)) failed and was rolled back to serial \(target.serial) (\(target.version)): \(reason)"
            return .save

        case (.deploying, .failedReleaseRemoved(let reason, let diagnosis)):
            let failed = try installing(event)
            failures.record(serial: failed.serial, reason: "\(reason)", kind: .rolledBack, diagnosis: diagnosis)
            pending = nil
            phase = .failed
            message = "serial \(failed.serial) (\(failed.version)) failed and there is no earlier release to roll back to: \(reason)"
            return .save

        case (.deploying, .releaseSuperseded(_, let canRollBack)):
            // Like a verdict, it only decides: a report in between still says "deploying".
            let superseded = try installing(event)
            if let target = applied, canRollBack { return .rollBack(failed: superseded, to: target) }
            return .removeFailedRelease(superseded)

        case (.deploying, .supersededReleaseTakenOut(let newer, let restored)):
            let superseded = try installing(event)
            let what = "serial \(superseded.serial) (\(superseded.version)) was superseded by serial \(newer) during its health gate"
            if restored {
                guard let running = applied else { throw .nothingApplied(event: event.name) }
                phase = .running
                message = "\(what); serial \(running.serial) (\(running.version)) runs until serial \(newer) is installed"
            } else {
                phase = applied == nil ? .waiting : .failed
                message = "\(what) and taken out; nothing runs until serial \(newer) is installed"
            }
            pending = nil
            return .save

        case (_, .downloadFailed), (_, .downloadSuperseded), (_, .activating), (_, .activationFailed), (_, .installInterrupted), (_, .releaseHealthy),
            (_, .releaseUnhealthy),
            (_, .rolledBack), (_, .failedReleaseRemoved), (_, .releaseSuperseded), (_, .supersededReleaseTakenOut):
            throw .notDeploying(event: event.name, phase: phase)

        case (.deploying, .appsRepaired):
            // An install is under way: its own verdict is the news.
            guard applied != nil else { throw .nothingApplied(event: event.name) }
            return .none

        case (_, .appsRepaired(let what)):
            guard let running = applied else { throw .nothingApplied(event: event.name) }
            let text = "serial \(running.serial) (\(running.version)): \(what)"
            guard text != message else { return .none }
            message = text
            return .save

        case (_, .environmentReloaded(let envDigest)):
            guard var reloaded = applied else { throw .nothingApplied(event: event.name) }
            reloaded.envDigest = envDigest
            applied = reloaded
            message = "reloaded serial \(reloaded.serial) with a changed instance env file"
            return .save

        case (.rolledBack, .restoredChecked(let problem)):
            guard let restored = applied else { throw .nothingApplied(event: event.name) }
            let note = problem.map { "; serial \(restored.serial) is not healthy either: \($0)" } ?? "; serial \(restored.serial) is healthy again"
            guard !message.hasSuffix(note) else { return .none }
            message += note
            return .save

        case (_, .restoredChecked):
            throw .notRolledBack(event: event.name, phase: phase)
        }
    }

    /// The install an install-step event is about.
    private func installing(_ event: Event) throws(TransitionError) -> AppliedRelease {
        guard let pending else { throw .noInstallPending(event: event.name) }
        return pending
    }

    /// Longest message or failure reason kept in the state file (reports carry at most 2,000 bytes of each).
    static let maximumStoredTextBytes = 8 << 10

    /// `text` cut to `maximumStoredTextBytes`, on a character boundary, control characters but newline and tab spaced.
    static func storedText(_ text: String) -> String {
        ReportText.freeText(text, maximumBytes: maximumStoredTextBytes)
    }

    /// Cuts the message, the failure reasons and a saved verdict to `maximumStoredTextBytes` (after masking: see
    /// `AgentState.prepareForSaving(mask:)`).
    mutating func clipTexts() {
        message = Self.storedText(message)
        pendingVerdict = pendingVerdict.map(Self.storedText)
        for index in failures.indices {
            failures[index].reason = Self.storedText(failures[index].reason)
        }
    }

    /// Masks instance env values in the message, the failure reasons and a saved verdict (see `SecretMask`): they quote
    /// errors from the process manager, apps and the network. Changes no phase.
    mutating func mask(with mask: SecretMask) {
        message = mask.apply(message)
        pendingVerdict = pendingVerdict.map(mask.apply)
        for index in failures.indices {
            failures[index].reason = mask.apply(failures[index].reason)
            failures[index].diagnosis = failures[index].diagnosis?.mapText(mask.apply)
        }
    }
}

extension [ServiceState.Failure] {
    /// Records a failure, newest first, keeping the list at 20: the same serial and kind again moves to the front with
    /// the new reason. A failure with a diagnosis takes it from the others (only the newest evidence is kept: the
    /// state file and every report stay small). Returns whether the list changed.
    @discardableResult
    mutating func record(serial: Int64, reason: String, kind: ServiceState.Failure.Kind, diagnosis: FailureDiagnosis? = nil) -> Bool {
        let before = self
        removeAll { $0.serial == serial && $0.kind == kind }
        if diagnosis != nil {
            for index in indices { self[index].diagnosis = nil }
        }
        insert(ServiceState.Failure(serial: serial, reason: reason, kind: kind, diagnosis: diagnosis), at: 0)
        if count > 20 { removeLast(count - 20) }
        return self != before
    }
}
