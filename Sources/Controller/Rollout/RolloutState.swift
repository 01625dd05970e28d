/// Where a rollout stands.
///
/// `[awaiting-approval →] rolling → (paused ↔ rolling) → completed | halted | aborted | superseded`. Only `rolling` advances waves;
/// `rolling` and `paused` are evaluated for failures (a paused rollout still halts). `halted` ends
/// with an abort or a newer publish; `completed`, `aborted` and `superseded` are final. The transitions are
/// `RolloutStateMachine`'s.
enum RolloutState: String, Sendable, Equatable, CaseIterable {
    /// The release has fewer signatures than the trust root's release threshold (two-person rule): stored, served to no
    /// agent until enough release keys approve it (`ferry-controller approve`); every agent keeps the stable serial.
    case awaitingApproval = "awaiting-approval"
    /// Waves advance as agents report the new serial healthy.
    case rolling
    /// An operator stopped advancement; reached agents keep the new serial, the others the stable one.
    case paused
    /// Every agent of the service receives the new serial; it is the service's stable serial now.
    case completed
    /// More agents failed than allowed: no further wave. Reached agents keep the serial they were given.
    case halted
    /// An operator gave up: agents that did not install the new serial receive the stable one again.
    case aborted
    /// A newer release of the service was published.
    case superseded

    /// Whether the rollout may still change by itself or by `pause`/`resume`.
    var isActive: Bool { self == .rolling || self == .paused }

    /// Whether a publish or an abort still changes it (`halted` waits for one of the two, `awaiting-approval` for an
    /// approval too).
    var isOpen: Bool { isActive || self == .halted || self == .awaitingApproval }
    /// Rolling, paused or halted: it reached agents, and no newer rollout has replaced it.
    var isStartedAndOpen: Bool { isActive || self == .halted }
}
