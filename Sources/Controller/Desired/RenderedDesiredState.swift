import HTTPTypes
import NIOCore
import Shared

/// A desired-state document encoded once, with its strong ETag.
///
/// The body is kept in three parts: the agent's own head (`{"agentId":"…","pollSeconds":N,"releases":`), the encoded
/// releases array — one buffer shared by every agent given the same releases, see `EncodedReleases` — and the tail
/// (`,"rootVersion":N}` when a trust root is published, else `}`). Written
/// one after the other they are byte for byte `DesiredState.json.encoded()` (sorted keys, compact), so 10,000 agents
/// of a service hold one copy of the envelopes, not 10,000.
struct RenderedDesiredState: Sendable {
    /// `{"agentId":…,"pollSeconds":N,"releases":` of this agent.
    let head: ByteBuffer
    /// The releases array, shared.
    let releases: EncodedReleases
    /// `"<sha256 hex of the body>"`: equal bodies, equal tags, whichever replica or restart produced them.
    let etag: String
    /// The services of the agent it was built for: the publishes its long-polls listen to.
    let services: [String]
    /// The serial given for each service (a status report running a higher one makes the state out of date).
    let serials: [String: Int64]

    /// The end of the document: the newest trust root's version (keys sort after `releases`) and the closing brace.
    let tail: ByteBuffer

    /// The tail when no trust root is published.
    private static let closingBrace = ByteBuffer(string: "}")

    /// Renders the state of `agentID` with `releases` (encoded once for every agent that gets them).
    init(
        agentID: String,
        pollSeconds: Int64,
        releases: EncodedReleases,
        rootVersion: Int64? = nil,
        services: [String],
        serials: [String: Int64] = [:]
    ) {
        var head = ByteBuffer()
        head.writeString(#"{"agentId":"#)
        Self.writeJSONString(agentID, to: &head)
        head.writeString(#","pollSeconds":\#(pollSeconds),"releases":"#)
        self.head = head
        self.releases = releases
        self.tail = rootVersion.map { ByteBuffer(string: #","rootVersion":\#($0)}"#) } ?? Self.closingBrace
        self.services = services
        self.serials = serials
        let hasher = SHA256Hasher()
        for part in [head, releases.bytes, tail] { part.withUnsafeReadableBytes { hasher.update($0) } }
        let etag = "\"\(hasher.finalize().hex)\""
        self.etag = etag
        let shared: HTTPFields = [.eTag: etag, .cacheControl: "private, no-cache"]
        var ok = shared
        ok[.contentType] = "application/json; charset=utf-8"
        let bodyLength = head.readableBytes + releases.bytes.readableBytes + tail.readableBytes
        self.bodyLength = bodyLength
        ok[.contentLength] = String(bodyLength)
        okResponse = HTTPResponse(status: .ok, headerFields: ok)
        var notModified = shared
        notModified[.contentLength] = "0"
        notModifiedResponse = HTTPResponse(status: .notModified, headerFields: notModified)
    }

    /// The heads of the two answers a poll gets (built once: every poll of every agent with this state shares them).
    let okResponse: HTTPResponse
    let notModifiedResponse: HTTPResponse

    /// Renders `state` (its releases encoded for it alone).
    init(_ state: DesiredState, services: [String], serials: [String: Int64] = [:]) {
        self.init(
            agentID: state.agentID,
            pollSeconds: state.pollSeconds,
            releases: EncodedReleases(state.releases),
            rootVersion: state.rootVersion,
            services: services,
            serials: serials
        )
    }

    /// The body's size in bytes.
    let bodyLength: Int

    /// The body in one buffer (a copy: the poll handler writes the parts instead).
    var body: ByteBuffer {
        var body = ByteBuffer()
        body.reserveCapacity(bodyLength)
        body.writeImmutableBuffer(head)
        body.writeImmutableBuffer(releases.bytes)
        body.writeImmutableBuffer(tail)
        return body
    }

    /// Whether an `If-None-Match` header value names this state (`*`, a list, weak or strong tags).
    func isMatched(byIfNoneMatch header: String) -> Bool {
        IfNoneMatch.header(header, matches: etag)
    }

    /// Writes `text` as a JSON string exactly as `JSONValue.encoded()` does.
    private static func writeJSONString(_ text: String, to buffer: inout ByteBuffer) {
        var writer = JSONWriter()
        writer.writeString(text)
        buffer.writeBytes(writer.bytes)
    }
}

/// The `releases` array of a desired state, encoded once and shared by every agent that is given the same releases.
struct EncodedReleases: Sendable {
    /// `[<envelope>,…]`, compact with sorted keys.
    let bytes: ByteBuffer

    init(_ envelopes: [Envelope]) {
        bytes = ByteBuffer(bytes: JSONValue.array(envelopes.map(\.json)).encoded())
    }
}
