/// When one connection must be closed because its client is too slow or silent: the single owner of a connection's
/// timeout state.
///
/// A connection is in one of these situations, and each has its own limit:
/// - **waiting for a request head**: a new connection, or bytes of a next request on a kept-alive one. The head must be
///   complete within `headerTimeout` of the connection opening (TLS handshake included) or of that first byte
///   (slowloris: headers that never end);
/// - **idle**: kept alive with no request; closed after `idleTimeout`;
/// - **reading a request body**: closed when no byte arrived for `idleTimeout` (a stalled upload), or when, past its
///   first `idleTimeout`, the body has arrived at less than `minimumBodyRate` on average: a byte a minute kept a
///   request in flight for ever, and a connection with a request in flight is never shed at the connection cap, so one
///   token could hold every connection;
/// - **answering**: no limit while the client reads what it is sent — a parked long-poll holds a request here for up to
///   its `wait` — but closed when the client has not read for `idleTimeout` (the socket stays unwritable).
///
/// Events are `mutating func`s; `expiry` says when the next check is due and why. The value lives on the connection's
/// event loop (`ConnectionGuardHandler`); tests drive it with explicit instants.
struct ConnectionTimeouts: Sendable {
    /// Why a connection was closed.
    enum Reason: String, Sendable, CaseIterable {
        /// A request head was not complete in time.
        case header
        /// Nothing happened on a kept-alive connection.
        case idle
        /// A request body stopped arriving.
        case body
        /// The client stopped reading the answer.
        case slowReader = "slow-reader"
    }

    /// A deadline and what it is for.
    struct Expiry: Sendable, Equatable {
        var instant: ContinuousClock.Instant
        var reason: Reason
    }

    let headerTimeout: Duration
    let idleTimeout: Duration
    /// Bytes a second a request body must average once it has had `idleTimeout`: 1 KiB. An agent's report arrives in
    /// one read; an operator's artifact upload at a slow link's pace still passes it by far.
    static let minimumBodyRate = 1024

    /// Requests whose head arrived and whose answer has not ended.
    private(set) var requestsInFlight = 0
    /// A request head arrived and its `end` did not.
    private var readingBody = false
    /// When the body being read began (its head arrived), and its bytes so far (saturating).
    private var bodyStartedAt: ContinuousClock.Instant?
    private var bodyBytes = 0
    /// When the wait for the current request head began (connection open, or a first byte after idling).
    private var headStartedAt: ContinuousClock.Instant?
    /// When the last answer ended, while no bytes of a next request arrived.
    private var idleSince: ContinuousClock.Instant?
    private var lastReadAt: ContinuousClock.Instant
    private var unwritableSince: ContinuousClock.Instant?

    /// A connection that opened at `openedAt`: it owes a request head within `headerTimeout`.
    init(openedAt: ContinuousClock.Instant, headerTimeout: Duration, idleTimeout: Duration) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.headStartedAt = openedAt
        self.lastReadAt = openedAt
    }

    /// Whether no request is in flight: such a connection may be shed when the connection cap is reached.
    var isIdle: Bool { requestsInFlight == 0 }

    /// `count` bytes arrived (any: head, body, the next request).
    mutating func bytesReceived(_ count: Int = 0, at now: ContinuousClock.Instant) {
        lastReadAt = now
        if readingBody { bodyBytes = bodyBytes > Int.max - max(0, count) ? Int.max : bodyBytes + max(0, count) }
        // The rest of the body of a request answered already (a 401 or 413 before its upload ended) is no next head:
        // it started the header timeout, and the kept-alive connection was closed 15 s later as a slowloris, where a
        // proxy in front (an ALB keeps connections 60 s) may send its next request on it.
        if requestsInFlight == 0, headStartedAt == nil, !readingBody {
            headStartedAt = now
            idleSince = nil
        }
    }

    /// A complete request head was parsed.
    mutating func requestHeadReceived(at now: ContinuousClock.Instant) {
        requestsInFlight += 1
        readingBody = true
        bodyStartedAt = now
        bodyBytes = 0
        headStartedAt = nil
        idleSince = nil
        lastReadAt = now
    }

    /// The request's body (possibly empty) is complete.
    mutating func requestEnded(at now: ContinuousClock.Instant) {
        readingBody = false
        lastReadAt = now
    }

    /// An answer was completely handed to the connection. Answered before its body ended, the request's body still
    /// arrives (`readingBody`): the connection is idle from now, and the body must end within the idle timeout.
    mutating func responseEnded(at now: ContinuousClock.Instant) {
        guard requestsInFlight > 0 else { return }
        requestsInFlight -= 1
        if requestsInFlight == 0 {
            headStartedAt = nil
            idleSince = now
        }
    }

    /// A request whose head, end and answer all happened at `now` (a poll answered from its raw bytes): the three events
    /// above in order.
    mutating func requestAnsweredAtOnce(at now: ContinuousClock.Instant) {
        requestHeadReceived(at: now)
        requestEnded(at: now)
        responseEnded(at: now)
    }

    /// The socket's send buffer filled up (the client is not reading) or drained again.
    mutating func writabilityChanged(isWritable: Bool, at now: ContinuousClock.Instant) {
        if isWritable {
            unwritableSince = nil
        } else if unwritableSince == nil {
            unwritableSince = now
        }
    }

    /// The next deadline, or `nil` while the connection may stay as long as it likes (answering a reading client).
    ///
    /// A client that stopped reading is a slow reader whether or not a request is in flight: answers written at once (a
    /// poll answered from its raw bytes) leave none in flight while they pile up unsent.
    var expiry: Expiry? {
        let slowReader = unwritableSince.map { Expiry(instant: $0 + idleTimeout, reason: .slowReader) }
        let other: Expiry?
        if requestsInFlight == 0 {
            if let headStartedAt {
                other = Expiry(instant: headStartedAt + headerTimeout, reason: .header)
            } else if let idleSince {
                other = Expiry(instant: idleSince + idleTimeout, reason: .idle)
            } else {
                other = nil
            }
        } else if readingBody {
            let stalled = lastReadAt + idleTimeout
            // By the minimum rate, the bytes so far buy this much time past the first idle timeout.
            let rate = Self.minimumBodyRate
            let bought = Duration.seconds(bodyBytes / rate) + .milliseconds((bodyBytes % rate) * 1000 / rate)
            let slow = bodyStartedAt.map { $0 + idleTimeout + bought } ?? stalled
            other = Expiry(instant: min(stalled, slow), reason: .body)
        } else {
            other = nil
        }
        guard let other else { return slowReader }
        guard let slowReader, slowReader.instant < other.instant else { return other }
        return slowReader
    }

    /// Why the connection must close at `now`, or `nil` when it may stay.
    func expired(at now: ContinuousClock.Instant) -> Reason? {
        guard let expiry, now >= expiry.instant else { return nil }
        return expiry.reason
    }
}
