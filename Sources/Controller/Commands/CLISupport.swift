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

/// Command output on standard output, unbuffered, so result lines and progress lines keep their order in logs.
enum Console {
    static func print(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
