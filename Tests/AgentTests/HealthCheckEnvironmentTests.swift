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

    /// Values as the app reads them from the same variables, written into the URL so the probe sends what the app
    /// compares with: before, `?token=${HEALTH_TOKEN}` with a base64 token sent `+` (read as a space), a `&` cut it
    /// short, a `#` ended the URL, and a host value could move the probe elsewhere.
    static let environment = [
        "PORT": "18081", "TOKEN": "a+b&c#d e%/=?", "PREFIX": "/api v1", "USER": "ops:team", "PASSWORD": "p@ss/w:rd#1",
        "QUERY": "token=abc&full=1 x#y", "EVIL_HOST": "127.0.0.1@elsewhere.example", "PATH_HOST": "127.0.0.1/x?", "IPV6": "[::1]", "UNICODE": "é",
    ]

    @Test(arguments: [
        ("http://127.0.0.1:${PORT}/healthz?token=${TOKEN}", "http://127.0.0.1:18081/healthz?token=a%2Bb%26c%23d%20e%25%2F%3D%3F"),
        ("http://127.0.0.1:${PORT}/base${PREFIX}/healthz", "http://127.0.0.1:18081/base/api%20v1/healthz"),
        // Before the path's first `/`, a value is part of the host and port: one holding a `/` is not filled in.
        ("http://127.0.0.1:${PORT}${PREFIX}/healthz", "http://127.0.0.1:18081${PREFIX}/healthz"),
        ("http://127.0.0.1:${PORT}/h/${TOKEN}", "http://127.0.0.1:18081/h/a+b&c%23d%20e%25/=%3F"),
        ("http://${USER}:${PASSWORD}@127.0.0.1:${PORT}/", "http://ops%3Ateam:p%40ss%2Fw%3Ard%231@127.0.0.1:18081/"),
        ("http://${EVIL_HOST}:${PORT}/", "http://${EVIL_HOST}:18081/"),
        ("http://${PATH_HOST}/", "http://${PATH_HOST}/"),
        ("http://${IPV6}:${PORT}/", "http://[::1]:18081/"),
        ("http://127.0.0.1:${PORT}/#t=${TOKEN}", "http://127.0.0.1:18081/#t=a%2Bb%26c%23d%20e%25%2F%3D%3F"),
        ("http://127.0.0.1:${PORT}/?q=${UNICODE}", "http://127.0.0.1:18081/?q=%C3%A9"),
        // A placeholder that is not a value (not right after a `=`) stands for query text: kept as written, but for what
        // cannot stand in a query.
        ("http://127.0.0.1:${PORT}/healthz?${QUERY}", "http://127.0.0.1:18081/healthz?token=abc&full=1%20x%23y"),
    ])
    func valuesAreEncodedForTheirPartOfTheURL(_ template: String, _ expected: String) {
        #expect(HealthCheck.expand(template, env: Self.environment) == expected)
    }
}
