import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@Suite("HTTPClient.download")
struct HTTPClientDownloadTests {
    private let client = HTTPClient()
    private static let payload: [UInt8] = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }

    /// What the event handler saw, gathered on the transfer thread and read after the download returned.
    final class Events: Sendable {
        private let state = Mutex<(began: [(Int, Int64)], bytes: Int64)>(([], 0))
        var began: [(Int, Int64)] { state.withLock { $0.began } }
        var bytes: Int64 { state.withLock { $0.bytes } }
        func record(_ event: HTTPClient.DownloadEvent) {
            switch event {
            case .began(let status, let offset): state.withLock { $0.began.append((status, offset)) }
            case .chunk(let buffer): state.withLock { $0.bytes += Int64(buffer.count) }
            }
        }
    }

    @Test func downloadsTheWholeBody() async throws {
        try await withFile { path in
            try await ScriptedHTTPServer.with {
                ScriptedHTTPServer.serveFile(Self.payload, for: $0)
            } run: { server in
                let events = Events()
                let result = try await client.download(from: "\(server.baseURL)/a", to: path, maxBytes: Int64(Self.payload.count)) {
                    events.record($0)
                }
                #expect(
                    result == HTTPClient.DownloadResult(status: 200, startOffset: 0, bytesWritten: 300_000, fileSize: 300_000, alreadyComplete: false)
                )
                #expect(try Self.contents(path) == Self.payload)
                #expect(events.began.map(\.0) == [200])
                #expect(events.began.map(\.1) == [0])
                #expect(events.bytes == 300_000)
                #expect(server.requests.first?.headers["range"] == nil)
            }
        }
    }

    @Test func resumesAPartialFileWithARangeRequest() async throws {
        try await withFile(initial: Array(Self.payload[0..<100_000])) { path in
            try await ScriptedHTTPServer.with {
                ScriptedHTTPServer.serveFile(Self.payload, for: $0)
            } run: { server in
                let events = Events()
                let result = try await client.download(
                    from: "\(server.baseURL)/a",
                    to: path,
                    resumeFrom: 100_000,
                    maxBytes: Int64(Self.payload.count)
                ) { events.record($0) }
                #expect(
                    result
                        == HTTPClient.DownloadResult(
                            status: 206,
                            startOffset: 100_000,
                            bytesWritten: 200_000,
                            fileSize: 300_000,
                            alreadyComplete: false
                        )
                )
                #expect(try Self.contents(path) == Self.payload)
                #expect(events.began.map(\.1) == [100_000])
                #expect(server.requests.first?.headers["range"] == "bytes=100000-")
            }
        }
    }

    @Test func resumeCutsBytesPastTheOffset() async throws {
        try await withFile(initial: Array(Self.payload[0..<1000]) + [9, 9, 9]) { path in
            try await ScriptedHTTPServer.with {
                ScriptedHTTPServer.serveFile(Self.payload, for: $0)
            } run: { server in
                _ = try await client.download(from: "\(server.baseURL)/a", to: path, resumeFrom: 1000, maxBytes: 300_000)
                #expect(try Self.contents(path) == Self.payload)
            }
        }
    }

    @Test func serverIgnoringTheRangeRestartsFromZero() async throws {
        try await withFile(initial: [UInt8](repeating: 0xee, count: 5000)) { path in
            try await ScriptedHTTPServer.with {
                ScriptedHTTPServer.serveFile(Self.payload, for: $0, honourRange: false)
            } run: { server in
                let events = Events()
                let result = try await client.download(from: "\(server.baseURL)/a", to: path, resumeFrom: 5000, maxBytes: 300_000) {
                    events.record($0)
                }
                #expect(result.status == 200)
                #expect(result.startOffset == 0)
                #expect(result.fileSize == 300_000)
                #expect(events.began.map(\.1) == [0])
                #expect(try Self.contents(path) == Self.payload)
            }
        }
    }

    @Test func rangeNotSatisfiableOnACompleteFileMeansAlreadyComplete() async throws {
        try await withFile(initial: Self.payload) { path in
            try await ScriptedHTTPServer.with {
                ScriptedHTTPServer.serveFile(Self.payload, for: $0)
            } run: { server in
                let events = Events()
                let result = try await client.download(from: "\(server.baseURL)/a", to: path, resumeFrom: 300_000, maxBytes: 300_000) {
                    events.record($0)
                }
                #expect(
                    result == HTTPClient.DownloadResult(status: 416, startOffset: 300_000, bytesWritten: 0, fileSize: 300_000, alreadyComplete: true)
                )
                #expect(events.bytes == 0)
                #expect(try Self.contents(path) == Self.payload)
            }
        }
    }

    /// A 416 whose body never ends (a hostile controller holding the agent's download, and so its pass, for as long as
    /// it trickles): the body is an error page, and past 64 KiB the download fails.
    @Test func rangeNotSatisfiableWithAnEndlessBodyIsRefused() async throws {
        try await withFile(initial: Self.payload) { path in
            try await ScriptedHTTPServer.with { _ in
                var steps: [ScriptedHTTPServer.Step] = [.send(Array("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 100000000\r\n\r\n".utf8))]
                for _ in 0..<400 { steps += [.send([UInt8](repeating: 0x20, count: 64 * 1024)), .pause(.milliseconds(50))] }
                return steps
            } run: { server in
                let started = ContinuousClock.now
                do {
                    let result = try await client.download(from: "\(server.baseURL)/a", to: path, resumeFrom: 300_000, maxBytes: 300_000)
                    Issue.record("an endless 416 body was read whole: \(result)")
                } catch HTTPClientError.responseTooLarge(_, let limit) {
                    #expect(limit == 64 * 1024)
                }
                #expect(ContinuousClock.now - started < .seconds(10), "refused early, not after the 20 s the body lasts")
                #expect(try Self.contents(path) == Self.payload, "the part file is left as it was")
            }
        }
    }

    @Test func stopsBeforeTheFileExceedsMaxBytes() async throws {
        try await withFile { path in
            try await ScriptedHTTPServer.with {
                ScriptedHTTPServer.serveFile(Self.payload, for: $0)
            } run: { server in
                let error = await #expect(throws: HTTPClientError.self) {
                    try await client.download(from: "\(server.baseURL)/a", to: path, maxBytes: 100_000)
                }
                guard case .responseTooLarge(_, let limit) = error else {
                    Issue.record("expected responseTooLarge, got \(String(describing: error))")
                    return
                }
                #expect(limit == 100_000)
                let written = try Self.contents(path)
                #expect(written.count <= 100_000)
                #expect(written == Array(Self.payload.prefix(written.count)))
            }
        }
    }

    @Test func droppedConnectionKeepsTheBytesSoFarForAResume() async throws {
        try await withFile { path in
            let dropped = Atomic<Bool>(false)
            try await ScriptedHTTPServer.with { request in
                if !dropped.exchange(true, ordering: .acquiringAndReleasing) {
                    let head = ScriptedHTTPServer.head(status: 200, headers: [("Content-Length", "\(Self.payload.count)")])
                    return [.send(head), .send(Array(Self.payload[0..<120_000])), .close]
                }
                return ScriptedHTTPServer.serveFile(Self.payload, for: request)
            } run: { server in
                let url = "\(server.baseURL)/a"
                let error = await #expect(throws: HTTPClientError.self) {
                    try await client.download(from: url, to: path, maxBytes: 300_000)
                }
                guard case .transferFailed(_, let code, _) = error else {
                    Issue.record("expected transferFailed, got \(String(describing: error))")
                    return
                }
                #expect(code == 18)  // CURLE_PARTIAL_FILE
                #expect(error?.isTransient == true)
                let kept = try Self.contents(path)
                #expect(kept == Array(Self.payload[0..<kept.count]))
                #expect(kept.count == 120_000)

                let resumed = try await client.download(from: url, to: path, resumeFrom: Int64(kept.count), maxBytes: 300_000)
                #expect(resumed.status == 206)
                #expect(try Self.contents(path) == Self.payload)
            }
        }
    }

    @Test(arguments: [404, 500, 302])
    func errorStatusesWriteNothing(status: Int) async throws {
        try await withFile { path in
            try await ScriptedHTTPServer.with { _ in
                [.send(ScriptedHTTPServer.response(status: status, headers: [("Location", "/elsewhere")], body: Array("error page".utf8)))]
            } run: { server in
                let error = await #expect(throws: HTTPClientError.self) {
                    try await client.download(from: "\(server.baseURL)/a", to: path, maxBytes: 1000)
                }
                guard case .unexpectedStatus(_, let got) = error else {
                    Issue.record("expected unexpectedStatus, got \(String(describing: error))")
                    return
                }
                #expect(got == status)
                let written = try Self.contents(path)
                #expect(written.isEmpty)
            }
        }
    }

    @Test func followsRedirectsWhenAsked() async throws {
        try await withFile { path in
            try await ScriptedHTTPServer.with { request in
                request.target == "/presigned"
                    ? [.send(ScriptedHTTPServer.response(status: 307, headers: [("Location", "/blob")]))]
                    : ScriptedHTTPServer.serveFile(Self.payload, for: request)
            } run: { server in
                let result = try await client.download(from: "\(server.baseURL)/presigned", to: path, maxBytes: 300_000, followRedirects: true)
                #expect(result.status == 200)
                #expect(try Self.contents(path) == Self.payload)
            }
        }
    }

    @Test func contentRangeThatDoesNotStartAtTheOffsetIsRefused() async throws {
        try await withFile(initial: Array(Self.payload[0..<10])) { path in
            try await ScriptedHTTPServer.with { _ in
                [.send(ScriptedHTTPServer.response(status: 206, headers: [("Content-Range", "bytes 0-9/300000")], body: Array(Self.payload[0..<10])))]
            } run: { server in
                let error = await #expect(throws: HTTPClientError.self) {
                    try await client.download(from: "\(server.baseURL)/a", to: path, resumeFrom: 10, maxBytes: 300_000)
                }
                guard case .invalidContentRange(_, let offset, let header) = error else {
                    Issue.record("expected invalidContentRange, got \(String(describing: error))")
                    return
                }
                #expect(offset == 10)
                #expect(header == "bytes 0-9/300000")
            }
        }
    }

    @Test func handlerErrorAbortsTheTransfer() async throws {
        struct Stop: Error {}
        try await withFile { path in
            try await ScriptedHTTPServer.with {
                ScriptedHTTPServer.serveFile(Self.payload, for: $0)
            } run: { server in
                let error = await #expect(throws: HTTPClientError.self) {
                    try await client.download(from: "\(server.baseURL)/a", to: path, maxBytes: 300_000) { event in
                        if case .chunk = event { throw Stop() }
                    }
                }
                guard case .handlerFailed(_, let underlying) = error else {
                    Issue.record("expected handlerFailed, got \(String(describing: error))")
                    return
                }
                #expect(underlying is Stop)
            }
        }
    }

    @Test func stalledDownloadHitsTheLowSpeedLimit() async throws {
        var configuration = HTTPClient.Configuration()
        configuration.lowSpeedLimit = 1000
        configuration.lowSpeedTime = .seconds(1)
        let impatient = HTTPClient(configuration: configuration)
        try await withFile { path in
            try await ScriptedHTTPServer.with { _ in
                [.send(ScriptedHTTPServer.head(status: 200, headers: [("Content-Length", "100000")])), .send([1, 2, 3]), .pause(.seconds(60))]
            } run: { server in
                let started = ContinuousClock.now
                let error = await #expect(throws: HTTPClientError.self) {
                    try await impatient.download(from: "\(server.baseURL)/a", to: path, maxBytes: 100_000)
                }
                guard case .timedOut = error else {
                    Issue.record("expected timedOut, got \(String(describing: error))")
                    return
                }
                // Half the server's 60 s stall: the 1 s low-speed limit ended it (generous for a loaded machine).
                #expect(ContinuousClock.now - started < .seconds(30))
            }
        }
    }

    @Test func resumeOffsetBeyondTheFileIsRefused() async throws {
        try await withFile(initial: [1, 2, 3]) { path in
            let error = await #expect(throws: HTTPClientError.self) {
                try await client.download(from: "http://127.0.0.1:9/a", to: path, resumeFrom: 10, maxBytes: 100)
            }
            guard case .resumeBeyondEnd(_, let offset, let size) = error else {
                Issue.record("expected resumeBeyondEnd, got \(String(describing: error))")
                return
            }
            #expect(offset == 10)
            #expect(size == 3)
        }
    }

    // MARK: Helpers

    private func withFile(initial: [UInt8]? = nil, _ body: (String) async throws -> Void) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-download") { directory in
            let path = directory.appendingPathComponent("file.part").path
            if let initial { try Data(initial).write(to: URL(fileURLWithPath: path)) }
            try await body(path)
        }
    }

    private static func contents(_ path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }
}
