import HTTPTypes
import NIOCore
import Shared

/// Answers, from the connection's raw bytes, the request an agent polling without a long-poll sends all day: `GET
/// /v1/agents/{id}/desired-state` with the tag it already has and no wait, which gets `304 Not Modified`. It sits in
/// front of the HTTP decoder, so such a poll costs no request parsing, no `HTTPTypes` conversion and no response
/// encoding.
///
/// It answers only what it can answer at once and exactly as `DesiredStatePollHandler` would (the same authentication
/// with its revocation check, the same state, the same head byte for byte, the same metrics), and only when nothing
/// else on the connection is unanswered. Everything else — a request split over reads, two requests in one read, any
/// header that frames a body or changes the connection (`Content-Length`, `Transfer-Encoding`, `Expect`, `Upgrade`,
/// `Connection` other than `keep-alive`), a repeated `Authorization` or `If-None-Match`, any byte outside visible ASCII,
/// a folded header, HTTP/1.0, a long-poll that must park, a token or state not in the caches, a socket that is not
/// writable — is passed on untouched to
/// the HTTP decoder and the handlers behind it, which answer as before. So this parser decides only whether to answer;
/// it never frames a request the decoder will see.
///
/// After it has passed bytes on, it passes everything on until `DesiredStatePollHandler` says every request it was
/// given is answered (`downstreamBecameIdle`) and the bytes passed on end between two requests (`RequestFraming`),
/// which keeps answers in request order.
final class DesiredStateFastPath: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A poll this handler may answer, read from one read's bytes.
    struct Poll: Equatable {
        var agentID: String
        var token: String
        var ifNoneMatch: String

        /// Longest request considered (anything longer goes to the decoder, whose limits are larger).
        static let maximumLength = 4096
        /// Most header lines considered.
        static let maximumHeaders = 32

        /// `nil` unless `bytes` are exactly one complete `GET /v1/agents/<id>/desired-state[?wait=0]` HTTP/1.1 request
        /// head with one Bearer `Authorization`, one `If-None-Match`, no body and nothing after it.
        init?(_ bytes: UnsafeRawBufferPointer) {
            let bytes = bytes.assumingMemoryBound(to: UInt8.self)
            guard bytes.count <= Self.maximumLength, bytes.count > Self.method.count + Self.version.count + 4,
                bytes.starts(with: Self.method), bytes[(bytes.count - 4)...].elementsEqual(Self.headEnd)
            else { return nil }
            var lines = LineReader(bytes)
            guard let requestLine = lines.next(), requestLine.count > Self.method.count + Self.version.count,
                requestLine[(requestLine.endIndex - Self.version.count)...].elementsEqual(Self.version)
            else { return nil }
            let target = UnsafeBufferPointer(rebasing: requestLine[Self.method.count..<(requestLine.endIndex - Self.version.count)])
            guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }),
                let (id, wait) = DesiredStatePollHandler.Poll.target(target, maximumWait: .zero), wait == .zero
            else { return nil }
            var authorization: String?
            var ifNoneMatch: String?
            var count = 0
            while let line = lines.next() {
                if line.isEmpty {
                    // The blank line that ends the head must be the end of the read.
                    guard line.startIndex == bytes.count - 2 else { return nil }
                    break
                }
                count += 1
                guard count <= Self.maximumHeaders, let (name, value) = Self.field(line) else { return nil }
                switch name.count {
                case 13 where ASCII.equalsLowercased(name, Self.authorizationName):
                    guard authorization == nil else { return nil }
                    authorization = String(decoding: value, as: UTF8.self)
                case 13 where ASCII.equalsLowercased(name, Self.ifNoneMatchName):
                    guard ifNoneMatch == nil else { return nil }
                    ifNoneMatch = String(decoding: value, as: UTF8.self)
                case 10 where ASCII.equalsLowercased(name, Self.connectionName):
                    guard ASCII.equalsLowercased(value, Self.keepAlive) else { return nil }
                case 14 where ASCII.equalsLowercased(name, Self.contentLengthName),
                    17 where ASCII.equalsLowercased(name, Self.transferEncodingName),
                    6 where ASCII.equalsLowercased(name, Self.expectName),
                    7 where ASCII.equalsLowercased(name, Self.upgradeName):
                    // A body or a change of protocol: the decoder's.
                    return nil
                default:
                    break
                }
            }
            guard lines.isAtEnd, let authorization, let ifNoneMatch,
                let (scheme, token) = Authenticator.credentials(fromAuthorization: authorization), scheme == .bearer
            else { return nil }
            agentID = id
            self.token = String(token)
            self.ifNoneMatch = ifNoneMatch
        }

        /// `name: value` with a token for a name and visible ASCII, spaces and tabs for a value (trimmed).
        private static func field(
            _ line: Slice<UnsafeBufferPointer<UInt8>>
        ) -> (Slice<UnsafeBufferPointer<UInt8>>, Slice<UnsafeBufferPointer<UInt8>>)? {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else { return nil }
            let name = line[line.startIndex..<colon]
            guard name.allSatisfy(ASCII.isTokenCharacter) else { return nil }
            var value = line[(colon + 1)...]
            guard value.allSatisfy({ ($0 >= 0x20 && $0 < 0x7F) || $0 == 0x09 }) else { return nil }
            while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
            while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
            return (name, value)
        }

        private static let method = Array("GET ".utf8)
        private static let version = Array(" HTTP/1.1".utf8)
        private static let headEnd = Array("\r\n\r\n".utf8)
        private static let authorizationName = Array("authorization".utf8)
        private static let ifNoneMatchName = Array("if-none-match".utf8)
        private static let connectionName = Array("connection".utf8)
        private static let keepAlive = Array("keep-alive".utf8)
        private static let contentLengthName = Array("content-length".utf8)
        private static let transferEncodingName = Array("transfer-encoding".utf8)
        private static let expectName = Array("expect".utf8)
        private static let upgradeName = Array("upgrade".utf8)
    }

    /// The lines of a request head, each without its CRLF; `nil` at a bare CR or LF.
    private struct LineReader {
        let bytes: UnsafeBufferPointer<UInt8>
        var position = 0
        var failed = false

        init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        var isAtEnd: Bool { !failed && position == bytes.count }

        mutating func next() -> Slice<UnsafeBufferPointer<UInt8>>? {
            guard !failed, position < bytes.count else { return nil }
            var index = position
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\r"):
                    guard index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\n") else {
                        failed = true
                        return nil
                    }
                    let line = bytes[position..<index]
                    position = index + 2
                    return line
                case UInt8(ascii: "\n"):
                    failed = true
                    return nil
                default:
                    index += 1
                }
            }
            failed = true
            return nil
        }
    }

    private let dependencies: DesiredStatePollHandler.Dependencies
    /// Whether every request passed on has been answered and the decoder is between requests: only then may this
    /// handler answer one.
    private var downstreamIdle = true
    /// Where the bytes passed on leave the decoder: a read that ended mid-head, or a body the router answered before
    /// reading it, leaves the decoder expecting more of that request.
    private var framing = RequestFraming()
    private var guardHandler: ConnectionGuardHandler?

    init(_ dependencies: DesiredStatePollHandler.Dependencies) {
        self.dependencies = dependencies
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // A pipeline built without the guard (in-process tests) has nothing to report to.
        guardHandler = try? context.pipeline.syncOperations.handler(type: ConnectionGuardHandler.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        guardHandler = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // An unwritable socket (a client that does not read its answers) goes the decoder's way too, which stops
        // reading and closes a slow reader; answering here would queue answers without bound.
        if downstreamIdle, context.channel.isWritable {
            let startedAt = ContinuousClock.now
            let buffer = unwrapInboundIn(data)
            if let state = buffer.withUnsafeReadableBytes({ answerable($0) }) {
                context.writeAndFlush(
                    wrapOutboundOut(Self.notModifiedHead(state.notModifiedResponse, allocator: context.channel.allocator)),
                    promise: nil
                )
                guardHandler?.requestAnsweredAtOnce()
                dependencies.recordAnswer(notModified: true, after: ContinuousClock.now - startedAt)
                dependencies.metrics.desiredStateFastPath.increment()
                return
            }
        }
        // Set before passing on: the poll handler may answer (and say so) before this returns.
        downstreamIdle = false
        unwrapInboundIn(data).withUnsafeReadableBytes { framing.consume($0) }
        context.fireChannelRead(data)
    }

    /// Called by `DesiredStatePollHandler` whenever every request it was given has been answered; the fast path opens
    /// again only if the decoder holds no part of a request either.
    func downstreamBecameIdle() {
        downstreamIdle = framing.isBetweenRequests
    }

    /// Called by `DesiredStatePollHandler` for every request head it is given: that request is unanswered.
    func downstreamBecameBusy() {
        downstreamIdle = false
    }

    /// Called by `DesiredStatePollHandler` when an error reaches it (the decoder refused a head the framing took for a
    /// complete one): the decoder is in no known state, so this connection's requests all go its way from now on. Else
    /// a poll that arrived before the router's 400 was written would be answered first, out of order.
    func downstreamFailed() {
        connectionEnding()
    }

    /// Called by `RequestPersistenceHandler` for a request after which the connection ends: nothing behind it is
    /// answered here (the output closes once that request's answer is written).
    func connectionEnding() {
        framing.lose()
        downstreamIdle = false
    }

    /// The agent's state when `bytes` are a poll this handler answers with a 304.
    private func answerable(_ bytes: UnsafeRawBufferPointer) -> RenderedDesiredState? {
        guard let poll = Poll(bytes),
            let principal = dependencies.authenticator.cachedPrincipal(forToken: poll.token[...]),
            principal.role == .agent, principal.agentID == poll.agentID,
            let state = dependencies.desiredStates.cached(for: poll.agentID),
            state.isMatched(byIfNoneMatch: poll.ifNoneMatch)
        else { return nil }
        return state
    }

    /// The head NIO's HTTP/1.1 encoder writes for `response`, a 304, with the current `Date` (last, as the router's and
    /// the poll handler's answers have it): the encoder drops a 304's framing headers (`Content-Length`,
    /// `Transfer-Encoding`), so this does too.
    static func notModifiedHead(_ response: HTTPResponse, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 192)
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeString(String(response.status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(response.status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        for field in response.headerFields where field.name != .contentLength && field.name != .transferEncoding {
            buffer.writeString(field.name.rawName)
            buffer.writeStaticString(": ")
            buffer.writeString(field.value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("Date: ")
        buffer.writeString(HTTPDate.now)
        buffer.writeStaticString("\r\n\r\n")
        return buffer
    }
}
