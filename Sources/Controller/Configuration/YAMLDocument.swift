import Shared
import Yams

/// YAML read into Ferry's `JSONValue`, so YAML files get the same strict field checks as JSON ones.
enum YAMLDocument {
    /// The rules that give an unquoted scalar its type.
    enum Schema: Sendable, Equatable {
        /// YAML 1.1 as Yams reads it: `yes`/`no`/`on`/`off` in any case are booleans, `017` is octal, `1:30` is base 60
        /// (90). Ferry's own configuration (`serve --config`) has always been read so.
        case yaml11
        /// js-yaml 4.1.0's default schema, which PM2 7 reads `ecosystem.yml` with (`Common.parseConfig`): the YAML 1.2
        /// core schema (booleans only `true`/`false` in lower, title or upper case; `0644` decimal, `0o644` octal; no
        /// base 60) plus timestamps and `<<` merge keys. Read so, `NO`, `on`, `0644` and `9:30` reach an app as PM2 gives
        /// them (`NO`, `on`, `644`, `9:30`), not as `false`, `true`, `420` and `570`.
        case jsYAML(dates: DateText)
    }

    /// How a js-yaml timestamp, which is a JavaScript `Date`, is written into the document.
    enum DateText: Sendable, Equatable {
        /// `toISOString()` (`2001-12-14T00:00:00.000Z`): what a Date becomes in JSON, as PM2 sends an app to its daemon.
        case iso
        /// `JSON.stringify(date)`: that text in double quotes, what PM2 makes of a Date in an app's `env`.
        case json
    }

    /// Parses YAML text (one document). Mapping keys must be strings; aliases and custom tags are refused.
    ///
    /// With `.jsYAML`, a number that is not finite (`.inf`, `.nan`, `1e400`) is refused as well: PM2 would hand it to
    /// its daemon as JSON `null`, and an app in fork mode would get no such variable.
    static func parse(_ text: String, source: String, schema: Schema = .yaml11) throws(ConfigurationError) -> JSONValue {
        let resolver: Resolver =
            switch schema {
            case .yaml11: .default
            case .jsYAML: JSYAML.resolver
            }
        let node: Node?
        do {
            node = try Yams.compose(yaml: text, resolver)
        } catch {
            throw .unreadable(path: source, reason: "not valid YAML: \(error)")
        }
        guard let node else { return .null }
        var budget = maximumValues
        return try convert(node, path: "", source: source, schema: schema, depth: 0, budget: &budget)
    }

    /// The most values a document may hold once its aliases are expanded: an alias is the anchored node itself, so a
    /// file of a few hundred bytes, each list repeating the one before ten times ("billion laughs"), held 10⁹ of them,
    /// every one converted (twice: the ecosystem reader compares two readings).
    static let maximumValues = 1_000_000
    /// The deepest nesting converted (each level is a call).
    static let maximumDepth = 200

    /// A scalar Yams tags as an integer, read as Yams reads it (YAML 1.1: `_` separators, a sign, `0x`, `0b`, `0o` and
    /// `0` prefixes, base 60 as in `1:30`), with checked arithmetic: Yams' own conversion traps on a base-60 value past
    /// `Int64` (`pollSeconds: 1:0:0:0:0:0:0:0:0:0:0` crashed `serve`, and an `ecosystem.yml` `publish`). `nil` when it
    /// does not fit.
    static func integer(_ text: String) -> Int64? {
        let plain = text.replacingOccurrences(of: "_", with: "")
        if plain == "0" { return 0 }
        let negative = plain.hasPrefix("-")
        let digits = plain.dropFirst(negative || plain.hasPrefix("+") ? 1 : 0)
        for (prefix, radix) in [("0x", 16), ("0b", 2), ("0o", 8), ("0", 8)] where digits.hasPrefix(prefix) {
            return Int64((negative ? "-" : "") + digits.dropFirst(prefix.count), radix: radix)
        }
        guard digits.contains(":") else { return Int64(plain) }
        var value: Int64 = 0
        for part in digits.split(separator: ":", omittingEmptySubsequences: false) {
            guard let digit = Int64(part), digit >= 0 else { return nil }
            let (shifted, shiftOverflow) = value.multipliedReportingOverflow(by: 60)
            let (sum, sumOverflow) = shifted.addingReportingOverflow(digit)
            guard !shiftOverflow, !sumOverflow else { return nil }
            value = sum
        }
        return negative ? -value : value
    }

    private static func convert(
        _ node: Node,
        path: String,
        source: String,
        schema: Schema,
        depth: Int,
        budget: inout Int
    ) throws(ConfigurationError) -> JSONValue {
        let here = path.isEmpty ? "document" : path
        budget -= 1
        guard budget >= 0 else {
            throw .invalid(
                path: source,
                field: here,
                reason: "more than \(maximumValues) values once its aliases are expanded (aliases of aliases multiply)"
            )
        }
        guard depth <= maximumDepth else { throw .invalid(path: source, field: here, reason: "nested deeper than \(maximumDepth) levels") }
        switch node {
        case .scalar(let scalar):
            if case .jsYAML(let dates) = schema {
                let tag = Tag.Name(rawValue: node.tag.description)
                return try javaScriptValue(scalar.string, tag: tag, dates: dates, field: here, source: source)
            }
            switch Tag.Name(rawValue: node.tag.description) {
            case .null: return .null
            case .bool:
                guard let value = node.bool else { throw .invalid(path: source, field: here, reason: "not a boolean") }
                return .bool(value)
            case .int:
                guard let value = integer(scalar.string) else { throw .invalid(path: source, field: here, reason: "integer out of range") }
                return .integer(value)
            case .float:
                guard let value = node.float, value.isFinite else { throw .invalid(path: source, field: here, reason: "not a finite number") }
                return .number(value)
            case .str, .timestamp:
                return .string(scalar.string)
            default:
                throw .invalid(path: source, field: here, reason: "YAML tag \(node.tag) is not supported")
            }
        case .sequence(let sequence):
            var items: [JSONValue] = []
            for (index, item) in sequence.enumerated() {
                items.append(try convert(item, path: "\(path)[\(index)]", source: source, schema: schema, depth: depth + 1, budget: &budget))
            }
            return .array(items)
        case .mapping(let mapping):
            var fields: [String: JSONValue] = [:]
            // What js-yaml's `<<` keys bring in: a key written in the mapping wins over a merged one wherever it stands,
            // and the first mapping merged wins over later ones.
            var merged: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard case .scalar(let keyScalar) = key else {
                    throw .invalid(path: source, field: here, reason: "mapping keys must be plain strings")
                }
                let isMerge = Tag.Name(rawValue: key.tag.description) == .merge
                var name = keyScalar.string
                if case .jsYAML = schema, !isMerge {
                    // js-yaml makes a key what its scalar makes a value, then JavaScript's String() of it: `TRUE:` is
                    // "true", `0644:` "644", `~:` "null". Two keys that become the same name refuse the file.
                    name = JavaScriptSemantics.string(
                        try convert(
                            key,
                            path: path.isEmpty ? name : "\(path).\(name)",
                            source: source,
                            schema: schema,
                            depth: depth + 1,
                            budget: &budget
                        )
                    )
                    if fields[name] != nil {
                        throw .invalid(
                            path: source,
                            field: path.isEmpty ? name : "\(path).\(name)",
                            reason: "duplicated mapping key (PM2 refuses the file)"
                        )
                    }
                }
                let field = path.isEmpty ? name : "\(path).\(name)"
                let converted = try convert(value, path: field, source: source, schema: schema, depth: depth + 1, budget: &budget)
                guard case .jsYAML = schema, isMerge else {
                    fields[name] = converted
                    continue
                }
                let mappings: [JSONValue] =
                    switch converted {
                    case .array(let items): items
                    default: [converted]
                    }
                for mergedValue in mappings {
                    guard case .object(let mergedFields) = mergedValue else {
                        throw .invalid(path: source, field: field, reason: "a << merge key takes a mapping or a list of mappings")
                    }
                    merged.merge(mergedFields) { first, _ in first }
                }
            }
            return .object(fields.merging(merged) { written, _ in written })
        case .alias:
            throw .invalid(path: source, field: here, reason: "YAML aliases are not supported")
        }
    }

    /// A scalar as js-yaml 4.1.0 constructs it, tagged by `JSYAML.resolver` or explicitly (`!!int 0644`).
    private static func javaScriptValue(
        _ text: String,
        tag: Tag.Name,
        dates: DateText,
        field: String,
        source: String
    ) throws(ConfigurationError) -> JSONValue {
        // js-yaml checks an explicit tag against the text with the type's own rule, and refuses the file when it fails.
        if JSYAML.resolves(text, as: tag) == false {
            throw .invalid(path: source, field: field, reason: "\"\(text)\" is not a YAML \(tag.rawValue) (PM2's js-yaml refuses it)")
        }
        switch tag {
        case .str, .merge:
            return .string(text)
        case .null:
            return .null
        case .bool:
            return .bool(text.lowercased() == "true")
        case .int, .float:
            guard let value = tag == .int ? JSYAML.integer(text) : JSYAML.float(text) else {
                throw .invalid(
                    path: source,
                    field: field,
                    reason: "\(text) is not a finite number: PM2 would pass it on as null; quote it to keep the text"
                )
            }
            return value
        case .timestamp:
            let iso = JSYAML.isoText(ofTimestamp: text)
            return .string(dates == .json ? "\"\(iso)\"" : iso)
        default:
            throw .invalid(path: source, field: field, reason: "YAML tag \(tag.rawValue) is not supported")
        }
    }
}

/// js-yaml 4.1.0's implicit scalar types (`lib/type/{null,bool,int,float,timestamp,merge}.js`), in the order its default
/// schema tries them, each `resolve` function written as a pattern, and their `construct` functions.
private enum JSYAML {
    static let rules: [Resolver.Rule] = [
        rule(.null, "^(?:~|null|Null|NULL|)$"),
        rule(.bool, "^(?:true|True|TRUE|false|False|FALSE)$"),
        // A sign, then: 0; 0b, 0x or 0o and digits, with `_` anywhere but last; or decimal digits, with `_` anywhere
        // but last or right after a leading 0. `0644` and `007` are decimal; `0_1` is not an integer (it is a float).
        rule(
            .int,
            """
            ^[-+]?(?:0|0b[01_]*[01]|0x[0-9a-fA-F_]*[0-9a-fA-F]|0o[0-7_]*[0-7]\
            |0[0-9](?:[0-9_]*[0-9])?|[1-9](?:[0-9_]*[0-9])?)$
            """
        ),
        // YAML_FLOAT_PATTERN, not ending in `_`. `.5` is a float, `-.5` is not; integers have matched above.
        rule(
            .float,
            """
            ^(?!.*_$)(?:[-+]?[0-9][0-9_]*(?:\\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|\\.[0-9_]+(?:[eE][-+]?[0-9]+)?\
            |[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$
            """
        ),
        rule(
            .timestamp,
            """
            ^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \\t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}\
            (?:\\.[0-9]*)?(?:[ \\t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)$
            """
        ),
        rule(.merge, "^<<$"),
    ]

    /// Tags plain scalars as js-yaml does; quoted and block scalars stay strings (Yams tags them `str`).
    static let resolver = rules.reduce(Resolver.basic) { $0.appending($1) }

    /// Whether js-yaml's type for `tag` accepts `text`, or `nil` for a tag without an implicit type (`str`, custom ones).
    static func resolves(_ text: String, as tag: Tag.Name) -> Bool? {
        guard let rule = rules.first(where: { $0.tag == tag }) else { return nil }
        return Resolver.basic.appending(rule).resolveTag(of: Node(text)) == tag
    }

    /// `constructYamlInteger`: `_` dropped, a sign, `0b`/`0x`/`0o` prefixes, otherwise decimal whatever its leading
    /// zeros. JavaScript numbers are doubles, so past 2^53 the value is rounded as `parseInt` rounds it. `nil` when not
    /// finite (hundreds of digits).
    static func integer(_ text: String) -> JSONValue? {
        var digits = Substring(text.replacingOccurrences(of: "_", with: ""))
        let negative = digits.first == "-"
        if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
        let radix = [("0b", 2), ("0x", 16), ("0o", 8)].first(where: { digits.hasPrefix($0.0) })?.1 ?? 10
        if radix != 10 { digits = digits.dropFirst(2) }
        if let exact = Int64(digits, radix: radix), exact.magnitude <= 1 << 53 {
            return .integer(negative ? -exact : exact)
        }
        let magnitude =
            radix == 10
            ? Double(String(digits)) ?? .infinity
            : digits.reduce(0.0) { $0 * Double(radix) + Double($1.hexDigitValue ?? 0) }
        guard magnitude.isFinite else { return nil }
        return .number(negative ? -magnitude : magnitude)
    }

    /// `constructYamlFloat`: `_` dropped, otherwise `parseFloat` (`1.` is 1, `.5` is 0.5). `nil` when not finite:
    /// `.inf`, `.nan`, `1e400`, and `._e5`, which has no digit (NaN). `-0` is 0, as `String(-0)` writes it.
    static func float(_ text: String) -> JSONValue? {
        var body = Substring(text.replacingOccurrences(of: "_", with: "").lowercased())
        let negative = body.first == "-"
        if body.first == "-" || body.first == "+" { body = body.dropFirst() }
        let exponent = body.firstIndex(of: "e") ?? body.endIndex
        let parts = body[..<exponent].split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let whole = parts[0]
        let fraction = parts.count == 2 ? parts[1] : ""
        guard !whole.isEmpty || !fraction.isEmpty,
            let magnitude = Double("\(whole.isEmpty ? "0" : whole).\(fraction.isEmpty ? "0" : fraction)\(body[exponent...])"),
            magnitude.isFinite
        else { return nil }
        return .number(negative && magnitude != 0 ? -magnitude : magnitude)
    }

    /// `constructYamlTimestamp` then `Date.prototype.toISOString()`, for a text `rules` tagged `timestamp`: UTC unless
    /// an offset is given, milliseconds from the first three fraction digits, out-of-range fields carried over as
    /// `Date.UTC` carries them (`2001-13-45` is 2002-02-14), and years 0 to 99 read as 1900 to 1999, as `Date.UTC` does.
    static func isoText(ofTimestamp text: String) -> String {
        var rest = Substring(text)
        func digits() -> Substring {
            let run = rest.prefix { $0.isASCII && $0.isNumber }
            rest = rest.dropFirst(run.count)
            return run
        }
        func skip(_ separators: Set<Character>) { rest = rest.drop { separators.contains($0) } }
        func number(_ run: Substring) -> Int64 { Int64(run) ?? 0 }
        var year = number(digits())
        skip(["-"])
        let month = number(digits()) - 1
        skip(["-"])
        let day = number(digits())
        skip(["T", "t", " ", "\t"])
        let hour = number(digits())
        skip([":"])
        let minute = number(digits())
        skip([":"])
        let second = number(digits())
        var milliseconds: Int64 = 0
        if rest.first == "." {
            rest = rest.dropFirst()
            let fraction = String(digits().prefix(3))
            milliseconds = number(Substring(fraction + String(repeating: "0", count: 3 - fraction.count)))
        }
        skip([" ", "\t"])
        if let sign = rest.first, sign == "+" || sign == "-" {
            rest = rest.dropFirst()
            let offsetHours = number(digits())
            skip([":"])
            let offset = (offsetHours * 60 + number(digits())) * 60_000
            milliseconds -= sign == "-" ? -offset : offset
        }
        if (0...99).contains(year) { year += 1900 }
        let days = daysFromCivil(year: year + floorDivision(month, 12), month: month - floorDivision(month, 12) * 12 + 1) + day - 1
        let time = days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + milliseconds
        return isoText(ofMilliseconds: time)
    }

    /// `toISOString()` of a time in milliseconds since 1970: four-digit years, six digits and a sign outside 0...9999.
    private static func isoText(ofMilliseconds time: Int64) -> String {
        let days = floorDivision(time, 86_400_000)
        let ofDay = time - days * 86_400_000
        let (year, month, day) = civil(fromDays: days)
        let yearText = (0...9999).contains(year) ? padded(year, 4) : (year < 0 ? "-" : "+") + padded(abs(year), 6)
        let clock = "\(padded(ofDay / 3_600_000, 2)):\(padded(ofDay / 60_000 % 60, 2)):\(padded(ofDay / 1000 % 60, 2))"
        return "\(yearText)-\(padded(month, 2))-\(padded(day, 2))T\(clock).\(padded(ofDay % 1000, 3))Z"
    }

    /// Days from 1970-01-01 to the first day of `month` (1...12) of `year` (proleptic Gregorian; Howard Hinnant's
    /// `days_from_civil`).
    private static func daysFromCivil(year: Int64, month: Int64) -> Int64 {
        let shiftedYear = month <= 2 ? year - 1 : year
        let era = floorDivision(shiftedYear, 400)
        let yearOfEra = shiftedYear - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    private static func civil(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468
        let era = floorDivision(shifted, 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> Int64 {
        let quotient = value / divisor
        return value % divisor != 0 && value < 0 ? quotient - 1 : quotient
    }

    private static func padded(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    private static func rule(_ tag: Tag.Name, _ pattern: String) -> Resolver.Rule {
        do {
            return try Resolver.Rule(tag, pattern)
        } catch {
            preconditionFailure("the js-yaml pattern for \(tag.rawValue) does not compile: \(error)")
        }
    }
}
