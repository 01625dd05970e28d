import Shared

/// Follows HTTP/1.1 request framing over the bytes a connection hands to the HTTP decoder, just far enough to say
/// whether the decoder is **between two requests**: every head it was given is complete and so is every body. Only then
/// may `DesiredStateFastPath` answer a read itself. Answered from its raw bytes while the decoder still held the start of
/// a request head (a read that ended mid-head), or the rest of a body the router answered before reading it, a poll's
/// bytes would be taken for that head's headers or that body by the decoder, and the answers would no longer follow the
/// requests: behind a proxy that shares backend connections, another client's answer.
///
/// It errs one way only: anything it does not follow exactly (a `Transfer-Encoding`, two `Content-Length`s, a bare CR
/// or LF, `Upgrade`, a head over `maximumHead`, or over `maximumSplitHead` when split over reads) makes it `lost` for the rest of the connection, which turns the fast path
/// off there; everything then goes through the decoder, as it would without the fast path.
struct RequestFraming: Equatable {
    enum State: Equatable {
        case between
        /// A head started and not complete; its bytes so far are kept.
        case head
        case body(remaining: Int)
        case lost
    }

    private(set) var state = State.between
    /// The start of a head split over reads.
    private var partial: [UInt8] = []

    /// Longer heads are not followed (NIO's decoder refuses heads well below this).
    static let maximumHead = 80 * 1024
    /// Longer heads split over reads are not followed: their start is copied (`partial`), and a slow client sending
    /// heads of almost `maximumHead` held twice that on every connection (an array's growth) beside what the decoder
    /// holds. An agent's head is well under a kilobyte; a client whose heads are larger only loses the fast path.
    static let maximumSplitHead = 8 * 1024

    var isBetweenRequests: Bool { state == .between }

    /// Follows `bytes`, the next bytes handed to the decoder.
    mutating func consume(_ bytes: UnsafeRawBufferPointer) {
        var rest = bytes[...]
        while !rest.isEmpty {
            switch state {
            case .lost:
                return
            case .body(let remaining):
                let taken = min(remaining, rest.count)
                rest = rest.dropFirst(taken)
                state = remaining == taken ? .between : .body(remaining: remaining - taken)
            case .between:
                guard let end = Self.endOfHead(in: rest, after: []) else {
                    guard rest.count <= Self.maximumSplitHead, !Self.hasBareLineBreak(rest, after: []) else { return lose() }
                    partial = Array(rest)
                    state = .head
                    return
                }
                let head = UnsafeRawBufferPointer(rebasing: rest[..<end])
                guard let length = Self.bodyLength(head) else { return lose() }
                rest = rest[end...]
                state = length > 0 ? .body(remaining: length) : .between
            case .head:
                if let end = Self.endOfHead(in: rest, after: partial) {
                    partial += rest[..<end]
                    rest = rest[end...]
                    let length = partial.withUnsafeBytes { Self.bodyLength($0) }
                    partial = []
                    guard let length else { return lose() }
                    state = length > 0 ? .body(remaining: length) : .between
                } else {
                    guard partial.count + rest.count <= Self.maximumSplitHead, !Self.hasBareLineBreak(rest, after: partial) else {
                        return lose()
                    }
                    partial += rest
                    return
                }
            }
        }
    }

    /// Follows nothing more on this connection (also when the decoder failed: it is in no known state).
    mutating func lose() {
        state = .lost
        partial = []
    }

    /// The index in `bytes` just past the `\r\n\r\n` that ends a head begun with `before`, if it is in `bytes`.
    private static func endOfHead(in bytes: Slice<UnsafeRawBufferPointer>, after before: [UInt8]) -> Int? {
        // The last three bytes before `bytes` may start the terminator.
        var window = UInt32(0)
        for byte in before.suffix(3) { window = (window << 8) | UInt32(byte) }
        for index in bytes.indices {
            window = (window << 8) | UInt32(bytes[index])
            if window == 0x0D0A_0D0A { return index + 1 }
        }
        return nil
    }

    /// Whether `bytes` (following `before`) hold a CR not followed by LF or an LF not preceded by CR, which a decoder may
    /// read as a line break where this framing would not.
    private static func hasBareLineBreak(_ bytes: Slice<UnsafeRawBufferPointer>, after before: [UInt8]) -> Bool {
        var previous = before.last ?? 0
        for byte in bytes {
            if byte == 0x0A, previous != 0x0D { return true }
            if previous == 0x0D, byte != 0x0A { return true }
            previous = byte
        }
        return false
    }

    /// The body length a complete head (ending with `\r\n\r\n`) declares: its one `Content-Length`, or 0; `nil` for a
    /// head this framing does not follow.
    static func bodyLength(_ head: UnsafeRawBufferPointer) -> Int? {
        guard !hasBareLineBreak(head[...], after: []) else { return nil }
        var length: Int?
        var lineStart = 0
        var first = true
        for index in head.indices where index > 0 && head[index - 1] == 0x0D && head[index] == 0x0A {
            let line = head[lineStart..<(index - 1)]
            lineStart = index + 1
            if first {
                // Leading empty lines before a request line are skipped by decoders.
                if line.isEmpty { continue }
                first = false
                if line.count > Self.connect.count, Self.equalsLowercased(line.prefix(Self.connect.count), Self.connect) { return nil }
                continue
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = line[line.startIndex..<colon]
            if Self.equalsLowercased(name, Self.transferEncoding) || Self.equalsLowercased(name, Self.upgrade) { return nil }
            guard Self.equalsLowercased(name, Self.contentLength) else { continue }
            guard length == nil else { return nil }
            var value = line[(colon + 1)...]
            while let byte = value.first, byte == 0x20 || byte == 0x09 { value = value.dropFirst() }
            while let byte = value.last, byte == 0x20 || byte == 0x09 { value = value.dropLast() }
            guard !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            length = value.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        }
        return length ?? 0
    }

    private static let connect = Array("connect ".utf8)
    private static let transferEncoding = Array("transfer-encoding".utf8)
    private static let upgrade = Array("upgrade".utf8)
    private static let contentLength = Array("content-length".utf8)

    private static func equalsLowercased(_ bytes: Slice<UnsafeRawBufferPointer>, _ lowercase: [UInt8]) -> Bool {
        bytes.count == lowercase.count && zip(bytes, lowercase).allSatisfy { ASCII.lowercased($0) == $1 }
    }
}
