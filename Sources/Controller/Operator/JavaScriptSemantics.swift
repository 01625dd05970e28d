import Foundation
import Shared

/// The JavaScript conversions PM2's option handling leans on (truthiness, `Number()`, `parseFloat`, `parseInt`,
/// `String()` of a number), over parsed JSON values, so Ferry coerces an ecosystem file exactly as PM2 does.
enum JavaScriptSemantics {
    /// JavaScript truthiness (`undefined` is `nil`).
    static func isTruthy(_ value: JSONValue?) -> Bool {
        switch value {
        case nil, .null?: false
        case .bool(let flag)?: flag
        case .integer(let n)?: n != 0
        case .number(let d)?: d != 0 && !d.isNaN
        case .string(let text)?: !text.isEmpty
        case .array?, .object?: true
        }
    }

    /// `Number(value)`, or `nil` for NaN.
    static func number(_ value: JSONValue) -> Double? {
        switch value {
        case .null: 0
        case .bool(let flag): flag ? 1 : 0
        case .integer(let n): Double(n)
        case .number(let d): d.isNaN ? nil : d
        case .string(let text): number(text)
        case .array: number(string(value))
        case .object: nil
        }
    }

    /// `Number(text)` (`JavaScriptNumber.value(of:)`), or `nil` for NaN.
    static func number(_ text: String) -> Double? {
        let value = JavaScriptNumber.value(of: text)
        return value.isNaN ? nil : value
    }

    /// `parseFloat(String(value))`, or `nil` for NaN.
    static func parseFloat(_ value: JSONValue) -> Double? {
        let text = trimmedStart(string(value))
        if text.hasPrefix("Infinity") || text.hasPrefix("+Infinity") { return .infinity }
        if text.hasPrefix("-Infinity") { return -.infinity }
        guard let length = decimalPrefixLength(Substring(text)) else { return nil }
        return Double(String(text.prefix(length)))
    }

    /// `parseInt(text)` (no radix): an optional sign, `0x` for hexadecimal, then the longest run of digits.
    static func parseInt(_ text: String) -> Double? {
        var rest = Substring(trimmedStart(text))
        var sign = 1.0
        if rest.first == "-" || rest.first == "+" {
            if rest.first == "-" { sign = -1 }
            rest = rest.dropFirst()
        }
        var radix = 10
        if rest.lowercased().hasPrefix("0x") {
            radix = 16
            rest = rest.dropFirst(2)
        }
        let digits = rest.prefix { Int(String($0), radix: radix) != nil }
        guard !digits.isEmpty else { return nil }
        return sign * digits.reduce(0.0) { $0 * Double(radix) + Double(Int(String($1), radix: radix) ?? 0) }
    }

    /// `String(value)` for the values PM2 stringifies: arrays join with `,`, `null` inside an array is empty, numbers as
    /// JavaScript writes them (`JavaScriptNumber.text(of:)`).
    static func string(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool(let flag): flag ? "true" : "false"
        case .integer(let n): String(n)
        case .number(let d): JavaScriptNumber.text(of: d)
        case .string(let text): text
        case .array(let items): items.map { $0 == .null ? "" : string($0) }.joined(separator: ",")
        case .object: "[object Object]"
        }
    }

    /// `JSON.stringify` of a value (sorted keys: the key order of the file is not kept once parsed).
    static func jsonString(_ value: JSONValue) -> String {
        String(decoding: value.encoded(), as: UTF8.self)
    }

    /// Length of the longest prefix of `text` that is a JavaScript decimal literal (`StrDecimalLiteral`).
    private static func decimalPrefixLength(_ text: Substring) -> Int? {
        let chars = Array(text)
        var index = 0
        if index < chars.count, chars[index] == "+" || chars[index] == "-" { index += 1 }
        let integerStart = index
        while index < chars.count, chars[index].isASCII, chars[index].isNumber { index += 1 }
        var digits = index - integerStart
        if index < chars.count, chars[index] == "." {
            var fraction = index + 1
            while fraction < chars.count, chars[fraction].isASCII, chars[fraction].isNumber { fraction += 1 }
            digits += fraction - index - 1
            if digits > 0 { index = fraction }
        }
        guard digits > 0 else { return nil }
        if index < chars.count, chars[index] == "e" || chars[index] == "E" {
            var exponent = index + 1
            if exponent < chars.count, chars[exponent] == "+" || chars[exponent] == "-" { exponent += 1 }
            let exponentStart = exponent
            while exponent < chars.count, chars[exponent].isASCII, chars[exponent].isNumber { exponent += 1 }
            if exponent > exponentStart { index = exponent }
        }
        return index
    }

    private static func trimmedStart(_ text: String) -> String {
        String(text.drop(while: isWhitespace))
    }

    private static func isWhitespace(_ character: Character) -> Bool {
        character.isWhitespace || character == "\u{FEFF}"
    }
}
