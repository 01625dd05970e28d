#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit (`RLIMIT_NOFILE`): every client connection is a file descriptor.
enum OpenFileLimit {
    /// What `raise(toFit:)` found and did.
    struct Outcome: Sendable, Equatable {
        /// The soft limit before.
        var previous: UInt64
        /// The soft limit now.
        var current: UInt64
        /// The hard limit (what an unprivileged process may raise its soft limit to).
        var hard: UInt64
        /// Descriptors the caller asked for.
        var wanted: UInt64

        /// Whether `wanted` descriptors fit under the soft limit now.
        var fits: Bool { current >= wanted }
        /// How many connections the limit leaves room for once `reserved` descriptors are set aside.
        func connections(reserving reserved: Int) -> Int {
            current > UInt64(reserved) ? Int(clamping: current - UInt64(reserved)) : 0
        }
    }

    /// Raises the soft limit towards the hard limit until `wanted` descriptors fit (never lowers it).
    /// - Returns: `nil` when the limit cannot be read.
    static func raise(toFit wanted: Int) -> Outcome? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let wanted = UInt64(max(0, wanted))
        let previous = UInt64(limit.rlim_cur)
        // RLIM_INFINITY is the largest value: "unlimited" hard limits compare as room for anything.
        let hard = UInt64(limit.rlim_max)
        var outcome = Outcome(previous: previous, current: previous, hard: hard, wanted: wanted)
        guard previous < wanted else { return outcome }
        limit.rlim_cur = rlim_t(min(wanted, hard))
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            outcome.current = UInt64(limit.rlim_cur)
        }
        return outcome
    }
}
