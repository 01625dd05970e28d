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

    /// `--stable-seconds` up to what the release's health deadline (the stable time plus 60 s from 60 on, at most
    /// 3600) allows: 3541 passed the option's check and failed later on `health.deadlineSeconds`, a field never given.
    @Test(arguments: [(Int64(0), true), (59, true), (3540, true), (3541, false), (3599, false), (-1, false)])
    func stableSecondsStayWithinTheDeadline(seconds: Int64, accepted: Bool) throws {
        let arguments = [
            "publish", "--service", "api", "--version", "1.0.0", "--artifact", "api.tgz", "--ecosystem", "e.json", "--stable-seconds=\(seconds)",
        ]
        do {
            _ = try PublishCommand.parse(Array(arguments.dropFirst()))
            #expect(accepted, "\(seconds) was accepted")
        } catch {
            #expect(!accepted, "\(seconds): \(PublishCommand.message(for: error))")
            #expect(
                PublishCommand.message(for: error).contains("--stable-seconds must be between 0 and 3540"),
                "\(PublishCommand.message(for: error))"
            )
        }
        guard accepted else { return }
        var input = OperatorInputTests.input([.object(["name": .string("api"), "script": .string("server.js")])])
        input.stableSeconds = seconds
        let release = try ReleaseComposer.compose(input, which: { _ in nil }).release
        #expect(release.health.stableSeconds == seconds)
    }

    /// A signed (presigned) URL is pinned, but the operator is told what pinning it means: a release outlives an S3
    /// presigned URL, so agents enrolled later and a rollback to it could not download it.
    @Test(arguments: [
        ("https://b.s3.amazonaws.com/a.tgz?X-Amz-Credential=AKIA%2F&X-Amz-Expires=604800&X-Amz-Signature=ab12", "X-Amz-Credential, X-Amz-Signature"),
        ("https://cdn.example/a.tgz?Expires=1&Signature=x&Key-Pair-Id=K#part", "Signature, Key-Pair-Id"),
        ("https://host.example/a.tgz?versionId=3&token=", "token"),
        ("https://host.example/a.tgz?versionId=3", ""),
        ("https://host.example/a.tgz#sig=x", ""),
    ])
    func aSignedURLIsPinnedWithAWarning(url: String, named: String) throws {
        var input = OperatorInputTests.input([.object(["name": .string("api"), "script": .string("server.js")])])
        input.artifact.url = url
        let output = try ReleaseComposer.compose(input, which: { _ in nil })
        #expect(output.release.artifact.url == url)
        let warnings = output.warnings.filter { $0.hasPrefix("the artifact URL carries") }
        if named.isEmpty {
            #expect(warnings.isEmpty, "\(warnings)")
        } else {
            #expect(warnings.count == 1 && warnings[0].hasPrefix("the artifact URL carries \(named): "), "\(warnings)")
            #expect(warnings.allSatisfy { $0.contains("until the release expires (2027-01-16T08:00:00Z)") }, "\(warnings)")
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
