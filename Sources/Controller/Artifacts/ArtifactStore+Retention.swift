import Foundation
import NIOPosix
import Shared
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Artifact retention: removing the stored artifacts no release worth keeping names (`POST /v1/artifacts/prune`).
///
/// Kept: the artifacts of the newest `keepReleases` releases of every service, of every release an agent runs or a
/// rollout tells agents to run (`ControllerStore.retainedArtifacts`), and any artifact stored less than `minimumAge`
/// ago (this controller's file by its modification time, the shared row by its `created_at`), which protects an upload
/// whose publish has not come yet. Everything else stored is removed: this controller's file and, with a shared
/// database, the artifact's rows (other controllers' own copies stay until a prune through each).
///
/// A publish and a prune never leave a release naming a removed artifact: a publish pins its digest from its check
/// that the artifact is there until its release is stored (`retention.pin`, in the release route), a prune removes none that is pinned, marks
/// those it removes first (a publish of one meanwhile is answered "being removed", 503), and reads again what releases
/// keep after marking. Across controllers, the shared rows are deleted under the write lock every publish takes, which
/// then checks that its artifact's row is still there (`ControllerStore.insertRelease(requiringStoredArtifact:)`).
extension ArtifactStore {
    /// What a prune keeps.
    struct RetentionPolicy: Sendable, Equatable {
        /// The newest releases of each service whose artifacts are kept. Default 5; 1 to 1000.
        var keepReleases = 5
        /// Artifacts stored more recently than this are kept whatever names them. Default 24 h; 0 to 365 days.
        var minimumAge: Duration = .seconds(86_400)
        /// Report what would be removed without removing anything. Default `false`.
        var dryRun = false

        /// The allowed `keepReleases`.
        static let keepReleasesRange = 1...1000
        /// The allowed `minimumAge`, in seconds.
        static let minimumAgeSecondsRange: ClosedRange<Int64> = 0...31_536_000
    }

    /// What a prune removed (or, dry run, would remove).
    struct PruneOutcome: Sendable, Equatable {
        /// One artifact removed.
        struct Removed: Sendable, Equatable {
            var digest: SHA256Digest
            var size: Int64
        }

        /// The artifacts removed, by digest order.
        var removed: [Removed]
        /// How many stored artifacts are kept.
        var kept: Int

        /// Bytes the removed artifacts took (each counted once, whether it was a file, a shared row or both).
        var bytesFreed: Int64 { removed.reduce(0) { $0 + $1.size } }
    }

    /// One stored artifact as a prune sees it: this controller's file and the shared row, either or both.
    private struct Candidate {
        var file: FileIdentity?
        var row: StoredArtifactRow?

        var size: Int64 { file?.size ?? row?.size ?? 0 }

        /// Whether every copy was stored before `cutoff` (a copy fetched into this controller's cache recently counts as
        /// recent too: conservative).
        func isOlder(than cutoff: Date) -> Bool {
            if let file, Date(timeIntervalSince1970: Double(file.modifiedSeconds) + Double(file.modifiedNanoseconds) / 1e9) >= cutoff {
                return false
            }
            if let row, row.createdAt >= cutoff { return false }
            return true
        }
    }

    /// Removes the stored artifacts `policy` does not keep (see the extension's summary); nothing on a dry run.
    /// - Parameter now: the time ages are measured from.
    /// - Throws: the store's errors, or `ArtifactStoreError.io` when the directory cannot be read (nothing is removed
    ///   when reading what to keep fails: a prune that could not see its files deleted the shared rows alone).
    func prune(_ policy: RetentionPolicy, store: any ControllerStore, now: Date) async throws -> PruneOutcome {
        let cutoff = now.addingTimeInterval(-Double(policy.minimumAge.components.seconds))
        var stored: [SHA256Digest: Candidate] = [:]
        // The directory's listing and every file's `stat` (and below, the removals): off the cooperative pool.
        let directory = configuration.directory
        let files = try await NIOThreadPool.singleton.runIfActive { () throws -> [(SHA256Digest, FileIdentity)] in
            let names: [String]
            do {
                names = try FileManager.default.contentsOfDirectory(atPath: directory)
            } catch {
                throw ArtifactStoreError.io(path: directory, reason: "cannot list the artifacts to prune: \(error)")
            }
            return names.compactMap { name in
                guard let digest = SHA256Digest(hex: name), let identity = FileIdentity(path: "\(directory)/\(name)") else { return nil }
                return (digest, identity)
            }
        }
        for (digest, identity) in files { stored[digest, default: Candidate()].file = identity }
        if configuration.shared != nil {
            for (hex, row) in try await store.artifactRows() {
                guard let digest = SHA256Digest(hex: hex) else { continue }
                stored[digest, default: Candidate()].row = row
            }
        }
        let retained = try await store.retainedArtifacts(keepReleases: policy.keepReleases)
        let candidates = stored.filter { !retained.contains($0.key.hex) && $0.value.isOlder(than: cutoff) }
        if policy.dryRun {
            let removed = candidates.map { PruneOutcome.Removed(digest: $0.key, size: $0.value.size) }.sorted { $0.digest.hex < $1.digest.hex }
            return PruneOutcome(removed: removed, kept: stored.count - removed.count)
        }
        // Marked first: a publish of one of these is refused from now on, and one in progress (pinned) keeps it.
        let marked = retention.mark(Set(candidates.keys))
        defer { retention.unmark(marked) }
        // Read again now that no publish of this controller can name them: a release stored since the first read (by a
        // publish that was pinned then) keeps its artifact. With a shared database, under the write lock.
        let (stillRetained, removedRows) = try await store.removeArtifactRows(
            Set(marked.filter { candidates[$0]?.row != nil }.map(\.hex)),
            storedBefore: cutoff,
            keepReleases: policy.keepReleases
        )
        let removing = marked.sorted(by: { $0.hex < $1.hex }).compactMap { digest -> (SHA256Digest, Candidate)? in
            guard let copy = candidates[digest], !stillRetained.contains(digest.hex) else { return nil }
            // A row not deleted (written again since it was read) keeps this controller's copy too.
            if copy.row != nil, !removedRows.contains(digest.hex) { return nil }
            return (digest, copy)
        }
        // Unlinking a file of gigabytes takes a while: on a thread of the pool, as an upload's `fsync` and `rename`.
        let store = self
        let removed = try await NIOThreadPool.singleton.runIfActive { () -> [PruneOutcome.Removed] in
            removing.compactMap { digest, copy in
                var gone = copy.row != nil
                if let file = copy.file {
                    // Only the file read above: one an upload put under the name since then stays.
                    let removedFile = store.remove(
                        store.path(for: digest),
                        ifItIs: file,
                        aside: "\(store.temporaryDirectory)/pruned-\(UUID().uuidString)"
                    )
                    gone = gone || removedFile
                    store.configuration.logger.debug(
                        "Artifact pruned",
                        metadata: ["artifact.sha256": "\(digest.hex)", "artifact.size": "\(copy.size)", "artifact.file_removed": "\(removedFile)"]
                    )
                }
                store.knownShared.remove(digest)
                return gone ? PruneOutcome.Removed(digest: digest, size: copy.size) : nil
            }
        }
        return PruneOutcome(removed: removed, kept: stored.count - removed.count)
    }
}

/// The digests publishes and uploads of this controller are using (pinned, counted), and those a prune is removing.
/// A digest is never both: pinning one being removed fails, and marking skips pinned ones.
final class ArtifactRetentionLocks: Sendable {
    private struct State {
        var pins: [SHA256Digest: Int] = [:]
        var removing: Set<SHA256Digest> = []
    }

    private let state = Mutex(State())

    /// Pins `digest`, unless a prune is removing it.
    /// - Returns: whether it is pinned (each `true` needs one `unpin`).
    func pin(_ digest: SHA256Digest) -> Bool {
        state.withLock { state in
            guard !state.removing.contains(digest) else { return false }
            state.pins[digest, default: 0] += 1
            return true
        }
    }

    /// Ends one `pin` of `digest`.
    func unpin(_ digest: SHA256Digest) {
        state.withLock { state in
            guard let count = state.pins[digest] else { return }
            state.pins[digest] = count > 1 ? count - 1 : nil
        }
    }

    /// Marks for removal those of `digests` neither pinned nor marked already.
    /// - Returns: the digests marked (each needs `unmark`).
    func mark(_ digests: Set<SHA256Digest>) -> Set<SHA256Digest> {
        state.withLock { state in
            let marked = digests.filter { state.pins[$0] == nil && !state.removing.contains($0) }
            state.removing.formUnion(marked)
            return marked
        }
    }

    /// Ends the removal of `digests`.
    func unmark(_ digests: Set<SHA256Digest>) {
        _ = state.withLock { $0.removing.subtract(digests) }
    }
}
