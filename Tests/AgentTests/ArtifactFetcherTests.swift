import Foundation
import Logging
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent

@Suite("ArtifactFetcher")
struct ArtifactFetcherTests {
    static let payload: [UInt8] = (0..<400_000).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
    static let digest = SHA256.hash(payload)
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A fetcher over a fresh state directory, with the test server as controller.
    struct Fixture {
        var server: TestFileServer
        var state: URL
        var artifacts: String { state.appendingPathComponent("artifacts").path }

        func fetcher(token: String? = "agent-token", _ adjust: (inout ArtifactFetcher.Configuration) -> Void = { _ in }) -> ArtifactFetcher {
            var configuration = ArtifactFetcher.Configuration(stateDirectory: state.path)
            adjust(&configuration)
            return ArtifactFetcher(configuration: configuration, client: HTTPClient(), controllerURL: server.baseURL, token: token, logger: logger)
        }

        func reference(_ bytes: [UInt8] = payload, digest: SHA256Digest = ArtifactFetcherTests.digest, path: String? = nil) -> ArtifactReference {
            ArtifactReference(url: path ?? ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
        }

        func partPath(_ digest: SHA256Digest = ArtifactFetcherTests.digest) -> String { "\(artifacts)/\(digest.hex).part" }
        func finalPath(_ digest: SHA256Digest = ArtifactFetcherTests.digest) -> String { "\(artifacts)/\(digest.hex)" }

        func writePart(_ bytes: [UInt8], digest: SHA256Digest = ArtifactFetcherTests.digest) throws {
            try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: partPath(digest)))
        }
    }

    static func withFixture(_ body: (Fixture) async throws -> Void) async throws {
        try await TestFileServer.with { server in
            try await TestPaths.withTemporaryDirectory("ferry-fetcher") { state in
                try await body(Fixture(server: server, state: state))
            }
        }
    }

    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// A download has a total deadline (ten minutes plus the bytes left at 64 KiB/s): a server trickling just above
    /// libcurl's low-speed limit no longer holds the agent's pass for days.
    static let deadlines: [(remaining: Int64, seconds: Int64)] = [(0, 600), (200 << 20, 600 + 3_200), (4 << 30, 600 + 65_536), (-1, 600)]

    @Test(arguments: deadlines)
    func aDownloadHasADeadlineForItsSize(_ row: (remaining: Int64, seconds: Int64)) {
        #expect(ArtifactFetcher.deadline(forRemaining: row.remaining) == .seconds(row.seconds))
    }

    @Test func downloadsVerifiesAndCachesUnderTheDigest() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            let fetched = try await fixture.fetcher().fetch(fixture.reference())
            #expect(
                fetched
                    == FetchedArtifact(
                        path: fixture.finalPath(),
                        sha256: Self.digest,
                        size: 400_000,
                        source: .download(bytes: 400_000, resumedFrom: 0)
                    )
            )
            #expect(try SHA256.hash(fileAt: fetched.path).digest == Self.digest)
            #expect(!Self.exists(fixture.partPath()))
            let request = try #require(fixture.server.requests.first)
            #expect(request.authorization == "Bearer agent-token")
            #expect(request.range == nil)
        }
    }

    @Test func absoluteURLsNeverGetTheTokenAndMayRedirect() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish([], at: "/bucket/presigned", .init(redirect: "/bucket/object"))
            fixture.server.publish(Self.payload, at: "/bucket/object")
            let url = "\(fixture.server.baseURL)/bucket/presigned?X-Amz-Signature=abc"
            let fetched = try await fixture.fetcher().fetch(fixture.reference(path: url))
            #expect(fetched.source == .download(bytes: 400_000, resumedFrom: 0))
            #expect(fixture.server.requests.map(\.path) == ["/bucket/presigned", "/bucket/object"])
            #expect(fixture.server.requests.allSatisfy { $0.authorization == nil })
        }
    }

    @Test func relativeURLWithoutAControllerIsRefused() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-fetcher") { state in
            let fetcher = ArtifactFetcher(
                configuration: .init(stateDirectory: state.path),
                client: HTTPClient(),
                controllerURL: nil,
                token: nil,
                logger: Self.logger
            )
            let error = await #expect(throws: ArtifactFetchError.self) {
                try await fetcher.fetch(ArtifactReference(url: "/v1/artifacts/\(Self.digest.hex)", sha256: Self.digest, size: 1))
            }
            guard case .invalidURL = error else {
                Issue.record("expected invalidURL, got \(String(describing: error))")
                return
            }
        }
    }

    @Test func resumesAPartialDownloadAfterHashingWhatIsThere() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            try fixture.writePart(Array(Self.payload[0..<150_000]))
            let fetched = try await fixture.fetcher().fetch(fixture.reference())
            #expect(fetched.source == .download(bytes: 250_000, resumedFrom: 150_000))
            #expect(fixture.server.requests.map(\.range) == ["bytes=150000-"])
            #expect(try SHA256.hash(fileAt: fetched.path).digest == Self.digest)
        }
    }

    /// A `.part` that is a symbolic link (to a file of someone else's, planted in a state directory others can write to)
    /// is refused and the file it names is left as it was: it was emptied when larger than the artifact, else written
    /// with the artifact's bytes after its own. Two targets: larger than the artifact, and smaller.
    @Test(arguments: [500_000, 10])
    func aPartThatIsASymbolicLinkIsNotFollowed(targetSize: Int) async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            try FileManager.default.createDirectory(atPath: fixture.artifacts, withIntermediateDirectories: true)
            let victim = fixture.state.appendingPathComponent("victim").path
            let original = [UInt8](repeating: 0x41, count: targetSize)
            try Data(original).write(to: URL(fileURLWithPath: victim))
            try FileManager.default.createSymbolicLink(atPath: fixture.partPath(), withDestinationPath: victim)
            do throws(ArtifactFetchError) {
                _ = try await fixture.fetcher().fetch(fixture.reference())
                Issue.record("fetched through a symbolic link")
            } catch {
                #expect("\(error)".contains("a symbolic link is not followed"), "\(error)")
            }
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: victim))) == original, "the linked file was changed")
            #expect(fixture.server.requests.isEmpty, "nothing was downloaded")
        }
    }

    @Test func corruptPartialDownloadFailsTheDigestAndIsDeleted() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            try fixture.writePart([UInt8](repeating: 0xaa, count: 150_000))
            let error = await #expect(throws: ArtifactFetchError.self) { try await fixture.fetcher().fetch(fixture.reference()) }
            guard case .digestMismatch(_, let expected, let actual) = error else {
                Issue.record("expected digestMismatch, got \(String(describing: error))")
                return
            }
            #expect(expected == Self.digest)
            #expect(actual != Self.digest)
            #expect(!Self.exists(fixture.partPath()))
            #expect(!Self.exists(fixture.finalPath()))
            // The next attempt starts from zero and succeeds.
            let fetched = try await fixture.fetcher().fetch(fixture.reference())
            #expect(fetched.source == .download(bytes: 400_000, resumedFrom: 0))
        }
    }

    @Test func droppedConnectionKeepsThePartAndTheNextFetchResumes() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest), .init(dropAfterBytes: 100_000))
            let error = await #expect(throws: ArtifactFetchError.self) { try await fixture.fetcher().fetch(fixture.reference()) }
            guard case .download(_, let cause) = error else {
                Issue.record("expected download, got \(String(describing: error))")
                return
            }
            #expect(cause.isTransient)
            let kept = try Data(contentsOf: URL(fileURLWithPath: fixture.partPath()))
            #expect(kept.count > 0 && kept.count <= 100_000)
            #expect(Array(kept) == Array(Self.payload[0..<kept.count]))

            let fetched = try await fixture.fetcher().fetch(fixture.reference())
            #expect(fetched.source == .download(bytes: Int64(400_000 - kept.count), resumedFrom: Int64(kept.count)))
            #expect(fixture.server.requests.last?.range == "bytes=\(kept.count)-")
            #expect(try SHA256.hash(fileAt: fetched.path).digest == Self.digest)
        }
    }

    /// A proxy that answers a resume with 206 but a `Content-Range` from 0 (or none): the download fails, and the
    /// `.part` goes, so the next attempt asks for everything instead of the same range again, for ever.
    @Test func aResumeAnsweredWithTheWrongRangeStartsOverNextTime() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest), .init(wrongContentRange: true))
            try fixture.writePart(Array(Self.payload[0..<150_000]))
            let error = await #expect(throws: ArtifactFetchError.self) { try await fixture.fetcher().fetch(fixture.reference()) }
            guard case .download(_, .invalidContentRange) = error else {
                Issue.record("expected a download error for the Content-Range, got \(String(describing: error))")
                return
            }
            #expect(!Self.exists(fixture.partPath()))
            let fetched = try await fixture.fetcher().fetch(fixture.reference())
            #expect(fetched.source == .download(bytes: 400_000, resumedFrom: 0))
            #expect(fixture.server.requests.map(\.range) == ["bytes=150000-", nil])
        }
    }

    @Test func serverIgnoringRangeStartsOverAndStillVerifies() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest), .init(honourRange: false))
            try fixture.writePart(Array(Self.payload[0..<50_000]))
            let fetched = try await fixture.fetcher().fetch(fixture.reference())
            #expect(fetched.source == .download(bytes: 400_000, resumedFrom: 0))
            #expect(try SHA256.hash(fileAt: fetched.path).digest == Self.digest)
        }
    }

    @Test func completePartIsVerifiedWithoutNetwork() async throws {
        try await Self.withFixture { fixture in
            try fixture.writePart(Self.payload)
            let fetched = try await fixture.fetcher().fetch(fixture.reference())
            #expect(fetched.source == .download(bytes: 0, resumedFrom: 0))
            #expect(fixture.server.requests.isEmpty)
            #expect(Self.exists(fixture.finalPath()))
        }
    }

    /// The server has only the bytes already in the `.part`: it answers the resume with 416, and the fetcher finds
    /// the artifact shorter than signed.
    @Test func rangeNotSatisfiableOnAShortPartIsASizeMismatch() async throws {
        try await Self.withFixture { fixture in
            let short = Array(Self.payload[0..<100_000])
            fixture.server.publish(short, at: ArtifactReference.controllerPath(for: Self.digest))
            try fixture.writePart(short)
            let error = await #expect(throws: ArtifactFetchError.self) { try await fixture.fetcher().fetch(fixture.reference()) }
            guard case .sizeMismatch(_, _, let expected, let received) = error else {
                Issue.record("expected sizeMismatch, got \(String(describing: error))")
                return
            }
            #expect(expected == 400_000)
            #expect(received == 100_000)
            #expect(fixture.server.requests.map(\.range) == ["bytes=100000-"])
            #expect(!Self.exists(fixture.partPath()))
        }
    }

    @Test func wrongBytesOfTheRightSizeAreADigestMismatch() async throws {
        try await Self.withFixture { fixture in
            var wrong = Self.payload
            wrong[200_000] ^= 0xff
            fixture.server.publish(wrong, at: ArtifactReference.controllerPath(for: Self.digest))
            let error = await #expect(throws: ArtifactFetchError.self) { try await fixture.fetcher().fetch(fixture.reference()) }
            guard case .digestMismatch(_, let expected, let actual) = error else {
                Issue.record("expected digestMismatch, got \(String(describing: error))")
                return
            }
            #expect(expected == Self.digest)
            #expect(actual == SHA256.hash(wrong))
            #expect(String(describing: error).contains(Self.digest.hex))
            #expect(!Self.exists(fixture.partPath()))
            #expect(!Self.exists(fixture.finalPath()))
        }
    }

    @Test func serverSendingFewerBytesThanSignedIsASizeMismatch() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Array(Self.payload[0..<300_000]), at: ArtifactReference.controllerPath(for: Self.digest))
            let error = await #expect(throws: ArtifactFetchError.self) { try await fixture.fetcher().fetch(fixture.reference()) }
            guard case .sizeMismatch(_, _, let expected, let received) = error else {
                Issue.record("expected sizeMismatch, got \(String(describing: error))")
                return
            }
            #expect(expected == 400_000)
            #expect(received == 300_000)
            #expect(!Self.exists(fixture.partPath()))
        }
    }

    @Test func serverSendingMoreBytesThanSignedIsStoppedAtTheSignedSize() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload + [1, 2, 3], at: ArtifactReference.controllerPath(for: Self.digest))
            let error = await #expect(throws: ArtifactFetchError.self) { try await fixture.fetcher().fetch(fixture.reference()) }
            guard case .tooLarge(_, _, let expected) = error else {
                Issue.record("expected tooLarge, got \(String(describing: error))")
                return
            }
            #expect(expected == 400_000)
            #expect(!Self.exists(fixture.partPath()))
            #expect(!Self.exists(fixture.finalPath()))
        }
    }

    @Test func notEnoughDiskSpaceIsReportedBeforeDownloading() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            try fixture.writePart(Array(Self.payload[0..<100_000]))
            let fetcher = fixture.fetcher {
                $0.freeSpaceOverride = 1_000_000
                $0.freeSpaceMargin = 1 << 20
            }
            let error = await #expect(throws: ArtifactFetchError.self) { try await fetcher.fetch(fixture.reference()) }
            guard case .insufficientSpace(let path, let needed, let available) = error else {
                Issue.record("expected insufficientSpace, got \(String(describing: error))")
                return
            }
            #expect(path == fixture.artifacts)
            #expect(needed == 300_000 + (1 << 20))
            #expect(available == 1_000_000)
            #expect(String(describing: error).contains("\(needed)") && String(describing: error).contains("1000000"))
            #expect(fixture.server.requests.isEmpty)
            #expect(Self.exists(fixture.partPath()))  // kept: space may be freed later
        }
    }

    /// A margin no disk has (set by the test hook `FERRY_TEST_FREE_SPACE_MARGIN`, which takes any Int64) is a need
    /// too large for the disk, not an overflow that ends the agent on every download.
    @Test func aMarginOfInt64MaxIsSpaceTheDiskLacks() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            let fetcher = fixture.fetcher { $0.freeSpaceMargin = .max }
            let error = await #expect(throws: ArtifactFetchError.self) { try await fetcher.fetch(fixture.reference()) }
            guard case .insufficientSpace(_, let needed, _) = error else {
                Issue.record("expected insufficientSpace, got \(String(describing: error))")
                return
            }
            #expect(needed == .max)
            #expect(fixture.server.requests.isEmpty)
        }
    }

    @Test func realFreeSpaceCheckPassesForASmallArtifact() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            _ = try await fixture.fetcher { $0.freeSpaceMargin = 1 << 20 }.fetch(fixture.reference())
        }
    }

    @Test func cachedArtifactIsReusedWithoutNetworkAndACorruptOneIsFetchedAgain() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            let fetcher = fixture.fetcher()
            _ = try await fetcher.fetch(fixture.reference())
            #expect(fixture.server.requests.count == 1)

            let again = try await fetcher.fetch(fixture.reference())
            #expect(again.source == .cache)
            #expect(fixture.server.requests.count == 1)

            // Someone damaged the cached file: it no longer verifies, so it is replaced.
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: fixture.finalPath()))
            try handle.seek(toOffset: 10)
            try handle.write(contentsOf: Data([0, 0, 0]))
            try handle.close()
            let repaired = try await fetcher.fetch(fixture.reference())
            #expect(repaired.source == .download(bytes: 400_000, resumedFrom: 0))
            #expect(fixture.server.requests.count == 2)
        }
    }

    @Test func concurrentFetchesOfOneArtifactDownloadItOnce() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            let fetcher = fixture.fetcher()
            let reference = fixture.reference()
            async let first = fetcher.fetch(reference)
            async let second = fetcher.fetch(reference)
            let results = try await [first, second]
            #expect(Set(results.map(\.path)) == [fixture.finalPath()])
            #expect(results.map(\.source).filter { $0 == .cache }.count == 1)
            #expect(fixture.server.requests.count == 1)
        }
    }

    /// Another fetch of the same artifact holds the `.part`'s lock and never lets go (a `ferry-agent fetch` suspended
    /// at a terminal): the wait ends at `lockWait` with an error the daemon's pass tries again later. It had no end,
    /// and the pass, every service's repairs with it, waited as long.
    @Test(.timeLimit(.minutes(1))) func aFetchWaitsForAnotherOneOnlySoLong() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            try fixture.writePart([])
            let holder = open(fixture.partPath(), O_RDWR | O_CLOEXEC)
            #expect(holder >= 0 && flock(holder, LOCK_EX | LOCK_NB) == 0)
            defer { close(holder) }
            let fetcher = fixture.fetcher { $0.lockWait = .milliseconds(500) }
            let started = ContinuousClock.now
            let error = await #expect(throws: ArtifactFetchError.self) { try await fetcher.fetch(fixture.reference()) }
            guard case .fileSystem(_, let operation, let code)? = error else {
                Issue.record("expected a file-system error, got \(String(describing: error))")
                return
            }
            #expect(operation.contains("another fetch of the artifact held it") && code == EWOULDBLOCK, "\(operation)")
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(fixture.server.requests.isEmpty, "nothing downloaded beside the holder")
        }
    }

    @Test func pausePointHoldsTheDownloadUntilCancelledAndTheBytesStayForAResume() async throws {
        try await Self.withFixture { fixture in
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            let paused = fixture.fetcher { $0.pauseAfterBytes = 100_000 }
            let reference = fixture.reference()
            let task = Task { try await paused.fetch(reference) }
            let part = fixture.partPath()
            try await waitUntil { ((try? FileManager.default.attributesOfItem(atPath: part)[.size] as? Int) ?? 0) >= 100_000 }
            task.cancel()
            let result = await task.result
            guard case .failure(let error) = result, case .cancelled? = error as? ArtifactFetchError else {
                Issue.record("expected cancelled, got \(result)")
                return
            }
            let kept = try Data(contentsOf: URL(fileURLWithPath: part))
            #expect(kept.count >= 100_000 && kept.count < 400_000)
            let fetched = try await fixture.fetcher().fetch(reference)
            #expect(fetched.source == .download(bytes: Int64(400_000 - kept.count), resumedFrom: Int64(kept.count)))
        }
    }

    /// The agent's collection of cached artifacts (`ReleaseFiles.collectArtifacts`) after a real fetch: the kept digest
    /// and a `.part` a fetch holds stay, as does what no fetch wrote; the rest goes.
    @Test func collectingArtifactsKeepsTheListedOnesAndPartsInUse() async throws {
        try await Self.withFixture { fixture in
            let other = SHA256.hash([1, 2, 3])
            let stale = SHA256.hash([4, 5, 6])
            let busy = SHA256.hash([7, 8, 9])
            fixture.server.publish(Self.payload, at: ArtifactReference.controllerPath(for: Self.digest))
            let fetcher = fixture.fetcher()
            _ = try await fetcher.fetch(fixture.reference())
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: fixture.finalPath(other)))
            try fixture.writePart([4], digest: stale)
            try fixture.writePart([7], digest: busy)
            try Data("notes".utf8).write(to: URL(fileURLWithPath: "\(fixture.artifacts)/README"))
            let lock = open(fixture.partPath(busy), O_RDONLY)
            #expect(flock(lock, LOCK_EX | LOCK_NB) == 0)
            defer { close(lock) }

            ReleaseFiles(layout: AgentLayout(stateDir: fixture.state.path)).collectArtifacts(keep: [Self.digest.hex])
            #expect(!Self.exists(fixture.finalPath(other)) && !Self.exists(fixture.partPath(stale)))
            #expect(Self.exists(fixture.finalPath()))
            #expect(Self.exists(fixture.partPath(busy)))
            #expect(Self.exists("\(fixture.artifacts)/README"))
        }
    }
}
