/// A byte-level JSON parser (RFC 8259) whose cost is linear in the input size, whatever the nesting.
///
/// It replaces a `JSONDecoder` path that tried each JSON type in turn for every value, which made a deeply nested body
/// cost the square of its depth (a 61 KB body took 32 s). Rules, each refused with `DocumentError.malformedJSON`
/// naming what was wrong and the byte offset (counted from 0):
/// - UTF-8 only (one leading byte-order mark is skipped); invalid UTF-8 in a string, raw control characters in a
///   string, unknown escapes and lone UTF-16 surrogates in `\u` escapes are refused.
/// - Numbers follow the JSON grammar (`-0`, `1.5e3`; not `01`, `.5`, `+1`, `1.`, `NaN`). A number written without
///   fraction or exponent that fits `Int64` is `.integer`; any other number is read as a `Double`, and is `.integer` when
///   that `Double` is a whole number `Int64` holds exactly (so `1.0` and `1e3` stay integers, as with `JSONDecoder`),
///   except -2^63: an integer literal past `Int64.min` rounds to that `Double` as a `.number`, so a fraction or exponent
///   spelling of it is a `.number` too (otherwise a `.number` would come back from `encoded()` as an `.integer`);
///   a number too large for a `Double` is refused.
/// - A key that appears twice in one object is refused (parsers disagree on which one wins; a signed document must
///   mean one thing).
/// - Trailing commas and anything but whitespace after the value are refused.
/// - Nesting deeper than `maximumDepth` is refused. The parser keeps its own stack of open containers instead of
///   recursing, so no input can overflow the thread's stack.
package struct JSONParser {
    /// Deepest nesting of arrays and objects accepted. Ferry's deepest document (a release) nests 5 levels; a PM2
    /// process table about 8.
    package static let maximumDepth = 64

    /// What a `\u` escape of half a UTF-16 surrogate pair becomes.
    package enum LoneSurrogates: Sendable {
        /// Refused: no Ferry document holds one.
        case refuse
        /// U+FFFD, as a decoder of UTF-16 does: Node's `JSON.stringify` writes a JavaScript string cut in the middle of
        /// an emoji that way, and PM2's process table carries any app's environment and metrics, Ferry's or not.
        case replace
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private let loneSurrogates: LoneSurrogates
    private var index = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>, loneSurrogates: LoneSurrogates) {
        self.bytes = bytes
        self.loneSurrogates = loneSurrogates
    }

    /// Parses one JSON document.
    package static func parse<Bytes: Collection>(
        _ input: Bytes,
        loneSurrogates: LoneSurrogates = .refuse
    ) throws(DocumentError) -> JSONValue where Bytes.Element == UInt8 {
        let result: Result<JSONValue, DocumentError>? = input.withContiguousStorageIfAvailable { buffer in
            var parser = JSONParser(buffer, loneSurrogates: loneSurrogates)
            return Result { () throws(DocumentError) in try parser.document() }
        }
        if let result { return try result.get() }
        return try Array(input).withUnsafeBufferPointer { buffer throws(DocumentError) in
            var parser = JSONParser(buffer, loneSurrogates: loneSurrogates)
            return try parser.document()
        }
    }

    // MARK: - Structure

    /// The open containers, innermost last. Arrays and objects are kept in separate stacks so that appending to the
    /// innermost one mutates it in place (an enum payload inside one array would be copied on every append).
    private struct Stack {
        enum Kind { case array, object }
        var kinds: [Kind] = []
        var arrays: [[JSONValue]] = []
        var objects: [[String: JSONValue]] = []
        /// The key whose value is being parsed, per open object.
        var keys: [String] = []
    }

    private mutating func document() throws(DocumentError) -> JSONValue {
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { index = 3 }
        skipWhitespace()
        guard index < bytes.count else { throw fail("the document is empty") }
        var stack = Stack()
        var value: JSONValue
        parsing: while true {
            // A value starts here.
            skipWhitespace()
            guard index < bytes.count else { throw fail("the document ends where a value is expected") }
            switch bytes[index] {
            case UInt8(ascii: "["):
                guard stack.kinds.count < Self.maximumDepth else { throw tooDeep() }
                index += 1
                skipWhitespace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    value = .array([])
                } else {
                    stack.kinds.append(.array)
                    stack.arrays.append([])
                    continue parsing
                }
            case UInt8(ascii: "{"):
                guard stack.kinds.count < Self.maximumDepth else { throw tooDeep() }
                index += 1
                skipWhitespace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    value = .object([:])
                } else {
                    stack.kinds.append(.object)
                    stack.objects.append([:])
                    stack.keys.append(try key(in: [:]))
                    continue parsing
                }
            case UInt8(ascii: "\""):
                value = .string(try string())
            case UInt8(ascii: "t"):
                try literal("true")
                value = .bool(true)
            case UInt8(ascii: "f"):
                try literal("false")
                value = .bool(false)
            case UInt8(ascii: "n"):
                try literal("null")
                value = .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                value = try number()
            default:
                throw fail("\(describeByte(at: index)) where a value is expected")
            }

            // A value is complete: hand it to the innermost container, closing containers as they end.
            while let kind = stack.kinds.last {
                skipWhitespace()
                switch kind {
                case .array:
                    stack.arrays[stack.arrays.count - 1].append(value)
                    guard index < bytes.count else { throw fail("the document ends inside an array") }
                    if bytes[index] == UInt8(ascii: ",") {
                        index += 1
                        skipWhitespace()
                        if index < bytes.count, bytes[index] == UInt8(ascii: "]") { throw fail("trailing comma in an array") }
                        continue parsing
                    }
                    guard bytes[index] == UInt8(ascii: "]") else {
                        throw fail("\(describeByte(at: index)) in an array where , or ] is expected")
                    }
                    index += 1
                    stack.kinds.removeLast()
                    value = .array(stack.arrays.removeLast())
                case .object:
                    stack.objects[stack.objects.count - 1][stack.keys.removeLast()] = value
                    guard index < bytes.count else { throw fail("the document ends inside an object") }
                    if bytes[index] == UInt8(ascii: ",") {
                        index += 1
                        skipWhitespace()
                        if index < bytes.count, bytes[index] == UInt8(ascii: "}") { throw fail("trailing comma in an object") }
                        stack.keys.append(try key(in: stack.objects[stack.objects.count - 1]))
                        continue parsing
                    }
                    guard bytes[index] == UInt8(ascii: "}") else {
                        throw fail("\(describeByte(at: index)) in an object where , or } is expected")
                    }
                    index += 1
                    stack.kinds.removeLast()
                    value = .object(stack.objects.removeLast())
                }
            }
            break parsing
        }
        skipWhitespace()
        guard index == bytes.count else { throw fail("\(describeByte(at: index)) after the end of the JSON value") }
        return value
    }

    /// Reads `"key"` and the `:` after it; refuses a key `object` already has.
    private mutating func key(in object: [String: JSONValue]) throws(DocumentError) -> String {
        skipWhitespace()
        guard index < bytes.count else { throw fail("the document ends where an object key is expected") }
        guard bytes[index] == UInt8(ascii: "\"") else { throw fail("\(describeByte(at: index)) where an object key (a string) is expected") }
        let start = index
        let key = try string()
        guard object[key] == nil else {
            throw DocumentError.malformedJSON("duplicate key \(Self.quoted(key)) in one object at byte \(start)")
        }
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
            throw fail(
                index < bytes.count ? "\(describeByte(at: index)) after an object key where : is expected" : "the document ends after an object key"
            )
        }
        index += 1
        return key
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    private mutating func literal(_ word: StaticString) throws(DocumentError) {
        let start = index
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw fail("invalid literal (expected \(word))", at: start) }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
            throw fail("invalid literal (expected \(word))", at: start)
        }
        index += count
    }

    // MARK: - Strings

    /// Reads a string starting at its opening quote.
    private mutating func string() throws(DocumentError) -> String {
        let start = index
        index += 1
        var ascii = true
        // Fast path: no escapes. The bytes between the quotes are the string.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let content = UnsafeBufferPointer(rebasing: bytes[(start + 1)..<index])
                index += 1
                return try text(content, ascii: ascii, startingAt: start + 1)
            }
            if byte == UInt8(ascii: "\\") { return try escapedString(start: start) }
            if byte < 0x20 { throw controlCharacter(byte) }
            if byte >= 0x80 { ascii = false }
            index += 1
        }
        throw fail("unterminated string", at: start)
    }

    /// The slow path: a string with escapes, decoded into a byte buffer.
    private mutating func escapedString(start: Int) throws(DocumentError) -> String {
        var decoded = Array(UnsafeBufferPointer(rebasing: bytes[(start + 1)..<index]))
        var ascii = !decoded.contains { $0 >= 0x80 }
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return try decoded.withUnsafeBufferPointer { buffer throws(DocumentError) in
                    try text(buffer, ascii: ascii, startingAt: start + 1)
                }
            case UInt8(ascii: "\\"):
                let escapeStart = index
                guard index + 1 < bytes.count else { throw fail("unterminated string", at: start) }
                index += 2
                switch bytes[escapeStart + 1] {
                case UInt8(ascii: "\""): decoded.append(0x22)
                case UInt8(ascii: "\\"): decoded.append(0x5C)
                case UInt8(ascii: "/"): decoded.append(0x2F)
                case UInt8(ascii: "b"): decoded.append(0x08)
                case UInt8(ascii: "f"): decoded.append(0x0C)
                case UInt8(ascii: "n"): decoded.append(0x0A)
                case UInt8(ascii: "r"): decoded.append(0x0D)
                case UInt8(ascii: "t"): decoded.append(0x09)
                case UInt8(ascii: "u"):
                    let scalar = try unicodeEscape(at: escapeStart)
                    if scalar.value >= 0x80 { ascii = false }
                    appendUTF8(scalar, to: &decoded)
                default:
                    throw fail("invalid escape \\\(Self.printable(bytes[escapeStart + 1])) in a string", at: escapeStart)
                }
            default:
                if byte < 0x20 { throw controlCharacter(byte) }
                if byte >= 0x80 { ascii = false }
                decoded.append(byte)
                index += 1
            }
        }
        throw fail("unterminated string", at: start)
    }

    /// Reads `\uXXXX` (the backslash is at `escapeStart`, `index` after the `u`), and its low surrogate when it is a
    /// high one.
    private mutating func unicodeEscape(at escapeStart: Int) throws(DocumentError) -> Unicode.Scalar {
        let high = try hex4(escapeStart: escapeStart)
        switch high {
        case 0xD800...0xDBFF:
            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                if loneSurrogates == .replace { return "\u{FFFD}" }
                throw fail("lone UTF-16 high surrogate \\u\(Self.hex(high)) (it must be followed by a low surrogate)", at: escapeStart)
            }
            let lowStart = index
            index += 2
            let low = try hex4(escapeStart: lowStart)
            guard (0xDC00...0xDFFF).contains(low) else {
                if loneSurrogates == .replace {
                    // The escape after it is read again on its own.
                    index = lowStart
                    return "\u{FFFD}"
                }
                throw fail("UTF-16 high surrogate \\u\(Self.hex(high)) followed by \\u\(Self.hex(low)), not by a low surrogate", at: escapeStart)
            }
            let value = 0x10000 + ((UInt32(high) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
            guard let scalar = Unicode.Scalar(value) else { throw fail("invalid surrogate pair", at: escapeStart) }
            return scalar
        case 0xDC00...0xDFFF:
            if loneSurrogates == .replace { return "\u{FFFD}" }
            throw fail("lone UTF-16 low surrogate \\u\(Self.hex(high))", at: escapeStart)
        default:
            guard let scalar = Unicode.Scalar(UInt32(high)) else { throw fail("invalid \\u escape", at: escapeStart) }
            return scalar
        }
    }

    private mutating func hex4(escapeStart: Int) throws(DocumentError) -> UInt16 {
        guard bytes.count - index >= 4 else { throw fail("\\u escape needs four hex digits", at: escapeStart) }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail("\\u escape needs four hex digits", at: escapeStart)
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    private func appendUTF8(_ scalar: Unicode.Scalar, to buffer: inout [UInt8]) {
        if let encoded = UTF8.encode(scalar) {
            buffer.append(contentsOf: encoded)
        }
    }

    /// Makes a `String` of string content, validating UTF-8 unless every byte is ASCII.
    private func text(_ content: UnsafeBufferPointer<UInt8>, ascii: Bool, startingAt offset: Int) throws(DocumentError) -> String {
        if ascii { return String(decoding: content, as: UTF8.self) }
        if let text = String(validating: content, as: UTF8.self) { return text }
        // Only raw bytes can be invalid (escapes are encoded correctly): name the first bad one in the input.
        throw fail("invalid UTF-8 in a string", at: Self.firstInvalidUTF8(bytes, from: offset) ?? offset)
    }

    /// The offset of the first byte of `bytes` from `start` that does not begin a valid UTF-8 sequence.
    private static func firstInvalidUTF8(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        var position = start
        while position < bytes.count {
            if bytes[position] == UInt8(ascii: "\"") { return nil }
            if bytes[position] == UInt8(ascii: "\\") {
                position += 2
                continue
            }
            let length = validSequenceLength(bytes, at: position)
            if length == 0 { return position }
            position += length
        }
        return nil
    }

    /// The length of the valid UTF-8 sequence at `position`, or 0 when it is not one (overlong forms, UTF-16
    /// surrogates and code points above U+10FFFF are invalid).
    private static func validSequenceLength(_ bytes: UnsafeBufferPointer<UInt8>, at position: Int) -> Int {
        let first = bytes[position]
        func continuation(_ offset: Int, _ range: ClosedRange<UInt8> = 0x80...0xBF) -> Bool {
            position + offset < bytes.count && range.contains(bytes[position + offset])
        }
        switch first {
        case 0x00...0x7F: return 1
        case 0xC2...0xDF: return continuation(1) ? 2 : 0
        case 0xE0: return continuation(1, 0xA0...0xBF) && continuation(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: return continuation(1) && continuation(2) ? 3 : 0
        case 0xED: return continuation(1, 0x80...0x9F) && continuation(2) ? 3 : 0
        case 0xF0: return continuation(1, 0x90...0xBF) && continuation(2) && continuation(3) ? 4 : 0
        case 0xF1...0xF3: return continuation(1) && continuation(2) && continuation(3) ? 4 : 0
        case 0xF4: return continuation(1, 0x80...0x8F) && continuation(2) && continuation(3) ? 4 : 0
        default: return 0
        }
    }

    // MARK: - Numbers

    private mutating func number() throws(DocumentError) -> JSONValue {
        let start = index
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard index < bytes.count, Self.isDigit(bytes[index]) else { throw fail("a number needs digits after -", at: start) }
        // Accumulate negatively so that Int64.min fits; `exact` turns false on overflow.
        var accumulator: Int64 = 0
        var exact = true
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count, Self.isDigit(bytes[index]) { throw fail("a number must not start with 0 (leading zeros)", at: start) }
        } else {
            while index < bytes.count, Self.isDigit(bytes[index]) {
                if exact {
                    let (shifted, overflow1) = accumulator.multipliedReportingOverflow(by: 10)
                    let (next, overflow2) = shifted.subtractingReportingOverflow(Int64(bytes[index] - UInt8(ascii: "0")))
                    if overflow1 || overflow2 { exact = false } else { accumulator = next }
                }
                index += 1
            }
        }
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard index < bytes.count, Self.isDigit(bytes[index]) else { throw fail("a number needs digits after the decimal point", at: start) }
            while index < bytes.count, Self.isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, Self.isDigit(bytes[index]) else { throw fail("a number needs digits in its exponent", at: start) }
            while index < bytes.count, Self.isDigit(bytes[index]) { index += 1 }
        }
        if isInteger && exact {
            if negative { return .integer(accumulator) }
            if accumulator != .min { return .integer(-accumulator) }
        }
        let literal = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let double = Double(literal), double.isFinite else {
            throw fail("the number \(literal.prefix(40)) is too large", at: start)
        }
        // -2^63 stays a `.number` on this path (the doc comment above says why; found by the json fuzz target).
        if !isInteger, double != -0x1p63, let whole = Int64(exactly: double) { return .integer(whole) }
        return .number(double)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte &- UInt8(ascii: "0") < 10 }

    // MARK: - Errors

    private func fail(_ reason: String, at offset: Int? = nil) -> DocumentError {
        .malformedJSON("\(reason) at byte \(offset ?? index)")
    }

    private func tooDeep() -> DocumentError {
        .malformedJSON("nesting deeper than \(Self.maximumDepth) levels at byte \(index)")
    }

    private func controlCharacter(_ byte: UInt8) -> DocumentError {
        fail("control character U+\(Self.hex(UInt16(byte))) in a string (write it as an escape like \\n or \\u00\(Self.hex(UInt16(byte)).suffix(2)))")
    }

    private func describeByte(at offset: Int) -> String {
        offset < bytes.count ? "unexpected \(Self.printable(bytes[offset]))" : "unexpected end of the document"
    }

    private static func printable(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(hex(UInt16(byte)).suffix(2))"
    }

    private static func hex(_ value: UInt16) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    private static func quoted(_ text: String) -> String {
        text.count > 60 ? String(text.prefix(60)).debugDescription + "…" : text.debugDescription
    }
}
