import CCurl
import Glibc
import Synchronization

/// One long-lived libcurl easy handle and the one thread that drives it: requests run one after the other and reuse
/// the connection the handle keeps open — the TCP connection and the TLS session stay up between requests (as long as
/// the server keeps them; a closed one is reopened on the next request), instead of a new handle, connection, TLS
/// handshake and thread per request as with `HTTPClient.send`.
///
/// Made for an agent's conversation with its controller: a long-poll, a status report, the next long-poll. The thread
/// is started with the first request and sleeps (in `poll(2)`, no CPU) between requests, and during a request until
/// something happens on its socket (`CurlMultiDriver`: not once a second, as in `curl_easy_perform`); it stops when the
/// connection is closed or released. Requests queue in arrival order; a cancelled request that has not started yet is answered
/// `.cancelled` without being sent; one in flight is aborted as with `HTTPClient.send` (which closes the connection).
package final class HTTPConnection: Sendable {
    /// What the thread shares with callers. Kept apart from `HTTPConnection` so the thread does not keep it alive:
    /// releasing the connection stops the thread.
    private final class Queue: Sendable {
        /// Runs on the thread with its easy handle and the multi handle that drives it (`nil` when libcurl could not
        /// make one: `curl_easy_perform` then).
        typealias Job = @Sendable (UnsafeMutableRawPointer?, CurlMultiDriver?) -> Void

        private struct State {
            var jobs: [Job] = []
            var started = false
            var closed = false
        }

        private let state = Mutex(State())
        private let wake: PipeDescriptors?
        let wakeups = WakeCount()

        init() {
            wake = try? PipeDescriptors.open(nonBlocking: true)
        }

        deinit {
            // After the thread ended (it holds the queue while it runs).
            if let wake {
                Glibc.close(wake.readEnd)
                Glibc.close(wake.writeEnd)
            }
        }

        /// Queues `job`; `false` when the connection is closed (the job is not run).
        func submit(_ job: @escaping Job) -> Bool {
            let startThread = state.withLock { state -> Bool? in
                guard !state.closed else { return nil }
                state.jobs.append(job)
                defer { state.started = true }
                return !state.started
            }
            guard let startThread else { return false }
            if startThread {
                do {
                    try DedicatedThread.detach(name: "http connection") { [self] in runLoop() }
                } catch {
                    // No thread: run the jobs here (the caller's thread blocks; still correct).
                    state.withLock { $0.started = false }
                    drainWithoutThread()
                    return true
                }
            }
            signal()
            return true
        }

        func close() {
            state.withLock { $0.closed = true }
            signal()
        }

        var isClosed: Bool { state.withLock { $0.closed } }

        /// Blocks the thread (in `poll(2)`, no CPU) until `deadline`, or sooner when the connection is closed or `flag`
        /// is cancelled (`interrupt()` wakes it then).
        func pause(until deadline: ContinuousClock.Instant, cancellation flag: CancellationFlag) {
            while !flag.isCancelled, !isClosed {
                let left = ContinuousClock.now.duration(to: deadline)
                guard left > .zero else { return }
                waitForSignal(timeout: left)
            }
        }

        /// Wakes the thread from `pause(until:cancellation:)` (a cancelled request).
        func interrupt() { signal() }

        private func signal() {
            guard let wake else { return }
            var byte: UInt8 = 1
            _ = write(wake.writeEnd, &byte, 1)
        }

        private func next() -> (job: Job?, closed: Bool) {
            state.withLock { state in
                state.jobs.isEmpty ? (nil, state.closed) : (state.jobs.removeFirst(), false)
            }
        }

        /// The thread: owns the easy handle and the multi handle (which keeps the open connection) from start to end.
        private func runLoop() {
            let handle = CurlTransfer.makeHandle()
            let driver = CurlMultiDriver(wakeFD: wake?.readEnd, wakeups: wakeups)
            defer { if let handle { curl_easy_cleanup(handle) } }
            while true {
                let (job, closed) = next()
                if let job {
                    job(handle, driver)
                    continue
                }
                if closed { return }
                waitForSignal()
            }
        }

        /// Waits for `signal()`, at most `timeout` (`nil`: no limit).
        private func waitForSignal(timeout: Duration? = nil) {
            guard let wake else {
                usleep(1000)
                return
            }
            var descriptor = pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, timeout.map(HTTPConnection.pollTimeout) ?? -1)
            var buffer = [UInt8](repeating: 0, count: 64)
            while read(wake.readEnd, &buffer, buffer.count) > 0 {}
        }

        private func drainWithoutThread() {
            let handle = CurlTransfer.makeHandle()
            defer { if let handle { curl_easy_cleanup(handle) } }
            while let job = next().job { job(handle, nil) }
        }
    }

    package let configuration: HTTPClient.Configuration
    private let queue = Queue()

    package init(configuration: HTTPClient.Configuration = .init()) {
        self.configuration = configuration
    }

    deinit {
        queue.close()
    }

    /// Performs `request` over the kept-open connection and returns the whole response, whatever its status.
    ///
    /// With `notBefore`, the connection's thread waits until then before sending (a poll loop's interval): the wait
    /// costs no timer of the concurrency runtime and no wake-up of one of its threads, only the connection thread's
    /// own `poll(2)` timeout. Cancelling the request, or closing the connection, ends the wait at once.
    /// - Throws: as `HTTPClient.send`; `.cancelled` also when the connection was closed before the request was sent.
    package func send(
        _ request: HTTPClient.Request,
        notBefore start: ContinuousClock.Instant? = nil
    ) async throws(HTTPClientError) -> HTTPClient.Response {
        let url = RedactedURL.redact(request.url)
        try HTTPClient.validate(request.url, headers: request.headers)
        if Task.isCancelled { throw .cancelled(url: url) }
        let configuration = self.configuration
        let flag = CancellationFlag()
        let queue = self.queue
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<HTTPClient.Response, HTTPClientError>, Never>) in
                let queued = queue.submit { handle, driver in
                    if let start { queue.pause(until: start, cancellation: flag) }
                    guard !flag.isCancelled, start == nil || !queue.isClosed else {
                        return continuation.resume(returning: .failure(.cancelled(url: url)))
                    }
                    continuation.resume(
                        returning: CurlTransfer.send(request, configuration: configuration, cancellation: flag, reusing: handle, driver: driver)
                    )
                }
                if !queued { continuation.resume(returning: .failure(.cancelled(url: url))) }
            }
        } onCancel: {
            flag.cancel()
            queue.interrupt()
        }
        return try result.get()
    }

    /// How many times the connection's thread woke up while a request was in flight, over the connection's life: once
    /// per event on its socket or timer of libcurl's, never once a second for nothing (a held long-poll adds about
    /// one). For tests and diagnostics.
    package var transferWakeups: Int { queue.wakeups.value.load(ordering: .relaxed) }

    /// Stops the thread once the queued requests are done and closes the connection.
    package func close() {
        queue.close()
    }
}

extension HTTPConnection {
    /// `timeout` as `poll(2)` takes it: whole milliseconds, rounded up (a pause never ends early), at most a day; 0 for
    /// a negative duration.
    package static func pollTimeout(_ timeout: Duration) -> Int32 {
        let (seconds, attoseconds) = timeout.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        guard seconds < 86_400 else { return 86_400_000 }
        let partial = (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(seconds * 1000 + partial)
    }
}
