import Shared

extension ReleaseFailure {
    /// How much of each log tail the fleet document carries: the fleet view lists every agent, so ten thousand failing
    /// agents with full tails (up to 16 × 8 KiB each) would make it hundreds of megabytes. The full tails are in
    /// `GET /v1/agents/{name}`, and in `GET /v1/rollouts/{service}/{serial}` for its first `RolloutDetail.wholeTails`
    /// failed agents.
    enum FleetExcerpt {
        /// Last lines of each tail.
        static let lines = 10
        /// Most bytes of each tail's kept lines together.
        static let bytes = 2048
        /// Tails kept (stderr comes first, so the first ones are the failing instances' stderr).
        static let tails = 4
    }

    /// The failure with its log tails cut to `FleetExcerpt` (each cut tail marked `truncated`).
    var fleetExcerpt: ReleaseFailure {
        guard var diagnosis else { return self }
        diagnosis.logs = diagnosis.logs.prefix(FleetExcerpt.tails).map { tail in
            var kept: [String] = []
            var size = 0
            var shortened = false
            for line in tail.lines.reversed().prefix(FleetExcerpt.lines) {
                guard size + line.utf8.count <= FleetExcerpt.bytes else {
                    // A last line longer than the whole budget keeps its end, where the error usually is.
                    if kept.isEmpty {
                        kept.append(String(decoding: line.utf8.suffix(FleetExcerpt.bytes), as: UTF8.self))
                        shortened = true
                    }
                    break
                }
                size += line.utf8.count
                kept.append(line)
            }
            var cut = tail
            cut.lines = kept.reversed()
            cut.truncated = tail.truncated || shortened || kept.count < tail.lines.count
            return cut
        }
        var excerpt = self
        excerpt.diagnosis = diagnosis
        return excerpt
    }
}
