import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The log tail a failure report carries: the end of the file, bounded in lines and bytes, printable, and masked —
/// also when a secret straddles the start of the window read (no fragment of it may survive).
@Suite("Log tails: bounded, printable, masked")
struct LogTailReaderTests {
    static let secret = "pw-0123456789-abcdef"
    static let mask = SecretMask([["DB_PASSWORD": secret]])

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        /// The whole file.
        var file: [UInt8]
        var maxLines = 50
        var maxBytes = 8192
        var lines: [String]
        var truncated: Bool

        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "a short file, whole", file: Array("one\ntwo\nthree\n".utf8), lines: ["one", "two", "three"], truncated: false),
        Case(name: "no final newline", file: Array("one\ntwo".utf8), lines: ["one", "two"], truncated: false),
        Case(name: "empty lines are kept", file: Array("one\n\nthree\n".utf8), lines: ["one", "", "three"], truncated: false),
        Case(
            name: "more lines than the limit: the last ones",
            file: Array((1...60).map { "line \($0)\n" }.joined().utf8),
            lines: (11...60).map { "line \($0)" },
            truncated: true
        ),
        Case(
            name: "a byte limit drops the oldest lines",
            file: Array("aaaaaaaaaa\nbbbbbbbbbb\ncccccccccc\n".utf8),
            maxBytes: 25,
            lines: ["bbbbbbbbbb", "cccccccccc"],
            truncated: true
        ),
        Case(
            name: "one line over the byte limit keeps its end",
            file: Array(("x" + String(repeating: "y", count: 30) + "END\n").utf8),
            maxBytes: 10,
            lines: [String(repeating: "y", count: 7) + "END"],
            truncated: true
        ),
        Case(
            name: "colours, carriage returns and control characters are removed, tabs kept",
            file: Array("\u{1B}[31mError\u{1B}[0m: boom\r\n\tat x\u{07}\n".utf8),
            lines: ["Error: boom", "\tat x"],
            truncated: false
        ),
        Case(
            name: "invalid UTF-8 becomes a replacement character",
            file: Array("bad ".utf8) + [0xFF, 0xFE] + Array(" bytes\n".utf8),
            lines: ["bad \u{FFFD}\u{FFFD} bytes"],
            truncated: false
        ),
        Case(
            name: "a secret is masked, raw and percent-encoded",
            file: Array("password \(secret) rejected\nGET /login?pw=\(secret)\n".utf8),
            lines: ["password ${DB_PASSWORD} rejected", "GET /login?pw=${DB_PASSWORD}"],
            truncated: false
        ),
        Case(
            name: "a secret split by the window's start leaves no fragment",
            // The window read is the last 8192 + 20 (the secret's length) + 1024 bytes: it starts 10 bytes into the
            // secret, whose partial line is dropped; the long line after it keeps its last 8192 bytes.
            file: Array((String(repeating: "p", count: 100) + secret + "\n" + String(repeating: "a", count: 9224) + "\n").utf8),
            lines: [String(repeating: "a", count: 8192)],
            truncated: true
        ),
        Case(
            name: "a whole secret inside a long first line of the window is masked before the cut",
            file: Array((String(repeating: "p", count: 12_000) + secret + "\nafter\n").utf8),
            lines: ["after"],
            truncated: true
        ),
    ]

    @Test(arguments: cases)
    func aTailOfAFile(_ row: Case) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-tail") { directory in
            let path = directory.appendingPathComponent("app-err.log").path
            try Data(row.file).write(to: URL(fileURLWithPath: path))
            let tail = try #require(LogTailReader.read(path, maxLines: row.maxLines, maxBytes: row.maxBytes, mask: Self.mask))
            #expect(tail.lines == row.lines)
            #expect(tail.truncated == row.truncated)
            #expect(tail.lines.joined().utf8.count <= row.maxBytes)
            #expect(tail.lines.count <= row.maxLines)
            for line in tail.lines {
                #expect(!line.contains(Self.secret))
                // Not even a fragment of the secret long enough to tell (its distinctive middle).
                #expect(!line.contains("0123456789") && !line.contains("abcdef"), "\(line.prefix(60))")
            }
        }
    }

    /// A single line longer than the window whose cut falls inside the secret: the bytes a secret can span at the cut
    /// are dropped after masking, so only its masked form or nothing of it shows.
    @Test func aGiantLineCutInsideASecretShowsNoFragment() async throws {
        // The window is the last 8192 + 20 + 1024 bytes; put the secret across that boundary.
        let window = 8192 + Self.secret.utf8.count + 1024
        let head = String(repeating: "h", count: 100)
        let tailPart = String(repeating: "t", count: window - 10)
        let text = head + Self.secret + tailPart
        try await TestPaths.withTemporaryDirectory("ferry-tail") { directory in
            let path = directory.appendingPathComponent("giant.log").path
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            let tail = try #require(LogTailReader.read(path, mask: Self.mask))
            #expect(tail.truncated)
            #expect(tail.lines.count == 1)
            let line = tail.lines.first ?? ""
            #expect(line.utf8.count <= 8192)
            // The window began 10 bytes before the secret's end ("cdef" and what precedes it): nothing of it survives.
            #expect(!line.contains("cdef"), "\(line.prefix(40))")
            #expect(line.allSatisfy { $0 == "t" }, "\(line.prefix(40))")
        }
    }

    @Test func aMissingFileOrADirectoryHasNoTail() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-tail") { directory in
            #expect(LogTailReader.read(directory.appendingPathComponent("absent.log").path, mask: Self.mask) == nil)
            #expect(LogTailReader.read(directory.path, mask: Self.mask) == nil)
        }
    }
}

/// PM2 keeps only the exit code in its table; the signal that ended a process is in its daemon log.
@Suite("PM2 daemon log: the signal that ended an instance")
struct PM2DaemonLogTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var log: String
        var app = "web"
        var pmId = 0
        var exit: PM2DaemonLog.Exit?

        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "a signal ended it (code null)",
            log: "2026-01-01T00:00:00: PM2 log: App [web:0] exited with code [null] via signal [SIGKILL]\n",
            exit: PM2DaemonLog.Exit(code: nil, signal: "SIGKILL")
        ),
        Case(
            name: "a numeric code: PM2 prints SIGINT whatever happened, so no signal",
            log: "2026-01-01T00:00:00: PM2 log: App [web:0] exited with code [1] via signal [SIGINT]\n",
            exit: PM2DaemonLog.Exit(code: 1, signal: nil)
        ),
        Case(
            name: "the last exit of that instance wins",
            log: """
                PM2 log: App [web:0] exited with code [1] via signal [SIGINT]
                PM2 log: App [web:1] exited with code [null] via signal [SIGTERM]
                PM2 log: App [web:0] exited with code [null] via signal [SIGSEGV]
                PM2 log: App [web-worker:0] exited with code [3] via signal [SIGINT]

                """,
            exit: PM2DaemonLog.Exit(code: nil, signal: "SIGSEGV")
        ),
        Case(
            name: "another instance of the same app",
            log: "PM2 log: App [web:0] exited with code [2] via signal [SIGINT]\nPM2 log: App [web:1] exited with code [null] via signal [SIGTERM]\n",
            pmId: 1,
            exit: PM2DaemonLog.Exit(code: nil, signal: "SIGTERM")
        ),
        // PM2 7.0.3 as it writes it: `code || 0`, and SIGINT for no signal (the lines `kill -9` and a clean exit
        // gave on the real PM2).
        Case(
            name: "PM2 7.0.3: a signal ended it (code 0 and that signal)",
            log: "2026-12-07T08:29:18: PM2 log: App [web:0] exited with code [0] via signal [SIGKILL]\n",
            exit: PM2DaemonLog.Exit(code: nil, signal: "SIGKILL")
        ),
        Case(
            name: "PM2 7.0.3: a clean exit (code 0 and SIGINT, the default it prints)",
            log: "2026-12-07T08:29:19: PM2 log: App [web:0] exited with code [0] via signal [SIGINT]\n",
            exit: PM2DaemonLog.Exit(code: 0, signal: nil)
        ),
        Case(
            name: "PM2 7.0.3: a signal, then a clean exit of the same instance",
            log: "PM2 log: App [web:0] exited with code [0] via signal [SIGTERM]\nPM2 log: App [web:0] exited with code [0] via signal [SIGINT]\n",
            exit: PM2DaemonLog.Exit(code: 0, signal: nil)
        ),
        Case(name: "no line about the instance", log: "PM2 log: App [other:0] exited with code [1] via signal [SIGINT]\n", exit: nil),
        Case(
            name: "a garbled signal is left out",
            log: "PM2 log: App [web:0] exited with code [null] via signal [<script>]\n",
            exit: PM2DaemonLog.Exit(code: nil, signal: nil)
        ),
        Case(name: "an empty log", log: "", exit: nil),
    ]

    @Test(arguments: cases)
    func theLastExitOfAnInstance(_ row: Case) {
        #expect(PM2DaemonLog.lastExit(of: row.app, pmId: row.pmId, in: row.log) == row.exit)
    }
}
