#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Ferry's one `.env` dialect: `publish --env-file` and the agent's instance env files (`<envDir>/<service>.env`) read
/// the same file the same way. docs/design.md ("The `.env` dialect") is the reference; in short, as docker compose and
/// dotenv write them:
///
/// - UTF-8, an optional byte-order mark, LF or CRLF line endings; blank lines and lines whose first non-blank character
///   is `#` are ignored.
/// - `KEY=VALUE`, optionally prefixed by `export `; blanks around the name and after `=` are ignored. Names are
///   `^[A-Za-z_][A-Za-z0-9_]*$`.
/// - An unquoted value runs to the end of the line, trailing blanks dropped; a `#` preceded by a blank starts a
///   comment (`A=b#c` is `b#c`, `A=b #c` is `b`). Backslashes and `$` are ordinary characters.
/// - `'single'` quotes are literal. `"double"` quotes know `\n`, `\r`, `\t`, `\\`, `\"` and `\$`; any other escape is an
///   error. A quoted value ends on its line; only blanks and a `# comment` may follow it.
/// - No variable expansion. A name set twice is an error naming both lines (a secrets file with two values for one key
///   is a mistake, and which one wins differs between tools).
package enum DotEnvFile {
    /// Limits of one file.
    package struct Configuration: Sendable {
        /// Largest file accepted, in bytes. Default: `Limits.envTotalBytes` (what one env map may hold).
        package var maxBytes: Int
        /// Most variables. Default: `Limits.envEntries`.
        package var maxVariables: Int
        /// Whether `read` refuses everything but a regular file. Default `true`: a daemon must never block on a FIFO.
        /// `false` also reads a pipe to its end (an operator's `--env-file <(sops -d secrets.env)`); a directory is
        /// refused either way.
        package var regularFilesOnly: Bool

        package init(maxBytes: Int = Limits.envTotalBytes, maxVariables: Int = Limits.envEntries, regularFilesOnly: Bool = true) {
            self.maxBytes = maxBytes
            self.maxVariables = maxVariables
            self.regularFilesOnly = regularFilesOnly
        }
    }

    /// Parses the bytes of a `.env` file. `path` only names the file in errors.
    ///
    /// Throws at the first bad line, with its number; the message never quotes a value.
    package static func parse(
        _ bytes: [UInt8],
        path: String,
        configuration: Configuration = Configuration()
    ) throws(DotEnvFileError) -> [String: String] {
        var values: [String: String] = [:]
        var lineOfName: [String: Int] = [:]
        try forEachLine(of: bytes) { (number, line) throws(DotEnvFileError) in
            do throws(DotEnvFileError.Problem) {
                if let parsed = try assignment(in: line) {
                    if let first = lineOfName[parsed.name] {
                        throw DotEnvFileError.Problem.duplicate(name: parsed.name, firstLine: first)
                    }
                    guard values.count < configuration.maxVariables else {
                        throw DotEnvFileError.Problem.tooManyVariables(limit: configuration.maxVariables)
                    }
                    // `NAME=value` and its NUL, as `execve` counts it.
                    let bytes = parsed.name.utf8.count + parsed.value.utf8.count + 2
                    guard bytes <= Limits.execStringBytes else {
                        throw DotEnvFileError.Problem.valueTooLong(name: parsed.name, bytes: bytes)
                    }
                    values[parsed.name] = parsed.value
                    lineOfName[parsed.name] = number
                }
            } catch {
                throw DotEnvFileError(path: path, line: number, problem: error)
            }
            return true
        }
        return values
    }

    /// Gives `body` each line of `bytes` with its number (from 1), a leading byte-order mark and the CR of a CRLF left
    /// out, until it returns `false`.
    private static func forEachLine<Failure: Error>(
        of bytes: [UInt8],
        _ body: (_ number: Int, _ line: ArraySlice<UInt8>) throws(Failure) -> Bool
    ) throws(Failure) {
        var start = bytes.starts(with: byteOrderMark) ? byteOrderMark.count : 0
        var number = 0
        while start <= bytes.count {
            number += 1
            let end = bytes[start...].firstIndex(of: lineFeed) ?? bytes.count
            var line = bytes[start..<end]
            if line.last == carriageReturn { line = line.dropLast() }
            start = end + 1
            guard try body(number, line) else { return }
        }
    }

    /// What a file that does not parse may still hold, for the secrets mask only: every line that sets something gives
    /// its value as `parse` reads it when the line is good, and otherwise the text after its first `=`, blanks around
    /// it dropped, and a quote that opens it (with the same quote closing it) too. An operator's edit that broke one
    /// line leaves the apps running with the values they were started with, and an agent started then still masks them.
    /// Keyed by the name a line sets, `NAME@LINE` when that is taken or the line is bad. Never throws; values shorter
    /// than the mask looks for are kept too (it skips them). At most `limit` values (the first lines'): every value
    /// is looked for in every line the agent logs.
    package static func salvage(_ bytes: [UInt8], limit: Int = Limits.envEntries) -> [String: String] {
        var values: [String: String] = [:]
        guard limit > 0 else { return values }
        forEachLine(of: bytes) { number, line in
            do throws(DotEnvFileError.Problem) {
                if let parsed = try assignment(in: line), !parsed.value.isEmpty {
                    values[values[parsed.name] == nil ? parsed.name : "\(parsed.name)@\(number)"] = parsed.value
                }
                return values.count < limit
            } catch {
                // A bad line: its value's text, below.
            }
            guard let equalsIndex = line.firstIndex(of: equals) else { return true }
            var name = line[line.startIndex..<equalsIndex].drop { isBlank($0) }
            if name.starts(with: export), name.count > export.count, isBlank(name[name.startIndex + export.count]) {
                name = name.dropFirst(export.count).drop { isBlank($0) }
            }
            var value = line[(equalsIndex + 1)...].drop { isBlank($0) }
            while let last = value.last, isBlank(last) { value = value.dropLast() }
            if let first = value.first, first == singleQuote || first == doubleQuote || first == UInt8(ascii: "`") {
                value = value.dropFirst()
                if value.last == first { value = value.dropLast() }
            }
            guard !value.isEmpty else { return true }
            while let last = name.last, isBlank(last) { name = name.dropLast() }
            values["\(String(decoding: name, as: UTF8.self))@\(number)"] = String(decoding: value, as: UTF8.self)
            return values.count < limit
        }
        return values
    }

    /// Reads the file at `path`: `nil` when there is none (the caller decides whether that is an error), its bytes
    /// otherwise. Refuses what is not a regular file (without blocking on a FIFO; see
    /// `Configuration.regularFilesOnly`) and files over `configuration.maxBytes`, reading at most one byte more than
    /// that.
    package static func read(path: String, configuration: Configuration = Configuration()) throws(DotEnvFileError) -> [UInt8]? {
        func failure(_ problem: DotEnvFileError.Problem) -> DotEnvFileError { DotEnvFileError(path: path, line: nil, problem: problem) }
        let fd = open(path, O_RDONLY | O_CLOEXEC | (configuration.regularFilesOnly ? O_NONBLOCK : 0))
        guard fd >= 0 else {
            let code = errno
            // A missing file, or a missing directory on its path (or a file where a directory should be): no file.
            if code == ENOENT || code == ENOTDIR { return nil }
            throw failure(.unreadable(reason: String(cString: strerror(code))))
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw failure(.unreadable(reason: String(cString: strerror(errno)))) }
        let type = status.st_mode & S_IFMT
        guard type == S_IFREG || (!configuration.regularFilesOnly && type != S_IFDIR) else { throw failure(.notARegularFile) }
        let limit = min(max(0, configuration.maxBytes), Int.max - 1)
        let bytes: [UInt8]
        do throws(SmallFile.Failure) {
            bytes = try SmallFile.read(descriptor: fd, name: path, limit: limit)
        } catch {
            throw failure(.unreadable(reason: String(cString: strerror(error.errno))))
        }
        guard bytes.count <= limit else { throw failure(.tooLarge(limit: limit)) }
        return bytes
    }

    // MARK: - One line

    private static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]
    private static let lineFeed = UInt8(ascii: "\n")
    private static let carriageReturn = UInt8(ascii: "\r")
    private static let hash = UInt8(ascii: "#")
    private static let equals = UInt8(ascii: "=")
    private static let singleQuote = UInt8(ascii: "'")
    private static let doubleQuote = UInt8(ascii: "\"")
    private static let backslash = UInt8(ascii: "\\")
    private static let export = Array("export".utf8)

    private static func isBlank(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }

    /// The name and value a line sets, `nil` for a blank or comment line. Works on bytes: every character the syntax
    /// uses is ASCII, and no byte of a multi-byte UTF-8 sequence is, so cutting at them keeps the pieces valid UTF-8.
    private static func assignment(in line: ArraySlice<UInt8>) throws(DotEnvFileError.Problem) -> (name: String, value: String)? {
        guard !line.contains(0) else { throw .nulByte }
        guard !line.contains(carriageReturn) else { throw .carriageReturnInsideLine }
        guard String(validating: line, as: UTF8.self) != nil else { throw .notUTF8 }
        let end = line.endIndex
        var index = line.startIndex
        func skipBlanks() { while index < end, isBlank(line[index]) { index += 1 } }

        skipBlanks()
        if index == end || line[index] == hash { return nil }
        if line[index...].starts(with: export), index + export.count < end, isBlank(line[index + export.count]) {
            index += export.count
            skipBlanks()
        }
        guard let equalsIndex = line[index...].firstIndex(of: equals) else { throw .expectedAssignment }
        var nameEnd = equalsIndex
        while nameEnd > index, isBlank(line[nameEnd - 1]) { nameEnd -= 1 }
        let name = String(decoding: line[index..<nameEnd], as: UTF8.self)
        guard Field.isEnvironmentName(name) else {
            throw DotEnvFileError.Problem.badName(name, column: String(decoding: line[line.startIndex..<index], as: UTF8.self).count + 1)
        }

        index = equalsIndex + 1
        skipBlanks()
        // A value that opens and closes with backticks is quoted to Node's `dotenv`; read here it kept them. One that
        // opens with a backtick and never closes it is text to both (a generated password may start with one).
        let backtick = UInt8(ascii: "`")
        if index < end, line[index] == backtick, line[(index + 1)..<end].contains(backtick) { throw .backtickQuote }
        guard index < end, line[index] == singleQuote || line[index] == doubleQuote else {
            // Unquoted: to the end of the line or to a `#` that follows a blank, trailing blanks dropped.
            var valueEnd = end
            var scan = index
            while scan < end {
                if line[scan] == hash, isBlank(line[scan - 1]) {
                    valueEnd = scan
                    break
                }
                scan += 1
            }
            while valueEnd > index, isBlank(line[valueEnd - 1]) { valueEnd -= 1 }
            return (name, String(decoding: line[index..<valueEnd], as: UTF8.self))
        }

        let quote = line[index]
        index += 1
        var value: [UInt8] = []
        var closed = false
        while index < end {
            let byte = line[index]
            if byte == quote {
                closed = true
                index += 1
                break
            }
            if quote == doubleQuote, byte == backslash {
                guard index + 1 < end else { break }
                switch line[index + 1] {
                case UInt8(ascii: "n"): value.append(lineFeed)
                case UInt8(ascii: "r"): value.append(carriageReturn)
                case UInt8(ascii: "t"): value.append(UInt8(ascii: "\t"))
                case backslash, doubleQuote, UInt8(ascii: "$"): value.append(line[index + 1])
                default:
                    throw .unknownEscape(column: String(decoding: line[line.startIndex..<index], as: UTF8.self).count + 1)
                }
                index += 2
                continue
            }
            value.append(byte)
            index += 1
        }
        guard closed else { throw .unterminatedQuote(Character(Unicode.Scalar(quote))) }
        skipBlanks()
        guard index == end || line[index] == hash else { throw .textAfterClosingQuote }
        return (name, String(decoding: value, as: UTF8.self))
    }
}
