import ArgumentParser
import Foundation
import Shared

/// An operator-facing failure: printed as `Error: <message>` by ArgumentParser, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { self.description = message }
}

/// Reading command-line inputs (files or `-` for stdin) with a size cap.
enum CLIInput {
    static func read(_ path: String, limit: Int) throws -> [UInt8] {
        if path == "-" {
            // Read no more than one byte past the limit: a stream larger than it must not be held whole first.
            let bytes = try SmallFile.read(descriptor: STDIN_FILENO, name: "standard input", limit: limit)
            guard bytes.count <= limit else { throw CLIError("standard input: more than the limit of \(limit) bytes") }
            return bytes
        }
        do throws(SmallFile.ContentsError) {
            return try SmallFile.contents(of: path, limit: limit)
        } catch .tooLarge {
            throw CLIError("\(path): more than the limit of \(limit) bytes")
        } catch {
            throw CLIError("\(path): \(error)")
        }
    }
}

/// Durations given on the command line: `90s`, `10m`, `2h`, `500ms`, and a bare number is seconds, as for `serve`'s
/// timeouts. (PM2's ecosystem options read a bare number as milliseconds; an operator who types `--timeout 3600`
/// means an hour, not 3.6 seconds.)
enum CommandLineDuration {
    /// The duration in milliseconds, or `nil` when `text` is not one (an overflow included).
    static func milliseconds(_ text: String) -> Int64? {
        let isBareNumber = !text.isEmpty && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        return DurationText.milliseconds(isBareNumber ? text + "s" : text)
    }
}

/// Small file-system helpers shared by commands.
enum FileManagerShim {
    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }
}

/// Command output, unbuffered, so result lines and progress lines keep their order in logs. Every line goes through
/// `TerminalText.safe`: much of what the commands print was written by agents (hostnames, messages, failure reasons,
/// log tails), and a control sequence in it must reach the operator's terminal as text, not act on it.
enum Console {
    /// A line on standard output.
    static func print(_ line: String) {
        FileHandle.standardOutput.write(Data((TerminalText.safe(line) + "\n").utf8))
    }

    /// A line on standard error.
    static func error(_ line: String) {
        FileHandle.standardError.write(Data((TerminalText.safe(line) + "\n").utf8))
    }
}
