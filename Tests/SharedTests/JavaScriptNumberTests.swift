import Shared
import Testing

/// JavaScript's `Number(text)` and `String(number)`: what PM2 computes in JavaScript (`increment_var`) and how an
/// ecosystem file's numbers become env text. Every expected text is what node's `String(x)` prints for the same double.
@Suite("Numbers read and written as JavaScript does")
struct JavaScriptNumberTests {
    static let numbers: [(String, Double)] = [
        ("", 0), ("  42 ", 42), (" 0x10 ", 16), ("0b101", 5), ("0o17", 15), ("0XfF", 255), ("1e3", 1000), (".5", 0.5), ("5.", 5),
        ("+5", 5), ("-7.25", -7.25), ("5.e2", 500), ("-Infinity", -.infinity), ("1e400", .infinity), ("\u{00A0}7\n", 7),
        ("\u{2028}3\u{3000}", 3),
    ]

    @Test("Number(text) as JavaScript reads it", arguments: numbers)
    func number(_ text: String, _ value: Double) {
        #expect(JavaScriptNumber.value(of: text) == value)
    }

    @Test(
        "what JavaScript's Number() reads as NaN",
        arguments: ["-0x10", "infinity", "12px", "1_000", ".", "e5", "1e", "0x", "\u{0663}", "0b102", "--1", "+-1", "NaN"]
    )
    func notANumber(_ text: String) {
        #expect(JavaScriptNumber.value(of: text).isNaN)
    }

    /// JavaScript writes an exponent only below 1e-6 or from 1e21 up, and a large integer as its shortest round-trip
    /// digits followed by zeros, not as the double's exact value (123456789012345683968).
    static let texts: [(Double, String)] = [
        (4001, "4001"), (3.5, "3.5"), (1e21, "1e+21"), (1e20, "100000000000000000000"), (123_456_789_012_345_680_000, "123456789012345680000"),
        (1e-7, "1e-7"), (0.000001, "0.000001"), (0.1 + 0.2, "0.30000000000000004"), (-5, "-5"), (1.5e300, "1.5e+300"),
        (5e-324, "5e-324"), (9_007_199_254_740_994, "9007199254740994"), (0.00001234, "0.00001234"),
        (1.7976931348623157e308, "1.7976931348623157e+308"), (0, "0"), (-0.0, "0"), (.infinity, "Infinity"),
        (0.00005, "0.00005"), (-0.00005, "-0.00005"), (0.0000015, "0.0000015"), (1.5e-7, "1.5e-7"), (-1e-7, "-1e-7"),
        (1e22, "1e+22"), (3000, "3000"), (9e18, "9000000000000000000"), (123_456_789_012_345_683_968, "123456789012345680000"),
        (9_223_372_036_854_775_808, "9223372036854776000"), (12_345_678_901_234_567_168, "12345678901234567000"),
        (.nan, "NaN"), (-.infinity, "-Infinity"),
    ]

    @Test("String(number) as JavaScript writes it", arguments: texts)
    func text(_ value: Double, _ text: String) {
        #expect(JavaScriptNumber.text(of: value) == text)
    }
}
