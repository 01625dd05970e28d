import Shared

/// An incremental reader of a `text/event-stream` body (the HTML standard's "server-sent events"): feed it bytes as
/// they arrive, take the complete messages. Comments (`: keep-alive`) are counted, not returned.
struct ServerSentEvents: Sendable {
    /// One dispatched message.
    struct Message: Sendable, Equatable {
        /// The last `id:` seen (it carries over to later messages, as `EventSource` does).
        var id: String?
        var event: String?
        var data: String
    }

    /// Longest line kept, and most data one message gathers; more is a broken stream (the controller's events are a
    /// few KiB).
    static let maximumLineBytes = 1 << 20

    private var buffer: [UInt8] = []
    /// Bytes of `buffer` already searched for a line end: a long line arriving a few bytes at a time is searched once,
    /// not once per piece.
    private var scanned = 0
    private var data: [String] = []
    /// Bytes of `data` (and the newlines joining them).
    private var dataBytes = 0
    private var event: String?
    private(set) var lastID: String?
    /// Comment lines seen (keep-alives).
    private(set) var comments = 0

    /// A line, or a message's data lines together, longer than `maximumLineBytes`.
    struct LineTooLong: Error, CustomStringConvertible {
        /// Whether the data lines of one message were (each line within the limit), not one line.
        var message = false

        var description: String {
            message
                ? "the event stream sent a message with more than \(ServerSentEvents.maximumLineBytes) bytes of data"
                : "the event stream sent a line longer than \(ServerSentEvents.maximumLineBytes) bytes"
        }
    }

    /// Takes in `bytes` and returns the messages they complete.
    mutating func feed(_ bytes: [UInt8]) throws(LineTooLong) -> [Message] {
        buffer += bytes
        var messages: [Message] = []
        var start = 0
        while let newline = buffer[max(start, scanned)...].firstIndex(of: 0x0A) {
            var line = buffer[start..<newline]
            if line.last == 0x0D { line = line.dropLast() }
            start = newline + 1
            if let message = try take(String(decoding: line, as: UTF8.self)) { messages.append(message) }
        }
        buffer.removeFirst(start)
        scanned = buffer.count
        guard buffer.count <= Self.maximumLineBytes else { throw LineTooLong() }
        return messages
    }

    private mutating func take(_ line: String) throws(LineTooLong) -> Message? {
        if line.isEmpty {
            defer {
                data = []
                dataBytes = 0
                event = nil
            }
            guard !data.isEmpty else { return nil }
            return Message(id: lastID, event: event, data: data.joined(separator: "\n"))
        }
        if line.hasPrefix(":") {
            comments += 1
            return nil
        }
        let field: Substring
        var value: Substring
        if let colon = line.firstIndex(of: ":") {
            field = line[..<colon]
            value = line[line.index(after: colon)...]
            if value.hasPrefix(" ") { value = value.dropFirst() }
        } else {
            field = Substring(line)
            value = ""
        }
        switch field {
        case "data":
            dataBytes += value.utf8.count + 1
            guard dataBytes <= Self.maximumLineBytes + 1 else { throw LineTooLong(message: true) }
            data.append(String(value))
        case "id" where !value.contains("\0"): lastID = String(value)
        case "event": event = String(value)
        default: break  // `retry` and unknown fields: nothing to do for this reader
        }
        return nil
    }
}

extension OperatorClient {
    /// Follows `GET path` (an event stream) and calls `onEvent` with each event's JSON as it arrives, until the stream
    /// ends (the controller shut down: returns), the task is cancelled, or no byte (not even a keep-alive comment)
    /// arrives for `idleTimeout`.
    /// - Throws: `ClientError` (an error answer, the connection); `onEvent`'s error.
    func followEvents(
        _ path: String,
        idleTimeout: Duration = .seconds(45),
        onEvent: @escaping @Sendable (JSONValue) throws -> Void
    ) async throws {
        var request = HTTPClient.Request(method: .get, url: baseURL + path)
        request.setBearerToken(token)
        request.headers["Accept"] = "text/event-stream"
        var reader = ServerSentEvents()
        let response: HTTPClient.Response
        do {
            response = try await http.stream(request, idleTimeout: idleTimeout) { bytes in
                for message in try reader.feed(bytes) {
                    let event: JSONValue
                    do {
                        event = try JSONValue.parse(Array(message.data.utf8))
                    } catch {
                        throw ClientError.badResponse(
                            method: "GET",
                            url: RedactedURL.redact(request.url),
                            reason: "an event that is not JSON: \(error)"
                        )
                    }
                    try onEvent(event)
                }
            }
        } catch {
            if case .handlerFailed(_, let underlying) = error { throw underlying }
            throw Self.transportError(error, request: request)
        }
        guard (200..<300).contains(response.status) else {
            _ = try Self.decode(response, request: request, expecting: [200])
            return
        }
    }
}
