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

        func refreshArtifactBlob(_ sha256: String, at date: Date) async throws -> Bool { try await artifactBlobSize(sha256) != nil }

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

            #expect(try await store.availability(of: digest) == .local(size: Int64(bytes.count)))
            #expect(blobs.attempts == 2, "the transaction ran twice")
            #expect(blobs.bytes(digest.hex) == bytes, "the database holds the artifact whole")
            #expect(FileManager.default.fileExists(atPath: store.path(for: digest)), "the good copy is kept")
        }
    }
}

/// A copy whose check takes longer than a request waits for it (a large artifact after a restart): the request is
/// answered without it (`checking`: a HEAD, a download and a publish are answered 503) and the check goes on; once it
/// ends, a good copy is served and a damaged one is gone. Requests used to wait for the whole hash, which
/// for a 4 GiB artifact on a slow disk outlasted the CLI's and the agents' timeouts.
@Suite struct ArtifactCheckWaitTests {
    @Test(arguments: [false, true])
    func aCheckLongerThanTheWaitGoesOn(damaged: Bool) async throws {
        try await TestPaths.withTemporaryDirectory("artifact-check-wait") { directory in
            // The check is held until the test lets it go: as long as a large copy's hash on a slow disk.
            let (held, release) = AsyncStream.makeStream(of: Void.self)
            var configuration = ArtifactStore.Configuration(directory: directory.appendingPathComponent("artifacts").path)
            configuration.checkWait = .milliseconds(200)
            configuration.beforeCheck = {
                for await _ in held { break }
            }
            let store = try ArtifactStore(configuration)
            var bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let digest = SHA256.hash(bytes)
            if damaged { bytes[bytes.count - 1] ^= 0x01 }
            try Data(bytes).write(to: URL(fileURLWithPath: store.path(for: digest)))

            let first = try await store.availability(of: digest)
            #expect(first == .checking(size: Int64(bytes.count)))
            let second = try await store.availability(of: digest)
            #expect(second == .checking(size: Int64(bytes.count)), "the check goes on, once")
            release.yield()
            let settled = try await eventually("the check ended", timeout: .seconds(60), interval: .milliseconds(50)) {
                () -> ArtifactStore.Availability? in
                let now = try await store.availability(of: digest)
                if case .checking = now { return nil }
                return now
            }
            if damaged {
                #expect(settled == .absent, "a damaged copy counts as none once checked")
                #expect(!FileManager.default.fileExists(atPath: store.path(for: digest)))
            } else {
                #expect(settled == .local(size: Int64(bytes.count)))
            }
            release.finish()
        }
    }
}
