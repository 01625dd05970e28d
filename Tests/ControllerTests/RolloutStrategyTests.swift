import Testing

@testable import Controller

@Suite struct RolloutStrategyTests {
    @Test(arguments: [
        ("all", RolloutStrategy.all),
        ("one-at-a-time", .oneAtATime),
        ("waves:34,100", .waves([34, 100])),
        ("waves:100", .waves([100])),
        ("waves:1,2,3,100", .waves([1, 2, 3, 100])),
        ("canary:1", .canary(1)),
        ("canary:100000", .canary(100_000)),
    ])
    func parsesAndPrintsBack(text: String, expected: RolloutStrategy) throws {
        let strategy = try RolloutStrategy.parse(text)
        #expect(strategy == expected)
        #expect(strategy.description == text)
    }

    /// Hostile strategy texts, each with the reason it must give.
    static let hostile: [(text: String, reason: String)] = [
        ("", "expected all, one-at-a-time, waves:P1,P2,...,100 or canary:N"),
        ("ALL", "expected all, one-at-a-time, waves:P1,P2,...,100 or canary:N"),
        ("all ", "expected all, one-at-a-time, waves:P1,P2,...,100 or canary:N"),
        ("oneatatime", "expected all, one-at-a-time, waves:P1,P2,...,100 or canary:N"),
        ("waves", "expected all, one-at-a-time, waves:P1,P2,...,100 or canary:N"),
        ("waves:", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"\" is not one"),
        ("waves:10,,100", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"\" is not one"),
        ("waves:10,100,", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"\" is not one"),
        ("waves: 10,100", "waves:P1,P2,...,100 needs whole percentages separated by commas; \" 10\" is not one"),
        ("waves:+10,100", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"+10\" is not one"),
        ("waves:-10,100", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"-10\" is not one"),
        ("waves:10.5,100", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"10.5\" is not one"),
        ("waves:1e2", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"1e2\" is not one"),
        ("waves:9999999,100", "waves:P1,P2,...,100 needs whole percentages separated by commas; \"9999999\" is not one"),
        ("waves:0,100", "percentage 0 is outside 1...100"),
        ("waves:10,101", "percentage 101 is outside 1...100"),
        ("waves:50,40,100", "percentages must strictly increase (40 follows 50)"),
        ("waves:50,50,100", "percentages must strictly increase (50 follows 50)"),
        ("waves:100,100", "percentages must strictly increase (100 follows 100)"),
        ("waves:10,50", "the last wave must be 100 (every agent)"),
        ("canary:", "canary:N needs a whole number of agents from 1 to 100000"),
        ("canary:0", "canary:N needs a whole number of agents from 1 to 100000"),
        ("canary:-1", "canary:N needs a whole number of agents from 1 to 100000"),
        ("canary:100001", "canary:N needs a whole number of agents from 1 to 100000"),
        ("canary:two", "canary:N needs a whole number of agents from 1 to 100000"),
        ("canary:1,2", "canary:N needs a whole number of agents from 1 to 100000"),
        (String(repeating: "waves:1,", count: 60), "it is longer than 400 characters"),
    ]

    @Test(arguments: hostile)
    func refusesHostileStrategy(text: String, reason: String) {
        #expect(throws: RolloutParameterError.invalidStrategy(text: String(text.prefix(80)), reason: reason)) {
            try RolloutStrategy.parse(text)
        }
    }

    @Test(arguments: [
        (RolloutStrategy.waves([34, 100]), 3, [1, 3]),
        (.waves([34, 100]), 1, [1]),
        (.waves([10, 50, 100]), 10, [1, 5, 10]),
        (.waves([10, 50, 100]), 20, [2, 10, 20]),
        // Waves that would add no agent on a small fleet are dropped.
        (.waves([10, 20, 100]), 3, [1, 3]),
        (.waves([1, 2, 100]), 1000, [10, 20, 1000]),
        (.waves([100]), 4, [4]),
        (.oneAtATime, 4, [1, 2, 3, 4]),
        (.oneAtATime, 1, [1]),
        (.canary(2), 5, [2, 5]),
        (.canary(5), 5, [5]),
        (.canary(9), 5, [5]),
        (.all, 7, [7]),
        (.all, 0, []),
        (.oneAtATime, 0, []),
        (.waves([34, 100]), 0, []),
    ])
    func sizesWavesCumulatively(strategy: RolloutStrategy, agents: Int, sizes: [Int]) {
        #expect(strategy.waveSizes(agentCount: agents) == sizes)
    }

    @Test func parametersDefaultWhenAbsent() throws {
        let parameters = try RolloutParameters(query: [])
        #expect(parameters == RolloutParameters(strategy: .all, waveStable: .seconds(60), maxFailures: 0))
        let given = try RolloutParameters(query: [("strategy", "canary:2"), ("waveStableSeconds", "0"), ("maxFailures", "3")])
        #expect(given == RolloutParameters(strategy: .canary(2), waveStable: .zero, maxFailures: 3))
    }

    /// Hostile query parameters of a publish, each with the error naming its parameter.
    static let hostileQueries: [(query: [(name: String, value: String)], error: RolloutParameterError)] = [
        ([("strategy", "waves:10")], .invalidStrategy(text: "waves:10", reason: "the last wave must be 100 (every agent)")),
        ([("stratgy", "waves:10,100")], .unknownParameter("stratgy")),
        ([("strategy", "all"), ("strategy", "one-at-a-time")], .repeatedParameter("strategy")),
        ([("waveStableSeconds", "")], .invalidWaveStable(text: "", maximum: 86_400)),
        ([("waveStableSeconds", "-1")], .invalidWaveStable(text: "-1", maximum: 86_400)),
        ([("waveStableSeconds", "1.5")], .invalidWaveStable(text: "1.5", maximum: 86_400)),
        ([("waveStableSeconds", "86401")], .invalidWaveStable(text: "86401", maximum: 86_400)),
        ([("waveStableSeconds", "60s")], .invalidWaveStable(text: "60s", maximum: 86_400)),
        ([("maxFailures", "+1")], .invalidMaxFailures(text: "+1", maximum: 100_000)),
        ([("maxFailures", "many")], .invalidMaxFailures(text: "many", maximum: 100_000)),
        ([("maxFailures", "99999999999999999999")], .invalidMaxFailures(text: "99999999999999999999", maximum: 100_000)),
    ]

    @Test(arguments: hostileQueries)
    func refusesHostileParameters(query: [(name: String, value: String)], error: RolloutParameterError) {
        #expect(throws: error) { try RolloutParameters(query: query) }
        #expect(error.description.contains(error.parameter))
    }
}
