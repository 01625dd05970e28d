import Glibc

/// A long wait that costs no timer of the concurrency runtime.
///
/// On Linux, libdispatch wakes its manager thread once a second for as long as any `Task.sleep` is pending, however far
/// its deadline (measured here: one task sleeping 20 s costs 20 wake-ups of that thread, with the continuous, the
/// suspending or the default clock). An idle agent waits 30 s between two status reports; this wait runs on a thread of
/// its own instead, blocked in `poll(2)` until the deadline, and a cancellation wakes it through a pipe. For waits of
/// seconds or more in a process that is otherwise idle; short waits are cheaper with `Task.sleep` (no thread).
package enum ThreadSleep {
    /// Returns at `deadline` (not before), or throws `CancellationError` as soon as the calling task is cancelled.
    /// Without a pipe or a thread (descriptor or thread limits reached) it falls back to `Task.sleep`.
    package static func until(_ deadline: ContinuousClock.Instant) async throws {
        if Task.isCancelled { throw CancellationError() }
        guard let wake = WakePipe() else { return try await Task.sleep(until: deadline, clock: .continuous) }
        let finished: Bool
        do {
            finished = try await withTaskCancellationHandler {
                try await DedicatedThread.run(name: "sleep") { () -> Bool in
                    while !wake.isSignalled {
                        let left = ContinuousClock.now.duration(to: deadline)
                        guard left > .zero else { return true }
                        wake.wait(timeout: left)
                    }
                    return false
                }
            } onCancel: {
                wake.signal()
            }
        } catch is DedicatedThread.StartFailure {
            return try await Task.sleep(until: deadline, clock: .continuous)
        }
        if !finished { throw CancellationError() }
    }

    /// A pipe that the cancellation handler writes to and the sleeping thread polls. A class, so that neither side
    /// can close it under the other: the descriptors close when both are done with it.
    private final class WakePipe: Sendable {
        private let ends: PipeDescriptors
        private let signalled = CancellationFlag()

        init?() {
            guard let ends = try? PipeDescriptors.open(nonBlocking: true) else { return nil }
            self.ends = ends
        }

        deinit {
            close(ends.readEnd)
            close(ends.writeEnd)
        }

        var isSignalled: Bool { signalled.isCancelled }

        func signal() {
            signalled.cancel()
            var byte: UInt8 = 1
            _ = write(ends.writeEnd, &byte, 1)
        }

        /// Blocks in `poll(2)` for at most `timeout`, or until `signal()`.
        func wait(timeout: Duration) {
            var descriptor = pollfd(fd: ends.readEnd, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, HTTPConnection.pollTimeout(timeout))
        }
    }
}
