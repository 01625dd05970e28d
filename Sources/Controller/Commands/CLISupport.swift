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
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard FileManager.default.fileExists(atPath: path) else { throw CLIError("\(path): no such file") }
            guard let contents = FileManager.default.contents(atPath: path) else { throw CLIError("\(path): cannot read file") }
            data = contents
        }
        guard data.count <= limit else { throw CLIError("\(path): \(data.count) bytes is over the limit of \(limit)") }
        return Array(data)
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
