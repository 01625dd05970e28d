/// How long clients may take and how many connections the server keeps (`serve --header-timeout`, `--idle-timeout`,
/// `--max-connections`).
struct ConnectionLimits: Sendable, Equatable {
    /// A request head (and, on a new connection, the TLS handshake before it) must be complete within this. Default
    /// 15 s: agents and operators send a whole head at once; a client still sending headers after that is broken or
    /// hostile (slowloris).
    var headerTimeout: Duration = .seconds(15)
    /// A kept-alive connection with no request, a request body with no new byte, or an answer the client does not read
    /// is closed after this. Default 75 s: longer than an AWS load balancer's default 60 s idle timeout, so the proxy
    /// (not the controller) closes idle upstream connections and never reuses one the controller just closed. Parked
    /// long-polls are requests in flight and are not affected.
    var idleTimeout: Duration = .seconds(75)
    /// Open connections kept at most; past it the longest-idle connection (no request in flight) is closed to make
    /// room, or the new one is when every connection is busy. Default 16,384: 10,000 agents each holding one
    /// long-poll, plus reconnects racing the close of their previous connection during a restart or deploy wave,
    /// operators and dashboards, with about 60% headroom.
    var maximumConnections: Int = 16_384
    /// Request body bytes all connections together may hold in memory while the bodies arrive (`BodyBudget`); past it a
    /// body is answered 503 with `Retry-After`, and so is one past its token's share (two of the largest body the limits
    /// allow). Default `nil`: 256 MiB, or 64 of the largest body if that is more (`--max-status-bytes 64M` would otherwise
    /// let four reports fill it). 10,000 status reports of a few kilobytes arriving at once use a tenth of it, while one
    /// agent's token can no longer hold a report of just under its limit open on every connection.
    var maximumBodyBytesInFlight: Int? = nil

    /// File descriptors kept for everything that is not a client connection (SQLite, artifact files being served or
    /// stored, the listening socket, logs).
    static let reservedFileDescriptors = 256

    /// Accepted ranges, checked where the settings are read.
    static let headerTimeoutRange: ClosedRange<Duration> = .seconds(1) ... .seconds(600)
    static let idleTimeoutRange: ClosedRange<Duration> = .seconds(1) ... .seconds(3600)
    static let maximumConnectionsRange: ClosedRange<Int> = 1...1_000_000
}
