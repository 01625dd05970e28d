import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Shared
import Synchronization

/// Hummingbird's HTTP/1.1 channel (the same pipeline, `HTTP1Channel.setup`), with a connection loop that answers each
/// request in a task of its own.
///
/// A Swift task keeps every slab its stack allocator ever took until the task ends (`swift::StackAllocator` frees
/// slabs only in its destructor), and a connection's task lives as long as the connection. Hummingbird's own loop runs
/// the responder — the router, the response's writing — in the connection's task, so an idle kept-alive connection
/// holds the high-water mark of those frames; at 10,000 kept-alive agents that was the largest part of the
/// controller's memory (docs/benchmarks.md, fleet scale). Here the connection's task only reads request heads and
/// waits; the responder runs in a task whose memory is freed when its answer is written. Not an `async let` child:
/// its storage and the request's would sit in the connection task's frame (measured: 16.0 KB per idle connection
/// with one, 14.2 KB with a task of its own).
///
/// Same behaviour as `HTTPChannelHandler.handleHTTP`: requests are answered one at a time in arrival order, a body the
/// responder does not read is drained before the next head, `Connection: close` ends the connection after its answer,
/// an HTTP parse error is answered `400` and closes it, and cancelling the connection's task closes its input and
/// cancels the request being answered (as a child task would be). The request's task inherits the task-local values.
struct ChildTaskHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel

    var responder: HTTPChannelHandler.Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger)
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        let responder = base.responder
        let answering = AnsweringTask()
        do {
            try await withTaskCancellationHandler {
                try await asyncChannel.executeThenClose { inbound, outbound in
                    let parts = RequestParts(inbound.makeAsyncIterator())
                    do {
                        while let head = try await parts.nextHead() {
                            let task = Self.answer(head, parts: parts, outbound: outbound, channel: asyncChannel.channel, responder: responder)
                            answering.begin(task)
                            defer { answering.end() }
                            try await task.value
                            // Token match, any case ("Close", "keep-alive, close"), as llhttp and the poll handler read it.
                            if DesiredStatePollHandler.closesConnection(head) { break }
                        }
                    } catch is HTTPParserError {
                        logger.debug("HTTP parse error, closing connection")
                        try await outbound.write(.head(.init(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])))
                        try await outbound.write(.end(nil))
                    }
                    outbound.finish()
                    try await asyncChannel.channel.closeFuture.get()
                }
            } onCancel: {
                answering.cancel()
                asyncChannel.channel.close(mode: .input, promise: nil)
            }
        } catch {
            // Reading or writing the connection failed (it is closed either way).
            logger.trace("Failed to read/write to Channel. Error: \(error)")
        }
    }
}

extension ChildTaskHTTP1Channel {
    /// Starts answering one request in a task of its own (the connection's task waits for it).
    static func answer(
        _ head: HTTPRequest,
        parts: RequestParts,
        outbound: NIOAsyncChannelOutboundWriter<HTTPResponsePart>,
        channel: any Channel,
        responder: @escaping HTTPChannelHandler.Responder
    ) -> Task<Void, any Error> {
        Task {
            try await responder(Request(head: head, body: RequestBody(asyncSequence: parts.body)), ResponseWriter(outbound: outbound), channel)
        }
    }
}

/// The task answering a connection's current request, for the connection's cancellation handler: cancelling the
/// connection cancels it, whether the cancellation comes before, during or after it starts.
final class AnsweringTask: Sendable {
    private struct State {
        var task: Task<Void, any Error>?
        var cancelled = false
    }

    private let state = Mutex(State())

    func begin(_ task: Task<Void, any Error>) {
        let cancelled = state.withLock { state in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func end() {
        state.withLock { $0.task = nil }
    }

    func cancel() {
        let task = state.withLock { state in
            state.cancelled = true
            return state.task
        }
        task?.cancel()
    }
}

/// A connection's request parts, read in order by the connection's task (heads) and the child answering the current
/// request (its body): never both at once, since the connection's task waits for the child.
final class RequestParts: @unchecked Sendable {
    /// A part that cannot come where it came (a body before any head, a head inside a body).
    struct UnexpectedPart: Error, CustomStringConvertible {
        let part: HTTPRequestPart
        var description: String { "unexpected HTTP request part: \(part)" }
    }

    private var iterator: NIOAsyncChannelInboundStream<HTTPRequestPart>.AsyncIterator
    /// Whether the current request's `.end` is still to come.
    private var inBody = false

    init(_ iterator: NIOAsyncChannelInboundStream<HTTPRequestPart>.AsyncIterator) {
        self.iterator = iterator
    }

    /// The next request's head, after the rest of the current request's body (dropped); `nil` once the connection's
    /// input ended.
    func nextHead() async throws -> HTTPRequest? {
        while inBody {
            _ = try await nextBodyPart()
        }
        guard let part = try await iterator.next() else { return nil }
        guard case .head(let head) = part else { throw UnexpectedPart(part: part) }
        inBody = true
        return head
    }

    /// The current request's next body buffer; `nil` at its end.
    func nextBodyPart() async throws -> ByteBuffer? {
        guard inBody else { return nil }
        switch try await iterator.next() {
        case .body(let buffer):
            return buffer
        case .end, nil:
            inBody = false
            return nil
        case .head(let head):
            inBody = false
            throw UnexpectedPart(part: .head(head))
        }
    }

    /// The current request's body.
    var body: Body { Body(parts: self) }

    struct Body: AsyncSequence, Sendable {
        typealias Element = ByteBuffer
        let parts: RequestParts

        func makeAsyncIterator() -> Iterator { Iterator(parts: parts) }

        struct Iterator: AsyncIteratorProtocol {
            let parts: RequestParts
            func next() async throws -> ByteBuffer? { try await parts.nextBodyPart() }
        }
    }
}
