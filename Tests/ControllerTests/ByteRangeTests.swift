import Testing

@testable import Controller

@Suite struct ByteRangeTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let header: String
        let expected: ByteRange
        var testDescription: String { header }
    }

    static let cases: [Case] = [
        Case(header: "bytes=0-9", expected: .satisfiable(0...9)),
        Case(header: "bytes=5-", expected: .satisfiable(5...99)),
        Case(header: "bytes=-10", expected: .satisfiable(90...99)),
        Case(header: "bytes=-1000", expected: .satisfiable(0...99)),
        Case(header: "bytes=90-1000", expected: .satisfiable(90...99)),
        Case(header: "BYTES=1-2", expected: .satisfiable(1...2)),
        Case(header: "bytes=100-", expected: .unsatisfiable),
        Case(header: "bytes=100-200", expected: .unsatisfiable),
        Case(header: "bytes=-0", expected: .unsatisfiable),
        Case(header: "bytes=5-1", expected: .ignored),
        Case(header: "bytes=0-1,5-6", expected: .ignored),
        Case(header: "items=0-1", expected: .ignored),
        Case(header: "bytes=a-b", expected: .ignored),
        Case(header: "bytes=-", expected: .ignored),
        Case(header: "bytes=+1-2", expected: .ignored),
        Case(header: "bytes=99999999999999999999-", expected: .ignored),
    ]

    @Test(arguments: cases)
    func parsesRangeOfAHundredBytes(_ testCase: Case) {
        #expect(ByteRange.parse(testCase.header, size: 100) == testCase.expected)
    }
}
