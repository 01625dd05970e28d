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
