import Foundation
import Shared
import TestSupport
import Testing

@Suite("HTTPClient.send")
struct HTTPClientTests {
    private let client = HTTPClient()

    /// The hosts reached without the proxy: the environment's list plus loopback (`*` stays `*`).
    @Test(arguments: [
        ([String: String](), "localhost,127.0.0.0/8,::1"),
        (["no_proxy": "10.0.0.0/8, .internal"], "10.0.0.0/8,.internal,localhost,127.0.0.0/8,::1"),
        (["NO_PROXY": "example.com"], "example.com,localhost,127.0.0.0/8,::1"),
        (["no_proxy": "*"], "*"),
    ])
    func loopbackIsNeverProxied(_ environment: [String: String], _ expected: String) {
        #expect(HTTPClient.noProxy(environment: environment) == expected)
    }

    @Test func getReturnsStatusHeadersAndBodyAndSendsAgentHeaders() async throws {
        try await ScriptedHTTPServer.with { _ in
            [
                .send(
                    ScriptedHTTPServer.response(
                        status: 200,
                        headers: [("ETag", "\"v1\""), ("X-Multi", "a"), ("x-multi", "b"), ("X-Padded", " \t spaced out \t"), ("X-Empty", "")],
                        body: Array("hello".utf8)
                    )
                )
            ]
        } run: { server in
            let request = HTTPClient.Request(url: "\(server.baseURL)/v1/agents/a1/desired-state").withBearerToken("tok-123")
            let response = try await client.send(request)
            #expect(response.status == 200)
            #expect(response.isSuccess)
            #expect(response.body == Array("hello".utf8))
            #expect(response.headers["etag"] == "\"v1\"")
            #expect(response.headers["ETAG"] == "\"v1\"")
            #expect(response.headers.values(for: "X-MULTI") == ["a", "b"])
            #expect(response.headers["x-padded"] == "spaced out", "spaces and tabs around a value are not part of it")
            #expect(response.headers["x-empty"] == "")
            let received = try #require(server.requests.first)
            #expect(received.method == "GET")
            #expect(received.target == "/v1/agents/a1/desired-state")
            #expect(received.headers["user-agent"] == "ferry/\(FerryVersion.current)")
            #expect(received.headers["authorization"] == "Bearer tok-123")
            #expect(received.headers["expect"] == nil)
        }
    }

    @Test func conditionalGetWithETagGets304() async throws {
        try await ScriptedHTTPServer.with { request in
            if request.headers["if-none-match"] == "\"v7\"" {
                return [.send(ScriptedHTTPServer.head(status: 304, reason: "Not Modified", headers: [("ETag", "\"v7\"")]))]
            }
            return [.send(ScriptedHTTPServer.response(status: 200, headers: [("ETag", "\"v7\"")], body: Array("{}".utf8)))]
        } run: { server in
            let first = try await client.send(HTTPClient.Request(url: "\(server.baseURL)/state"))
            #expect(first.status == 200)
            let etag = try #require(first.headers["ETag"])
            let second = try await client.send(HTTPClient.Request(url: "\(server.baseURL)/state", headers: ["If-None-Match": etag]))
            #expect(second.status == 304)
            #expect(second.body.isEmpty)
            #expect(second.headers["etag"] == "\"v7\"")
        }
    }

    @Test(arguments: [HTTPClient.Request.Method.post, .put, .patch])
    func bodyIsSentWithItsMethod(_ method: HTTPClient.Request.Method) async throws {
        try await ScriptedHTTPServer.with { _ in
            [.send(ScriptedHTTPServer.response(status: 201))]
        } run: { server in
            let payload = Array("{\"x\":1}".utf8)
            let request = HTTPClient.Request(
                method: method,
                url: "\(server.baseURL)/status",
                headers: ["Content-Type": "application/json"],
                body: payload
            )
            let response = try await client.send(request)
            #expect(response.status == 201)
            let received = try #require(server.requests.first)
            #expect(received.method == method.rawValue)
            #expect(received.body == payload)
            #expect(received.headers["content-type"] == "application/json")
            #expect(received.headers["content-length"] == "\(payload.count)")
        }
    }

    @Test func headReadsHeadersOnly() async throws {
        try await ScriptedHTTPServer.with { _ in
            [.send(ScriptedHTTPServer.head(status: 200, headers: [("Content-Length", "1234"), ("ETag", "\"x\"")]))]
        } run: { server in
            let response = try await client.send(HTTPClient.Request(method: .head, url: "\(server.baseURL)/artifact"))
            #expect(response.status == 200)
            #expect(response.headers["content-length"] == "1234")
            #expect(response.body.isEmpty)
            #expect(server.requests.first?.method == "HEAD")
        }
    }

    /// With a `Content-Length` curl refuses up front; without one the client stops at the limit while reading.
    @Test(arguments: [true, false])
    func bodyOverTheLimitIsRefused(announceLength: Bool) async throws {
        let body = [UInt8](repeating: 0x61, count: 5000)
        try await ScriptedHTTPServer.with { _ in
            announceLength
                ? [.send(ScriptedHTTPServer.response(status: 200, body: body))]
                : [.send(ScriptedHTTPServer.head(status: 200, headers: [])), .send(body), .close]
        } run: { server in
            let url = "\(server.baseURL)/big"
            let error = await #expect(throws: HTTPClientError.self) {
                try await client.send(HTTPClient.Request(url: url, maxResponseBytes: 1000))
            }
            guard case .responseTooLarge(let reported, let limit) = error else {
                Issue.record("expected responseTooLarge, got \(String(describing: error))")
                return
            }
            #expect(reported == url)
            #expect(limit == 1000)
        }
    }

    /// `truncatesResponses` (the agent's health probes): a body over the limit is cut there and the answer kept, with
    /// or without a `Content-Length`, and in a body that goes on for ever.
    @Test(arguments: [true, false])
    func aTruncatingClientKeepsTheStartOfALongBody(announceLength: Bool) async throws {
        let body = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        var configuration = HTTPClient.Configuration()
        configuration.truncatesResponses = true
        configuration.maxResponseBytes = 64 * 1024
        let truncating = HTTPClient(configuration: configuration)
        try await ScriptedHTTPServer.with { _ in
            announceLength
                ? [.send(ScriptedHTTPServer.response(status: 200, body: body))]
                : [.send(ScriptedHTTPServer.head(status: 200, headers: [])), .send(body), .send(body), .send(body), .close]
        } run: { server in
            let response = try await truncating.send(HTTPClient.Request(url: "\(server.baseURL)/status"))
            #expect(response.status == 200)
            #expect(response.body == Array(body.prefix(64 * 1024)))
            // A body within the limit is whole.
            let small = try await truncating.send(HTTPClient.Request(url: "\(server.baseURL)/status", maxResponseBytes: 1_000_000))
            #expect(small.body.count == (announceLength ? body.count : 3 * body.count))
        }
    }

    @Test func configuredBodyLimitApplies() async throws {
        var configuration = HTTPClient.Configuration()
        configuration.maxResponseBytes = 10
        let small = HTTPClient(configuration: configuration)
        try await ScriptedHTTPServer.with { _ in
            [.send(ScriptedHTTPServer.response(status: 200, body: Array("01234567890".utf8)))]
        } run: { server in
            await #expect(throws: HTTPClientError.self) { try await small.send(HTTPClient.Request(url: server.baseURL)) }
        }
    }

    @Test func silentServerTimesOutAndTheErrorNamesTheURL() async throws {
        try await ScriptedHTTPServer.with { _ in
            [.pause(.seconds(20))]
        } run: { server in
            let url = "\(server.baseURL)/v1/agents/a1/desired-state?wait=30"
            let started = ContinuousClock.now
            let error = await #expect(throws: HTTPClientError.self) {
                try await client.send(HTTPClient.Request(url: url, timeout: .milliseconds(400)))
            }
            // Well before the server's 20 s of silence would end: the 400 ms timeout ended it (a wall-clock bound, so
            // generous enough for a loaded machine).
            #expect(ContinuousClock.now - started < .seconds(15))
            guard case .timedOut(let reported, _) = error else {
                Issue.record("expected timedOut, got \(String(describing: error))")
                return
            }
            #expect(reported == url)
            #expect(String(describing: error).contains(url))
        }
    }

    @Test func refusedConnectionIsAConnectionFailure() async throws {
        let port = try await Self.closedPort()
        let url = "http://127.0.0.1:\(port)/healthz"
        let error = await #expect(throws: HTTPClientError.self) { try await client.send(HTTPClient.Request(url: url)) }
        guard case .connectionFailed(let reported, let code, let message) = error else {
            Issue.record("expected connectionFailed, got \(String(describing: error))")
            return
        }
        #expect(reported == url)
        #expect(code == 7)  // CURLE_COULDNT_CONNECT
        #expect(!message.isEmpty)
        #expect(error?.isTransient == true)
    }

    /// TLS is never downgraded: speaking TLS to a plain-HTTP port fails the handshake, and an unreadable CA bundle
    /// fails before anything is sent.
    @Test(arguments: [nil, "/nonexistent/ca.pem"])
    func tlsFailuresAreTLSErrors(caFile: String?) async throws {
        let plainHTTP: [ScriptedHTTPServer.Step] = [.send(Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8)), .close]
        try await ScriptedHTTPServer.with(greeting: plainHTTP) { _ in
            []
        } run: { server in
            var configuration = HTTPClient.Configuration()
            configuration.caFile = caFile
            let url = "https://127.0.0.1:\(server.port)/v1/agents/a1/desired-state"
            let error = await #expect(throws: HTTPClientError.self) {
                try await HTTPClient(configuration: configuration).send(HTTPClient.Request(url: url))
            }
            guard case .tls(let reported, let code, _) = error else {
                Issue.record("expected tls, got \(String(describing: error))")
                return
            }
            #expect(reported == url)
            #expect(code == (caFile == nil ? 35 : 77))  // CURLE_SSL_CONNECT_ERROR, CURLE_SSL_CACERT_BADFILE
        }
    }

    @Test func cancellingTheTaskAbortsTheTransfer() async throws {
        try await ScriptedHTTPServer.with { _ in
            [.pause(.seconds(30))]
        } run: { server in
            let client = self.client
            let url = "\(server.baseURL)/slow"
            let task = Task { () async throws -> HTTPClient.Response in
                try await client.send(HTTPClient.Request(url: url, timeout: .seconds(60)))
            }
            try await Self.waitUntil { server.requests.count == 1 }
            let started = ContinuousClock.now
            task.cancel()
            let result = await task.result
            // Well before the server's 30 s pause or the 60 s timeout: the cancellation ended it.
            #expect(ContinuousClock.now - started < .seconds(15))
            guard case .failure(let error) = result, case .cancelled(let reported)? = error as? HTTPClientError else {
                Issue.record("expected cancelled, got \(result)")
                return
            }
            #expect(reported == url)
        }
    }

    @Test func alreadyCancelledTaskSendsNothing() async throws {
        try await ScriptedHTTPServer.with { _ in
            [.send(ScriptedHTTPServer.response(status: 200))]
        } run: { server in
            let client = self.client
            let url = server.baseURL
            let task = Task { () async throws -> HTTPClient.Response in
                withUnsafeCurrentTask { $0?.cancel() }
                return try await client.send(HTTPClient.Request(url: url))
            }
            guard case .failure(let error) = await task.result, case .cancelled? = error as? HTTPClientError else {
                Issue.record("expected cancelled")
                return
            }
            #expect(server.requests.isEmpty)
        }
    }

    @Test func redirectsAreFollowedOnlyForGETsThatAskForIt() async throws {
        try await ScriptedHTTPServer.with { request in
            if request.target.hasPrefix("/hop/") {
                let n = Int(request.target.dropFirst(5)) ?? 0
                return [.send(ScriptedHTTPServer.response(status: 302, headers: [("Location", "/hop/\(n + 1)")]))]
            }
            if request.target == "/start" {
                return [.send(ScriptedHTTPServer.response(status: 302, headers: [("Location", "/final")]))]
            }
            return [.send(ScriptedHTTPServer.response(status: 200, body: Array("landed".utf8)))]
        } run: { server in
            let notFollowed = try await client.send(HTTPClient.Request(url: "\(server.baseURL)/start"))
            #expect(notFollowed.status == 302)
            #expect(notFollowed.headers["location"] == "/final")

            let followed = try await client.send(HTTPClient.Request(url: "\(server.baseURL)/start", followRedirects: true))
            #expect(followed.status == 200)
            #expect(followed.body == Array("landed".utf8))

            let post = try await client.send(HTTPClient.Request(method: .post, url: "\(server.baseURL)/start", body: [1], followRedirects: true))
            #expect(post.status == 302)

            let error = await #expect(throws: HTTPClientError.self) {
                try await client.send(HTTPClient.Request(url: "\(server.baseURL)/hop/0", followRedirects: true))
            }
            guard case .transferFailed(_, let code, _) = error else {
                Issue.record("expected transferFailed (too many redirects), got \(String(describing: error))")
                return
            }
            #expect(code == 47)  // CURLE_TOO_MANY_REDIRECTS
            #expect(server.requests.filter { $0.target.hasPrefix("/hop/") }.count == 6)  // the first + 5 redirects
        }
    }

    @Test func errorsNeverShowTokensOrPresignedSignatures() async throws {
        let port = try await Self.closedPort()
        let url = "http://user:hunter2@127.0.0.1:\(port)/bucket/a.tgz?X-Amz-Credential=AKIAXXX&X-Amz-Signature=deadbeef&part=1"
        let request = HTTPClient.Request(url: url).withBearerToken("very-secret-token")
        let error = await #expect(throws: HTTPClientError.self) { try await client.send(request) }
        let message = String(describing: error)
        #expect(!message.contains("very-secret-token"))
        #expect(!message.contains("deadbeef"))
        #expect(!message.contains("AKIAXXX"))
        #expect(!message.contains("hunter2"))
        #expect(message.contains("127.0.0.1:\(port)/bucket/a.tgz?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&part=1"))
    }

    @Test(arguments: [
        ("ftp://127.0.0.1/file", HTTPClient.Headers()),
        ("file:///etc/passwd", HTTPClient.Headers()),
        ("/v1/artifacts/abc", HTTPClient.Headers()),
        ("http://127.0.0.1/a b", HTTPClient.Headers()),
        ("http://127.0.0.1/", ["X-Evil": "a\r\nInjected: yes"] as HTTPClient.Headers),
        ("http://127.0.0.1/", ["Bad Name": "x"] as HTTPClient.Headers),
    ])
    func malformedRequestsAreRefusedBeforeSending(url: String, headers: HTTPClient.Headers) async throws {
        let error = await #expect(throws: HTTPClientError.self) { try await client.send(HTTPClient.Request(url: url, headers: headers)) }
        guard case .invalidRequest = error else {
            Issue.record("expected invalidRequest, got \(String(describing: error))")
            return
        }
    }

    @Test(arguments: [
        ("https://h/x", "https://h/x"),
        ("https://u:p@h:8443/x?wait=30", "https://h:8443/x?wait=30"),
        ("https://u:p@h/x", "https://h/x"),
        ("https://h/x#token=1", "https://h/x#token=1"),
        ("https://h/x?token=1#f", "https://h/x?token=REDACTED#f"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=t&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=REDACTED&X-Amz-Expires=60"
        ),
        ("https://acct.blob.core.windows.net/c/b?sv=1&sig=abc", "https://acct.blob.core.windows.net/c/b?sv=1&sig=REDACTED"),
    ])
    func redactedURLs(url: String, expected: String) {
        #expect(RedactedURL.redact(url) == expected)
    }

    // MARK: Helpers

    /// A loopback port nothing listens on, and nothing ever did in this process (`LoopbackPorts`: checked free by a
    /// bind without a listen, then claimed). Not a server's port after it stopped: a child another test forks in that
    /// moment holds the listening socket until its exec, and the kernel would accept a connection there and then reset
    /// it (a reset, not a refusal).
    static func closedPort() async throws -> Int {
        try LoopbackPorts.reserve()
    }

    /// Polls `condition` every 10 ms until it holds, failing after `timeout`: waits for something the test set in motion to show (a request arriving, a child starting). The deadline only
    /// catches a hang: on a loaded 2-core machine a start-up can take many seconds, and no test passes because of it.
    static func waitUntil(timeout: Duration = .seconds(60), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else { throw WaitTimedOut() }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    struct WaitTimedOut: Error {}
}
