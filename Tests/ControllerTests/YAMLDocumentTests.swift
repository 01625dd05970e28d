import Shared
import Testing

@testable import Controller

/// Integers in YAML files (the controller's config, `ecosystem.yml`) as Yams tags them, read with checked arithmetic.
@Suite struct YAMLDocumentTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let text: String
        /// `nil`: refused as out of range (never a crash).
        let value: Int64?
        var testDescription: String { "value: \(text) → \(value.map(String.init) ?? "refused")" }
    }

    static let cases: [Case] = [
        Case(text: "42", value: 42),
        Case(text: "-7", value: -7),
        Case(text: "+7", value: 7),
        Case(text: "1_000", value: 1000),
        Case(text: "0x1F", value: 31),
        Case(text: "0b101", value: 5),
        Case(text: "017", value: 15),
        Case(text: "0o17", value: 15),
        Case(text: "1:30", value: 90),
        Case(text: "-1:0:0", value: -3600),
        Case(text: "9223372036854775807", value: .max),
        // Yams' own conversion trapped on these: on 60^10, which fits (its base reaches 60^11 after the last digit), and
        // past Int64 (60^11; 10^18 * 60).
        Case(text: "1:0:0:0:0:0:0:0:0:0:0", value: 604_661_760_000_000_000),
        Case(text: "1:0:0:0:0:0:0:0:0:0:0:0", value: nil),
        Case(text: "1000000000000000000:0", value: nil),
        Case(text: "153722867280912930:7", value: .max),
        Case(text: "153722867280912930:8", value: nil),
        Case(text: "9223372036854775808", value: nil),
        Case(text: "0x8000000000000000", value: nil),
    ]

    @Test(arguments: cases)
    func integers(_ testCase: Case) throws {
        let text = "pollSeconds: \(testCase.text)\n"
        if let value = testCase.value {
            #expect(try YAMLDocument.parse(text, source: "c.yaml") == .object(["pollSeconds": .integer(value)]))
        } else {
            #expect {
                _ = try YAMLDocument.parse(text, source: "c.yaml")
            } throws: { error in
                "\(error)".contains("pollSeconds") && "\(error)".contains("integer out of range")
            }
        }
    }
}
