import Shared
import Testing

@Suite("ASCII text checks")
struct ASCIITests {
    @Test(arguments: [
        ("close", true),
        ("Close", true),
        ("keep-alive, CLOSE", true),
        ("upgrade,cLoSe", true),
        (" close\t", true),
        ("keep-alive ,\tclose , te", true),
        ("clos", false),
        ("", false),
        (",", false),
        ("keep-alive", false),
        ("clo se", false),
        // A substring is not the token: llhttp keeps these connections open.
        ("foreclose", false),
        ("close-ish", false),
        ("keep-alive, closed", false),
        ("éclose", false),
        // Not ASCII: no Unicode case mapping (U+212A KELVIN SIGN is not "k").
        ("\u{212A}eep-alive, clos\u{0415}", false),
    ])
    func containsTokenIgnoringCase(_ text: String, _ expected: Bool) {
        #expect(ASCII.containsToken(text, caseInsensitive: "close") == expected)
        #expect(ASCII.containsToken(text[...], caseInsensitive: "close") == expected, "as a substring")
    }

    @Test func everyByteLowercasesAsASCIIOnly() {
        for byte in UInt8.min...UInt8.max {
            let expected: UInt8 = (65...90).contains(byte) ? byte + 32 : byte
            #expect(ASCII.lowercased(byte) == expected)
        }
    }
}
