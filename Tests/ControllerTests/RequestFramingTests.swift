import TestSupport
import Testing

@testable import Controller

/// `RequestFraming` says "between requests" only where NIO's decoder is between requests too, over reads split
/// anywhere; anything it does not follow loses it for the connection (the fast path then stays off there).
@Suite struct RequestFramingTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        /// The reads handed to the decoder, in order.
        let reads: [String]
        let state: RequestFraming.State
        var testDescription: String { name }
    }

    static let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    static let post = "POST /v1/agents/a/status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"

    static let cases: [Case] = [
        Case(name: "nothing yet", reads: [], state: .between),
        Case(name: "one head", reads: [get], state: .between),
        Case(name: "two heads in one read", reads: [get + get], state: .between),
        Case(name: "a head and the start of the next", reads: [get + "GET / HTTP/1.1\r\nX-Pad: "], state: .head),
        Case(name: "a head split inside its terminator", reads: ["GET / HTTP/1.1\r\nHost: x\r\n\r", "\n"], state: .between),
        Case(name: "a head split after its first CRLF", reads: ["GET / HTTP/1.1\r\n", "\r\n"], state: .between),
        Case(name: "a head split byte by byte", reads: get.map { String($0) }, state: .between),
        Case(name: "a body in the same read", reads: [post], state: .between),
        Case(name: "a body still owed", reads: [String(post.dropLast(2))], state: .body(remaining: 2)),
        Case(name: "a body completed by the next read, then a head", reads: [String(post.dropLast(2)), "lo" + get], state: .between),
        Case(
            name: "a body that looks like a request",
            reads: [post.replacingOccurrences(of: "5", with: "\(get.utf8.count)").replacingOccurrences(of: "hello", with: get)],
            state: .between
        ),
        Case(name: "Content-Length 0", reads: ["POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"], state: .between),
        Case(name: "content-length in any case, padded", reads: ["POST / HTTP/1.1\r\ncOnTeNt-LeNgTh:  3 \r\n\r\nabc"], state: .between),
        Case(name: "leading empty lines", reads: ["\r\n" + get], state: .between),
        Case(name: "chunked: not followed", reads: ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", get], state: .lost),
        Case(name: "two Content-Lengths", reads: ["POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxx"], state: .lost),
        Case(name: "a Content-Length that is not a number", reads: ["POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx"], state: .lost),
        Case(name: "a Content-Length past 18 digits", reads: ["POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n"], state: .lost),
        Case(name: "a bare LF in a head", reads: ["GET / HTTP/1.1\nHost: x\r\n\r\n"], state: .lost),
        Case(name: "a bare LF in a head split over reads", reads: ["GET / HTTP/1.1\r\nHost: x", "\n\n"], state: .lost),
        Case(name: "a bare CR in a head", reads: ["GET / HTTP/1.1\rHost: x\r\n\r\n"], state: .lost),
        Case(name: "Upgrade", reads: ["GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"], state: .lost),
        Case(name: "CONNECT", reads: ["CONNECT host:443 HTTP/1.1\r\n\r\n"], state: .lost),
        Case(name: "lost stays lost", reads: ["GET / HTTP/1.1\nX: y\r\n\r\n", get, get], state: .lost),
        Case(
            name: "a head longer than the limit",
            reads: ["GET / HTTP/1.1\r\nX-Pad: " + String(repeating: "a", count: RequestFraming.maximumHead)],
            state: .lost
        ),
        Case(
            name: "a head over the limit across reads",
            reads: ["GET / HTTP/1.1\r\nX-Pad: "] + Array(repeating: String(repeating: "a", count: 8192), count: 11),
            state: .lost
        ),
        Case(
            name: "a head split over reads past the split limit",
            reads: ["GET / HTTP/1.1\r\nX-Pad: "] + Array(repeating: String(repeating: "a", count: 1024), count: 8) + ["\r\n\r\n"],
            state: .lost
        ),
        Case(
            name: "a large head in one read",
            reads: ["GET / HTTP/1.1\r\nX-Pad: " + String(repeating: "a", count: 4 * RequestFraming.maximumSplitHead) + "\r\n\r\n"],
            state: .between
        ),
        Case(
            name: "a head split over reads just under the split limit",
            reads: ["GET / HTTP/1.1\r\nX-Pad: ", String(repeating: "a", count: RequestFraming.maximumSplitHead - 100), "\r\n\r\n"],
            state: .between
        ),
    ]

    /// Streams of requests with and without bodies (bodies that look like heads among them), cut into reads at random
    /// points: after every read the framing is between requests exactly when the read ended where a request did.
    @Test(arguments: 0..<200)
    func randomSplitsAgreeWithTheRequestBoundaries(_ seed: Int) {
        var random = SeededRandom(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        var stream: [UInt8] = []
        var boundaries: Set<Int> = [0]
        for _ in 0..<Int.random(in: 1...6, using: &random) {
            let body: [UInt8] =
                switch Int.random(in: 0..<3, using: &random) {
                case 0: []
                case 1: Array(Self.get.utf8)
                default: (0..<Int.random(in: 1...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                }
            let head =
                body.isEmpty
                ? "GET /v1/agents/a/desired-state HTTP/1.1\r\nHost: x\r\n\r\n"
                : "POST /v1/agents/a/status HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\n\r\n"
            stream += Array(head.utf8) + body
            boundaries.insert(stream.count)
        }
        var framing = RequestFraming()
        var position = 0
        while position < stream.count {
            let end = min(stream.count, position + Int.random(in: 1...120, using: &random))
            Array(stream[position..<end]).withUnsafeBytes { framing.consume($0) }
            position = end
            #expect(framing.isBetweenRequests == boundaries.contains(end), "after byte \(end) of \(stream.count)")
            #expect(framing.state != .lost)
        }
    }

    @Test(arguments: cases)
    func framing(_ testCase: Case) {
        var framing = RequestFraming()
        for read in testCase.reads {
            Array(read.utf8).withUnsafeBytes { framing.consume($0) }
        }
        #expect(framing.state == testCase.state)
        #expect(framing.isBetweenRequests == (testCase.state == .between))
    }
}
