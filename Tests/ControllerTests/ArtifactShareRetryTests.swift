import Foundation
import NIOCore
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// Sharing a controller's own copy of an artifact into the shared database when the database's transaction is run
/// again: PostgreSQL's store re-runs a transaction from its start on a new connection when the first one was closed
/// under it (`retryingClosedConnection`: a failover, a terminated backend), and the body reads the artifact's chunks
/// again from the first. The copy is checked as it is read (`ArtifactStore.share`, unverified); that check went on
/// from the first try's chunks, so the digest never matched and the only, good, copy was removed as damaged; after a
/// first try that had read every chunk, the finalized hasher stopped the controller.
@Suite("Artifact share: a retried transaction")
struct ArtifactShareRetryTests {
    /// The shared database's artifact table, in memory, which runs the body once up to a failure and then again from
    /// chunk 0 as the PostgreSQL store does after a closed connection: how far the first try gets is `failAfter` chunks.
    final class RetryingBlobStore: ArtifactBlobStore {
        let failAfter: Int
        private let stored = Mutex<[String: [UInt8]]>([:])
        private let tries = Mutex(0)

        init(failAfter: Int) { self.failAfter = failAfter }

        var attempts: Int { tries.withLock { $0 } }
        func bytes(_ sha256: String) -> [UInt8]? { stored.withLock { $0[sha256] } }

        func artifactBlobSize(_ sha256: String) async throws -> Int64? { stored.withLock { $0[sha256].map { Int64($0.count) } } }

        func storeArtifactBlob(
            _ sha256: String,
            size: Int64,
            chunkBytes: Int,
            at date: Date,
            chunk: (Int) async throws -> ByteBuffer
        ) async throws
            -> Bool
        {
            let count = Int((size + Int64(chunkBytes) - 1) / Int64(chunkBytes))
            while true {
                let attempt = tries.withLock { value -> Int in
                    value += 1
                    return value
                }
                var collected: [UInt8] = []
                var failed = false
                for index in 0..<count {
                    // The connection closes under the first try (its statements are rolled back; nothing is kept).
                    if attempt == 1, index == failAfter {
                        failed = true
                        break
                    }
                    var buffer = try await chunk(index)
                    collected += buffer.readBytes(length: buffer.readableBytes) ?? []
                }
                // A first try that read every chunk fails at its COMMIT instead.
                if attempt == 1, !failed { continue }
                if failed { continue }
                stored.withLock { $0[sha256] = collected }
                return true
            }
        }

        func artifactBlobChunk(_ sha256: String, index: Int) async throws -> ByteBuffer? { nil }
    }

    @Test("the copy is shared whole and kept", arguments: [1, 3, 4])
    func aRetriedShareKeepsTheCopy(failAfter: Int) async throws {
        try await TestPaths.withTemporaryDirectory("artifact-share-retry") { directory in
            let blobs = RetryingBlobStore(failAfter: failAfter)
            var configuration = ArtifactStore.Configuration(directory: directory.appendingPathComponent("artifacts").path, shared: blobs)
            configuration.sharedChunkBytes = 1024
            let store = try ArtifactStore(configuration)
            // Four chunks (the last one short): a copy this controller holds that the database lacks (a share that
            // failed after the upload was stored).
            let bytes = (0..<(3 * 1024 + 100)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let digest = SHA256.hash(bytes)
            try Data(bytes).write(to: URL(fileURLWithPath: store.path(for: digest)))

            let size = try await store.availableSize(of: digest)
            #expect(size == Int64(bytes.count))
            #expect(blobs.attempts == 2, "the transaction ran twice")
            #expect(blobs.bytes(digest.hex) == bytes, "the database holds the artifact whole")
            #expect(FileManager.default.fileExists(atPath: store.path(for: digest)), "the good copy is kept")
        }
    }
}
