import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The instance's own secrets for a service: `<envDir>/<service>.env`, `KEY=VALUE` lines.
///
/// These values never leave the host: they are merged into the apps' environment last (they win over the release)
/// and are never reported. `#` comments, blank lines, an optional `export ` prefix and single or double quotes around
/// the value are accepted; anything else is an error naming the line.
struct InstanceEnvFile: Sendable, Equatable {
    var values: [String: String]
    /// SHA-256 of the file's bytes (empty file when absent), to notice changes without keeping the values around.
    var digest: String

    /// Why an env file was refused.
    struct ParseError: Error, Equatable, CustomStringConvertible {
        var path: String
        var line: Int
        var reason: String
        var description: String { "\(path):\(line): \(reason)" }
    }

    /// Reads the env file of `service` in `directory`; an absent file is an empty environment.
    static func load(service: String, directory: String) throws -> InstanceEnvFile {
        let path = "\(directory)/\(service).env"
        guard let data = FileManager.default.contents(atPath: path) else {
            // Present but unreadable is not "no secrets": reading it as empty would reload the apps without them.
            if FileManager.default.fileExists(atPath: path) { throw ParseError(path: path, line: 0, reason: "cannot read the file") }
            return InstanceEnvFile(values: [:], digest: SHA256.hash([UInt8]()).hex)
        }
        guard data.count <= Limits.envTotalBytes else {
            throw ParseError(path: path, line: 0, reason: "file is larger than \(Limits.envTotalBytes) bytes")
        }
        return InstanceEnvFile(values: try parse(String(decoding: data, as: UTF8.self), path: path), digest: SHA256.hash(data).hex)
    }

    static func parse(_ text: String, path: String) throws(ParseError) -> [String: String] {
        var values: [String: String] = [:]
        // "\r\n" is one Character in Swift: splitting on "\n" alone would leave a CRLF file as a single line.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, raw) in lines.enumerated() {
            var line = Substring(raw)
            if line.hasSuffix("\r") { line = line.dropLast() }
            line = line.drop(while: { $0 == " " || $0 == "\t" })
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = line.dropFirst("export ".count).drop(while: { $0 == " " }) }
            guard let equals = line.firstIndex(of: "=") else {
                throw ParseError(path: path, line: index + 1, reason: "expected KEY=VALUE")
            }
            let key = String(line[..<equals])
            guard Field.isEnvironmentName(key) else {
                throw ParseError(path: path, line: index + 1, reason: "\"\(key)\" is not a valid variable name")
            }
            var value = line[line.index(after: equals)...]
            if let quote = value.first, quote == "\"" || quote == "'" {
                guard value.count >= 2, value.last == quote else {
                    throw ParseError(path: path, line: index + 1, reason: "unterminated quote")
                }
                value = value.dropFirst().dropLast()
            }
            guard values[key] == nil else { throw ParseError(path: path, line: index + 1, reason: "\(key) is set twice") }
            values[key] = String(value)
        }
        guard values.count <= Limits.envEntries else {
            throw ParseError(path: path, line: 0, reason: "more than \(Limits.envEntries) variables")
        }
        return values
    }
}
