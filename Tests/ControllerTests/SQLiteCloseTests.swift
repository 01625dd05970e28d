import Foundation
import SQLiteKit
import TestSupport
import Testing

@testable import Controller

/// Cleanup runs in cancelled tasks (a time limit, a shutdown): a connection must close there too, or its release trips
/// SQLiteNIO's assertion (a debug test process crashed that way when a test hit its time limit while opening a store).
@Suite struct SQLiteCloseTests {
    enum Method: String, CaseIterable, CustomTestStringConvertible {
        /// SQLiteNIO's own `async` close: on `NIOThreadPool.runIfActive`, which skips its work in a cancelled task.
        case sqliteNIOAsyncClose
        /// What the store uses.
        case closeEvenWhenCancelled

        var testDescription: String { rawValue }
    }

    @Test(
        "closing a connection from a task that is already cancelled",
        arguments: [(Method.sqliteNIOAsyncClose, false), (.closeEvenWhenCancelled, true)]
    )
    func closeInACancelledTask(method: Method, closes: Bool) async throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-sqlite-close")
        defer { try? FileManager.default.removeItem(at: directory) }
        let connection = try await SQLiteConnection.open(storage: .file(path: directory.appendingPathComponent("close.sqlite").path))
        let closing = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            #expect(Task.isCancelled)
            switch method {
            case .sqliteNIOAsyncClose: try await connection.close()
            case .closeEvenWhenCancelled: try await connection.closeEvenWhenCancelled()
            }
        }
        let outcome = await closing.result
        let closed = connection.isClosed
        // Whatever happened above, the connection is closed before it is released.
        if !closed { try await connection.close().get() }
        #expect(closed == closes, "\(method): \(outcome)")
    }
}
