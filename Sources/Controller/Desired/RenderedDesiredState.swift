import Hummingbird
import Shared

/// A desired-state document encoded once, with its strong ETag.
struct RenderedDesiredState: Sendable {
    /// The JSON body (shared, never copied per response).
    let body: ByteBuffer
    /// `"<sha256 hex of body>"`: equal bodies, equal tags, whichever replica or restart produced them.
    let etag: String
    /// The services of the agent it was built for: the publishes its long-polls listen to.
    let services: [String]
    /// The serial given for each service (a status report running a higher one makes the state out of date).
    let serials: [String: Int64]

    init(_ state: DesiredState, services: [String], serials: [String: Int64] = [:]) {
        self.services = services
        self.serials = serials
        let bytes = state.json.encoded()
        self.body = ByteBuffer(bytes: bytes)
        self.etag = "\"\(SHA256.hash(bytes).hex)\""
    }

    /// Whether an `If-None-Match` header value names this state (`*`, a list, weak or strong tags).
    func isMatched(byIfNoneMatch header: String) -> Bool {
        // The common case, an agent sending back exactly the tag it got, costs one comparison.
        if header == etag { return true }
        for candidate in header.split(separator: ",") {
            var tag = candidate.trimmingCharacters(in: .whitespaces)[...]
            if tag == "*" { return true }
            if tag.hasPrefix("W/") { tag = tag.dropFirst(2) }
            if tag == etag { return true }
        }
        return false
    }
}
