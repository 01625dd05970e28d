import Foundation

/// Polls `condition` until it holds or `timeout` passes; returns the last value for the assertion message.
@discardableResult
public func eventually<T>(
    _ what: String,
    timeout: Duration = .seconds(60),
    interval: Duration = .milliseconds(200),
    _ condition: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    var lastError: (any Error)?
    while ContinuousClock.now < deadline {
        do {
            if let value = try await condition() { return value }
        } catch {
            lastError = error
        }
        try await Task.sleep(for: interval)
    }
    throw HarnessError("timed out after \(timeout) waiting for \(what)\(lastError.map { " (last error: \($0))" } ?? "")")
}
