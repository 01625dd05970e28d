import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@Suite("HTTPClient.upload")
struct HTTPClientUploadTests {
    private let client = HTTPClient()

    @Test func theFileIsTheBodyAndProgressEndsAtItsSize() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            var generator = SystemRandomNumberGenerator()
            let bytes = (0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let file = directory.appendingPathComponent("artifact.bin")
            try Data(bytes).write(to: file)
            try await ScriptedHTTPServer.with { _ in
                [.send(ScriptedHTTPServer.response(status: 201, body: Array(#"{"ok":true}"#.utf8)))]
            } run: { server in
                let reports = Mutex<[Int64]>([])
                var request = HTTPClient.Request(method: .post, url: "\(server.baseURL)/v1/artifacts", headers: ["X-Ferry-SHA256": "abc"])
                request.setBearerToken("tok")
                let response = try await client.upload(request, file: file.path) { sent in reports.withLock { $0.append(sent) } }
                #expect(response.status == 201)
                #expect(response.body == Array(#"{"ok":true}"#.utf8))
                let received = try #require(server.requests.first)
                #expect(received.method == "POST")
                #expect(received.body == bytes)
                #expect(received.headers["content-length"] == "\(bytes.count)")
                #expect(received.headers["content-type"] == "application/octet-stream")
                #expect(received.headers["authorization"] == "Bearer tok")
                let sent = reports.withLock { $0 }
                #expect(sent.last == Int64(bytes.count))
                #expect(sent == sent.sorted(), "progress only grows")
            }
        }
    }

    struct BadUpload: Sendable, CustomTestStringConvertible {
        let name: String
        let method: HTTPClient.Request.Method
        /// `{dir}` is a temporary directory.
        let file: String
        let message: String
        var testDescription: String { "\(name) → \(message)" }
    }

    // Each fails before any connection: the URL's port 9 (discard) is never dialled.
    static let badUploads: [BadUpload] = [
        BadUpload(
            name: "no such file",
            method: .post,
            file: "{dir}/missing.bin",
            message: "{dir}/missing.bin: open failed: No such file or directory"
        ),
        BadUpload(name: "a directory", method: .post, file: "{dir}", message: "upload (not a regular file) failed"),
        BadUpload(name: "not a POST", method: .put, file: "{dir}/file.bin", message: "invalid request: uploads are POST requests"),
    ]

    @Test(arguments: badUploads)
    func badUploadsFailClearly(_ bad: BadUpload) async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            try Data("x".utf8).write(to: directory.appendingPathComponent("file.bin"))
            let path = bad.file.replacingOccurrences(of: "{dir}", with: directory.path)
            do {
                _ = try await client.upload(HTTPClient.Request(method: bad.method, url: "http://127.0.0.1:9/v1/artifacts"), file: path)
                Issue.record("uploaded \(path)")
            } catch {
                #expect("\(error)".contains(bad.message.replacingOccurrences(of: "{dir}", with: directory.path)), "\(error)")
            }
        }
    }
}
