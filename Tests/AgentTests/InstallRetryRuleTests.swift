import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// Which failed installs are tried again at the next pass, which back off, and which wait for disk space: a release
/// whose artifact fails the same way at every pass must not be fetched, hashed and extracted (and reported) once a poll
/// interval until a new serial comes, nor fill the disk at every pass.
@Suite("Install retry rules")
struct InstallRetryRuleTests {
    static let archive = "/var/lib/ferry/artifacts/abc"

    static let rows: [(label: String, error: InstallError, backsOff: Bool)] = [
        ("a digest that does not match", .download(.digestMismatch(url: "/a", expected: SHA256.hash([1]), actual: SHA256.hash([2]))), true),
        ("a size that does not match", .download(.sizeMismatch(sha256: SHA256.hash([1]), url: "/a", expected: 10, received: 11)), true),
        ("a damaged archive", .extraction(.corrupt(archive: archive, entry: nil, reason: "truncated gzip input")), true),
        ("a path outside the tree", .extraction(.unsafePath(entry: "../x", reason: "a .. component")), true),
        ("a format the extractor does not read (xz)", .extraction(.unreadable(archive: archive, reason: "Unrecognized archive format")), true),
        ("a file where the archive made a directory", .extraction(.writeFailed(entry: "d", reason: "Directory not empty")), true),
        ("the staging directory cannot be made", .extraction(.fileSystem(path: "/srv/x.staging", operation: "mkdir", errno: EROFS)), true),
        (
            "a store that does not answer",
            .download(.download(sha256: SHA256.hash([1]), .connectionFailed(url: "http://127.0.0.1:1/a", code: 7, message: "refused"))), false
        ),
        ("a store that answers 403 (an expired presigned URL)", Self.answered(403), true),
        ("a store that answers 404", Self.answered(404), true),
        ("a store that answers 503", Self.answered(503), false),
        ("a store that answers 429", Self.answered(429), false),
        (
            "a store whose certificate does not verify",
            .download(.download(sha256: SHA256.hash([1]), .tls(url: "https://127.0.0.1:1/a", code: 60, message: "unknown CA"))), true
        ),
        (
            "a handshake a reset cut short (curl 35)",
            .download(.download(sha256: SHA256.hash([1]), .tls(url: "https://127.0.0.1:1/a", code: 35, message: "SSL_ERROR_SYSCALL"))), false
        ),
        (
            "a store that times out",
            .download(.download(sha256: SHA256.hash([1]), .timedOut(url: "http://127.0.0.1:1/a", message: "slow"))), false
        ),
        ("a tree that does not fit (waits for space instead)", .extraction(.noSpace(path: "/srv", needed: 1 << 30, available: 0)), false),
        (
            "a full disk with the bytes the tree declares free (inodes, a quota, small files' blocks)",
            .extraction(.noSpace(path: "/srv", needed: 1 << 20, available: 1 << 30)), true
        ),
        ("a full disk whose free space cannot be read", .extraction(.noSpace(path: "/srv", needed: 1 << 20, available: nil)), true),
        ("a newer serial arrived", .superseded(by: 7), false),
        ("an extraction cancelled", .extraction(.cancelled(archive: archive)), false),
    ]

    static func answered(_ status: Int) -> InstallError {
        .download(.download(sha256: SHA256.hash([1]), .unexpectedStatus(url: "http://127.0.0.1:1/a", status: status)))
    }

    /// The failures that are the release's own, listed as a refusal of its serial (a rollout counts them); the others
    /// say nothing of the release.
    @Test(arguments: rows.indices)
    func whatIsTheReleasesFault(_ index: Int) {
        let row = Self.rows[index]
        let releases = ["a digest that does not match", "a size that does not match", "a damaged archive", "a path outside the tree"]
        #expect(row.error.isTheReleasesFault == releases.contains(row.label), "\(row.label)")
    }

    @Test(arguments: rows.indices)
    func whatBacksOff(_ index: Int) {
        let row = Self.rows[index]
        #expect(row.error.repeatsTheSameWay == row.backsOff, "\(row.label)")
    }

    /// A tree that did not fit is extracted again only once the space it needs (plus a margin) is free.
    @Test func aTreeThatDidNotFitWaitsForItsSpace() throws {
        try TestPaths.withTemporaryDirectorySync("space-wait") { directory in
            let free = try #require(DiskSpace.available(at: directory.path))
            let short = Reconciler.SpaceWait(serial: 2, path: directory.path, needed: free + (64 << 20))
            #expect(short.wanted >= free + (64 << 20) + (1 << 20), "a margin on top")
            #expect(short.stillShort() != nil, "more than is free: it waits")
            let fits = Reconciler.SpaceWait(serial: 2, path: directory.path, needed: 1 << 20)
            #expect(fits.stillShort() == nil, "2 MiB is free here: it is tried")
            let unreadable = Reconciler.SpaceWait(serial: 2, path: directory.path + "/missing", needed: .max)
            #expect(unreadable.wanted == .max, "no overflow")
            #expect(unreadable.stillShort() == nil, "free space that cannot be read does not hold the install back")
        }
    }
}
