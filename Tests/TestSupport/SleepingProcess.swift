import Foundation

/// A `/bin/sleep` child for a test that needs a live process of its own (Foundation starts it in a process group of
/// its own, as the supervisor starts an app); `stop()` kills and reaps it.
public final class SleepingProcess {
    private let process = Process()

    public var pid: Int32 { process.processIdentifier }

    public init(seconds: Int) throws {
        process.executableURL = URL(fileURLWithPath: "/bin/sleep")
        process.arguments = ["\(seconds)"]
        try process.run()
    }

    public func stop() {
        kill(pid, SIGKILL)
        process.waitUntilExit()
    }
}
