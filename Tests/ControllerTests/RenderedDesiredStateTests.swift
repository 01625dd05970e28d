import Foundation
import NIOCore
import Shared
import Testing

@testable import Controller

/// The desired state is written in parts (the agent's head, a releases array shared between agents, `}`): together
/// they must be exactly the document `DesiredState.json.encoded()` makes, and the tag its digest.
@Suite struct RenderedDesiredStateTests {
    @Test(arguments: ["agt_0123456789abcdef", "agt_1", "name with \"quotes\" and \\ and é", "tab\there", "a/b", ""])
    func thePartsAreTheEncodedDocument(agentID: String) throws {
        let releases = try [StoreTests.record(serial: 3, service: "api").envelope, StoreTests.record(serial: 7, service: "web").envelope]
        let cases: [(Int64, [Envelope], Int64?)] = [(15, releases, nil), (1, [], nil), (3600, [releases[0]], 2), (15, releases, 1 << 53)]
        for (pollSeconds, envelopes, rootVersion) in cases {
            let state = DesiredState(agentID: agentID, pollSeconds: pollSeconds, releases: envelopes, rootVersion: rootVersion)
            let expected = Array(state.json.encoded())
            let rendered = RenderedDesiredState(
                agentID: agentID,
                pollSeconds: pollSeconds,
                releases: EncodedReleases(envelopes),
                rootVersion: rootVersion,
                services: ["api", "web"]
            )
            #expect(Array(rendered.body.readableBytesView) == expected)
            #expect(rendered.bodyLength == expected.count)
            #expect(rendered.etag == "\"\(SHA256.hash(expected).hex)\"")
            // The agent's parser refuses control characters in an id (the tab row checks the escaping only).
            if !agentID.unicodeScalars.contains(where: { $0.value < 0x20 }) {
                #expect(try DesiredState(json: JSONValue.parse(Array(rendered.body.readableBytesView))) == state)
            }
        }
    }

    /// Agents given the same releases in one generation share one encoded array (one buffer, not a copy each).
    @Test func agentsGivenTheSameReleasesShareOneEncoding() throws {
        let cache = DesiredStateCache()
        let records = [try StoreTests.record(serial: 1, service: "api")]
        let generation = cache.lookup("a").generation
        let first = cache.encoded(records, generation: generation)
        let second = cache.encoded(records, generation: generation)
        first.bytes.withUnsafeReadableBytes { one in
            second.bytes.withUnsafeReadableBytes { two in #expect(one.baseAddress == two.baseAddress) }
        }
        cache.invalidateAll()
        let third = cache.encoded(records, generation: cache.lookup("a").generation)
        third.bytes.withUnsafeReadableBytes { three in
            first.bytes.withUnsafeReadableBytes { one in #expect(one.baseAddress != three.baseAddress, "a new generation encodes again") }
        }
    }
}

/// `If-None-Match` read as bytes (`IfNoneMatch`): every form a client may send, against the tag `"abc123"`.
@Suite struct IfNoneMatchTests {
    static let etag = "\"abc123\""

    /// `(header, matches)`.
    static let cases: [(String, Bool)] = [
        ("\"abc123\"", true),
        ("*", true),
        (" * ", true),
        ("W/\"abc123\"", true),
        ("\"x\", \"abc123\"", true),
        ("\"x\",\"abc123\"", true),
        ("\"x\",\tW/\"abc123\"  ", true),
        ("\"abc123\" , \"y\"", true),
        ("  \"abc123\"", true),
        (",,\"abc123\",,", true),
        ("\"x\", *", true),
        ("", false),
        ("   ", false),
        (",,,", false),
        ("\"x\"", false),
        ("abc123", false),
        ("\"abc123", false),
        ("\"abc1234\"", false),
        ("\"abc12\"", false),
        ("x\"abc123\"", false),
        ("W/*", false),
        ("**", false),
        ("W/", false),
        ("w/\"abc123\"", false),
        ("W/ \"abc123\"", false),
        ("\"ABC123\"", false),
        ("é\"abc123\"", false),
        ("\"abc123\"é", false),
        (String(repeating: ",", count: 10_000), false),
        (String(repeating: "\"x\", ", count: 1_000) + "W/\"abc123\"", true),
    ]

    @Test(arguments: cases)
    func aHeaderNamesTheTagOrNot(header: String, matches: Bool) {
        #expect(IfNoneMatch.header(header, matches: Self.etag) == matches)
    }

    /// The rendered state answers with the same rules.
    @Test func theRenderedStateUsesThem() {
        let state = RenderedDesiredState(agentID: "agt_1", pollSeconds: 15, releases: EncodedReleases([]), services: [])
        #expect(state.isMatched(byIfNoneMatch: state.etag))
        #expect(state.isMatched(byIfNoneMatch: "\"x\", W/\(state.etag)"))
        #expect(!state.isMatched(byIfNoneMatch: "\"x\""))
    }
}
