import ArgumentParser
import Testing

@testable import Controller

/// `publish --artifact-url`: what the signed release may pin, checked before anything is read or uploaded.
@Suite struct ArtifactURLOptionTests {
    struct BadURL: Sendable, CustomTestStringConvertible {
        var name: String
        var url: String
        var message: String
        var testDescription: String { name }
    }

    static let badURLs: [BadURL] = [
        BadURL(name: "relative path", url: "/bucket/api.tgz", message: "must be an absolute URL"),
        BadURL(name: "no scheme", url: "bucket.s3.amazonaws.com/api.tgz", message: "must be an absolute URL"),
        BadURL(name: "empty host", url: "https:///api.tgz", message: "must be an absolute URL"),
        BadURL(name: "too long", url: "https://example.com/" + String(repeating: "a", count: 2100), message: "must be an absolute URL"),
        BadURL(name: "credentials", url: "https://user:secret@example.com/api.tgz", message: "must not carry user:password"),
        BadURL(name: "plain http to another host", url: "http://example.com/api.tgz", message: "must be https://"),
        BadURL(name: "ftp", url: "ftp://example.com/api.tgz", message: "must be https://"),
        BadURL(name: "file", url: "file://localhost/etc/passwd", message: "must be https://"),
    ]

    static func arguments(_ url: String) -> [String] {
        [
            "publish", "--service", "api", "--version", "1.0.0", "--artifact", "api.tgz", "--ecosystem", "e.json",
            "--artifact-url", url,
        ]
    }

    @Test(arguments: badURLs)
    func aURLAgentsCannotSafelyFetchIsRefused(_ bad: BadURL) {
        do {
            _ = try PublishCommand.parse(Array(Self.arguments(bad.url).dropFirst()))
            Issue.record("\(bad.name): accepted")
        } catch {
            let message = PublishCommand.message(for: error)
            #expect(message.contains(bad.message), "\(bad.name): \(message)")
            #expect(!message.contains("secret"), "the password is never echoed: \(message)")
        }
    }

    @Test(arguments: [
        "https://bucket.s3.eu-west-1.amazonaws.com/api/1.0.0.tgz?versionId=3", "http://127.0.0.1:9000/api.tgz", "http://localhost/a.tgz",
    ])
    func anHTTPSURLOrLoopbackHTTPIsPinned(_ url: String) throws {
        let publish = try #require(try ControllerCommand.parseAsRoot(Self.arguments(url)) as? PublishCommand)
        #expect(publish.release.artifactURL == url)
    }
}
