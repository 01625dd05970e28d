/// JavaScript's `Number(string)` and `String(number)`, wherever Ferry must write or read a number as PM2's JavaScript
/// does: the env values PM2 computes (`increment_var`, which the builtin supervisor must give an app as PM2 would) and
/// the ecosystem file's numbers `publish` turns into text (`JavaScriptSemantics.string`).
package enum JavaScriptNumber {
    /// `Number(text)` (ECMAScript StringToNumber): surrounding white space and line terminators ignored, empty is 0,
    /// `0x`/`0o`/`0b` integers, an optionally signed decimal literal or `Infinity`; anything else is NaN.
    /// Hex, octal and binary integers beyond 2^53 are accumulated in doubles and may round differently from V8.
    package static func value(of text: String) -> Double {
        let scalars = Array(text.unicodeScalars)
        guard let first = scalars.firstIndex(where: { !isWhiteSpace($0) }),
            let last = scalars.lastIndex(where: { !isWhiteSpace($0) })
        else { return 0 }
        let literal = String(String.UnicodeScalarView(scalars[first...last]))
        if let radixValue = nonDecimalInteger(literal) { return radixValue }
        var body = Substring(literal)
        var sign: Double = 1
        if let head = body.first, head == "+" || head == "-" {
            sign = head == "-" ? -1 : 1
            body = body.dropFirst()
        }
        if body == "Infinity" { return sign * .infinity }
        guard isDecimalLiteral(body), let magnitude = Double(String(body)) else { return .nan }
        return sign * magnitude
    }

    /// `String(value)` (ECMAScript Number::toString with radix 10): the shortest digits that round-trip, written
    /// without an exponent from 1e-6 up to 1e21 (`0.00005`, `123456789012345680000`), with one outside it (`1e-7`,
    /// `1e+21`); `-0` is `0`, and `NaN`, `Infinity`, `-Infinity` are written as such.
    package static func text(of value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == 0 { return "0" }
        if value < 0 { return "-" + text(of: -value) }
        if value.isInfinite { return "Infinity" }
        // Swift's description is also the shortest round-trip form; only its layout differs ("1e+21", "4000.0").
        let description = value.description
        let parts = description.split(separator: "e", maxSplits: 1)
        let exponent = parts.count == 2 ? Int(parts[1]) ?? 0 : 0
        let mantissa = parts[0].split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        var digits = Array(mantissa[0]) + (mantissa.count == 2 ? Array(mantissa[1]) : [])
        // `point`: how many of `digits` stand before the decimal point (ECMAScript's n).
        var point = mantissa[0].count + exponent
        while digits.first == "0" {
            digits.removeFirst()
            point -= 1
        }
        while digits.last == "0" { digits.removeLast() }
        let k = digits.count
        let text = String(digits)
        if k <= point, point <= 21 { return text + String(repeating: "0", count: point - k) }
        if 0 < point, point <= 21 { return String(digits[..<point]) + "." + String(digits[point...]) }
        if -6 < point, point <= 0 { return "0." + String(repeating: "0", count: -point) + text }
        let shown = point - 1
        let sign = shown < 0 ? "-" : "+"
        let head = k == 1 ? text : String(digits[0]) + "." + String(digits[1...])
        return "\(head)e\(sign)\(abs(shown))"
    }

    /// `0x1F`, `0o17`, `0b101` (no sign, at least one digit), or nil.
    private static func nonDecimalInteger(_ literal: String) -> Double? {
        let utf8 = Array(literal.utf8)
        guard utf8.count > 2, utf8[0] == UInt8(ascii: "0") else { return nil }
        let radix: Double
        switch utf8[1] {
        case UInt8(ascii: "x"), UInt8(ascii: "X"): radix = 16
        case UInt8(ascii: "o"), UInt8(ascii: "O"): radix = 8
        case UInt8(ascii: "b"), UInt8(ascii: "B"): radix = 2
        default: return nil
        }
        var result: Double = 0
        for byte in utf8[2...] {
            guard let digit = hexDigitValue(byte), Double(digit) < radix else { return .nan }
            result = result * radix + Double(digit)
        }
        return result
    }

    private static func hexDigitValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A")) + 10
        default: nil
        }
    }

    /// StrUnsignedDecimalLiteral: `12`, `1.5`, `5.`, `.5`, each with an optional exponent (`1e3`, `2.5E-2`).
    private static func isDecimalLiteral(_ body: Substring) -> Bool {
        let bytes = Array(body.utf8)
        var index = 0
        func digits() -> Int {
            let start = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            return index - start
        }
        var mantissaDigits = digits()
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            mantissaDigits += digits()
        }
        guard mantissaDigits > 0 else { return false }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits() > 0 else { return false }
        }
        return index == bytes.count
    }

    /// ECMAScript WhiteSpace and LineTerminator (what `Number()` trims).
    private static func isWhiteSpace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0xA0, 0xFEFF, 0x2028, 0x2029: true
        default: scalar.properties.generalCategory == .spaceSeparator
        }
    }
}
