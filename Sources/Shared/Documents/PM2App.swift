/// One PM2 app of a release, in PM2's own ecosystem vocabulary (`exec_mode`, `max_memory_restart`, ...).
///
/// Known options are validated and kept exactly as given (PM2 accepts several types for some of them, so the
/// signed document keeps the operator's form); typed accessors read them for the process managers.
package struct PM2App: Sendable, Equatable {
    package var name: String
    /// Path of the entry point, relative to the release root.
    package var script: String
    /// Every other option, validated against `PM2App.options`.
    package var options: [String: JSONValue]

    package init(name: String, script: String, options: [String: JSONValue] = [:]) {
        self.name = name
        self.script = script
        self.options = options
    }

    /// The kinds of values PM2 options take.
    package enum OptionKind: Sendable {
        case string
        case bool
        case integer(ClosedRange<Int64>)
        /// A string, or a list of strings (`args`, `node_args`).
        case stringOrList
        /// A number, `"max"`, or a negative number meaning "CPUs minus n".
        case instances
        /// `fork`, `cluster`, `fork_mode` or `cluster_mode`.
        case execMode
        case environment
        /// Bytes as a number, or a string like `300M`, `1G`, `512K`.
        case memory
        /// Milliseconds as a number, or a string like `1s`, `500ms`, `2m`.
        case duration
        case integerList
    }

    /// The PM2 options a release may carry (PM2's names). Anything else is refused as unknown.
    package static let options: [String: OptionKind] = [
        "args": .stringOrList,
        "interpreter": .string,
        "interpreter_args": .stringOrList,
        "node_args": .stringOrList,
        "instances": .instances,
        "exec_mode": .execMode,
        "env": .environment,
        "max_memory_restart": .memory,
        "autorestart": .bool,
        "max_restarts": .integer(0...1_000_000),
        "min_uptime": .duration,
        "restart_delay": .integer(0...86_400_000),
        "exp_backoff_restart_delay": .integer(0...86_400_000),
        "kill_timeout": .integer(0...3_600_000),
        "listen_timeout": .integer(0...3_600_000),
        "wait_ready": .bool,
        "shutdown_with_message": .bool,
        "cron_restart": .string,
        "merge_logs": .bool,
        "time": .bool,
        "log_date_format": .string,
        "log_type": .string,
        "source_map_support": .bool,
        "instance_var": .string,
        "increment_var": .string,
        "watch": .bool,
        "stop_exit_codes": .integerList,
        "treekill": .bool,
        "vizion": .bool,
        "automation": .bool,
        "pmx": .bool,
        "force": .bool,
        "filter_env": .stringOrList,
        "disable_trace": .bool,
    ]

    /// Options Ferry sets itself on the instance; an operator giving one is an error that says so.
    package static let ferryOwned: Set<String> = [
        "cwd", "namespace", "out_file", "error_file", "err_file", "log_file", "log", "output", "error", "pid_file", "pid",
    ]

    init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        let name = try reader.required("name", Field.string(maxLength: 64))
        guard Self.isValidName(name) else {
            throw .invalidValue(field: reader.path(of: "name"), reason: "\"\(name)\" must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
        }
        self.name = name
        self.script = try reader.required("script") { (value, path) throws(DocumentError) in
            try Self.relativePath(value, path)
        }
        var options: [String: JSONValue] = [:]
        for key in reader.fields.keys.sorted() where key != "name" && key != "script" {
            let fieldPath = reader.path(of: key)
            if Self.ferryOwned.contains(key) { throw .ownedByFerry(field: fieldPath) }
            if key.hasPrefix("env_") {
                throw .invalidValue(
                    field: fieldPath,
                    reason: "env_<name> blocks are merged at publish time (publish --env-name <name>); a release carries the merged env only"
                )
            }
            guard let kind = Self.options[key] else { throw .unknownField(fieldPath) }
            let value = reader.fields[key]!
            reader.consume(key)
            if value == .null { continue }
            try Self.validate(value, as: kind, path: fieldPath)
            options[key] = value
        }
        try reader.rejectUnknownFields()
        if let interpreter = options["interpreter"], case .string(let text) = interpreter {
            guard !text.split(separator: "/").contains("..") else {
                throw .invalidValue(field: reader.path(of: "interpreter"), reason: "must not contain ..")
            }
        }
        self.options = options
    }

    /// Whether `name` is a valid app name.
    package static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        func alnum(_ c: UInt8) -> Bool {
            (0x61...0x7a).contains(c) || (0x41...0x5a).contains(c) || (0x30...0x39).contains(c)
        }
        guard let first = bytes.first, alnum(first), bytes.count <= 64 else { return false }
        return bytes.dropFirst().allSatisfy { alnum($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }
    }

    /// A path relative to the release root, without `..` components.
    package static func relativePath(_ value: JSONValue, _ path: String) throws(DocumentError) -> String {
        let text = try Field.string(maxLength: Limits.pathLength)(value, path)
        guard !text.isEmpty else { throw .invalidValue(field: path, reason: "must not be empty") }
        guard !text.hasPrefix("/") else {
            throw .invalidValue(field: path, reason: "must be relative to the release root, not absolute")
        }
        guard !text.split(separator: "/", omittingEmptySubsequences: false).contains("..") else {
            throw .invalidValue(field: path, reason: "must not contain .. (it would leave the release tree)")
        }
        return text
    }

    static func validate(_ value: JSONValue, as kind: OptionKind, path: String) throws(DocumentError) {
        switch kind {
        case .string:
            _ = try Field.string(maxLength: Limits.shortString)(value, path)
        case .bool:
            _ = try Field.bool(value, path)
        case .integer(let range):
            _ = try Field.integer(in: range)(value, path)
        case .stringOrList:
            if case .array(let items) = value {
                guard items.count <= Limits.listItems else { throw .tooMany(field: path, limit: Limits.listItems, actual: items.count) }
                for (index, item) in items.enumerated() {
                    _ = try Field.string(maxLength: Limits.pathLength)(item, "\(path)[\(index)]")
                }
            } else {
                guard case .string(let text) = value else {
                    throw .wrongType(field: path, expected: "string or array of strings", got: value.typeName)
                }
                guard text.utf8.count <= Limits.pathLength * 4 else {
                    throw .tooLarge(field: path, limit: Limits.pathLength * 4, actual: text.utf8.count)
                }
            }
        case .instances:
            switch value {
            case .string(let text):
                guard text == "max" else { throw .invalidValue(field: path, reason: "must be a number or \"max\"") }
            case .integer, .number:
                _ = try Field.integer(in: -1024...1024)(value, path)
            default:
                throw .wrongType(field: path, expected: "number or \"max\"", got: value.typeName)
            }
        case .execMode:
            let text = try Field.string(maxLength: 32)(value, path)
            guard ExecMode(pm2Value: text) != nil else {
                throw .invalidValue(field: path, reason: "must be fork, cluster, fork_mode or cluster_mode")
            }
        case .environment:
            _ = try Field.environment(value, path)
        case .memory:
            switch value {
            case .integer, .number:
                _ = try Field.integer(in: 1...ByteSize.maximum)(value, path)
            case .string(let text):
                _ = try ByteSize.bytes(text, field: path)
            default:
                throw .wrongType(field: path, expected: "number or string like 300M", got: value.typeName)
            }
        case .duration:
            switch value {
            case .integer, .number:
                _ = try Field.integer(in: 0...DurationText.maximumMilliseconds)(value, path)
            case .string(let text):
                _ = try DurationText.milliseconds(text, field: path)
            default:
                throw .wrongType(field: path, expected: "number or string like 1s", got: value.typeName)
            }
        case .integerList:
            guard case .array(let items) = value else { throw .wrongType(field: path, expected: "array of integers", got: value.typeName) }
            guard items.count <= Limits.listItems else { throw .tooMany(field: path, limit: Limits.listItems, actual: items.count) }
            for (index, item) in items.enumerated() { _ = try Field.integer(in: 0...255)(item, "\(path)[\(index)]") }
        }
    }

    /// The app as a JSON object.
    package var json: JSONValue {
        var fields = options
        fields["name"] = .string(name)
        fields["script"] = .string(script)
        return .object(fields)
    }
}

/// PM2's two execution modes.
package enum ExecMode: String, Sendable, Equatable, Codable {
    case fork
    case cluster

    /// Reads `fork`, `cluster`, `fork_mode`, `cluster_mode`.
    package init?(pm2Value: String) {
        switch pm2Value {
        case "fork", "fork_mode": self = .fork
        case "cluster", "cluster_mode": self = .cluster
        default: return nil
        }
    }

    /// The form `pm2 jlist` prints (`fork_mode`, `cluster_mode`).
    package var pm2Name: String { "\(rawValue)_mode" }
}

/// Byte sizes written like PM2's `max_memory_restart` (`300M`, `1G`, `512K`, `1048576`).
package enum ByteSize {
    /// The largest size a release may give: 1 PiB.
    package static let maximum: Int64 = 1 << 50

    /// Bytes for `text`, or `nil` when it is not a size or does not fit in `Int64`.
    package static func parse(_ text: String) -> Int64? {
        guard case .value(let bytes) = read(text) else { return nil }
        return bytes
    }

    /// Bytes for `text` of the document field `field`, at most `maximum`. Throws `DocumentError.invalidValue` naming the
    /// field when `text` is not a size or is too large (an overflow included), never traps.
    package static func bytes(_ text: String, field: String, maximum: Int64 = ByteSize.maximum) throws(DocumentError) -> Int64 {
        switch read(text) {
        case .value(let bytes) where bytes <= maximum:
            return bytes
        case .value, .tooLarge:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) is too large: at most \(maximum) bytes")
        case .invalid:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) must be a number of bytes or like 300M, 1G, 512K")
        }
    }

    private static func read(_ text: String) -> CheckedNumber.Reading {
        guard let last = text.utf8.last else { return .invalid }
        let multiplier: Int64
        switch last {
        case UInt8(ascii: "K"), UInt8(ascii: "k"): multiplier = 1 << 10
        case UInt8(ascii: "M"), UInt8(ascii: "m"): multiplier = 1 << 20
        case UInt8(ascii: "G"), UInt8(ascii: "g"): multiplier = 1 << 30
        default: multiplier = 1
        }
        let digits = multiplier == 1 ? Substring(text) : Substring(text).dropLast()
        switch CheckedNumber.read(digits, multipliedBy: multiplier) {
        case .value(0): return .invalid
        case let reading: return reading
        }
    }
}

/// Durations written like PM2's `min_uptime` (`1000`, `500ms`, `1s`, `2m`, `1h`).
package enum DurationText {
    /// The longest duration a release may give: 24 hours, in milliseconds.
    package static let maximumMilliseconds: Int64 = 86_400_000

    /// Milliseconds for `text`, or `nil` when it is not a duration or does not fit in `Int64`.
    package static func milliseconds(_ text: String) -> Int64? {
        guard case .value(let milliseconds) = read(text) else { return nil }
        return milliseconds
    }

    /// Milliseconds for `text` of the document field `field`, at most `maximum`. Throws `DocumentError.invalidValue`
    /// naming the field when `text` is not a duration or is too long (an overflow included), never traps.
    package static func milliseconds(
        _ text: String,
        field: String,
        maximum: Int64 = DurationText.maximumMilliseconds
    ) throws(DocumentError) -> Int64 {
        switch read(text) {
        case .value(let milliseconds) where milliseconds <= maximum:
            return milliseconds
        case .value, .tooLarge:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) is too long: at most \(maximum) ms")
        case .invalid:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) must be milliseconds or like 500ms, 1s, 2m, 1h")
        }
    }

    private static func read(_ text: String) -> CheckedNumber.Reading {
        let suffixes: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (suffix, factor) in suffixes where text.hasSuffix(suffix) {
            return CheckedNumber.read(Substring(text).dropLast(suffix.count), multipliedBy: factor)
        }
        return CheckedNumber.read(Substring(text), multipliedBy: 1)
    }
}

/// Decimal digits times a unit, with every step checked: an overflow is a result, not a trap.
private enum CheckedNumber {
    enum Reading: Equatable {
        /// The value (bytes or milliseconds).
        case value(Int64)
        /// Well-formed but over `Int64.max`.
        case tooLarge
        /// Not ASCII digits (a sign, a space, a fraction, nothing).
        case invalid
    }

    static func read(_ digits: Substring, multipliedBy unit: Int64) -> Reading {
        guard !digits.isEmpty else { return .invalid }
        var value: Int64 = 0
        var overflowed = false
        for byte in digits.utf8 {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return .invalid }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = shifted.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            if overflow1 || overflow2 { overflowed = true } else { value = next }
        }
        if overflowed { return .tooLarge }
        let (result, overflow) = value.multipliedReportingOverflow(by: unit)
        return overflow ? .tooLarge : .value(result)
    }

    /// `text` quoted for an error message, cut when it is long.
    static func shown(_ text: String) -> String {
        text.count > 40 ? String(text.prefix(40)).debugDescription + "…" : text.debugDescription
    }
}
