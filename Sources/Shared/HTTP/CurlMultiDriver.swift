import CCurl
import Glibc
import Synchronization

/// Runs the transfers of one kept-open easy handle through a libcurl multi handle, on the thread that owns both
/// (`HTTPConnection`'s).
///
/// Why not `curl_easy_perform`: it waits in `curl_multi_poll` for at most one second at a time, so a long-poll the
/// controller holds for 30 s wakes the thread 30 times to find nothing to do. Here the thread sleeps until a socket is
/// ready, libcurl's next timer is due (the request's timeout, a resolver's), or `wakeFD` becomes readable (a request was
/// cancelled, or another was queued), whichever comes first: an idle long-poll costs no wake-up at all.
///
/// The connection cache is the multi handle's: the easy handle is added for each transfer and removed afterwards, and
/// the connection it used stays open in the multi handle for the next transfer.
final class CurlMultiDriver {
    private let multi: UnsafeMutableRawPointer
    /// The owner's wake-up pipe (read end, non-blocking), or `nil`: then the wait is cut into seconds so that a
    /// cancellation is still seen (by the progress callback) within one.
    private let wakeFD: Int32?
    private let wakeups: WakeCount

    /// `nil` when libcurl cannot make a multi handle. `wakeups` counts the returns from the wait during transfers.
    init?(wakeFD: Int32?, wakeups: WakeCount) {
        guard let multi = CurlTransfer.makeMultiHandle() else { return nil }
        self.multi = multi
        self.wakeFD = wakeFD
        self.wakeups = wakeups
    }

    deinit {
        curl_multi_cleanup(multi)
    }

    /// Runs the transfer set up on `easy` to its end and returns its result. `cancelled` is asked whenever the thread
    /// wakes; when it answers `true` the transfer is abandoned (its connection closed) with `CURLE_ABORTED_BY_CALLBACK`.
    func perform(_ easy: UnsafeMutableRawPointer, cancelled: () -> Bool) -> CURLcode {
        guard curl_multi_add_handle(multi, easy) == CURLM_OK else { return CURLE_FAILED_INIT }
        defer { curl_multi_remove_handle(multi, easy) }
        while true {
            var running: Int32 = 0
            let performed = curl_multi_perform(multi, &running)
            guard performed == CURLM_OK else { return CURLE_FAILED_INIT }
            if running == 0 { break }
            if cancelled() { return CURLE_ABORTED_BY_CALLBACK }
            wait()
            if cancelled() { return CURLE_ABORTED_BY_CALLBACK }
        }
        var left: Int32 = 0
        while let message = curl_multi_info_read(multi, &left) {
            if message.pointee.msg == CURLMSG_DONE, message.pointee.easy_handle == easy { return message.pointee.data.result }
        }
        // Not running and no result: cannot happen with one handle; report it rather than invent a success.
        return CURLE_FAILED_INIT
    }

    /// Sleeps until a socket of the transfer is ready, libcurl's next timer is due or the wake pipe is readable.
    private func wait() {
        defer { wakeups.value.add(1, ordering: .relaxed) }
        var timeout = -1
        _ = curl_multi_timeout(multi, &timeout)
        // -1: libcurl has no timer running and waits on its sockets only. A minute bounds the wait all the same (a
        // request's own timeout is a libcurl timer, so it is never longer than what libcurl asked for).
        var milliseconds = timeout < 0 ? 60_000 : min(timeout, 60_000)
        guard let wakeFD else {
            milliseconds = min(milliseconds, 1000)
            _ = curl_multi_poll(multi, nil, 0, Int32(milliseconds), nil)
            return
        }
        var extra = curl_waitfd(fd: wakeFD, events: Int16(CURL_WAIT_POLLIN), revents: 0)
        _ = curl_multi_poll(multi, &extra, 1, Int32(milliseconds), nil)
        if extra.revents != 0 {
            var buffer = [UInt8](repeating: 0, count: 64)
            while read(wakeFD, &buffer, buffer.count) > 0 {}
        }
    }
}

/// How many times the thread of a connection woke up during its transfers (`HTTPConnection.transferWakeups`).
final class WakeCount: Sendable {
    let value = Atomic<Int>(0)
}
