/// Why a `.env` file was refused: the file, the line (1-based; `nil` for the file as a whole) and the problem.
///
/// No message quotes a value: the agent's env files hold the instance's secrets, and these errors reach its logs.
/// An invalid name is quoted (it is the text before `=`, clipped), an escape is located by its column.
package struct DotEnvFileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What was wrong.
    package enum Problem: Error, Equatable, Sendable, CustomStringConvertible {
        /// There is no file at the path (only an error where the file is required, as for `publish --env-file`).
        case missing
        /// The file exists but cannot be read (`reason` is the system's).
        case unreadable(reason: String)
        /// The path is a directory, a FIFO, a device...
        case notARegularFile
        /// The file is larger than the reader accepts.
        case tooLarge(limit: Int)
        /// The line is not valid UTF-8.
        case notUTF8
        /// The line holds a NUL byte (no environment variable can carry one).
        case nulByte
        /// A carriage return that does not end the line (old Mac line endings, or a stray `\r`).
        case carriageReturnInsideLine
        /// Neither blank, nor a comment, nor `KEY=VALUE`.
        case expectedAssignment
        /// The text before `=` is not `^[A-Za-z_][A-Za-z0-9_]*$`: the first character that is not allowed, and its
        /// column (in characters); `nil` when there is no name at all. Never the text, which may hold a value.
        case invalidName(column: Int, character: Unicode.Scalar?)
        /// A name of more than `limit` bytes.
        case nameTooLong(limit: Int)
        /// A value opened with `quote` that does not close on the same line.
        case unterminatedQuote(Character)
        /// Something other than blanks or a `# comment` after a quoted value's closing quote.
        case textAfterClosingQuote
        /// A value in backticks (one opens it and another follows on the line): Node's `dotenv` reads them as quotes,
        /// this format would keep them as text.
        case backtickQuote
        /// A backslash in a double-quoted value not followed by `n`, `r`, `t`, `\`, `"` or `$`.
        case unknownEscape(column: Int)
        /// The name was already set on `firstLine`.
        case duplicate(name: String, firstLine: Int)
        /// More variables than one env map may hold.
        case tooManyVariables(limit: Int)
        /// `name=value` is `bytes` long (with its NUL), more than Linux passes a process (`Limits.execStringBytes`).
        case valueTooLong(name: String, bytes: Int)

        package var description: String {
            switch self {
            case .missing: "no such file"
            case .unreadable(let reason): "cannot read the file: \(reason)"
            case .notARegularFile: "not a regular file"
            case .tooLarge(let limit): "file is larger than \(limit) bytes"
            case .notUTF8: "not valid UTF-8 (save the file as UTF-8)"
            case .nulByte: "contains a NUL byte"
            case .carriageReturnInsideLine: "carriage return inside the line (use LF or CRLF line endings)"
            case .expectedAssignment: "expected KEY=VALUE"
            case .nameTooLong(let limit): "the variable name is longer than \(limit) bytes"
            case .invalidName(_, nil): "no variable name before = (a name is letters, digits and _, not starting with a digit)"
            case .invalidName(let column, let character?):
                "the variable name has \(Self.shown(character)) at column \(column) (a name is letters, digits and _, not starting with a digit)"
            case .unterminatedQuote(let quote):
                "unterminated quote (\(quote) opens the value but does not close it on this line; write a line break as \\n inside double quotes)"
            case .textAfterClosingQuote: "text after the closing quote (only blanks and a # comment may follow it)"
            case .backtickQuote:
                "a value in backticks (they are not quotes here, and would be kept in the value; use '…' or \"…\", or no quotes)"
            case .unknownEscape(let column):
                "unknown escape at column \(column) (inside double quotes \\n, \\r, \\t, \\\\, \\\" and \\$ are escapes; write \\\\ for a backslash, or use single quotes)"
            case .duplicate(let name, let firstLine): "\(name) is set twice (first on line \(firstLine))"
            case .tooManyVariables(let limit): "more than \(limit) variables"
            case .valueTooLong(let name, let bytes):
                "\(name) is \(bytes) bytes with its value, more than the \(Limits.execStringBytes) Linux passes a process for one variable "
                    + "(MAX_ARG_STRLEN; the app could never start): put the value in a file and set \(name) to its path"
            }
        }

        /// What is wrong with `name` (which `Field.isEnvironmentName` refused), starting at `column`: where the name goes
        /// wrong, never the text itself. Before a stray `=` there may be a value (`JWT_SECRET: c2VjcmV0==` is a YAML
        /// line with a base64 secret in it; `--env "$SECRET"` may be the secret alone).
        package static func badName(_ name: String, column: Int) -> Problem {
            let offender = name.unicodeScalars.enumerated().first { offset, scalar in
                !(scalar.isASCII && (scalar == "_" || scalar.properties.isAlphabetic || (offset > 0 && ("0"..."9").contains(scalar))))
            }
            if !name.isEmpty && offender == nil { return .nameTooLong(limit: Limits.envKeyLength) }
            return .invalidName(column: column + (offender?.offset ?? 0), character: offender?.element)
        }

        /// A character that is not allowed in a name: itself when it is visible ASCII or a blank, else its code point.
        private static func shown(_ character: Unicode.Scalar) -> String {
            switch character {
            case " ": "a blank"
            case "\t": "a tab"
            case "!"..."~": "\"\(character)\""
            default:
                {
                    let hex = String(character.value, radix: 16, uppercase: true)
                    return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
                }()
            }
        }
    }

    /// The file, as the caller named it.
    package var path: String
    /// 1-based; `nil` when the problem is the file as a whole.
    package var line: Int?
    package var problem: Problem

    package init(path: String, line: Int?, problem: Problem) {
        self.path = path
        self.line = line
        self.problem = problem
    }

    /// `path:line: problem`, or `path: problem` for the file as a whole.
    package var description: String {
        if let line { return "\(path):\(line): \(problem)" }
        return "\(path): \(problem)"
    }
}
