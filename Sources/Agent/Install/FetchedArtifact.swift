import Shared

/// A verified artifact in the cache.
struct FetchedArtifact: Sendable, Equatable {
    /// How the bytes got there.
    enum Source: Sendable, Equatable {
        /// Already cached and still hashing to the signed digest: no network.
        case cache
        /// Downloaded now: `bytes` over the network, resuming an existing `.part` at `resumedFrom` (0 = fresh).
        case download(bytes: Int64, resumedFrom: Int64)
    }

    /// `<stateDirectory>/artifacts/<sha256>`; never modified once there.
    var path: String
    var sha256: SHA256Digest
    var size: Int64
    var source: Source
}
