import Shared
import Testing

@testable import Agent

@Suite("Health URL placeholders")
struct HealthCheckEnvironmentTests {
    @Test(arguments: [
        ("http://127.0.0.1:${PORT}/healthz", "http://127.0.0.1:18081/healthz"),
        ("http://${HOST}:${PORT}/", "http://127.0.0.1:18081/"),
        ("http://127.0.0.1:${MISSING}/", "http://127.0.0.1:${MISSING}/"),
        ("http://127.0.0.1:3000/${PORT", "http://127.0.0.1:3000/${PORT"),
        ("http://127.0.0.1:3000/", "http://127.0.0.1:3000/"),
    ])
    func placeholdersAreExpandedFromTheInstanceEnvironment(_ template: String, _ expected: String) {
        #expect(HealthCheck.expand(template, env: ["PORT": "18081", "HOST": "127.0.0.1"]) == expected)
    }
}
