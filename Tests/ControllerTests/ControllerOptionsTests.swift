import ArgumentParser
import Foundation
import TestSupport
import Testing

@testable import Controller

/// Which controller URLs the operator commands accept, decided before any connection is made.
@Suite struct ControllerOptionsTests {
    struct URLCase: Sendable, CustomTestStringConvertible {
        let url: String
        var arguments: [String] = []
        var environment: [String: String] = [:]
        /// `nil`: accepted; otherwise a part of the refusal.
        let refusal: String?

        var testDescription: String { "\(url) \(arguments.joined(separator: " ")) \(environment) → \(refusal ?? "accepted")" }
    }

    // Documentation names and addresses (RFC 2606, RFC 5737) only as strings: nothing here is ever dialled.
    static let urlCases: [URLCase] = [
        URLCase(url: "http://ferry.example:8080", refusal: "refusing the plain http:// controller URL http://ferry.example:8080"),
        URLCase(url: "http://192.0.2.10:8080", refusal: "192.0.2.10 is not a loopback address"),
        // Credentials in the URL stay out of the message (it goes to CI logs).
        URLCase(url: "http://ci:s3cret@ferry.example:8080", refusal: "controller URL http://ferry.example:8080: ferry.example is not"),
        URLCase(url: "ftp://ci:s3cret@ferry.example", refusal: "--controller ftp://ferry.example is not an http"),
        URLCase(url: "HTTP://ferry.example", refusal: "--allow-insecure-http (or set FERRY_ALLOW_INSECURE_HTTP=1)"),
        URLCase(url: "http://128.0.0.1:8080", refusal: "not a loopback address"),
        URLCase(url: "http://127.0.0.1.ferry.example:8080", refusal: "not a loopback address"),
        URLCase(url: "http://localhost.ferry.example", refusal: "not a loopback address"),
        URLCase(url: "http://ferry.example:8080", environment: ["FERRY_ALLOW_INSECURE_HTTP": "0"], refusal: "not a loopback address"),
        URLCase(url: "http://ferry.example:8080", environment: ["FERRY_ALLOW_INSECURE_HTTP": "maybe"], refusal: "must be 1 or 0"),
        URLCase(url: "http://ferry.example:8080", arguments: ["--allow-insecure-http"], refusal: nil),
        URLCase(url: "http://ferry.example:8080", environment: ["FERRY_ALLOW_INSECURE_HTTP": "1"], refusal: nil),
        URLCase(url: "https://ferry.example:8443", refusal: nil),
        URLCase(url: "http://127.0.0.1:8080", refusal: nil),
        URLCase(url: "http://127.255.3.4:8080", refusal: nil),
        URLCase(url: "http://localhost:8080", refusal: nil),
        URLCase(url: "http://LOCALHOST:8080", refusal: nil),
        URLCase(url: "http://[::1]:8080", refusal: nil),
        URLCase(url: "ftp://ferry.example", refusal: "is not an http:// or https:// URL"),
        URLCase(
            url: "https://ferry.example",
            arguments: ["--ca-file", "/nonexistent/ca.pem"],
            refusal: "--ca-file /nonexistent/ca.pem: no such file"
        ),
        URLCase(url: "https://ferry.example", environment: ["FERRY_CA_FILE": "/nonexistent/ca.pem"], refusal: "no such file"),
    ]

    @Test(arguments: urlCases)
    func controllerURLs(_ testCase: URLCase) throws {
        let options = try ControllerOptions.parse(["--controller", testCase.url, "--token", "t"] + testCase.arguments)
        do {
            let client = try options.client(environment: testCase.environment)
            #expect(testCase.refusal == nil, "accepted \(testCase.url)")
            #expect(client.baseURL == testCase.url)
        } catch {
            #expect(testCase.refusal.map { "\(error)".contains($0) } == true, "\(error)")
        }
    }

    @Test func theCAFileReachesTheClient() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let ca = directory.appendingPathComponent("ca.pem").path
            try Data("-----BEGIN CERTIFICATE-----\n".utf8).write(to: URL(fileURLWithPath: ca))
            let flag = try ControllerOptions.parse(["--controller", "https://ferry.example", "--token", "t", "--ca-file", ca]).client(environment: [:]
            )
            #expect(flag.http.configuration.caFile == ca)
            let environment = try ControllerOptions.parse(["--controller", "https://ferry.example", "--token", "t"]).client(environment: [
                "FERRY_CA_FILE": ca
            ])
            #expect(environment.http.configuration.caFile == ca)
            let system = try ControllerOptions.parse(["--controller", "https://ferry.example", "--token", "t"]).client(environment: [:])
            #expect(system.http.configuration.caFile == nil)
        }
    }

    /// The built binary refuses at once, without trying to connect: the message is the refusal, not a network error.
    @Test func theBinaryRefusesPlainHTTPToAnotherHostBeforeConnecting() async throws {
        let started = ContinuousClock.now
        let run = try await CommandLineEndToEndTests.cli(["status", "--controller", "http://ferry.example:8080", "--token", "t"])
        #expect(run.status != 0)
        #expect(run.errors.contains("refusing the plain http:// controller URL http://ferry.example:8080"), "\(run.errors)")
        #expect(run.errors.contains("--allow-insecure-http"))
        #expect(!run.errors.contains("cannot reach the controller"), "\(run.errors)")
        #expect(ContinuousClock.now - started < .seconds(30))
    }
}
