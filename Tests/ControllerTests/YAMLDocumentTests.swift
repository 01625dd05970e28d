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

    /// Documents whose expansion is hostile: refused with the file and the field named, quickly, never a crash or
    /// minutes of work (nine levels of ten aliases are 10⁹ values from under a kilobyte).
    @Test(
        arguments: [
            (
                "billion laughs",
                "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
                    + (1...8).map { level in
                        let name = String(UnicodeScalar(UInt8(97 + level)))
                        let previous = String(UnicodeScalar(UInt8(96 + level)))
                        return "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 10).joined(separator: ",") + "]\n"
                    }.joined(),
                "values once its aliases are expanded"
            ),
            ("nesting", String(repeating: "[", count: 300) + String(repeating: "]", count: 300) + "\n", "nested deeper than 200 levels"),
        ]
    )
    func hostileExpansionIsRefused(_ name: String, _ text: String, _ reason: String) throws {
        for schema in [YAMLDocument.Schema.yaml11, .jsYAML(dates: .iso)] {
            let started = ContinuousClock.now
            #expect {
                _ = try YAMLDocument.parse(text, source: "eco.yaml", schema: schema)
            } throws: { error in
                "\(error)".contains("eco.yaml") && "\(error)".contains(reason)
            }
            #expect(ContinuousClock.now - started < .seconds(10), "\(name)")
        }
    }

    /// Aliases a real file uses (`<<: *defaults`) stay well within the budget.
    @Test func aMergeKeyAliasStillReads() throws {
        let text = "defaults: &defaults\n  instances: 2\napps:\n  - <<: *defaults\n    name: web\n"
        let value = try YAMLDocument.parse(text, source: "eco.yaml", schema: .jsYAML(dates: .iso))
        #expect(value["apps"]?.arrayValue.first?["instances"] == .integer(2))
    }
}
